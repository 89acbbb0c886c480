//! What the handlers answer: JSON bodies, and errors in the shape of the API they belong
//! to. A handler of flavour `F` returns [`Reply<F>`], so `?` turns any [`Error`] into that
//! flavour's error answer.

use std::marker::PhantomData;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use serde::Serialize;

use super::ServerConfig;
use crate::error::{Error, ResumableProblem};
use crate::policy::Policy;
use crate::stream::ids::random_id;
use crate::wire::connectivity::Envelope;
use crate::wire::demand::ErrorResponse;

/// Which API a request belongs to: decides the error body's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Api {
    Connectivity,
    Demand,
    Chat,
    /// tus 1.0: plain-text errors with `Tus-Resumable`.
    Tus,
    /// The IETF resumable uploads: `application/problem+json` (RFC 9457).
    Ietf,
}

/// Whether `path` is `prefix` or under it.
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl Api {
    /// The API a path belongs to (for answers given before a handler runs).
    pub(super) fn of(path: &str, config: &ServerConfig) -> Api {
        if under(path, &config.tus_path) {
            return Api::Tus;
        }
        if under(path, &config.ietf_path) {
            return Api::Ietf;
        }
        // The Demand routes are served with and without their version (SPEC, *Paths*).
        if path.starts_with("/3.1/") || path == "/messages" || path.starts_with("/messages/") {
            Api::Demand
        } else if path == "/v1" || path.starts_with("/v1/") {
            Api::Chat
        } else {
            Api::Connectivity
        }
    }
}

/// An API as a type, for handlers and extractors: the shape of its errors and the policy
/// its uploads follow.
pub(super) trait Flavour: Send + 'static {
    /// Its error shape.
    const API: Api;

    /// What its uploads accept.
    fn policy(config: &ServerConfig) -> &Policy;
}

/// The Connectivity API: envelopes (`docs/protocol.md`, *Connectivity envelope*).
pub(super) enum Connectivity {}

/// The Demand API: `{"request_id", "data"}` and `{"errors": [..]}` (`docs/protocol.md`,
/// *Demand responses*).
pub(super) enum Demand {}

/// The chat resource: `{"error": {"status", "message"}}` (`docs/protocol.md`, *Chat
/// responses*).
pub(super) enum Chat {}

impl Flavour for Connectivity {
    const API: Api = Api::Connectivity;

    fn policy(config: &ServerConfig) -> &Policy {
        &config.connectivity
    }
}

impl Flavour for Demand {
    const API: Api = Api::Demand;

    fn policy(config: &ServerConfig) -> &Policy {
        &config.demand
    }
}

impl Flavour for Chat {
    const API: Api = Api::Chat;

    fn policy(config: &ServerConfig) -> &Policy {
        &config.chat
    }
}

/// tus 1.0 (its uploads become chat attachments).
pub(super) enum Tus {}

/// The IETF resumable uploads (their uploads become chat attachments).
pub(super) enum Ietf {}

impl Flavour for Tus {
    const API: Api = Api::Tus;

    fn policy(config: &ServerConfig) -> &Policy {
        &config.chat
    }
}

impl Flavour for Ietf {
    const API: Api = Api::Ietf;

    fn policy(config: &ServerConfig) -> &Policy {
        &config.chat
    }
}

/// A failed request of flavour `F`, answered in its error shape.
pub(super) struct Failure<F>(Error, PhantomData<F>);

impl<F> From<Error> for Failure<F> {
    fn from(err: Error) -> Self {
        Failure(err, PhantomData)
    }
}

impl<F: Flavour> IntoResponse for Failure<F> {
    fn into_response(self) -> Response {
        error_response(F::API, self.0)
    }
}

/// What a handler of flavour `F` answers.
pub(super) type Reply<F> = std::result::Result<Response, Failure<F>>;

