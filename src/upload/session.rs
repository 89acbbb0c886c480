//! The server side: [`UploadSession`] per `upload_id`, and the [`Sessions`] of a process.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::RandomId;
use super::{ChunkAction, ChunkHeader};
use crate::codec::base64::{Decoder, decoded_len};
use crate::digest::{Sha256, Sha256Digest};
use crate::error::{ChunkProblem, Error, Result, SizeLimit, shorten};
use crate::inspect::Inspector;
use crate::policy::{Policy, UploadMode};
use crate::sniff::MediaType;

/// Default idle time after which an upload expires and its bytes are released: 30 minutes.
///
/// A chunk of 1 MB takes seconds even on a slow link, and a Connectivity client restarts
/// from chunk 0 on any error, as the API's documentation tells it to (`docs/protocol.md`,
/// *A failed or expired upload*); 30 minutes leaves room for pauses and retries while
/// keeping abandoned uploads from holding storage for long. Change it with
/// [`Sessions::new`] (or the receiver's `with_ttl`).
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(30 * 60);

/// What an accepted upload becomes: the facts a store keeps beside the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttachmentInfo {
    /// The file name as given (checked, never used as a path).
    pub file_name: String,
    /// The type the content was accepted as.
    pub media_type: MediaType,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: Sha256Digest,
    /// Width and height, for images.
    pub dimensions: Option<(u32, u32)>,
    /// When the upload was accepted.
    pub created: SystemTime,
}

impl AttachmentInfo {
    /// The file `file_name` as the Inspector's `verdict` accepted it, at `created`.
    pub(crate) fn accepted(
        file_name: &str,
        verdict: crate::inspect::Inspection,
        created: SystemTime,
    ) -> Self {
        AttachmentInfo {
            file_name: file_name.to_owned(),
            media_type: verdict.media_type,
            size: verdict.size,
            sha256: verdict.sha256,
            dimensions: verdict.info.dimensions,
            created,
        }
    }
}

/// What to do with a chunk an [`UploadSession`] accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Received {
    /// Store these bytes at `offset` of the upload, then answer with success.
    Chunk {
        /// The chunk's number.
        number: u64,
        /// Where the bytes go in the file.
        offset: u64,
        /// The decoded chunk.
        data: Bytes,
    },
    /// Store these bytes, then commit the upload as an attachment described by
    /// `attachment`, and tell the session with [`UploadSession::committed`].
    Last {
        /// The chunk's number.
        number: u64,
        /// Where the bytes go in the file.
        offset: u64,
        /// The decoded chunk.
        data: Bytes,
        /// The accepted file.
        attachment: AttachmentInfo,
    },
    /// An identical retry of a `finish` whose commit was claimed by a request that did not
    /// finish it within [`COMMIT_LEASE`] (it died, or its process did): the claim is now
    /// this request's. Store `data` again, then commit as `attachment_id` (the id the
    /// first claim chose: if that commit did happen, the store has it, and the answer is
    /// the same), and tell the session with [`UploadSession::committed`].
    Recommit {
        /// The chunk's number.
        number: u64,
        /// Where the bytes go in the file.
        offset: u64,
        /// The decoded chunk.
        data: Bytes,
        /// The attachment the upload becomes.
        attachment_id: String,
        /// The accepted file.
        attachment: AttachmentInfo,
    },
    /// A retry of one of the latest accepted chunks ([`RECENT_CHUNKS`]) with the same
    /// content (its SHA-256 checked): answer as before. While the upload is still receiving,
    /// `data` holds the chunk again: storing it again is harmless, and repairs a store
    /// write that an interrupted request (or a crashed process) left undone.
    Repeat {
        /// The chunk's number.
        number: u64,
        /// Where the bytes go in the file.
        offset: u64,
        /// The decoded chunk, while the upload is still receiving.
        data: Option<Bytes>,
        /// The attachment's id, when the repeated chunk was the committed `finish`.
        attachment_id: Option<String>,
    },
}

