//! `Idempotency-Key` on the requests that create something: a message
//! (Connectivity `POST .../conversations/{id}`, Demand `POST /3.1/messages/send`), an
//! upload or a chunk of one (Connectivity `POST .../attachments` and
//! `.../attachment_chunks`, Demand `POST /3.1/messages/attachments/upload`) and a chat
//! upload (`POST /v1/attachments`). The rules are [`crate::idempotency`]'s; this is the
//! thin shell that claims a key in the [`KeyStore`](crate::store::KeyStore), runs the
//! request, and stores or replays its answer.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use http_body::Body as _;

use super::Sandbox;
use super::quota::ClientKey;
use super::reply::{Failure, Flavour, Reply};
use crate::error::{Error, Result};
use crate::idempotency::{
    self, Decision, Fingerprint, IdempotencyKey, RecordKey, StoredAnswer, refusal,
};
use crate::store::Store;

/// A request that carries an `Idempotency-Key`: its record's name (the key under its
/// client's credentials) and what it must match, short of the body.
#[derive(Debug, Clone)]
pub(super) struct Keyed {
    record: RecordKey,
    /// Method, path and query, hashed with the body by [`Keyed::fingerprint`].
    target: Vec<u8>,
}

impl Keyed {
    /// The key of a request, read from its headers; `None` when it sends none.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidField`] for a malformed key or more than one.
    pub(super) fn from_request(
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        client: &ClientKey,
    ) -> Result<Option<Keyed>> {
        let mut values = headers.get_all(idempotency::HEADER).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(Error::InvalidField {
                field: "Idempotency-Key".into(),
                problem: "is sent more than once: send one key per request".into(),
            });
        }
        let key = IdempotencyKey::parse(value.as_bytes())?;
        // The client is who its credentials say (the bearer token as the guard reads it,
        // and the affiliate id), or without credentials its address (the rate limit's
        // key): keys of different clients never meet.
        let scope = match super::guard::bearer(headers) {
            Some(token) => {
                let affiliate = headers
                    .get("x-affiliate-id")
                    .map_or(&[][..], HeaderValue::as_bytes);
                Fingerprint::of(&[b"bearer", token.as_bytes(), affiliate.trim_ascii()])
            }
            None => Fingerprint::of(&[b"peer", client.0.as_bytes()]),
        };
        let scope = String::from(scope);
        let target = [
            method.as_str().as_bytes(),
            b" ",
            uri.path().as_bytes(),
            b"?",
            uri.query().unwrap_or("").as_bytes(),
        ]
        .concat();
        Ok(Some(Keyed {
            record: RecordKey::new(&scope, &key),
            target,
        }))
    }

    /// The fingerprint of this request with `parts` of its content (its body, or for a
    /// multipart upload the fields and the file's digest).
    pub(super) fn fingerprint(&self, parts: &[&[u8]]) -> Fingerprint {
        let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        all.push(&self.target);
        all.extend_from_slice(parts);
        Fingerprint::of(&all)
    }
}

/// A claimed key, settled by [`Claim::settle`]; dropped unsettled (the request was
/// cancelled, or failed before it answered), it is given up in the background.
pub(super) struct Claim {
    store: Arc<dyn Store>,
    record: RecordKey,
    token: String,
    settled: bool,
}

/// What [`claim`] found.
pub(super) enum Begun {
    /// The request runs; its answer settles the claim.
    Run(Claim),
    /// The request ran before: this is its answer again.
    Replay(Response),
}

/// A request's key and its fingerprint.
pub(super) type KeyedRequest = (Keyed, Fingerprint);

/// Claims the key of a request (its [`Keyed`] and [`Keyed::fingerprint`]) in `store`.
/// Call it inside [`detached`]: a claim recorded by a request cancelled before it holds
/// the [`Claim`] would block its key for the whole lease.
///
/// # Errors
///
/// 409 ([`Error::KeyInFlight`]) while the key's first request runs, 422
/// ([`Error::KeyReused`]) for a key used with another request, and the store's errors.
pub(super) async fn claim(
    store: Arc<dyn Store>,
    (keyed, fingerprint): KeyedRequest,
) -> Result<Begun> {
    let token = crate::stream::ids::random_id()?.to_string();
    let decision = store
        .claim_key(&keyed.record, &fingerprint, &token, SystemTime::now())
        .await?;
    match decision {
        Decision::Claim => Ok(Begun::Run(Claim {
            store,
            record: keyed.record,
            token,
            settled: false,
        })),
        Decision::Replay(answer) => Ok(Begun::Replay(replayed(answer))),
        other => Err(refusal(&other).unwrap_or(Error::KeyReused)),
    }
}

