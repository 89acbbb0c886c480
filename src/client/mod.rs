//! HTTP clients for the Connectivity and Demand messaging APIs and for a chat platform's
//! attachments resource ([`ChatClient`]) (feature `client`, `reqwest` with rustls).
//!
//! The protocol work is the core's: [`UploadPlan`] / [`BodyStream`] build the request
//! bodies (checked, hashed and base64-encoded in one pass), the [`Downloader`] runs the
//! ranged download. This module sends requests, maps answers to [`Error`]s and applies
//! the rules of `docs/protocol.md`, *The client's side*:
//!
//! - single or chunked upload by size, falling back once to the other endpoint when the
//!   server answers a size error for the one picked;
//! - on a chunk error, start over from `start` (the Connectivity API's rule), once;
//! - retries with backoff on IO errors, 408, 429 (honouring `Retry-After`) and 5xx;
//! - ranged download with N ranges in flight, verified against size and SHA-256.
//!
//! # Examples
//!
//! ```no_run
//! # async fn demo() -> attachments::Result<()> {
//! use attachments::client::ConnectivityClient;
//! use attachments::download::DownloadOptions;
//!
//! let client = ConnectivityClient::new("https://supply-xml.booking.com")?
//!     .with_credentials("token", "affiliate-id")?;
//! let uploaded = client
//!     .upload_file(1234, "conv-1", "photo.jpg".as_ref(), |done, total| {
//!         eprintln!("{done}/{total}")
//!     })
//!     .await?;
//! client
//!     .post_message(1234, "conv-1", "Here is the photo", &[uploaded.attachment_id.clone()])
//!     .await?;
//! let mut out = tokio::fs::File::create("copy.jpg").await.unwrap();
//! client
//!     .download_to(1234, "conv-1", &uploaded.attachment_id, Some(uploaded.sha256),
//!                   DownloadOptions::default(), &mut out)
//!     .await?;
//! # Ok(())
//! # }
//! ```

mod chat;

use std::future::Future;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWrite};

use crate::codec::base64::{Decoder, encoded_len};
use crate::digest::Sha256Digest;
use crate::download::{DownloadOptions, Downloader, RangeSource, Verified};
use crate::error::{Error, Result};
use crate::idempotency::{self, IdempotencyKey};
use crate::policy::{Policy, UploadMode};
use crate::retry::RetryPolicy;
use crate::sniff::{SNIFF_LEN, detect};
use crate::stream::{BodyStream, read_body};
use crate::upload::{Request, RequestKind, Target, UploadPlan};
use crate::wire::connectivity::{ChunkAction, ChunkResponse, DownloadResponse, FileInfo};
use crate::wire::demand;
use crate::wire::{self, Id};

pub use chat::{ChatClient, ChatRanges, ChatUpload, Content};

/// Largest answer read for a request that carries no file.
const MAX_SMALL_ANSWER: usize = 1 << 20;

/// An uploaded attachment, as the client saw it go.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Uploaded {
    /// The id the server gave it.
    pub attachment_id: String,
    /// Bytes sent.
    pub size: u64,
    /// Their SHA-256.
    pub sha256: Sha256Digest,
    /// The type it was sent as.
    pub file_type: String,
    /// Whether it went in chunks.
    pub chunked: bool,
    /// Times the upload started over (a chunk error, a fallback to the other endpoint).
    pub restarts: u32,
}

/// The HTTP plumbing both clients share: base URL, credentials, retries, error mapping.
#[derive(Debug, Clone)]
struct Http {
    http: reqwest::Client,
    base: String,
    headers: HeaderMap,
    retry: RetryPolicy,
    /// Whether requests that create something carry an `Idempotency-Key`.
    idempotency_keys: bool,
}