impl Received {
    /// The bytes to store, if any.
    pub fn data(&self) -> Option<&Bytes> {
        match self {
            Received::Chunk { data, .. }
            | Received::Last { data, .. }
            | Received::Recommit { data, .. } => Some(data),
            Received::Repeat { data, .. } => data.as_ref(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Receiving,
    /// `Last` was given out; the store is committing. `claim` says as which attachment,
    /// and since when (`None` until [`UploadSession::claim_commit`], and in a record
    /// saved by an earlier version).
    Committing {
        claim: Option<Box<CommitClaim>>,
    },
    Finished {
        attachment_id: String,
    },
    Failed(Box<Error>),
}

/// How far ahead of the chunk a session expects a chunk may arrive and wait for its turn
/// in the receiver: 4. A pipelining client keeps at most this many chunks in flight (the
/// crate's client clamps its depth to it).
pub const MAX_AHEAD: u64 = 4;

/// How many of the latest accepted chunks a session remembers, to recognise an identical
/// retry of any of them: 5, one more than the chunks a pipelining client may have in
/// flight past the one it waits for ([`MAX_AHEAD`]). After a crash such a client sends
/// its unanswered chunks again, oldest first; each is then recognised and its bytes
/// stored again, which repairs a write the crash cut short.
pub const RECENT_CHUNKS: usize = MAX_AHEAD as usize + 1;

/// How long a `finish` that claimed the commit may take before an identical retry takes
/// the claim over and commits in its place: 30 s. A commit waits at most 10 s for
/// earlier chunks' writes, and the store's own calls take well under a second; a claim
/// older than this is one whose request (or process) died.
pub const COMMIT_LEASE: Duration = Duration::from_secs(30);

/// Which attachment a committing upload becomes, and when the commit was claimed: enough
/// for a retry of `finish` to commit it again after the request that claimed it died.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CommitClaim {
    attachment_id: String,
    info: AttachmentInfo,
    claimed: SystemTime,
}

/// An accepted chunk, kept to recognise an identical retry: its number, action,
/// place, and the SHA-256 states of the file before and after it (a retry is identical when
/// hashing its bytes from `before` gives `after`; nothing is hashed twice on the normal
/// path, and no chunk bytes are held).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LastChunk {
    number: u64,
    action: ChunkAction,
    offset: u64,
    size: u64,
    #[serde(with = "hex_vec")]
    before: Vec<u8>,
    #[serde(with = "hex_vec")]
    after: Vec<u8>,
}

/// One chunked upload on the server: a state machine fed one [`ChunkHeader`] per request
/// (any wire type that converts into one, such as the Connectivity API's `ChunkAttachment`).
///
/// `start` checks the file name, type, total size (within the chunked range) and chunk 0;
/// every later chunk must carry the next number and describe the same file; `finish` must
/// be the chunk that brings the total to `file_size`. Each chunk is decoded straight into
/// its own buffer (its declared `chunk_size` and the policy's chunk limit are checked before
/// anything is reserved) and fed to the session's [`Inspector`]; the Inspector's verdict on
/// `finish` decides the commit.
///
/// An identical retry of the last accepted chunk is answered as before
/// ([`Received::Repeat`]). Any other error is fatal: the session answers every later chunk
/// with [`Error::UploadFailed`], and the client starts over (`docs/protocol.md`, *A failed
/// or expired upload*).
///
/// It does no IO: the caller stores what [`Received`] says and reports the outcome with
/// [`UploadSession::committed`] or [`UploadSession::fail`].
#[derive(Debug)]
pub struct UploadSession {
    id: RandomId,
    policy: Policy,
    file_name: String,
    file_type: String,
    file_size: u64,
    next: u64,
    received: u64,
    /// `None` once the session stops receiving (and in a restored session that had).
    inspector: Option<Inspector>,
    /// The latest accepted chunks, oldest first, at most [`RECENT_CHUNKS`].
    recent: Vec<LastChunk>,
    state: State,
    started: SystemTime,
    last_activity: SystemTime,
    scope: String,
}

impl UploadSession {
    /// Opens an upload with its `start` chunk, under the id `id` (random, from the caller).
    /// `chunk` is a [`ChunkHeader`], or a wire type that converts into one.
    ///
    /// # Errors
    ///
    /// [`Error::Chunk`] for another action or number than `start` / 0, or an `upload_id`;
    /// [`Error::InvalidFileName`], [`Error::InvalidType`], [`Error::UnsupportedType`];
    /// [`Error::TooLarge`] / [`Error::TooSmallForChunks`] for a `file_size` outside the
    /// chunked range; any error of the chunk itself (see [`UploadSession::receive`]).
    pub fn start<'a>(
        policy: &Policy,
        id: RandomId,
        chunk: impl Into<ChunkHeader<'a>>,
        now: SystemTime,
    ) -> Result<(Self, Received)> {
        let chunk = chunk.into();
        match chunk.action {
            ChunkAction::Start => {}
            ChunkAction::Resume => {
                return Err(Error::Chunk(ChunkProblem::MissingUploadId {
                    action: "resume",
                }));
            }
            ChunkAction::Finish => {
                return Err(Error::Chunk(ChunkProblem::MissingUploadId {
                    action: "finish",
                }));
            }
        }
        if chunk.upload_id.is_some() {
            return Err(Error::Chunk(ChunkProblem::UnexpectedUploadId));
        }
        if chunk.number != 0 {
            return Err(Error::Chunk(ChunkProblem::StartNotZero {
                number: chunk.number,
            }));
        }
        policy.check_file_name(chunk.file_name)?;
        policy.check_size(chunk.file_size, UploadMode::Chunked)?;
        let inspector = Inspector::new(policy, chunk.file_type, Some(chunk.file_size))?;
        let mut session = UploadSession {
            id,
            policy: policy.clone(),
            file_name: chunk.file_name.to_owned(),
            file_type: chunk.file_type.to_owned(),
            file_size: chunk.file_size,
            next: 0,
            received: 0,
            inspector: Some(inspector),
            recent: Vec::new(),
            state: State::Receiving,
            started: now,
            last_activity: now,
            scope: String::new(),
        };
        let received = session.accept(&chunk, now)?;
        Ok((session, received))
    }

