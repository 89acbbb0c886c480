//! The metadata stripper never panics; its output does not depend on the slice
//! boundaries; and when the input is a valid image, so is the output.
//!
//! Input layout: first byte = slice length (1..=128) and format (high bit: JPEG), the rest
//! is the file.
#![no_main]

use attachments::image::strip::MetadataStripper;
use attachments::image::{jpeg::JpegValidator, png::PngValidator};
use attachments::{Error, Limits, MediaType, Validator};
use libfuzzer_sys::fuzz_target;

fn strip<'a>(ty: &MediaType, pieces: impl Iterator<Item = &'a [u8]>) -> Result<Vec<u8>, Error> {
    let mut s = MetadataStripper::new(ty).expect("PNG and JPEG are supported");
    let mut out = Vec::new();
    for piece in pieces {
        s.push(piece, &mut out)?;
    }
    s.finish()?;
    Ok(out)
}

fn valid(ty: &MediaType, file: &[u8]) -> bool {
    let limits = Limits::connectivity();
    let mut v: Box<dyn Validator> = if *ty == MediaType::JPEG {
        Box::new(JpegValidator::new(&limits.image, false))
    } else {
        Box::new(PngValidator::new(&limits.image, false))
    };
    v.update(file).and_then(|()| v.finish()).is_ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, file)) = data.split_first() else {
        return;
    };
    let ty = if head & 0x80 != 0 {
        MediaType::JPEG
    } else {
        MediaType::PNG
    };
    let step = usize::from(head & 0x7F) + 1;
    let whole = strip(&ty, std::iter::once(file));
    let split = strip(&ty, file.chunks(step));
    match (&whole, &split) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "output depends on the split"),
        (Err(_), Err(_)) => {}
        _ => panic!("whole {whole:?} but split {split:?}"),
    }
    if valid(&ty, file) {
        let out = whole.expect("a valid image strips");
        assert!(
            valid(&ty, &out),
            "a valid image stripped into an invalid one"
        );
    }
});