impl Http {
    fn new(base_url: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("attachments/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| io_error("building the HTTP client", e))?;
        let base = base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::InvalidField {
                field: "base URL".into(),
                problem: format!("must start with http:// or https://, got {base_url:?}"),
            });
        }
        Ok(Http {
            http,
            base,
            headers: HeaderMap::new(),
            retry: RetryPolicy::default(),
            idempotency_keys: true,
        })
    }

    fn credentials(&mut self, token: &str, affiliate_id: &str) -> Result<()> {
        self.bearer(token)?;
        self.headers.insert(
            "x-affiliate-id",
            header_value(affiliate_id, "affiliate id")?,
        );
        Ok(())
    }

    /// Sends `Authorization: Bearer <token>` (marked sensitive, so it is not logged).
    fn bearer(&mut self, token: &str) -> Result<()> {
        let mut bearer = header_value(&format!("Bearer {token}"), "token")?;
        bearer.set_sensitive(true);
        self.headers.insert(AUTHORIZATION, bearer);
        Ok(())
    }

    /// Sends a request, retrying transient failures; returns the success body, read under
    /// `limit` bytes.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Bytes>,
        limit: usize,
    ) -> Result<Bytes> {
        self.retrying(path, || {
            self.send_once(method.clone(), path, body.clone(), limit, None)
        })
        .await
    }

    /// Posts `body` to `path`, a request that creates something (a message, an upload, a
    /// chunk): with a fresh `Idempotency-Key` that its retries repeat, so the server runs
    /// it once and answers the retries with the first answer. Without keys
    /// ([`ConnectivityClient::with_idempotency_keys`]), it is retried only when it was
    /// not processed ([`not_processed`]).
    async fn create(&self, path: &str, body: Bytes, limit: usize) -> Result<Bytes> {
        let key = self.new_key();
        let method = reqwest::Method::POST;
        self.retrying_if(
            path,
            |err| key.is_some() || not_processed(err),
            || {
                self.send_once(
                    method.clone(),
                    path,
                    Some(body.clone()),
                    limit,
                    key.as_ref(),
                )
            },
        )
        .await
    }

    /// A fresh key for one operation, if this client sends keys.
    fn new_key(&self) -> Option<IdempotencyKey> {
        self.idempotency_keys.then(IdempotencyKey::random)
    }

    /// Runs `attempt` until it succeeds or the retry policy gives up on its error.
    async fn retrying<T, F, Fut>(&self, path: &str, attempt_once: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.retrying_if(path, |_| true, attempt_once).await
    }

    /// As [`Http::retrying`], retrying only errors `may_retry` allows.
    async fn retrying_if<T, F, Fut>(
        &self,
        path: &str,
        may_retry: impl Fn(&Error) -> bool,
        mut attempt_once: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 1;
        loop {
            let err = match attempt_once().await {
                Ok(answer) => return Ok(answer),
                Err(e) if !may_retry(&e) => return Err(e),
                Err(e) => e,
            };
            let random = getrandom::u32().unwrap_or(u32::MAX / 2);
            match self.retry.delay(attempt, &err, random) {
                Some(wait) => {
                    tracing::debug!(%path, attempt, ?wait, error = %err, "retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                None => return Err(err),
            }
        }
    }

    async fn send_once(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Bytes>,
        limit: usize,
        key: Option<&IdempotencyKey>,
    ) -> Result<Bytes> {
        let mut req = self.request(method, path);
        if let Some(key) = key {
            req = req.header(
                idempotency::HEADER,
                header_value(&key.to_header_value(), "idempotency key")?,
            );
        }
        if let Some(body) = body {
            req = req
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body);
        }
        let resp = self.execute(req, path).await?;
        read_body(resp.bytes_stream(), limit).await
    }

    /// A request to `path` with the client's headers.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .headers(self.headers.clone())
    }

    /// Sends `req`; a success answer is returned unread, any other becomes
    /// [`Error::Remote`] with the message of its body.
    async fn execute(&self, req: reqwest::RequestBuilder, path: &str) -> Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| {
            let op = format!("sending {path}");
            if e.is_connect() {
                // No connection, so no byte of the request reached the server.
                Error::io_other(op, std::io::ErrorKind::NotConnected, e)
            } else {
                io_error(&op, e)
            }
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, std::time::SystemTime::now()));
        let answer = read_body(resp.bytes_stream(), MAX_SMALL_ANSWER).await?;
        Err(Error::Remote {
            status: status.as_u16(),
            message: error_message(&answer),
            retry_after,
        })
    }
}

/// Whether a request that failed with `err` was certainly not processed, so that sending
/// it again cannot repeat its effect: no connection was made, or the server refused it
/// unread (429, or 503: RFC 9110 15.6.4, it could not handle it).
fn not_processed(err: &Error) -> bool {
    match err {
        Error::Io(e) => e.kind() == std::io::ErrorKind::NotConnected,
        Error::Remote { status, .. } => matches!(status, 429 | 503),
        _ => false,
    }
}

