//! The sandbox server (feature `server`): the Connectivity and Demand messaging APIs and a
//! chat platform's attachments resource over a [`Store`], as an `axum::Router` to mount in
//! a service or run with `attachments serve`.
//!
//! Paths (`docs/protocol.md`, *Routes*):
//!
//! - Connectivity, under `/messaging/properties/{property_id}/conversations/{conversation_id}`:
//!   `POST` (post a message), `POST /attachments`, `POST /attachment_chunks`,
//!   `GET /attachments/{attachment_id}?from=&to=`, `GET /attachments/{attachment_id}/file_info`.
//! - Demand, under `/3.1/messages/` and, as seed 000 prints them, `/messages/`:
//!   `attachments/upload`, `attachments/metadata`, `attachments/download`, `send`,
//!   `latest`, `latest/confirm`, `conversations`.
//! - The chat-platform resource (`docs/protocol.md`, *Chat attachments resource*), under
//!   `/v1/attachments`: `GET` (list, newest first, `conversation_id` / `limit` /
//!   `starting_after`), `POST` (multipart upload, streamed into the store), `GET` / `PUT`
//!   (rename) / `DELETE /{id}`, and `GET /{id}/content` (the bytes, with HTTP `Range`). It
//!   needs only the bearer token; see [`ServerConfig::chat`] for its limits.
//! - Resumable uploads that become chat attachments: tus 1.0 under
//!   [`ServerConfig::tus_path`] (`/files`) and the IETF draft -10 under
//!   [`ServerConfig::ietf_path`] (`/uploads`), in `resumable`.
//!
//! Every lookup is scoped by property and conversation: an attachment or upload of another
//! conversation answers exactly like a missing one (404). With [`ServerConfig::credentials`]
//! set, every request needs `Authorization: Bearer <token>` and `X-Affiliate-Id`, else 401.
//! Bodies are read under a length limit before parsing; a per-client rate limit answers
//! 429 with `Retry-After`. The handlers hold no protocol logic: they call the
//! [`UploadReceiver`], the [`Store`] and the `download` writers, and write the answer.
//!
//! One file per API flavour (`connectivity`, `demand`, `chat`, and `messages` for both
//! Booking APIs' messages), and what they share: `extract` (bodies read under their limit
//! and parsed, the Connectivity path's scope), `reply` (answers, and errors in each
//! flavour's shape), `guard` (credentials, rate limit, unknown routes), `rate`.
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
//! // With the peer's address, which the rate limit is keyed on.
//! let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
//! axum::serve(listener, app).await
//! # }
//! ```

/// Most expired idempotency keys one [`Sandbox::sweep`] removes: 10,000.
pub const SWEEP_KEYS: usize = 10_000;

mod budget;
mod chat;
mod connectivity;
mod demand;
mod extract;
mod guard;
mod idempotent;
mod listen;
mod messages;
mod quota;
mod rate;
mod reply;
mod resumable;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};

pub use crate::store::MAX_MESSAGES;
pub use extract::BUFFER_WAIT;
pub use guard::{DRAIN_MAX_BYTES, DRAIN_MAX_TIME, DRAINS_AT_ONCE};
pub use listen::{
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_CONNECTIONS, HTTP1_MAX_BUF, HTTP2_CONNECTION_WINDOW,
    HTTP2_KEEP_ALIVE, HTTP2_STREAM_WINDOW, ListenOptions, SHUTDOWN_DRAIN, serve,
};
pub use messages::{LATEST_LIMIT, MAX_CONFIRM_BODY, MAX_CONTENT, Message};
pub use quota::{
    DEFAULT_MAX_OPEN_UPLOADS, DEFAULT_MAX_STAGED, MAX_TRACKED_UPLOADS, QuotaLimit, QuotaRefusal,
    Quotas, UploadQuota,
};
pub use rate::RateLimiter;

