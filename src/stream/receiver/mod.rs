//! The server side of uploads: [`UploadReceiver`], one flow per file:
//!
//! - `single`: a whole file in one request body (Connectivity `attachments`, Demand
//!   `upload`);
//! - `chunked`: one chunk of a chunked upload per request, its [`UploadSession`] kept in
//!   the store between chunks;
//! - `streamed`: a file that arrives as a stream of pieces (the chat resource's multipart
//!   upload), checked and stored as it comes;
//! - `sweep`: expiry of idle uploads and of attachments no message carries.
//!
//! What is accepted is decided by the IO-free [`upload`](crate::upload) module; this only
//! loads, waits, stores and answers.

mod chunked;
mod resumable;
mod single;
mod streamed;
mod sweep;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::scan::{Scanner, Verdict};
use crate::store::{Store, UNLINKED_TTL};
use crate::upload::{DEFAULT_SESSION_TTL, SessionRecord, UploadSession};

pub use resumable::{Append, LEASE_MARGIN, LOCK_WAIT, PUT_TIMEOUT, ResumableStatus, WRITE_LEASE};
pub use streamed::{STREAM_CHUNK, Staged};

/// A source of the current time (tests move it).
type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The server side of uploads: parses request bodies, runs the [`UploadSession`]s and
/// stores what they accept.
///
/// Each chunk is stored before it is answered; the last one is committed (atomically)
/// before the answer carries the `attachment_id`. When a session fails, or expires, its
/// stored bytes are released. Ids are 128 random bits from the operating system.
///
/// It holds no upload state of its own: between two chunks each session lives in the
/// store as a [`SessionRecord`] (see [`UploadReceiver::chunk_request`]), so receivers in
/// several processes sharing one store (the S3 store, say) can each take any chunk.
///
/// # Examples
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use attachments::{Policy, store::{MemoryStore, Store}, stream::UploadReceiver};
///
/// let store = Arc::new(MemoryStore::new());
/// let receiver = UploadReceiver::new(Policy::connectivity(), store.clone());
/// let body = br#"{"attachment": {"file_name": "a.png", "file_type": "image/png",
///     "file_size": 350, "file_content": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAA"}}"#;
/// let err = receiver.single(body, "").await.unwrap_err();
/// assert_eq!(err.to_string(), "Content length is 35 but metadata size is 350");
/// assert_eq!(store.attachment_count(), 0);
/// # });
/// ```
pub struct UploadReceiver {
    policy: Policy,
    store: Arc<dyn Store>,
    ttl: Duration,
    clock: Clock,
    unlinked_ttl: Duration,
    /// Woken after every session save and chunk write of this receiver: a chunk that
    /// arrived ahead of its turn waits on it.
    advanced: Arc<tokio::sync::Notify>,
    /// The chunks waiting for their turn now, under caps.
    waiting: chunked::Waiting,
    /// The virus scanner every file passes before its commit, if any.
    scan: Option<ScanPolicy>,
}

/// A scanner and what to do when it is unavailable.
#[derive(Debug, Clone)]
struct ScanPolicy {
    scanner: Arc<dyn Scanner>,
    fail_open: bool,
}

/// How much of a staged file one read for the scan takes: 1 MiB.
pub const SCAN_PIECE: u64 = 1024 * 1024;

