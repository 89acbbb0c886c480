//! Request bodies read whole, under a length limit checked before anything past it is
//! buffered.

use std::io;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

use crate::codec::base64::encoded_len;
use crate::error::{Error, Result, SizeLimit};
use crate::policy::Policy;

/// The largest request body the upload endpoints accept under `policy`: the largest file
/// or chunk as base64, plus 16 KiB for the other fields.
pub fn max_body_len(policy: &Policy) -> usize {
    let largest = policy
        .limits
        .max_single_size
        .max(policy.limits.max_chunk_size);
    encoded_len(usize::try_from(largest).unwrap_or(usize::MAX / 2)) + 16 * 1024
}

/// Reads a request body from a stream of buffers, refusing it as soon as it passes `limit`
/// bytes (before buffering more).
///
/// # Errors
///
/// [`Error::TooLarge`] with [`SizeLimit::Body`]; [`Error::Io`] when the stream fails.
///
/// # Examples
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use attachments::stream::read_body;
///
/// let parts = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from("{}"))]);
/// assert_eq!(read_body(parts, 10).await?, "{}");
/// let parts = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from("[1,2,3]"))]);
/// assert_eq!(read_body(parts, 5).await.unwrap_err().status(), 400);
/// # Ok::<(), attachments::Error>(())
/// # }).unwrap();
/// ```
pub async fn read_body<S, E>(stream: S, limit: usize) -> Result<Bytes>
where
    S: Stream<Item = std::result::Result<Bytes, E>>,
    E: std::fmt::Display,
{
    read_body_sized(stream, limit, 0).await
}

/// As [`read_body`], with the body's announced length (`Content-Length`, 0 when unknown):
/// a body in several buffers is then gathered into one allocation of that size (capped
/// at `limit`) instead of a buffer that doubles as it grows.
///
/// # Errors
///
/// As [`read_body`].
pub async fn read_body_sized<S, E>(stream: S, limit: usize, announced: u64) -> Result<Bytes>
where
    S: Stream<Item = std::result::Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let mut stream = std::pin::pin!(stream);
    // One buffer is kept as it is; only a body in several buffers is copied together.
    let mut first: Option<Bytes> = None;
    let announced = usize::try_from(announced).unwrap_or(usize::MAX).min(limit);
    let mut body = BytesMut::new();
    let mut size = 0usize;
    while let Some(part) = stream.next().await {
        let part = part.map_err(|e| {
            Error::io_other(
                "reading the request body",
                io::ErrorKind::Other,
                e.to_string(),
            )
        })?;
        size += part.len();
        if size > limit {
            return Err(Error::TooLarge {
                size: size as u64,
                limit: limit as u64,
                kind: SizeLimit::Body,
            });
        }
        match first.take() {
            None if body.is_empty() => first = Some(part),
            held => {
                if let Some(held) = held {
                    body.reserve(announced.max(held.len() + part.len()));
                    body.extend_from_slice(&held);
                }
                body.extend_from_slice(&part);
            }
        }
    }
    Ok(first.unwrap_or_else(|| body.freeze()))
}
