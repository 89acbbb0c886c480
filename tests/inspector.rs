//! The Inspector: one pass that sniffs, counts, hashes and validates, whatever the split.

mod common;

use attachments::codec::base64::{Decoder, Encoder, decode_to, encode_to};
use attachments::digest::sha256;
use attachments::error::SizeLimit;
use attachments::{ContentInfo, Error, Inspector, MediaType, Policy, Validator};
use common::{
    JPEG_START, PNG_SIGNATURE, SEED_000_CONTENT, cuts, file_with_header, split_at_points,
    structural_jpeg, structural_png,
};
use proptest::prelude::*;

fn inspect(
    policy: &Policy,
    ty: &str,
    size: Option<u64>,
    data: &[u8],
) -> Result<attachments::Inspection, Error> {
    let mut insp = Inspector::new(policy, ty, size)?;
    insp.update(data)?;
    insp.finish()
}

proptest! {
    #[test]
    fn digest_count_and_type_do_not_depend_on_the_split(
        len in 0usize..20_000,
        png in any::<bool>(),
        cuts in cuts(),
    ) {
        let (ty, data) = if png { ("image/png", structural_png(len)) } else { ("image/jpeg", structural_jpeg(len)) };
        let len = data.len();
        let policy = Policy::chat();
        let whole = inspect(&policy, ty, Some(len as u64), &data);
        let mut insp = Inspector::new(&policy, ty, Some(len as u64)).unwrap();
        let mut split = Ok(());
        for piece in split_at_points(&data, &cuts) {
            split = split.and_then(|()| insp.update(piece));
        }
        let split = split.and_then(|()| insp.finish());
        prop_assert_eq!(&split, &whole);
        let seen = whole.unwrap();
        prop_assert_eq!(seen.size, len as u64);
        prop_assert_eq!(seen.sha256, sha256(&data));
        prop_assert_eq!(seen.media_type.as_str(), ty);
    }

    #[test]
    fn update_encode_writes_the_one_shot_encoding_whatever_the_split(
        len in 0usize..5_000,
        cuts in cuts(),
    ) {
        let data = structural_png(len);
        let len = data.len();
        let mut insp = Inspector::new(&Policy::chat(), "image/png", None).unwrap();
        let mut enc = Encoder::new();
        let mut body = bytes::BytesMut::new();
        for piece in split_at_points(&data, &cuts) {
            insp.update_encode(piece, &mut enc, &mut body).unwrap();
        }
        enc.finish(&mut body);
        let seen = insp.finish().unwrap();
        let mut expected = Vec::new();
        encode_to(&data, &mut expected);
        prop_assert_eq!(&body[..], &expected[..]);
        prop_assert_eq!(seen.sha256, sha256(&data));
        prop_assert_eq!(seen.size, len as u64);
    }
}

proptest! {
    #[test]
    fn update_decode_sees_the_bytes_the_text_holds_whatever_the_split(
        len in 0usize..5_000,
        cuts in cuts(),
    ) {
        let data = structural_png(len);
        let mut text = Vec::new();
        encode_to(&data, &mut text);
        let mut insp = Inspector::new(&Policy::chat(), "image/png", Some(data.len() as u64)).unwrap();
        let mut dec = Decoder::new();
        let mut out = Vec::new();
        for piece in split_at_points(&text, &cuts) {
            insp.update_decode(piece, &mut dec, &mut out).unwrap();
        }
        let from = out.len();
        dec.finish(&mut out).unwrap();
        insp.update(&out[from..]).unwrap();
        let seen = insp.finish().unwrap();
        prop_assert_eq!(&out, &data);
        prop_assert_eq!(seen.sha256, sha256(&data));
        prop_assert_eq!(seen.size, data.len() as u64);
        prop_assert_eq!(seen.info.dimensions.is_some(), data.len() >= 33);
    }
}

