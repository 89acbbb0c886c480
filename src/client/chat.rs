//! The client of the chat-platform attachments resource (`docs/protocol.md`, *Chat
//! attachments resource*): [`ChatClient`].

use std::ops::Range;
use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE, ETAG, HeaderValue, RANGE};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Http, MAX_SMALL_ANSWER, file_name, io_error, open, sniff_file};
use crate::digest::Sha256Digest;
use crate::download::http_range::parse_content_range;
use crate::download::{DownloadOptions, Downloader, RangeSource, Verified};
use crate::error::{Error, Result};
use crate::stream::read_body;
use crate::wire::chat::{Attachment, AttachmentList};

/// Bytes read from an upload's source at a time: 64 KiB (`ReaderStream`'s default of
/// 4 KiB made a 10 MiB upload 2,560 body pieces; measured with `benches/e2e.rs`).
const UPLOAD_READ: usize = 64 * 1024;

/// What to send with a file: its name, declared type, and where it belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChatUpload {
    /// The file name the server records.
    pub filename: String,
    /// The declared `Content-Type` of the file part; `None` sends
    /// `application/octet-stream`, which lets the server take the type it recognises.
    pub content_type: Option<String>,
    /// The conversation, if any.
    pub conversation_id: Option<String>,
    /// The message, if any.
    pub message_id: Option<String>,
}

impl ChatUpload {
    /// A file called `filename`, of no declared type, in no conversation.
    pub fn new(filename: impl Into<String>) -> Self {
        ChatUpload {
            filename: filename.into(),
            content_type: None,
            conversation_id: None,
            message_id: None,
        }
    }

    /// Declares the file's type.
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Uploads it to a conversation.
    pub fn with_conversation(mut self, conversation_id: impl Into<String>) -> Self {
        self.conversation_id = Some(conversation_id.into());
        self
    }

    /// Attaches it to a message.
    pub fn with_message(mut self, message_id: impl Into<String>) -> Self {
        self.message_id = Some(message_id.into());
        self
    }
}

