//! The sandbox server (feature `server`): the Connectivity and Demand messaging APIs and a
//! chat platform's attachments resource over a [`Store`], as an `axum::Router` to mount in
//! a service or run with `attachments serve`.
//!
//! Paths (SPEC.md, seeds 000-002 and 004):
//!
//! - Connectivity, under `/messaging/properties/{property_id}/conversations/{conversation_id}`:
//!   `POST` (post a message), `POST /attachments`, `POST /attachment_chunks`,
//!   `GET /attachments/{attachment_id}?from=&to=`, `GET /attachments/{attachment_id}/file_info`.
//! - Demand, under `/3.1/messages/`: `attachments/upload`, `attachments/metadata`,
//!   `attachments/download`, `send`, `latest`, `latest/confirm`, `conversations`.
//! - The chat-platform resource (seed 003), under `/v1/attachments`: `GET` (list, newest
//!   first, `conversation_id` / `limit` / `starting_after`), `POST` (multipart upload,
//!   streamed into the store), `GET` / `PUT` (rename) / `DELETE /{id}`, and
//!   `GET /{id}/content` (the bytes, with HTTP `Range`). It needs only the bearer token;
//!   see [`ServerConfig::chat`] for its limits.
//!
//! Every lookup is scoped by property and conversation: an attachment or upload of another
//! conversation answers exactly like a missing one (404). With [`ServerConfig::credentials`]
//! set, every request needs `Authorization: Bearer <token>` and `X-Affiliate-Id`, else 401.
//! Bodies are read under a length limit before parsing; a per-client rate limit answers
//! 429 with `Retry-After`. The handlers hold no protocol logic: they read the body, call
//! the [`UploadReceiver`], the [`Store`] and the `download` writers, and write the
//! envelope.
//!
//! # Examples
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use attachments::server::{Sandbox, ServerConfig};
//! use attachments::store::MemoryStore;
//!
//! let sandbox = Sandbox::new(Arc::new(MemoryStore::new()), ServerConfig::default());
//! // Mount it in your own app, next to your routes:
//! let app = axum::Router::new().merge(sandbox.router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! tokio::spawn(sandbox.clone().sweep_every(std::time::Duration::from_secs(60)));
//! axum::serve(listener, app).await
//! # }
//! ```

mod chat;
mod messages;
mod rate;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::{Bytes, BytesMut};
use serde::Serialize;

pub use crate::store::MAX_MESSAGES;
pub use messages::{LATEST_LIMIT, MAX_CONFIRM_BODY, MAX_CONTENT, Message};
pub use rate::RateLimiter;

use crate::download::{RangeQuery, write_connectivity_download, write_demand_download};
use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::store::messages::{MAX_MESSAGE_PAGE, check_attachment_count};
use crate::store::{AttachmentMeta, Store, UNLINKED_TTL};
use crate::stream::ids::random_id;
use crate::stream::{UploadReceiver, max_body_len, read_body_sized};
use crate::upload::DEFAULT_SESSION_TTL;
use crate::wire::connectivity::{Envelope, FileInfo, UploadData};
use crate::wire::demand::{self, ErrorResponse};
use crate::wire::{self, OkFlag};

/// Largest body of a request that carries no file (messages, metadata and download
/// requests).
pub const MAX_SMALL_BODY: usize = 64 * 1024;

/// Credentials the server requires when configured (seed 002).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The bearer token.
    pub token: String,
    /// The `X-Affiliate-Id` value.
    pub affiliate_id: String,
}

