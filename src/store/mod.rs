//! Where uploads and attachments live: the [`Store`] trait and its backends
//! (feature `async`).
//!
//! | backend | for | commit |
//! | --- | --- | --- |
//! | [`MemoryStore`] | tests, short-lived processes | a map insert under a lock |
//! | [`FsStore`] | the embedded default: one directory | the chunk files hard-linked into a directory with the metadata, fsync, one rename |
//! | `ObjectStoreBackend` (feature `object-store`) | S3 and compatible services; several processes sharing a bucket | a manifest naming the chunk objects, created with `If-None-Match: *` |
//!
//! # The contract
//!
//! The trait assumes nothing about which process handles which chunk: every call names
//! the upload and the chunk's `number` and `offset`, so chunks of one upload may reach
//! different processes sharing one store (the shape an S3 backend needs).
//!
//! - [`Store::begin_upload`] records an upload and when it started;
//!   [`Store::put_chunk`] stores chunk `number` at byte `offset` (putting the same number
//!   again replaces it); [`Store::commit`] turns the upload into an attachment,
//!   atomically: after it returns the attachment is visible whole, and before (or if it
//!   fails) it is not visible at all. It refuses ([`Error::Incomplete`]) unless the stored
//!   chunks tile `0..file_size` exactly: taken in offset order, each begins where the one
//!   before ends, the first at 0 and the last ending at the file's size, so no gap, no
//!   overlap and no byte past the end, whatever the chunks' lengths add up to. Chunks may
//!   be stored while a commit runs (a pipelining client's, another process's): the commit
//!   judges one consistent set of them. [`Store::abort`] releases an upload's bytes
//!   (idempotent).
//! - [`Store::read_range`] and [`Store::metadata`] read an attachment;
//!   [`Store::set_linked`] marks it as sent in a message (unlinked attachments expire after
//!   24 hours, linked ones are kept: `docs/protocol.md`, *Lifetimes and the sweep*).
//! - [`Store::load_session`] / [`Store::save_session`] keep each upload's session record
//!   (an [`UploadSession`](crate::upload::UploadSession) saved as bytes) with a version:
//!   a save names the version it read and fails with [`Error::Contended`] when another
//!   save came first. This is what lets any process take an upload's next chunk, and what
//!   stops two processes from both accepting the same chunk. [`Store::abort`] keeps the
//!   record (it answers later chunks); [`Store::remove`] drops it.
//! - [`Store::list_expired`] finds uploads with no activity since a cutoff and unlinked
//!   attachments created before another (and what a crash left half-written);
//!   [`Store::remove`] deletes one. An upload's activity is its begin, every session
//!   save and **every chunk stored**: an upload that saves no session record (a streamed
//!   one, [`UploadReceiver::receive_stream`](crate::stream::UploadReceiver::receive_stream))
//!   stays active while its chunks arrive. A chunk's time is the backend's: the chunk
//!   file's modification time ([`FsStore`]), the chunk object's last-modified time (S3,
//!   the service's clock), the store's clock when the chunk was put ([`MemoryStore`]).
//!
//! - Records (metadata, manifests, session records) are read back under a size budget
//!   (`FsStore`: [`MAX_META_FILE`], S3: `MAX_RECORD_OBJECT`), and a backend refuses to
//!   write one over it ([`Error::NotSaveable`], naming both sizes), so nothing it writes
//!   is unreadable. A record damaged all the same (by hand, by a disk) fails only the
//!   calls that read it: [`Store::list_attachments`] skips it with a warning
//!   (`tracing`), and the sweep moves it aside ([`Expired::Damaged`]).
//!
//! Ids are [`RandomId`](crate::upload::RandomId) text; backends that map ids to paths
//! refuse anything else as not found. `conformance` (feature `conformance`) checks a
//! backend against this contract, one function per capability; every backend in the
//! crate passes it.
//!
//! Every `Store` is also a [`MessageStore`] (the sandbox's messages, kept beside the
//! attachments they carry; see [`messages`] for that contract and its caps), checked by
//! `conformance_messages` (feature `conformance`).

use std::fmt;
use std::ops::Range;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::upload::AttachmentInfo;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "conformance")]
pub mod conformance_keys;
#[cfg(feature = "conformance")]
pub mod conformance_messages;
mod fs;
mod fs_keys;
mod fs_messages;
mod keys;
mod memory;
mod memory_messages;
pub mod messages;
#[cfg(feature = "object-store")]
mod object;
#[cfg(feature = "object-store")]
mod object_keys;
#[cfg(feature = "object-store")]
mod object_messages;

