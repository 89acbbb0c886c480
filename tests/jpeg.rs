//! The JPEG validator against real files (baseline, progressive, greyscale, CMYK, restart
//! markers) and against broken ones.

mod common;

use attachments::error::ImageLimit;
use attachments::image::jpeg::JpegValidator;
use attachments::{Error, Inspector, Limits, Policy, Validator};
use common::*;
use jpeg_encoder::ColorType;

fn validate(file: &[u8]) -> Result<Option<(u32, u32)>, Error> {
    validate_with(file, &Limits::connectivity(), false)
}

fn validate_with(
    file: &[u8],
    limits: &Limits,
    trailing: bool,
) -> Result<Option<(u32, u32)>, Error> {
    let mut v = JpegValidator::new(&limits.image, trailing);
    v.update(file)?;
    Ok(v.finish()?.dimensions)
}

fn validate_bytewise(file: &[u8]) -> Result<Option<(u32, u32)>, Error> {
    let mut v = JpegValidator::new(&Limits::connectivity().image, false);
    for b in file {
        v.update(std::slice::from_ref(b))?;
    }
    Ok(v.finish()?.dimensions)
}

fn count_marker(file: &[u8], code: u8) -> usize {
    file.windows(2)
        .filter(|w| w[0] == 0xFF && w[1] == code)
        .count()
}

/// Every kind of real file, with its dimensions.
fn fixtures() -> Vec<(&'static str, Vec<u8>, (u32, u32))> {
    vec![
        ("image crate baseline", image_crate_jpeg(33, 17), (33, 17)),
        (
            "baseline rgb",
            real_jpeg(40, 24, ColorType::Rgb, false, 0),
            (40, 24),
        ),
        (
            "greyscale",
            real_jpeg(31, 9, ColorType::Luma, false, 0),
            (31, 9),
        ),
        (
            "progressive",
            real_jpeg(48, 32, ColorType::Rgb, true, 0),
            (48, 32),
        ),
        (
            "progressive greyscale",
            real_jpeg(20, 20, ColorType::Luma, true, 0),
            (20, 20),
        ),
        (
            "cmyk",
            real_jpeg(24, 16, ColorType::Cmyk, false, 0),
            (24, 16),
        ),
        (
            "ycck",
            real_jpeg(24, 16, ColorType::CmykAsYcck, false, 0),
            (24, 16),
        ),
        (
            "restart markers",
            real_jpeg(128, 96, ColorType::Rgb, false, 1),
            (128, 96),
        ),
        (
            "progressive with restarts",
            real_jpeg(64, 48, ColorType::Rgb, true, 1),
            (64, 48),
        ),
    ]
}

