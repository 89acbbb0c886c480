//! Wire parsing (and the download query parser and saved download checkpoints) never
//! panics, and whatever parses serialises to JSON that parses back to an equal value. The one exception: a base64 payload is read as raw bytes (the decoder
//! checks it), so one holding non-UTF-8 bytes cannot be written back as a JSON string, and
//! serialising says so.
#![no_main]

use attachments::wire::{self, connectivity as conn, demand};
use libfuzzer_sys::fuzz_target;

macro_rules! check {
    ($data:expr, $ty:ty) => {
        if let Ok(value) = wire::from_slice::<$ty>($data) {
            let text = match serde_json::to_vec(&value) {
                Ok(text) => text,
                Err(e) if e.to_string().contains("base64 text is not UTF-8") => return,
                Err(e) => panic!("{} does not serialise: {e}", stringify!($ty)),
            };
            let again: $ty = wire::from_slice(&text).expect("our own output parses");
            assert_eq!(again, value, "{} does not round-trip", stringify!($ty));
        }
    };
}

fuzz_target!(|data: &[u8]| {
    // The download query parser: never a panic; a resolved range lies inside the file.
    if let Ok(query) = std::str::from_utf8(data)
        && let Ok(q) = attachments::download::RangeQuery::from_query_string(query)
    {
        let size = data.len() as u64 * 37;
        if let Ok(r) = q.resolve(size, &attachments::Limits::connectivity()) {
            assert!(r.start <= r.end && r.end <= size, "{r:?} outside {size}");
        }
    }
    // A saved download checkpoint, as read back from disk: resumes or is refused, and a
    // resumed one takes the rest of the file.
    if let Ok(cp) = serde_json::from_slice::<attachments::download::Checkpoint>(data) {
        let size = cp.file_size.min(1 << 16);
        if let Ok(mut r) = attachments::download::Reassembler::resume(&cp, size, None) {
            assert_eq!(r.delivered(), cp.offset);
            let rest = vec![7u8; (size - cp.offset) as usize];
            r.insert(cp.offset, bytes::Bytes::from(rest))
                .expect("the rest fits");
            while r.next_ready().is_some() {}
            r.finish().expect("complete");
        }
    }
    check!(data, conn::UploadRequest<'_>);
    check!(data, conn::ChunkRequest<'_>);
    check!(data, conn::UploadResponse);
    check!(data, conn::ChunkResponse);
    check!(data, conn::DownloadResponse<'_>);
    check!(data, conn::FileInfoResponse);
    check!(data, demand::UploadRequest<'_>);
    check!(data, demand::AttachmentRef);
    check!(data, demand::Response<demand::UploadData>);
    check!(data, demand::Response<demand::MetadataData>);
    check!(data, demand::ErrorResponse);
});