pub use fs::{FsStore, MAX_META_FILE};
pub use keys::{KEY_OVERHEAD, KeyStore, MAX_MEMORY_KEY_BYTES, MAX_MEMORY_KEYS, MIN_REPLAY_WINDOW};
pub use memory::MemoryStore;
pub use memory_messages::{MAX_MESSAGE_BYTES, MAX_MESSAGES, MAX_RESERVATIONS, MESSAGE_OVERHEAD};
pub use messages::{Message, MessageStore};
#[cfg(feature = "object-store")]
pub use object::{MAX_RECORD_OBJECT, ObjectStoreBackend};

/// How long an attachment not sent in any message is kept: 24 hours, as the Demand API
/// documents (`docs/protocol.md`, *Lifetimes and the sweep*).
pub const UNLINKED_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// What a store keeps about an attachment, beside its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AttachmentMeta {
    /// The attachment's id.
    pub id: String,
    /// The file name as given.
    pub file_name: String,
    /// The type it was accepted as.
    pub file_type: String,
    /// Size in bytes.
    pub file_size: u64,
    /// SHA-256 of the content, hex.
    #[serde(with = "digest_hex")]
    pub sha256: Sha256Digest,
    /// Width and height, for images.
    #[serde(default)]
    pub dimensions: Option<(u32, u32)>,
    /// When it was uploaded.
    #[serde(with = "unix_millis")]
    pub created: SystemTime,
    /// Whether a message carries it.
    #[serde(default)]
    pub linked: bool,
    /// Who may read it, as the server scopes lookups (for instance
    /// `property/conversation`); empty when unscoped.
    #[serde(default)]
    pub scope: String,
    /// The conversation it was uploaded to, where the API names one apart from the scope
    /// (the chat flavour); [`ListQuery::with_conversation`] filters by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// The message it belongs to, where the API names one at upload (the chat flavour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

impl AttachmentMeta {
    /// The metadata of a new, unlinked attachment `id` from what the upload accepted.
    pub fn new(id: impl Into<String>, info: &AttachmentInfo, scope: impl Into<String>) -> Self {
        AttachmentMeta {
            id: id.into(),
            file_name: info.file_name.clone(),
            file_type: info.media_type.to_string(),
            file_size: info.size,
            sha256: info.sha256,
            dimensions: info.dimensions,
            created: info.created,
            linked: false,
            scope: scope.into(),
            conversation_id: None,
            message_id: None,
        }
    }
}

/// The most attachments one [`Store::list_attachments`] call may ask for.
pub const MAX_LIST_LIMIT: usize = 1_000;

/// Which attachments [`Store::list_attachments`] lists: those in one scope (and
/// conversation), whose id sorts below a cursor, highest id first.
///
/// Ids made by [`RandomId::time_ordered`](crate::upload::RandomId::time_ordered) sort by
/// creation time, so this is newest first, and paging by the last id seen stays exact
/// while attachments are added (they sort above the cursor) or deleted (the cursor need
/// not exist any more).
///
/// # Examples
///
/// ```
/// use attachments::store::ListQuery;
///
/// let page = ListQuery::new("owner-7", 10)
///     .with_conversation("xgQQXg3hrtjh7AvZ")
///     .before("018bcfe5-6800-7fff-bfff-ffffffffffff");
/// assert_eq!(page.limit, 10);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListQuery {
    /// The scope the attachments must have ([`AttachmentMeta::scope`]).
    pub scope: String,
    /// When set, only attachments of this conversation ([`AttachmentMeta::conversation_id`]).
    pub conversation_id: Option<String>,
    /// When set, only ids that sort below this one.
    pub before: Option<String>,
    /// At most this many (capped at [`MAX_LIST_LIMIT`]).
    pub limit: usize,
}

impl ListQuery {
    /// The first `limit` attachments of `scope`, highest id first.
    pub fn new(scope: impl Into<String>, limit: usize) -> Self {
        ListQuery {
            scope: scope.into(),
            conversation_id: None,
            before: None,
            limit: limit.min(MAX_LIST_LIMIT),
        }
    }

    /// Only attachments of `conversation_id`.
    pub fn with_conversation(mut self, conversation_id: impl Into<String>) -> Self {
        self.conversation_id = Some(conversation_id.into());
        self
    }

    /// Only ids below `id` (the last one of the previous page).
    pub fn before(mut self, id: impl Into<String>) -> Self {
        self.before = Some(id.into());
        self
    }

    /// Whether `meta` belongs to the listed set, cursor aside.
    pub fn matches(&self, meta: &AttachmentMeta) -> bool {
        meta.scope == self.scope
            && self
                .conversation_id
                .as_ref()
                .is_none_or(|c| meta.conversation_id.as_ref() == Some(c))
    }

