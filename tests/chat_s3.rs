//! The same end-to-end tests as `tests/chat.rs` (`chat/cases.rs`), with the server on the
//! S3 store over a real S3 server (Ceph RGW from `scripts/s3-test-server.sh start`).
#![cfg(all(feature = "server", feature = "client", feature = "object-store"))]

mod common;

/// Whether the server runs on the S3 store.
const S3: bool = true;

#[path = "chat/cases.rs"]
mod cases;