use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::store::{AttachmentMeta, Store, UNLINKED_TTL};
use crate::stream::UploadReceiver;
use crate::upload::DEFAULT_SESSION_TTL;
use crate::wire;

/// Largest body of a request that carries no file (messages, metadata and download
/// requests).
pub const MAX_SMALL_BODY: usize = 64 * 1024;

/// Credentials the server requires when configured (`docs/protocol.md`, *Access and scope*).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The bearer token.
    pub token: String,
    /// The `X-Affiliate-Id` value.
    pub affiliate_id: String,
}

/// How many requests the sandbox handles at once by default: 256.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;

/// Bytes of request bodies buffered at once by default: 128 MiB.
pub const DEFAULT_MAX_BUFFERED: usize = 128 * 1024 * 1024;

/// Bytes of request bodies one client may have buffered at once by default: 32 MiB.
pub const DEFAULT_MAX_BUFFERED_PER_CLIENT: usize = DEFAULT_MAX_BUFFERED / 4;

/// How long a request body may pause between two pieces by default: 30 s.
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The hosts `file_url` may be built from by default: the loopback names, any port.
pub const DEFAULT_ALLOWED_HOSTS: &[&str] = &["localhost", "127.0.0.1", "[::1]"];

/// Where [`ServerConfig::tus_path`] mounts tus 1.0 by default: `/files`.
pub const DEFAULT_TUS_PATH: &str = "/files";

/// Where [`ServerConfig::ietf_path`] mounts the IETF resumable uploads by default:
/// `/uploads`.
pub const DEFAULT_IETF_PATH: &str = "/uploads";

/// Checks a mount path for [`ServerConfig::tus_path`] and [`ServerConfig::ietf_path`]:
/// absolute, no trailing `/`, segments of letters, digits, `-`, `_` and `.`, and clear of
/// the routes the sandbox serves itself (`/v1`, `/messaging`, `/messages`, `/3.1`).
///
/// # Errors
///
/// What is wrong with it, to show to whoever configured it.
///
/// # Examples
///
/// ```
/// use attachments::server::check_mount_path;
///
/// assert!(check_mount_path("/api/files").is_ok());
/// assert!(check_mount_path("files").is_err());
/// assert!(check_mount_path("/v1/attachments").is_err());
/// ```
pub fn check_mount_path(path: &str) -> std::result::Result<(), String> {
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or("").split('/').collect();
    let fine = path.starts_with('/')
        && segments.iter().all(|s| {
            !s.is_empty()
                && *s != "."
                && *s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        });
    if !fine {
        return Err(format!(
            "{path:?} is not a path like /files: absolute, no trailing /, segments of letters, digits, - _ ."
        ));
    }
    if ["v1", "messaging", "messages", "3.1"].contains(&segments[0]) {
        return Err(format!(
            "{path:?} is under a route the sandbox serves itself"
        ));
    }
    Ok(())
}