    /// Whether `id` lies past the cursor.
    pub fn after_cursor(&self, id: &str) -> bool {
        self.before.as_deref().is_none_or(|b| id < b)
    }
}

/// A change to an attachment's metadata ([`Store::update`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetaChange {
    /// Carried by a message, or not ([`AttachmentMeta::linked`]).
    Linked(bool),
    /// A new file name ([`AttachmentMeta::file_name`]); the caller checks it.
    FileName(String),
}

impl MetaChange {
    /// Applies the change; says whether anything changed.
    pub fn apply(&self, meta: &mut AttachmentMeta) -> bool {
        match self {
            MetaChange::Linked(linked) => std::mem::replace(&mut meta.linked, *linked) != *linked,
            MetaChange::FileName(name) => {
                if meta.file_name == *name {
                    return false;
                }
                meta.file_name.clone_from(name);
                true
            }
        }
    }
}

/// Something [`Store::list_expired`] found.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Expired {
    /// An upload that was never committed.
    Upload(String),
    /// An attachment never linked to a message (or one a crash left half-written).
    Attachment(String),
    /// An attachment whose stored record (its metadata) cannot be read back: over the
    /// backend's size budget, or not the JSON this crate writes. Listed whatever the
    /// cutoffs, since its age cannot be read; [`Store::remove`] moves it aside into a
    /// quarantine area (its bytes and record kept for inspection) instead of deleting it,
    /// and does nothing when the record reads back well by then.
    Damaged(String),
}

/// An upload's session record as stored, with its version (see [`Store::load_session`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// The record's bytes, as saved.
    pub record: Bytes,
    /// The version to name in the next [`Store::save_session`].
    pub version: String,
}

/// Storage for uploads in progress and committed attachments, and (as a
/// [`MessageStore`]) the messages that carry them. See the [module documentation](self)
/// for the contract.
#[async_trait]
pub trait Store: MessageStore + KeyStore + Send + Sync + fmt::Debug {
    /// Records a new upload, started at `started`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the record cannot be written.
    async fn begin_upload(&self, upload_id: &str, started: SystemTime) -> Result<()>;

    /// Stores chunk `number` of an upload at byte `offset` of the file.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an upload not begun (or aborted); [`Error::Io`].
    async fn put_chunk(&self, upload_id: &str, number: u64, offset: u64, data: Bytes)
    -> Result<()>;

    /// Turns the upload into the attachment `meta.id`, atomically, and forgets the upload.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown upload; [`Error::NotSaveable`] when its record
    /// (metadata, manifest) would be over the backend's budget; [`Error::Incomplete`] when
    /// the stored chunks do not tile `0..meta.file_size` exactly (a gap, an overlap, too
    /// few or too many bytes), with `stored` the bytes they tile from offset 0, in offset
    /// order, before the first gap or overlap (all of them when they only stop short of
    /// the size or run past it); [`Error::Taken`] when the attachment id is in use;
    /// [`Error::Io`] when writing fails. In every case the attachment is then not visible
    /// and the upload stays as it was.
    async fn commit(&self, upload_id: &str, meta: &AttachmentMeta) -> Result<()>;

    /// Releases an upload's bytes; nothing happens for an unknown one.
    ///
    /// # Errors
    ///
    /// [`Error::Io`].
    async fn abort(&self, upload_id: &str) -> Result<()>;

    /// Reads the session record of an upload, with its version; `None` when there is none.
    ///
    /// # Errors
    ///
    /// [`Error::Io`].
    async fn load_session(&self, upload_id: &str) -> Result<Option<StoredSession>>;

    /// Writes the session record of an upload at time `saved`, if the stored record is
    /// still at version `expected` (`None`: if there is no record yet); returns the new
    /// version. The write is atomic: a reader sees the old record or the new one.
    ///
    /// # Errors
    ///
    /// [`Error::Contended`] when the stored record is not at `expected` (another save came
    /// first: load it again); [`Error::NotFound`] for an id the backend cannot name;
    /// [`Error::NotSaveable`] for a record over the backend's budget; [`Error::Io`].
    async fn save_session(
        &self,
        upload_id: &str,
        record: Bytes,
        expected: Option<&str>,
        saved: SystemTime,
    ) -> Result<String>;

    /// Reads bytes `range` of an attachment. The caller bounds the range's length.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`]; [`Error::RangeOutside`] when the range ends past the
    /// attachment or is reversed; [`Error::Io`].
    async fn read_range(&self, attachment_id: &str, range: Range<u64>) -> Result<Bytes>;