/// A `Retry-After` value (RFC 9110 10.2.3) as a wait from `now`: delay-seconds, or an
/// HTTP-date (a date already past is no wait). `None` for anything else.
fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod retry_after_tests {
    use super::*;

    #[test]
    fn seconds_and_http_dates_are_read() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(retry_after(&later, now), Some(Duration::from_secs(90)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-1", now), None);
    }
}

fn header_value(value: &str, what: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(value).map_err(|_| Error::InvalidField {
        field: what.into(),
        problem: "holds characters an HTTP header cannot carry".into(),
    })
}

/// An [`Error::Io`] for a transport error (reqwest's), kept as the source.
fn io_error(op: &str, err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::io_other(op, std::io::ErrorKind::Other, err)
}

/// The message of an error answer: a Connectivity envelope's first error, a Demand error
/// body's first message, the chat flavour's `error.message`, or the start of the text.
fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Any {
        #[serde(default)]
        errors: Vec<serde_json::Value>,
        #[serde(default)]
        error: Option<crate::wire::chat::ErrorBody>,
    }
    let any = serde_json::from_slice::<Any>(body).ok();
    if let Some(chat) = any.as_ref().and_then(|a| a.error.as_ref()) {
        return chat.message.clone();
    }
    if let Some(any) = any
        && let Some(first) = any.errors.first()
    {
        let text = first.get("message").and_then(|m| {
            m.as_str()
                .or_else(|| m.get("message").and_then(|m| m.as_str()))
        });
        if let Some(text) = text {
            return text.to_owned();
        }
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    if text.is_empty() {
        "(empty body)".to_owned()
    } else {
        text.into_owned()
    }
}

/// Whether an answer refuses the file's size for the endpoint it was sent to: the cue to
/// try the other endpoint (`docs/protocol.md`, *The client's side*).
fn is_size_refusal(err: &Error) -> bool {
    match err {
        Error::Remote {
            status: 400 | 413,
            message,
            ..
        } => {
            let m = message.to_ascii_lowercase();
            (m.contains("size exceeds") && m.contains("limit"))
                || m.contains("too small for a chunked upload")
                || m.contains("too large for")
        }
        _ => false,
    }
}

/// The file's type from its first bytes.
async fn sniff_file(file: &mut tokio::fs::File, path: &Path) -> Result<String> {
    let mut head = vec![0u8; SNIFF_LEN];
    let mut got = 0;
    while got < head.len() {
        let n = file
            .read(&mut head[got..])
            .await
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    file.rewind()
        .await
        .map_err(|e| Error::io(format!("rewinding {}", path.display()), e))?;
    Ok(detect(&head[..got])
        .map(|t| t.to_string())
        .unwrap_or_else(|| "application/octet-stream".to_owned()))
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| Error::InvalidField {
            field: "file".into(),
            problem: format!("{} has no usable file name", path.display()),
        })
}

async fn open(path: &Path) -> Result<(tokio::fs::File, u64)> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| Error::io(format!("reading the size of {}", path.display()), e))?
        .len();
    Ok((file, size))
}

/// A client of the Connectivity (supply-xml) messaging API (`docs/protocol.md`,
/// *Connectivity*).
#[derive(Debug, Clone)]
pub struct ConnectivityClient {
    http: Http,
    policy: Policy,
    pipeline: usize,
}

impl ConnectivityClient {
    /// A client of the API at `base_url` (`https://supply-xml.booking.com`, or a sandbox).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidField`] for a URL that is not http(s); [`Error::Io`] when the TLS
    /// stack cannot start.
    pub fn new(base_url: &str) -> Result<Self> {
        Ok(ConnectivityClient {
            http: Http::new(base_url)?,
            policy: Policy::connectivity(),
            pipeline: 1,
        })
    }

    /// Sends `Authorization: Bearer <token>` and `X-Affiliate-Id` with every request.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidField`] for values an HTTP header cannot carry.
    pub fn with_credentials(mut self, token: &str, affiliate_id: &str) -> Result<Self> {
        self.http.credentials(token, affiliate_id)?;
        Ok(self)
    }