/// Runs `run` under the request's key, if it has one: claimed first, its answer stored
/// (a success) or the key given up (anything else); a replay or a refusal instead of
/// running it. Claim, run and settle go in a task of their own ([`detached`]): a client
/// that goes away mid-request (hyper then drops the handler) must not leave an effect
/// whose key was given up, which its retry would repeat.
pub(super) async fn once<F: Flavour + 'static>(
    s: &Sandbox,
    keyed: Option<KeyedRequest>,
    run: impl Future<Output = Reply<F>> + Send + 'static,
) -> Reply<F> {
    let Some(keyed) = keyed else {
        return run.await;
    };
    let store = s.inner.store.clone();
    detached(async move {
        match claim(store, keyed).await? {
            Begun::Replay(answer) => Ok(answer),
            Begun::Run(claim) => claim.settle(run.await).await,
        }
    })
    .await
}

/// Runs `job` to its end in a task of its own, whatever becomes of the request that
/// awaits it.
pub(super) async fn detached<F: Flavour + 'static>(
    job: impl Future<Output = Reply<F>> + Send + 'static,
) -> Reply<F> {
    tokio::spawn(job).await.unwrap_or_else(|e| {
        Err(Failure::from(Error::io_other(
            "a request's task",
            std::io::ErrorKind::Other,
            e,
        )))
    })
}

impl Claim {
    /// Stores `reply` when it is a success small enough to keep, else gives the key up;
    /// returns `reply`. A store failing to record the answer does not fail the request,
    /// which has taken effect: it is logged, and the key given up.
    pub(super) async fn settle<F: Flavour>(mut self, reply: Reply<F>) -> Reply<F> {
        self.settled = true;
        let now = SystemTime::now();
        let Ok(response) = reply else {
            self.give_up(now).await;
            return reply;
        };
        let status = response.status().as_u16();
        let exact = response.body().size_hint().exact();
        let kept = exact.is_some_and(|n| StoredAnswer::is_kept(status, n as usize));
        if !kept {
            self.give_up(now).await;
            return Ok(response);
        }
        let (parts, body) = response.into_parts();
        // The body's exact size is known and small: it is already in memory.
        let bytes = match axum::body::to_bytes(body, idempotency::MAX_STORED_ANSWER).await {
            Ok(bytes) => bytes,
            Err(e) => {
                self.give_up(now).await;
                return Err(Failure::from(Error::io_other(
                    "reading the answer to store",
                    std::io::ErrorKind::Other,
                    e,
                )));
            }
        };
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match std::str::from_utf8(&bytes) {
            Ok(text) => {
                let answer = StoredAnswer::new(status, content_type, text.to_owned());
                match self
                    .store
                    .settle_key(&self.record, &self.token, Some(&answer), now)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(
                        key = %self.record,
                        "an idempotency key's lease ran out before its request answered; its answer is not kept"
                    ),
                    Err(e) => {
                        tracing::warn!(key = %self.record, error = %e, "could not keep an idempotency key's answer");
                        self.give_up(now).await;
                    }
                }
            }
            Err(_) => self.give_up(now).await,
        }
        Ok(Response::from_parts(parts, Body::from(bytes)))
    }

    async fn give_up(&self, now: SystemTime) {
        if let Err(e) = self
            .store
            .settle_key(&self.record, &self.token, None, now)
            .await
        {
            tracing::warn!(key = %self.record, error = %e, "could not give an idempotency key up; it frees at the end of its lease");
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Cancelled mid-request (the client went away): nothing answered, so the key is
        // given up for the retry, without holding the dropping task.
        let (store, record, token) = (self.store.clone(), self.record.clone(), self.token.clone());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = store
                    .settle_key(&record, &token, None, SystemTime::now())
                    .await;
            });
        }
    }
}

/// A stored answer, sent again: its status, type and body, and
/// `Idempotent-Replayed: true`.
fn replayed(answer: StoredAnswer) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    if let Some(t) = answer
        .content_type
        .and_then(|t| HeaderValue::try_from(t).ok())
    {
        headers.insert(header::CONTENT_TYPE, t);
    }
    headers.insert(
        idempotency::REPLAYED_HEADER,
        HeaderValue::from_static("true"),
    );
    response
}