    /// Bytes `range` of the file upload `upload_id` has staged so far (its chunks laid at
    /// their offsets; of two chunks of one number, the one a commit would take), read
    /// before the commit: the virus scan reads a chunked upload whole through this,
    /// whichever processes stored its chunks.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown upload; [`Error::Incomplete`] when the chunks
    /// stored do not cover `range` (yet: a pipelined chunk may still be on its way).
    async fn read_staged(&self, upload_id: &str, range: Range<u64>) -> Result<Bytes>;

    /// Reads an attachment's metadata.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`]; [`Error::Io`].
    async fn metadata(&self, attachment_id: &str) -> Result<AttachmentMeta>;

    /// Changes an attachment's metadata, atomically (a concurrent change is not lost);
    /// returns the metadata after the change.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`]; [`Error::Contended`] when other changes kept winning;
    /// [`Error::NotSaveable`] when the metadata would be over the backend's budget;
    /// [`Error::Io`].
    async fn update(&self, attachment_id: &str, change: &MetaChange) -> Result<AttachmentMeta>;

    /// Marks an attachment as carried by a message (or not).
    ///
    /// # Errors
    ///
    /// As [`Store::update`].
    async fn set_linked(&self, attachment_id: &str, linked: bool) -> Result<()> {
        self.update(attachment_id, &MetaChange::Linked(linked))
            .await
            .map(drop)
    }

    /// Lists the attachments `query` selects, highest id first, at most `query.limit`.
    /// A cursor ([`ListQuery::before`]) that is not an id of the kind the backend stores
    /// may give an empty page. An attachment whose record cannot be read back is skipped
    /// (with a `tracing` warning), not an error.
    ///
    /// # Errors
    ///
    /// [`Error::Io`].
    async fn list_attachments(&self, query: &ListQuery) -> Result<Vec<AttachmentMeta>>;

    /// Lists uploads with no activity since `uploads_before` (not begun, no session record
    /// saved and no chunk stored after it; committed uploads whose record remains
    /// included) and unlinked attachments created before `unlinked_before`. A chunk
    /// counts at the time the backend gives it (see the [module documentation](self)).
    /// Attachments whose record cannot be read back are listed as [`Expired::Damaged`]
    /// where the backend meets them (every one on `FsStore`, which reads every record;
    /// on S3, those the expiry index lists, as [`Expired::Attachment`], whose removal
    /// then moves them aside too). A record it cannot read is skipped, not an error.
    ///
    /// # Errors
    ///
    /// [`Error::Io`].
    async fn list_expired(
        &self,
        uploads_before: SystemTime,
        unlinked_before: SystemTime,
    ) -> Result<Vec<Expired>>;

    /// Removes what [`Store::list_expired`] found, if it is still expired; nothing
    /// happens when it is already gone. An [`Expired::Attachment`] is removed only if no
    /// message carries it by now: a link made while the sweep ran wins over the sweep
    /// (atomically: the backend re-reads the attachment under the same lock or condition
    /// as links take). An attachment whose record is damaged ([`Expired::Damaged`], or an
    /// [`Expired::Attachment`] found damaged) is moved aside into the backend's quarantine
    /// area instead (`quarantine/` on `FsStore` and S3), kept for inspection.
    ///
    /// # Errors
    ///
    /// [`Error::Io`]; [`Error::Contended`] when links kept racing the removal.
    async fn remove(&self, item: &Expired) -> Result<()>;

    /// Deletes attachment `attachment_id`, linked or not, with its bytes (the chat
    /// flavour's `DELETE`); nothing happens when it is already gone.
    ///
    /// # Errors
    ///
    /// As [`Store::remove`].
    async fn delete_attachment(&self, attachment_id: &str) -> Result<()>;

    /// Stores a whole file as the attachment `meta.id` in one step (a single-request
    /// upload): begin, one chunk, commit, under the upload id `upload_id`.
    ///
    /// # Errors
    ///
    /// As [`Store::commit`].
    async fn put_attachment(
        &self,
        upload_id: &str,
        meta: &AttachmentMeta,
        data: Bytes,
    ) -> Result<()> {
        self.begin_upload(upload_id, meta.created).await?;
        let stored = async {
            self.put_chunk(upload_id, 0, 0, data).await?;
            self.commit(upload_id, meta).await
        }
        .await;
        if stored.is_err() {
            let _ = self.abort(upload_id).await;
        }
        stored
    }
}

/// Checks a range against an attachment's size.
pub(crate) fn check_range(range: &Range<u64>, size: u64) -> Result<()> {
    if range.start > range.end || range.end > size {
        return Err(Error::RangeOutside {
            from: range.start,
            to: range.end,
            size,
        });
    }
    Ok(())
}

