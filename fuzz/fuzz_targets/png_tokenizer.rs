//! The PNG tokenizer never panics, and any split of the input gives the same event
//! stream (data slices merged, gathered bytes included) and the same verdict as the input
//! fed whole: the tokenizer's, and that of the validator built on it (with and without
//! trailing bytes allowed). Fed whole, in slices of a fuzzer-chosen length, one byte at a
//! time, and cut at two fuzzer-chosen points (`tests/common/tokens.rs`, shared with the
//! proptests of `tests/tokenizer.rs`). It replaces the former `png_validator` target,
//! whose checks it includes.
//!
//! Input layout: first byte = slice length (1..=256) and the cut points, the rest is the
//! file.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/tokens.rs"]
mod tokens;

fuzz_target!(|data: &[u8]| {
    let Some((&head, file)) = data.split_first() else {
        return;
    };
    let step = usize::from(head) + 1;
    let cuts = [
        usize::from(head) * 7 % (file.len() + 1),
        file.len() / 2 + usize::from(head % 5),
    ];
    tokens::check_split_independence(true, file, step, &cuts);
});
