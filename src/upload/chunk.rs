//! What an [`UploadSession`](super::UploadSession) is fed: one chunk and the file it claims
//! to belong to, whatever wire format carried it.

use serde::{Deserialize, Serialize};

/// The phase of a chunked upload: the Connectivity API's `action` (`docs/protocol.md`,
/// *Start resume and finish*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChunkAction {
    /// The first chunk (number 0); the response carries `upload_id`.
    Start,
    /// A chunk between the first and the last.
    Resume,
    /// The last chunk; the response carries `attachment_id`.
    Finish,
}

/// One chunk of a chunked upload, as the session judges it: its place, its declared size,
/// its base64 text, and the file it says it belongs to. Every field borrows from the
/// parsed request, so building one copies nothing.
///
/// A wire type converts into it (the Connectivity API's
/// [`ChunkAttachment`](crate::wire::connectivity::ChunkAttachment) does, by `From`);
/// another API's chunk request can be judged by the same session by filling one in.
///
/// # Examples
///
/// ```
/// use std::time::SystemTime;
/// use attachments::upload::{ChunkAction, ChunkHeader, RandomId, Received, UploadSession};
///
/// let policy = attachments::Policy::chat().with_limits(attachments::Limits::connectivity());
/// let chunk = ChunkHeader {
///     action: ChunkAction::Start,
///     upload_id: None,
///     number: 0,
///     size: 3,
///     file_name: "a.bin",
///     file_type: "application/octet-stream",
///     file_size: 1_048_580,
///     content: b"QUJD",
/// };
/// let id = RandomId::from_bytes([1; 16]);
/// let (session, received) = UploadSession::start(&policy, id, chunk, SystemTime::UNIX_EPOCH)?;
/// assert!(matches!(received, Received::Chunk { number: 0, offset: 0, .. }));
/// assert_eq!(session.received(), 3);
/// # Ok::<(), attachments::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader<'a> {
    /// `start`, `resume` or `finish`.
    pub action: ChunkAction,
    /// The upload it continues; `None` for `start`.
    pub upload_id: Option<&'a str>,
    /// 0 for `start`, then one more for each chunk.
    pub number: u64,
    /// The chunk's declared size, in decoded bytes.
    pub size: u64,
    /// The file's name.
    pub file_name: &'a str,
    /// The file's declared type.
    pub file_type: &'a str,
    /// The file's declared total size, in decoded bytes.
    pub file_size: u64,
    /// The chunk as base64 text, not yet checked.
    pub content: &'a [u8],
}
