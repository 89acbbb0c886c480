//! Sniffing: the type from the leading bytes, whatever the slice boundaries.

mod common;

use attachments::MediaType;
use attachments::sniff::{SNIFF_LEN, Sniffer, detect};
use common::{JPEG_START, PNG_SIGNATURE, cuts, file_with_header, split_at_points};
use proptest::prelude::*;

fn sniff_split(data: &[u8], cuts: &[usize]) -> Option<MediaType> {
    let mut s = Sniffer::new();
    for piece in split_at_points(data, cuts) {
        s.update(piece);
    }
    s.finish().cloned()
}

proptest! {
    #[test]
    fn the_verdict_does_not_depend_on_the_split(
        header in proptest::sample::select(vec![
            PNG_SIGNATURE.to_vec(), JPEG_START.to_vec(), b"GIF89a".to_vec(), b"%PDF-1.4".to_vec(),
            b"PK\x03\x04".to_vec(), b"RIFF\0\0\0\0WEBPVP8 ".to_vec(), Vec::new(),
        ]),
        len in 0usize..(3 * SNIFF_LEN),
        cuts in cuts(),
    ) {
        let data = file_with_header(&header, len);
        let whole = detect(&data);
        prop_assert_eq!(sniff_split(&data, &cuts), whole.clone());
        prop_assert_eq!(sniff_split(&data, &[]), whole);
    }

    #[test]
    fn byte_at_a_time_agrees_with_one_shot(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut s = Sniffer::new();
        for b in &data {
            s.update(std::slice::from_ref(b));
        }
        prop_assert_eq!(s.finish().cloned(), detect(&data));
    }
}

#[test]
fn common_types_are_recognised() {
    assert_eq!(
        detect(&file_with_header(PNG_SIGNATURE, 100)),
        Some(MediaType::PNG)
    );
    assert_eq!(
        detect(&file_with_header(JPEG_START, 100)),
        Some(MediaType::JPEG)
    );
    assert_eq!(
        detect(b"GIF89a\x01\x00\x01\x00").unwrap().as_str(),
        "image/gif"
    );
    assert_eq!(
        detect(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3").unwrap().as_str(),
        "application/pdf"
    );
    assert_eq!(detect(b"plain words"), None);
    assert_eq!(detect(b""), None);
}

#[test]
fn the_decision_comes_when_the_window_fills() {
    let data = file_with_header(PNG_SIGNATURE, SNIFF_LEN + 10);
    let mut s = Sniffer::new();
    assert!(!s.update(&data[..SNIFF_LEN - 1]));
    assert_eq!(s.verdict(), None);
    assert!(s.update(&data[SNIFF_LEN - 1..]));
    assert_eq!(s.verdict(), Some(Some(&MediaType::PNG)));
    assert!(!s.update(b"more"), "decides once");
}

#[test]
fn only_the_window_counts() {
    // Identical first SNIFF_LEN bytes, different tails: the same verdict.
    let a = file_with_header(b"plain", SNIFF_LEN);
    let mut b = a.clone();
    b.extend_from_slice(PNG_SIGNATURE);
    assert_eq!(detect(&a), detect(&b));
    assert_eq!(sniff_split(&a, &[]), sniff_split(&b, &[7, 9000]));
}

#[test]
fn media_types_are_normalised() {
    assert_eq!(MediaType::parse("image/PNG").unwrap(), MediaType::PNG);
    assert_eq!(
        MediaType::parse("image/jpeg; q=1").unwrap(),
        MediaType::JPEG
    );
    assert_eq!(
        MediaType::parse("Application/PDF").unwrap().as_str(),
        "application/pdf"
    );
    for bad in [
        "",
        "image",
        "image/",
        "/png",
        "image png/x",
        "image/p ng",
        "imäge/png",
    ] {
        assert!(MediaType::parse(bad).is_err(), "{bad:?} should be rejected");
    }
}

fn detected(text: &[u8]) -> Option<String> {
    detect(text).map(|t| t.to_string())
}

#[test]
fn documents_and_active_content_are_recognised() {
    let pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n";
    assert_eq!(detected(pdf).as_deref(), Some("application/pdf"));
    let svg = br#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(1)</script></svg>"#;
    assert_eq!(detected(svg).as_deref(), Some("image/svg+xml"));
    let prolog = b"\xEF\xBB\xBF\n  <?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE svg PUBLIC \"-//W3C//DTD SVG 1.1//EN\" \"x\">\n<SVG viewBox=\"0 0 1 1\"/>";
    assert_eq!(detected(prolog).as_deref(), Some("image/svg+xml"));
    let xml = b"<?xml version=\"1.0\"?>\n<note><to>you</to></note>";
    assert_eq!(detected(xml).as_deref(), Some("text/xml"));
    let html = b"<!DOCTYPE html>\n<html><body onload=\"x()\"></body></html>";
    assert_eq!(detected(html).as_deref(), Some("text/html"));
    // Not SVG: another element whose name starts with "svg", and plain text.
    assert_eq!(detected(b"<svgfoo>text</svgfoo>"), None);
    assert_eq!(detected(b"an svg is a vector image"), None);
}

proptest! {
    #[test]
    fn an_svg_root_is_found_after_any_white_space_and_bom(
        bom in any::<bool>(),
        space in proptest::collection::vec(proptest::sample::select(vec![b' ', b'\t', b'\r', b'\n']), 0..40),
        after in proptest::sample::select(vec![b' ', b'>', b'/', b'\n']),
        tail in proptest::collection::vec(any::<u8>(), 0..200),
        upper in any::<bool>(),
    ) {
        let mut data = Vec::new();
        if bom {
            data.extend_from_slice(b"\xEF\xBB\xBF");
        }
        data.extend_from_slice(&space);
        data.extend_from_slice(if upper { b"<SVG" } else { b"<svg" });
        data.push(after);
        data.extend_from_slice(&tail);
        prop_assert_eq!(detect(&data), Some(MediaType::SVG));
        prop_assert!(MediaType::SVG.is_active_content());
    }
}
