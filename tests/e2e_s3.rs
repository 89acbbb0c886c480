//! The same end-to-end tests as `tests/e2e.rs` (`e2e/cases.rs`), with the server on the
//! S3 store over a real S3 server (Ceph RGW from `scripts/s3-test-server.sh start`).
//!
//! Each case is ignored unless asked for (`cargo test -- --include-ignored`, which
//! `.ci/test` passes): plain `cargo test` passes without the S3 server, and lists these as
//! ignored with the reason.
#![cfg(all(feature = "server", feature = "client", feature = "object-store"))]

mod common;

/// Whether the server runs on the S3 store.
const S3: bool = true;

/// Makes the case `$name` of `e2e/cases.rs` the test `cases::$name::s3`, ignored unless
/// asked for (plain `cargo test` lists it as ignored, with how to run it). `$name` is an
/// `async fn`, followed by the arguments of its `tokio::test` if any, or a plain `fn`
/// followed by `sync`.
macro_rules! case {
    ($name:ident, sync) => {
        mod $name {
            #[test]
            #[ignore = "needs the S3 test server: scripts/s3-test-server.sh start, then cargo test --all-features -- --include-ignored (bash .ci/test does both)"]
            fn s3() {
                super::$name();
            }
        }
    };
    ($name:ident $(, $($arg:tt)*)?) => {
        mod $name {
            #[tokio::test$(($($arg)*))?]
            #[ignore = "needs the S3 test server: scripts/s3-test-server.sh start, then cargo test --all-features -- --include-ignored (bash .ci/test does both)"]
            async fn s3() {
                super::$name().await;
            }
        }
    };
}

#[path = "e2e/cases.rs"]
mod cases;
