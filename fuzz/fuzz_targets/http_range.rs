//! Any `Range` header against any size: never a panic, and a partial answer is a non-empty
//! range inside the file whose `Content-Range` names it.
//!
//! Input layout: 8 bytes of size (little-endian; the first byte alone picks a small size
//! when the input is short), the rest is the header value.
#![no_main]

use attachments::download::http_range::{RangeRequest, content_range, parse_content_range};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (size, header) = match data.split_first_chunk::<8>() {
        Some((size, header)) => (u64::from_le_bytes(*size), header),
        None => (
            data.first().map_or(0, |&b| u64::from(b)),
            data.get(1..).unwrap_or_default(),
        ),
    };
    // Also as a small file, where ranges are most often satisfiable.
    for size in [size, size % 4096] {
        match RangeRequest::parse(Some(header), size) {
            RangeRequest::Partial(r) => {
                assert!(r.start < r.end && r.end <= size, "{r:?} of {size}");
                let text = content_range(&r, size);
                assert_eq!(text, format!("bytes {}-{}/{size}", r.start, r.end - 1));
            }
            RangeRequest::Whole => {}
            RangeRequest::Unsatisfiable => assert!(header.len() <= 1024),
        }
    }
    // The same bytes as a 206 answer's Content-Range, as the client reads it.
    if let Some((r, size)) = std::str::from_utf8(header)
        .ok()
        .and_then(parse_content_range)
    {
        assert!(r.start < r.end && r.end <= size, "{r:?} of {size}");
        assert_eq!(
            parse_content_range(&content_range(&r, size)),
            Some((r, size))
        );
    }
});
