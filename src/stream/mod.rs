//! Async shells around the upload state machines (feature `async`): they move bytes and
//! hold no protocol logic of their own. One file per role:
//!
//! - `body`: [`BodyStream`] (client): a `tokio::fs::File`, any `AsyncRead`, or a
//!   `Stream<Item = io::Result<Bytes>>` in; a `Stream` of request bodies out, with at most
//!   one body built ahead of the one being sent, and a progress callback.
//! - `read`: [`read_body`] / [`read_body_sized`] (both sides): a request or answer body
//!   read whole under a length limit ([`max_body_len`] for the upload endpoints).
//! - `receiver`: [`UploadReceiver`] (server): request bodies in, one flow per file
//!   (single, chunked, streamed) and the sweep; [`UploadSession`](crate::upload::UploadSession)s
//!   saved in a [`Store`](crate::store::Store) between chunks (so several processes may
//!   share one upload); the response `data` out.
//! - `ids`: upload, attachment and message ids from the operating system's random bits.

mod body;
pub(crate) mod ids;
mod read;
mod receiver;

pub use body::{BodyStream, Progress};
pub use read::{max_body_len, read_body, read_body_sized};
pub use receiver::{
    Append, LEASE_MARGIN, LOCK_WAIT, PUT_TIMEOUT, ResumableStatus, STREAM_CHUNK, Staged,
    UploadReceiver, WRITE_LEASE,
};