#[test]
fn real_files_of_every_kind_are_accepted() {
    for (what, file, dims) in fixtures() {
        assert_eq!(validate(&file).unwrap(), Some(dims), "{what}");
        assert_eq!(
            validate_bytewise(&file).unwrap(),
            Some(dims),
            "{what} byte by byte"
        );
        image::load_from_memory(&file).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}

#[test]
fn the_fixtures_cover_what_they_claim() {
    let fx = fixtures();
    let find = |name: &str| fx.iter().find(|f| f.0 == name).unwrap().1.clone();
    assert!(count_marker(&find("progressive"), 0xDA) > 1, "many scans");
    assert!(count_marker(&find("progressive"), 0xC2) == 1, "SOF2");
    assert!(
        count_marker(&find("restart markers"), 0xD0) > 0,
        "RST0 present"
    );
    assert!(
        count_marker(&find("restart markers"), 0xD7) > 0,
        "RST7 present: the sequence wraps"
    );
    let cmyk = find("cmyk");
    let sof = jpeg_segments(&cmyk)
        .into_iter()
        .find(|s| s.1 == 0xC0)
        .unwrap();
    assert_eq!(cmyk[sof.0 + 9], 4, "four components");
}

#[test]
fn truncation_at_every_offset_is_rejected() {
    let file = real_jpeg(16, 16, ColorType::Rgb, true, 1);
    for cut in 0..file.len() {
        let err = validate(&file[..cut]).expect_err(&format!("cut at {cut} of {}", file.len()));
        assert!(
            matches!(err, Error::InvalidContent { .. }),
            "cut {cut}: {err:?}"
        );
        assert_eq!(
            validate_bytewise(&file[..cut]),
            Err(err),
            "cut {cut}: same verdict byte by byte"
        );
    }
}

#[test]
fn a_missing_eoi_is_truncation() {
    let file = real_jpeg(16, 16, ColorType::Rgb, false, 0);
    let err = validate(&file[..file.len() - 2]).unwrap_err();
    assert!(err.to_string().contains("without EOI"), "{err}");
}

#[test]
fn trailing_bytes_are_rejected_unless_allowed() {
    let mut file = real_jpeg(16, 16, ColorType::Rgb, false, 0);
    let end = file.len() as u64;
    file.extend_from_slice(b"<?php echo 'polyglot'; ?>");
    assert_eq!(
        validate(&file).unwrap_err(),
        Error::TrailingData {
            media_type: "image/jpeg".into(),
            offset: end
        }
    );
    assert_eq!(
        validate_with(&file, &Limits::connectivity(), true).unwrap(),
        Some((16, 16))
    );
}

#[test]
fn leading_bytes_are_rejected() {
    let mut file = b"GIF89a".to_vec();
    file.extend_from_slice(&real_jpeg(16, 16, ColorType::Rgb, false, 0));
    assert!(matches!(
        validate(&file).unwrap_err(),
        Error::InvalidContent { offset: 0, .. }
    ));
}

#[test]
fn restart_markers_out_of_sequence_are_rejected() {
    let mut file = real_jpeg(64, 48, ColorType::Rgb, false, 2);
    let at = file
        .windows(2)
        .position(|w| w == [0xFF, 0xD2])
        .expect("an RST2");
    file[at + 1] = 0xD5;
    let err = validate(&file).unwrap_err();
    assert!(err.to_string().contains("RST5 where RST2 was due"), "{err}");
}

#[test]
fn frame_header_rules_are_enforced() {
    let base = real_jpeg(16, 16, ColorType::Rgb, false, 0);
    let (sof, _, _) = jpeg_segments(&base)
        .into_iter()
        .find(|s| s.1 == 0xC0)
        .unwrap();
    let mutate = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut file = base.clone();
        f(&mut file);
        validate(&file).unwrap_err().to_string()
    };
    // Height (bytes 5-6 after the marker) and width (7-8).
    assert!(
        mutate(&|f| {
            f[sof + 7] = 0;
            f[sof + 8] = 0
        })
        .contains("non-zero")
    );
    assert!(mutate(&|f| f[sof + 9] = 5).contains("5 components"));
    // Sample precision (byte 4): 2 to 16 bits, as the message says; 0, 1 and 17 are not.
    for bits in [0u8, 1, 17] {
        let err = mutate(&|f| f[sof + 4] = bits);
        assert!(
            err.contains(&format!(
                "frame header sample precision {bits}; 2 to 16 bits exist (at byte {sof})"
            )),
            "{bits}: {err}"
        );
    }
    for bits in [2u8, 12, 16] {
        let mut file = base.clone();
        file[sof + 4] = bits;
        assert_eq!(validate(&file).unwrap(), Some((16, 16)), "{bits} bits");
    }
    assert!(mutate(&|f| f[sof + 11] = 0x51).contains("sampling factors 5x1"));
    assert!(mutate(&|f| f[sof + 12] = 4).contains("quantisation table 4"));
}

