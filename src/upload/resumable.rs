//! One resumable upload (tus 1.0, the IETF resumable-upload draft): [`ResumableUpload`],
//! the IO-free state both protocols' server shells drive, and [`ResumableRecord`], what a
//! stateless server keeps of it between requests.
//!
//! A resumable upload is a file whose bytes arrive by appends at an offset, in requests of
//! any length, possibly cut off anywhere. The session holds the file's declaration, the
//! offset up to which the server *keeps* bytes, and the [`Inspector`] that has checked
//! exactly those bytes (type, size limit, structure, SHA-256). The shell cuts each request
//! body into pieces that end on [`RESUMABLE_CHUNK`] boundaries of the file
//! ([`ResumableUpload::piece_len`]), has the session judge each piece
//! ([`ResumableUpload::take`]), stores it as the chunk numbered by its offset, and saves
//! the session: an interrupted request resumes at the last saved offset, never past a
//! byte the server did not keep, and a piece stored again at the same offset (a retry)
//! replaces the earlier one.
//!
//! Between requests, who may write is decided by a lease ([`ResumableUpload::acquire`]):
//! the shell only stores a piece while it holds a lease that outlasts the store's write.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::RandomId;
use super::session::{AttachmentInfo, bad_record, unix_millis};
use crate::digest::Sha256Digest;
use crate::error::{Error, Result, ResumableProblem, SizeLimit, shorten};
use crate::inspect::{Inspector, InspectorState};
use crate::policy::Policy;
use crate::sniff::MediaType;

/// The pieces a resumable upload is stored in end on multiples of this in the file:
/// 1 MiB, the size of a streamed upload's chunks, so memory per request stays one chunk
/// and every store holds a file in alike chunks whichever way it arrived.
pub const RESUMABLE_CHUNK: u64 = 1 << 20;

/// The longest `Upload-Metadata` (tus) a record keeps, in bytes: 4 KiB.
pub const MAX_METADATA: usize = 4096;

/// The declaration of a new resumable upload.
#[derive(Debug, Clone, Copy)]
pub struct Creation<'a> {
    /// The file name (tus `filename` metadata; a default where none is given).
    pub file_name: &'a str,
    /// The declared type (tus `filetype` metadata; `application/octet-stream` where none
    /// is given: the type is then the one recognised).
    pub file_type: &'a str,
    /// The length, when known (tus `Upload-Length`, IETF `Upload-Length`); `None` defers it.
    pub length: Option<u64>,
    /// The tus `Upload-Metadata` as sent, to give back on `HEAD` (at most [`MAX_METADATA`]
    /// bytes).
    pub metadata: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Receiving,
    /// Every byte is kept and the file accepted; the attachment is being committed.
    Committing(Box<AttachmentInfo>),
    Finished,
    Failed(Box<Error>),
}

/// Who may store pieces of the upload, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Lease {
    token: String,
    /// Unix milliseconds.
    until: u64,
}

/// One resumable upload on the server: a state machine fed the pieces of the appends, in
/// order, and told when they are stored. It does no IO and reads no clock.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use attachments::upload::{Creation, RandomId, ResumableUpload};
///
/// let policy = attachments::Policy::chat();
/// let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let creation = Creation {
///     file_name: "notes.txt", file_type: "text/plain", length: Some(11), metadata: "",
/// };
/// let mut upload = ResumableUpload::create(&policy, RandomId::from_bytes([1; 16]), creation, t0)?;
/// upload.check_append(0)?;
/// assert_eq!(upload.take(b"hello ", t0)?, 0);
/// // An append that starts anywhere else is refused with the offset to send from.
/// assert!(upload.check_append(0).unwrap_err().to_string().contains("send from byte 6"));
/// assert_eq!(upload.take(b"world", t0)?, 6);
/// assert!(upload.is_complete());
/// let info = upload.finish(t0)?;
/// assert_eq!((info.size, info.media_type.as_str()), (11, "text/plain"));
/// # Ok::<(), attachments::Error>(())
/// ```
#[derive(Debug)]
pub struct ResumableUpload {
    id: RandomId,
    policy: Policy,
    scope: String,
    file_name: String,
    file_type: String,
    metadata: String,
    length: Option<u64>,
    offset: u64,
    /// `None` once the upload stops receiving.
    inspector: Option<Inspector>,
    state: State,
    created: SystemTime,
    last_activity: SystemTime,
    lease: Option<Lease>,
    /// Bytes checked past the offset, not yet kept (not saved: a save needs none).
    checked: u64,
    /// Where the furthest piece ever stored ends: pieces of an append that was undone (a
    /// checksum mismatch) stay in the store until the same offsets are written again, so
    /// the length may not end before them.
    stored_end: u64,
}

