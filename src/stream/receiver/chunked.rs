//! One chunk of a chunked upload per request (Connectivity `attachment_chunks`).
//!
//! `start` opens a session and saves it. Every later chunk goes through three steps:
//!
//! 1. **load**: the upload's [`SessionRecord`](crate::upload::SessionRecord) from the
//!    store, restored into its [`UploadSession`] and checked against the caller's scope;
//! 2. **wait for its turn**: a chunk that arrived a little ahead of the one the session
//!    expects (a pipelining client) waits for the earlier ones, then is loaded again;
//! 3. **apply**: the session judges the chunk; what it decided is saved with a
//!    conditional write naming the version loaded, *before* the chunk's bytes are stored
//!    (and, for `finish`, committed). A save that loses the race to another request
//!    starts the three steps over.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::time::Instant;

use super::{UploadReceiver, restore_session};
use crate::error::{Error, Result};
use crate::store::AttachmentMeta;
use crate::stream::ids::random_id;
use crate::upload::{AttachmentInfo, ChunkHeader, MAX_AHEAD, RandomId, Received, UploadSession};
use crate::wire::OkFlag;
use crate::wire::connectivity::{ChunkData, ChunkRequest};

/// How many times a chunk is judged again after losing a race for its session record.
const MAX_CONTENDED: usize = 8;

/// How long such a chunk (or a `finish` whose earlier chunks are still being written)
/// waits before it is judged as it stands (out of order: the upload fails).
const AHEAD_WAIT: Duration = Duration::from_secs(10);

/// How soon a waiting chunk first looks at the store again, for saves by other
/// processes; each further look waits twice as long, up to [`AHEAD_POLL_MAX`]. (Saves of
/// this process wake it at once.)
const AHEAD_POLL: Duration = Duration::from_millis(20);

/// The longest wait between two looks of a waiting chunk.
const AHEAD_POLL_MAX: Duration = Duration::from_millis(320);

/// How many chunks of one upload may wait for their turn at once: a pipelining client
/// has at most [`MAX_AHEAD`] - 1 waiting; more are answered [`Error::UploadBusy`].
pub(super) const MAX_WAITING_PER_UPLOAD: usize = MAX_AHEAD as usize;

/// The chunks waiting for their turn, counted per upload, under
/// [`MAX_WAITING_PER_UPLOAD`]. The lock is held for a map update only.
///
/// There is deliberately no cap over all uploads here: one client could fill it and
/// make every other client's pipelined chunks busy. What all waiting chunks cost is
/// bounded per upload (this cap), in time (`AHEAD_WAIT`), and in store reads (polls back
/// off to `AHEAD_POLL_MAX`).
#[derive(Debug, Default)]
pub(super) struct Waiting {
    per_upload: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl Waiting {
    /// A waiting place for a chunk of upload `id`, or `None` when the upload's cap is
    /// reached.
    fn enter(&self, id: &str) -> Option<WaitSlot<'_>> {
        let mut counts = self.per_upload.lock().unwrap_or_else(|e| e.into_inner());
        let mine = counts.entry(id.to_owned()).or_default();
        if *mine >= MAX_WAITING_PER_UPLOAD {
            return None;
        }
        *mine += 1;
        Some(WaitSlot {
            waiting: self,
            id: id.to_owned(),
        })
    }

    /// How many chunks wait now, in all.
    #[cfg(test)]
    fn total(&self) -> usize {
        let counts = self.per_upload.lock().unwrap_or_else(|e| e.into_inner());
        counts.values().sum()
    }
}

/// A chunk's place among the waiting ones; given back when dropped.
struct WaitSlot<'a> {
    waiting: &'a Waiting,
    id: String,
}

impl Drop for WaitSlot<'_> {
    fn drop(&mut self) {
        let mut counts = self
            .waiting
            .per_upload
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(mine) = counts.get_mut(&self.id) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                counts.remove(&self.id);
            }
        }
    }
}

/// The wait before the next look at the store, doubling from [`AHEAD_POLL`] to
/// [`AHEAD_POLL_MAX`].
fn next_poll(poll: Duration) -> Duration {
    (poll * 2).min(AHEAD_POLL_MAX)
}

/// A session loaded from the store, with the version of the record it came from.
struct Loaded {
    session: UploadSession,
    version: String,
    /// The record as it was loaded, before this request's chunk.
    record: Bytes,
}