    /// Sets the retry policy (default [`RetryPolicy::default`]).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.http.retry = retry;
        self
    }

    /// Whether requests that create something (messages, uploads, chunks) carry an
    /// `Idempotency-Key` (default: yes), so that a retry after a lost answer is answered
    /// with the first answer instead of creating a second message or attachment. Without
    /// keys, such a request is retried only when it was certainly not processed (no
    /// connection was made, or a 429 or 503 answered it).
    pub fn with_idempotency_keys(mut self, on: bool) -> Self {
        self.http.idempotency_keys = on;
        self
    }

    /// Sends up to `depth` chunks of an upload before the first of them is answered
    /// (default 1: each chunk waits for the answer to the one before, the flow the
    /// Connectivity API's documentation describes; `docs/protocol.md`, *Pipelined chunks*).
    /// The sandbox server (and any server on this crate's `UploadReceiver`) lets a chunk
    /// that arrives early wait for its turn, so over a link with latency a depth of 2 to 4
    /// keeps the link busy. The depth is clamped to 1 ..= [`MAX_AHEAD`](crate::upload::MAX_AHEAD)
    /// (4), how far ahead such a server lets a chunk wait. Use more than 1 only with such a
    /// server: one that refuses an early chunk fails the upload (the client then starts
    /// over once, which fails the same way).
    ///
    /// # Examples
    ///
    /// ```
    /// use attachments::client::ConnectivityClient;
    ///
    /// let client = ConnectivityClient::new("http://127.0.0.1:8080")?.with_pipeline(2);
    /// # Ok::<(), attachments::Error>(())
    /// ```
    pub fn with_pipeline(mut self, depth: usize) -> Self {
        self.pipeline = depth.clamp(1, crate::upload::MAX_AHEAD as usize);
        self
    }

    /// Sets the policy files are checked against before sending (default
    /// [`Policy::connectivity`]).
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    fn conversation_path(property: u64, conversation: &str) -> String {
        format!(
            "/messaging/properties/{property}/conversations/{}",
            segment(conversation)
        )
    }

    /// Uploads the file at `path` (type sniffed from its content) to a conversation, in one
    /// request or in chunks by its size. `progress` gets the bytes the server has
    /// acknowledged and the total.
    ///
    /// # Errors
    ///
    /// What checking the file finds (before anything is sent when the declaration alone
    /// shows it, else before the last request); [`Error::Remote`] for the server's
    /// refusals; [`Error::Io`].
    pub async fn upload_file(
        &self,
        property: u64,
        conversation: &str,
        path: &Path,
        progress: impl FnMut(u64, u64) + Send,
    ) -> Result<Uploaded> {
        let (mut file, size) = open(path).await?;
        let file_type = sniff_file(&mut file, path).await?;
        let name = file_name(path)?;
        self.upload(
            property,
            conversation,
            &name,
            &file_type,
            size,
            file,
            progress,
        )
        .await
    }

    /// Uploads `size` bytes from `reader` (which must be at its start, and can seek back
    /// to it for a restart).
    ///
    /// # Errors
    ///
    /// As [`ConnectivityClient::upload_file`].
    #[allow(clippy::too_many_arguments)]
    pub async fn upload<R>(
        &self,
        property: u64,
        conversation: &str,
        file_name: &str,
        file_type: &str,
        size: u64,
        reader: R,
        mut progress: impl FnMut(u64, u64) + Send,
    ) -> Result<Uploaded>
    where
        R: tokio::io::AsyncRead + tokio::io::AsyncSeek + Unpin + Send,
    {
        let base = Self::conversation_path(property, conversation);
        let plan = UploadPlan::new(
            &self.policy,
            Target::Connectivity,
            file_name,
            file_type,
            size,
        )?;
        let mut mode = plan.mode();
        let mut bodies = BodyStream::new(plan, reader);
        let mut restarts = 0u32;
        let mut fell_back = false;
        let mut chunk_restarted = false;
        loop {
            match self.send_bodies(&base, &mut bodies, &mut progress).await {
                Ok(attachment_id) => {
                    // The plan releases the last body only once the file is accepted:
                    // without a verdict, the server named an attachment too early.
                    let inspection = bodies.plan().inspection().cloned();
                    let sha256 =
                        inspection
                            .map(|i| i.sha256)
                            .ok_or_else(|| Error::UnexpectedAnswer {
                                problem: "an attachment id before the whole file was sent".into(),
                            })?;
                    return Ok(Uploaded {
                        attachment_id,
                        size,
                        sha256,
                        file_type: file_type.to_owned(),
                        chunked: mode == UploadMode::Chunked,
                        restarts,
                    });
                }
                Err(e) if !fell_back && is_size_refusal(&e) => {
                    fell_back = true;
                    mode = match mode {
                        UploadMode::Single => UploadMode::Chunked,
                        UploadMode::Chunked => UploadMode::Single,
                    };
                    tracing::info!(error = %e, ?mode, "size refused: trying the other endpoint");
                    let plan = UploadPlan::new(
                        &self.policy,
                        Target::Connectivity,
                        file_name,
                        file_type,
                        size,
                    )?
                    .with_mode(mode)?;
                    bodies.restart().await?;
                    bodies = BodyStream::new(plan, bodies.into_inner());
                }
                Err(
                    e @ Error::Remote {
                        status: 400 | 404 | 409,
                        ..
                    },
                ) if mode == UploadMode::Chunked && !chunk_restarted => {
                    chunk_restarted = true;
                    tracing::info!(error = %e, "chunk refused: starting over with start");
                    bodies.restart().await?;
                }
                Err(e) => return Err(e),
            }
            restarts += 1;
            progress(0, size);
        }
    }

    /// Sends every body of `bodies`; returns the attachment id. The next body is built
    /// while earlier ones travel and are checked; from the second chunk on, up to
    /// `self.pipeline` chunks are in flight at once (1: each waits for the answer to the
    /// one before, as the Connectivity API's documentation describes; `docs/protocol.md`,
    /// *Pipelined chunks*).
    async fn send_bodies<R>(
        &self,
        base: &str,
        bodies: &mut BodyStream<R>,
        progress: &mut (impl FnMut(u64, u64) + Send),
    ) -> Result<String>
    where
        R: tokio::io::AsyncRead + Unpin + Send,
    {
        let total = bodies.plan().file_size();
        let mut in_flight = futures::stream::FuturesOrdered::new();
        // Answers that came while a body was being built, in order.
        let mut answered = std::collections::VecDeque::new();
        let mut ready: Option<Request> = None;
        let (mut awaiting_id, mut exhausted) = (false, false);
        let mut attachment_id = None;
        loop {
            while in_flight.len() + answered.len() < self.pipeline.max(1) && !awaiting_id {
                let Some(Request { kind, range, body }) = ready.take() else {
                    break;
                };
                let path = match kind {
                    RequestKind::Single => format!("{base}/attachments"),
                    RequestKind::Chunk { .. } => format!("{base}/attachment_chunks"),
                };
                awaiting_id = matches!(
                    kind,
                    RequestKind::Chunk {
                        action: ChunkAction::Start,
                        ..
                    }
                );
                let http = &self.http;
                in_flight.push_back(async move {
                    let answer = http.create(&path, body, MAX_SMALL_ANSWER).await;
                    (kind, range, answer)
                });
            }
            if ready.is_none() && !exhausted && !awaiting_id {
                // Build the next body while the requests in flight travel: both are polled
                // together, and answers that arrive meanwhile wait in `answered`.
                let mut build = std::pin::pin!(bodies.next());
                let built = loop {
                    if in_flight.is_empty() {
                        break build.await;
                    }
                    // The requests first: a request is handed to its connection before the
                    // build (which rarely yields) takes the thread.
                    match futures::future::select(in_flight.next(), build.as_mut()).await {
                        futures::future::Either::Left((answer, _)) => answered.extend(answer),
                        futures::future::Either::Right((built, _)) => break built,
                    }
                };
                match built {
                    Some(request) => ready = Some(request?),
                    None => exhausted = true,
                }
                continue;
            }
            let next = match answered.pop_front() {
                Some(answer) => Some(answer),
                None => in_flight.next().await,
            };
            let Some((kind, range, answer)) = next else {
                break;
            };
            let answer = match answer {
                Ok(answer) => answer,
                Err(e) => {
                    // A `finish` still in flight may have succeeded all the same (the
                    // earlier chunk's answer was lost, not its bytes): the server commits
                    // only a file whose every chunk it stored, so that answer settles it.
                    while let Some((kind, _, later)) = match answered.pop_front() {
                        Some(answer) => Some(answer),
                        None => in_flight.next().await,
                    } {
                        if let (RequestKind::Chunk { .. }, Ok(body)) = (kind, later)
                            && let Ok(resp) = wire::from_slice::<ChunkResponse>(&body)
                            && let Some(id) = resp.data.and_then(|d| d.attachment_id)
                        {
                            return Ok(id);
                        }
                    }
                    return Err(e);
                }
            };
            progress(range.end, total);
            match kind {
                RequestKind::Single => {
                    let resp: wire::connectivity::UploadResponse = wire::from_slice(&answer)?;
                    let data = resp.data.ok_or_else(|| missing("data"))?;
                    attachment_id = Some(data.attachment_id);
                }
                RequestKind::Chunk { action, .. } => {
                    let resp: ChunkResponse = wire::from_slice(&answer)?;
                    let data = resp.data.ok_or_else(|| missing("data"))?;
                    if action == ChunkAction::Start {
                        let id = data.upload_id.ok_or_else(|| missing("data.upload_id"))?;
                        bodies.set_upload_id(id);
                        awaiting_id = false;
                    }
                    if let Some(id) = data.attachment_id {
                        attachment_id = Some(id);
                    }
                }
            }
        }
        attachment_id.ok_or_else(|| missing("data.attachment_id after the last chunk"))
    }

    /// Posts a message with `content` carrying `attachment_ids` (which links them, so
    /// they are kept); returns the message id.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] (404 for an attachment of another conversation); [`Error::Io`].
    pub async fn post_message(
        &self,
        property: u64,
        conversation: &str,
        content: &str,
        attachment_ids: &[String],
    ) -> Result<String> {
        let body = serde_json::json!({
            "message": {"content": content, "attachment_ids": attachment_ids}
        });
        let answer = self
            .http
            .create(
                &Self::conversation_path(property, conversation),
                Bytes::from(body.to_string()),
                MAX_SMALL_ANSWER,
            )
            .await?;
        #[derive(Deserialize)]
        struct Posted {
            message_id: String,
        }
        let resp: wire::connectivity::Envelope<Posted> = wire::from_slice(&answer)?;
        Ok(resp.data.ok_or_else(|| missing("data"))?.message_id)
    }

    /// An attachment's name, type and size (`file_info`).
    ///
    /// # Errors
    ///
    /// [`Error::Remote`]; [`Error::Io`].
    pub async fn file_info(
        &self,
        property: u64,
        conversation: &str,
        attachment_id: &str,
    ) -> Result<FileInfo> {
        let path = format!(
            "{}/attachments/{}/file_info",
            Self::conversation_path(property, conversation),
            segment(attachment_id)
        );
        let answer = self
            .http
            .send(reqwest::Method::GET, &path, None, MAX_SMALL_ANSWER)
            .await?;
        let resp: wire::connectivity::FileInfoResponse = wire::from_slice(&answer)?;
        resp.data.ok_or_else(|| missing("data"))
    }

    /// The attachment as a [`RangeSource`] (`GET ...?from=&to=`), for a [`Downloader`].
    pub fn ranges(&self, property: u64, conversation: &str, attachment_id: &str) -> ConnRanges {
        ConnRanges {
            http: self.http.clone(),
            path: format!(
                "{}/attachments/{}",
                Self::conversation_path(property, conversation),
                segment(attachment_id)
            ),
        }
    }

    /// Downloads an attachment into `writer`: `file_info` for its size, then ranges with
    /// `options.in_flight()` requests at once, verified against the size and, when given,
    /// `sha256`.
    ///
    /// # Errors
    ///
    /// As [`Downloader::write_to`]; [`Error::Remote`] from `file_info`.
    pub async fn download_to<W: AsyncWrite + Unpin>(
        &self,
        property: u64,
        conversation: &str,
        attachment_id: &str,
        sha256: Option<Sha256Digest>,
        options: DownloadOptions,
        writer: &mut W,
    ) -> Result<Verified> {
        let info = self
            .file_info(property, conversation, attachment_id)
            .await?;
        let source = self.ranges(property, conversation, attachment_id);
        Downloader::new(source, info.file_size, sha256, options)
            .write_to(writer)
            .await
    }
}

