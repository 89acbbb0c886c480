//! End-to-end tests of the chat-platform resource (seed 003) over loopback with the
//! memory store; the cases are in `chat/cases.rs`.
#![cfg(all(feature = "server", feature = "client"))]

mod common;

/// Whether the server runs on the S3 store.
const S3: bool = false;

/// Makes the case `$name` (an `async fn` of `chat/cases.rs`, followed by the arguments of its
/// `tokio::test`, if any) the test `cases::$name::memory`.
macro_rules! case {
    ($name:ident $(, $($arg:tt)*)?) => {
        mod $name {
            #[tokio::test$(($($arg)*))?]
            async fn memory() {
                super::$name().await;
            }
        }
    };
}

#[path = "chat/cases.rs"]
mod cases;