/// What one request's steps share.
struct Turn<'a> {
    scope: &'a str,
    /// When the request arrived: the session's clock for this chunk.
    now: SystemTime,
    /// Until when it may wait for earlier chunks.
    wait_until: Instant,
}

impl Turn<'_> {
    /// Step 2: whether chunk `number` waits for its turn. One up to [`MAX_AHEAD`] ahead of
    /// the chunk `session` expects (a pipelining client sent it before the earlier ones
    /// were answered) waits until this process saves a record again, or a poll interval
    /// passes ([`AHEAD_POLL`], doubling up to [`AHEAD_POLL_MAX`]: another process's saves
    /// are seen by loading again), and is then loaded again; past the request's
    /// `wait_until` it is judged as it stands.
    fn waits(&self, session: &UploadSession, number: u64) -> bool {
        let next = session.next_number();
        session.is_receiving()
            && session.failure().is_none()
            && number > next
            && number - next <= MAX_AHEAD
            && Instant::now() < self.wait_until
    }
}

/// A chunk the session accepted: where its bytes go.
struct Place {
    number: u64,
    offset: u64,
    data: Bytes,
}

impl Place {
    fn new(number: u64, offset: u64, data: Bytes) -> Self {
        Place {
            number,
            offset,
            data,
        }
    }
}

/// What applying a chunk came to.
enum Applied {
    /// The answer.
    Done(ChunkData),
    /// Another request saved the record first: load it again and judge again.
    Lost,
}

fn answer(upload_id: Option<String>, attachment_id: Option<String>) -> ChunkData {
    ChunkData {
        attachment_id,
        upload_id,
        ok: OkFlag(true),
    }
}

impl UploadReceiver {
    /// One `attachment_chunks` request body: parsed with borrowed strings (the base64 text
    /// is not copied), then [`UploadReceiver::chunk_request`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJson`], and as [`UploadReceiver::chunk_request`].
    pub async fn chunk(&self, body: &[u8], scope: &str) -> Result<ChunkData> {
        let req: ChunkRequest<'_> = crate::wire::from_slice(body)?;
        self.chunk_request(&req.attachment, scope).await
    }