/// How the sandbox behaves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// What the Connectivity endpoints accept (default [`Policy::connectivity`]).
    pub connectivity: Policy,
    /// What the Demand endpoints accept (default [`Policy::demand`]).
    pub demand: Policy,
    /// Required credentials; `None` lets every request in.
    pub credentials: Option<Credentials>,
    /// Requests a minute per client (by token, else by affiliate id); `None`: no limit.
    pub rate_per_minute: Option<u32>,
    /// How long an attachment no message carries is kept (default 24 h).
    pub unlinked_ttl: Duration,
    /// How long an idle chunked upload is kept (default [`DEFAULT_SESSION_TTL`]).
    pub session_ttl: Duration,
    /// What `/v1/attachments` accepts (default [`Policy::chat`]: any type recognised or
    /// declared, except active content, up to 25 MiB
    /// ([`DEFAULT_CHAT_MAX_SIZE`](crate::policy::DEFAULT_CHAT_MAX_SIZE)); images get the
    /// structural check).
    pub chat: Policy,
    /// The address `file_url` starts with (for instance `https://api.example.com`); by
    /// default `http://` and the request's `Host`.
    pub public_url: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            connectivity: Policy::connectivity(),
            demand: Policy::demand(),
            credentials: None,
            rate_per_minute: None,
            unlinked_ttl: UNLINKED_TTL,
            session_ttl: DEFAULT_SESSION_TTL,
            chat: Policy::chat(),
            public_url: None,
        }
    }
}

impl ServerConfig {
    /// Requires `token` and `affiliate_id` on every request.
    pub fn with_credentials(
        mut self,
        token: impl Into<String>,
        affiliate_id: impl Into<String>,
    ) -> Self {
        self.credentials = Some(Credentials {
            token: token.into(),
            affiliate_id: affiliate_id.into(),
        });
        self
    }

    /// Limits each client to `per_minute` requests a minute.
    pub fn with_rate(mut self, per_minute: u32) -> Self {
        self.rate_per_minute = Some(per_minute);
        self
    }

    /// Sets how long unlinked attachments are kept.
    pub fn with_unlinked_ttl(mut self, ttl: Duration) -> Self {
        self.unlinked_ttl = ttl;
        self
    }

    /// Sets how long idle chunked uploads are kept.
    pub fn with_session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl;
        self
    }

    /// Sets what `/v1/attachments` accepts.
    ///
    /// # Examples
    ///
    /// ```
    /// use attachments::{Policy, policy::MIB, server::ServerConfig};
    ///
    /// let config = ServerConfig::default().with_chat_policy(Policy::chat().with_max_size(200 * MIB));
    /// assert_eq!(config.chat.limits.max_file_size(), 200 * MIB);
    /// ```
    pub fn with_chat_policy(mut self, policy: Policy) -> Self {
        self.chat = policy;
        self
    }

    /// Sets the address `file_url` starts with.
    pub fn with_public_url(mut self, url: impl Into<String>) -> Self {
        self.public_url = Some(url.into());
        self
    }
}

/// The sandbox: its state and its router. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    config: ServerConfig,
    connectivity: UploadReceiver,
    demand: UploadReceiver,
    chat: UploadReceiver,
    limiter: Mutex<Option<RateLimiter>>,
    started: Instant,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("store", &self.inner.store)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Which API a request belongs to: decides the error body's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Connectivity,
    Demand,
    Chat,
}

impl Api {
    fn of(path: &str) -> Api {
        if path.starts_with("/3.1/") {
            Api::Demand
        } else if path == "/v1" || path.starts_with("/v1/") {
            Api::Chat
        } else {
            Api::Connectivity
        }
    }
}

/// The chat flavour's error body.
fn chat_error(status: u16, message: &str) -> crate::wire::chat::ErrorResponse {
    crate::wire::chat::ErrorResponse {
        error: crate::wire::chat::ErrorBody {
            status,
            message: message.to_owned(),
        },
    }
}

/// A failed request, written in its API's error shape.
struct Failure {
    api: Api,
    err: Error,
    retry_after: Option<Duration>,
}

impl Failure {
    fn conn(err: Error) -> Self {
        Failure {
            api: Api::Connectivity,
            err,
            retry_after: None,
        }
    }

