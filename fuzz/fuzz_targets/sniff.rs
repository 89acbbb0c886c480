//! The sniffer's verdict, and the Inspector's, must not depend on the slice boundaries.
//! Never a panic.
//!
//! Input layout: first byte = slice length (1..=256), the rest is the file.
#![no_main]

use attachments::sniff::{Sniffer, detect};
use attachments::{Inspector, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, file)) = data.split_first() else {
        return;
    };
    let step = usize::from(step) + 1;

    let whole = detect(file);
    let mut sniffer = Sniffer::new();
    for piece in file.chunks(step) {
        sniffer.update(piece);
    }
    assert_eq!(sniffer.finish().cloned(), whole);

    // Declared as the recognised type, and (chat) as "no particular type", where the
    // recognised type's validator takes over wherever the sniff window ends: the verdict
    // still does not depend on the split.
    let declared = whole.as_ref().map_or("image/png", |t| t.as_str());
    for (policy, declared) in [
        (Policy::demand(), declared),
        (Policy::chat(), declared),
        (Policy::chat(), "application/octet-stream"),
    ] {
        let Ok(mut one) = Inspector::new(&policy, declared, None) else {
            continue;
        };
        let mut two = Inspector::new(&policy, declared, None).expect("same arguments");
        let a = one.update(file).and_then(|()| one.finish());
        let b = file
            .chunks(step)
            .try_for_each(|p| two.update(p))
            .and_then(|()| two.finish());
        assert_eq!(a, b);
    }
});