    /// Takes a `resume` or `finish` chunk (or a retry of one of the latest), as a
    /// [`ChunkHeader`] or a wire type that converts into one.
    ///
    /// # Errors
    ///
    /// - [`Error::UploadFailed`] after an earlier fatal error, [`Error::UploadFinished`]
    ///   after the commit (except for an identical retry of one of the latest chunks),
    ///   [`Error::UploadCommitting`] while `finish` is being committed (except for an
    ///   identical retry of it once the claim's [`COMMIT_LEASE`] has passed, which
    ///   [`Received::Recommit`]s).
    /// - Fatal: [`Error::Chunk`] for a wrong action, number or file description;
    ///   [`Error::TooLarge`] for a chunk over the limit; [`Error::SizeMismatch`] when the
    ///   decoded chunk differs from `chunk_size`, runs past `file_size`, or `finish` leaves
    ///   the file short; [`Error::Base64`]; any rejection of the Inspector.
    pub fn receive<'a>(
        &mut self,
        chunk: impl Into<ChunkHeader<'a>>,
        now: SystemTime,
    ) -> Result<Received> {
        let chunk = chunk.into();
        match &self.state {
            State::Receiving => {}
            State::Committing { claim } => {
                let busy = |wait: Duration| Error::UploadCommitting {
                    upload_id: self.id.to_string(),
                    // Rounded up: a client that waits as told finds the lease over.
                    retry_after_secs: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
                };
                // Only an identical retry of `finish` may take over a claim past its lease.
                let Some(claim) = claim else {
                    return Err(busy(COMMIT_LEASE));
                };
                let held = elapsed(claim.claimed, now);
                if held < COMMIT_LEASE {
                    return Err(busy(COMMIT_LEASE - held));
                }
                let (attachment_id, attachment) = (claim.attachment_id.clone(), claim.info.clone());
                return match self.repeat(&chunk) {
                    Ok(Some((number, offset, data, ChunkAction::Finish))) => {
                        self.claim_commit(attachment_id.clone(), attachment.clone(), now);
                        self.last_activity = now;
                        Ok(Received::Recommit {
                            number,
                            offset,
                            data,
                            attachment_id,
                            attachment,
                        })
                    }
                    _ => Err(busy(COMMIT_LEASE)),
                };
            }
            State::Failed(first) if matches!(**first, Error::UploadExpired { .. }) => {
                return Err((**first).clone());
            }
            State::Failed(first) => {
                return Err(Error::UploadFailed {
                    upload_id: self.id.to_string(),
                    first: first.clone(),
                });
            }
            State::Finished { attachment_id } => {
                let attachment_id = attachment_id.clone();
                return match self.repeat(&chunk) {
                    Ok(Some((number, offset, _, action))) => Ok(Received::Repeat {
                        number,
                        offset,
                        data: None,
                        attachment_id: (action == ChunkAction::Finish).then_some(attachment_id),
                    }),
                    _ => Err(Error::UploadFinished {
                        upload_id: self.id.to_string(),
                        attachment_id,
                    }),
                };
            }
        }
        let result = self.accept(&chunk, now);
        if let Err(e) = &result {
            self.state = State::Failed(Box::new(e.clone()));
            self.recent.clear();
            self.last_activity = now;
        }
        result
    }

    /// Claims the commit that [`Received::Last`] asked for, as `attachment_id` (an id the
    /// caller chose), at `now`: saved with the session, the claim lets an identical retry
    /// of `finish` commit again if this commit's request dies ([`Received::Recommit`]).
    /// Does nothing unless the session is committing.
    pub fn claim_commit(&mut self, attachment_id: String, info: AttachmentInfo, now: SystemTime) {
        if let State::Committing { claim } = &mut self.state {
            *claim = Some(Box::new(CommitClaim {
                attachment_id,
                info,
                claimed: now,
            }));
        }
    }

    /// Records that the store committed the upload as `attachment_id`.
    pub fn committed(&mut self, attachment_id: impl Into<String>) {
        self.state = State::Finished {
            attachment_id: attachment_id.into(),
        };
    }

    /// Ends the session with `err` (for instance when the store failed); later chunks get
    /// [`Error::UploadFailed`].
    pub fn fail(&mut self, err: Error) {
        self.state = State::Failed(Box::new(err));
        self.recent.clear();
    }

    /// Expires the session when it has been idle for longer than `ttl` at `now` while
    /// still receiving: it then answers every chunk with [`Error::UploadExpired`]. Returns
    /// that error when this call expired it (release the upload's stored bytes then).
    pub fn expire_if_idle(&mut self, now: SystemTime, ttl: Duration) -> Option<Error> {
        if now <= self.deadline(ttl)? {
            return None;
        }
        let idle = elapsed(self.last_activity, now);
        let err = Error::UploadExpired {
            upload_id: self.id.to_string(),
            idle_secs: idle.as_secs(),
            ttl_secs: ttl.as_secs(),
        };
        self.fail(err.clone());
        self.inspector = None;
        Some(err)
    }

    /// When the session next needs attention, for sessions that expire after `ttl` without
    /// a chunk: the instant after which [`UploadSession::expire_if_idle`] expires it. `None`
    /// when time alone changes nothing: the session stopped receiving (it is committing,
    /// finished, failed or expired), or the deadline lies past what `SystemTime` holds.
    ///
    /// A shell that keeps sessions itself sets its timer from this instead of scanning
    /// them; a chunk moves the deadline on.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use attachments::upload::{ChunkAction, ChunkHeader, RandomId, UploadSession};
    ///
    /// let policy = attachments::Policy::chat().with_limits(attachments::Limits::connectivity());
    /// let start = ChunkHeader {
    ///     action: ChunkAction::Start, upload_id: None, number: 0, size: 3,
    ///     file_name: "a.bin", file_type: "application/octet-stream", file_size: 1_048_580,
    ///     content: b"QUJD",
    /// };
    /// let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let ttl = Duration::from_secs(600);
    /// let (mut session, _) = UploadSession::start(&policy, RandomId::from_bytes([1; 16]), start, t0)?;
    /// let deadline = session.deadline(ttl).unwrap();
    /// assert_eq!(deadline, t0 + ttl);
    /// assert!(session.expire_if_idle(deadline, ttl).is_none());
    /// assert!(session.expire_if_idle(deadline + Duration::from_millis(1), ttl).is_some());
    /// assert_eq!(session.deadline(ttl), None);
    /// # Ok::<(), attachments::Error>(())
    /// ```
    pub fn deadline(&self, ttl: Duration) -> Option<SystemTime> {
        match self.state {
            State::Receiving => self.last_activity.checked_add(ttl),
            _ => None,
        }
    }

    /// Saves the session, to continue it in another process (or after a restart) with
    /// [`UploadSession::restore`]: the state a stateless server keeps in its store. The
    /// record holds the upload's declaration, counters, the Inspector's progress
    /// ([`Inspector::save`]) and the SHA-256 states around the last chunk (to recognise a
    /// retry); never chunk bytes. As JSON it is well under 2 KiB.
    ///
    /// # Errors
    ///
    /// As [`Inspector::save`] while receiving (a validator that cannot be saved).
    pub fn save(&self) -> Result<SessionRecord> {
        let state = match &self.state {
            State::Receiving => SavedState::Receiving,
            State::Committing { claim } => SavedState::Committing {
                claim: claim.as_deref().map(SavedClaim::from),
            },
            State::Finished { attachment_id } => SavedState::Finished {
                attachment_id: attachment_id.clone(),
            },
            State::Failed(e) => match &**e {
                Error::UploadExpired {
                    idle_secs,
                    ttl_secs,
                    ..
                } => SavedState::Expired {
                    idle_secs: *idle_secs,
                    ttl_secs: *ttl_secs,
                },
                e => SavedState::Failed {
                    status: e.status(),
                    message: shorten(&e.wire_message(), MAX_RECORDED_MESSAGE).into_owned(),
                },
            },
        };
        let inspector = match (&self.state, &self.inspector) {
            (State::Receiving, Some(insp)) => Some(insp.save()?),
            _ => None,
        };
        Ok(SessionRecord {
            format: RECORD_FORMAT,
            id: self.id.to_string(),
            scope: self.scope.clone(),
            file_name: self.file_name.clone(),
            file_type: self.file_type.clone(),
            file_size: self.file_size,
            next: self.next,
            received: self.received,
            inspector,
            last: None,
            recent: self.recent.clone(),
            state,
            started: unix_millis(self.started),
            last_activity: unix_millis(self.last_activity),
        })
    }

    /// A session continued from [`UploadSession::save`], under `policy`.
    ///
    /// # Errors
    ///
    /// [`Error::CorruptState`] for a record no session could have saved (another
    /// format version, impossible counters, a damaged Inspector state); as
    /// [`Inspector::restore`] when `policy` no longer accepts the upload's declaration.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use attachments::upload::{RandomId, SessionRecord, UploadSession};
    /// use attachments::wire::{self, connectivity::ChunkRequest};
    /// use attachments::Policy;
    ///
    /// let policy = Policy::chat().with_limits(attachments::Limits::connectivity());
    /// let start = br#"{"attachment": {"action": "start", "file_name": "a.bin",
    ///     "file_type": "application/octet-stream", "file_size": 1048580,
    ///     "chunk": {"chunk_number": 0, "chunk_size": 3, "chunk_content": "AAAA"}}}"#;
    /// let req: ChunkRequest<'_> = wire::from_slice(start)?;
    /// let now = SystemTime::now();
    /// let (session, _) = UploadSession::start(&policy, RandomId::from_bytes([1; 16]), &req.attachment, now)?;
    /// let json = serde_json::to_vec(&session.save()?)?;
    /// let record: SessionRecord = serde_json::from_slice(&json)?;
    /// let again = UploadSession::restore(&policy, record)?;
    /// assert_eq!((again.next_number(), again.received()), (1, 3));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn restore(policy: &Policy, mut record: SessionRecord) -> Result<Self> {
        let bad = |problem: &str| bad_record(&record.id, problem);
        if record.format != RECORD_FORMAT {
            return Err(bad(&format!(
                "record format {} is not the supported {RECORD_FORMAT}",
                record.format
            )));
        }
        let id: RandomId = record.id.parse().map_err(|_| bad("the id is malformed"))?;
        if record.received > record.file_size || record.next > record.received {
            return Err(bad("the counters are impossible"));
        }
        // A record of an earlier version keeps only the last chunk.
        if let Some(last) = record.last.take() {
            if !record.recent.is_empty() {
                return Err(bad("both the last chunk and the recent chunks"));
            }
            record.recent.push(last);
        }
        check_recent(&record.recent, record.next, record.received, &record.state).map_err(&bad)?;
        if record.inspector.is_some() && record.state != SavedState::Receiving {
            return Err(bad("an inspector in a session that stopped receiving"));
        }
        let (state, inspector) = match record.state {
            SavedState::Receiving => {
                let saved = record
                    .inspector
                    .take()
                    .ok_or_else(|| bad("a receiving session without its inspector"))?;
                // Every session takes chunk 0 as it starts, and a failure drops the chunks.
                let Some(last) = record.recent.last() else {
                    return Err(bad("a receiving session without its last chunk"));
                };
                if record.received == record.file_size {
                    return Err(bad("a receiving session that has every byte"));
                }
                policy.check_file_name(&record.file_name)?;
                let declared = policy.check_type(&record.file_type)?;
                let insp = Inspector::restore(policy, saved)?;
                if insp.bytes_seen() != record.received {
                    return Err(bad("the inspector has seen another number of bytes"));
                }
                // The inspector checks the file the session describes, and has hashed
                // the chunks the session took.
                if *insp.declared_type() != declared
                    || insp.declared_size() != Some(record.file_size)
                    || insp.hash_state() != last.after
                {
                    return Err(bad("the inspector checks another file than the session's"));
                }
                (State::Receiving, Some(insp))
            }
            SavedState::Committing { .. } | SavedState::Finished { .. }
                if record.received != record.file_size =>
            {
                return Err(bad("a committed session that is missing bytes"));
            }
            SavedState::Committing { claim } => {
                let claim = match claim {
                    None => None,
                    Some(saved) => Some(Box::new(
                        saved
                            .restore(&record.file_name, record.file_size)
                            .map_err(&bad)?,
                    )),
                };
                (State::Committing { claim }, None)
            }
            SavedState::Finished { attachment_id } => (State::Finished { attachment_id }, None),
            SavedState::Failed { status, .. } if !(400..=599).contains(&status) => {
                return Err(bad(&format!("a failure recorded with status {status}")));
            }
            SavedState::Failed { status, message } => (
                State::Failed(Box::new(Error::Recorded { status, message })),
                None,
            ),
            SavedState::Expired {
                idle_secs,
                ttl_secs,
            } => (
                State::Failed(Box::new(Error::UploadExpired {
                    upload_id: id.to_string(),
                    idle_secs,
                    ttl_secs,
                })),
                None,
            ),
        };
        Ok(UploadSession {
            id,
            policy: policy.clone(),
            file_name: record.file_name,
            file_type: record.file_type,
            file_size: record.file_size,
            next: record.next,
            received: record.received,
            inspector,
            recent: record.recent,
            state,
            started: from_unix_millis(record.started),
            last_activity: from_unix_millis(record.last_activity),
            scope: record.scope,
        })
    }

    /// Binds the upload to `scope` (who started it, as the server scopes lookups, for
    /// instance `property/conversation`): the server answers a chunk sent under another
    /// scope as if the upload did not exist.
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = scope.into();
        self
    }

    /// The scope set with [`UploadSession::with_scope`] (empty when unscoped).
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The upload's id.
    pub fn id(&self) -> RandomId {
        self.id
    }

    /// The declared file name.
    pub fn file_name(&self) -> &str {
        &self.file_name
    }

    /// The declared type, as sent.
    pub fn file_type(&self) -> &str {
        &self.file_type
    }

    /// The declared total size.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Bytes accepted so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The chunk number expected next.
    pub fn next_number(&self) -> u64 {
        self.next
    }

    /// When `start` arrived.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// When the last chunk arrived.
    pub fn last_activity(&self) -> SystemTime {
        self.last_activity
    }

    /// Whether chunks are still expected (the store holds bytes that expiry must release).
    pub fn is_receiving(&self) -> bool {
        matches!(self.state, State::Receiving | State::Committing { .. })
    }

    /// The attachment id, once committed.
    pub fn attachment_id(&self) -> Option<&str> {
        match &self.state {
            State::Finished { attachment_id } => Some(attachment_id),
            _ => None,
        }
    }

    /// The error that ended the session, if one did.
    pub fn failure(&self) -> Option<&Error> {
        match &self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Is `chunk` an identical retry of one of the latest accepted chunks? `Ok(Some(..))`
    /// with its number, offset, bytes and action if so, `Ok(None)` if it is not a retry of
    /// a chunk the session remembers.
    fn repeat(&self, chunk: &ChunkHeader<'_>) -> Result<Option<(u64, u64, Bytes, ChunkAction)>> {
        let number = chunk.number;
        let Some(earlier) = self.recent.iter().find(|c| c.number == number) else {
            return Ok(None);
        };
        let reused = Error::Chunk(ChunkProblem::Reused {
            number,
            next: self.next,
        });
        if chunk.action != earlier.action || self.check_same_file(chunk).is_err() {
            return Err(reused);
        }
        let text = chunk.content;
        if chunk.size != earlier.size || decoded_len(text) as u64 != earlier.size {
            return Err(reused);
        }
        let mut again = BytesMut::with_capacity(decoded_len(text));
        decode_inspect(text, None, &mut again).map_err(|_| reused.clone())?;
        let mut hasher = Sha256::from_state(&earlier.before).map_err(|_| reused.clone())?;
        hasher.update(&again);
        if hasher.state() == earlier.after {
            Ok(Some((
                number,
                earlier.offset,
                again.freeze(),
                earlier.action,
            )))
        } else {
            Err(reused)
        }
    }

    fn check_same_file(&self, chunk: &ChunkHeader<'_>) -> Result<()> {
        let changed = |field, at_start: String, now: String| {
            Err(Error::Chunk(ChunkProblem::Changed {
                field,
                at_start,
                now,
            }))
        };
        if chunk.file_name != self.file_name {
            return changed(
                "file_name",
                format!("{:?}", shorten(&self.file_name, 100)),
                format!("{:?}", shorten(chunk.file_name, 100)),
            );
        }
        if chunk.file_type != self.file_type {
            return changed(
                "file_type",
                format!("{:?}", shorten(&self.file_type, 100)),
                format!("{:?}", shorten(chunk.file_type, 100)),
            );
        }
        if chunk.file_size != self.file_size {
            return changed(
                "file_size",
                self.file_size.to_string(),
                chunk.file_size.to_string(),
            );
        }
        Ok(())
    }

    fn accept(&mut self, chunk: &ChunkHeader<'_>, now: SystemTime) -> Result<Received> {
        let number = chunk.number;
        if let Some((number, offset, data, _)) = self.repeat(chunk)? {
            self.last_activity = now;
            return Ok(Received::Repeat {
                number,
                offset,
                data: Some(data),
                attachment_id: None,
            });
        }
        if number != self.next {
            return Err(Error::Chunk(if number < self.next {
                ChunkProblem::Reused {
                    number,
                    next: self.next,
                }
            } else {
                ChunkProblem::OutOfOrder {
                    expected: self.next,
                    got: number,
                }
            }));
        }
        if number > 0 && chunk.action == ChunkAction::Start {
            return Err(Error::Chunk(ChunkProblem::UnexpectedUploadId));
        }
        self.check_same_file(chunk)?;

        // Sizes first, from the declaration and the text's length, before reserving memory.
        let declared = chunk.size;
        self.policy.check_chunk_size(declared)?;
        let text = chunk.content;
        let len = decoded_len(text) as u64;
        let limit = self.policy.limits.max_chunk_size;
        if len > limit {
            return Err(Error::TooLarge {
                size: len,
                limit,
                kind: SizeLimit::Chunk,
            });
        }
        if len != declared {
            return Err(Error::SizeMismatch {
                actual: len,
                declared,
            });
        }
        if len == 0 {
            return Err(Error::Chunk(ChunkProblem::Empty { number }));
        }
        let total = self.received.saturating_add(len);
        if total > self.file_size {
            return Err(Error::SizeMismatch {
                actual: total,
                declared: self.file_size,
            });
        }
        match chunk.action {
            ChunkAction::Start | ChunkAction::Resume if total == self.file_size => {
                return Err(Error::Chunk(ChunkProblem::CompletesEarly {
                    number,
                    file_size: self.file_size,
                }));
            }
            ChunkAction::Finish if total < self.file_size => {
                return Err(Error::SizeMismatch {
                    actual: total,
                    declared: self.file_size,
                });
            }
            _ => {}
        }

        let inspector = self.inspector.as_mut().ok_or(Error::AlreadyFinished)?;
        let mut buf = BytesMut::with_capacity(len as usize);
        let before = inspector.hash_state();
        decode_inspect(text, Some(&mut *inspector), &mut buf)?;
        let data = buf.freeze();
        let offset = self.received;
        self.received = total;
        // `next` <= `received` < `file_size` (each chunk holds a byte): no overflow.
        self.next = self.next.saturating_add(1);
        self.last_activity = now;
        if self.recent.len() == RECENT_CHUNKS {
            self.recent.remove(0);
        }
        self.recent.push(LastChunk {
            number,
            action: chunk.action,
            offset,
            size: len,
            before,
            after: inspector.hash_state(),
        });
        if chunk.action != ChunkAction::Finish {
            return Ok(Received::Chunk {
                number,
                offset,
                data,
            });
        }
        let verdict = inspector.finish()?;
        self.inspector = None;
        self.state = State::Committing { claim: None };
        Ok(Received::Last {
            number,
            offset,
            data,
            attachment: AttachmentInfo::accepted(&self.file_name, verdict, now),
        })
    }
}