    /// One parsed chunk (a [`ChunkHeader`], or a wire type that converts into one, such
    /// as the Connectivity `ChunkAttachment`): `start` opens a session, `resume` /
    /// `finish` continue the one named by `upload_id`. Returns the response `data`:
    /// `upload_id` after `start`, `attachment_id` after `finish`.
    ///
    /// Stateless: the session lives in the store as a
    /// [`SessionRecord`](crate::upload::SessionRecord). Each chunk loads it, restores the
    /// [`UploadSession`], lets it judge the chunk, and saves it back with a conditional
    /// write naming the version it loaded *before* storing the chunk's bytes. So any
    /// process sharing the store can take the next chunk, and when two take the same
    /// upload at once only one save wins; the other loads the winner's record and judges
    /// again (an identical retry is then a [`Received::Repeat`], anything else is refused).
    ///
    /// # Errors
    ///
    /// What [`UploadSession::start`], [`UploadSession::restore`] and
    /// [`UploadSession::receive`] find; [`Error::UploadNotFound`] for an unknown id or one
    /// of another scope; [`Error::Contended`] when other requests kept winning the race;
    /// [`Error::Io`] from the store (the session then fails and its bytes are released).
    pub async fn chunk_request<'a>(
        &self,
        chunk: impl Into<ChunkHeader<'a>>,
        scope: &str,
    ) -> Result<ChunkData> {
        let chunk = chunk.into();
        let now = (self.clock)();
        let Some(upload_id) = chunk.upload_id else {
            return self.start(chunk, scope, now).await;
        };
        let not_found = || Error::UploadNotFound {
            upload_id: upload_id.to_owned(),
        };
        let id = upload_id.parse::<RandomId>().map_err(|_| not_found())?;
        let id = id.to_string();
        let turn = Turn {
            scope,
            now,
            wait_until: Instant::now() + AHEAD_WAIT,
        };
        let mut lost = 0;
        let (mut slot, mut poll) = (None, AHEAD_POLL);
        while lost < MAX_CONTENDED {
            // Registered before the load, so no save between the two is missed.
            let advanced = self.advanced.notified();
            tokio::pin!(advanced);
            advanced.as_mut().enable();
            let loaded = self.load(&id, scope).await?.ok_or_else(not_found)?;
            if turn.waits(&loaded.session, chunk.number) {
                if slot.is_none() {
                    slot = Some(self.waiting.enter(&id).ok_or_else(|| Error::UploadBusy {
                        upload_id: id.clone(),
                        number: chunk.number,
                    })?);
                }
                let _ = tokio::time::timeout(poll, advanced).await;
                poll = next_poll(poll);
                continue;
            }
            match self.apply(loaded, &chunk, &turn).await? {
                Applied::Done(data) => return Ok(data),
                Applied::Lost => lost += 1,
            }
        }
        Err(Error::Contended { what: "upload", id })
    }

    /// Opens a session with its `start` chunk: the upload is begun in the store, the
    /// session saved, then chunk 0 stored.
    async fn start(
        &self,
        chunk: ChunkHeader<'_>,
        scope: &str,
        now: SystemTime,
    ) -> Result<ChunkData> {
        let id = random_id()?;
        let (session, received) = UploadSession::start(&self.policy, id, chunk, now)?;
        // A file the scanner cannot take is refused now, not after its last chunk.
        self.check_scannable(chunk.file_size)?;
        let session = session.with_scope(scope);
        let upload_id = id.to_string();
        let Received::Chunk {
            number,
            offset,
            data,
        } = received
        else {
            unreachable!("start never completes a chunked upload");
        };
        self.store.begin_upload(&upload_id, now).await?;
        let save = self.save(&session, None, now);
        let version = match save.await {
            Ok(version) => version,
            Err(e) => return Err(self.fail(session, e, None, now).await),
        };
        if let Err(e) = self.store.put_chunk(&upload_id, number, offset, data).await {
            return Err(self.fail(session, e, Some(&version), now).await);
        }
        Ok(answer(Some(upload_id), None))
    }

    /// Step 1: the session of upload `id` as the store holds it; `None` when there is none,
    /// or it is another scope's (which answers exactly like a missing one).
    async fn load(&self, id: &str, scope: &str) -> Result<Option<Loaded>> {
        let Some(stored) = self.store.load_session(id).await? else {
            return Ok(None);
        };
        let session = restore_session(&self.policy, id, &stored.record)?;
        if session.scope() != scope {
            return Ok(None);
        }
        Ok(Some(Loaded {
            session,
            version: stored.version,
            record: stored.record,
        }))
    }

    /// Step 3: the session judges the chunk, and what it decided is saved, then done.
    async fn apply(
        &self,
        loaded: Loaded,
        chunk: &ChunkHeader<'_>,
        turn: &Turn<'_>,
    ) -> Result<Applied> {
        let Loaded {
            mut session,
            version,
            record,
        } = loaded;
        let now = turn.now;
        if let Some(expired) = session.expire_if_idle(now, self.ttl) {
            return Err(self.expired(session, &version, expired, now).await);
        }
        let received = match session.receive(*chunk, now) {
            Ok(received) => received,
            Err(e) => return self.refused(session, &version, e, now).await,
        };
        let loaded = Loaded {
            session,
            version,
            record,
        };
        match received {
            Received::Chunk {
                number,
                offset,
                data,
            } => {
                let place = Place::new(number, offset, data);
                self.store_chunk(loaded, place, now).await
            }
            Received::Last {
                number,
                offset,
                data,
                attachment,
            } => {
                let place = Place::new(number, offset, data);
                self.commit(loaded, place, attachment, None, turn).await
            }
            Received::Recommit {
                number,
                offset,
                data,
                attachment_id,
                attachment,
            } => {
                let place = Place::new(number, offset, data);
                let again = Some(attachment_id);
                self.commit(loaded, place, attachment, again, turn).await
            }
            Received::Repeat {
                number,
                offset,
                data,
                attachment_id,
            } => {
                // Stored again: identical bytes, and it repairs a write an interrupted
                // request left undone.
                if let Some(data) = data {
                    let id = loaded.session.id().to_string();
                    self.store.put_chunk(&id, number, offset, data).await?;
                    self.advanced.notify_waiters();
                }
                Ok(Applied::Done(answer(None, attachment_id)))
            }
        }
    }

    /// The session expired (idle past the TTL) as this chunk came: the expiry is saved and
    /// the upload's bytes released, unless another request saved the record first.
    async fn expired(
        &self,
        session: UploadSession,
        version: &str,
        expired: Error,
        now: SystemTime,
    ) -> Error {
        let save = self.save(&session, Some(version), now);
        if save.await.is_ok() {
            let _ = self.store.abort(&session.id().to_string()).await;
        }
        expired
    }

    /// The session refused the chunk with `e`. A failure it has just reached is saved
    /// (chunks waiting for their turn then see it) and the upload's bytes released.
    async fn refused(
        &self,
        session: UploadSession,
        version: &str,
        e: Error,
        now: SystemTime,
    ) -> Result<Applied> {
        let just_failed = session.failure().is_some()
            && !matches!(e, Error::UploadFailed { .. } | Error::UploadExpired { .. });
        if just_failed {
            let save = self.save(&session, Some(version), now);
            match save.await {
                Err(Error::Contended { .. }) => return Ok(Applied::Lost),
                Err(store_err) => return Err(store_err),
                Ok(_) => {
                    self.advanced.notify_waiters();
                    let _ = self.store.abort(&session.id().to_string()).await;
                }
            }
        }
        Err(e)
    }

    /// An accepted `resume` (or `start`'s successor): the session is saved, then the
    /// chunk stored.
    async fn store_chunk(&self, loaded: Loaded, place: Place, now: SystemTime) -> Result<Applied> {
        let save = self.save(&loaded.session, Some(&loaded.version), now);
        let saved = match save.await {
            Err(Error::Contended { .. }) => return Ok(Applied::Lost),
            other => other?,
        };
        self.advanced.notify_waiters();
        let id = loaded.session.id().to_string();
        if let Err(e) = self
            .store
            .put_chunk(&id, place.number, place.offset, place.data)
            .await
        {
            return Err(self.fail(loaded.session, e, Some(&saved), now).await);
        }
        self.advanced.notify_waiters();
        Ok(Applied::Done(answer(None, None)))
    }

    /// An accepted `finish` (or, with `again`, the retry of one whose claim lapsed): the
    /// claim (as which attachment, since when) is saved first, so a second `finish` now
    /// answers "busy", and if this request dies, a retry of `finish` after the lease
    /// commits in its place. Then the chunk is stored, the upload committed, and the
    /// session marked finished.
    async fn commit(
        &self,
        loaded: Loaded,
        place: Place,
        attachment: AttachmentInfo,
        again: Option<String>,
        turn: &Turn<'_>,
    ) -> Result<Applied> {
        let Loaded {
            mut session,
            version,
            record,
        } = loaded;
        let now = turn.now;
        let recommit = again.is_some();
        let attachment_id = match again {
            Some(id) => id,
            None => random_id()?.to_string(),
        };
        // The record before this `finish`: put back if the scanner is down, so the same
        // `finish` sent again is judged afresh rather than waiting out the lease.
        let unclaimed = (self.scan.is_some() && !recommit).then_some(record);
        if !recommit {
            session.claim_commit(attachment_id.clone(), attachment.clone(), now);
        }
        let save = self.save(&session, Some(&version), now);
        let committing = match save.await {
            Err(Error::Contended { .. }) => return Ok(Applied::Lost),
            other => other?,
        };
        let meta = AttachmentMeta::new(&attachment_id, &attachment, turn.scope);
        let id = session.id().to_string();
        if let Err(e) = self
            .store_and_commit(&id, &meta, place, recommit, turn)
            .await
        {
            // The commit may have been made all the same: by this claim's own retry that
            // took it over after the lease (the store then refuses this one), or by a
            // store that lost the answer. The attachment is there: the upload succeeded.
            if !matches!(self.is_committed(&meta).await, Ok(true)) {
                // The scanner being down is no fault of the upload: its record goes back
                // to before the claim, and the same `finish` sent again runs afresh (if
                // putting it back fails, the finish takes the commit over once the lease
                // ends; sooner is answered `UploadCommitting` with the wait).
                if matches!(e, Error::ScanUnavailable { .. }) {
                    if let Some(record) = unclaimed
                        && let Err(put_back) = self
                            .store
                            .save_session(&id, record, Some(&committing), now)
                            .await
                    {
                        tracing::warn!(upload = %id, error = %put_back, "could not put the upload back before its commit; the finish waits out the lease");
                    }
                    return Err(e);
                }
                return Err(self.fail(session, e, Some(&committing), now).await);
            }
        }
        session.committed(attachment_id.clone());
        // Only this request may change a committing record: best effort.
        let save = self.save(&session, Some(&committing), now);
        let _ = save.await;
        Ok(Applied::Done(answer(None, Some(attachment_id))))
    }

    /// Stores the last chunk and commits the upload as `meta`. A `recommit` finds the
    /// attachment already there when the request that claimed it first did commit.
    async fn store_and_commit(
        &self,
        id: &str,
        meta: &AttachmentMeta,
        place: Place,
        recommit: bool,
        turn: &Turn<'_>,
    ) -> Result<()> {
        if recommit && self.is_committed(meta).await? {
            return Ok(());
        }
        self.store
            .put_chunk(id, place.number, place.offset, place.data)
            .await?;
        self.scan_when_stored(id, meta.file_size, turn.wait_until)
            .await?;
        match self.commit_when_stored(id, meta, turn.wait_until).await {
            // The claim before this one committed meanwhile.
            Err(Error::Taken { .. }) if recommit && self.is_committed(meta).await? => Ok(()),
            other => other,
        }
    }

    /// Commits, waiting (until `wait_until`) while the stored chunks do not yet cover the
    /// file: with a pipelining client, an earlier chunk's write may still be under way
    /// when `finish` is judged (its session save came first, by design).
    async fn commit_when_stored(
        &self,
        id: &str,
        meta: &AttachmentMeta,
        wait_until: Instant,
    ) -> Result<()> {
        let mut poll = AHEAD_POLL;
        loop {
            let advanced = self.advanced.notified();
            tokio::pin!(advanced);
            advanced.as_mut().enable();
            match self.store.commit(id, meta).await {
                Err(Error::Incomplete { .. }) if Instant::now() < wait_until => {
                    let _ = tokio::time::timeout(poll, advanced).await;
                    poll = next_poll(poll);
                }
                other => return other,
            }
        }
    }

    /// Scans the staged file (if this receiver scans), waiting (until `wait_until`) while
    /// the stored chunks do not yet cover it, as [`Self::commit_when_stored`] does.
    async fn scan_when_stored(&self, id: &str, size: u64, wait_until: Instant) -> Result<()> {
        // Each piece waits for its own bytes: the stream to the scanner stays open, and
        // nothing before the gap is read or sent twice.
        let (store, advanced) = (Arc::clone(&self.store), Arc::clone(&self.advanced));
        self.scan(id, size, |range| {
            let (store, advanced, id) = (Arc::clone(&store), Arc::clone(&advanced), id.to_owned());
            async move {
                let mut poll = AHEAD_POLL;
                loop {
                    let notified = advanced.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    match store.read_staged(&id, range.clone()).await {
                        Err(Error::Incomplete { .. }) if Instant::now() < wait_until => {
                            let _ = tokio::time::timeout(poll, notified).await;
                            poll = next_poll(poll);
                        }
                        other => return other,
                    }
                }
            }
        })
        .await
    }

    /// Whether the store holds `meta`'s attachment already, with its size and digest (a
    /// commit whose request died after the store took it).
    pub(super) async fn is_committed(&self, meta: &AttachmentMeta) -> Result<bool> {
        match self.store.metadata(&meta.id).await {
            Ok(found) => Ok(found.file_size == meta.file_size
                && found.sha256 == meta.sha256
                && found.scope == meta.scope),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_places_are_capped_per_upload_only_and_given_back() {
        let waiting = Waiting::default();
        let mine: Vec<_> = (0..MAX_WAITING_PER_UPLOAD)
            .map(|_| waiting.enter("a").expect("a place"))
            .collect();
        assert!(waiting.enter("a").is_none(), "one upload's cap");
        // Many uploads filling their own places take none of another's.
        let others: Vec<_> = (0..100 * MAX_WAITING_PER_UPLOAD)
            .map(|n| waiting.enter(&format!("u{}", n % 100)).expect("a place"))
            .collect();
        assert!(waiting.enter("fresh").is_some());
        drop(mine);
        assert!(waiting.enter("a").is_some(), "places given back");
        drop(others);
        assert_eq!(waiting.total(), 0);
        assert!(waiting.per_upload.lock().unwrap().is_empty());
    }

    #[test]
    fn polls_back_off_to_the_maximum() {
        let polls: Vec<_> = std::iter::successors(Some(AHEAD_POLL), |p| Some(next_poll(*p)))
            .take(7)
            .map(|p| p.as_millis())
            .collect();
        assert_eq!(polls, [20, 40, 80, 160, 320, 320, 320]);
    }
}
