//! Saved upload sessions, inspector and validator states as a stateless server reads them
//! back from its store, restored and continued: never a panic. Two kinds of input (see
//! `tests/common/saved_states.rs`, shared with the test suite, which replays this
//! target's corpus):
//!
//! - starting with `{`: any bytes as a `SessionRecord` (or an `InspectorState`), a
//!   newline, then the bytes of the next chunk;
//! - anything else: choices that pick a valid saved state (sessions, inspectors and
//!   validators saved from real PNG, JPEG and untyped files at many positions), mutate its
//!   JSON where it matters, restore it under three policies and feed it more bytes to the
//!   end.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/saved_states.rs"]
mod saved_states;

fuzz_target!(|data: &[u8]| {
    saved_states::session_record(data);
});
