//! Saved upload sessions as a stateless server reads them back from its store: any bytes
//! as a `SessionRecord` (or an `InspectorState`), restored under two policies, then fed
//! the next chunk. A damaged or forged record is refused with an error, never a panic;
//! a restored session saves again to a record that restores to the same counters.
#![no_main]

use std::time::{Duration, SystemTime};

use attachments::codec::base64::encode_to;
use attachments::upload::{SessionRecord, UploadSession};
use attachments::wire::Base64Text;
use attachments::wire::connectivity::{Chunk, ChunkAction, ChunkAttachment};
use attachments::{Inspector, InspectorState, Limits, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (record, rest) = (&data[..split], data.get(split + 1..).unwrap_or(&[]));
    let policies = [
        Policy::chat().with_limits(Limits::connectivity()),
        Policy::connectivity(),
    ];
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 30);
    if let Ok(saved) = serde_json::from_slice::<SessionRecord>(record) {
        for policy in &policies {
            let Ok(mut session) = UploadSession::restore(policy, saved.clone()) else {
                continue;
            };
            // Saving again gives a record that restores to the same place.
            if let Ok(again) = session.save() {
                let back = UploadSession::restore(policy, again).expect("a saved record restores");
                assert_eq!(back.next_number(), session.next_number());
                assert_eq!(back.received(), session.received());
            }
            let _ = session.expire_if_idle(now, Duration::from_secs(600));
            let left = session.file_size().saturating_sub(session.received());
            let mut text = Vec::new();
            encode_to(rest, &mut text);
            let req = ChunkAttachment {
                action: if rest.len() as u64 >= left {
                    ChunkAction::Finish
                } else {
                    ChunkAction::Resume
                },
                upload_id: Some(session.id().to_string()),
                chunk: Chunk {
                    chunk_number: session.next_number(),
                    chunk_content: Base64Text::from(String::from_utf8(text).unwrap()),
                    chunk_size: rest.len() as u64,
                },
                file_type: session.file_type().to_owned(),
                file_size: session.file_size(),
                file_name: session.file_name().to_owned(),
            };
            let _ = session.receive(&req, now);
            let _ = session.save();
        }
    }
    if let Ok(state) = serde_json::from_slice::<InspectorState>(record) {
        for policy in &policies {
            if let Ok(mut insp) = Inspector::restore(policy, state.clone()) {
                let _ = insp.update(rest);
                let _ = insp.finish();
            }
        }
    }
});