/// Which parts of `pieces` (`(offset, len)` each, sorted by offset) make up `range`: for
/// each, its index and the range within it, in order. `Err(at)`: the first byte of
/// `range` no piece holds.
pub(crate) fn staged_slices(
    pieces: &[(u64, u64)],
    range: &Range<u64>,
) -> std::result::Result<Vec<(usize, Range<u64>)>, u64> {
    let mut at = range.start;
    let mut out = Vec::new();
    for (i, &(offset, len)) in pieces.iter().enumerate() {
        if at >= range.end {
            break;
        }
        let end = offset.saturating_add(len);
        if end <= at || len == 0 {
            continue;
        }
        if offset > at {
            return Err(at);
        }
        let to = end.min(range.end);
        out.push((i, at - offset..to - offset));
        at = to;
    }
    if at < range.end {
        return Err(at);
    }
    Ok(out)
}

/// The pieces of a range read as one `Bytes`: a single piece as it is (no copy), several
/// copied once into a buffer of `len` bytes.
pub(crate) fn concat(pieces: Vec<Bytes>, len: u64) -> Bytes {
    if pieces.len() <= 1 {
        return pieces.into_iter().next().unwrap_or_default();
    }
    let mut out = bytes::BytesMut::with_capacity(usize::try_from(len).unwrap_or(0));
    for piece in pieces {
        out.extend_from_slice(&piece);
    }
    out.freeze()
}

/// Parses an id, answering "not found" for anything that is not one.
pub(crate) fn parse_id(what: &'static str, id: &str) -> Result<crate::upload::RandomId> {
    id.parse().map_err(|_| not_found(what, id))
}

/// The error for a session save that lost the race.
pub(crate) fn contended(upload_id: &str) -> Error {
    Error::Contended {
        what: "upload",
        id: upload_id.to_owned(),
    }
}

/// Whether chunks stored as `(offset, len)` pieces, in any order, tile `0..size` exactly:
/// in offset order each begins where the one before ends (no gap, no overlap) and the
/// last ends at `size`. When they do not, the error is the number of bytes they tile from
/// offset 0 before the first gap or overlap (past `size` when there are bytes too many):
/// the `stored` of [`Error::Incomplete`].
pub(crate) fn tiling(pieces: &mut [(u64, u64)], size: u64) -> std::result::Result<(), u64> {
    pieces.sort_unstable();
    let mut end = 0u64;
    for &(offset, len) in pieces.iter() {
        if offset != end {
            return Err(end);
        }
        end = end.saturating_add(len);
    }
    if end == size { Ok(()) } else { Err(end) }
}

/// The name of a scope's index (or of a conversation's in it) in the backends that keep
/// one: 32 hex digits of the SHA-256 of the scope (of the scope, a NUL and the
/// conversation).
pub(crate) fn scope_key(scope: &str, conversation: Option<&str>) -> String {
    let digest = match conversation {
        None => crate::digest::sha256(scope.as_bytes()),
        Some(c) => crate::digest::sha256(format!("{scope}\0{c}").as_bytes()),
    };
    digest.to_hex()[..32].to_owned()
}

/// Refuses to write a record of `len` bytes over `limit`, the most the backend reads back
/// ([`Error::NotSaveable`]): nothing written can then be unreadable.
pub(crate) fn within_budget(what: impl FnOnce() -> String, len: usize, limit: u64) -> Result<()> {
    if len as u64 <= limit {
        return Ok(());
    }
    Err(Error::NotSaveable {
        what: what(),
        reason: format!(
            "the record would be {len} bytes, over the {limit}-byte limit of what the store \
             reads back"
        ),
    })
}

/// The error for stored chunks that do not tile the file.
pub(crate) fn incomplete(upload_id: &str, stored: u64, expected: u64) -> Error {
    Error::Incomplete {
        upload_id: upload_id.to_owned(),
        stored,
        expected,
    }
}

fn not_found(what: &'static str, id: &str) -> Error {
    Error::NotFound {
        what,
        id: id.to_owned(),
    }
}

mod digest_hex {
    use super::*;

    pub fn serialize<S: serde::Serializer>(
        d: &Sha256Digest,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&d.to_hex())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Sha256Digest, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

mod unix_millis {
    use super::*;

    pub fn serialize<S: serde::Serializer>(
        t: &SystemTime,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_u64(crate::upload::unix_millis(*t))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<SystemTime, D::Error> {
        let ms = u64::deserialize(d)?;
        SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_millis(ms))
            .ok_or_else(|| serde::de::Error::custom("timestamp out of range"))
    }
}
