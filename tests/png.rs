//! The PNG validator against real files of every format and against broken ones.

mod common;

use attachments::error::ImageLimit;
use attachments::image::png::PngValidator;
use attachments::{Error, Inspector, Limits, Policy, Validator};
use common::*;

fn validate(file: &[u8]) -> Result<Option<(u32, u32)>, Error> {
    validate_with(file, &Limits::connectivity(), false)
}

fn validate_with(
    file: &[u8],
    limits: &Limits,
    trailing: bool,
) -> Result<Option<(u32, u32)>, Error> {
    let mut v = PngValidator::new(&limits.image, trailing);
    v.update(file)?;
    Ok(v.finish()?.dimensions)
}

fn validate_bytewise(file: &[u8]) -> Result<Option<(u32, u32)>, Error> {
    let mut v = PngValidator::new(&Limits::connectivity().image, false);
    for b in file {
        v.update(std::slice::from_ref(b))?;
    }
    Ok(v.finish()?.dimensions)
}

fn reason(err: &Error) -> String {
    match err {
        Error::InvalidContent { reason, .. } => reason.clone(),
        other => panic!("expected InvalidContent, got {other:?}"),
    }
}

#[test]
fn every_colour_type_and_bit_depth_is_accepted() {
    for (colour, depth) in png_formats() {
        let file = real_png(13, 7, colour, depth);
        assert_eq!(
            validate(&file).unwrap(),
            Some((13, 7)),
            "{colour:?} {depth:?}"
        );
        assert_eq!(
            validate_bytewise(&file).unwrap(),
            Some((13, 7)),
            "{colour:?} {depth:?} byte by byte"
        );
        // And a real decoder agrees it is an image.
        image::load_from_memory(&file).unwrap_or_else(|e| panic!("{colour:?} {depth:?}: {e}"));
    }
}

#[test]
fn an_interlaced_png_is_accepted() {
    let (file, pixels) = interlaced_png(19, 11);
    let decoded = image::load_from_memory(&file)
        .expect("a real Adam7 PNG")
        .to_rgb8();
    assert_eq!(
        decoded.as_raw(),
        &pixels,
        "the hand-made interlaced file encodes these pixels"
    );
    assert_eq!(validate(&file).unwrap(), Some((19, 11)));
    assert_eq!(validate_bytewise(&file).unwrap(), Some((19, 11)));
}

#[test]
fn an_apng_is_accepted_as_png() {
    let file = real_apng(16, 9);
    assert!(
        png_chunks(&file).iter().any(|c| &c.1 == b"fdAT"),
        "the fixture is animated"
    );
    assert_eq!(validate(&file).unwrap(), Some((16, 9)));
    let seen = Inspector::new(&Policy::demand(), "image/png", Some(file.len() as u64))
        .and_then(|mut i| i.update(&file).and_then(|()| i.finish()))
        .unwrap();
    assert_eq!(seen.info.dimensions, Some((16, 9)));
}

#[test]
fn text_and_unknown_ancillary_chunks_are_allowed() {
    let mut file = PNG_SIGNATURE.to_vec();
    png_chunk(&mut file, b"IHDR", &ihdr(1, 1, 8, 0, 0));
    png_chunk(&mut file, b"tEXt", b"Comment\0hello");
    png_chunk(&mut file, b"prVt", b"private ancillary data");
    png_chunk(&mut file, b"IDAT", &zlib_stored(&[0, 0x80]));
    png_chunk(&mut file, b"tIME", &[0x07, 0xd0, 1, 1, 0, 0, 0]);
    png_chunk(&mut file, b"IEND", &[]);
    assert_eq!(validate(&file).unwrap(), Some((1, 1)));
    image::load_from_memory(&file).expect("decoders accept it too");
}

