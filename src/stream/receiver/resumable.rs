//! Resumable uploads (tus 1.0, the IETF draft): the IO shell around
//! [`ResumableUpload`]. Each request loads the upload's record from the store, and an
//! append streams its body through the session in pieces that end on
//! [`RESUMABLE_CHUNK`] boundaries of the file: each piece is judged, stored as the chunk
//! numbered by its offset, and the record saved, so a request cut off anywhere leaves the
//! upload at the last piece stored, and a piece stored again (a retry from that offset)
//! replaces the one before.
//!
//! # Who writes
//!
//! An append takes the upload's *lease* first: a conditional save of the record naming
//! it, good for [`WRITE_LEASE`]. It stores a piece only while its lease has at least
//! [`PUT_TIMEOUT`] (the longest a store write may take before it is given up) plus
//! [`LEASE_MARGIN`] to run, renewing it otherwise; every save after a piece renews it. A
//! second append waits for the lease to be given back (up to [`LOCK_WAIT`]), or for it to
//! run out, else is refused as locked (423). So two writers never store pieces of one
//! upload at once, whichever processes they run in, as long as the processes' clocks
//! agree within [`LEASE_MARGIN`].

use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use sha1::Digest as _;
use tokio::time::Instant;

use super::UploadReceiver;
use crate::error::{Error, Result, ResumableProblem, shorten};
use crate::store::{AttachmentMeta, Expired};
use crate::stream::ids::{random_id, time_ordered_id};
use crate::upload::{
    AttachmentInfo, Creation, RESUMABLE_CHUNK, RandomId, ResumableRecord, ResumableUpload,
};
use crate::wire::resumable::{Checksum, ChecksumAlgorithm};

/// How long an append's lease on its upload lasts without a save: 30 s.
pub const WRITE_LEASE: Duration = Duration::from_secs(30);

/// The longest one store write of a piece may take before it is given up (and the
/// append fails): 10 s.
pub const PUT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a lease must have left beyond [`PUT_TIMEOUT`] for a piece to be stored under it:
/// 5 s (the clock difference between processes it tolerates).
pub const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// How long an append waits for another append of the same upload to give its lease
/// back before it is refused as locked: 5 s.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

/// How long one piece (a [`RESUMABLE_CHUNK`]) of a body may take to arrive: 60 s, a
/// floor of about 17 KiB/s. A slower body ends its append (408), its bytes kept, so no
/// request holds its place for ever.
pub const PIECE_WAIT: Duration = Duration::from_secs(60);

/// How many times a request loads the record again after losing a save to another one.
const MAX_CONTENDED: usize = 8;

/// Where a resumable upload stands, as a request leaves it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResumableStatus {
    /// The upload's id, which is its attachment's.
    pub id: String,
    /// The bytes kept: where the next append starts.
    pub offset: u64,
    /// The length, once known.
    pub length: Option<u64>,
    /// The tus `Upload-Metadata` the creation sent.
    pub metadata: String,
    /// When the upload expires unless a piece comes (`None` once complete).
    pub expires: Option<SystemTime>,
    /// Whether it is an attachment now (`/v1/attachments/{id}` serves it).
    pub finished: bool,
}

/// One append: where it starts, and what the request says about the file.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Append {
    /// Where the body starts in the file (tus and IETF `Upload-Offset`).
    pub offset: u64,
    /// The file's length, if the request gives it (tus deferred length, IETF
    /// `Upload-Length`).
    pub length: Option<u64>,
    /// The checksum the whole body must have (tus `Upload-Checksum`): a body that does
    /// not is refused (460) and none of it kept.
    pub checksum: Option<Checksum>,
    /// The body ends the file (IETF `Upload-Complete: ?1`): the length is where it ends.
    pub completes: bool,
}

impl Append {
    /// An append at `offset`.
    pub fn at(offset: u64) -> Self {
        Append {
            offset,
            ..Append::default()
        }
    }

    /// With the file's length.
    pub fn with_length(mut self, length: Option<u64>) -> Self {
        self.length = length;
        self
    }

    /// With a checksum for the body.
    pub fn with_checksum(mut self, checksum: Option<Checksum>) -> Self {
        self.checksum = checksum;
        self
    }

    /// Saying whether the body ends the file.
    pub fn completing(mut self, completes: bool) -> Self {
        self.completes = completes;
        self
    }
}