#[test]
fn huge_dimensions_are_refused_at_the_frame_header() {
    let mut file = real_jpeg(16, 16, ColorType::Rgb, false, 0);
    let (sof, _, _) = jpeg_segments(&file)
        .into_iter()
        .find(|s| s.1 == 0xC0)
        .unwrap();
    file[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
    let mut v = JpegValidator::new(&Limits::connectivity().image, false);
    let err = v.update(&file).unwrap_err();
    assert_eq!(
        err,
        Error::ImageLimit {
            what: ImageLimit::Pixels,
            value: 65_535 * 65_535,
            limit: 100_000_000
        }
    );
    let mut limits = Limits::connectivity();
    limits.image.max_width = 1000;
    assert_eq!(
        validate_with(&file, &limits, false).unwrap_err(),
        Error::ImageLimit {
            what: ImageLimit::Width,
            value: 65_535,
            limit: 1000
        }
    );
}

#[test]
fn a_scan_before_the_frame_header_is_rejected() {
    let file = real_jpeg(16, 16, ColorType::Rgb, false, 0);
    let (sof, _, len) = jpeg_segments(&file)
        .into_iter()
        .find(|s| s.1 == 0xC0)
        .unwrap();
    let mut without = file[..sof].to_vec();
    without.extend_from_slice(&file[sof + 2 + len..]);
    assert!(
        validate(&without)
            .unwrap_err()
            .to_string()
            .contains("before the frame header")
    );
}

#[test]
fn a_wrong_segment_length_is_caught() {
    let file = real_jpeg(16, 16, ColorType::Rgb, false, 0);
    for (at, code, _) in jpeg_segments(&file) {
        for delta in [1i16, -1] {
            let mut broken = file.clone();
            let len =
                u16::from_be_bytes([broken[at + 2], broken[at + 3]]).wrapping_add_signed(delta);
            broken[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
            assert!(
                validate(&broken).is_err(),
                "marker {code:02x} length {delta:+} accepted"
            );
        }
    }
}

#[test]
fn markers_and_segments_are_checked() {
    let soi_eoi = validate(b"\xff\xd8\xff\xd9").unwrap_err();
    assert!(soi_eoi.to_string().contains("no scan"));
    assert!(
        validate(b"\xff\xd8\xff\x02")
            .unwrap_err()
            .to_string()
            .contains("not a JPEG marker")
    );
    assert!(
        validate(b"\xff\xd8\xff\xe0\x00\x01")
            .unwrap_err()
            .to_string()
            .contains("minimum is 2")
    );
    assert!(
        validate(b"\xff\xd8\xff\xd8")
            .unwrap_err()
            .to_string()
            .contains("second SOI")
    );
    assert!(
        validate(b"\xff\xd8\xff\xd3")
            .unwrap_err()
            .to_string()
            .contains("outside scan data")
    );
    assert!(
        validate(b"\xff\xd8\x00")
            .unwrap_err()
            .to_string()
            .contains("expected a marker")
    );
    // Fill bytes before a marker are legal.
    let file = real_jpeg(8, 8, ColorType::Luma, false, 0);
    let mut filled = file[..2].to_vec();
    filled.extend_from_slice(&[0xFF, 0xFF, 0xFF]);
    filled.extend_from_slice(&file[2..]);
    assert_eq!(validate(&filled).unwrap(), Some((8, 8)));
}

#[test]
fn a_second_frame_is_rejected() {
    let file = real_jpeg(16, 16, ColorType::Rgb, false, 0);
    let (sof, _, len) = jpeg_segments(&file)
        .into_iter()
        .find(|s| s.1 == 0xC0)
        .unwrap();
    let mut twice = file[..sof + 2 + len].to_vec();
    twice.extend_from_slice(&file[sof..]);
    assert!(
        validate(&twice)
            .unwrap_err()
            .to_string()
            .contains("second frame header")
    );
}

#[test]
fn metadata_and_segment_counts_are_limited() {
    let mut limits = Limits::connectivity();
    limits.image.max_metadata_bytes = 1000;
    let mut file = real_jpeg(8, 8, ColorType::Luma, false, 0);
    let comment = [&[0xFF, 0xFE, 0x07, 0xD2][..], &[b'x'; 2000]].concat();
    file.splice(2..2, comment);
    assert_eq!(
        validate_with(&file, &limits, false).unwrap_err(),
        Error::ImageLimit {
            what: ImageLimit::MetadataBytes,
            value: 2000,
            limit: 1000
        }
    );
    let mut limits = Limits::connectivity();
    limits.image.max_segments = 3;
    assert!(matches!(
        validate_with(&file, &limits, false).unwrap_err(),
        Error::ImageLimit {
            what: ImageLimit::Segments,
            value: 4,
            limit: 3
        }
    ));
}

#[test]
fn html_and_text_named_jpg_are_refused_by_the_inspector() {
    for (content, status) in [
        (&b"<html><body>x</body></html>"[..], 400),
        (b"plain text", 415),
        (b"", 415),
    ] {
        let mut insp = Inspector::new(&Policy::demand(), "image/jpeg", None).unwrap();
        let err = insp
            .update(content)
            .and_then(|()| insp.finish().map(drop))
            .unwrap_err();
        assert_eq!(err.status(), status, "{err}");
    }
}

#[test]
fn the_inspector_reports_jpeg_dimensions() {
    let file = real_jpeg(40, 24, ColorType::Rgb, true, 0);
    let mut insp = Inspector::new(&Policy::demand(), "image/jpg", Some(file.len() as u64)).unwrap();
    insp.update(&file).unwrap();
    assert_eq!(insp.finish().unwrap().info.dimensions, Some((40, 24)));
}