/// `err` in `api`'s error shape, with `Retry-After` when the error says how long to wait
/// ([`Error::retry_after`]).
pub(super) fn error_response(api: Api, err: Error) -> Response {
    let retry_after = err.retry_after();
    let status = match (&err, api) {
        // HTTP's own status for a body over the limit, where no API document prescribes 400
        // (`docs/protocol.md`, *Error texts and statuses*).
        (Error::TooLarge { .. }, Api::Chat | Api::Tus | Api::Ietf) => StatusCode::PAYLOAD_TOO_LARGE,
        (e, _) => StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    };
    if matches!(err, Error::Overloaded { .. } | Error::BufferFull { .. }) {
        // Load shed on purpose, not a fault: one line per refused request at error level
        // would flood the log exactly when the server is busiest.
        tracing::debug!(error = %err, %status, "request shed");
    } else if status.is_server_error() {
        tracing::error!(error = %err, "request failed");
    } else {
        tracing::debug!(error = %err, %status, "request refused");
    }
    let id = new_id();
    let body = match api {
        Api::Connectivity => to_json(&Envelope::<()>::error(&err, id)),
        Api::Demand => to_json(&ErrorResponse::from_error(&err, Some(id))),
        Api::Chat => {
            let message = match &err {
                Error::Unauthorized => {
                    "missing or wrong credentials: send Authorization: Bearer <token>".into()
                }
                e => e.wire_message(),
            };
            to_json(&chat_error(status.as_u16(), &message))
        }
        Api::Tus => return finish(tus_error(status, &err), retry_after, &err),
        Api::Ietf => return finish(ietf_error(status, &err), retry_after, &err),
    };
    finish(
        (status, json_headers(), body).into_response(),
        retry_after,
        &err,
    )
}

/// Adds what every error answer carries: `Retry-After` when the error says how long to
/// wait, `WWW-Authenticate` on a 401.
fn finish(
    mut response: Response,
    retry_after: Option<std::time::Duration>,
    err: &Error,
) -> Response {
    if let Some(after) = retry_after
        && let Ok(v) = HeaderValue::from_str(&after.as_secs().max(1).to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    // RFC 9110 11.6.1: a 401 names the scheme it wants.
    if matches!(err, Error::Unauthorized) {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(WWW_AUTHENTICATE),
        );
    }
    response
}

/// A tus error: the message as plain text, with `Tus-Resumable` (and `Tus-Version` on a
/// 412, as the protocol asks).
fn tus_error(status: StatusCode, err: &Error) -> Response {
    let message = match err {
        Error::Unauthorized => {
            "missing or wrong credentials: send Authorization: Bearer <token>".into()
        }
        e => e.wire_message(),
    };
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        format!("{message}\n"),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(
        "tus-resumable",
        HeaderValue::from_static(crate::wire::resumable::TUS_VERSION),
    );
    if matches!(err, Error::Resumable(ResumableProblem::Version { .. })) {
        headers.insert(
            "tus-version",
            HeaderValue::from_static(crate::wire::resumable::TUS_VERSION),
        );
    }
    response
}

/// The problem types of the IETF resumable-upload draft.
const PROBLEM_TYPES: &str = "https://iana.org/assignments/http-problem-types";

/// An IETF resumable-upload error: `application/problem+json` (RFC 9457), with the
/// draft's problem types and, for a mismatching offset, the offsets (and the right one
/// in `Upload-Offset`).
fn ietf_error(status: StatusCode, err: &Error) -> Response {
    let kind = match err {
        Error::Resumable(ResumableProblem::OffsetMismatch { .. }) => {
            Some("mismatching-upload-offset")
        }
        Error::Resumable(ResumableProblem::Completed { .. }) => Some("completed-upload"),
        Error::Resumable(
            ResumableProblem::InconsistentLength { .. }
            | ResumableProblem::LengthBelowOffset { .. }
            | ResumableProblem::PastLength { .. },
        ) => Some("inconsistent-upload-length"),
        _ => None,
    };
    let detail = match err {
        Error::Unauthorized => {
            "missing or wrong credentials: send Authorization: Bearer <token>".into()
        }
        e => e.wire_message(),
    };
    let mut body = serde_json::json!({
        "type": kind.map_or_else(|| "about:blank".to_owned(), |k| format!("{PROBLEM_TYPES}#{k}")),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut offset = None;
    if let Error::Resumable(ResumableProblem::OffsetMismatch { expected, got }) = err {
        body["expected-offset"] = (*expected).into();
        body["provided-offset"] = (*got).into();
        offset = Some(*expected);
    }
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        )],
        to_json(&body),
    )
        .into_response();
    if let Some(offset) = offset {
        response
            .headers_mut()
            .insert("upload-offset", HeaderValue::from(offset));
    }
    response
}

