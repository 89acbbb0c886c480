//! The async shell of a ranged download (feature `async`): a [`Downloader`] keeps N range
//! requests in flight against a [`RangeSource`], retries failed ones with backoff, feeds
//! the [`Reassembler`] and hands the bytes out in order, to an `AsyncWrite`
//! ([`Downloader::write_to`], [`download_to_file`]) or as a `Stream`
//! ([`Downloader::into_stream`]).
//!
//! All protocol decisions (which range next, where a piece goes, what is missing, whether
//! the bytes are right) are the [`Reassembler`]'s and the [`RetryPolicy`]'s; this module
//! only awaits.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};

use super::reassemble::{
    Checkpoint, DEFAULT_OUT_OF_ORDER_CAP, DEFAULT_RANGE_SIZE, Placed, Reassembler, Verified,
};
use crate::digest::{Sha256, Sha256Digest};
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;
use crate::store::Store;

/// Where the bytes of one attachment come from, a range at a time: an HTTP client asking
/// `from` / `to`, a [`Store`], a test double.
///
/// `fetch` may return fewer bytes than asked (the downloader asks for the rest again) or
/// one more (a server that reads `to` as inclusive); the bytes are placed at
/// `range.start` either way.
#[async_trait]
pub trait RangeSource: Send + Sync {
    /// Fetches the bytes of `range` (end exclusive).
    ///
    /// # Errors
    ///
    /// Any [`Error`]; the ones [`Error::is_transient`] calls transient are retried.
    async fn fetch(&self, range: Range<u64>) -> Result<Bytes>;
}

#[async_trait]
impl<T: RangeSource + ?Sized> RangeSource for Arc<T> {
    async fn fetch(&self, range: Range<u64>) -> Result<Bytes> {
        (**self).fetch(range).await
    }
}

/// An attachment in a [`Store`], as a [`RangeSource`].
#[derive(Debug, Clone)]
pub struct StoreSource {
    store: Arc<dyn Store>,
    attachment_id: String,
}

impl StoreSource {
    /// The attachment `attachment_id` of `store`.
    pub fn new(store: Arc<dyn Store>, attachment_id: impl Into<String>) -> Self {
        StoreSource {
            store,
            attachment_id: attachment_id.into(),
        }
    }
}

#[async_trait]
impl RangeSource for StoreSource {
    async fn fetch(&self, range: Range<u64>) -> Result<Bytes> {
        self.store.read_range(&self.attachment_id, range).await
    }
}

/// How a [`Downloader`] works.
///
/// # Examples
///
/// ```
/// use attachments::download::DownloadOptions;
/// use attachments::retry::RetryPolicy;
///
/// let options = DownloadOptions::default()
///     .with_in_flight(8)
///     .with_range_size(512 * 1024)
///     .with_retry(RetryPolicy::new(3));
/// assert_eq!(options.in_flight(), 8);
/// // The out-of-order cap grows to fit every range in flight.
/// assert!(options.out_of_order_cap() >= 7 * 512 * 1024);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadOptions {
    range_size: u64,
    in_flight: usize,
    retry: RetryPolicy,
    cap: Option<u64>,
}

impl Default for DownloadOptions {
    /// Ranges of [`DEFAULT_RANGE_SIZE`], 4 in flight, the default [`RetryPolicy`], an
    /// out-of-order cap of [`DEFAULT_OUT_OF_ORDER_CAP`].
    fn default() -> Self {
        DownloadOptions {
            range_size: DEFAULT_RANGE_SIZE,
            in_flight: 4,
            retry: RetryPolicy::default(),
            cap: None,
        }
    }
}

impl DownloadOptions {
    /// Sets the bytes asked per request (at least 1).
    pub fn with_range_size(mut self, range_size: u64) -> Self {
        self.range_size = range_size.max(1);
        self
    }

    /// Sets how many requests run at once (at least 1).
    pub fn with_in_flight(mut self, n: usize) -> Self {
        self.in_flight = n.max(1);
        self
    }

