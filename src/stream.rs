//! Async shells around the upload state machines (feature `async`): they move bytes and
//! hold no protocol logic of their own.
//!
//! - [`BodyStream`] (client): a `tokio::fs::File`, any `AsyncRead`, or a
//!   `Stream<Item = io::Result<Bytes>>` in; a `Stream` of request bodies out, with at most
//!   one body built ahead of the one being sent, and a progress callback.
//! - [`UploadReceiver`] (server): request bodies in (read with [`read_body`] under a
//!   length limit); [`UploadSession`]s saved in a [`Store`] between chunks (so several
//!   processes may share one upload); the response `data` out.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncSeek, AsyncSeekExt, ReadBuf};
use tokio_util::io::StreamReader;

use crate::codec::base64::encoded_len;
use crate::error::{ChunkProblem, Error, Result, SizeLimit};
use crate::policy::Policy;
use crate::store::{AttachmentMeta, Expired, Store, UNLINKED_TTL};
use crate::upload::{
    DEFAULT_SESSION_TTL, RandomId, Received, Request, SessionRecord, Step, UploadPlan,
    UploadSession, receive_single,
};
use crate::wire::OkFlag;
use crate::wire::connectivity::{ChunkAttachment, ChunkData, ChunkRequest, UploadRequest};

/// Bytes read from the source at a time.
const READ_BUF: usize = 64 * 1024;

/// The size of the chunks [`UploadReceiver::receive_stream`] writes to the store: 1 MiB,
/// the APIs' own chunk size, so one file's chunks are alike in every store whichever way
/// it arrived, and the memory a streamed upload holds is bounded by it.
pub const STREAM_CHUNK: usize = 1 << 20;

/// A file [`UploadReceiver::receive_stream`] has checked and stored, not yet an
/// attachment: commit it with [`UploadReceiver::commit_staged`] or release it with
/// [`UploadReceiver::abort_staged`]. (Dropped without either, its bytes stay until the
/// store's sweep removes the idle upload.)
#[derive(Debug)]
#[must_use = "commit or abort a staged upload"]
pub struct Staged {
    upload_id: String,
    info: crate::upload::AttachmentInfo,
}

impl Staged {
    /// What the file turned out to be.
    pub fn info(&self) -> &crate::upload::AttachmentInfo {
        &self.info
    }
}

/// A progress callback: bytes of the file processed so far, and the file's size.
pub type Progress = Box<dyn FnMut(u64, u64) + Send>;

/// The request bodies of an [`UploadPlan`], read from an `AsyncRead`.
///
/// Reads 64 KiB at a time and hands each read to the plan, which encodes it into the body
/// being built; no read happens while a finished body waits to be taken, so at most one
/// body is built ahead. Before the last body is released the source is read once more to
/// make sure it has ended: a source longer than declared fails with
/// [`Error::SizeMismatch`].
///
/// After `start`, call [`BodyStream::set_upload_id`] with the id from its response before
/// asking for the next body (asking earlier yields an [`Error::Chunk`] item and changes
/// nothing). After an error the stream yields it once and ends; a source that can seek
/// can be read again from the start with [`BodyStream::restart`].
///
/// # Examples
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use futures::StreamExt;
/// use attachments::{Policy, Limits, stream::BodyStream, upload::{Target, UploadPlan}};
///
/// let policy = Policy::chat().with_limits(Limits::connectivity());
/// let file = vec![7u8; 3_000_000];
/// let plan = UploadPlan::new(&policy, Target::Connectivity, "f.bin",
///                            "application/octet-stream", file.len() as u64)?;
/// let mut bodies = BodyStream::new(plan, &file[..]);
/// let mut sizes = Vec::new();
/// while let Some(request) = bodies.next().await {
///     let request = request?;
///     sizes.push(request.range.end - request.range.start);
///     bodies.set_upload_id("ab88c360-0425-11eb-a250-9fc9f2abb407");
/// }
/// assert_eq!(sizes, [1_048_575, 1_048_575, 902_850]);
/// # Ok::<(), attachments::Error>(())
/// # }).unwrap();
/// ```
pub struct BodyStream<R> {
    plan: UploadPlan,
    reader: R,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
    ended: bool,
    progress: Option<Progress>,
}