/// The longest failure message a [`SessionRecord`] keeps, in bytes (longer ones are cut):
/// a record stays small whatever a client sent.
const MAX_RECORDED_MESSAGE: usize = 2048;

/// The version of [`SessionRecord`]'s layout this crate writes and reads.
const RECORD_FORMAT: u32 = 1;

/// An [`UploadSession`] saved by [`UploadSession::save`]: serialise it with serde (JSON),
/// keep it in a store, and [`UploadSession::restore`] it in whichever process takes the
/// next chunk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    format: u32,
    id: String,
    scope: String,
    file_name: String,
    file_type: String,
    file_size: u64,
    next: u64,
    received: u64,
    inspector: Option<crate::inspect::InspectorState>,
    /// The last chunk, in records of an earlier version (read, never written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last: Option<LastChunk>,
    /// The latest accepted chunks, oldest first.
    #[serde(default)]
    recent: Vec<LastChunk>,
    state: SavedState,
    /// Unix milliseconds.
    started: u64,
    /// Unix milliseconds.
    last_activity: u64,
}

impl SessionRecord {
    /// When the last chunk arrived (or `start`).
    pub fn last_activity(&self) -> SystemTime {
        from_unix_millis(self.last_activity)
    }

    /// Whether the saved session was still taking chunks (not committing, finished,
    /// failed or expired).
    pub fn is_receiving(&self) -> bool {
        self.state == SavedState::Receiving
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum SavedState {
    Receiving,
    Committing {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claim: Option<SavedClaim>,
    },
    Finished {
        attachment_id: String,
    },
    Failed {
        status: u16,
        message: String,
    },
    Expired {
        idle_secs: u64,
        ttl_secs: u64,
    },
}

/// A [`CommitClaim`] as a record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SavedClaim {
    attachment_id: String,
    media_type: String,
    #[serde(with = "hex_vec")]
    sha256: Vec<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dimensions: Option<(u32, u32)>,
    /// Unix milliseconds.
    created: u64,
    /// Unix milliseconds.
    claimed: u64,
}

impl From<&CommitClaim> for SavedClaim {
    fn from(claim: &CommitClaim) -> Self {
        SavedClaim {
            attachment_id: claim.attachment_id.clone(),
            media_type: claim.info.media_type.to_string(),
            sha256: claim.info.sha256.as_bytes().to_vec(),
            dimensions: claim.info.dimensions,
            created: unix_millis(claim.info.created),
            claimed: unix_millis(claim.claimed),
        }
    }
}

impl SavedClaim {
    /// The claim again, for the upload of `file_name` and `file_size` bytes.
    fn restore(
        self,
        file_name: &str,
        file_size: u64,
    ) -> std::result::Result<CommitClaim, &'static str> {
        if self.attachment_id.parse::<RandomId>().is_err() {
            return Err("the commit claim names a malformed attachment id");
        }
        let media_type = MediaType::parse(&self.media_type)
            .map_err(|_| "the commit claim's type is malformed")?;
        let sha256: [u8; 32] = self
            .sha256
            .try_into()
            .map_err(|_| "the commit claim's SHA-256 is not 32 bytes")?;
        Ok(CommitClaim {
            attachment_id: self.attachment_id,
            info: AttachmentInfo {
                file_name: file_name.to_owned(),
                media_type,
                size: file_size,
                sha256: Sha256Digest(sha256),
                dimensions: self.dimensions,
                created: from_unix_millis(self.created),
            },
            claimed: from_unix_millis(self.claimed),
        })
    }
}