/// A downloaded base64 payload, decoded into its own buffer (its size is bounded by the
/// answer's, which was read under a limit).
fn decode_payload(text: &[u8]) -> Result<Bytes> {
    let mut out = BytesMut::with_capacity(text.len() / 4 * 3 + 3);
    let mut decoder = Decoder::new();
    decoder.decode(text, &mut out)?;
    decoder.finish(&mut out)?;
    Ok(out.freeze())
}

fn missing(field: &str) -> Error {
    Error::InvalidJson {
        message: format!("the answer has no {field}"),
    }
}

/// One Connectivity attachment as a [`RangeSource`]; see [`ConnectivityClient::ranges`].
#[derive(Debug, Clone)]
pub struct ConnRanges {
    http: Http,
    path: String,
}

#[async_trait]
impl RangeSource for ConnRanges {
    async fn fetch(&self, range: Range<u64>) -> Result<Bytes> {
        // One attempt: the Downloader retries a range itself.
        let len = usize::try_from(range.end - range.start).unwrap_or(usize::MAX / 2);
        // An inclusive server sends one byte more; the envelope is small.
        let limit = encoded_len(len.saturating_add(1)).saturating_add(16 * 1024);
        let path = format!("{}?from={}&to={}", self.path, range.start, range.end);
        let answer = self
            .http
            .send_once(reqwest::Method::GET, &path, None, limit, None)
            .await?;
        let resp: DownloadResponse<'_> = wire::from_slice(&answer)?;
        let data = resp.data.ok_or_else(|| missing("data"))?;
        decode_payload(data.file_content.as_bytes())
    }
}

