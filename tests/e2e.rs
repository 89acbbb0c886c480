//! End-to-end tests over loopback with the memory store; the cases are in `e2e/cases.rs`.
#![cfg(all(feature = "server", feature = "client"))]

mod common;

/// Whether the server runs on the S3 store.
const S3: bool = false;

#[path = "e2e/cases.rs"]
mod cases;