impl<R> std::fmt::Debug for BodyStream<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyStream")
            .field("plan", &self.plan)
            .field("buffered", &(self.end - self.start))
            .field("eof", &self.eof)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<R: AsyncRead + Unpin> BodyStream<R> {
    /// The bodies of `plan`, with the file read from `reader` (a `tokio::fs::File`, a
    /// socket, a byte slice...).
    pub fn new(plan: UploadPlan, reader: R) -> Self {
        BodyStream {
            plan,
            reader,
            buf: vec![0; READ_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            ended: false,
            progress: None,
        }
    }

    /// Calls `progress(done, total)` each time bytes of the file have been processed.
    pub fn with_progress(mut self, progress: impl FnMut(u64, u64) + Send + 'static) -> Self {
        self.progress = Some(Box::new(progress));
        self
    }

    /// Hands over the `upload_id` from the `start` response.
    pub fn set_upload_id(&mut self, upload_id: impl Into<String>) {
        self.plan.set_upload_id(upload_id);
    }

    /// The plan (mode, sizes, the Inspector's verdict once the file was accepted).
    pub fn plan(&self) -> &UploadPlan {
        &self.plan
    }

    /// The reader, given back (for a new plan over the same file).
    pub fn into_inner(self) -> R {
        self.reader
    }

    fn fail(&mut self, err: Error) -> Poll<Option<Result<Request>>> {
        self.ended = true;
        Poll::Ready(Some(Err(err)))
    }
}

impl<S> BodyStream<StreamReader<S, Bytes>>
where
    S: Stream<Item = io::Result<Bytes>> + Unpin,
{
    /// The bodies of `plan`, with the file from a stream of byte buffers.
    pub fn from_stream(plan: UploadPlan, stream: S) -> Self {
        BodyStream::new(plan, StreamReader::new(stream))
    }
}

impl<R: AsyncRead + AsyncSeek + Unpin> BodyStream<R> {
    /// Starts over from chunk 0 (seed 001's rule after any error): seeks the source back
    /// to its start and restarts the plan.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the source cannot seek.
    pub async fn restart(&mut self) -> Result<()> {
        self.reader
            .seek(io::SeekFrom::Start(0))
            .await
            .map_err(|e| Error::io("seeking the file back to its start", e))?;
        self.plan.restart();
        self.start = 0;
        self.end = 0;
        self.eof = false;
        self.ended = false;
        Ok(())
    }
}

impl<R: AsyncRead + Unpin> Stream for BodyStream<R> {
    type Item = Result<Request>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            if this.start < this.end {
                match this.plan.write(&this.buf[this.start..this.end]) {
                    Ok(0) => {}
                    Ok(n) => {
                        this.start += n;
                        if let Some(progress) = &mut this.progress {
                            progress(this.plan.bytes_taken(), this.plan.file_size());
                        }
                    }
                    Err(e) => return this.fail(e),
                }
                if this.plan.input_complete() && this.start < this.end {
                    // Bytes past the declared size: the next write refuses them.
                    continue;
                }
            }
            // The last body waits until the source is known to have ended.
            let check_end = this.plan.input_complete() && !this.eof && this.start == this.end;
            if !check_end {
                match this.plan.poll() {
                    Err(e) => return this.fail(e),
                    Ok(Step::Send(request)) => return Poll::Ready(Some(Ok(request))),
                    Ok(Step::Done) => {
                        this.ended = true;
                        return Poll::Ready(None);
                    }
                    Ok(Step::NeedUploadId) => {
                        return Poll::Ready(Some(Err(Error::Chunk(
                            ChunkProblem::MissingUploadId { action: "resume" },
                        ))));
                    }
                    Ok(Step::NeedData) if this.start < this.end => continue,
                    Ok(Step::NeedData) if this.eof => {
                        if let Err(e) = this.plan.end() {
                            return this.fail(e);
                        }
                    }
                    Ok(Step::NeedData) => {}
                }
            }
            let mut read = ReadBuf::new(&mut this.buf);
            if let Err(e) = ready!(Pin::new(&mut this.reader).poll_read(cx, &mut read)) {
                return this.fail(Error::io("reading the file", e));
            }
            let n = read.filled().len();
            this.start = 0;
            this.end = n;
            this.eof = n == 0;
        }
    }
}

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

