//! End-to-end tests over loopback with the memory store; the cases are in `e2e/cases.rs`.
#![cfg(all(feature = "server", feature = "client"))]

mod common;

/// Whether the server runs on the S3 store.
const S3: bool = false;

/// Makes the case `$name` of `e2e/cases.rs` the test `cases::$name::memory`. `$name` is
/// an `async fn`, followed by the arguments of its `tokio::test` if any, or a plain `fn`
/// followed by `sync`.
macro_rules! case {
    ($name:ident, sync) => {
        mod $name {
            #[test]
            fn memory() {
                super::$name();
            }
        }
    };
    ($name:ident $(, $($arg:tt)*)?) => {
        mod $name {
            #[tokio::test$(($($arg)*))?]
            async fn memory() {
                super::$name().await;
            }
        }
    };
}

#[path = "e2e/cases.rs"]
mod cases;
