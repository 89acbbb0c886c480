//! What every request goes through before its handler: credentials, the rate limit and a
//! log line; and the answers for paths and methods no handler serves.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;

use super::Sandbox;
use super::reply::{Api, error_response};
use crate::error::Error;

/// Auth, rate limit and a log line per request.
pub(super) async fn guard(State(sandbox): State<Sandbox>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let api = Api::of(req.uri().path());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let fail = |err: Error| error_response(api, err);
    let headers = req.headers();
    let token = bearer(headers);
    let affiliate = headers
        .get("x-affiliate-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // The chat flavour authenticates by the bearer token alone (`docs/protocol.md`, *Access
    // and scope*).
    let response = if let Some(expected) = &sandbox.inner.config.credentials
        && (token.as_deref() != Some(expected.token.as_str())
            || (api != Api::Chat && affiliate.as_deref() != Some(expected.affiliate_id.as_str())))
    {
        fail(Error::Unauthorized)
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
            Some(wait) => fail(Error::RateLimited {
                retry_after_secs: wait.as_secs().max(1),
            }),
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

/// The bearer token of `Authorization`, if any.
pub(super) fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

pub(super) async fn not_found(req: Request) -> Response {
    let err = Error::NotFound {
        what: "route",
        id: format!("{} {}", req.method(), req.uri().path()),
    };
    error_response(Api::of(req.uri().path()), err)
}

pub(super) async fn not_allowed(req: Request) -> Response {
    let err = Error::MethodNotAllowed {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
    };
    error_response(Api::of(req.uri().path()), err)
}