/// A source of the current time, for tests that move the clock.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

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
}

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
        }
    }

    /// Sets how long an attachment not carried by any message is kept
    /// (default [`UNLINKED_TTL`], 24 h as seed 002 documents).
    pub fn with_unlinked_ttl(mut self, ttl: Duration) -> Self {
        self.unlinked_ttl = ttl;
        self
    }

    /// Sets the session TTL.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Reads the time from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
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

    /// A single-request upload (Connectivity `POST .../attachments`): the body parsed with
    /// borrowed strings, checked, stored as one attachment. Returns the `attachment_id`.
    /// `scope` is recorded with the attachment (see [`AttachmentMeta::scope`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJson`]; what [`receive_single`] finds; [`Error::Io`] from the store.
    pub async fn single(&self, body: &[u8], scope: &str) -> Result<String> {
        let req: UploadRequest<'_> = crate::wire::from_slice(body)?;
        let a = &req.attachment;
        self.single_parts(
            &a.file_name,
            &a.file_type,
            a.file_size,
            a.file_content.as_bytes(),
            scope,
        )
        .await
    }

    /// A single-request upload from its parts (for the Demand API's flat body).
    ///
    /// # Errors
    ///
    /// As [`UploadReceiver::single`].
    pub async fn single_parts(
        &self,
        file_name: &str,
        file_type: &str,
        file_size: u64,
        file_content: &[u8],
        scope: &str,
    ) -> Result<String> {
        let now = (self.clock)();
        let (data, info) = receive_single(
            &self.policy,
            file_name,
            file_type,
            file_size,
            file_content,
            now,
        )?;
        let upload_id = random_id()?.to_string();
        let attachment_id = random_id()?.to_string();
        let meta = AttachmentMeta::new(&attachment_id, &info, scope);
        self.store.put_attachment(&upload_id, &meta, data).await?;
        Ok(attachment_id)
    }

    /// A file that arrives as a stream of byte pieces (a multipart part, a raw request
    /// body, an `AsyncRead` through `tokio_util::io::ReaderStream`), stored as it arrives:
    /// each piece goes through an [`Inspector`](crate::Inspector) (type, size limit,
    /// structure, SHA-256) and into a buffer that is written to the store as one chunk
    /// whenever it holds [`STREAM_CHUNK`] bytes. Memory stays at one chunk whatever the
    /// file's size. Returns the staged upload, which [`UploadReceiver::commit_staged`]
    /// turns into an attachment once the caller knows the rest of its metadata (in a
    /// multipart form, fields may follow the file).
    ///
    /// The declared `file_type` may be `application/octet-stream`: the recognised type is
    /// then the attachment's, checked as any other (an image gets its structural check).
    ///
    /// # Errors
    ///
    /// The file name's problems; [`Error::InvalidType`], [`Error::UnsupportedType`],
    /// [`Error::ActiveContent`] for the declaration; [`Error::TooLarge`] as soon as the
    /// stream passes the policy's limit; [`Error::TypeMismatch`] and the validator's errors;
    /// the stream's own errors (an `io::Error` becomes [`Error::Io`]); [`Error::Io`] from
    /// the store. The upload's stored
    /// bytes are released before any error is returned.
    ///
    /// # Examples
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use attachments::{Policy, store::{MemoryStore, Store}, stream::UploadReceiver};
    ///
    /// let store = Arc::new(MemoryStore::new());
    /// let receiver = UploadReceiver::new(Policy::chat(), store.clone());
    /// let pieces = ["%PDF-1.7\n", "1 0 obj\n", "%%EOF\n"]
    ///     .map(|p| Ok::<_, std::io::Error>(bytes::Bytes::from(p)));
    /// let staged = receiver
    ///     .receive_stream("invoice.pdf", "application/octet-stream", futures::stream::iter(pieces))
    ///     .await?;
    /// assert_eq!(staged.info().media_type.as_str(), "application/pdf");
    /// let meta = receiver.commit_staged(staged, "owner-1", |m| m.linked = true).await?;
    /// assert_eq!(store.metadata(&meta.id).await?.file_size, 23);
    /// # Ok::<(), attachments::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn receive_stream<S, E>(
        &self,
        file_name: &str,
        file_type: &str,
        body: S,
    ) -> Result<Staged>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        Error: From<E>,
    {
        self.policy.check_file_name(file_name)?;
        let mut inspector = crate::Inspector::new(&self.policy, file_type, None)?;
        let upload_id = random_id()?.to_string();
        let started = (self.clock)();
        self.store.begin_upload(&upload_id, started).await?;
        let stored = async {
            let mut body = std::pin::pin!(body);
            let mut buf = BytesMut::new();
            let (mut number, mut offset) = (0u64, 0u64);
            while let Some(piece) = body.next().await {
                let piece = piece?;
                inspector.update(&piece)?;
                let mut rest = &piece[..];
                while !rest.is_empty() {
                    if buf.capacity() == 0 {
                        buf.reserve(STREAM_CHUNK);
                    }
                    let take = rest.len().min(STREAM_CHUNK - buf.len());
                    buf.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if buf.len() == STREAM_CHUNK {
                        let chunk = buf.split().freeze();
                        let len = chunk.len() as u64;
                        self.store
                            .put_chunk(&upload_id, number, offset, chunk)
                            .await?;
                        (number, offset) = (number + 1, offset + len);
                    }
                }
            }
            let verdict = inspector.finish()?;
            if !buf.is_empty() || number == 0 {
                self.store
                    .put_chunk(&upload_id, number, offset, buf.freeze())
                    .await?;
            }
            Ok(crate::upload::AttachmentInfo {
                file_name: file_name.to_owned(),
                media_type: verdict.media_type,
                size: verdict.size,
                sha256: verdict.sha256,
                dimensions: verdict.info.dimensions,
                created: (self.clock)(),
            })
        }
        .await;
        match stored {
            Ok(info) => Ok(Staged { upload_id, info }),
            Err(e) => {
                let _ = self.store.abort(&upload_id).await;
                Err(e)
            }
        }
    }

    /// Commits a [`Staged`] upload as a new attachment in `scope`, with a time-ordered id
    /// ([`RandomId::time_ordered`]) so that a scope lists newest first; `fill` sets the
    /// rest of its metadata (conversation, message, linked) before the commit.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] from the store (the upload's bytes are then released).
    pub async fn commit_staged(
        &self,
        staged: Staged,
        scope: &str,
        fill: impl FnOnce(&mut AttachmentMeta),
    ) -> Result<AttachmentMeta> {
        let id = time_ordered_id(staged.info.created)?.to_string();
        let mut meta = AttachmentMeta::new(id, &staged.info, scope);
        fill(&mut meta);
        match self.store.commit(&staged.upload_id, &meta).await {
            Ok(()) => Ok(meta),
            Err(e) => {
                let _ = self.store.abort(&staged.upload_id).await;
                Err(e)
            }
        }
    }

    /// Releases a [`Staged`] upload's bytes (the request failed after the file).
    pub async fn abort_staged(&self, staged: Staged) {
        let _ = self.store.abort(&staged.upload_id).await;
    }

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

    /// One parsed chunk: `start` opens a session, `resume` / `finish` continue the one
    /// named by `upload_id`. Returns the response `data`: `upload_id` after `start`,
    /// `attachment_id` after `finish`.
    ///
    /// Stateless: the session lives in the store as a [`SessionRecord`]. Each chunk loads
    /// it, restores the [`UploadSession`], lets it judge the chunk, and saves it back with
    /// a conditional write naming the version it loaded *before* storing the chunk's bytes.
    /// So any process sharing the store can take the next chunk, and when two take the same
    /// upload at once only one save wins; the other loads the winner's record and judges
    /// again (an identical retry is then a [`Received::Repeat`], anything else is refused).
    ///
    /// # Errors
    ///
    /// What [`UploadSession::start`], [`UploadSession::restore`] and
    /// [`UploadSession::receive`] find; [`Error::UploadNotFound`] for an unknown id or one
    /// of another scope; [`Error::Contended`] when other requests kept winning the race;
    /// [`Error::Io`] from the store (the session then fails and its bytes are released).
    pub async fn chunk_request(&self, req: &ChunkAttachment<'_>, scope: &str) -> Result<ChunkData> {
        let now = (self.clock)();
        let Some(upload_id) = &req.upload_id else {
            return self.start(req, scope, now).await;
        };
        let not_found = || Error::UploadNotFound {
            upload_id: upload_id.clone(),
        };
        let id: RandomId = upload_id.parse().map_err(|_| not_found())?;
        let id = id.to_string();
        let number = req.chunk.chunk_number;
        let wait_until = tokio::time::Instant::now() + AHEAD_WAIT;
        let mut contended = 0;
        while contended < MAX_CONTENDED {
            // Registered before the load, so no save between the two is missed.
            let advanced = self.advanced.notified();
            tokio::pin!(advanced);
            advanced.as_mut().enable();
            let Some(stored) = self.store.load_session(&id).await? else {
                return Err(not_found());
            };
            let mut session = restore_session(&self.policy, &id, &stored.record)?;
            if session.scope() != scope {
                // Another party's upload answers exactly like a missing one.
                return Err(not_found());
            }
            let version = Some(stored.version.as_str());
            let next = session.next_number();
            if session.is_receiving()
                && session.failure().is_none()
                && number > next
                && number - next <= MAX_AHEAD
                && tokio::time::Instant::now() < wait_until
            {
                // A pipelining client sent this chunk before the earlier ones were
                // answered: wait for their turn (woken by this process's saves; another
                // process's are seen by polling).
                let _ = tokio::time::timeout(AHEAD_POLL, advanced).await;
                continue;
            }
            if let Some(expired) = session.expire_if_idle(now, self.ttl) {
                let save = self.save(&session, version, now);
                if save.await.is_ok() {
                    let _ = self.store.abort(&id).await;
                }
                return Err(expired);
            }
            let received = match session.receive(req, now) {
                Ok(received) => received,
                Err(e) => {
                    let just_failed = session.failure().is_some()
                        && !matches!(e, Error::UploadFailed { .. } | Error::UploadExpired { .. });
                    if just_failed {
                        let save = self.save(&session, version, now);
                        match save.await {
                            Err(Error::Contended { .. }) => {
                                contended += 1;
                                continue;
                            }
                            Err(store_err) => return Err(store_err),
                            Ok(_) => {
                                // Chunks waiting for their turn see the failure now.
                                self.advanced.notify_waiters();
                                let _ = self.store.abort(&id).await;
                            }
                        }
                    }
                    return Err(e);
                }
            };
            let mut data = ChunkData {
                attachment_id: None,
                upload_id: None,
                ok: OkFlag(true),
            };
            // Which attachment a `Recommit` takes over (the others choose one below).
            let again = match &received {
                Received::Recommit { attachment_id, .. } => Some(attachment_id.clone()),
                _ => None,
            };
            match received {
                Received::Chunk {
                    number,
                    offset,
                    data: bytes,
                } => {
                    let save = self.save(&session, version, now);
                    match save.await {
                        Err(Error::Contended { .. }) => {
                            contended += 1;
                            continue;
                        }
                        other => other?,
                    };
                    self.advanced.notify_waiters();
                    if let Err(e) = self.store.put_chunk(&id, number, offset, bytes).await {
                        return Err(self.fail(session, e, now).await);
                    }
                    self.advanced.notify_waiters();
                }
                Received::Last {
                    number,
                    offset,
                    data: bytes,
                    attachment,
                }
                | Received::Recommit {
                    number,
                    offset,
                    data: bytes,
                    attachment,
                    ..
                } => {
                    // The claim (as which attachment, since when) is saved first: a second
                    // `finish` now answers "busy", and if this request dies, a retry of
                    // `finish` after the lease commits in its place.
                    let attachment_id = match &again {
                        Some(id) => id.clone(),
                        None => random_id()?.to_string(),
                    };
                    if again.is_none() {
                        session.claim_commit(attachment_id.clone(), attachment.clone(), now);
                    }
                    let save = self.save(&session, version, now);
                    let committing = match save.await {
                        Err(Error::Contended { .. }) => {
                            contended += 1;
                            continue;
                        }
                        other => other?,
                    };
                    let meta = AttachmentMeta::new(&attachment_id, &attachment, scope);
                    let committed = async {
                        if again.is_some() && self.is_committed(&meta).await? {
                            return Ok(attachment_id.clone());
                        }
                        self.store.put_chunk(&id, number, offset, bytes).await?;
                        match self.commit_when_stored(&id, &meta, wait_until).await {
                            // The claim before this one committed meanwhile.
                            Err(Error::Taken { .. })
                                if again.is_some() && self.is_committed(&meta).await? => {}
                            other => other?,
                        }
                        Ok(attachment_id.clone())
                    }
                    .await;
                    match committed {
                        Ok(attachment_id) => {
                            session.committed(attachment_id.clone());
                            // Only this request may change a committing record: best effort.
                            let save = self.save(&session, Some(&committing), now);
                            let _ = save.await;
                            data.attachment_id = Some(attachment_id);
                        }
                        Err(e) => return Err(self.fail(session, e, now).await),
                    }
                }
                Received::Repeat {
                    number,
                    offset,
                    data: bytes,
                    attachment_id,
                    ..
                } => {
                    // Stored again: identical bytes, and it repairs a write an interrupted
                    // request left undone.
                    if let Some(bytes) = bytes {
                        self.store.put_chunk(&id, number, offset, bytes).await?;
                        self.advanced.notify_waiters();
                    }
                    data.attachment_id = attachment_id;
                }
            }
            return Ok(data);
        }
        Err(Error::Contended {
            what: "upload",
            id: id.clone(),
        })
    }

    async fn start(
        &self,
        req: &ChunkAttachment<'_>,
        scope: &str,
        now: SystemTime,
    ) -> Result<ChunkData> {
        let id = random_id()?;
        let (session, received) = UploadSession::start(&self.policy, id, req, now)?;
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
        let stored = async {
            save.await?;
            self.store.put_chunk(&upload_id, number, offset, data).await
        }
        .await;
        if let Err(e) = stored {
            return Err(self.fail(session, e, now).await);
        }
        Ok(ChunkData {
            attachment_id: None,
            upload_id: Some(upload_id),
            ok: OkFlag(true),
        })
    }

    /// Commits, waiting (until `wait_until`) while the stored chunks do not yet cover the
    /// file: with a pipelining client, an earlier chunk's write may still be under way
    /// when `finish` is judged (its session save came first, by design).
    async fn commit_when_stored(
        &self,
        id: &str,
        meta: &AttachmentMeta,
        wait_until: tokio::time::Instant,
    ) -> Result<()> {
        loop {
            let advanced = self.advanced.notified();
            tokio::pin!(advanced);
            advanced.as_mut().enable();
            match self.store.commit(id, meta).await {
                Err(Error::Incomplete { .. }) if tokio::time::Instant::now() < wait_until => {
                    let _ = tokio::time::timeout(AHEAD_POLL, advanced).await;
                }
                other => return other,
            }
        }
    }

    /// Whether the store holds `meta`'s attachment already, with its size and digest (a
    /// commit whose request died after the store took it).
    async fn is_committed(&self, meta: &AttachmentMeta) -> Result<bool> {
        match self.store.metadata(&meta.id).await {
            Ok(found) => Ok(found.file_size == meta.file_size
                && found.sha256 == meta.sha256
                && found.scope == meta.scope),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
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

    /// Ends `session` with the store error `e`: the failure is recorded (best effort: the
    /// record may have moved on) and the upload's bytes are released.
    async fn fail(&self, mut session: UploadSession, e: Error, now: SystemTime) -> Error {
        let id = session.id().to_string();
        session.fail(e.clone());
        if let Ok(Some(stored)) = self.store.load_session(&id).await {
            let save = self.save(&session, Some(&stored.version), now);
            let _ = save.await;
        }
        let _ = self.store.abort(&id).await;
        e
    }

    /// Sweeps the store, from one listing of it: uploads still receiving but idle past
    /// the session TTL expire (their stored bytes are released, and later chunks answer
    /// [`Error::UploadExpired`]); uploads that ended (finished, failed, expired) are
    /// removed, record included, once idle for two session TTLs; uploads without a
    /// session record (a streamed upload whose stream stopped, or a crash between the two
    /// writes of `start`) are removed once idle for one; attachments not carried by any
    /// message are removed after the unlinked TTL ([`UploadReceiver::with_unlinked_ttl`]),
    /// attachments whose record is damaged are moved aside ([`Expired::Damaged`]), and
    /// whatever else the store reports is removed. "Idle" counts every
    /// stored chunk and session save as activity. Returns how many uploads and attachments
    /// expired or were removed.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] from the store's listing. A single upload that cannot be read or
    /// removed is logged and skipped, so one bad record does not stop the sweep.
    pub async fn sweep(&self) -> Result<usize> {
        let now = (self.clock)();
        let before = |d: Duration| now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH);
        let expired = self
            .store
            .list_expired(before(self.ttl), before(self.unlinked_ttl))
            .await?;
        let mut count = 0;
        for item in expired {
            let done = match &item {
                Expired::Upload(id) => self.sweep_upload(id, now, before(self.ttl * 2)).await,
                other => self.store.remove(other).await.map(|()| true),
            };
            match done {
                Ok(true) => count += 1,
                Ok(false) => {}
                Err(e) => log_sweep_failure(&item, &e),
            }
        }
        Ok(count)
    }

    /// One idle upload of [`UploadReceiver::sweep`]: expired while receiving, removed once
    /// it ended before `ended_before` or when it has no record. Says whether it changed.
    async fn sweep_upload(
        &self,
        id: &str,
        now: SystemTime,
        ended_before: SystemTime,
    ) -> Result<bool> {
        let item = Expired::Upload(id.to_owned());
        let remove = || self.store.remove(&item);
        let Some(stored) = self.store.load_session(id).await? else {
            remove().await?;
            return Ok(true);
        };
        let record: SessionRecord = match serde_json::from_slice(&stored.record) {
            Ok(record) => record,
            Err(e) => {
                // Idle past its TTL and unreadable: nothing can continue it.
                let e = Error::corrupt(format!("the session record of upload {id}"), e.to_string());
                log_sweep_failure(&item, &e);
                remove().await?;
                return Ok(true);
            }
        };
        if !record.is_receiving() {
            if record.last_activity() < ended_before {
                remove().await?;
                return Ok(true);
            }
            return Ok(false);
        }
        let mut session = match UploadSession::restore(&self.policy, record) {
            Ok(session) => session,
            Err(e) => {
                log_sweep_failure(&item, &e);
                remove().await?;
                return Ok(true);
            }
        };
        if session.expire_if_idle(now, self.ttl).is_none() {
            return Ok(false);
        }
        // Lost to a chunk that arrived meanwhile: not idle after all.
        let save = self.save(&session, Some(&stored.version), now);
        if save.await.is_err() {
            return Ok(false);
        }
        self.store.abort(id).await?;
        Ok(true)
    }
}

