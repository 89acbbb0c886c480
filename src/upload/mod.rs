//! Chunked upload, both sides, as IO-free state machines.
//!
//! - [`UploadPlan`] (client): fed a file's bytes as slices, gives ready-to-send request
//!   bodies as [`Bytes`](bytes::Bytes): one single-request body, or `start` / `resume` /
//!   `finish` chunk bodies (`docs/protocol.md`, *Chunked upload*). Base64 is written
//!   straight into the body as the bytes arrive; the `finish` body is released only once
//!   the [`Inspector`](crate::Inspector) has accepted the whole file.
//! - [`UploadSession`] (server): one per `upload_id`; takes each chunk back as a
//!   [`ChunkHeader`] (the wire's chunk request converts into one), decodes it straight into
//!   its buffer, checks order and sizes, feeds its own Inspector, and says what to store
//!   and when to commit.
//! - [`Sessions`] (server): the sessions of a process, with an idle TTL, "busy" markers
//!   for chunks being processed, and tombstones so an expired id gets a clear answer.
//! - [`SessionRecord`] (server): an [`UploadSession`] saved with [`UploadSession::save`]
//!   and continued with [`UploadSession::restore`], in this process or another. The
//!   crate's own receiver (`stream::UploadReceiver`, feature `async`) keeps every session this way
//!   in its store between two chunks, so several server processes can share one upload.
//!
//! Neither side does IO or reads the clock: time comes in as `now` arguments and ids as
//! random bytes from the caller. The async shells (feature `async`) live in
//! [`crate::stream`] and [`crate::store`].
//!
//! # Examples
//!
//! A file of 2,602,519 bytes (the size of the documented example, `docs/protocol.md`,
//! *Chunked upload*) in three chunks, from client bodies to a committed server session:
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use attachments::upload::{RandomId, Received, Sessions, Step, Target, UploadPlan, UploadSession};
//! use attachments::wire::{self, connectivity::ChunkRequest};
//! use attachments::{AcceptAll, Inspector, Policy};
//!
//! // The chat preset's "any type" rules with Connectivity's chunk sizes, so any bytes will do.
//! let policy = Policy::chat().with_limits(attachments::Limits::connectivity());
//! let file: Vec<u8> = (0..2_602_519u32).map(|i| (i % 251) as u8).collect();
//! let mut plan = UploadPlan::new(&policy, Target::Connectivity, "test.bin",
//!                                "application/octet-stream", file.len() as u64)?
//!     .with_chunk_size(887_655)?;
//! let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let mut sessions = Sessions::new(Duration::from_secs(600));
//! let (mut fed, mut chunks) = (0, 0);
//! loop {
//!     match plan.poll()? {
//!         Step::NeedData => fed += plan.write(&file[fed..])?,
//!         Step::NeedUploadId => unreachable!("set right after start below"),
//!         Step::Done => break,
//!         Step::Send(request) => {
//!             chunks += 1;
//!             let req: ChunkRequest<'_> = wire::from_slice(&request.body)?;
//!             let received = match &req.attachment.upload_id {
//!                 None => {
//!                     let id = RandomId::from_bytes([7; 16]);
//!                     let (session, received) = UploadSession::start(&policy, id, &req.attachment, now)?;
//!                     plan.set_upload_id(id.to_string());
//!                     sessions.insert(session);
//!                     received
//!                 }
//!                 Some(id) => {
//!                     let mut session = sessions.check_out(id, req.attachment.chunk.chunk_number, now)?;
//!                     let received = session.receive(&req.attachment, now);
//!                     sessions.check_in(session);
//!                     received?
//!                 }
//!             };
//!             // A real server stores `received.data()` here and commits on `Received::Last`.
//!             if let Received::Last { attachment, .. } = received {
//!                 assert_eq!(attachment.size, 2_602_519);
//!                 assert_eq!(attachment.sha256, attachments::digest::sha256(&file));
//!             }
//!         }
//!     }
//! }
//! assert_eq!(chunks, 3);
//! # Ok::<(), attachments::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;

mod chunk;
mod plan;
mod resumable;
mod session;

pub use chunk::{ChunkAction, ChunkHeader};
pub use plan::{DEFAULT_CHUNK_SIZE, Request, RequestKind, Step, Target, UploadPlan};
pub use resumable::{Creation, MAX_METADATA, RESUMABLE_CHUNK, ResumableRecord, ResumableUpload};
pub use session::{
    AttachmentInfo, COMMIT_LEASE, DEFAULT_SESSION_TTL, MAX_AHEAD, RECENT_CHUNKS, Received,
    SessionRecord, Sessions, UploadSession, receive_single,
};
#[cfg(feature = "async")]
pub(crate) use session::{bad_record, unix_millis};