#[test]
fn truncation_at_every_offset_is_rejected() {
    let file = real_png(5, 4, png::ColorType::Rgb, png::BitDepth::Eight);
    for cut in 0..file.len() {
        let err =
            validate(&file[..cut]).expect_err(&format!("a file cut at {cut} of {}", file.len()));
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
fn a_flipped_byte_anywhere_is_rejected() {
    let file = real_png(6, 5, png::ColorType::Indexed, png::BitDepth::Four);
    for at in 0..file.len() {
        let mut broken = file.clone();
        broken[at] ^= 0x20;
        assert!(
            validate(&broken).is_err(),
            "flip at {at} ({:?}) was accepted",
            chunk_at(&file, at)
        );
    }
}

fn chunk_at(file: &[u8], at: usize) -> String {
    png_chunks(file)
        .into_iter()
        .find(|(start, _, len)| (*start..start + 12 + len).contains(&at))
        .map_or("signature".to_owned(), |(_, ty, _)| {
            String::from_utf8_lossy(&ty).into_owned()
        })
}

#[test]
fn a_bad_crc_names_the_chunk() {
    let mut file = real_png(4, 4, png::ColorType::Rgb, png::BitDepth::Eight);
    let (at, _, len) = png_chunks(&file)
        .into_iter()
        .find(|c| &c.1 == b"IDAT")
        .unwrap();
    file[at + 8 + len] ^= 1; // the stored CRC
    let err = validate(&file).unwrap_err();
    let text = reason(&err);
    assert!(text.contains("IDAT") && text.contains("CRC"), "{text}");
}

#[test]
fn a_missing_iend_is_truncation() {
    let file = real_png(4, 4, png::ColorType::Rgb, png::BitDepth::Eight);
    let err = validate(&file[..file.len() - 12]).unwrap_err();
    assert!(reason(&err).contains("without an IEND"), "{err}");
}

#[test]
fn trailing_bytes_are_rejected_unless_allowed() {
    let mut file = real_png(4, 4, png::ColorType::Rgb, png::BitDepth::Eight);
    let end = file.len() as u64;
    file.extend_from_slice(b"PK\x03\x04 a zip hides here");
    assert_eq!(
        validate(&file).unwrap_err(),
        Error::TrailingData {
            media_type: "image/png".into(),
            offset: end
        }
    );
    assert_eq!(
        validate_with(&file, &Limits::connectivity(), true).unwrap(),
        Some((4, 4))
    );
    let policy = Policy::connectivity().with_allow_trailing(true);
    let mut insp = Inspector::new(&policy, "image/png", None).unwrap();
    insp.update(&file).unwrap();
    assert!(insp.finish().is_ok());
}

#[test]
fn leading_bytes_are_rejected() {
    let mut file = b"<html>".to_vec();
    file.extend_from_slice(&real_png(4, 4, png::ColorType::Rgb, png::BitDepth::Eight));
    let err = validate(&file).unwrap_err();
    assert!(
        matches!(err, Error::InvalidContent { offset: 0, .. }),
        "{err:?}"
    );
}

#[test]
fn huge_dimensions_are_refused_at_the_header() {
    let mut file = PNG_SIGNATURE.to_vec();
    png_chunk(&mut file, b"IHDR", &ihdr(100_000, 100_000, 8, 6, 0));
    let mut v = PngValidator::new(&Limits::connectivity().image, false);
    let err = v.update(&file).unwrap_err();
    assert_eq!(
        err,
        Error::ImageLimit {
            what: ImageLimit::Width,
            value: 100_000,
            limit: 65_535
        }
    );
    assert!(err.to_string().contains("100000") && err.to_string().contains("65535"));

    let mut file = PNG_SIGNATURE.to_vec();
    png_chunk(&mut file, b"IHDR", &ihdr(20_000, 20_000, 8, 6, 0));
    let err = PngValidator::new(&Limits::connectivity().image, false)
        .update(&file)
        .unwrap_err();
    assert_eq!(
        err,
        Error::ImageLimit {
            what: ImageLimit::Pixels,
            value: 400_000_000,
            limit: 100_000_000
        }
    );
}

#[test]
fn header_fields_are_checked() {
    let cases: [(Vec<u8>, &str); 6] = [
        (ihdr(0, 5, 8, 2, 0), "1 to 2^31-1"),
        (ihdr(5, 5, 3, 2, 0), "bit depth 3"),
        (ihdr(5, 5, 16, 3, 0), "bit depth 16"),
        (ihdr(5, 5, 8, 5, 0), "colour type 5"),
        (ihdr(5, 5, 8, 2, 2), "interlace method 2"),
        (
            {
                let mut h = ihdr(5, 5, 8, 2, 0);
                h[10] = 1;
                h
            },
            "compression method 1",
        ),
    ];
    for (header, expected) in cases {
        let mut file = PNG_SIGNATURE.to_vec();
        png_chunk(&mut file, b"IHDR", &header);
        let err = PngValidator::new(&Limits::connectivity().image, false)
            .update(&file)
            .unwrap_err();
        assert!(reason(&err).contains(expected), "{expected}: {err}");
    }
}

/// A 1x1 file with the given chunks between IHDR and IEND.
fn with_chunks(colour_type: u8, bit_depth: u8, chunks: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
    let mut file = PNG_SIGNATURE.to_vec();
    png_chunk(&mut file, b"IHDR", &ihdr(1, 1, bit_depth, colour_type, 0));
    for (ty, data) in chunks {
        png_chunk(&mut file, ty, data);
    }
    png_chunk(&mut file, b"IEND", &[]);
    file
}

#[test]
fn chunk_order_rules_are_enforced() {
    let idat = || zlib_stored(&[0, 0]);
    let plte = || vec![1, 2, 3, 4, 5, 6];
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            with_chunks(0, 8, &[(b"PLTE", plte()), (b"IDAT", idat())]),
            "greyscale",
        ),
        (with_chunks(3, 8, &[(b"IDAT", idat())]), "needs a PLTE"),
        (
            with_chunks(2, 8, &[(b"IDAT", idat()), (b"PLTE", plte())]),
            "PLTE after IDAT",
        ),
        (
            with_chunks(
                3,
                8,
                &[(b"PLTE", plte()), (b"PLTE", plte()), (b"IDAT", idat())],
            ),
            "second PLTE",
        ),
        (
            with_chunks(3, 1, &[(b"PLTE", vec![0; 9]), (b"IDAT", idat())]),
            "3 entries",
        ),
        (
            with_chunks(2, 8, &[(b"PLTE", vec![0; 4]), (b"IDAT", idat())]),
            "entries of 3 bytes",
        ),
        (
            with_chunks(
                2,
                8,
                &[
                    (b"IDAT", idat()),
                    (b"tEXt", b"a\0b".to_vec()),
                    (b"IDAT", idat()),
                ],
            ),
            "consecutive",
        ),
        (
            with_chunks(2, 8, &[(b"CRIT", vec![1]), (b"IDAT", idat())]),
            "unknown critical chunk CRIT",
        ),
        (with_chunks(2, 8, &[]), "before any IDAT"),
        (
            with_chunks(2, 8, &[(b"IHDR", ihdr(1, 1, 8, 2, 0)), (b"IDAT", idat())]),
            "second IHDR",
        ),
        (
            with_chunks(2, 8, &[(b"ID4T", idat())]),
            "\"ID4T\" is not four ASCII letters",
        ),
        (
            with_chunks(2, 8, &[(b"ID@T", idat())]),
            "not four ASCII letters",
        ),
    ];
    for (file, expected) in cases {
        let err = validate(&file).unwrap_err();
        assert!(err.to_string().contains(expected), "{expected}: {err}");
    }
    // Palette images with a palette are fine, and RGB may carry a suggested palette.
    assert!(validate(&with_chunks(3, 8, &[(b"PLTE", plte()), (b"IDAT", idat())])).is_ok());
    assert!(validate(&with_chunks(2, 8, &[(b"PLTE", plte()), (b"IDAT", idat())])).is_ok());
}