/// Checks the recent chunks of a record against its counters: consecutive numbers ending
/// just before `next`, each holding a byte, contiguous, ending where the upload stands,
/// the hash states around each covering the bytes before and after it and following on
/// from one chunk to the next, `start` first and `finish` only last and only once the
/// session stopped receiving.
fn check_recent(
    recent: &[LastChunk],
    next: u64,
    received: u64,
    state: &SavedState,
) -> std::result::Result<(), &'static str> {
    if recent.len() > RECENT_CHUNKS {
        return Err("more recent chunks than a session keeps");
    }
    let hashed = |state: &[u8]| Sha256::from_state(state).ok().map(|h| h.bytes_hashed());
    let mut expect_number = next.checked_sub(recent.len() as u64);
    let mut expect_offset = None;
    let mut previous_after: Option<&[u8]> = None;
    for (i, chunk) in recent.iter().enumerate() {
        let end = chunk.offset.checked_add(chunk.size);
        if chunk.size == 0
            || Some(chunk.number) != expect_number
            || expect_offset.is_some_and(|o| o != chunk.offset)
            || previous_after.is_some_and(|a| a != chunk.before.as_slice())
            || hashed(&chunk.before) != Some(chunk.offset)
            || hashed(&chunk.after) != end
        {
            return Err("the recent chunks do not follow on to where the upload stands");
        }
        let is_last = i + 1 == recent.len();
        let action_fits = match chunk.action {
            ChunkAction::Start => chunk.number == 0,
            ChunkAction::Resume => chunk.number > 0,
            ChunkAction::Finish => chunk.number > 0 && is_last && *state != SavedState::Receiving,
        };
        if !action_fits {
            return Err("a recent chunk's action does not fit its place");
        }
        expect_number = chunk.number.checked_add(1);
        expect_offset = end;
        previous_after = Some(&chunk.after);
    }
    if !recent.is_empty() && expect_offset != Some(received) {
        return Err("the recent chunks do not end where the upload stands");
    }
    Ok(())
}