/// A running hash for the checksum extension.
enum BodyHash {
    Sha1(sha1::Sha1),
    Sha256(crate::digest::Sha256),
}

impl BodyHash {
    fn new(algorithm: ChecksumAlgorithm) -> Self {
        match algorithm {
            ChecksumAlgorithm::Sha1 => BodyHash::Sha1(sha1::Sha1::new()),
            ChecksumAlgorithm::Sha256 => BodyHash::Sha256(crate::digest::Sha256::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            BodyHash::Sha1(h) => h.update(data),
            BodyHash::Sha256(h) => h.update(data),
        }
    }

    fn matches(self, digest: &[u8]) -> bool {
        match self {
            BodyHash::Sha1(h) => h.finalize().as_slice() == digest,
            BodyHash::Sha256(h) => h.finalize().as_bytes() == digest,
        }
    }
}

/// The checksum of a body, hashed by a task of its own (beside the Inspector's SHA-256 of
/// the file, on the other core), fed the body's pieces as they come (at most
/// [`HASH_AHEAD`] waiting: they share the body's buffers, nothing is copied).
struct BodyHasher {
    pieces: tokio::sync::mpsc::Sender<Bytes>,
    done: tokio::task::JoinHandle<BodyHash>,
}

/// How many pieces of a body may wait for the checksum's task.
const HASH_AHEAD: usize = 16;

impl BodyHasher {
    fn spawn(algorithm: ChecksumAlgorithm) -> Self {
        let (pieces, mut rx) = tokio::sync::mpsc::channel::<Bytes>(HASH_AHEAD);
        let done = tokio::spawn(async move {
            let mut hash = BodyHash::new(algorithm);
            while let Some(piece) = rx.recv().await {
                hash.update(&piece);
            }
            hash
        });
        BodyHasher { pieces, done }
    }

    async fn update(&mut self, piece: Bytes) {
        // The task only ends once this sender is dropped.
        let _ = self.pieces.send(piece).await;
    }

    async fn matches(self, digest: &[u8]) -> bool {
        drop(self.pieces);
        match self.done.await {
            Ok(hash) => hash.matches(digest),
            Err(_) => false,
        }
    }
}

/// An upload under this request's lease: the session, the record as last saved, and its
/// version.
struct Held {
    upload: ResumableUpload,
    saved: Bytes,
    version: String,
    token: String,
}

fn not_found(id: &str) -> Error {
    Error::NotFound {
        what: "upload",
        id: shorten(id, 64).into_owned(),
    }
}

fn encode(upload: &ResumableUpload) -> Result<Bytes> {
    Ok(Bytes::from(serde_json::to_vec(&upload.save()?)?))
}

impl UploadReceiver {
    /// Opens a resumable upload for `scope` (its owner), under a time-ordered id that
    /// will be its attachment's.
    ///
    /// # Errors
    ///
    /// As [`ResumableUpload::create`]; [`Error::ScanTooLarge`] for a length the scanner
    /// takes no file of; [`Error::Io`] from the store.
    ///
    /// # Examples
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use attachments::{Policy, store::{MemoryStore, Store}, stream::{Append, UploadReceiver}};
    /// use attachments::upload::Creation;
    ///
    /// let store = Arc::new(MemoryStore::new());
    /// let receiver = UploadReceiver::new(Policy::chat(), store.clone());
    /// let creation = Creation {
    ///     file_name: "a.txt", file_type: "text/plain", length: Some(11), metadata: "",
    /// };
    /// let opened = receiver.create_resumable(creation, "owner").await?;
    /// let first = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from("hello "))]);
    /// let status = receiver.append_resumable(&opened.id, "owner", Append::at(0), first).await?;
    /// assert_eq!((status.offset, status.finished), (6, false));
    /// let rest = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from("world"))]);
    /// let status = receiver.append_resumable(&opened.id, "owner", Append::at(6), rest).await?;
    /// assert!(status.finished);
    /// assert_eq!(store.read_range(&opened.id, 0..11).await?, "hello world");
    /// # Ok::<(), attachments::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn create_resumable(
        &self,
        creation: Creation<'_>,
        scope: &str,
    ) -> Result<ResumableStatus> {
        let now = (self.clock)();
        let id = time_ordered_id(now)?;
        let upload = ResumableUpload::create(&self.policy, id, creation, now)?.with_scope(scope);
        if let Some(length) = creation.length {
            self.check_scannable(length)?;
        }
        let id = id.to_string();
        self.store.begin_upload(&id, now).await?;
        let record = encode(&upload)?;
        if let Err(e) = self.store.save_session(&id, record, None, now).await {
            let _ = self.store.abort(&id).await;
            return Err(e);
        }
        Ok(self.status_of(&upload))
    }

