//! What every request goes through before its handler: credentials, the rate limit and a
//! log line; and the answers for paths and methods no handler serves.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::Sandbox;
use super::quota::ClientKey;
use super::reply::{Api, error_response};
use crate::error::Error;

/// Longest client key taken from a proxy's header (an IPv6 address with a zone fits).
const MAX_CLIENT_KEY: usize = 64;

/// Rate limit, then credentials, and a log line per request. The limit comes first and is
/// keyed on the client's address, so wrong or fresh tokens neither escape it nor get
/// more tries.
pub(super) async fn guard(State(sandbox): State<Sandbox>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let api = Api::of(req.uri().path(), &sandbox.inner.config);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let fail = |err: Error| error_response(api, err);
    let config = &sandbox.inner.config;
    let client = client_key(&req, config.client_ip_header.as_ref());
    let limited = sandbox
        .inner
        .limiter
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
        .and_then(|l| l.check(&client, sandbox.inner.started.elapsed()).err());
    let mut req = req;
    req.extensions_mut().insert(ClientKey(client));
    let headers = req.headers();
    let token = bearer(headers);
    let affiliate = headers.get("x-affiliate-id").and_then(|v| v.to_str().ok());
    // The chat flavour authenticates by the bearer token alone (`docs/protocol.md`, *Access
    // and scope*).
    let refused = config.credentials.as_ref().is_some_and(|expected| {
        !same(token.as_deref(), &expected.token)
            || (matches!(api, Api::Connectivity | Api::Demand)
                && !same(affiliate, &expected.affiliate_id))
    });
    // A body that pauses longer than the idle timeout fails its read with `BodyIdle`,
    // which the extractors answer 408.
    let idle = config.body_idle_timeout;
    let timed = |body| {
        let timed = tower_http::timeout::TimeoutBody::new(idle, body);
        axum::body::Body::new(http_body_util::BodyExt::map_err(timed, move |e| {
            if e.is::<tower_http::timeout::TimeoutError>() {
                Box::new(BodyIdle { idle }) as axum::BoxError
            } else {
                e
            }
        }))
    };
    let (parts, body) = req.into_parts();
    let hint = axum::body::HttpBody::size_hint(&body);
    let (body, rest) = Shared::new(timed(body), hint);
    let req = Request::from_parts(parts, axum::body::Body::new(body));
    let response = if let Some(wait) = limited {
        fail(Error::RateLimited {
            retry_after_secs: wait.as_secs().max(1),
        })
    } else if refused {
        fail(Error::Unauthorized)
    } else {
        // A place among the requests in flight, or 503 at once: never a queue.
        match Arc::clone(&sandbox.inner.in_flight).try_acquire_owned() {
            Ok(_permit) => {
                let response = next.run(req).await;
                // Not after a timeout: that body is not coming. Not after a 503 either:
                // draining the bodies of shed requests would spend, under overload, what
                // shedding them saves. The answer goes out at once; the drain runs beside
                // it, at most DRAINS_AT_ONCE of them (past that, the body is left unread
                // and the connection closed).
                let status = response.status();
                if status.is_client_error()
                    && status != StatusCode::REQUEST_TIMEOUT
                    && !rest.is_done()
                    && let Ok(place) = Arc::clone(&sandbox.inner.draining).try_acquire_owned()
                {
                    tokio::spawn(async move {
                        rest.drain().await;
                        drop(place);
                    });
                }
                response
            }
            Err(_) => fail(Error::Overloaded {
                in_flight: config.max_in_flight,
            }),
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

/// Most bytes of a refused request's body read and dropped so that its client sees the
/// answer (see [`Rest::drain`]).
pub const DRAIN_MAX_BYTES: u64 = 32 * 1024 * 1024;

/// Longest time spent reading and dropping a refused request's body.
pub const DRAIN_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Refused bodies drained at once, at most: 64.
pub const DRAINS_AT_ONCE: usize = 64;

/// A request body the handler reads while the guard keeps a handle on it: what the
/// handler left unread can be drained after it answers.
///
/// It also keeps the body's size hint (its `Content-Length`), less what was read: the
/// idle timeout's wrapper does not pass it on, and readers size their buffer by it.
struct Shared {
    body: Arc<std::sync::Mutex<axum::body::Body>>,
    hint: http_body::SizeHint,
    read: u64,
}

/// The guard's handle on a [`Shared`] body.
struct Rest(Arc<std::sync::Mutex<axum::body::Body>>);

impl Shared {
    /// `body` (wrapped) with the size hint of the body as it came (`hint`).
    fn new(body: axum::body::Body, hint: http_body::SizeHint) -> (Shared, Rest) {
        let body = Arc::new(std::sync::Mutex::new(body));
        let shared = Shared {
            body: Arc::clone(&body),
            hint,
            read: 0,
        };
        (shared, Rest(body))
    }
}

impl axum::body::HttpBody for Shared {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        // Uncontended (the guard touches it only after the handler is done), and held for
        // one poll, never across an await.
        let this = self.get_mut();
        let polled = {
            let mut body = this.body.lock().unwrap_or_else(|e| e.into_inner());
            std::pin::Pin::new(&mut *body).poll_frame(cx)
        };
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.read = this.read.saturating_add(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let mut hint = http_body::SizeHint::new();
        hint.set_lower(self.hint.lower().saturating_sub(self.read));
        if let Some(upper) = self.hint.upper() {
            hint.set_upper(upper.saturating_sub(self.read));
        }
        hint
    }
}

impl Rest {
    /// Whether the body was read to its end (nothing to drain).
    fn is_done(&self) -> bool {
        axum::body::HttpBody::is_end_stream(&*self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reads what is left of a refused request's body and drops it, up to
    /// [`DRAIN_MAX_BYTES`] and [`DRAIN_MAX_TIME`] (and the idle timeout between pieces).
    ///
    /// A handler that refuses a body halfway (past a limit, a file of the wrong type)
    /// answers before the client has sent it all. Closing the connection then, with the
    /// body unread, resets it, and most clients report the reset ("broken pipe") instead
    /// of the answer; reading the rest first lets them read it. Nothing is kept, and the
    /// request keeps its place among those in flight while it drains.
    async fn drain(self) {
        let body = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        // (`Rest` holds the same body as `Shared`; the handler is done with it.)
        if axum::body::HttpBody::is_end_stream(&body) {
            return;
        }
        let mut stream = body.into_data_stream();
        let mut dropped = 0u64;
        let read = async {
            while let Some(Ok(piece)) = futures::StreamExt::next(&mut stream).await {
                dropped += piece.len() as u64;
                if dropped > DRAIN_MAX_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_MAX_TIME, read).await;
        tracing::debug!(dropped, "refused request body drained");
    }
}

/// The error a request body's read fails with when it paused longer than `idle`.
#[derive(Debug)]
pub(super) struct BodyIdle {
    pub(super) idle: std::time::Duration,
}

impl std::fmt::Display for BodyIdle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no byte of the body for {} s", self.idle.as_secs())
    }
}

impl std::error::Error for BodyIdle {}

/// Whether `given` is `expected`, compared in constant time (a timing difference must not
/// tell a client how much of a guess was right).
fn same(given: Option<&str>, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    given.is_some_and(|given| bool::from(given.as_bytes().ct_eq(expected.as_bytes())))
}

/// Who a request's client is, for the rate limit: the last entry of `proxy_header` (of its
/// last line) when one is configured and present (capped at [`MAX_CLIENT_KEY`] bytes), else the peer's IP
/// address, else one key for every request (a server started without connection info).
fn client_key(req: &Request, proxy_header: Option<&axum::http::HeaderName>) -> String {
    // The header's last line: a proxy may add a line of its own rather than extend the
    // client's, and HTTP reads repeated lines as one comma-separated list.
    if let Some(name) = proxy_header
        && let Some(value) = req.headers().get_all(name).iter().next_back()
        && let Ok(value) = value.to_str()
        && let Some(last) = value.rsplit(',').next().map(str::trim)
        && !last.is_empty()
    {
        // `to_str` took only visible ASCII: any byte index is a character boundary.
        return format!("via proxy {}", &last[..last.len().min(MAX_CLIENT_KEY)]);
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown peer".to_owned(), |c| c.0.ip().to_string())
}

/// The bearer token of `Authorization`, if any.
pub(super) fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

pub(super) async fn not_found(State(sandbox): State<Sandbox>, req: Request) -> Response {
    let err = Error::NotFound {
        what: "route",
        id: format!("{} {}", req.method(), req.uri().path()),
    };
    error_response(Api::of(req.uri().path(), &sandbox.inner.config), err)
}

pub(super) async fn not_allowed(State(sandbox): State<Sandbox>, req: Request) -> Response {
    let err = Error::MethodNotAllowed {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
    };
    error_response(Api::of(req.uri().path(), &sandbox.inner.config), err)
}