    /// Sets when and how often a failed request is tried again.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the most bytes held ahead of the delivery point. It is raised to at least
    /// `(in_flight - 1) * range_size`, so that every request in flight has room.
    pub fn with_out_of_order_cap(mut self, cap: u64) -> Self {
        self.cap = Some(cap);
        self
    }

    /// Bytes asked per request.
    pub fn range_size(&self) -> u64 {
        self.range_size
    }

    /// Requests at once.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The retry policy.
    pub fn retry(&self) -> RetryPolicy {
        self.retry
    }

    /// The out-of-order cap in force.
    pub fn out_of_order_cap(&self) -> u64 {
        let room = (self.in_flight as u64 - 1).saturating_mul(self.range_size);
        self.cap.unwrap_or(DEFAULT_OUT_OF_ORDER_CAP).max(room)
    }
}

/// One request's outcome.
struct Attempt {
    range: Range<u64>,
    attempt: u32,
    result: Result<Bytes>,
}

/// Downloads one attachment from a [`RangeSource`]: up to
/// [`DownloadOptions::in_flight`] ranges at once, retried with backoff, reassembled,
/// verified.
///
/// - [`next`](Downloader::next) yields the bytes in order; [`finish`](Downloader::finish)
///   then checks size and SHA-256. [`checkpoint`](Downloader::checkpoint) gives, at any
///   point, the state to resume from after a restart (see [`Downloader::resume`]).
/// - [`write_to`](Downloader::write_to) and [`into_stream`](Downloader::into_stream)
///   do all of that for an `AsyncWrite` or as a `Stream`.
///
/// **Memory:** the reassembler's out-of-order cap bounds what is held, and no range is
/// requested unless it ends within the cap plus one range of the delivery point, so a
/// response never has to be dropped for lack of room. The bytes handed out are the
/// caller's.
///
/// Bytes handed out before the end are only known good once `finish` (or the end of the
/// stream without an error) has checked the digest.
///
/// # Examples
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use std::ops::Range;
/// use bytes::Bytes;
/// use attachments::download::{Downloader, DownloadOptions, RangeSource};
/// use attachments::digest::sha256;
///
/// struct Memory(Bytes);
///
/// #[async_trait::async_trait]
/// impl RangeSource for Memory {
///     async fn fetch(&self, range: Range<u64>) -> attachments::Result<Bytes> {
///         Ok(self.0.slice(range.start as usize..range.end as usize))
///     }
/// }
///
/// let file = Bytes::from(vec![42u8; 3_000_000]);
/// let options = DownloadOptions::default().with_in_flight(3);
/// let mut download = Downloader::new(
///     Memory(file.clone()),
///     file.len() as u64,
///     Some(sha256(&file)),
///     options,
/// );
/// let mut out = Vec::new();
/// let verified = download.write_to(&mut out).await?;
/// assert_eq!(out, file);
/// assert_eq!(verified.size, 3_000_000);
/// # Ok::<(), attachments::Error>(())
/// # }).unwrap();
/// ```
pub struct Downloader<S> {
    source: Arc<S>,
    reassembler: Reassembler,
    options: DownloadOptions,
    /// Ranges still to request, in file order (re-requests of short pieces go first).
    queue: VecDeque<Range<u64>>,
    running: FuturesUnordered<BoxFuture<'static, Attempt>>,
    /// Responses the reassembler answered `Wait`; inserted again once the delivery point
    /// has moved past `parked_at`.
    parked: Vec<(Range<u64>, Bytes)>,
    parked_at: u64,
    /// Set once an error has been handed out: the download is over.
    failed: bool,
}