#[test]
fn a_nonempty_iend_or_a_first_chunk_other_than_ihdr_is_rejected() {
    let mut file = PNG_SIGNATURE.to_vec();
    png_chunk(&mut file, b"IHDR", &ihdr(1, 1, 8, 0, 0));
    png_chunk(&mut file, b"IDAT", &zlib_stored(&[0, 0]));
    png_chunk(&mut file, b"IEND", b"x");
    assert!(
        validate(&file)
            .unwrap_err()
            .to_string()
            .contains("IEND is 1 bytes long")
    );
    let mut file = PNG_SIGNATURE.to_vec();
    png_chunk(&mut file, b"tEXt", b"a\0b");
    assert!(
        validate(&file)
            .unwrap_err()
            .to_string()
            .contains("must start with IHDR")
    );
}

#[test]
fn a_chunk_length_over_2_31_is_rejected_before_reading_it() {
    let mut file = PNG_SIGNATURE.to_vec();
    png_chunk(&mut file, b"IHDR", &ihdr(1, 1, 8, 0, 0));
    file.extend_from_slice(&0x8000_0000u32.to_be_bytes());
    file.extend_from_slice(b"IDAT");
    let err = PngValidator::new(&Limits::connectivity().image, false)
        .update(&file)
        .unwrap_err();
    assert!(err.to_string().contains("2^31-1"), "{err}");
}

