//! Streaming base64: split anywhere, same answer; strict about everything that is not
//! standard base64; errors name the offset.

mod common;

use attachments::Error;
use attachments::codec::base64::{Decoder, Encoder, decode_to, decoded_len, encode_to};
use attachments::error::Base64Problem;
use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use bytes::BytesMut;
use common::{SEED_000_CONTENT, cuts, split_at_points};
use proptest::prelude::*;

/// The reference decoders: the `base64` crate, standard alphabet, canonical trailing bits,
/// with padding required in full or absent entirely. (Its `Indifferent` mode would also
/// take partial padding such as `AQ=`, which is neither padded nor unpadded base64.)
const PADDED: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);
const UNPADDED: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

fn decode_split(text: &[u8], cuts: &[usize]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let mut dec = Decoder::new();
    for piece in split_at_points(text, cuts) {
        dec.decode(piece, &mut out)?;
    }
    dec.finish(&mut out)?;
    Ok(out)
}

/// Decodes through `decode_each`; returns the result and the concatenated pieces.
fn decode_each_split(
    text: &[u8],
    cuts: &[usize],
    step: usize,
) -> (Result<Vec<u8>, Error>, Vec<u8>) {
    let mut out = Vec::new();
    let mut pieces = Vec::new();
    let mut dec = Decoder::new();
    let mut run = || -> Result<(), Error> {
        for piece in split_at_points(text, cuts) {
            let before = pieces.len();
            let n = dec.decode_each(piece, &mut out, step, |p| {
                pieces.extend_from_slice(p);
                Ok(())
            })?;
            assert_eq!(
                n,
                pieces.len() - before,
                "the return value counts the pieces"
            );
        }
        let from = out.len();
        dec.finish(&mut out)?;
        pieces.extend_from_slice(&out[from..]);
        Ok(())
    };
    let result = run().map(|()| out);
    (result, pieces)
}

fn base64_problem(text: &[u8]) -> (u64, Base64Problem) {
    match decode_to(text, &mut Vec::new()) {
        Err(Error::Base64 { offset, problem }) => (offset, problem),
        other => panic!(
            "expected a base64 error for {:?}, got {other:?}",
            String::from_utf8_lossy(text)
        ),
    }
}

/// Text mostly from the alphabet, with padding and a sprinkling of bytes that are not.
fn noisy_text() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        20 => proptest::sample::select(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".to_vec()
        ),
        3 => Just(b'='),
        1 => proptest::sample::select(b"-_ \n\r\t\\.*\x00\xff".to_vec()),
    ];
    proptest::collection::vec(byte, 0..64)
}