/// The error for a session record that cannot be restored: one that no session could
/// have saved, damaged or forged.
pub(crate) fn bad_record(id: &str, problem: &str) -> Error {
    Error::corrupt(format!("the session record of upload {id}"), problem)
}

/// Unix milliseconds of `t` (0 before the epoch, saturating far in the future).
pub(crate) fn unix_millis(t: SystemTime) -> u64 {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// The time `ms` Unix milliseconds name (the epoch if out of range).
fn from_unix_millis(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

mod hex_vec {
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Vec<u8>, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

/// Decodes `text` into `out`; with an Inspector, through [`Inspector::update_decode`]
/// (decoding, hashing and validation in one pass over cache-sized steps).
fn decode_inspect(
    text: &[u8],
    inspector: Option<&mut Inspector>,
    out: &mut BytesMut,
) -> Result<()> {
    let mut decoder = Decoder::new();
    match inspector {
        Some(insp) => {
            insp.update_decode(text, &mut decoder, out)?;
            let from = out.len();
            decoder.finish(out)?;
            insp.update(&out[from..])
        }
        None => {
            decoder.decode(text, out)?;
            decoder.finish(out).map(drop)
        }
    }
}

/// The server side of a single-request upload (Connectivity `attachments`, Demand
/// `upload`): checks the name, type and size, decodes `file_content` straight into one
/// buffer (its length checked against the single limit first) and inspects it.
///
/// # Errors
///
/// [`Error::InvalidFileName`], [`Error::InvalidType`], [`Error::UnsupportedType`],
/// [`Error::TooLarge`] (the declared size or the text over the single limit),
/// [`Error::Base64`], [`Error::SizeMismatch`], any rejection of the Inspector.
///
/// # Examples
///
/// ```
/// use std::time::SystemTime;
/// use attachments::{upload::receive_single, Policy};
///
/// // The Demand API's documented example (`docs/protocol.md`, *Demand upload*): 47
/// // characters of unpadded base64 (35 bytes) declared as 350.
/// let err = receive_single(&Policy::demand(), "x.png", "image/png", 350,
///     b"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAA", SystemTime::UNIX_EPOCH).unwrap_err();
/// assert_eq!(err.wire_message(),
///     "Request failed with code: 400, message: Content length is 35 but metadata size is 350");
/// ```
pub fn receive_single(
    policy: &Policy,
    file_name: &str,
    file_type: &str,
    file_size: u64,
    file_content: &[u8],
    now: SystemTime,
) -> Result<(Bytes, AttachmentInfo)> {
    policy.check_file_name(file_name)?;
    policy.check_size(file_size, UploadMode::Single)?;
    let mut inspector = Inspector::new(policy, file_type, Some(file_size))?;
    let text = file_content;
    let len = decoded_len(text) as u64;
    let limit = policy.limits.max_single_size;
    if len > limit {
        return Err(Error::TooLarge {
            size: len,
            limit,
            kind: SizeLimit::Single,
        });
    }
    let mut buf = BytesMut::with_capacity(len as usize);
    decode_inspect(text, Some(&mut inspector), &mut buf)?;
    let verdict = inspector.finish()?;
    Ok((
        buf.freeze(),
        AttachmentInfo {
            file_name: file_name.to_owned(),
            media_type: verdict.media_type,
            size: verdict.size,
            sha256: verdict.sha256,
            dimensions: verdict.info.dimensions,
            created: now,
        },
    ))
}

/// A place in [`Sessions`].
#[derive(Debug)]
enum Slot {
    Idle(Box<UploadSession>),
    /// Checked out: a chunk is being processed.
    Busy {
        since: SystemTime,
    },
    /// Expired while receiving; kept for one more TTL to answer clearly.
    Expired {
        at: SystemTime,
        idle: Duration,
    },
}

/// The upload sessions of one process, by id, with an idle TTL: for an embedder that
/// keeps its uploads in its own process, with storage of its own.
///
/// The crate's server does not use it: its receiver (`stream::UploadReceiver`, feature
/// `async`) keeps each session as a [`SessionRecord`] in the store between two chunks, so
/// that several processes can share one upload. In one process, this keeps the sessions
/// in memory, with no record to encode, load or save per chunk.
///
/// A session is checked out while one of its chunks is processed (so two chunks of one
/// upload never race: the second gets [`Error::UploadBusy`]) and checked back in after.
/// [`Sessions::expire`] drops sessions idle past the TTL and returns the ids whose stored
/// bytes must be released; an expired id is answered with [`Error::UploadExpired`] for one
/// more TTL, then with [`Error::UploadNotFound`]. Finished and failed sessions are kept
/// for one TTL to answer retries, then dropped.
///
/// Time comes in as `now`. [`Sessions::next_deadline`] says when [`Sessions::expire`] next
/// has something to do: set a timer for it rather than sweeping on a fixed period.
#[derive(Debug)]
pub struct Sessions {
    ttl: Duration,
    slots: HashMap<RandomId, Slot>,
    to_release: Vec<RandomId>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new(DEFAULT_SESSION_TTL)
    }
}

impl Sessions {
    /// No sessions, expiring after `ttl` without a chunk.
    pub fn new(ttl: Duration) -> Self {
        Sessions {
            ttl,
            slots: HashMap::new(),
            to_release: Vec::new(),
        }
    }

    /// The idle TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Number of sessions held (in any state, tombstones included).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Adds a session that `start` opened.
    pub fn insert(&mut self, session: UploadSession) {
        self.slots
            .insert(session.id(), Slot::Idle(Box::new(session)));
    }

    /// Takes the session `upload_id` out to process chunk `number`; put it back with
    /// [`Sessions::check_in`].
    ///
    /// # Errors
    ///
    /// [`Error::UploadNotFound`] for an id that is malformed or unknown,
    /// [`Error::UploadExpired`] for one that expired, [`Error::UploadBusy`] while another
    /// chunk of it is processed.
    pub fn check_out(
        &mut self,
        upload_id: &str,
        number: u64,
        now: SystemTime,
    ) -> Result<UploadSession> {
        let not_found = || Error::UploadNotFound {
            upload_id: upload_id.to_owned(),
        };
        let id: RandomId = upload_id.parse().map_err(|_| not_found())?;
        let ttl = self.ttl;
        let expired = |idle: Duration| Error::UploadExpired {
            upload_id: id.to_string(),
            idle_secs: idle.as_secs(),
            ttl_secs: ttl.as_secs(),
        };
        let slot = self.slots.get_mut(&id).ok_or_else(not_found)?;
        match slot {
            Slot::Busy { .. } => Err(Error::UploadBusy {
                upload_id: id.to_string(),
                number,
            }),
            Slot::Expired { idle, .. } => Err(expired(*idle)),
            Slot::Idle(session) => {
                let idle = elapsed(session.last_activity(), now);
                if idle > ttl {
                    if session.is_receiving() {
                        self.to_release.push(id);
                    }
                    *slot = Slot::Expired { at: now, idle };
                    return Err(expired(idle));
                }
                let Slot::Idle(session) = std::mem::replace(slot, Slot::Busy { since: now }) else {
                    unreachable!("matched Idle above")
                };
                Ok(*session)
            }
        }
    }

    /// Puts a checked-out session back. A session that was out for longer than the TTL
    /// has expired meanwhile (its bytes were released) and stays expired.
    pub fn check_in(&mut self, session: UploadSession) {
        let id = session.id();
        if let Some(Slot::Expired { .. }) = self.slots.get(&id) {
            return;
        }
        self.slots.insert(id, Slot::Idle(Box::new(session)));
    }

    /// The earliest instant after which [`Sessions::expire`] has something to do (a
    /// session to expire, a tombstone or an ended session to drop, or an upload that
    /// [`Sessions::check_out`] found expired and whose bytes are still to be released);
    /// `None` when nothing is held. Calling `expire` earlier does no harm, and changes
    /// nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use attachments::upload::{ChunkAction, ChunkHeader, RandomId, Sessions, UploadSession};
    ///
    /// let policy = attachments::Policy::chat().with_limits(attachments::Limits::connectivity());
    /// let start = ChunkHeader {
    ///     action: ChunkAction::Start, upload_id: None, number: 0, size: 3,
    ///     file_name: "a.bin", file_type: "application/octet-stream", file_size: 1_048_580,
    ///     content: b"QUJD",
    /// };
    /// let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let id = RandomId::from_bytes([1; 16]);
    /// let mut sessions = Sessions::new(Duration::from_secs(600));
    /// assert_eq!(sessions.next_deadline(), None);
    /// sessions.insert(UploadSession::start(&policy, id, start, t0)?.0);
    /// let due = sessions.next_deadline().unwrap();
    /// assert_eq!(due, t0 + Duration::from_secs(600));
    /// assert!(sessions.expire(due).is_empty());
    /// assert_eq!(sessions.expire(due + Duration::from_secs(1)), [id]);
    /// # Ok::<(), attachments::Error>(())
    /// ```
    pub fn next_deadline(&self) -> Option<SystemTime> {
        let after_ttl = |t: SystemTime| t.checked_add(self.ttl);
        // Found expired by `check_out`: due at once.
        let pending = self
            .to_release
            .iter()
            .filter_map(|id| match self.slots.get(id) {
                Some(Slot::Expired { at, .. }) => Some(*at),
                _ => None,
            });
        let timers = self.slots.values().filter_map(|slot| match slot {
            Slot::Idle(session) => after_ttl(session.last_activity()),
            Slot::Busy { since } => after_ttl(*since),
            Slot::Expired { at, .. } => after_ttl(*at),
        });
        pending.chain(timers).min()
    }

    /// Drops what is past its time and returns the ids of uploads that were still
    /// receiving: release their stored bytes (`Store::abort`).
    ///
    /// Idle sessions expire one TTL after their last chunk; a session checked out for more
    /// than a TTL (its request was abandoned) too; tombstones and ended sessions are
    /// dropped one TTL after that.
    pub fn expire(&mut self, now: SystemTime) -> Vec<RandomId> {
        let ttl = self.ttl;
        let mut release = std::mem::take(&mut self.to_release);
        self.slots.retain(|id, slot| match slot {
            Slot::Idle(session) => {
                let idle = elapsed(session.last_activity(), now);
                if session.is_receiving() {
                    if idle > ttl {
                        release.push(*id);
                        *slot = Slot::Expired { at: now, idle };
                    }
                    true
                } else {
                    idle <= ttl
                }
            }
            Slot::Busy { since } => {
                let idle = elapsed(*since, now);
                if idle > ttl {
                    release.push(*id);
                    *slot = Slot::Expired { at: now, idle };
                }
                true
            }
            Slot::Expired { at, .. } => elapsed(*at, now) <= ttl,
        });
        release
    }
}

/// Time from `then` to `now`, zero if the clock went backwards.
fn elapsed(then: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or_default()
}
