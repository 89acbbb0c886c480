//! The JPEG validator never panics, and its verdict (dimensions or the exact error) is the
//! same fed whole, fed in slices of a fuzzer-chosen length, and fed one byte at a time.
//!
//! Input layout: first byte = slice length (1..=256), the rest is the file.
#![no_main]

use attachments::image::jpeg::JpegValidator;
use attachments::{Error, Limits, Validator};
use libfuzzer_sys::fuzz_target;

fn run<'a>(
    pieces: impl Iterator<Item = &'a [u8]>,
    trailing: bool,
) -> Result<Option<(u32, u32)>, Error> {
    let mut limits = Limits::connectivity();
    limits.image.max_segments = 1000;
    limits.image.max_metadata_bytes = 10_000;
    let mut v = JpegValidator::new(&limits.image, trailing);
    for piece in pieces {
        v.update(piece)?;
    }
    Ok(v.finish()?.dimensions)
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, file)) = data.split_first() else {
        return;
    };
    let step = usize::from(step) + 1;
    for trailing in [false, true] {
        let whole = run(std::iter::once(file), trailing);
        assert_eq!(
            run(file.chunks(step), trailing),
            whole,
            "split into {step}-byte slices"
        );
        assert_eq!(run(file.chunks(1), trailing), whole, "byte by byte");
    }
});