/// The `WWW-Authenticate` of every 401: a bearer token (Connectivity and Demand also need
/// `X-Affiliate-Id`, which the error text names).
pub(super) const WWW_AUTHENTICATE: &str = "Bearer realm=\"attachments\"";

/// The chat flavour's error body.
pub(super) fn chat_error(status: u16, message: &str) -> crate::wire::chat::ErrorResponse {
    crate::wire::chat::ErrorResponse {
        error: crate::wire::chat::ErrorBody {
            status,
            message: message.to_owned(),
        },
    }
}

pub(super) fn json_headers() -> [(header::HeaderName, HeaderValue); 1] {
    [(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )]
}

pub(super) fn to_json<T: Serialize>(value: &T) -> Bytes {
    // Our own types always serialise (no maps with non-string keys, no failing Serialize).
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// 200 with `value` as JSON.
pub(super) fn ok_json<T: Serialize>(value: &T) -> Response {
    (StatusCode::OK, json_headers(), to_json(value)).into_response()
}

/// 200 with a JSON body written by hand (the download writers).
pub(super) fn ok_bytes(body: BytesMut) -> Response {
    (StatusCode::OK, json_headers(), body.freeze()).into_response()
}

/// A fresh id for `ruid` / `request_id`.
pub(super) fn new_id() -> String {
    random_id().map(|id| id.to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every error that says when to come back carries `Retry-After`, in every flavour.
    #[test]
    fn errors_that_say_when_to_come_back_carry_retry_after() {
        let committing = || Error::UploadCommitting {
            upload_id: "u".into(),
            retry_after_secs: 12,
        };
        let busy = || Error::UploadBusy {
            upload_id: "u".into(),
            number: 3,
        };
        let limited = || Error::RateLimited {
            retry_after_secs: 4,
        };
        for api in [
            Api::Connectivity,
            Api::Demand,
            Api::Chat,
            Api::Tus,
            Api::Ietf,
        ] {
            for (err, status, after) in [
                (committing(), 409, Some("12")),
                (busy(), 409, Some("1")),
                (limited(), 429, Some("4")),
                (
                    Error::KeyInFlight {
                        retry_after_secs: 1,
                    },
                    409,
                    Some("1"),
                ),
                (Error::KeyReused, 422, None),
                (
                    Error::ScanUnavailable {
                        problem: "down".into(),
                    },
                    503,
                    Some("30"),
                ),
                (
                    Error::Infected {
                        signature: "X".into(),
                    },
                    422,
                    None,
                ),
                (
                    Error::KeysFull {
                        what: "records",
                        limit: 3,
                    },
                    503,
                    Some("60"),
                ),
                (Error::Unauthorized, 401, None),
            ] {
                let response = error_response(api, err);
                assert_eq!(response.status().as_u16(), status);
                let got = response.headers().get(header::RETRY_AFTER);
                assert_eq!(got.map(|v| v.to_str().unwrap()), after, "{api:?} {status}");
                // Only a 401 asks for credentials, and always does.
                let challenge = response.headers().get(header::WWW_AUTHENTICATE);
                assert_eq!(
                    challenge.map(|v| v.to_str().unwrap()),
                    (status == 401).then_some("Bearer realm=\"attachments\""),
                    "{api:?} {status}"
                );
            }
        }
    }
}