#[test]
fn update_decode_rejects_a_corrupt_image_and_bad_base64() {
    let mut data = structural_png(20_000);
    data[10_000] ^= 0x40; // inside an IDAT chunk: its CRC no longer matches
    let mut text = Vec::new();
    encode_to(&data, &mut text);
    let mut insp = Inspector::new(&Policy::chat(), "image/png", None).unwrap();
    let err = insp
        .update_decode(&text, &mut Decoder::new(), &mut Vec::new())
        .unwrap_err();
    assert!(err.to_string().contains("CRC"), "{err}");
    assert!(matches!(
        insp.update(b"more"),
        Err(Error::AlreadyFailed { .. })
    ));
    let mut insp = Inspector::new(&Policy::chat(), "image/png", None).unwrap();
    text[9_000] = b'-';
    let err = insp
        .update_decode(&text, &mut Decoder::new(), &mut Vec::new())
        .unwrap_err();
    assert_eq!(
        err,
        Error::Base64 {
            offset: 9_000,
            problem: attachments::error::Base64Problem::InvalidByte(b'-')
        }
    );
}

#[test]
fn seed_000_size_mismatch_reads_exactly_as_documented() {
    let mut content = Vec::new();
    decode_to(SEED_000_CONTENT.as_bytes(), &mut content).unwrap();
    let err = inspect(&Policy::demand(), "image/png", Some(350), &content).unwrap_err();
    assert_eq!(
        err,
        Error::SizeMismatch {
            actual: 35,
            declared: 350
        }
    );
    assert_eq!(
        err.to_string(),
        "Content length is 35 but metadata size is 350"
    );
    assert_eq!(err.status(), 400);
    assert_eq!(
        err.wire_message(),
        "Request failed with code: 400, message: Content length is 35 but metadata size is 350"
    );
}

#[test]
fn seed_000_example_content_is_a_truncated_png_and_is_refused() {
    // The seed's 35 bytes are a PNG signature and the start of an IHDR chunk: the size
    // matches, the type matches, but the image is not complete.
    let mut content = Vec::new();
    decode_to(SEED_000_CONTENT.as_bytes(), &mut content).unwrap();
    let err = inspect(&Policy::demand(), "image/png", Some(35), &content).unwrap_err();
    match &err {
        Error::InvalidContent { media_type, .. } => assert_eq!(media_type, "image/png"),
        other => panic!("expected InvalidContent, got {other:?}"),
    }
    assert_eq!(err.status(), 400);
}

#[test]
fn more_content_than_declared_reports_the_full_length() {
    let data = file_with_header(PNG_SIGNATURE, 500);
    let err = inspect(&Policy::demand(), "image/png", Some(350), &data).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Content length is 500 but metadata size is 350"
    );
}

#[test]
fn a_declared_size_over_the_limit_is_refused_before_any_byte() {
    let err = Inspector::new(&Policy::demand(), "image/png", Some(1_048_577)).unwrap_err();
    assert_eq!(
        err,
        Error::TooLarge {
            size: 1_048_577,
            limit: 1_048_576,
            kind: SizeLimit::Single
        }
    );
    assert_eq!(err.status(), 400);
    assert_eq!(err.wire_message(), "File size exceeds the 1MB limit");
    assert!(err.to_string().contains("1048577") && err.to_string().contains("1048576"));
}

#[test]
fn content_running_past_the_limit_fails_as_it_arrives() {
    let mut insp = Inspector::new(&Policy::demand(), "image/png", None).unwrap();
    let data = structural_png(1 << 20);
    insp.update(&data[..1 << 20]).unwrap();
    let err = insp.update(&[0]).unwrap_err();
    assert_eq!(
        err,
        Error::TooLarge {
            size: 1_048_577,
            limit: 1_048_576,
            kind: SizeLimit::Single
        }
    );
    assert_eq!(err.wire_message(), "File size exceeds the 1MB limit");
}