/// A sweep step that failed: logged (where the crate logs), and the sweep goes on.
fn log_sweep_failure(item: &Expired, e: &Error) {
    #[cfg(feature = "server")]
    tracing::warn!(item = ?item, error = %e, "sweep skipped an item");
    #[cfg(not(feature = "server"))]
    let _ = (item, e);
}

/// How many times a chunk is judged again after losing a race for its session record.
const MAX_CONTENDED: usize = 8;

/// How far ahead of the expected chunk a chunk may arrive and wait for its turn (a
/// pipelining client sends a few chunks before the first is answered).
const MAX_AHEAD: u64 = 4;

/// How long such a chunk (or a `finish` whose earlier chunks are still being written)
/// waits before it is judged as it stands (out of order: the upload fails).
const AHEAD_WAIT: Duration = Duration::from_secs(10);

/// How often a waiting chunk looks at the store again, for saves by other processes.
const AHEAD_POLL: Duration = Duration::from_millis(20);

/// Parses and restores a stored session record.
fn restore_session(policy: &Policy, id: &str, record: &[u8]) -> Result<UploadSession> {
    let record: SessionRecord = serde_json::from_slice(record)
        .map_err(|e| Error::corrupt(format!("the session record of upload {id}"), e.to_string()))?;
    let session = UploadSession::restore(policy, record)?;
    // A record stored under another upload's key is not this upload's.
    if session.id().to_string() != id {
        return Err(crate::upload::bad_record(
            id,
            "the record is of another upload",
        ));
    }
    Ok(session)
}