/// An attachment's bytes as they arrive, from [`ChatClient::content`].
pub struct Content {
    /// The bytes this answer carries (all of the file, or the range asked for).
    pub range: Range<u64>,
    /// The file's whole size.
    pub file_size: u64,
    /// The file's type, as served.
    pub content_type: Option<String>,
    /// The SHA-256 the server gives as the `ETag`, when it is one.
    pub sha256: Option<Sha256Digest>,
    /// The bytes, as the server sends them.
    pub body: BoxStream<'static, Result<Bytes>>,
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Content")
            .field("range", &self.range)
            .field("file_size", &self.file_size)
            .field("content_type", &self.content_type)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// A client of a chat platform's attachments resource (`docs/protocol.md`, *Chat attachments
/// resource*): list, upload (streamed from any `AsyncRead`), retrieve, rename, delete, and
/// the bytes with HTTP ranges.
///
/// Requests are retried with backoff on 429 and 5xx, except an upload from a reader,
/// which cannot be read twice ([`ChatClient::upload_file`] reopens the file and is
/// retried).
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> attachments::Result<()> {
/// use attachments::client::{ChatClient, ChatUpload};
///
/// let client = ChatClient::new("https://api.protocol.chat")?.with_token("token")?;
/// let file = tokio::fs::File::open("invoice.pdf").await.unwrap();
/// let sent = client
///     .upload(file, ChatUpload::new("invoice.pdf").with_conversation("xgQQXg3hrtjh7AvZ"))
///     .await?;
/// let renamed = client.rename(&sent.id, "invoice (paid).pdf").await?;
/// let page = client.list(Some("xgQQXg3hrtjh7AvZ"), 10, None).await?;
/// assert_eq!(page.data[0].id, renamed.id);
/// let mut copy = tokio::fs::File::create("copy.pdf").await.unwrap();
/// let verified = client
///     .download_to(&sent.id, Default::default(), &mut copy)
///     .await?;
/// client.delete(&sent.id).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ChatClient {
    http: Http,
}

impl ChatClient {
    /// A client of the API at `base_url` (the address `/v1/attachments` is under).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidField`] for a URL that is not http(s); [`Error::Io`] when the TLS
    /// stack cannot start.
    pub fn new(base_url: &str) -> Result<Self> {
        Ok(ChatClient {
            http: Http::new(base_url)?,
        })
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidField`] for a token an HTTP header cannot carry.
    pub fn with_token(mut self, token: &str) -> Result<Self> {
        self.http.bearer(token)?;
        Ok(self)
    }

    /// Whether uploads carry an `Idempotency-Key` (default: yes), so that a retry after a
    /// lost answer gets the first answer instead of storing the file twice. Without keys,
    /// an upload is retried only when it was certainly not processed (no connection was
    /// made, or a 429 or 503 answered it).
    pub fn with_idempotency_keys(mut self, on: bool) -> Self {
        self.http.idempotency_keys = on;
        self
    }

    /// Sets the retry policy (default [`RetryPolicy::default`](crate::retry::RetryPolicy)).
    pub fn with_retry(mut self, retry: crate::retry::RetryPolicy) -> Self {
        self.http.retry = retry;
        self
    }

    /// One page of attachments, newest first: of `conversation_id` when given, at most
    /// `limit` (1 to 100), after the id `starting_after` (the last id of the previous
    /// page).
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] for the server's refusals; [`Error::InvalidJson`]; [`Error::Io`].
    pub async fn list(
        &self,
        conversation_id: Option<&str>,
        limit: usize,
        starting_after: Option<&str>,
    ) -> Result<AttachmentList> {
        let query = {
            let mut query = form_query();
            query.append_pair("limit", &limit.to_string());
            if let Some(c) = conversation_id {
                query.append_pair("conversation_id", c);
            }
            if let Some(after) = starting_after {
                query.append_pair("starting_after", after);
            }
            query.finish()
        };
        let path = format!("/v1/attachments?{query}");
        self.json(reqwest::Method::GET, &path, None).await
    }

    /// Every attachment (of `conversation_id` when given), newest first, fetched a page
    /// of `page_size` at a time as the stream is read.
    pub fn list_all<'a>(
        &'a self,
        conversation_id: Option<&'a str>,
        page_size: usize,
    ) -> BoxStream<'a, Result<Attachment>> {
        let pages = futures::stream::try_unfold(
            Some(None),
            move |cursor: Option<Option<String>>| async move {
                let Some(after) = cursor else {
                    return Ok::<_, Error>(None);
                };
                let page = self
                    .list(conversation_id, page_size, after.as_deref())
                    .await?;
                let next = match page.data.last() {
                    Some(last) if page.has_more => Some(Some(last.id.clone())),
                    _ => None,
                };
                let items = page.data.into_iter().map(Ok::<Attachment, Error>);
                Ok(Some((futures::stream::iter(items), next)))
            },
        );
        pages.try_flatten().boxed()
    }

    /// Uploads the bytes of `reader` as a `multipart/form-data` request, streamed: the
    /// file is never held whole in memory. Not retried (a reader cannot be read twice).
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] for the server's refusals (type, size, structure); [`Error::Io`].
    pub async fn upload<R>(&self, reader: R, upload: ChatUpload) -> Result<Attachment>
    where
        R: AsyncRead + Send + Sync + 'static,
    {
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
            reader,
            UPLOAD_READ,
        ));
        let form = form(reqwest::multipart::Part::stream(body), &upload)?;
        let mut req = self
            .http
            .request(reqwest::Method::POST, "/v1/attachments")
            .multipart(form);
        // Sent once (a reader cannot be read again), with a key all the same: a caller
        // that sends the same upload again after a lost answer may reuse it.
        if let Some(key) = self.http.new_key() {
            req = req.header(
                crate::idempotency::HEADER,
                super::header_value(&key.to_header_value(), "idempotency key")?,
            );
        }
        let resp = self.http.execute(req, "/v1/attachments").await?;
        crate::wire::from_slice(&read_body(resp.bytes_stream(), MAX_SMALL_ANSWER).await?)
    }

    /// Uploads the file at `path` (its type sniffed from its content, its size sent as the
    /// part's length), streamed, retried on 429 and 5xx by opening the file again.
    ///
    /// # Errors
    ///
    /// As [`ChatClient::upload`].
    pub async fn upload_file(
        &self,
        path: &Path,
        conversation_id: Option<&str>,
        message_id: Option<&str>,
    ) -> Result<Attachment> {
        let name = file_name(path)?;
        let key = self.http.new_key();
        let key_header = match &key {
            Some(key) => Some(super::header_value(
                &key.to_header_value(),
                "idempotency key",
            )?),
            None => None,
        };
        self.http
            .retrying_if(
                "/v1/attachments",
                |err| key.is_some() || super::not_processed(err),
                || async {
                    let (mut file, size) = open(path).await?;
                    let file_type = sniff_file(&mut file, path).await?;
                    let mut upload = ChatUpload::new(&name).with_content_type(file_type);
                    upload.conversation_id = conversation_id.map(str::to_owned);
                    upload.message_id = message_id.map(str::to_owned);
                    let body = reqwest::Body::wrap_stream(
                        tokio_util::io::ReaderStream::with_capacity(file, UPLOAD_READ),
                    );
                    let part = reqwest::multipart::Part::stream_with_length(body, size);
                    let mut req = self
                        .http
                        .request(reqwest::Method::POST, "/v1/attachments")
                        .multipart(form(part, &upload)?);
                    if let Some(value) = &key_header {
                        req = req.header(crate::idempotency::HEADER, value.clone());
                    }
                    let resp = self.http.execute(req, "/v1/attachments").await?;
                    crate::wire::from_slice(
                        &read_body(resp.bytes_stream(), MAX_SMALL_ANSWER).await?,
                    )
                },
            )
            .await
    }

    /// An attachment's metadata.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] (404 for an id this token may not see); [`Error::Io`].
    pub async fn get(&self, id: &str) -> Result<Attachment> {
        self.json(reqwest::Method::GET, &attachment_path(id), None)
            .await
    }

    /// Renames an attachment; returns it as it is now.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] (400 for a name the server refuses, 404); [`Error::Io`].
    pub async fn rename(&self, id: &str, filename: &str) -> Result<Attachment> {
        let body = form_query().append_pair("filename", filename).finish();
        self.json(
            reqwest::Method::PUT,
            &attachment_path(id),
            Some(Bytes::from(body)),
        )
        .await
    }

    /// Deletes an attachment, bytes and all.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] (404); [`Error::Io`].
    pub async fn delete(&self, id: &str) -> Result<()> {
        let path = attachment_path(id);
        self.http
            .retrying(&path, || async {
                let req = self.http.request(reqwest::Method::DELETE, &path);
                self.http.execute(req, &path).await.map(drop)
            })
            .await
    }

    /// The attachment's bytes, whole or `range`, as a stream read from the answer as it
    /// arrives. A range is asked with `Range: bytes=`; the answer must be exactly that
    /// range (`Content-Range` checked).
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] (404, 416 for a range past the end); [`Error::Io`];
    /// [`Error::UnexpectedAnswer`] for an answer without the headers a range needs, or
    /// with another range or more bytes than asked for.
    pub async fn content(&self, id: &str, range: Option<Range<u64>>) -> Result<Content> {
        self.content_tried(id, range, true).await
    }

    /// [`ChatClient::content`], its request retried under the client's policy when
    /// `retry`, else sent once (for a caller that retries itself, as the [`Downloader`]
    /// does: one layer retries, not two).
    ///
    /// [`Downloader`]: crate::download::Downloader
    async fn content_tried(
        &self,
        id: &str,
        range: Option<Range<u64>>,
        retry: bool,
    ) -> Result<Content> {
        let path = format!("{}/content", attachment_path(id));
        let once = || async {
            let mut req = self.http.request(reqwest::Method::GET, &path);
            if let Some(r) = &range {
                if r.is_empty() {
                    return Err(Error::InvalidField {
                        field: "range".into(),
                        problem: format!("{r:?} is empty; ask for at least one byte"),
                    });
                }
                req = req.header(RANGE, format!("bytes={}-{}", r.start, r.end - 1));
            }
            self.http.execute(req, &path).await
        };
        let resp = if retry {
            self.http.retrying(&path, once).await?
        } else {
            once().await?
        };
        let headers = resp.headers();
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let sha256 = text(ETAG).and_then(|t| t.trim_matches('"').parse().ok());
        let content_type = text(CONTENT_TYPE).map(str::to_owned);
        let (range, file_size) = match (&range, resp.status().as_u16()) {
            (Some(asked), 206) => {
                let got = text(CONTENT_RANGE)
                    .and_then(parse_content_range)
                    .ok_or_else(|| bad_answer("a 206 answer without a readable Content-Range"))?;
                if got.0 != *asked {
                    return Err(bad_answer(&format!(
                        "asked for bytes {asked:?}, the answer carries {:?}",
                        got.0
                    )));
                }
                got
            }
            (None, 200) => {
                let len = resp
                    .content_length()
                    .ok_or_else(|| bad_answer("a whole file without Content-Length"))?;
                (0..len, len)
            }
            (_, status) => {
                return Err(bad_answer(&format!(
                    "status {status} for {} request",
                    if range.is_some() {
                        "a range"
                    } else {
                        "a whole-file"
                    }
                )));
            }
        };
        let expected = range.end - range.start;
        let mut seen = 0u64;
        let body = resp
            .bytes_stream()
            .map(move |piece| {
                let piece = piece.map_err(|e| io_error("reading the attachment", e))?;
                seen += piece.len() as u64;
                if seen > expected {
                    return Err(bad_answer(&format!(
                        "more than the {expected} bytes announced"
                    )));
                }
                Ok(piece)
            })
            .boxed();
        Ok(Content {
            range,
            file_size,
            content_type,
            sha256,
            body,
        })
    }

    /// The attachment as a [`RangeSource`] (`Range: bytes=` requests), for a
    /// [`Downloader`].
    pub fn ranges(&self, id: &str) -> ChatRanges {
        ChatRanges {
            client: self.clone(),
            id: id.to_owned(),
        }
    }

    /// Downloads an attachment into `writer` by ranges, `options.in_flight()` at once,
    /// verified against its size and the SHA-256 the server gives as its `ETag`.
    ///
    /// # Errors
    ///
    /// As [`Downloader::write_to`]; [`Error::Remote`] from the metadata request.
    pub async fn download_to<W: AsyncWrite + Unpin>(
        &self,
        id: &str,
        options: DownloadOptions,
        writer: &mut W,
    ) -> Result<Verified> {
        let meta = self.get(id).await?;
        // The first byte's answer carries the ETag: the SHA-256 to verify against.
        let sha256 = if meta.file_size == 0 {
            None
        } else {
            self.content(id, Some(0..1)).await?.sha256
        };
        Downloader::new(self.ranges(id), meta.file_size, sha256, options)
            .write_to(writer)
            .await
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        form_body: Option<Bytes>,
    ) -> Result<T> {
        let answer = self
            .http
            .retrying(path, || async {
                let mut req = self.http.request(method.clone(), path);
                if let Some(body) = &form_body {
                    req = req
                        .header(
                            CONTENT_TYPE,
                            HeaderValue::from_static("application/x-www-form-urlencoded"),
                        )
                        .body(body.clone());
                }
                let resp = self.http.execute(req, path).await?;
                read_body(resp.bytes_stream(), MAX_SMALL_ANSWER).await
            })
            .await?;
        crate::wire::from_slice(&answer)
    }
}

/// One chat attachment as a [`RangeSource`]; see [`ChatClient::ranges`].
#[derive(Debug, Clone)]
pub struct ChatRanges {
    client: ChatClient,
    id: String,
}

#[async_trait]
impl RangeSource for ChatRanges {
    async fn fetch(&self, range: Range<u64>) -> Result<Bytes> {
        let len = usize::try_from(range.end - range.start).unwrap_or(usize::MAX);
        // Sent once: the Downloader retries a failed range itself.
        let content = self
            .client
            .content_tried(&self.id, Some(range), false)
            .await?;
        read_body(content.body, len).await
    }
}

fn form_query() -> form_urlencoded::Serializer<'static, String> {
    form_urlencoded::Serializer::new(String::new())
}

fn attachment_path(id: &str) -> String {
    format!("/v1/attachments/{}", super::segment(id))
}

fn form(part: reqwest::multipart::Part, upload: &ChatUpload) -> Result<reqwest::multipart::Form> {
    let part = part
        .file_name(upload.filename.clone())
        .mime_str(
            upload
                .content_type
                .as_deref()
                .unwrap_or("application/octet-stream"),
        )
        .map_err(|e| Error::InvalidField {
            field: "content_type".into(),
            problem: format!("is not a MIME type: {e}"),
        })?;
    let mut form = reqwest::multipart::Form::new();
    if let Some(c) = &upload.conversation_id {
        form = form.text("conversation_id", c.clone());
    }
    if let Some(m) = &upload.message_id {
        form = form.text("message_id", m.clone());
    }
    Ok(form.part("file", part))
}

fn bad_answer(problem: &str) -> Error {
    Error::UnexpectedAnswer {
        problem: problem.to_owned(),
    }
}