    fn status_of(&self, upload: &ResumableUpload) -> ResumableStatus {
        ResumableStatus {
            id: upload.id().to_string(),
            offset: upload.offset(),
            length: upload.length(),
            metadata: upload.metadata().to_owned(),
            expires: upload.deadline(self.ttl),
            finished: upload.is_finished(),
        }
    }

    /// The upload `id` of `scope` as the store holds it, with the record's bytes and
    /// version. Another scope's upload, or a chunked upload's record, is not found.
    async fn load_resumable(
        &self,
        id: &str,
        scope: &str,
    ) -> Result<(ResumableUpload, Bytes, String)> {
        let canonical = id
            .parse::<RandomId>()
            .map_err(|_| not_found(id))?
            .to_string();
        let stored = self
            .store
            .load_session(&canonical)
            .await?
            .ok_or_else(|| not_found(id))?;
        let Ok(record) = serde_json::from_slice::<ResumableRecord>(&stored.record) else {
            return Err(not_found(id));
        };
        let upload = ResumableUpload::restore(&self.policy, record)?;
        if upload.id().to_string() != canonical || upload.scope() != scope {
            return Err(not_found(id));
        }
        Ok((upload, stored.record, stored.version))
    }

    /// Where upload `id` of `scope` stands (tus and IETF `HEAD`). An upload found
    /// committing with no request at it (its commit was cut short) is committed now.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] (also for another owner's upload); [`ResumableProblem::Expired`] (its bytes are then released);
    /// [`ResumableProblem::Refused`] for an upload that ended with an error; the commit's
    /// errors.
    pub async fn resumable_status(&self, id: &str, scope: &str) -> Result<ResumableStatus> {
        for _ in 0..MAX_CONTENDED {
            let now = (self.clock)();
            let (mut upload, saved, version) = self.load_resumable(id, scope).await?;
            if let Some(gone) = upload.expire_if_idle(now, self.ttl) {
                return Err(self.end_resumable(&upload, &version, gone, now).await);
            }
            if let Some(first) = upload.failure() {
                return Err(Error::Resumable(ResumableProblem::Refused {
                    upload_id: upload.id().to_string(),
                    first: Box::new(first.clone()),
                }));
            }
            let token = random_id()?.to_string();
            // Every byte kept but not committed: the request that kept the last one went
            // away before the commit (or its process did). Committed now.
            let unfinished =
                upload.committing().is_some() || (upload.is_receiving() && upload.is_complete());
            if !unfinished || upload.leased_to_other(&token, now).is_some() {
                return Ok(self.status_of(&upload));
            }
            if upload.is_receiving()
                && let Err(e) = upload.finish(now)
            {
                return Err(self.end_resumable(&upload, &version, e, now).await);
            }
            upload.acquire(&token, now + WRITE_LEASE);
            let save = self.save_resumable(&upload, Some(&version), now);
            let version = match save.await {
                Err(Error::Contended { .. }) => continue,
                other => other?,
            };
            let mut held = Held {
                upload,
                saved,
                version,
                token,
            };
            let upload_id = held.upload.id().to_string();
            return match self.commit_resumable(&mut held, scope).await {
                // Deleted while it was being committed.
                Err(Error::Io(_) | Error::NotFound { .. })
                    if matches!(self.store.load_session(&upload_id).await, Ok(None)) =>
                {
                    Err(not_found(id))
                }
                Err(e) => Err(e),
                Ok(()) => Ok(self.status_of(&held.upload)),
            };
        }
        Err(Error::Contended {
            what: "upload",
            id: id.to_owned(),
        })
    }

    /// Saves `upload` over version `expected`. (Encoded before the first await.)
    fn save_resumable(
        &self,
        upload: &ResumableUpload,
        expected: Option<&str>,
        now: SystemTime,
    ) -> impl Future<Output = Result<String>> + Send + use<> {
        let encoded = encode(upload);
        let id = upload.id().to_string();
        let expected = expected.map(str::to_owned);
        let store = std::sync::Arc::clone(&self.store);
        async move {
            store
                .save_session(&id, encoded?, expected.as_deref(), now)
                .await
        }
    }