/// A client of the Demand API v3 messaging endpoints (`docs/protocol.md`, *Demand*).
#[derive(Debug, Clone)]
pub struct DemandClient {
    http: Http,
    policy: Policy,
}

/// A Demand API conversation: where an upload or a download belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemandConversation {
    /// The accommodation (property) id.
    pub accommodation: u64,
    /// The conversation id.
    pub conversation: String,
    /// The reservation id.
    pub reservation: Id,
}

/// The answer to [`DemandClient::send`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Sent {
    /// The new message's id.
    pub message_id: String,
    /// The conversation it went to (created by the first message of a reservation).
    pub conversation: String,
}

impl DemandClient {
    /// A client of the API at `base_url` (`https://demandapi.booking.com`, or a sandbox).
    ///
    /// # Errors
    ///
    /// As [`ConnectivityClient::new`].
    pub fn new(base_url: &str) -> Result<Self> {
        Ok(DemandClient {
            http: Http::new(base_url)?,
            policy: Policy::demand(),
        })
    }

    /// Sends the credentials with every request.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidField`] for values an HTTP header cannot carry.
    pub fn with_credentials(mut self, token: &str, affiliate_id: &str) -> Result<Self> {
        self.http.credentials(token, affiliate_id)?;
        Ok(self)
    }