/// How long a request body read whole may take to arrive by default: 60 s.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// Requests a minute per client, counted before credentials are checked (refused
    /// ones count too); `None`: no limit. A client is its peer IP address (the server
    /// must be served with `into_make_service_with_connect_info::<SocketAddr>()`, as
    /// `attachments serve` is; without it every request shares one limit), or, behind a
    /// proxy, what [`ServerConfig::client_ip_header`] says.
    pub rate_per_minute: Option<u32>,
    /// A request header a trusted proxy in front of the server sets to the client's
    /// address (`X-Forwarded-For`, say): its last entry (of its last line), the one the
    /// proxy added, keys the rate limit and the upload quotas instead of the peer address. Set it only behind
    /// such a proxy: any client can send the header.
    pub client_ip_header: Option<axum::http::HeaderName>,
    /// How many requests are handled at once (default [`DEFAULT_MAX_IN_FLIGHT`], 256); one
    /// more is answered 503 with `Retry-After: 1` at once, never queued. With bodies of up
    /// to one chunk each, this also bounds the bytes buffered by requests in flight.
    pub max_in_flight: usize,
    /// Bytes of request bodies buffered at once, over all requests in flight (default
    /// [`DEFAULT_MAX_BUFFERED`], 128 MiB). A body read whole takes its announced length
    /// (or its limit, when it announces none) from this budget before it is read and gives
    /// it back when its handler is done; while there is no room it waits, unread, for at
    /// most [`BUFFER_WAIT`] (5 s; the waiting requests are bounded by the in-flight cap),
    /// then is answered 503 with `Retry-After: 1`. Chat uploads stream into the store a piece at a time and
    /// take nothing from it.
    pub max_buffered: usize,
    /// How much of [`ServerConfig::max_buffered`] one client (as the rate limit keys it)
    /// may hold at once (default [`DEFAULT_MAX_BUFFERED_PER_CLIENT`], 32 MiB, a quarter):
    /// a client that opens many bodies and sends them slowly waits on its own share and
    /// leaves the rest to others. A body larger than the share takes all of it.
    pub max_buffered_per_client: usize,
    /// How long a request body may pause between two pieces before the request is
    /// answered 408 and its connection closed (default [`DEFAULT_BODY_IDLE_TIMEOUT`],
    /// 30 s): a client that stops sending holds no connection and no buffer for longer.
    pub body_idle_timeout: Duration,
    /// What each client (its address, as the rate limit keys it) and each conversation
    /// may hold at once: open uploads and the bytes staged in them (default
    /// [`UploadQuota::default`]: 100 uploads, 256 MiB). A `start` or a chunk past it is
    /// answered 429 with `Retry-After`. Chunked uploads count from their `start` until they
    /// finish, fail or idle out; chat uploads while their body streams in. Counted by each
    /// server process: processes sharing a store each allow this much.
    pub upload_quota: UploadQuota,
    /// How long a request body read whole (a message, a metadata or download request,
    /// a base64 upload or chunk: at most [`MAX_SMALL_BODY`] bytes, or the policy's largest
    /// upload body) may take to arrive in all (default [`DEFAULT_BODY_TIMEOUT`], 60 s: 23
    /// kB/s for the largest Connectivity body). Past it, 408 and the connection is closed:
    /// a body that trickles a byte at a time, within the idle timeout each, is not held
    /// for hours. Chat multipart uploads stream into the store instead; the idle timeout
    /// and the upload quota bound them.
    pub body_timeout: Duration,
    /// How long an attachment no message carries is kept (default 24 h).
    pub unlinked_ttl: Duration,
    /// How long an idle chunked upload is kept (default [`DEFAULT_SESSION_TTL`]).
    pub session_ttl: Duration,
    /// What `/v1/attachments` accepts (default [`Policy::chat`]: any type recognised or
    /// declared, except active content, up to 25 MiB
    /// ([`DEFAULT_CHAT_MAX_SIZE`](crate::policy::DEFAULT_CHAT_MAX_SIZE)); images get the
    /// structural check).
    pub chat: Policy,
    /// Where the tus 1.0 endpoint is mounted (default [`DEFAULT_TUS_PATH`], `/files`):
    /// uploads are created at it and live at `<path>/<id>`. Its uploads follow
    /// [`ServerConfig::chat`] and become chat attachments of the bearer token's owner.
    pub tus_path: String,
    /// Where the IETF resumable-upload endpoint is mounted (default
    /// [`DEFAULT_IETF_PATH`], `/uploads`), as [`ServerConfig::tus_path`].
    pub ietf_path: String,
    /// The address `file_url` starts with (for instance `https://api.example.com`); it
    /// wins over [`ServerConfig::allowed_hosts`].
    pub public_url: Option<String>,
    /// Without a public URL, the hosts `file_url` may be built from: the request's host
    /// (HTTP/2 `:authority`, else `Host`) is used, after `http://`, when it matches an
    /// entry (`name` matches any port, `name:port` that port; case-insensitive), and a
    /// request naming another host is answered 421, so a forged `Host` never ends up in a
    /// link. Default [`DEFAULT_ALLOWED_HOSTS`], the loopback names; `attachments serve`
    /// adds the address it listens on.
    pub allowed_hosts: Vec<String>,
    /// The virus scanner every upload passes before it is committed (every flavour,
    /// single, chunked and streamed); `None`: no scan. See
    /// [`UploadReceiver::with_scanner`].
    pub scanner: Option<Arc<dyn crate::scan::Scanner>>,
    /// Commit unscanned (logging a warning for each) when the scanner is unavailable,
    /// instead of answering 503. Default: no (fail closed).
    pub scan_fail_open: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            connectivity: Policy::connectivity(),
            demand: Policy::demand(),
            credentials: None,
            rate_per_minute: None,
            client_ip_header: None,
            body_idle_timeout: DEFAULT_BODY_IDLE_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_buffered: DEFAULT_MAX_BUFFERED,
            max_buffered_per_client: DEFAULT_MAX_BUFFERED_PER_CLIENT,
            upload_quota: UploadQuota::default(),
            body_timeout: DEFAULT_BODY_TIMEOUT,
            unlinked_ttl: UNLINKED_TTL,
            session_ttl: DEFAULT_SESSION_TTL,
            chat: Policy::chat(),
            tus_path: DEFAULT_TUS_PATH.to_owned(),
            ietf_path: DEFAULT_IETF_PATH.to_owned(),
            public_url: None,
            allowed_hosts: DEFAULT_ALLOWED_HOSTS
                .iter()
                .map(|h| (*h).to_owned())
                .collect(),
            scanner: None,
            scan_fail_open: false,
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

    /// Limits each client (each peer address) to `per_minute` requests a minute.
    pub fn with_rate(mut self, per_minute: u32) -> Self {
        self.rate_per_minute = Some(per_minute);
        self
    }

    /// Keys the rate limit on the last entry of `header`, which a trusted proxy in front
    /// sets to the client's address ([`ServerConfig::client_ip_header`]).
    pub fn with_client_ip_header(mut self, header: axum::http::HeaderName) -> Self {
        self.client_ip_header = Some(header);
        self
    }

    /// Sets how many requests are handled at once ([`ServerConfig::max_in_flight`]).
    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
        self
    }

    /// Sets the bytes of request bodies buffered at once ([`ServerConfig::max_buffered`]).
    pub fn with_max_buffered(mut self, bytes: usize) -> Self {
        self.max_buffered = bytes.max(1024);
        self
    }

    /// Sets the bytes of request bodies one client may have buffered at once
    /// ([`ServerConfig::max_buffered_per_client`]).
    pub fn with_max_buffered_per_client(mut self, bytes: usize) -> Self {
        self.max_buffered_per_client = bytes.max(1024);
        self
    }

    /// Sets how long a request body may pause ([`ServerConfig::body_idle_timeout`]).
    pub fn with_body_idle_timeout(mut self, timeout: Duration) -> Self {
        self.body_idle_timeout = timeout;
        self
    }

    /// Sets how long a body read whole may take ([`ServerConfig::body_timeout`]).
    pub fn with_body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// Sets what each client and each conversation may hold at once
    /// ([`ServerConfig::upload_quota`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use attachments::server::{ServerConfig, UploadQuota};
    ///
    /// let quota = UploadQuota { max_open: 10, max_staged: 64 << 20 };
    /// let config = ServerConfig::default().with_upload_quota(quota);
    /// assert_eq!(config.upload_quota.max_open, 10);
    /// ```
    pub fn with_upload_quota(mut self, quota: UploadQuota) -> Self {
        self.upload_quota = quota;
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

    /// Adds a host `file_url` may be built from ([`ServerConfig::allowed_hosts`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use attachments::server::ServerConfig;
    ///
    /// let config = ServerConfig::default().with_allowed_host("files.example.com");
    /// assert!(config.allowed_hosts.iter().any(|h| h == "files.example.com"));
    /// ```
    pub fn with_allowed_host(mut self, host: impl Into<String>) -> Self {
        self.allowed_hosts.push(host.into());
        self
    }

    /// Scans every upload with `scanner` before it is committed; `fail_open` commits
    /// unscanned (logged) when the scanner is unavailable instead of answering 503.
    pub fn with_scanner(mut self, scanner: Arc<dyn crate::scan::Scanner>, fail_open: bool) -> Self {
        self.scanner = Some(scanner);
        self.scan_fail_open = fail_open;
        self
    }

    /// Mounts tus 1.0 at `path` instead of [`DEFAULT_TUS_PATH`] (an absolute path
    /// without a trailing `/`, such as `/api/files`).
    pub fn with_tus_path(mut self, path: impl Into<String>) -> Self {
        self.tus_path = path.into();
        self
    }

    /// Mounts the IETF resumable uploads at `path` instead of [`DEFAULT_IETF_PATH`].
    pub fn with_ietf_path(mut self, path: impl Into<String>) -> Self {
        self.ietf_path = path.into();
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
    /// Open uploads per client and per conversation ([`ServerConfig::upload_quota`]).
    quotas: Mutex<Quotas>,
    /// Provisional ids of uploads being opened, before the store names them.
    provisional: std::sync::atomic::AtomicU64,
    /// One permit per refused body being drained ([`guard::DRAINS_AT_ONCE`]).
    draining: Arc<tokio::sync::Semaphore>,
    /// One permit per request being handled ([`ServerConfig::max_in_flight`]).
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Request bodies buffered ([`ServerConfig::max_buffered`],
    /// [`ServerConfig::max_buffered_per_client`]).
    buffered: budget::Budget,
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

/// Who may read what: the property and conversation, one format for both APIs, so an
/// attachment uploaded through one API can be read through the other.
pub fn scope(property: u64, conversation: &str) -> String {
    format!("property/{property}/conversation/{conversation}")
}

impl Sandbox {
    /// A sandbox over `store`.
    pub fn new(store: Arc<dyn Store>, config: ServerConfig) -> Self {
        let receiver = |policy: &Policy| {
            let receiver = UploadReceiver::new(policy.clone(), Arc::clone(&store))
                .with_ttl(config.session_ttl)
                .with_unlinked_ttl(config.unlinked_ttl);
            match &config.scanner {
                Some(scanner) => receiver.with_scanner(Arc::clone(scanner), config.scan_fail_open),
                None => receiver,
            }
        };
        let inner = Inner {
            connectivity: receiver(&config.connectivity),
            demand: receiver(&config.demand),
            chat: receiver(&config.chat),
            limiter: Mutex::new(config.rate_per_minute.map(RateLimiter::new)),
            quotas: Mutex::new(Quotas::new(config.upload_quota, config.session_ttl)),
            provisional: std::sync::atomic::AtomicU64::new(0),
            in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight.max(1))),
            draining: Arc::new(tokio::sync::Semaphore::new(guard::DRAINS_AT_ONCE)),
            buffered: budget::Budget::new(config.max_buffered, config.max_buffered_per_client),
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
    /// rate limit and request logging. Serve it on a Tokio runtime with timers enabled
    /// (`#[tokio::main]` has them; a hand-built runtime needs `enable_time` or
    /// `enable_all`): request bodies run under the idle timeout.
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
            .merge(self.resumable_routes())
            .route(CONV, post(messages::conn_post))
            .route(&format!("{CONV}/attachments"), post(connectivity::upload))
            .route(
                &format!("{CONV}/attachment_chunks"),
                post(connectivity::chunk),
            )
            .route(
                &format!("{CONV}/attachments/{{attachment_id}}"),
                get(connectivity::download),
            )
            .route(
                &format!("{CONV}/attachments/{{attachment_id}}/file_info"),
                get(connectivity::file_info),
            )
            .merge(self.demand_routes("/3.1"))
            // As seed 000 prints them, without the version (SPEC, *Paths*).
            .merge(self.demand_routes(""))
            .fallback(guard::not_found)
            .method_not_allowed_fallback(guard::not_allowed)
            .layer(middleware::from_fn_with_state(self.clone(), guard::guard))
            .with_state(self.clone())
    }

    /// The Demand routes under `prefix`.
    /// tus at [`ServerConfig::tus_path`], the IETF draft at [`ServerConfig::ietf_path`].
    fn resumable_routes(&self) -> Router<Sandbox> {
        use axum::routing::{head, options};
        let config = &self.inner.config;
        let (tus, ietf) = (&config.tus_path, &config.ietf_path);
        let bad = [tus, ietf]
            .into_iter()
            .find_map(|p| check_mount_path(p).err())
            .or_else(|| (tus == ietf).then(|| "tus_path and ietf_path are the same".into()));
        if let Some(problem) = bad {
            // Not mounted rather than a panic in the router: their requests answer 404.
            tracing::error!(%problem, "resumable uploads not mounted");
            return Router::new();
        }
        Router::new()
            .route(
                tus,
                post(resumable::tus_create).options(resumable::tus_options),
            )
            .route(
                &format!("{tus}/{{id}}"),
                head(resumable::tus_head)
                    .patch(resumable::tus_patch)
                    .post(resumable::tus_override)
                    .delete(resumable::tus_delete)
                    .options(resumable::tus_options),
            )
            .route(
                ietf,
                post(resumable::ietf_create).options(resumable::ietf_options),
            )
            .route(
                &format!("{ietf}/{{id}}"),
                head(resumable::ietf_head)
                    .patch(resumable::ietf_patch)
                    .delete(resumable::ietf_delete)
                    .merge(options(resumable::ietf_options)),
            )
    }

    fn demand_routes(&self, prefix: &str) -> Router<Sandbox> {
        let at = |path: &str| format!("{prefix}/messages/{path}");
        Router::new()
            .route(&at("attachments/upload"), post(demand::upload))
            .route(&at("attachments/metadata"), post(demand::metadata))
            .route(&at("attachments/download"), post(demand::download))
            .route(&at("send"), post(messages::demand_send))
            .route(
                &at("latest"),
                get(messages::demand_latest).post(messages::demand_latest),
            )
            .route(&at("latest/confirm"), post(messages::demand_confirm))
            .route(&at("conversations"), post(messages::demand_conversations))
    }

    /// Expires idle uploads and removes what outlived its TTL from the store (uploads a
    /// crash left behind, unlinked attachments, idempotency keys past
    /// [`IDEMPOTENCY_TTL`](crate::idempotency::IDEMPOTENCY_TTL), at most [`SWEEP_KEYS`] of
    /// them a sweep). Returns how many were removed.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] from the store.
    pub async fn sweep(&self) -> Result<usize> {
        // One receiver sweeps for all: uploads are only ever chunked through Connectivity,
        // and the store is shared.
        let uploads = self.inner.connectivity.sweep().await?;
        let keys = self
            .inner
            .store
            .sweep_keys(std::time::SystemTime::now(), SWEEP_KEYS)
            .await?;
        Ok(uploads + keys)
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

    /// The attachment's metadata, if it lies in `scope`; otherwise not found. The id is
    /// looked up in its canonical form (lower-case, hyphenated), so an upper-cased id gets
    /// the same answer from every store (the memory store matched ids as text, the others
    /// parsed them), and one that is no id at all is not found everywhere.
    async fn scoped(&self, attachment_id: &str, scope: &str) -> Result<AttachmentMeta> {
        let canonical = attachment_id
            .parse::<crate::upload::RandomId>()
            .map_err(|_| not_found_attachment(attachment_id))?
            .to_string();
        match self.inner.store.metadata(&canonical).await {
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
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            found.push(self.scoped(id, scope).await?.id);
        }
        for id in &found {
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