#[test]
fn connectivity_takes_ten_megabytes_and_not_a_byte_more() {
    let policy = Policy::connectivity();
    assert!(Inspector::new(&policy, "image/jpeg", Some(10_485_760)).is_ok());
    let err = Inspector::new(&policy, "image/jpeg", Some(10_485_761)).unwrap_err();
    assert_eq!(
        err,
        Error::TooLarge {
            size: 10_485_761,
            limit: 10_485_760,
            kind: SizeLimit::Chunked
        }
    );
    assert_eq!(err.wire_message(), "File size exceeds the 10MB limit");
}

#[test]
fn demand_refuses_other_image_types_with_415() {
    let err = Inspector::new(&Policy::demand(), "image/gif", Some(10)).unwrap_err();
    assert_eq!(err.status(), 415);
    let text = err.to_string();
    assert!(
        text.contains("image/gif") && text.contains("image/png, image/jpeg"),
        "{text}"
    );
}

#[test]
fn demand_reads_image_jpg_as_image_jpeg() {
    let data = structural_jpeg(100);
    let seen = inspect(
        &Policy::demand(),
        "image/jpg",
        Some(data.len() as u64),
        &data,
    )
    .unwrap();
    assert_eq!(seen.media_type, MediaType::JPEG);
}

#[test]
fn connectivity_permits_only_the_documented_spellings() {
    let err = Inspector::new(&Policy::connectivity(), "image/jpg", None).unwrap_err();
    assert_eq!(err.status(), 415);
    assert!(Inspector::new(&Policy::connectivity(), "IMAGE/JPEG", None).is_ok());
}

#[test]
fn a_malformed_type_is_a_400() {
    let err = Inspector::new(&Policy::chat(), "png", None).unwrap_err();
    assert_eq!(
        err,
        Error::InvalidType {
            declared: "png".into()
        }
    );
    assert_eq!(err.status(), 400);
}