impl std::fmt::Debug for UploadReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadReceiver")
            .field("policy", &self.policy)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl UploadReceiver {
    /// A receiver for `policy` over `store`, with sessions expiring after
    /// [`DEFAULT_SESSION_TTL`] without a chunk.
    pub fn new(policy: Policy, store: Arc<dyn Store>) -> Self {
        UploadReceiver {
            policy,
            store,
            ttl: DEFAULT_SESSION_TTL,
            clock: Arc::new(SystemTime::now),
            unlinked_ttl: UNLINKED_TTL,
            advanced: Arc::new(tokio::sync::Notify::new()),
            waiting: chunked::Waiting::default(),
            scan: None,
        }
    }

    /// Scans every file with `scanner` before it is committed: a single upload from the
    /// bytes its request carried, a chunked or streamed upload by reading it back from
    /// the store once its last byte is stored ([`Store::read_staged`]), whole and in order.
    /// An infected file is refused ([`Error::Infected`](crate::Error::Infected), 422) and its
    /// bytes released. A scanner that is unavailable refuses the commit
    /// ([`Error::ScanUnavailable`](crate::Error::ScanUnavailable), 503; a chunked upload's
    /// `finish` can be sent again), unless `fail_open`, when the file is committed
    /// unscanned and a warning logged for it.
    pub fn with_scanner(mut self, scanner: Arc<dyn Scanner>, fail_open: bool) -> Self {
        self.scan = Some(ScanPolicy { scanner, fail_open });
        self
    }

    /// Runs the scan of a file of `size` bytes whose pieces `read(range)` gives, if this
    /// receiver scans; `Ok` to commit it.
    async fn scan<F, Fut>(&self, upload_id: &str, size: u64, mut read: F) -> Result<()>
    where
        F: FnMut(std::ops::Range<u64>) -> Fut + Send,
        Fut: Future<Output = Result<Bytes>> + Send,
    {
        let Some(policy) = &self.scan else {
            return Ok(());
        };
        let scanned = async {
            let mut stream = policy.scanner.open(size).await?;
            let mut at = 0;
            while at < size {
                let end = (at + SCAN_PIECE).min(size);
                let piece = read(at..end).await?;
                stream.feed(&piece).await?;
                at = end;
            }
            stream.verdict().await
        }
        .await;
        match scanned {
            Ok(Verdict::Clean) => Ok(()),
            Ok(Verdict::Infected { signature }) => {
                tracing::warn!(upload = upload_id, size, %signature, "refused an infected file");
                Err(Error::Infected { signature })
            }
            Err(Error::ScanUnavailable { problem }) if policy.fail_open => {
                tracing::warn!(upload = upload_id, size, %problem, "committing a file UNSCANNED: the scanner is unavailable and fail-open is set");
                Ok(())
            }
            Err(e) => {
                if matches!(e, Error::ScanUnavailable { .. }) {
                    tracing::warn!(upload = upload_id, error = %e, "scanner unavailable: commit refused");
                }
                Err(e)
            }
        }
    }

    /// Refuses a file of `size` bytes when this receiver's scanner takes no file that large
    /// ([`Error::ScanTooLarge`]).
    fn check_scannable(&self, size: u64) -> Result<()> {
        match self.scan.as_ref().and_then(|p| p.scanner.max_size()) {
            Some(limit) if size > limit => Err(Error::ScanTooLarge { size, limit }),
            _ => Ok(()),
        }
    }

    /// Scans the file upload `upload_id` staged, `size` bytes, read back from the store.
    async fn scan_staged(&self, upload_id: &str, size: u64) -> Result<()> {
        let store = Arc::clone(&self.store);
        self.scan(upload_id, size, |range| {
            let store = Arc::clone(&store);
            let id = upload_id.to_owned();
            async move { store.read_staged(&id, range).await }
        })
        .await
    }

    /// Sets how long an attachment not carried by any message is kept
    /// (default [`UNLINKED_TTL`], 24 h as the Demand API documents; `docs/protocol.md`,
    /// *Lifetimes and the sweep*).
    pub fn with_unlinked_ttl(mut self, ttl: Duration) -> Self {
        self.unlinked_ttl = ttl;
        self
    }

    /// Sets the session TTL.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Reads the time from `clock` instead of the system clock (tests move it).
    pub fn with_clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Saves `session` at version `expected`; returns the new version. (The record is
    /// encoded before the first await: a session is `Send` but not `Sync`.)
    fn save(
        &self,
        session: &UploadSession,
        expected: Option<&str>,
        now: SystemTime,
    ) -> impl Future<Output = Result<String>> + Send + use<> {
        let encoded = session
            .save()
            .and_then(|r| Ok(Bytes::from(serde_json::to_vec(&r)?)));
        let id = session.id().to_string();
        let expected = expected.map(str::to_owned);
        let store = Arc::clone(&self.store);
        async move {
            store
                .save_session(&id, encoded?, expected.as_deref(), now)
                .await
        }
    }

    /// Ends `session` with the store error `e`. `saved` is the version of the record this
    /// request saved last (`None`: it saved none). The failure is saved over exactly that
    /// version, and only then are the upload's bytes released: when another request moved
    /// the record on meanwhile (a retry of `finish` that took over the commit, say), the
    /// upload is that request's and is left alone; when the store cannot save, the sweep
    /// releases the bytes once the upload is idle.
    async fn fail(
        &self,
        mut session: UploadSession,
        e: Error,
        saved: Option<&str>,
        now: SystemTime,
    ) -> Error {
        let id = session.id().to_string();
        session.fail(e.clone());
        let release = match saved {
            Some(version) => self.save(&session, Some(version), now).await.is_ok(),
            None => true,
        };
        if release {
            self.advanced.notify_waiters();
            let _ = self.store.abort(&id).await;
        }
        e
    }
}

/// Parses and restores a stored session record.
fn restore_session(policy: &Policy, id: &str, record: &[u8]) -> Result<UploadSession> {
    let record: SessionRecord = serde_json::from_slice(record).map_err(|e| {
        // A resumable upload's (tus, IETF) is no chunked upload: not found as one.
        if serde_json::from_slice::<crate::upload::ResumableRecord>(record).is_ok() {
            Error::UploadNotFound {
                upload_id: id.to_owned(),
            }
        } else {
            Error::corrupt(format!("the session record of upload {id}"), e.to_string())
        }
    })?;
    check_own(UploadSession::restore(policy, record)?, id)
}

/// `session`, restored from the record stored under upload `id`, if it is that upload's
/// (a record stored under another upload's key is not).
fn check_own(session: UploadSession, id: &str) -> Result<UploadSession> {
    if session.id().to_string() != id {
        return Err(crate::upload::bad_record(
            id,
            "the record is of another upload",
        ));
    }
    Ok(session)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upload::{ChunkAction, ChunkHeader, RandomId};

    #[test]
    fn a_session_record_stored_under_another_id_is_refused() {
        let start = ChunkHeader {
            action: ChunkAction::Start,
            upload_id: None,
            number: 0,
            size: 3,
            file_name: "a.bin",
            file_type: "application/octet-stream",
            file_size: 4,
            content: b"AAAA",
        };
        let mut policy_chunks = Policy::chat();
        policy_chunks.limits.max_single_size = 2;
        policy_chunks.limits.max_chunked_size = Some(10);
        policy_chunks.limits.max_chunk_size = 10;
        let id = RandomId::from_bytes([7; 16]);
        let (session, _) =
            UploadSession::start(&policy_chunks, id, start, SystemTime::UNIX_EPOCH).unwrap();
        let record = serde_json::to_vec(&session.save().unwrap()).unwrap();
        let own = id.to_string();
        assert!(restore_session(&policy_chunks, &own, &record).is_ok());
        let other = RandomId::from_bytes([8; 16]).to_string();
        let err = restore_session(&policy_chunks, &other, &record).unwrap_err();
        assert!(err.to_string().contains("another upload"), "{err}");
    }
}
