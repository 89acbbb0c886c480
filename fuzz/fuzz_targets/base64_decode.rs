//! The strict base64 decoder fed the whole text and fed it split at arbitrary points must
//! agree: same bytes, or the same error at the same offset. `decode_each` (the fused path)
//! must agree with both, and hand over exactly the bytes it writes. Never a panic.
//!
//! Input layout: first byte = number of cut points (mod 8), then 2 bytes per cut point,
//! then the text.
#![no_main]

use attachments::Error;
use attachments::codec::base64::{Decoder, Encoder, decode_to, decoded_len};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 8);
    if rest.len() < 2 * n {
        return;
    }
    let (cut_bytes, text) = rest.split_at(2 * n);
    let mut cuts: Vec<usize> = cut_bytes
        .chunks(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (text.len() + 1))
        .collect();
    cuts.sort_unstable();

    let mut whole = Vec::new();
    let whole_result = decode_to(text, &mut whole);

    let mut split = Vec::new();
    let mut dec = Decoder::new();
    let mut start = 0;
    let mut split_result: Result<usize, Error> = Ok(0);
    for &cut in cuts.iter().chain(std::iter::once(&text.len())) {
        if split_result.is_ok() {
            split_result = dec.decode(&text[start..cut], &mut split);
        }
        start = cut;
    }
    if split_result.is_ok() {
        split_result = dec.finish(&mut split);
    }

    // The fused path, with a step taken from the input.
    let step = 4 * (1 + usize::from(data[0] >> 3));
    let mut each = Vec::new();
    let mut pieces = Vec::new();
    let mut dec = Decoder::new();
    let mut start = 0;
    let mut each_result: Result<usize, Error> = Ok(0);
    for &cut in cuts.iter().chain(std::iter::once(&text.len())) {
        if each_result.is_ok() {
            each_result = dec.decode_each(&text[start..cut], &mut each, step, |p| {
                pieces.extend_from_slice(p);
                Ok(())
            });
        }
        start = cut;
    }
    if each_result.is_ok() {
        let from = each.len();
        each_result = dec.finish(&mut each);
        pieces.extend_from_slice(&each[from..]);
    }
    match (&split_result, &each_result) {
        (Ok(_), Ok(_)) => {
            assert_eq!(split, each, "decode_each gave other bytes");
            assert_eq!(
                each, pieces,
                "decode_each handed over other bytes than it wrote"
            );
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "decode_each failed differently"),
        _ => panic!("split {split_result:?} but decode_each {each_result:?}"),
    }

    match (&whole_result, &split_result) {
        (Ok(_), Ok(_)) => {
            assert_eq!(whole, split, "split decoding gave other bytes");
            assert_eq!(whole.len(), decoded_len(text));
            // Canonical: re-encoding gives the text back, up to padding.
            let mut again = Vec::new();
            let mut enc = if text.ends_with(b"=") || text.len() % 4 == 0 {
                Encoder::new()
            } else {
                Encoder::unpadded()
            };
            enc.encode(&whole, &mut again);
            enc.finish(&mut again);
            assert_eq!(again, text, "accepted a non-canonical text");
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "split decoding failed differently"),
        _ => panic!("whole {whole_result:?} but split {split_result:?}"),
    }
});
