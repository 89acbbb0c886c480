//! End-to-end tests of the chat-platform resource (seed 003) over loopback with the
//! memory store; the cases are in `chat/cases.rs`.
#![cfg(all(feature = "server", feature = "client"))]

mod common;

/// Whether the server runs on the S3 store.
const S3: bool = false;

#[path = "chat/cases.rs"]
mod cases;