#[test]
fn content_of_another_type_than_declared_names_both() {
    let data = file_with_header(JPEG_START, 10_000);
    let err = inspect(&Policy::connectivity(), "image/png", None, &data).unwrap_err();
    assert_eq!(
        err,
        Error::TypeMismatch {
            declared: "image/png".into(),
            detected: "image/jpeg".into()
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("image/jpeg") && text.contains("image/png"),
        "{text}"
    );
    assert_eq!(err.status(), 400);
}

#[test]
fn a_short_file_of_another_type_is_caught_at_finish() {
    let err = inspect(&Policy::demand(), "image/png", None, b"GIF89a\x01\x00").unwrap_err();
    assert_eq!(
        err,
        Error::TypeMismatch {
            declared: "image/png".into(),
            detected: "image/gif".into()
        }
    );
}

#[test]
fn the_image_presets_refuse_unrecognisable_content() {
    let err = inspect(&Policy::demand(), "image/png", None, b"just some text").unwrap_err();
    assert_eq!(
        err,
        Error::UnrecognizedContent {
            declared: "image/png".into(),
            sniffed: 14
        }
    );
    assert_eq!(err.status(), 415);
    let big = vec![b'x'; 20_000];
    let err = inspect(&Policy::connectivity(), "image/jpeg", None, &big).unwrap_err();
    assert_eq!(
        err,
        Error::UnrecognizedContent {
            declared: "image/jpeg".into(),
            sniffed: 8192
        }
    );
}

#[test]
fn the_chat_preset_takes_unrecognised_content_under_its_declared_type() {
    let seen = inspect(&Policy::chat(), "text/plain", None, b"hello").unwrap();
    assert_eq!(seen.media_type.as_str(), "text/plain");
    assert_eq!(seen.detected, None);
}

#[test]
fn octet_stream_on_the_chat_preset_takes_the_recognised_type() {
    let data = file_with_header(b"%PDF-1.7\n", 300);
    let seen = inspect(&Policy::chat(), "application/octet-stream", None, &data).unwrap();
    assert_eq!(seen.media_type.as_str(), "application/pdf");
}

proptest! {
    /// A PNG or JPEG sent as `application/octet-stream` takes its recognised type and is
    /// checked as that image: a truncated one is refused as the image it is, wherever the
    /// file is cut and whether or not the inspector is saved between pieces.
    #[test]
    fn octet_stream_images_are_validated_as_the_recognised_type(
        len in 0usize..6_000,
        png in any::<bool>(),
        cut_off in 1usize..40,
        cuts in cuts(),
        saved in any::<bool>(),
    ) {
        let (ty, data) = if png { (MediaType::PNG, structural_png(len)) } else { (MediaType::JPEG, structural_jpeg(len)) };
        let policy = Policy::chat();
        let run = |data: &[u8]| if saved {
            inspect_saved_between_pieces(&policy, "application/octet-stream", None, data, &cuts)
        } else {
            inspect(&policy, "application/octet-stream", None, data)
        };
        let whole = run(&data).unwrap();
        prop_assert_eq!(&whole.media_type, &ty);
        let declared = inspect(&policy, ty.as_str(), None, &data).unwrap();
        prop_assert_eq!(whole.info, declared.info);
        let short = &data[..data.len().saturating_sub(cut_off)];
        let err = run(short).unwrap_err();
        prop_assert_eq!(err, inspect(&policy, ty.as_str(), None, short).unwrap_err());
    }
}

#[test]
fn the_chat_preset_limit_is_configurable() {
    let policy = Policy::chat().with_max_size(100);
    let err = inspect(&policy, "text/plain", None, &[b'a'; 101]).unwrap_err();
    assert_eq!(
        err,
        Error::TooLarge {
            size: 101,
            limit: 100,
            kind: SizeLimit::Single
        }
    );
}

#[test]
fn a_failed_inspector_answers_already_failed() {
    let mut insp = Inspector::new(&Policy::demand(), "image/png", None).unwrap();
    let data = file_with_header(JPEG_START, 9000);
    let first = insp.update(&data).unwrap_err();
    let again = insp.update(b"more").unwrap_err();
    assert_eq!(
        again,
        Error::AlreadyFailed {
            first: Box::new(first.clone())
        }
    );
    assert_eq!(again.status(), first.status());
    assert!(matches!(insp.finish(), Err(Error::AlreadyFailed { .. })));
}

/// A validator that rejects any byte 0x00 after the header, to see the Inspector drive it.
struct NoZeros {
    seen: u64,
}

impl Validator for NoZeros {
    fn update(&mut self, data: &[u8]) -> attachments::Result<()> {
        for &b in data {
            if self.seen >= 8 && b == 0 {
                return Err(Error::InvalidContent {
                    media_type: "image/png".into(),
                    offset: self.seen,
                    reason: "a zero byte".into(),
                });
            }
            self.seen += 1;
        }
        Ok(())
    }

    fn finish(&mut self) -> attachments::Result<ContentInfo> {
        let mut info = ContentInfo::default();
        info.dimensions = Some((self.seen as u32, 1));
        Ok(info)
    }
}

#[test]
fn the_inspector_drives_its_validator_and_reports_its_info() {
    let policy = Policy::demand();
    let mut insp =
        Inspector::with_validator(&policy, "image/png", None, Box::new(NoZeros { seen: 0 }))
            .unwrap();
    insp.update(PNG_SIGNATURE).unwrap();
    insp.update(b"abc").unwrap();
    assert_eq!(insp.finish().unwrap().info.dimensions, Some((11, 1)));

    let mut insp =
        Inspector::with_validator(&policy, "image/png", None, Box::new(NoZeros { seen: 0 }))
            .unwrap();
    // A whole sniff window first, so the type is decided and the validator runs.
    let mut start = PNG_SIGNATURE.to_vec();
    start.resize(attachments::sniff::SNIFF_LEN, b'x');
    insp.update(&start).unwrap();
    let mut body = Vec::new();
    let err = insp
        .update_encode(b"ab\0c", &mut Encoder::new(), &mut body)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the content is not a valid image/png file: a zero byte (at byte 8194)"
    );
    assert_eq!(err.status(), 400);
    assert!(body.is_empty(), "a rejected slice adds nothing to the body");
}

