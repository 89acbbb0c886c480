//! A file that arrives as a stream of pieces (the chat resource's multipart upload),
//! checked by an [`Inspector`](crate::Inspector) and stored in [`STREAM_CHUNK`]-byte
//! chunks as it comes, then committed once the rest of its metadata is known.

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

use super::UploadReceiver;
use crate::error::{Error, Result};
use crate::store::AttachmentMeta;
use crate::stream::ids::{random_id, time_ordered_id};
use crate::upload::AttachmentInfo;

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
    info: AttachmentInfo,
}

impl Staged {
    /// What the file turned out to be.
    pub fn info(&self) -> &AttachmentInfo {
        &self.info
    }
}

impl UploadReceiver {
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
            Ok(AttachmentInfo::accepted(file_name, verdict, (self.clock)()))
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
    /// ([`RandomId::time_ordered`](crate::upload::RandomId::time_ordered)) so that a scope lists newest first; `fill` sets the
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
        let scanned = self.scan_staged(&staged.upload_id, staged.info.size).await;
        let committed = match scanned {
            Ok(()) => self.store.commit(&staged.upload_id, &meta).await,
            Err(e) => Err(e),
        };
        match committed {
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
}