    fn demand(err: Error) -> Self {
        Failure {
            api: Api::Demand,
            err,
            retry_after: None,
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = match (&self.err, self.api) {
            // HTTP's own status for a body over the limit, where no seed prescribes 400.
            (Error::TooLarge { .. }, Api::Chat) => StatusCode::PAYLOAD_TOO_LARGE,
            (e, _) => StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        };
        if status.is_server_error() {
            tracing::error!(error = %self.err, "request failed");
        } else {
            tracing::debug!(error = %self.err, %status, "request refused");
        }
        let id = new_id();
        let body = match self.api {
            Api::Connectivity => to_json(&Envelope::<()>::error(&self.err, id)),
            Api::Demand => to_json(&ErrorResponse::from_error(&self.err, Some(id))),
            Api::Chat => {
                let message = match &self.err {
                    Error::Unauthorized => {
                        "missing or wrong credentials: send Authorization: Bearer <token>".into()
                    }
                    e => e.wire_message(),
                };
                to_json(&chat_error(status.as_u16(), &message))
            }
        };
        let mut response = (status, json_headers(), body).into_response();
        if let Some(after) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&after.as_secs().max(1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

fn json_headers() -> [(header::HeaderName, HeaderValue); 1] {
    [(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )]
}

fn to_json<T: Serialize>(value: &T) -> Bytes {
    // Our own types always serialise (no maps with non-string keys, no failing Serialize).
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

fn ok_json<T: Serialize>(value: &T) -> Response {
    (StatusCode::OK, json_headers(), to_json(value)).into_response()
}

fn ok_bytes(body: BytesMut) -> Response {
    (StatusCode::OK, json_headers(), body.freeze()).into_response()
}

/// A fresh id for `ruid` / `request_id` / messages.
fn new_id() -> String {
    random_id().map(|id| id.to_string()).unwrap_or_default()
}

/// Who may read what: the property and conversation, one format for both APIs, so an
/// attachment uploaded through one API can be read through the other.
pub fn scope(property: u64, conversation: &str) -> String {
    format!("property/{property}/conversation/{conversation}")
}

fn parse_property(text: &str) -> Result<u64> {
    text.parse().map_err(|_| Error::InvalidField {
        field: "property_id".into(),
        problem: format!(
            "must be an integer, got {:?}",
            crate::error::shorten(text, 64)
        ),
    })
}

/// The scope of a Connectivity path: the property and the conversation, each checked.
fn conn_scope(property: &str, conversation: &str) -> Result<String> {
    let property = parse_property(property)?;
    wire::check_ref("conversation_id", conversation)?;
    Ok(scope(property, conversation))
}

/// The scope a Demand body names, its conversation checked.
fn demand_scope(accommodation: u64, conversation: &str) -> Result<String> {
    wire::check_ref("conversation", conversation)?;
    Ok(scope(accommodation, conversation))
}

type Reply = std::result::Result<Response, Failure>;

impl Sandbox {
    /// A sandbox over `store`.
    pub fn new(store: Arc<dyn Store>, config: ServerConfig) -> Self {
        let receiver = |policy: &Policy| {
            UploadReceiver::new(policy.clone(), Arc::clone(&store))
                .with_ttl(config.session_ttl)
                .with_unlinked_ttl(config.unlinked_ttl)
        };
        let inner = Inner {
            connectivity: receiver(&config.connectivity),
            demand: receiver(&config.demand),
            chat: receiver(&config.chat),
            limiter: Mutex::new(config.rate_per_minute.map(RateLimiter::new)),
            started: Instant::now(),
            store,
            config,
        };
        Sandbox {
            inner: Arc::new(inner),
        }
    }

    /// The store behind it.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The routes of the three APIs (Connectivity, Demand, the chat resource), with auth,
    /// rate limit and request logging.
    pub fn router(&self) -> Router {
        const CONV: &str = "/messaging/properties/{property_id}/conversations/{conversation_id}";
        const CHAT: &str = "/v1/attachments";
        Router::new()
            .route(
                CHAT,
                get(chat::list)
                    .post(chat::upload)
                    .layer(DefaultBodyLimit::max(chat::body_limit(self))),
            )
            .route(
                &format!("{CHAT}/{{id}}"),
                get(chat::retrieve).put(chat::rename).delete(chat::delete),
            )
            .route(&format!("{CHAT}/{{id}}/content"), get(chat::content))
            .route(CONV, post(conn_post_message))
            .route(&format!("{CONV}/attachments"), post(conn_upload))
            .route(&format!("{CONV}/attachment_chunks"), post(conn_chunk))
            .route(
                &format!("{CONV}/attachments/{{attachment_id}}"),
                get(conn_download),
            )
            .route(
                &format!("{CONV}/attachments/{{attachment_id}}/file_info"),
                get(conn_file_info),
            )
            .route("/3.1/messages/attachments/upload", post(demand_upload))
            .route("/3.1/messages/attachments/metadata", post(demand_metadata))
            .route("/3.1/messages/attachments/download", post(demand_download))
            .route("/3.1/messages/send", post(demand_send))
            .route(
                "/3.1/messages/latest",
                get(demand_latest).post(demand_latest),
            )
            .route("/3.1/messages/latest/confirm", post(demand_confirm))
            .route("/3.1/messages/conversations", post(demand_conversations))
            .fallback(not_found)
            .method_not_allowed_fallback(not_allowed)
            .layer(middleware::from_fn_with_state(self.clone(), guard))
            .with_state(self.clone())
    }

    /// Expires idle uploads and removes what outlived its TTL from the store (uploads a
    /// crash left behind, unlinked attachments). Returns how many were removed.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] from the store.
    pub async fn sweep(&self) -> Result<usize> {
        // One receiver sweeps for all: uploads are only ever chunked through Connectivity,
        // and the store is shared.
        self.inner.connectivity.sweep().await
    }

    /// Sweeps every `period`, forever (spawn it).
    pub async fn sweep_every(self, period: Duration) {
        let mut ticks = tokio::time::interval(period);
        loop {
            ticks.tick().await;
            match self.sweep().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "swept expired uploads and attachments"),
                Err(e) => tracing::warn!(error = %e, "sweep failed"),
            }
        }
    }

    async fn body(body: Body, limit: usize) -> Result<Bytes> {
        let announced = axum::body::HttpBody::size_hint(&body).lower();
        read_body_sized(body.into_data_stream(), limit, announced).await
    }

    /// The attachment's metadata, if it lies in `scope`; otherwise not found.
    async fn scoped(&self, attachment_id: &str, scope: &str) -> Result<AttachmentMeta> {
        match self.inner.store.metadata(attachment_id).await {
            Ok(meta) if meta.scope == scope => Ok(meta),
            Ok(_) => Err(not_found_attachment(attachment_id)),
            Err(e) => Err(e),
        }
    }

    /// Marks the attachments as carried by a message, after checking all of them.
    async fn link(&self, ids: &[String], scope: &str) -> Result<()> {
        for id in ids {
            wire::check_ref("attachment id", id)?;
        }
        for id in ids {
            self.scoped(id, scope).await?;
        }
        for id in ids {
            self.inner.store.set_linked(id, true).await?;
        }
        Ok(())
    }
}

fn not_found_attachment(id: &str) -> Error {
    Error::NotFound {
        what: "attachment",
        id: id.to_owned(),
    }
}

/// Auth, rate limit and a log line per request.
async fn guard(State(sandbox): State<Sandbox>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let api = Api::of(req.uri().path());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let fail = |err: Error, retry_after: Option<Duration>| {
        Failure {
            api,
            err,
            retry_after,
        }
        .into_response()
    };
    let headers = req.headers();
    let token = bearer(headers);
    let affiliate = headers
        .get("x-affiliate-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // The chat flavour authenticates by the bearer token alone (seed 003).
    let response = if let Some(expected) = &sandbox.inner.config.credentials
        && (token.as_deref() != Some(expected.token.as_str())
            || (api != Api::Chat && affiliate.as_deref() != Some(expected.affiliate_id.as_str())))
    {
        fail(Error::Unauthorized, None)
    } else {
        let key = token.or(affiliate).unwrap_or_default();
        let limited = sandbox
            .inner
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .and_then(|l| l.check(&key, sandbox.inner.started.elapsed()).err());
        match limited {
            Some(wait) => fail(
                Error::RateLimited {
                    retry_after_secs: wait.as_secs(),
                },
                Some(wait),
            ),
            None => next.run(req).await,
        }
    };
    tracing::info!(
        %method,
        %path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

async fn not_found(req: Request) -> Response {
    let api = Api::of(req.uri().path());
    Failure {
        api,
        err: Error::NotFound {
            what: "route",
            id: format!("{} {}", req.method(), req.uri().path()),
        },
        retry_after: None,
    }
    .into_response()
}

async fn not_allowed(req: Request) -> Response {
    Failure {
        api: Api::of(req.uri().path()),
        err: Error::MethodNotAllowed {
            method: req.method().to_string(),
            path: req.uri().path().to_owned(),
        },
        retry_after: None,
    }
    .into_response()
}

// ---- Connectivity ----

/// The scope and the body (read under the upload limit) of a Connectivity upload request.
async fn conn_upload_request(
    s: &Sandbox,
    property: &str,
    conversation: &str,
    body: Body,
) -> std::result::Result<(String, Bytes), Failure> {
    let scope = conn_scope(property, conversation).map_err(Failure::conn)?;
    let limit = max_body_len(&s.inner.config.connectivity);
    let body = Sandbox::body(body, limit).await.map_err(Failure::conn)?;
    Ok((scope, body))
}

async fn conn_upload(
    State(s): State<Sandbox>,
    Path((property, conversation)): Path<(String, String)>,
    body: Body,
) -> Reply {
    let (scope, body) = conn_upload_request(&s, &property, &conversation, body).await?;
    let attachment_id = s
        .inner
        .connectivity
        .single(&body, &scope)
        .await
        .map_err(Failure::conn)?;
    let data = UploadData {
        ok: OkFlag(true),
        attachment_id,
    };
    Ok(ok_json(&Envelope::ok(data, new_id())))
}

async fn conn_chunk(
    State(s): State<Sandbox>,
    Path((property, conversation)): Path<(String, String)>,
    body: Body,
) -> Reply {
    let (scope, body) = conn_upload_request(&s, &property, &conversation, body).await?;
    let data = s
        .inner
        .connectivity
        .chunk(&body, &scope)
        .await
        .map_err(Failure::conn)?;
    Ok(ok_json(&Envelope::ok(data, new_id())))
}

async fn conn_download(
    State(s): State<Sandbox>,
    Path((property, conversation, attachment_id)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Reply {
    let scope = conn_scope(&property, &conversation).map_err(Failure::conn)?;
    wire::check_ref("attachment_id", &attachment_id).map_err(Failure::conn)?;
    let query =
        RangeQuery::from_query_string(query.as_deref().unwrap_or("")).map_err(Failure::conn)?;
    let meta = s
        .scoped(&attachment_id, &scope)
        .await
        .map_err(Failure::conn)?;
    let range = query
        .resolve(meta.file_size, &s.inner.config.connectivity.limits)
        .map_err(Failure::conn)?;
    let bytes = s
        .inner
        .store
        .read_range(&attachment_id, range)
        .await
        .map_err(Failure::conn)?;
    let mut body = BytesMut::new();
    write_connectivity_download(&mut body, &attachment_id, &conversation, &new_id(), [bytes]);
    Ok(ok_bytes(body))
}

async fn conn_file_info(
    State(s): State<Sandbox>,
    Path((property, conversation, attachment_id)): Path<(String, String, String)>,
) -> Reply {
    let scope = conn_scope(&property, &conversation).map_err(Failure::conn)?;
    wire::check_ref("attachment_id", &attachment_id).map_err(Failure::conn)?;
    let meta = s
        .scoped(&attachment_id, &scope)
        .await
        .map_err(Failure::conn)?;
    let info = FileInfo {
        file_type: meta.file_type,
        file_name: meta.file_name,
        file_size: meta.file_size,
    };
    Ok(ok_json(&Envelope::ok(info, new_id())))
}

async fn conn_post_message(
    State(s): State<Sandbox>,
    Path((property, conversation)): Path<(String, String)>,
    body: Body,
) -> Reply {
    let scope = conn_scope(&property, &conversation).map_err(Failure::conn)?;
    let property = parse_property(&property).map_err(Failure::conn)?;
    let body = Sandbox::body(body, MAX_SMALL_BODY)
        .await
        .map_err(Failure::conn)?;
    let req: messages::ConnPostMessage = wire::from_slice(&body).map_err(Failure::conn)?;
    let m = req.message;
    messages::check_content(&m.content).map_err(Failure::conn)?;
    check_attachment_count(m.attachment_ids.len()).map_err(Failure::conn)?;
    s.link(&m.attachment_ids, &scope)
        .await
        .map_err(Failure::conn)?;
    let message = messages::new_message(property, conversation, None, m.content, m.attachment_ids)
        .map_err(Failure::conn)?;
    s.inner
        .store
        .post_message(&message)
        .await
        .map_err(Failure::conn)?;
    let data = messages::ConnPosted {
        ok: OkFlag(true),
        message_id: message.message_id,
    };
    Ok(ok_json(&Envelope::ok(data, new_id())))
}

// ---- Demand ----

async fn demand_upload(State(s): State<Sandbox>, body: Body) -> Reply {
    let limit = max_body_len(&s.inner.config.demand);
    let body = Sandbox::body(body, limit).await.map_err(Failure::demand)?;
    let req: demand::UploadRequest<'_> = wire::from_slice(&body).map_err(Failure::demand)?;
    let scope = demand_scope(req.accommodation, &req.conversation).map_err(Failure::demand)?;
    wire::check_ref("reservation", req.reservation.as_str()).map_err(Failure::demand)?;
    let attachment = s
        .inner
        .demand
        .single_parts(
            &req.file_name,
            &req.file_type,
            req.file_size,
            req.file_content.as_bytes(),
            &scope,
        )
        .await
        .map_err(Failure::demand)?;
    // The upload names the reservation's conversation, if it has none yet (SPEC.md, "A
    // reservation's conversation"): a send for the reservation then links it.
    s.inner
        .store
        .reservation_conversation(
            req.accommodation,
            req.reservation.as_str(),
            &req.conversation,
        )
        .await
        .map_err(Failure::demand)?;
    Ok(ok_json(&demand::Response {
        request_id: new_id(),
        data: demand::UploadData { attachment },
    }))
}

async fn demand_ref(s: &Sandbox, body: Body) -> std::result::Result<AttachmentMeta, Failure> {
    let body = Sandbox::body(body, MAX_SMALL_BODY)
        .await
        .map_err(Failure::demand)?;
    let req: demand::AttachmentRef = wire::from_slice(&body).map_err(Failure::demand)?;
    let scope = demand_scope(req.accommodation, &req.conversation).map_err(Failure::demand)?;
    wire::check_ref("attachment", &req.attachment).map_err(Failure::demand)?;
    s.scoped(&req.attachment, &scope)
        .await
        .map_err(Failure::demand)
}

async fn demand_metadata(State(s): State<Sandbox>, body: Body) -> Reply {
    let meta = demand_ref(&s, body).await?;
    Ok(ok_json(&demand::Response {
        request_id: new_id(),
        data: demand::MetadataData {
            metadata: demand::Metadata {
                file_size: meta.file_size,
                file_name: meta.file_name,
                file_type: meta.file_type,
            },
        },
    }))
}

async fn demand_download(State(s): State<Sandbox>, body: Body) -> Reply {
    let meta = demand_ref(&s, body).await?;
    // The Demand API has no ranges: the whole file, which its upload limit keeps small.
    let range = RangeQuery::default()
        .resolve(meta.file_size, &s.inner.config.demand.limits)
        .map_err(Failure::demand)?;
    let bytes = s
        .inner
        .store
        .read_range(&meta.id, range)
        .await
        .map_err(Failure::demand)?;
    let mut body = BytesMut::new();
    write_demand_download(&mut body, &new_id(), &meta.id, [bytes]);
    Ok(ok_bytes(body))
}

async fn demand_send(State(s): State<Sandbox>, body: Body) -> Reply {
    let body = Sandbox::body(body, MAX_SMALL_BODY)
        .await
        .map_err(Failure::demand)?;
    let req: messages::DemandSend = wire::from_slice(&body).map_err(Failure::demand)?;
    messages::check_content(&req.content).map_err(Failure::demand)?;
    wire::check_ref("reservation", req.reservation.as_str()).map_err(Failure::demand)?;
    let reservation = req.reservation.as_str().to_owned();
    check_attachment_count(req.attachments.len()).map_err(Failure::demand)?;
    let store = &s.inner.store;
    // Started by this message (seed 004) unless an upload or an earlier message gave the
    // reservation one.
    let conversation = store
        .reservation_conversation(req.accommodation, &reservation, &new_id())
        .await
        .map_err(Failure::demand)?;
    s.link(&req.attachments, &scope(req.accommodation, &conversation))
        .await
        .map_err(Failure::demand)?;
    let message = messages::new_message(
        req.accommodation,
        conversation,
        Some(reservation),
        req.content,
        req.attachments,
    )
    .map_err(Failure::demand)?;
    store
        .post_message(&message)
        .await
        .map_err(Failure::demand)?;
    Ok(ok_json(&demand::Response {
        request_id: new_id(),
        data: messages::DemandSent {
            message_id: message.message_id,
            conversation: message.conversation,
        },
    }))
}

async fn demand_latest(State(s): State<Sandbox>) -> Reply {
    let messages = s
        .inner
        .store
        .latest_messages(LATEST_LIMIT)
        .await
        .map_err(Failure::demand)?;
    Ok(ok_json(&demand::Response {
        request_id: new_id(),
        data: messages::Messages { messages },
    }))
}

async fn demand_confirm(State(s): State<Sandbox>, body: Body) -> Reply {
    let body = Sandbox::body(body, MAX_CONFIRM_BODY)
        .await
        .map_err(Failure::demand)?;
    let req: messages::Confirm = wire::from_slice(&body).map_err(Failure::demand)?;
    crate::store::messages::check_confirm_count(req.messages.total).map_err(Failure::demand)?;
    let confirmed = s
        .inner
        .store
        .confirm_messages(&req.messages.ids)
        .await
        .map_err(Failure::demand)?;
    Ok(ok_json(&demand::Response {
        request_id: new_id(),
        data: messages::Confirmed { confirmed },
    }))
}

async fn demand_conversations(State(s): State<Sandbox>, body: Body) -> Reply {
    let body = Sandbox::body(body, MAX_SMALL_BODY)
        .await
        .map_err(Failure::demand)?;
    let req: messages::ConversationQuery = wire::from_slice(&body).map_err(Failure::demand)?;
    wire::check_ref("conversation", &req.conversation).map_err(Failure::demand)?;
    wire::check_ref("reservation", req.reservation.as_str()).map_err(Failure::demand)?;
    // The oldest MAX_MESSAGE_PAGE messages: one bounded page.
    let messages = s
        .inner
        .store
        .conversation_messages(req.accommodation, &req.conversation, None, MAX_MESSAGE_PAGE)
        .await
        .map_err(Failure::demand)?;
    if messages.is_empty() {
        return Err(Failure::demand(Error::NotFound {
            what: "conversation",
            id: req.conversation,
        }));
    }
    Ok(ok_json(&demand::Response {
        request_id: new_id(),
        data: messages::History {
            conversation: req.conversation,
            messages,
        },
    }))
}