/// A [`RandomId::time_ordered`] id for `now`, its random bits from the operating system,
/// and above every id this process made before: within one millisecond (or when the clock
/// steps back) the last id is counted up by a random step instead (RFC 9562, section
/// 6.2, method 2), so a process's attachments list in the order they were made.
pub(crate) fn time_ordered_id(now: std::time::SystemTime) -> Result<RandomId> {
    static LAST: std::sync::Mutex<Option<RandomId>> = std::sync::Mutex::new(None);
    let random = *random_id()?.as_bytes();
    let fresh = RandomId::time_ordered(crate::upload::unix_millis(now), random);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let id = match *last {
        Some(prev) if fresh <= prev => {
            let step = 1 + u64::from(u16::from_be_bytes([random[14], random[15]]));
            prev.counted_up(step).unwrap_or_else(|| {
                // The counter ran out: the next millisecond.
                let prev_ms = prev.unix_millis().unwrap_or(0);
                RandomId::time_ordered(prev_ms + 1, random)
            })
        }
        _ => fresh,
    };
    *last = Some(id);
    Ok(id)
}

/// 128 random bits from the operating system.
pub(crate) fn random_id() -> Result<RandomId> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::io_other("generating an id", io::ErrorKind::Other, e.to_string()))?;
    Ok(RandomId::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_ordered_ids_increase_within_one_millisecond_and_when_the_clock_steps_back() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_000);
        let mut last = time_ordered_id(t).unwrap();
        for i in 0..2_000u64 {
            // The same millisecond, then one that went back.
            let now = if i % 2 == 0 {
                t
            } else {
                t - Duration::from_millis(5)
            };
            let id = time_ordered_id(now).unwrap();
            assert!(id > last, "{id} after {last}");
            assert!(id.to_string() > last.to_string());
            assert!(id.unix_millis().is_some_and(|ms| ms >= 1_800_000_000_000));
            last = id;
        }
    }

    #[test]
    fn a_session_record_stored_under_another_id_is_refused() {
        let body = br#"{"attachment": {"action": "start", "file_name": "a.bin",
            "file_type": "application/octet-stream", "file_size": 4,
            "chunk": {"chunk_number": 0, "chunk_size": 3, "chunk_content": "AAAA"}}}"#;
        let req: crate::wire::connectivity::ChunkRequest<'_> =
            crate::wire::from_slice(body).unwrap();
        let mut policy_chunks = Policy::chat();
        policy_chunks.limits.max_single_size = 2;
        policy_chunks.limits.max_chunked_size = Some(10);
        policy_chunks.limits.max_chunk_size = 10;
        let id = RandomId::from_bytes([7; 16]);
        let (session, _) =
            UploadSession::start(&policy_chunks, id, &req.attachment, SystemTime::UNIX_EPOCH)
                .unwrap();
        let record = serde_json::to_vec(&session.save().unwrap()).unwrap();
        let own = id.to_string();
        assert!(restore_session(&policy_chunks, &own, &record).is_ok());
        let other = RandomId::from_bytes([8; 16]).to_string();
        let err = restore_session(&policy_chunks, &other, &record).unwrap_err();
        assert!(err.to_string().contains("another upload"), "{err}");
    }
}