/// A random 128-bit identifier (`upload_id`, `attachment_id`), written like a UUID:
/// 32 lowercase hex digits in groups of 8-4-4-4-12.
///
/// The bytes come from the caller (the async shells use the operating system's generator),
/// so the core stays free of IO. Parsing accepts exactly that form, in either case, so an
/// id read from a request can be used as a file or object name safely. The layout is the
/// `uuid` crate's.
///
/// # Examples
///
/// ```
/// use attachments::upload::RandomId;
///
/// let id = RandomId::from_bytes([0xab; 16]);
/// assert_eq!(id.to_string(), "abababab-abab-abab-abab-abababababab");
/// assert_eq!("ABABABAB-ABAB-ABAB-ABAB-ABABABABABAB".parse::<RandomId>(), Ok(id));
/// assert!("../etc/passwd".parse::<RandomId>().is_err());
/// assert!("{abababab-abab-abab-abab-abababababab}".parse::<RandomId>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RandomId([u8; 16]);

/// The low 62 bits of a UUID version 7: `rand_b`, below the variant bits.
const RAND_B: u128 = (1 << 62) - 1;

impl RandomId {
    /// The id made of these 16 bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        RandomId(bytes)
    }

    /// Its 16 bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// A time-ordered id: a UUID version 7 (RFC 9562) whose first 48 bits are `unix_ms`,
    /// then the version and variant bits, then 74 bits of `random` (its last 10 bytes, less
    /// the bits the version and variant take). Ids of a later millisecond sort after
    /// earlier ones, as bytes and as text, which is what lets a list be paged newest first
    /// by id, even past ids that were deleted meanwhile.
    ///
    /// # Examples
    ///
    /// ```
    /// use attachments::upload::RandomId;
    ///
    /// let early = RandomId::time_ordered(1_700_000_000_000, [0xff; 16]);
    /// let later = RandomId::time_ordered(1_700_000_000_001, [0x00; 16]);
    /// assert!(early < later && early.to_string() < later.to_string());
    /// assert_eq!(later.unix_millis(), Some(1_700_000_000_001));
    /// assert_eq!(early.to_string(), "018bcfe5-6800-7fff-bfff-ffffffffffff");
    /// ```
    pub fn time_ordered(unix_ms: u64, random: [u8; 16]) -> Self {
        let mut tail = [0u8; 10];
        tail.copy_from_slice(&random[6..]);
        RandomId(
            *uuid::Builder::from_unix_timestamp_millis(unix_ms, &tail)
                .as_uuid()
                .as_bytes(),
        )
    }

    /// The millisecond a [`RandomId::time_ordered`] id was made in; `None` for an id that
    /// is not a UUID version 7.
    pub fn unix_millis(&self) -> Option<u64> {
        let id = uuid::Uuid::from_bytes(self.0);
        if id.get_version() != Some(uuid::Version::SortRand)
            || id.get_variant() != uuid::Variant::RFC4122
        {
            return None;
        }
        let (secs, nanos) = id.get_timestamp()?.to_unix();
        Some(secs * 1000 + u64::from(nanos) / 1_000_000)
    }

    /// The same time-ordered id with its random low 62 bits counted up by `step` (RFC 9562,
    /// section 6.2, method 2: the next id of one millisecond); `None` when they would
    /// overflow (the next id then belongs to the next millisecond).
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) fn counted_up(&self, step: u64) -> Option<Self> {
        let id = u128::from_be_bytes(self.0);
        let next = (id & RAND_B).checked_add(u128::from(step))?;
        (next <= RAND_B).then(|| RandomId(((id & !RAND_B) | next).to_be_bytes()))
    }
}

impl fmt::Display for RandomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = uuid::Uuid::encode_buffer();
        f.write_str(
            uuid::Uuid::from_bytes(self.0)
                .hyphenated()
                .encode_lower(&mut buf),
        )
    }
}

impl fmt::Debug for RandomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RandomId({self})")
    }
}

/// The text is not an id of the 8-4-4-4-12 hex form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseIdError;

impl fmt::Display for ParseIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not an id of the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (hex digits)")
    }
}

impl std::error::Error for ParseIdError {}

impl FromStr for RandomId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, ParseIdError> {
        // Only the hyphenated form: `uuid` also reads simple, braced and URN forms, which
        // have other lengths.
        if s.len() != 36 {
            return Err(ParseIdError);
        }
        let id = uuid::Uuid::try_parse_ascii(s.as_bytes()).map_err(|_| ParseIdError)?;
        Ok(RandomId(id.into_bytes()))
    }
}
