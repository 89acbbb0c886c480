//! Metadata stripping: EXIF (with GPS), XMP, IPTC and comments go; colour profiles and the
//! orientation stay; the pixels do not change; exiftool finds no GPS tag in the output.

mod common;

use attachments::image::strip::{MetadataStripper, StripReport};
use attachments::{Inspector, MediaType, Policy};
use common::*;
use proptest::prelude::*;

fn strip(file: &[u8], ty: &MediaType, slice: usize) -> (Vec<u8>, StripReport) {
    let mut s = MetadataStripper::new(ty).unwrap();
    let mut out = Vec::new();
    for piece in file.chunks(slice.max(1)) {
        s.push(piece, &mut out).unwrap();
    }
    (out, s.finish().unwrap())
}

fn gps_keys(tags: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    tags.keys().filter(|k| k.contains("GPS")).cloned().collect()
}

fn accepted(file: &[u8], ty: &str) {
    let mut insp = Inspector::new(&Policy::connectivity(), ty, Some(file.len() as u64)).unwrap();
    insp.update(file).unwrap();
    insp.finish()
        .unwrap_or_else(|e| panic!("stripped output rejected: {e}"));
}

/// A JPEG as a phone writes it: EXIF with GPS and orientation, XMP, IPTC, a comment and
/// an ICC profile.
fn phone_jpeg() -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut out, 90);
    enc.add_app_segment(1, [b"Exif\0\0".to_vec(), exif_with_gps(6)].concat())
        .unwrap();
    let xmp = b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'><rdf:Description xmlns:exif='http://ns.adobe.com/exif/1.0/' exif:GPSLatitude='52,22.2N'/></rdf:RDF></x:xmpmeta>";
    enc.add_app_segment(1, xmp.to_vec()).unwrap();
    enc.add_app_segment(
        13,
        b"Photoshop 3.0\08BIM\x04\x04\0\0\0\0\0\x0b\x1c\x02\x78\0\x05Hello".to_vec(),
    )
    .unwrap();
    enc.add_icc_profile(&icc_profile()).unwrap();
    let pixels = pattern(48 * 3, 32);
    enc.encode(&pixels, 48, 32, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    // And a comment right after SOI.
    let comment = b"\xff\xfe\x00\x0dsecret note";
    out.splice(2..2, comment.iter().copied());
    out
}

/// A PNG with text chunks, a timestamp, EXIF (GPS and orientation) and an ICC profile.
fn phone_png() -> Vec<u8> {
    let base = real_png(24, 16, png::ColorType::Rgb, png::BitDepth::Eight);
    let ihdr_end = 8 + 12 + 13;
    let mut extra = Vec::new();
    let mut iccp = b"sRGB-ish\0\0".to_vec();
    iccp.extend_from_slice(&zlib_stored(&icc_profile()));
    png_chunk(&mut extra, b"iCCP", &iccp);
    png_chunk(&mut extra, b"eXIf", &exif_with_gps(8));
    png_chunk(&mut extra, b"tEXt", b"Comment\0secret note");
    png_chunk(
        &mut extra,
        b"iTXt",
        b"XML:com.adobe.xmp\0\0\0\0\0<x:xmpmeta/>",
    );
    png_chunk(
        &mut extra,
        b"zTXt",
        &[b"Author\0\0".as_slice(), &zlib_stored(b"someone")].concat(),
    );
    png_chunk(&mut extra, b"tIME", &[0x07, 0xE6, 3, 4, 5, 6, 7]);
    let mut file = base[..ihdr_end].to_vec();
    file.extend_from_slice(&extra);
    file.extend_from_slice(&base[ihdr_end..]);
    file
}

#[test]
fn the_fixtures_carry_gps_for_exiftool() {
    let tags = exiftool(&phone_jpeg(), ".jpg");
    assert!(
        !gps_keys(&tags).is_empty(),
        "the JPEG fixture has GPS: {tags:?}"
    );
    assert_eq!(tags.get("IFD0:Orientation"), Some(&serde_json::json!(6)));
    let tags = exiftool(&phone_png(), ".png");
    assert!(
        !gps_keys(&tags).is_empty(),
        "the PNG fixture has GPS: {tags:?}"
    );
}

