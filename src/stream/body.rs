//! The client's side of an upload as a stream: an [`UploadPlan`]'s request bodies, read
//! from a file, any `AsyncRead`, or a `Stream` of byte buffers.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::Stream;
use tokio::io::{AsyncRead, AsyncSeek, AsyncSeekExt, ReadBuf};
use tokio_util::io::StreamReader;

use crate::error::{ChunkProblem, Error, Result};
use crate::upload::{Request, Step, UploadPlan};

/// Bytes read from the source at a time.
const READ_BUF: usize = 64 * 1024;

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
    /// Starts over from chunk 0 (the Connectivity API's rule after any error;
    /// `docs/protocol.md`, *A failed or expired upload*): seeks the source back to its start
    /// and restarts the plan.
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