impl<S> fmt::Debug for Downloader<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Downloader")
            .field("reassembler", &self.reassembler)
            .field("options", &self.options)
            .field("queued", &self.queue.len())
            .field("running", &self.running.len())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl<S: RangeSource + 'static> Downloader<S> {
    /// A download of `file_size` bytes from `source`, checked against `sha256` when given.
    pub fn new(
        source: S,
        file_size: u64,
        sha256: Option<Sha256Digest>,
        options: DownloadOptions,
    ) -> Self {
        let reassembler = Reassembler::new(file_size, sha256);
        Self::with_reassembler(source, reassembler, options)
    }

    /// A download that goes on from `checkpoint` (saved with [`Downloader::checkpoint`]
    /// or made with [`checkpoint_from_prefix`]): bytes before its offset are not fetched
    /// again, and the digest goes on from its state.
    ///
    /// # Errors
    ///
    /// [`Error::Resume`] when the checkpoint does not fit this file.
    pub fn resume(
        source: S,
        checkpoint: &Checkpoint,
        file_size: u64,
        sha256: Option<Sha256Digest>,
        options: DownloadOptions,
    ) -> Result<Self> {
        let reassembler = Reassembler::resume(checkpoint, file_size, sha256)?;
        Ok(Self::with_reassembler(source, reassembler, options))
    }

    fn with_reassembler(source: S, reassembler: Reassembler, options: DownloadOptions) -> Self {
        let reassembler = reassembler
            .with_cap(options.out_of_order_cap())
            .with_verify_window(options.range_size);
        let queue = split(
            reassembler.delivered()..reassembler.file_size(),
            options.range_size,
        )
        .collect();
        Downloader {
            source: Arc::new(source),
            reassembler,
            options,
            queue,
            running: FuturesUnordered::new(),
            parked: Vec::new(),
            parked_at: 0,
            failed: false,
        }
    }

    /// The bytes handed out so far: everything before this offset.
    pub fn delivered(&self) -> u64 {
        self.reassembler.delivered()
    }

    /// The attachment's size.
    pub fn file_size(&self) -> u64 {
        self.reassembler.file_size()
    }

    /// Bytes held ahead of the delivery point (never more than the cap).
    pub fn buffered(&self) -> u64 {
        self.reassembler.out_of_order_bytes()
    }

    /// The state to save, once the bytes handed out so far are written, to resume with
    /// [`Downloader::resume`] after a restart.
    pub fn checkpoint(&self) -> Checkpoint {
        self.reassembler.checkpoint()
    }

    /// The next bytes in order; `None` once every byte has been handed out (call
    /// [`Downloader::finish`] then) or after an error.
    ///
    /// Cancel-safe: dropping the future loses nothing, the requests in flight go on with
    /// the next call.
    ///
    /// # Errors
    ///
    /// [`Error::RetriesExhausted`] when a range failed as often as the retry policy
    /// allows, the source's error when it is not transient, [`Error::Piece`] when the
    /// source returned bytes that do not fit. The download is over after an error.
    pub async fn next(&mut self) -> Option<Result<Bytes>> {
        loop {
            if self.failed {
                return None;
            }
            if let Some(bytes) = self.reassembler.next_ready() {
                return Some(Ok(bytes));
            }
            if !self.parked.is_empty() && self.reassembler.delivered() > self.parked_at {
                for (range, bytes) in std::mem::take(&mut self.parked) {
                    if let Err(e) = self.place(range, bytes) {
                        return Some(Err(self.fail(e)));
                    }
                }
                continue;
            }
            if self.reassembler.is_complete() {
                return None;
            }
            self.launch();
            let Some(done) = self.running.next().await else {
                // Nothing in flight and nothing could start, yet bytes are missing: the
                // reassembler's gaps are then the whole truth, so they become the queue,
                // delivery point first (never expected, but a download must not hang).
                let gaps = self.reassembler.missing();
                if gaps.is_empty() {
                    return None;
                }
                self.queue = gaps
                    .into_iter()
                    .flat_map(|gap| split(gap, self.options.range_size))
                    .collect();
                continue;
            };
            let failure = match done.result {
                // An empty answer makes no progress: retried like a dropped connection.
                Ok(bytes) if bytes.is_empty() && !done.range.is_empty() => Error::io(
                    format!("fetching bytes {}..{}", done.range.start, done.range.end),
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the source returned no bytes",
                    ),
                ),
                Ok(bytes) => {
                    if let Err(e) = self.place(done.range, bytes) {
                        return Some(Err(self.fail(e)));
                    }
                    continue;
                }
                Err(e) => e,
            };
            if let Err(e) = self.retry(done.range, done.attempt, failure) {
                return Some(Err(self.fail(e)));
            }
        }
    }

    /// Checks that every byte arrived and was handed out, and the SHA-256 when known.
    ///
    /// # Errors
    ///
    /// [`PieceProblem::Incomplete`](crate::error::PieceProblem::Incomplete),
    /// [`PieceProblem::DigestMismatch`](crate::error::PieceProblem::DigestMismatch).
    pub fn finish(self) -> Result<Verified> {
        self.reassembler.finish()
    }

    /// Downloads everything into `writer`, flushes it, and verifies.
    ///
    /// To resume after a crash, save [`Downloader::checkpoint`] as you go by driving
    /// [`Downloader::next`] yourself, or re-hash the written prefix with
    /// [`checkpoint_from_prefix`] (as [`download_to_file`] does).
    ///
    /// # Errors
    ///
    /// As [`Downloader::next`] and [`Downloader::finish`]; [`Error::Io`] when writing fails.
    pub async fn write_to<W: AsyncWrite + Unpin>(mut self, writer: &mut W) -> Result<Verified> {
        while let Some(bytes) = self.next().await {
            writer
                .write_all(&bytes?)
                .await
                .map_err(|e| Error::io("writing the download", e))?;
        }
        writer
            .flush()
            .await
            .map_err(|e| Error::io("flushing the download", e))?;
        self.finish()
    }

    /// The bytes in order as a `Stream`. After the last bytes it checks size and SHA-256
    /// and yields an error as its last item when they are wrong; a stream that ends
    /// without an error delivered the verified file.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes>> + Send {
        futures::stream::unfold(Some(self), |state| async move {
            let mut download = state?;
            match download.next().await {
                Some(Ok(bytes)) => Some((Ok(bytes), Some(download))),
                Some(Err(e)) => Some((Err(e), None)),
                None if download.failed => None,
                None => download.finish().err().map(|e| (Err(e), None)),
            }
        })
    }

    /// Starts requests while there is a free slot and room for their bytes.
    fn launch(&mut self) {
        let horizon = self
            .reassembler
            .delivered()
            .saturating_add(self.options.out_of_order_cap())
            .saturating_add(self.options.range_size);
        while self.running.len() < self.options.in_flight {
            let Some(range) = self.queue.front() else {
                break;
            };
            // The range at the delivery point always goes, whatever its end.
            if range.end > horizon && range.start > self.reassembler.delivered() {
                break;
            }
            let range = self.queue.pop_front().unwrap_or_default();
            self.spawn(range, 1, None);
        }
    }

    /// Queues attempt number `attempt` at `range`, after `delay`.
    fn spawn(&mut self, range: Range<u64>, attempt: u32, delay: Option<std::time::Duration>) {
        let source = Arc::clone(&self.source);
        self.running.push(
            async move {
                if let Some(delay) = delay {
                    tokio::time::sleep(delay).await;
                }
                let result = source.fetch(range.clone()).await;
                Attempt {
                    range,
                    attempt,
                    result,
                }
            }
            .boxed(),
        );
    }

    /// Hands a response to the reassembler; a short one re-queues the rest of its range.
    fn place(&mut self, range: Range<u64>, bytes: Bytes) -> Result<()> {
        match self
            .reassembler
            .insert_response(range.clone(), bytes.clone())?
        {
            Placed::Taken {
                missing: Some(rest),
                ..
            } => self.queue.push_front(rest),
            Placed::Taken { .. } => {}
            Placed::Wait => {
                self.parked_at = self.reassembler.delivered();
                self.parked.push((range, bytes));
            }
        }
        Ok(())
    }

    /// Tries `range` again after `err`, or gives up.
    fn retry(&mut self, range: Range<u64>, attempt: u32, err: Error) -> Result<()> {
        // Jitter only spreads retries apart: any number will do if the OS has none.
        let random = getrandom::u32().unwrap_or(u32::MAX / 2);
        match self.options.retry.delay(attempt, &err, random) {
            Some(delay) => {
                self.spawn(range, attempt + 1, Some(delay));
                Ok(())
            }
            None if attempt > 1 => Err(Error::RetriesExhausted {
                range,
                attempts: attempt,
                last: Box::new(err),
            }),
            None => Err(err),
        }
    }

    fn fail(&mut self, err: Error) -> Error {
        self.failed = true;
        self.queue.clear();
        self.running = FuturesUnordered::new();
        self.parked.clear();
        err
    }
}