    /// Saves an upload that has just ended with `e` (over `version`) and releases its
    /// bytes; returns `e`.
    fn end_resumable(
        &self,
        upload: &ResumableUpload,
        version: &str,
        e: Error,
        now: SystemTime,
    ) -> impl Future<Output = Error> + Send + use<> {
        let save = self.save_resumable(upload, Some(version), now);
        let (store, id) = (std::sync::Arc::clone(&self.store), upload.id().to_string());
        async move {
            if save.await.is_ok() {
                let _ = store.abort(&id).await;
            }
            e
        }
    }

    /// Takes the lease of upload `id` for `token`, waiting up to [`LOCK_WAIT`] for another
    /// append to give its own back.
    async fn lease_resumable(
        &self,
        id: &str,
        scope: &str,
        token: &str,
        append: &Append,
    ) -> Result<Held> {
        let until = Instant::now() + LOCK_WAIT;
        let mut poll = Duration::from_millis(20);
        let mut lost = 0;
        loop {
            let advanced = self.advanced.notified();
            tokio::pin!(advanced);
            advanced.as_mut().enable();
            let now = (self.clock)();
            let (mut upload, saved, version) = self.load_resumable(id, scope).await?;
            if let Some(gone) = upload.expire_if_idle(now, self.ttl) {
                return Err(self.end_resumable(&upload, &version, gone, now).await);
            }
            upload.check_append(append.offset)?;
            if upload.leased_to_other(token, now).is_some() {
                if Instant::now() >= until {
                    return Err(Error::Resumable(ResumableProblem::Locked {
                        upload_id: upload.id().to_string(),
                    }));
                }
                let _ = tokio::time::timeout(poll, advanced).await;
                poll = (poll * 2).min(Duration::from_millis(320));
                continue;
            }
            if let Some(length) = append.length {
                upload.set_length(length)?;
            }
            upload.acquire(token, now + WRITE_LEASE);
            match self.save_resumable(&upload, Some(&version), now).await {
                Ok(version) => {
                    return Ok(Held {
                        upload,
                        saved,
                        version,
                        token: token.to_owned(),
                    });
                }
                Err(Error::Contended { .. }) if lost < MAX_CONTENDED => lost += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Appends `body` to upload `id` of `scope` (tus and IETF `PATCH`, and the body of a
    /// creation that carries one), stored as it streams: memory stays one
    /// [`RESUMABLE_CHUNK`]. Runs on a Tokio runtime with its timer enabled (store writes
    /// are bounded by [`PUT_TIMEOUT`]). The file is checked as its bytes come (type, size limit,
    /// structure); once every byte is kept it is scanned (if this receiver scans) and
    /// committed as the attachment `id`, owned by `scope` and kept until deleted.
    ///
    /// When the body stops early (the client went away), the bytes that came are kept,
    /// unless the append carries a checksum, and the error is returned.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`]; [`ResumableProblem::OffsetMismatch`],
    /// [`ResumableProblem::Completed`], [`ResumableProblem::Locked`] (nothing read);
    /// [`ResumableProblem::ChecksumMismatch`] (nothing kept); the file's rejections
    /// ([`Error::TypeMismatch`], [`Error::TooLarge`], [`ResumableProblem::PastLength`],
    /// [`Error::Infected`]...), which end the upload and release its bytes; the body's own
    /// errors; [`Error::Io`] from the store (the upload stays where it was last saved).
    pub async fn append_resumable<S, E>(
        &self,
        id: &str,
        scope: &str,
        append: Append,
        body: S,
    ) -> Result<ResumableStatus>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        Error: From<E>,
    {
        let token = random_id()?.to_string();
        let mut held = self.lease_resumable(id, scope, &token, &append).await?;
        let upload_id = held.upload.id().to_string();
        match self.append_leased(&mut held, &append, scope, body).await {
            // Removed meanwhile (a DELETE while this append ran): the store's error is
            // the removal's doing, not a fault.
            Err(Error::Io(_) | Error::NotFound { .. } | Error::Contended { .. })
                if matches!(self.store.load_session(&upload_id).await, Ok(None)) =>
            {
                Err(not_found(id))
            }
            other => other,
        }
    }

    /// [`Self::append_resumable`] once the lease is taken.
    async fn append_leased<S, E>(
        &self,
        held: &mut Held,
        append: &Append,
        scope: &str,
        body: S,
    ) -> Result<ResumableStatus>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        Error: From<E>,
    {
        let token = held.token.clone();
        match self.append_held(held, append, body).await? {
            None => {}
            // Cut off, but with every byte of the file in (the client hung up as soon as
            // it had sent them): committed all the same.
            Some(_) if held.upload.is_complete() => {}
            Some(cut) => {
                self.give_back(held, false).await;
                return Err(cut);
            }
        }
        let now = (self.clock)();
        if append.completes {
            let offset = held.upload.offset();
            if let Err(e) = held.upload.set_length(offset) {
                self.give_back(held, false).await;
                return Err(e);
            }
        }
        if held.upload.is_complete() {
            if let Err(e) = held.upload.finish(now) {
                return Err(self.end_held(held, e).await);
            }
            held.upload.acquire(&token, now + WRITE_LEASE);
            let save = self.save_resumable(&held.upload, Some(&held.version), now);
            held.version = save.await?;
            self.commit_resumable(held, scope).await?;
            return Ok(self.status_of(&held.upload));
        }
        held.upload.release(&token);
        let save = self.save_resumable(&held.upload, Some(&held.version), now);
        held.version = save.await?;
        self.advanced.notify_waiters();
        Ok(self.status_of(&held.upload))
    }

    /// Reads `body` into the held upload: checked as it comes, stored piece by piece (see
    /// [`Self::append_resumable`]), the checksum verified at its end. Leaves the upload
    /// held and saved with every byte kept, ready to be completed or given back; a body
    /// cut off (without a checksum) is `Ok(Some(why))`, its bytes kept.
    async fn append_held<S, E>(
        &self,
        held: &mut Held,
        append: &Append,
        body: S,
    ) -> Result<Option<Error>>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        Error: From<E>,
    {
        let checked = append.checksum.is_some();
        let mut hash = append
            .checksum
            .as_ref()
            .map(|c| BodyHasher::spawn(c.algorithm));
        let mut body = std::pin::pin!(body);
        let mut buf = BytesMut::new();
        // With a checksum, a rejection waits for it: bytes damaged on the way are a 460
        // (send them again), not the end of the upload.
        let mut rejected: Option<Error> = None;
        let mut piece_due = Instant::now() + PIECE_WAIT;
        let cut: Option<Error> = loop {
            let piece = match tokio::time::timeout_at(piece_due, body.next()).await {
                Err(_) => {
                    break Some(Error::Resumable(ResumableProblem::TooSlow {
                        secs: PIECE_WAIT.as_secs(),
                        bytes: RESUMABLE_CHUNK,
                    }));
                }
                Ok(None) => break None,
                Ok(Some(Err(e))) => break Some(e.into()),
                Ok(Some(Ok(piece))) => piece,
            };
            if let Some(hash) = &mut hash {
                hash.update(piece.clone()).await;
            }
            let mut rest = &piece[..];
            while !rest.is_empty() && rejected.is_none() {
                // Checked as they come (hashing overlaps the reading), kept once a
                // piece reaches its chunk boundary.
                if buf.capacity() == 0 {
                    buf.reserve(held.upload.piece_len(usize::MAX));
                }
                let take = held.upload.piece_len(rest.len());
                if let Err(e) = held.upload.check(&rest[..take]) {
                    if !checked {
                        return Err(self.end_held(held, e).await);
                    }
                    rejected = Some(e);
                    break;
                }
                buf.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if held.upload.piece_len(usize::MAX) == RESUMABLE_CHUNK as usize {
                    self.keep(held, buf.split().freeze(), !checked).await?;
                    piece_due = Instant::now() + PIECE_WAIT;
                }
            }
        };
        if let Some(e) = cut {
            // The bytes that came are kept (the IETF draft's SHOULD); a checksummed body
            // is all or nothing.
            if checked {
                self.give_back(held, true).await;
                return Err(e);
            }
            if !buf.is_empty() {
                self.keep(held, buf.split().freeze(), true).await?;
            }
            return Ok(Some(e));
        }
        if rejected.is_none() && !buf.is_empty() {
            self.keep(held, buf.split().freeze(), !checked).await?;
        }
        if let (Some(hash), Some(sum)) = (hash, &append.checksum)
            && !hash.matches(&sum.digest).await
        {
            self.give_back(held, true).await;
            return Err(Error::Resumable(ResumableProblem::ChecksumMismatch {
                algorithm: sum.algorithm.name(),
            }));
        }
        if let Some(e) = rejected {
            return Err(self.end_held(held, e).await);
        }
        Ok(None)
    }

    /// Stores one checked piece and keeps it; with `save`, saves the upload after it
    /// (renewing the lease), else only renews the lease when it runs short.
    async fn keep(&self, held: &mut Held, data: Bytes, save: bool) -> Result<()> {
        let now = (self.clock)();
        let len = data.len() as u64;
        let at = held.upload.keep(len, now)?;
        let storing_to = (!save).then(|| at + len);
        if let Err(e) = self.renew_if_short(held, now, storing_to).await {
            self.give_back(held, true).await;
            return Err(e);
        }
        let id = held.upload.id().to_string();
        let put = tokio::time::timeout(PUT_TIMEOUT, self.store.put_chunk(&id, at, at, data));
        let stored = match put.await {
            Ok(stored) => stored,
            Err(_) => Err(Error::io_other(
                format!("storing bytes {at}.. of upload {id}"),
                std::io::ErrorKind::TimedOut,
                format!("the store took longer than {} s", PUT_TIMEOUT.as_secs()),
            )),
        };
        if let Err(e) = stored {
            self.give_back(held, true).await;
            return Err(e);
        }
        if save {
            let now = (self.clock)();
            let token = held.token.clone();
            held.upload.acquire(&token, now + WRITE_LEASE);
            let encoded = encode(&held.upload)?;
            let saved = self
                .store
                .save_session(&id, encoded.clone(), Some(&held.version), now)
                .await;
            match saved {
                Ok(version) => {
                    held.version = version;
                    held.saved = encoded;
                }
                // Another request took the upload over (our lease ran out): what it
                // saved stands.
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Saves the record as last saved, with the lease renewed, when the lease has less
    /// than [`PUT_TIMEOUT`] + [`LEASE_MARGIN`] to run at `now`, or when a piece is about to
    /// be stored past every piece the record knows of (`storing_to`, an append whose
    /// checksum is still to pass: the record must know of it before it is in the store).
    async fn renew_if_short(
        &self,
        held: &mut Held,
        now: SystemTime,
        storing_to: Option<u64>,
    ) -> Result<()> {
        let until = held.upload.lease_until(&held.token);
        let record: ResumableRecord = serde_json::from_slice(&held.saved)?;
        let further = storing_to.is_some_and(|end| end > record.stored_end());
        if !further && until.is_some_and(|u| u > now + PUT_TIMEOUT + LEASE_MARGIN) {
            return Ok(());
        }
        let mut base = ResumableUpload::restore(&self.policy, record)?;
        if let Some(end) = storing_to {
            base.storing_to(end);
        }
        base.acquire(&held.token, now + WRITE_LEASE);
        let encoded = encode(&base)?;
        let id = base.id().to_string();
        held.version = self
            .store
            .save_session(&id, encoded.clone(), Some(&held.version), now)
            .await?;
        held.saved = encoded;
        held.upload.acquire(&held.token, now + WRITE_LEASE);
        Ok(())
    }

    /// Gives the lease back. With `undo`, the record goes back to its last saved state
    /// (bytes taken since are dropped); else the session as it stands is saved. Best
    /// effort: a lease not given back runs out.
    async fn give_back(&self, held: &mut Held, undo: bool) {
        let now = (self.clock)();
        let upload = if undo {
            let restored = serde_json::from_slice::<ResumableRecord>(&held.saved)
                .map_err(Error::from)
                .and_then(|r| ResumableUpload::restore(&self.policy, r));
            match restored {
                Ok(upload) => upload,
                Err(_) => return,
            }
        } else {
            let token = held.token.clone();
            held.upload.release(&token);
            return self.save_given_back(&held.upload, &held.version, now).await;
        };
        let mut upload = upload;
        upload.release(&held.token);
        self.save_given_back(&upload, &held.version, now).await;
    }

    fn save_given_back(
        &self,
        upload: &ResumableUpload,
        version: &str,
        now: SystemTime,
    ) -> impl Future<Output = ()> + Send + use<> {
        let save = self.save_resumable(upload, Some(version), now);
        let (advanced, id) = (std::sync::Arc::clone(&self.advanced), upload.id());
        async move {
            if let Err(e) = save.await {
                tracing::debug!(upload = %id, error = %e, "lease not given back; it runs out");
            }
            advanced.notify_waiters();
        }
    }

    /// The held upload has just ended with `e` (the file stopped being acceptable):
    /// saved so, its bytes released; returns `e`.
    async fn end_held(&self, held: &mut Held, e: Error) -> Error {
        let now = (self.clock)();
        let ended = self
            .end_resumable(&held.upload, &held.version, e, now)
            .await;
        self.advanced.notify_waiters();
        ended
    }

    /// Commits a held upload that is committing: scan, commit as the attachment of its
    /// id, record it finished.
    async fn commit_resumable(&self, held: &mut Held, scope: &str) -> Result<()> {
        let Some(info) = held.upload.committing().cloned() else {
            return Ok(());
        };
        let id = held.upload.id().to_string();
        let meta = attachment_meta(&id, &info, scope);
        let committed = async {
            if self.is_committed(&meta).await? {
                return Ok(());
            }
            self.check_scannable(info.size)?;
            self.scan_staged(&id, info.size).await?;
            match self.store.commit(&id, &meta).await {
                Err(Error::Taken { .. }) if self.is_committed(&meta).await? => Ok(()),
                other => other,
            }
        }
        .await;
        let now = (self.clock)();
        match committed {
            Ok(()) => {
                held.upload.committed();
                let save = self.save_resumable(&held.upload, Some(&held.version), now);
                if let Ok(version) = save.await {
                    held.version = version;
                }
                self.advanced.notify_waiters();
                tracing::info!(id = %id, size = info.size, file_type = %info.media_type, "resumable upload stored");
                Ok(())
            }
            // The scanner or the store failing is no fault of the file: the upload stays
            // committing, and the next request to it commits it.
            Err(e @ (Error::ScanUnavailable { .. } | Error::Io(_))) => {
                let token = held.token.clone();
                held.upload.release(&token);
                self.save_given_back(&held.upload, &held.version, now).await;
                Err(e)
            }
            Err(e) => {
                held.upload.fail(e.clone());
                Err(self.end_held(held, e).await)
            }
        }
    }

    /// Cancels upload `id` of `scope` (tus termination, IETF `DELETE`): its bytes and
    /// record are removed, and its attachment deleted if it was committed. Later requests
    /// to it find nothing (404).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`]; [`Error::Io`] from the store.
    pub async fn cancel_resumable(&self, id: &str, scope: &str) -> Result<()> {
        let (upload, _, _) = self.load_resumable(id, scope).await?;
        let id = upload.id().to_string();
        if upload.is_finished() || upload.committing().is_some() {
            self.store.delete_attachment(&id).await?;
        }
        self.store.remove(&Expired::Upload(id)).await?;
        self.advanced.notify_waiters();
        Ok(())
    }

    /// One idle resumable upload of the sweep, stored under `id` (`record` as stored):
    /// removed, record and bytes, once idle past the TTL while receiving (and no append
    /// holds its lease), or two TTLs after it ended. Later requests find nothing (404).
    ///
    /// Judged from the record alone, never restored: the sweep may run under another
    /// API's policy than the one the upload follows.
    pub(super) async fn sweep_resumable(
        &self,
        id: &str,
        record: ResumableRecord,
        now: SystemTime,
        ended_before: SystemTime,
    ) -> Result<bool> {
        let idle_since = if record.is_receiving() {
            now.checked_sub(self.ttl).unwrap_or(SystemTime::UNIX_EPOCH)
        } else {
            ended_before
        };
        let leased = record.leased_until().is_some_and(|until| until > now);
        if record.id() != id || (record.last_activity() < idle_since && !leased) {
            self.store.remove(&Expired::Upload(id.to_owned())).await?;
            return Ok(true);
        }
        Ok(false)
    }
}

/// The metadata of the attachment a resumable upload becomes: owned by `scope`, kept
/// until deleted (as chat uploads are).
fn attachment_meta(id: &str, info: &AttachmentInfo, scope: &str) -> AttachmentMeta {
    let mut meta = AttachmentMeta::new(id, info, scope);
    meta.linked = true;
    meta
}

/// What the shell cuts: pieces never cross a [`RESUMABLE_CHUNK`] boundary.
const _: () = assert!(RESUMABLE_CHUNK.is_power_of_two());