    /// Sets the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.http.retry = retry;
        self
    }

    /// Whether requests that create something (messages, uploads, chunks) carry an
    /// `Idempotency-Key` (default: yes), so that a retry after a lost answer is answered
    /// with the first answer instead of creating a second message or attachment. Without
    /// keys, such a request is retried only when it was certainly not processed (no
    /// connection was made, or a 429 or 503 answered it).
    pub fn with_idempotency_keys(mut self, on: bool) -> Self {
        self.http.idempotency_keys = on;
        self
    }

    async fn post(&self, path: &str, body: Bytes, limit: usize) -> Result<Bytes> {
        self.http
            .send(
                reqwest::Method::POST,
                &format!("/3.1/messages/{path}"),
                Some(body),
                limit,
            )
            .await
    }

    /// Sends a message (`docs/protocol.md`, *Demand messages*); starts the reservation's
    /// conversation if needed.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`]; [`Error::Io`].
    pub async fn send(
        &self,
        accommodation: u64,
        reservation: &Id,
        content: &str,
        attachments: &[String],
    ) -> Result<Sent> {
        let body = serde_json::json!({
            "accommodation": accommodation,
            "reservation": reservation,
            "content": content,
            "attachments": attachments,
        });
        let answer = self
            .http
            .create(
                "/3.1/messages/send",
                Bytes::from(body.to_string()),
                MAX_SMALL_ANSWER,
            )
            .await?;
        let resp: demand::Response<Sent> = wire::from_slice(&answer)?;
        Ok(resp.data)
    }

    /// Uploads the file at `path` (at most 1 MiB: the Demand API has no chunks).
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] before anything is sent for a larger file; what checking the
    /// file finds; [`Error::Remote`]; [`Error::Io`].
    pub async fn upload_file(&self, to: &DemandConversation, path: &Path) -> Result<Uploaded> {
        let (mut file, size) = open(path).await?;
        let file_type = sniff_file(&mut file, path).await?;
        let target = Target::Demand {
            accommodation: to.accommodation,
            conversation: to.conversation.clone(),
            reservation: to.reservation.clone(),
        };
        let plan = UploadPlan::new(&self.policy, target, &file_name(path)?, &file_type, size)?;
        let mut bodies = BodyStream::new(plan, file);
        // Invariants of `UploadPlan` (no input reaches these): a panic is a bug here.
        let Some(request) = bodies.next().await else {
            unreachable!("a single-request plan gives its body or an error before it ends");
        };
        let request = request?;
        if let Some(extra) = bodies.next().await {
            extra?;
        }
        // The one body is released only once the Inspector accepted the file.
        let Some(sha256) = bodies.plan().inspection().map(|i| i.sha256) else {
            unreachable!("a single-request plan releases its body with the verdict");
        };
        let answer = self
            .http
            .create(
                "/3.1/messages/attachments/upload",
                request.body,
                MAX_SMALL_ANSWER,
            )
            .await?;
        let resp: demand::Response<demand::UploadData> = wire::from_slice(&answer)?;
        Ok(Uploaded {
            attachment_id: resp.data.attachment,
            size,
            sha256,
            file_type,
            chunked: false,
            restarts: 0,
        })
    }

    fn reference(to: &DemandConversation, attachment: &str) -> Bytes {
        let body = demand::AttachmentRef {
            conversation: to.conversation.clone(),
            accommodation: to.accommodation,
            attachment: attachment.to_owned(),
        };
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// An attachment's name, type and size.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`]; [`Error::Io`].
    pub async fn metadata(
        &self,
        to: &DemandConversation,
        attachment: &str,
    ) -> Result<demand::Metadata> {
        let answer = self
            .post(
                "attachments/metadata",
                Self::reference(to, attachment),
                MAX_SMALL_ANSWER,
            )
            .await?;
        let resp: demand::Response<demand::MetadataData> = wire::from_slice(&answer)?;
        Ok(resp.data.metadata)
    }

    /// Downloads a whole attachment (the Demand API has no ranges), checked against its
    /// metadata's size and, when given, `sha256`.
    ///
    /// # Errors
    ///
    /// [`Error::Piece`] for a wrong size or digest; [`Error::Remote`]; [`Error::Io`].
    pub async fn download(
        &self,
        to: &DemandConversation,
        attachment: &str,
        sha256: Option<Sha256Digest>,
    ) -> Result<(Bytes, Verified)> {
        let meta = self.metadata(to, attachment).await?;
        let size = usize::try_from(meta.file_size).unwrap_or(usize::MAX / 2);
        let limit = encoded_len(size.min(self.policy.limits.max_single_size as usize)) + 16 * 1024;
        let answer = self
            .post(
                "attachments/download",
                Self::reference(to, attachment),
                limit,
            )
            .await?;
        #[derive(Deserialize)]
        struct Data<'a> {
            #[serde(borrow)]
            file_content: wire::Base64Text<'a>,
        }
        let resp: demand::Response<Data<'_>> = wire::from_slice(&answer)?;
        let bytes = decode_payload(resp.data.file_content.as_bytes())?;
        let mut r = crate::download::Reassembler::new(meta.file_size, sha256);
        r.insert_response(0..meta.file_size, bytes.clone())?;
        while r.next_ready().is_some() {}
        let verified = r.finish()?;
        Ok((bytes, verified))
    }
}

/// What a path segment keeps as it is (RFC 3986 `unreserved`); every other byte of the
/// UTF-8 text is percent-encoded.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `value` as one URL path segment (RFC 3986 3.3): a `/`, `?`, `#`, `%`, space or non-ASCII
/// character in an id stays inside its segment and comes back as sent. Every client puts
/// ids into paths through this. (`.` and `..` alone, which a URL parser would resolve,
/// are written `%2E` and `%2E%2E`.)
pub(crate) fn segment(value: &str) -> String {
    match value {
        "." => "%2E".to_owned(),
        ".." => "%2E%2E".to_owned(),
        _ => percent_encoding::utf8_percent_encode(value, SEGMENT).to_string(),
    }
}

#[cfg(test)]
mod segment_tests {
    use super::segment;

    #[test]
    fn ids_stay_in_their_segment() {
        assert_eq!(segment("conv-1_a.b~"), "conv-1_a.b~");
        assert_eq!(segment("a/b?c#d%e f"), "a%2Fb%3Fc%23d%25e%20f");
        assert_eq!(segment("é"), "%C3%A9");
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(segment("+"), "%2B");
    }
}