#[test]
fn chunk_count_and_metadata_are_limited() {
    let mut limits = Limits::connectivity();
    limits.image.max_segments = 10;
    let idat = zlib_stored(&[0, 0]);
    let many: Vec<(&[u8; 4], Vec<u8>)> = (0..20).map(|_| (b"tEXt", b"a\0b".to_vec())).collect();
    let file = with_chunks(
        0,
        8,
        &[many.as_slice(), &[(b"IDAT", idat.clone())]].concat(),
    );
    assert_eq!(
        validate_with(&file, &limits, false).unwrap_err(),
        Error::ImageLimit {
            what: ImageLimit::Segments,
            value: 11,
            limit: 10
        }
    );
    let mut limits = Limits::connectivity();
    limits.image.max_metadata_bytes = 100;
    let file = with_chunks(0, 8, &[(b"iTXt", vec![b'a'; 101]), (b"IDAT", idat)]);
    assert_eq!(
        validate_with(&file, &limits, false).unwrap_err(),
        Error::ImageLimit {
            what: ImageLimit::MetadataBytes,
            value: 101,
            limit: 100
        }
    );
}

#[test]
fn empty_files_html_and_text_named_png_are_refused_by_the_inspector() {
    let policy = Policy::demand();
    for (content, what, status) in [
        (&b""[..], "empty", 415),
        (b"just text", "text", 415),
        // HTML is recognised, as something else than declared.
        (
            b"<!DOCTYPE html><html><body>hi</body></html>",
            "text/html",
            400,
        ),
    ] {
        let mut insp = Inspector::new(&policy, "image/png", None).unwrap();
        let err = insp
            .update(content)
            .and_then(|()| insp.finish().map(drop))
            .unwrap_err();
        assert_eq!(err.status(), status, "{what}: {err}");
        if status == 400 {
            assert!(err.to_string().contains(what), "{err}");
        }
    }
    let err = validate(b"").unwrap_err();
    assert!(reason(&err).contains("signature"), "{err}");
}

#[test]
fn a_used_validator_stays_failed() {
    let mut v = PngValidator::new(&Limits::connectivity().image, false);
    let first = v.update(b"GIF89a").unwrap_err();
    assert_eq!(
        v.update(&PNG_SIGNATURE[6..]).unwrap_err(),
        Error::AlreadyFailed {
            first: Box::new(first)
        }
    );
}
