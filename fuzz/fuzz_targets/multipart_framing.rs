//! Any body in any pieces through the multipart framing check: never a panic, the verdict
//! and the part count do not depend on where the pieces are cut, and a body it lets
//! through has at most the part limit.
//!
//! Input layout: the first byte is the piece size (0 is read as 1), the rest the body.
#![no_main]

use attachments::wire::multipart::{FramingCheck, FramingError, FramingLimits};
use libfuzzer_sys::fuzz_target;

const LIMITS: FramingLimits = FramingLimits {
    max_preamble: 64,
    max_part_headers: 128,
    max_parts: 4,
};

fn run(body: &[u8], piece: usize) -> Result<(usize, bool), FramingError> {
    let mut check = FramingCheck::new("b0und", LIMITS)?;
    for piece in body.chunks(piece) {
        check.feed(piece)?;
    }
    Ok((check.parts(), check.is_closed()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, body)) = data.split_first() else {
        return;
    };
    let whole = run(body, body.len().max(1));
    let cut = run(body, usize::from(piece.max(1)));
    assert_eq!(whole, cut);
    if let Ok((parts, _)) = whole {
        assert!(parts <= LIMITS.max_parts);
    }
});