#[test]
fn a_finished_inspector_refuses_more_and_still_tells_what_it_saw() {
    let file = structural_png(500);
    let mut insp = Inspector::new(&Policy::demand(), "image/png", None).unwrap();
    insp.update(&file).unwrap();
    assert!(insp.finish().is_ok());
    assert_eq!(insp.update(b"x").unwrap_err(), Error::AlreadyFinished);
    assert_eq!(insp.finish().unwrap_err(), Error::AlreadyFinished);
    assert_eq!(insp.dimensions(), Some((1024, 768)));
    assert_eq!(insp.detected_type(), Some(&MediaType::PNG));
    assert_eq!(Error::AlreadyFinished.status(), 500);
}

/// Inspects `data` cut at `cuts`, saving the Inspector to JSON and restoring it from there
/// between every two pieces, as a stateless server does between chunks.
fn inspect_saved_between_pieces(
    policy: &Policy,
    ty: &str,
    size: Option<u64>,
    data: &[u8],
    cuts: &[usize],
) -> Result<attachments::Inspection, Error> {
    let mut insp = Inspector::new(policy, ty, size)?;
    for piece in split_at_points(data, cuts) {
        let json = serde_json::to_vec(&insp.save()?).unwrap();
        let state: attachments::InspectorState = serde_json::from_slice(&json).unwrap();
        insp = Inspector::restore(policy, state)?;
        insp.update(piece)?;
    }
    insp.finish()
}

proptest! {
    #[test]
    fn saving_and_restoring_between_pieces_changes_no_verdict(
        len in 0usize..12_000,
        kind in 0u8..3,
        damage in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
        truncate in proptest::option::of(any::<prop::sample::Index>()),
        cuts in cuts(),
    ) {
        let (ty, mut data) = match kind {
            0 => ("image/png", structural_png(len)),
            1 => ("image/jpeg", structural_jpeg(len)),
            _ => ("application/octet-stream", common::noise(len, 7)),
        };
        if let Some((at, byte)) = damage && !data.is_empty() {
            let i = at.index(data.len());
            data[i] ^= byte | 1;
        }
        if let Some(at) = truncate && !data.is_empty() {
            data.truncate(at.index(data.len()));
        }
        let policy = if kind == 2 { Policy::chat() } else { Policy::demand() };
        let size = Some(data.len() as u64);
        let whole = inspect(&policy, ty, size, &data);
        let saved = inspect_saved_between_pieces(&policy, ty, size, &data, &cuts);
        // Same verdict, same facts; or the same error (as text: a restored error is
        // recorded, not the original value).
        match (&whole, &saved) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
            _ => prop_assert!(false, "{whole:?} vs {saved:?}"),
        }
    }
}

#[test]
fn a_damaged_saved_state_is_refused_not_a_panic() {
    let policy = Policy::demand();
    let data = structural_png(5_000);
    let mut insp = Inspector::new(&policy, "image/png", None).unwrap();
    insp.update(&data[..40]).unwrap();
    let json = serde_json::to_value(insp.save().unwrap()).unwrap();
    let text = json.to_string();
    // A count the hash does not cover.
    let bad = text.replace("\"count\":40", "\"count\":41");
    assert_ne!(bad, text, "{text}");
    let state = serde_json::from_str(&bad).unwrap();
    let err = Inspector::restore(&policy, state).unwrap_err();
    assert!(
        err.to_string().contains("byte count does not match"),
        "{err}"
    );
    // A validator claiming more partial header bytes than its buffer holds.
    let mut forged = json.clone();
    forged["validator"]["have"] = serde_json::json!(9);
    let state = serde_json::from_value(forged).unwrap();
    let err = Inspector::restore(&policy, state).unwrap_err();
    assert!(err.to_string().contains("PNG state"), "{err}");
    // Another declared type than the policy accepts.
    let mut forged = json;
    forged["declared_type"] = serde_json::json!("text/html");
    let state = serde_json::from_value(forged).unwrap();
    assert!(Inspector::restore(&policy, state).is_err());
}