#[test]
fn jpeg_metadata_goes_and_orientation_and_colour_profile_stay() {
    let file = phone_jpeg();
    let (out, report) = strip(&file, &MediaType::JPEG, 4096);
    assert_eq!(report.orientation, Some(6));
    assert_eq!(report.removed, ["COM", "APP1 Exif", "APP1", "APP13"]);
    assert_eq!(
        report.removed_bytes as usize,
        file.len() - out.len() + 4 + 6 + 26
    );
    accepted(&out, "image/jpeg");
    let tags = exiftool(&out, ".jpg");
    assert!(
        gps_keys(&tags).is_empty(),
        "GPS left: {:?}",
        gps_keys(&tags)
    );
    assert_eq!(
        tags.get("IFD0:Orientation"),
        Some(&serde_json::json!(6)),
        "{tags:?}"
    );
    assert!(
        !tags
            .keys()
            .any(|k| k.starts_with("XMP") || k.starts_with("IPTC")),
        "{tags:?}"
    );
    assert!(!tags.keys().any(|k| k.ends_with(":Comment")), "{tags:?}");
    assert!(!tags.keys().any(|k| k.ends_with(":Make")), "{tags:?}");
    let icc = |f: &[u8]| -> Vec<Vec<u8>> {
        jpeg_segments(f)
            .into_iter()
            .filter(|s| s.1 == 0xE2 && f[s.0 + 4..].starts_with(b"ICC_PROFILE\0"))
            .map(|(at, _, len)| f[at..at + 2 + len].to_vec())
            .collect()
    };
    assert_eq!(
        icc(&out),
        icc(&file),
        "the ICC profile stays, byte for byte"
    );
    assert_eq!(icc(&out).len(), 1);
    let before = image::load_from_memory(&file).unwrap().to_rgb8();
    let after = image::load_from_memory(&out).unwrap().to_rgb8();
    assert_eq!(before, after, "same pixels");
}

#[test]
fn png_metadata_goes_and_orientation_and_colour_profile_stay() {
    let file = phone_png();
    let (out, report) = strip(&file, &MediaType::PNG, 100);
    assert_eq!(report.orientation, Some(8));
    assert_eq!(report.removed, ["eXIf", "tEXt", "iTXt", "zTXt", "tIME"]);
    accepted(&out, "image/png");
    let chunks: Vec<[u8; 4]> = png_chunks(&out).into_iter().map(|c| c.1).collect();
    assert!(chunks.contains(b"iCCP"));
    assert!(
        chunks.contains(b"eXIf"),
        "a minimal eXIf keeps the orientation"
    );
    let tags = exiftool(&out, ".png");
    assert!(
        gps_keys(&tags).is_empty(),
        "GPS left: {:?}",
        gps_keys(&tags)
    );
    assert_eq!(
        tags.get("IFD0:Orientation"),
        Some(&serde_json::json!(8)),
        "{tags:?}"
    );
    let before = image::load_from_memory(&file).unwrap().to_rgb8();
    let after = image::load_from_memory(&out).unwrap().to_rgb8();
    assert_eq!(before, after, "same pixels");
}

#[test]
fn files_without_metadata_pass_through_unchanged() {
    for (colour, depth) in png_formats() {
        let file = real_png(9, 7, colour, depth);
        assert_eq!(strip(&file, &MediaType::PNG, 13).0, file);
    }
    for file in [
        real_jpeg(40, 24, jpeg_encoder::ColorType::Rgb, true, 0),
        real_jpeg(64, 48, jpeg_encoder::ColorType::Cmyk, false, 1),
        real_jpeg(33, 21, jpeg_encoder::ColorType::Luma, false, 0),
    ] {
        let (out, report) = strip(&file, &MediaType::JPEG, 7);
        assert_eq!(out, file);
        assert_eq!(report, StripReport::default());
    }
    let apng = real_apng(8, 8);
    assert_eq!(strip(&apng, &MediaType::PNG, 5).0, apng);
}

#[test]
fn trailing_data_is_dropped() {
    let mut file = real_jpeg(16, 16, jpeg_encoder::ColorType::Rgb, false, 0);
    let clean = file.clone();
    file.extend_from_slice(b"PK\x03\x04hidden");
    let (out, report) = strip(&file, &MediaType::JPEG, 1000);
    assert_eq!(out, clean);
    assert_eq!(report.removed, ["trailing data"]);
}

#[test]
fn truncated_or_foreign_input_is_an_error() {
    let file = real_jpeg(16, 16, jpeg_encoder::ColorType::Rgb, false, 0);
    let mut s = MetadataStripper::new(&MediaType::JPEG).unwrap();
    s.push(&file[..file.len() - 5], &mut Vec::new()).unwrap();
    assert!(s.finish().unwrap_err().to_string().contains("truncated"));
    let mut s = MetadataStripper::new(&MediaType::PNG).unwrap();
    assert!(s.push(b"GIF89a", &mut Vec::new()).is_err());
    assert!(MetadataStripper::new(&MediaType::parse("image/gif").unwrap()).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_output_does_not_depend_on_slice_boundaries(slice in 1usize..3000, png in any::<bool>()) {
        let (file, ty) = if png { (phone_png(), MediaType::PNG) } else { (phone_jpeg(), MediaType::JPEG) };
        let whole = strip(&file, &ty, file.len());
        prop_assert_eq!(strip(&file, &ty, slice), whole);
    }
}