impl ResumableUpload {
    /// Opens an upload under the id `id` (the caller's: it becomes the attachment's id).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidFileName`], [`Error::InvalidType`], [`Error::UnsupportedType`],
    /// [`Error::ActiveContent`] for the declaration; [`Error::TooLarge`] for a length over
    /// the policy's largest file; [`Error::InvalidField`] for a length of 0 (an attachment
    /// needs content) or metadata over [`MAX_METADATA`].
    pub fn create(
        policy: &Policy,
        id: RandomId,
        creation: Creation<'_>,
        now: SystemTime,
    ) -> Result<Self> {
        policy.check_file_name(creation.file_name)?;
        if creation.length == Some(0) {
            return Err(Error::InvalidField {
                field: "Upload-Length".into(),
                problem: "is 0: an attachment needs content".into(),
            });
        }
        if creation.metadata.len() > MAX_METADATA {
            return Err(Error::InvalidField {
                field: "Upload-Metadata".into(),
                problem: format!(
                    "is {} bytes long; at most {MAX_METADATA} are kept",
                    creation.metadata.len()
                ),
            });
        }
        let inspector = Inspector::new(policy, creation.file_type, None)?;
        if let Some(length) = creation.length {
            check_length(policy, length)?;
        }
        Ok(ResumableUpload {
            id,
            policy: policy.clone(),
            scope: String::new(),
            file_name: creation.file_name.to_owned(),
            file_type: creation.file_type.to_owned(),
            metadata: creation.metadata.to_owned(),
            length: creation.length,
            offset: 0,
            inspector: Some(inspector),
            state: State::Receiving,
            created: now,
            last_activity: now,
            lease: None,
            checked: 0,
            stored_end: 0,
        })
    }

