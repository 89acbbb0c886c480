//! The header fields of the resumable-upload protocols (`Upload-Metadata`,
//! `Upload-Checksum`, tus integers, the IETF draft's structured fields) and a resumable
//! upload's saved record as the server reads them: never a panic, and what parses is
//! consistent. The first byte picks the parser; the rest is the field value (or the record
//! JSON, then a newline and bytes to append).
#![no_main]

use attachments::upload::{ResumableRecord, ResumableUpload};
use attachments::wire::resumable::{
    Checksum, MAX_OFFSET, Metadata, interop_version, sf_boolean, sf_count, tus_integer, tus_version,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match pick % 6 {
        0 => {
            if let Ok(meta) = Metadata::parse(&text) {
                // What parses encodes to a value that parses to the same pairs.
                let again = Metadata::parse(&meta.encode()).expect("its own encoding parses");
                assert_eq!(again, meta);
            }
        }
        1 => {
            if let Ok(sum) = Checksum::parse(&text) {
                assert_eq!(sum.digest.len(), sum.algorithm.digest_len());
            }
        }
        2 => {
            if let Ok(n) = tus_integer("Upload-Offset", &text) {
                assert!(n <= MAX_OFFSET);
                assert_eq!(
                    text.trim_start_matches('0').len().max(1),
                    n.to_string().len().max(1)
                );
            }
            let _ = tus_version(Some(&text));
        }
        3 => {
            let _ = sf_boolean("Upload-Complete", &text);
            if let Ok(n) = sf_count("Upload-Offset", &text) {
                assert!(n <= MAX_OFFSET);
            }
            let _ = interop_version(&text);
        }
        _ => {
            // A saved record (any JSON), restored under the chat policy, then fed bytes.
            let (json, more) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            let Ok(record) = serde_json::from_slice::<ResumableRecord>(json) else {
                return;
            };
            let Ok(mut upload) = ResumableUpload::restore(&attachments::Policy::chat(), record)
            else {
                return;
            };
            let now = std::time::SystemTime::UNIX_EPOCH;
            let offset = upload.offset();
            if upload.check_append(offset).is_ok() && !more.is_empty() {
                let take = upload.piece_len(more.len());
                if upload.take(&more[..take], now).is_ok() {
                    assert_eq!(upload.offset(), offset + take as u64);
                    let _ = upload.save();
                }
            }
            if upload.is_complete() {
                let _ = upload.finish(now);
            }
        }
    }
});