proptest! {
    #[test]
    fn streaming_encode_equals_one_shot(data in proptest::collection::vec(any::<u8>(), 0..3000), cuts in cuts()) {
        let mut streamed = BytesMut::new();
        let mut enc = Encoder::new();
        for piece in split_at_points(&data, &cuts) {
            enc.encode(piece, &mut streamed);
        }
        enc.finish(&mut streamed);
        let mut whole = Vec::new();
        encode_to(&data, &mut whole);
        prop_assert_eq!(&streamed[..], &whole[..]);
        prop_assert_eq!(whole, general_purpose::STANDARD.encode(&data).into_bytes());
    }

    #[test]
    fn streaming_unpadded_encode_equals_one_shot(data in proptest::collection::vec(any::<u8>(), 0..600), cuts in cuts()) {
        let mut streamed = Vec::new();
        let mut enc = Encoder::unpadded();
        for piece in split_at_points(&data, &cuts) {
            enc.encode(piece, &mut streamed);
        }
        enc.finish(&mut streamed);
        prop_assert_eq!(streamed, general_purpose::STANDARD_NO_PAD.encode(&data).into_bytes());
    }

    #[test]
    fn streaming_decode_restores_the_bytes(
        data in proptest::collection::vec(any::<u8>(), 0..3000),
        padded in any::<bool>(),
        cuts in cuts(),
    ) {
        let text = if padded {
            general_purpose::STANDARD.encode(&data)
        } else {
            general_purpose::STANDARD_NO_PAD.encode(&data)
        };
        prop_assert_eq!(decoded_len(text.as_bytes()), data.len());
        prop_assert_eq!(decode_split(text.as_bytes(), &cuts).unwrap(), data);
    }

    #[test]
    fn a_bad_byte_is_reported_at_its_offset(
        data in proptest::collection::vec(any::<u8>(), 3..600),
        at in any::<prop::sample::Index>(),
        bad in proptest::sample::select(b"-_ \n\t!.".to_vec()),
        cuts in cuts(),
    ) {
        let mut text = general_purpose::STANDARD.encode(&data).into_bytes();
        // Keep clear of the padding so the bad byte is the first problem.
        let data_chars = text.iter().take_while(|&&c| c != b'=').count();
        let at = at.index(data_chars);
        text[at] = bad;
        let err = decode_split(&text, &cuts).unwrap_err();
        prop_assert_eq!(err, Error::Base64 { offset: at as u64, problem: Base64Problem::InvalidByte(bad) });
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn any_text_gets_the_same_verdict_split_or_whole(text in noisy_text(), cuts in cuts()) {
        let whole = decode_split(&text, &[]);
        let split = decode_split(&text, &cuts);
        prop_assert_eq!(&split, &whole);
        // decode_each, any step: the same bytes and the same first error, and its pieces
        // are exactly the bytes it wrote.
        for step in [4, 8, 256] {
            let (each, pieces) = decode_each_split(&text, &cuts, step);
            prop_assert_eq!(&each, &whole, "step {}", step);
            if let Ok(bytes) = &each {
                prop_assert_eq!(&pieces, bytes);
            }
        }
        // And the verdict agrees with an independent decoder.
        let reference = PADDED.decode(&text).or_else(|_| UNPADDED.decode(&text));
        match (reference, whole) {
            (Ok(expected), Ok(got)) => prop_assert_eq!(expected, got),
            (Err(_), Err(Error::Base64 { offset, .. })) => prop_assert!(offset < text.len() as u64),
            (reference, ours) => prop_assert!(false, "reference {:?} but ours {:?} for {:?}",
                reference, ours, String::from_utf8_lossy(&text)),
        }
    }
}

proptest! {
    #[test]
    fn decode_each_restores_long_texts_for_any_step(
        data in proptest::collection::vec(any::<u8>(), 0..5000),
        cuts in cuts(),
        step in (1usize..100).prop_map(|n| n * 4),
    ) {
        let mut text = Vec::new();
        encode_to(&data, &mut text);
        let (got, pieces) = decode_each_split(&text, &cuts, step);
        prop_assert_eq!(got.as_ref().unwrap(), &data);
        prop_assert_eq!(pieces, data);
    }
}

#[test]
fn decode_each_stops_at_the_callers_error_and_reports_bad_bytes_in_the_bulk() {
    let mut dec = Decoder::new();
    let mut out = Vec::new();
    let err = dec
        .decode_each(b"aGVsbG8gd29ybGQ=", &mut out, 4, |_| {
            Err(Error::AlreadyFinished)
        })
        .unwrap_err();
    assert_eq!(err, Error::AlreadyFinished);
    assert_eq!(out, b"hel", "decoding stopped after the first piece");
    // A bad character deep in the bulk is reported at its offset in the whole text.
    let mut dec = Decoder::new();
    dec.decode(b"aGVs", &mut Vec::new()).unwrap();
    let err = dec
        .decode_each(b"bG8gd29y_GQ=", &mut Vec::new(), 4, |_| Ok(()))
        .unwrap_err();
    assert_eq!(
        err,
        Error::Base64 {
            offset: 12,
            problem: Base64Problem::InvalidByte(b'_')
        }
    );
}

#[test]
fn the_seed_000_example_decodes_to_35_bytes_of_png() {
    let mut out = Vec::new();
    let n = decode_to(SEED_000_CONTENT.as_bytes(), &mut out).unwrap();
    assert_eq!(SEED_000_CONTENT.len(), 47);
    assert_eq!(n, 35);
    assert_eq!(out.len(), 35);
    assert_eq!(&out[..8], common::PNG_SIGNATURE);
    assert_eq!(decoded_len(SEED_000_CONTENT.as_bytes()), 35);
}

#[test]
fn url_safe_alphabet_is_rejected_with_a_hint() {
    let (offset, problem) = base64_problem(b"ab-_");
    assert_eq!((offset, problem), (2, Base64Problem::InvalidByte(b'-')));
    let err = decode_to(b"abc_", &mut Vec::new()).unwrap_err();
    assert_eq!(err.status(), 400);
    let text = err.to_string();
    assert!(
        text.contains("offset 3") && text.contains("URL-safe"),
        "{text}"
    );
}

#[test]
fn whitespace_is_rejected_even_a_trailing_newline() {
    assert_eq!(
        base64_problem(b"QUJD\n"),
        (4, Base64Problem::InvalidByte(b'\n'))
    );
    assert_eq!(
        base64_problem(b"QU JD"),
        (2, Base64Problem::InvalidByte(b' '))
    );
    assert_eq!(
        base64_problem(b"QUJD\r\nQUJD"),
        (4, Base64Problem::InvalidByte(b'\r'))
    );
    assert!(
        decode_to(b"QUJD\n", &mut Vec::new())
            .unwrap_err()
            .to_string()
            .contains("whitespace")
    );
}

#[test]
fn data_after_padding_is_rejected_at_the_first_byte_after_it() {
    assert_eq!(
        base64_problem(b"QQ==QUJD"),
        (4, Base64Problem::DataAfterPadding)
    );
    assert_eq!(
        base64_problem(b"QUI=QQ"),
        (4, Base64Problem::DataAfterPadding)
    );
    // The same when the padding and the data arrive in separate calls.
    let mut dec = Decoder::new();
    let mut out = Vec::new();
    dec.decode(b"QUI=", &mut out).unwrap();
    assert_eq!(
        dec.decode(b"Q", &mut out).unwrap_err(),
        Error::Base64 {
            offset: 4,
            problem: Base64Problem::DataAfterPadding
        }
    );
}

#[test]
fn misplaced_or_incomplete_padding_is_rejected() {
    // Partial padding: neither padded nor unpadded base64.
    assert_eq!(
        base64_problem(b"AAAAAAAAAQ="),
        (10, Base64Problem::MisplacedPadding)
    );
    assert_eq!(
        base64_problem(b"Q==="),
        (1, Base64Problem::MisplacedPadding)
    );
    assert_eq!(
        base64_problem(b"===="),
        (0, Base64Problem::MisplacedPadding)
    );
    assert_eq!(
        base64_problem(b"QQ=A"),
        (2, Base64Problem::MisplacedPadding)
    );
    assert_eq!(
        base64_problem(b"QUJDQQ="),
        (6, Base64Problem::MisplacedPadding)
    );
}

#[test]
fn non_zero_trailing_bits_are_rejected() {
    // "QR==" and "QUK=" decode to the same bytes as "QQ==" and "QUI=" in lenient decoders.
    assert_eq!(
        base64_problem(b"QR=="),
        (1, Base64Problem::NonZeroTrailingBits)
    );
    assert_eq!(
        base64_problem(b"QUK="),
        (2, Base64Problem::NonZeroTrailingBits)
    );
    assert_eq!(
        base64_problem(b"QUJDQR"),
        (5, Base64Problem::NonZeroTrailingBits)
    );
    assert!(
        decode_to(b"QR==", &mut Vec::new())
            .unwrap_err()
            .to_string()
            .contains("non-zero"),
        "the message says what is wrong"
    );
}

#[test]
fn a_lone_final_character_is_truncation() {
    assert_eq!(base64_problem(b"QUJDQ"), (4, Base64Problem::Truncated));
    assert_eq!(base64_problem(b"Q"), (0, Base64Problem::Truncated));
}

#[test]
fn empty_text_decodes_to_nothing() {
    let mut out = Vec::new();
    assert_eq!(decode_to(b"", &mut out).unwrap(), 0);
    assert!(out.is_empty());
}

#[test]
fn a_failed_decoder_stays_failed_until_reset() {
    let mut dec = Decoder::new();
    let mut out = Vec::new();
    let first = dec.decode(b"QU*D", &mut out).unwrap_err();
    let again = dec.decode(b"QUJD", &mut out).unwrap_err();
    assert_eq!(
        again,
        Error::AlreadyFailed {
            first: Box::new(first.clone())
        }
    );
    assert!(again.to_string().contains("already failed"));
    assert!(matches!(
        dec.finish(&mut out),
        Err(Error::AlreadyFailed { .. })
    ));
    dec.reset();
    dec.decode(b"QUJD", &mut out).unwrap();
    dec.finish(&mut out).unwrap();
    assert_eq!(out, b"ABC");
}

#[test]
fn decoder_appends_after_what_the_buffer_holds() {
    let mut out = BytesMut::from(&b"prefix:"[..]);
    decode_to(b"aGVsbG8", &mut out).unwrap();
    assert_eq!(&out[..], b"prefix:hello");
}

#[test]
fn finish_readies_the_encoder_for_a_new_text() {
    let mut enc = Encoder::new();
    let mut out = Vec::new();
    enc.encode(b"a", &mut out);
    assert_eq!(enc.pending(), 1);
    enc.finish(&mut out);
    enc.encode(b"b", &mut out);
    enc.finish(&mut out);
    assert_eq!(out, b"YQ==Yg==");
}