    /// Binds the upload to `scope` (its owner): a request of another scope is answered as
    /// if the upload did not exist.
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = scope.into();
        self
    }

    /// The upload's id (its attachment's, once committed).
    pub fn id(&self) -> RandomId {
        self.id
    }

    /// The owner's scope.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The file name.
    pub fn file_name(&self) -> &str {
        &self.file_name
    }

    /// The tus `Upload-Metadata` as the creation sent it.
    pub fn metadata(&self) -> &str {
        &self.metadata
    }

    /// The length, once known.
    pub fn length(&self) -> Option<u64> {
        self.length
    }

    /// The bytes kept: where the next append starts.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// When the upload was created.
    pub fn created(&self) -> SystemTime {
        self.created
    }

    /// When a piece last came (or the creation).
    pub fn last_activity(&self) -> SystemTime {
        self.last_activity
    }

    /// Whether every byte is kept (the length is known and reached).
    pub fn is_complete(&self) -> bool {
        self.length == Some(self.offset)
    }

    /// Whether the upload still takes bytes.
    pub fn is_receiving(&self) -> bool {
        self.state == State::Receiving
    }

    /// The accepted file, while its attachment is being committed.
    pub fn committing(&self) -> Option<&AttachmentInfo> {
        match &self.state {
            State::Committing(info) => Some(info),
            _ => None,
        }
    }

    /// Whether the upload is an attachment now.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// The error that ended the upload, if one did.
    pub fn failure(&self) -> Option<&Error> {
        match &self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// The largest file the policy takes.
    pub fn max_size(&self) -> u64 {
        self.policy.limits.max_file_size()
    }

    /// The error for a request to an upload that ended with `first`.
    fn refused(&self, first: &Error) -> Error {
        // An expiry says so itself.
        if matches!(first, Error::Recorded { status: 410, .. })
            || matches!(first, Error::Resumable(ResumableProblem::Expired { .. }))
        {
            return first.clone();
        }
        Error::Resumable(ResumableProblem::Refused {
            upload_id: self.id.to_string(),
            first: Box::new(first.clone()),
        })
    }

    /// Checks that an append may start at `offset`.
    ///
    /// # Errors
    ///
    /// The first error again for an upload that ended ([`ResumableProblem::Refused`]);
    /// [`ResumableProblem::Completed`] once every byte is kept;
    /// [`ResumableProblem::OffsetMismatch`] for another offset than [`Self::offset`].
    pub fn check_append(&self, offset: u64) -> Result<()> {
        match &self.state {
            State::Failed(first) => return Err(self.refused(first)),
            State::Committing(_) | State::Finished => {
                return Err(Error::Resumable(ResumableProblem::Completed {
                    upload_id: self.id.to_string(),
                }));
            }
            State::Receiving => {}
        }
        if offset != self.offset {
            return Err(Error::Resumable(ResumableProblem::OffsetMismatch {
                expected: self.offset,
                got: offset,
            }));
        }
        Ok(())
    }

    /// Sets the length of an upload created without one (tus creation-defer-length), or
    /// checks a length sent again.
    ///
    /// # Errors
    ///
    /// [`ResumableProblem::InconsistentLength`] for another length than the one set;
    /// [`ResumableProblem::LengthBelowOffset`]; [`Error::TooLarge`]; [`Error::InvalidField`]
    /// for 0.
    pub fn set_length(&mut self, length: u64) -> Result<()> {
        if let Some(declared) = self.length {
            if declared != length {
                return Err(Error::Resumable(ResumableProblem::InconsistentLength {
                    declared,
                    now: length,
                }));
            }
            return Ok(());
        }
        if length < self.offset.max(self.stored_end) {
            return Err(Error::Resumable(ResumableProblem::LengthBelowOffset {
                length,
                offset: self.offset.max(self.stored_end),
            }));
        }
        if length == 0 {
            return Err(Error::InvalidField {
                field: "Upload-Length".into(),
                problem: "is 0: an attachment needs content".into(),
            });
        }
        check_length(&self.policy, length)?;
        self.length = Some(length);
        Ok(())
    }

    /// How many of `available` bytes the next piece takes: up to the next
    /// [`RESUMABLE_CHUNK`] boundary of the file after the bytes checked so far, so every
    /// piece stored ends on one (or at the end of a request).
    pub fn piece_len(&self, available: usize) -> usize {
        let at = self.offset.saturating_add(self.checked);
        let room = RESUMABLE_CHUNK - at % RESUMABLE_CHUNK;
        usize::try_from(room).map_or(available, |room| room.min(available))
    }

    /// Checks the next bytes of an append as they arrive: against the length and the
    /// policy's limit, and through the Inspector (type, structure, SHA-256). They are
    /// *checked*, not yet kept: [`Self::keep`] them once stored. The caller calls
    /// [`Self::check_append`] first.
    ///
    /// # Errors
    ///
    /// [`ResumableProblem::PastLength`] for bytes past the length; [`Error::TooLarge`]
    /// past the policy's limit; any rejection of the Inspector. Each ends the upload: the
    /// caller saves it ([`Self::save`]) so later requests get the error again
    /// ([`ResumableProblem::Refused`]), and releases the stored bytes.
    pub fn check(&mut self, bytes: &[u8]) -> Result<()> {
        if let State::Failed(first) = &self.state {
            return Err(self.refused(first));
        }
        let end = self
            .offset
            .saturating_add(self.checked)
            .saturating_add(bytes.len() as u64);
        let judged = match (&mut self.inspector, self.length) {
            (None, _) => Err(Error::Resumable(ResumableProblem::Completed {
                upload_id: self.id.to_string(),
            })),
            (Some(_), Some(length)) if end > length => {
                Err(Error::Resumable(ResumableProblem::PastLength {
                    length,
                    end,
                }))
            }
            (Some(inspector), _) => inspector.update(bytes),
        };
        if let Err(e) = judged {
            if self.inspector.is_some() {
                self.fail(e.clone());
            }
            return Err(e);
        }
        self.checked = end - self.offset;
        Ok(())
    }

    /// Keeps the first `len` of the bytes checked (the caller has stored them), at `now`:
    /// the offset moves past them. Returns where they start in the file (store them as the
    /// chunk of that number and offset).
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyFinished`] when `len` is more than was checked (a caller's
    /// mistake).
    pub fn keep(&mut self, len: u64, now: SystemTime) -> Result<u64> {
        if len > self.checked {
            return Err(Error::AlreadyFinished);
        }
        let at = self.offset;
        self.offset += len;
        self.checked -= len;
        self.stored_end = self.stored_end.max(self.offset);
        self.last_activity = now;
        Ok(at)
    }

    /// Notes that a piece ending at `end` is being stored before it is kept (an append
    /// whose body must pass its checksum first): saved with the upload, so a length set
    /// later cannot end before it.
    pub fn storing_to(&mut self, end: u64) {
        self.stored_end = self.stored_end.max(end);
    }

    /// Where the furthest piece ever stored ends.
    pub fn stored_end(&self) -> u64 {
        self.stored_end
    }

    /// Checks and keeps the next piece of an append in one step ([`Self::check`], then
    /// [`Self::keep`]); returns where it starts.
    ///
    /// # Errors
    ///
    /// As [`Self::check`].
    pub fn take(&mut self, piece: &[u8], now: SystemTime) -> Result<u64> {
        self.check(piece)?;
        self.keep(piece.len() as u64, now)
    }

    /// Ends the inspection once [`Self::is_complete`]: the file as it will be committed.
    /// The upload is then committing (save it before the commit; a request that finds it
    /// committing, after a crash, commits it again from [`Self::committing`]).
    ///
    /// # Errors
    ///
    /// [`Error::Incomplete`]-like [`ResumableProblem::OffsetMismatch`] if bytes are missing;
    /// the Inspector's verdict (a truncated image, a type mismatch), which ends the upload.
    pub fn finish(&mut self, now: SystemTime) -> Result<AttachmentInfo> {
        if let Some(info) = self.committing() {
            return Ok(info.clone());
        }
        if let State::Failed(first) = &self.state {
            return Err(self.refused(first));
        }
        let Some(length) = self.length.filter(|l| *l == self.offset) else {
            return Err(Error::Resumable(ResumableProblem::OffsetMismatch {
                expected: self.length.unwrap_or(self.offset),
                got: self.offset,
            }));
        };
        let inspector = self.inspector.as_mut().ok_or(Error::AlreadyFinished)?;
        let verdict = match inspector.finish() {
            Ok(verdict) => verdict,
            Err(e) => {
                self.fail(e.clone());
                return Err(e);
            }
        };
        debug_assert_eq!(verdict.size, length);
        let info = AttachmentInfo::accepted(&self.file_name, verdict, now);
        self.inspector = None;
        self.state = State::Committing(Box::new(info.clone()));
        self.last_activity = now;
        Ok(info)
    }

    /// Records that the attachment is committed.
    pub fn committed(&mut self) {
        self.state = State::Finished;
        self.inspector = None;
        self.lease = None;
    }

    /// Ends the upload with `err`: later requests get it again.
    pub fn fail(&mut self, err: Error) {
        self.state = State::Failed(Box::new(err));
        self.inspector = None;
    }

    /// When the upload expires, for uploads that expire after `ttl` without a piece:
    /// `None` once it stopped receiving.
    pub fn deadline(&self, ttl: Duration) -> Option<SystemTime> {
        match self.state {
            State::Receiving => self.last_activity.checked_add(ttl),
            _ => None,
        }
    }

    /// Expires the upload when it has been idle past `ttl` at `now` while receiving;
    /// returns the error when this call expired it (release its stored bytes then).
    pub fn expire_if_idle(&mut self, now: SystemTime, ttl: Duration) -> Option<Error> {
        if now <= self.deadline(ttl)? {
            return None;
        }
        let err = Error::Resumable(ResumableProblem::Expired {
            upload_id: self.id.to_string(),
            ttl_secs: ttl.as_secs(),
        });
        self.fail(err.clone());
        Some(err)
    }

    /// The token of another writer whose lease is live at `now`, if any.
    pub fn leased_to_other(&self, token: &str, now: SystemTime) -> Option<&str> {
        self.lease
            .as_ref()
            .filter(|l| l.token != token && l.until > unix_millis(now))
            .map(|l| l.token.as_str())
    }

    /// Until when the lease of `token` lasts, if it holds it.
    pub fn lease_until(&self, token: &str) -> Option<SystemTime> {
        self.lease
            .as_ref()
            .filter(|l| l.token == token)
            .map(|l| SystemTime::UNIX_EPOCH + Duration::from_millis(l.until))
    }

    /// Gives the lease to `token` until `until` (save the upload to make it count).
    pub fn acquire(&mut self, token: &str, until: SystemTime) {
        self.lease = Some(Lease {
            token: token.to_owned(),
            until: unix_millis(until),
        });
    }

    /// Gives the lease of `token` up (save the upload to make it count).
    pub fn release(&mut self, token: &str) {
        if self.lease.as_ref().is_some_and(|l| l.token == token) {
            self.lease = None;
        }
    }

    /// Saves the upload, to continue it in whichever process takes its next request
    /// ([`Self::restore`]). Never holds file bytes; as JSON well under 8 KiB.
    ///
    /// # Errors
    ///
    /// As [`Inspector::save`].
    pub fn save(&self) -> Result<ResumableRecord> {
        let state = match &self.state {
            State::Receiving => SavedState::Receiving,
            State::Committing(info) => SavedState::Committing {
                media_type: info.media_type.to_string(),
                sha256: info.sha256.to_hex(),
                dimensions: info.dimensions,
                created: unix_millis(info.created),
            },
            State::Finished => SavedState::Finished,
            State::Failed(e) => SavedState::Failed {
                // HTTP's own status for a file over the limit, as the protocols' answers
                // give it the first time (later requests answer the same).
                status: match **e {
                    Error::TooLarge { .. } => 413,
                    _ => e.status(),
                },
                message: shorten(&e.wire_message(), 2048).into_owned(),
            },
        };
        let inspector = match (&self.state, &self.inspector) {
            (State::Receiving, Some(_)) if self.checked > 0 => {
                return Err(Error::NotSaveable {
                    what: format!("upload {}", self.id),
                    reason: format!(
                        "{} bytes are checked but not kept: keep or drop them first",
                        self.checked
                    ),
                });
            }
            (State::Receiving, Some(insp)) => Some(insp.save()?),
            _ => None,
        };
        Ok(ResumableRecord {
            kind: RecordKind::Resumable,
            id: self.id.to_string(),
            scope: self.scope.clone(),
            file_name: self.file_name.clone(),
            file_type: self.file_type.clone(),
            metadata: self.metadata.clone(),
            length: self.length,
            offset: self.offset,
            inspector,
            state,
            created: unix_millis(self.created),
            last_activity: unix_millis(self.last_activity),
            lease: self.lease.clone(),
            stored_end: self.stored_end,
        })
    }

    /// An upload continued from [`Self::save`], under `policy`.
    ///
    /// # Errors
    ///
    /// [`Error::CorruptState`] for a record no upload could have saved (impossible
    /// counters, an inspector that saw other bytes); as [`Inspector::restore`] when the
    /// policy no longer accepts the declaration.
    pub fn restore(policy: &Policy, record: ResumableRecord) -> Result<Self> {
        let bad = |problem: &str| bad_record(&record.id, problem);
        let id: RandomId = record.id.parse().map_err(|_| bad("the id is malformed"))?;
        if record.length.is_some_and(|l| record.offset > l || l == 0) {
            return Err(bad("the offset is past the length"));
        }
        if record.metadata.len() > MAX_METADATA {
            return Err(bad("the metadata is too long"));
        }
        if record.inspector.is_some() != (record.state == SavedState::Receiving) {
            return Err(bad(
                "an inspector where there is none to keep, or none where one is",
            ));
        }
        let (state, inspector) = match record.state {
            SavedState::Receiving => {
                // A policy narrowed since (a smaller limit): the upload is over it now.
                check_length(policy, record.length.unwrap_or(record.offset))?;
                let saved = record.inspector.ok_or_else(|| bad("no inspector"))?;
                policy.check_file_name(&record.file_name)?;
                let declared = policy.check_type(&record.file_type)?;
                let insp = Inspector::restore(policy, saved)?;
                if insp.bytes_seen() != record.offset || *insp.declared_type() != declared {
                    return Err(bad(
                        "the inspector checked other bytes than the upload kept",
                    ));
                }
                (State::Receiving, Some(insp))
            }
            SavedState::Committing { .. } | SavedState::Finished
                if record.length != Some(record.offset) =>
            {
                return Err(bad("a committed upload that is missing bytes"));
            }
            SavedState::Committing {
                media_type,
                sha256,
                dimensions,
                created,
            } => {
                let media_type = MediaType::parse(&media_type).map_err(|_| bad("a bad type"))?;
                let sha256: [u8; 32] = hex::decode(&sha256)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| bad("a bad SHA-256"))?;
                let info = AttachmentInfo {
                    file_name: record.file_name.clone(),
                    media_type,
                    size: record.offset,
                    sha256: Sha256Digest(sha256),
                    dimensions,
                    created: from_millis(created),
                };
                (State::Committing(Box::new(info)), None)
            }
            SavedState::Finished => (State::Finished, None),
            SavedState::Failed { status, .. } if !(400..=599).contains(&status) => {
                return Err(bad("a failure recorded with a status that is no error"));
            }
            SavedState::Failed { status, message } => (
                State::Failed(Box::new(Error::Recorded { status, message })),
                None,
            ),
        };
        Ok(ResumableUpload {
            id,
            policy: policy.clone(),
            scope: record.scope,
            file_name: record.file_name,
            file_type: record.file_type,
            metadata: record.metadata,
            length: record.length,
            offset: record.offset,
            inspector,
            state,
            created: from_millis(record.created),
            last_activity: from_millis(record.last_activity),
            lease: record.lease,
            checked: 0,
            stored_end: record.stored_end.max(record.offset),
        })
    }
}

fn check_length(policy: &Policy, length: u64) -> Result<()> {
    let limit = policy.limits.max_file_size();
    if length > limit {
        let kind = if policy.limits.max_chunked_size.is_some_and(|c| c == limit) {
            SizeLimit::Chunked
        } else {
            SizeLimit::Single
        };
        return Err(Error::TooLarge {
            size: length,
            limit,
            kind,
        });
    }
    Ok(())
}

fn from_millis(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Marks a record as a resumable upload's (beside the chunked uploads' records in one
/// store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RecordKind {
    Resumable,
}

/// A [`ResumableUpload`] saved by [`ResumableUpload::save`]: serialise it (JSON), keep
/// it in the store, restore it with [`ResumableUpload::restore`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumableRecord {
    kind: RecordKind,
    id: String,
    scope: String,
    file_name: String,
    file_type: String,
    metadata: String,
    length: Option<u64>,
    offset: u64,
    inspector: Option<InspectorState>,
    state: SavedState,
    /// Unix milliseconds.
    created: u64,
    /// Unix milliseconds.
    last_activity: u64,
    lease: Option<Lease>,
    #[serde(default)]
    stored_end: u64,
}

impl ResumableRecord {
    /// When the last piece came.
    pub fn last_activity(&self) -> SystemTime {
        from_millis(self.last_activity)
    }

    /// Whether the saved upload was still taking bytes.
    pub fn is_receiving(&self) -> bool {
        self.state == SavedState::Receiving
    }

    /// Where the furthest piece ever stored ends (see [`ResumableUpload::stored_end`]).
    pub fn stored_end(&self) -> u64 {
        self.stored_end.max(self.offset)
    }

    /// Until when an append holds the upload's lease, if one does.
    pub fn leased_until(&self) -> Option<SystemTime> {
        self.lease.as_ref().map(|l| from_millis(l.until))
    }

    /// The upload's id, as saved.
    pub fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum SavedState {
    Receiving,
    Committing {
        media_type: String,
        sha256: String,
        dimensions: Option<(u32, u32)>,
        created: u64,
    },
    Finished,
    Failed {
        status: u16,
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn upload(length: Option<u64>) -> ResumableUpload {
        let creation = Creation {
            file_name: "a.pdf",
            file_type: "application/octet-stream",
            length,
            metadata: "filename YS5wZGY=",
        };
        ResumableUpload::create(
            &Policy::chat(),
            RandomId::from_bytes([3; 16]),
            creation,
            t0(),
        )
        .unwrap()
    }

    fn pdf(len: usize) -> Vec<u8> {
        let mut file = b"%PDF-1.7\n".to_vec();
        file.extend((0..len.saturating_sub(15)).map(|i| b'a' + (i % 26) as u8));
        file.extend_from_slice(b"%%EOF\n");
        file
    }

    /// Feeds `bytes` as one append cut into pieces, saving and restoring after each.
    fn append(up: ResumableUpload, bytes: &[u8]) -> Result<ResumableUpload> {
        let mut up = up;
        up.check_append(up.offset())?;
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = up.piece_len(rest.len());
            let at = up.take(&rest[..n], t0())?;
            assert!(at % RESUMABLE_CHUNK + n as u64 <= RESUMABLE_CHUNK);
            rest = &rest[n..];
            let json = serde_json::to_vec(&up.save()?).unwrap();
            up = ResumableUpload::restore(&Policy::chat(), serde_json::from_slice(&json).unwrap())?;
        }
        Ok(up)
    }

    #[test]
    fn a_deferred_length_is_set_once_and_not_below_the_offset() {
        let up = append(upload(None), &pdf(100)[..40]).unwrap();
        let mut up = up;
        assert!(matches!(
            up.set_length(30),
            Err(Error::Resumable(ResumableProblem::LengthBelowOffset {
                length: 30,
                offset: 40
            }))
        ));
        up.set_length(100).unwrap();
        assert!(up.set_length(100).is_ok());
        assert!(matches!(
            up.set_length(101),
            Err(Error::Resumable(
                ResumableProblem::InconsistentLength { .. }
            ))
        ));
        let mut up = append(up, &pdf(100)[40..]).unwrap();
        assert!(up.is_complete());
        assert_eq!(
            up.finish(t0()).unwrap().media_type.as_str(),
            "application/pdf"
        );
        assert!(matches!(
            up.check_append(100),
            Err(Error::Resumable(ResumableProblem::Completed { .. }))
        ));
    }

    #[test]
    fn bytes_past_the_length_end_the_upload_and_later_requests_say_why() {
        let mut up = upload(Some(20));
        up.check_append(0).unwrap();
        let err = up.take(&pdf(30), t0()).unwrap_err();
        assert_eq!(err.status(), 413);
        let json = serde_json::to_vec(&up.save().unwrap()).unwrap();
        let up = ResumableUpload::restore(&Policy::chat(), serde_json::from_slice(&json).unwrap())
            .unwrap();
        let again = up.check_append(0).unwrap_err();
        assert_eq!(again.status(), 413);
        assert!(again.to_string().contains("refused earlier"), "{again}");
    }

    #[test]
    fn a_length_over_the_policy_is_refused_at_creation() {
        let creation = Creation {
            file_name: "a.bin",
            file_type: "application/octet-stream",
            length: Some(Policy::chat().limits.max_file_size() + 1),
            metadata: "",
        };
        let err = ResumableUpload::create(
            &Policy::chat(),
            RandomId::from_bytes([1; 16]),
            creation,
            t0(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    }

    #[test]
    fn a_forged_record_is_refused() {
        let up = append(upload(Some(100)), &pdf(100)[..50]).unwrap();
        let mut json: serde_json::Value = serde_json::to_value(up.save().unwrap()).unwrap();
        json["offset"] = 60.into();
        let record = serde_json::from_value(json).unwrap();
        let err = ResumableUpload::restore(&Policy::chat(), record).unwrap_err();
        assert!(matches!(err, Error::CorruptState { .. }), "{err}");
    }

    #[test]
    fn leases_belong_to_one_token_until_they_end() {
        let mut up = upload(Some(10));
        up.acquire("a", t0() + Duration::from_secs(30));
        assert_eq!(up.leased_to_other("b", t0()), Some("a"));
        assert_eq!(up.leased_to_other("a", t0()), None);
        assert_eq!(
            up.leased_to_other("b", t0() + Duration::from_secs(30)),
            None
        );
        up.release("b");
        assert!(up.lease_until("a").is_some());
        up.release("a");
        assert_eq!(up.leased_to_other("b", t0()), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]

        /// Any cut of the file into appends (each saved and restored piece by piece) gives
        /// the same verdict as one append, and pieces never cross a chunk boundary.
        #[test]
        fn any_cut_points_give_the_same_verdict(
            len in 16usize..2_600_000,
            cuts in proptest::collection::vec(0.0f64..1.0, 0..6),
        ) {
            let file = pdf(len);
            let mut points: Vec<usize> = cuts.iter().map(|c| (c * file.len() as f64) as usize).collect();
            points.push(0);
            points.push(file.len());
            points.sort_unstable();
            points.dedup();
            let mut up = upload(Some(file.len() as u64));
            for pair in points.windows(2) {
                up = append(up, &file[pair[0]..pair[1]]).unwrap();
            }
            let info = up.finish(t0()).unwrap();
            let whole = crate::digest::sha256(&file);
            prop_assert_eq!(info.sha256, whole);
            prop_assert_eq!(info.size, file.len() as u64);
        }
    }
}