/// `range` in pieces of at most `size` (at least 1) bytes, in order.
fn split(range: Range<u64>, size: u64) -> impl Iterator<Item = Range<u64>> {
    let size = size.max(1);
    let mut at = range.start;
    std::iter::from_fn(move || {
        (at < range.end).then(|| {
            let end = at.saturating_add(size).min(range.end);
            let piece = at..end;
            at = end;
            piece
        })
    })
}

/// A checkpoint for a file whose first bytes are already written: reads `prefix` to its
/// end and hashes it, 64 KiB at a time. The checkpoint's offset is the prefix's length.
///
/// This is the alternative to saving [`Downloader::checkpoint`]: it costs one read of the
/// prefix and trusts that the prefix is the file's start (a wrong prefix is caught by the
/// digest check at the end, when the SHA-256 is known).
///
/// # Errors
///
/// [`Error::Resume`] when the prefix is longer than the file; [`Error::Io`].
pub async fn checkpoint_from_prefix<R: AsyncRead + Unpin>(
    prefix: &mut R,
    file_size: u64,
) -> Result<Checkpoint> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut offset = 0u64;
    loop {
        let n = prefix
            .read(&mut buf)
            .await
            .map_err(|e| Error::io("reading the downloaded prefix", e))?;
        if n == 0 {
            break;
        }
        offset += n as u64;
        if offset > file_size {
            return Err(Error::Resume {
                reason: format!(
                    "the bytes already written run past the attachment's {file_size} bytes; \
                     remove the partial file and download again"
                ),
            });
        }
        hasher.update(&buf[..n]);
    }
    Ok(Checkpoint::new(file_size, offset, &hasher))
}

/// Downloads into the file at `path`, resuming after the bytes it already holds (which
/// are re-hashed, see [`checkpoint_from_prefix`]), and syncs it to disk.
///
/// # Errors
///
/// As [`Downloader::write_to`] and [`checkpoint_from_prefix`].
pub async fn download_to_file<S: RangeSource + 'static>(
    source: S,
    path: &Path,
    file_size: u64,
    sha256: Option<Sha256Digest>,
    options: DownloadOptions,
) -> Result<Verified> {
    let io = |op: &str, e: std::io::Error| Error::io(format!("{op} {}", path.display()), e);
    let mut file = tokio::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .await
        .map_err(|e| io("opening", e))?;
    let checkpoint = checkpoint_from_prefix(&mut file, file_size).await?;
    file.seek(std::io::SeekFrom::Start(checkpoint.offset))
        .await
        .map_err(|e| io("seeking in", e))?;
    let download = Downloader::resume(source, &checkpoint, file_size, sha256, options)?;
    let verified = download.write_to(&mut file).await?;
    file.sync_all().await.map_err(|e| io("syncing", e))?;
    Ok(verified)
}
