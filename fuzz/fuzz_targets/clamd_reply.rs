//! clamd's replies as any endpoint could send them, and the `INSTREAM` framing of any
//! file: never a panic; a reply read is one line and a found signature is named as sent;
//! the frames carry the file whole, in order, each under its true length.
//!
//! Input layout: the whole input is a reply; it is also framed as a file.
#![no_main]

use attachments::scan::clamd::{MAX_FRAME, Reply, frames, parse_reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(reply) = parse_reply(data) {
        let line = &data[..data.len() - 1];
        assert!(!line.contains(&0), "a reply with a NUL inside: {data:?}");
        if let Reply::Found(signature) = &reply {
            assert!(!signature.is_empty());
            let text = String::from_utf8_lossy(line);
            assert!(text.contains(signature.as_str()), "{reply:?} from {text:?}");
        }
    }
    let mut carried = 0;
    for (header, piece) in frames(data) {
        assert_eq!(u32::from_be_bytes(header) as usize, piece.len());
        assert!(!piece.is_empty() && piece.len() <= MAX_FRAME);
        assert_eq!(piece, &data[carried..carried + piece.len()]);
        carried += piece.len();
    }
    assert_eq!(carried, data.len());
});
