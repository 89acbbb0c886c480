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
        // The client is who its credentials say: keys of different clients never meet.
        let client = |name| headers.get(name).map_or(&[][..], HeaderValue::as_bytes);
        let scope = Fingerprint::of(&[
            client(header::AUTHORIZATION.as_str()),
            client("x-affiliate-id"),
        ]);
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

/// `key` in the form [`claim`] and [`once`] take.
pub(super) fn borrowed(key: &Option<(Keyed, Fingerprint)>) -> Option<(&Keyed, Fingerprint)> {
    key.as_ref().map(|(k, f)| (k, *f))
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

/// Claims the key of a request (its [`Keyed`] and [`Keyed::fingerprint`]). `Ok(None)` for
/// a request without a key.
///
/// # Errors
///
/// 409 ([`Error::KeyInFlight`]) while the key's first request runs, 422
/// ([`Error::KeyReused`]) for a key used with another request, and the store's errors.
pub(super) async fn claim(
    s: &Sandbox,
    keyed: Option<(&Keyed, Fingerprint)>,
) -> Result<Option<Begun>> {
    let Some((keyed, fingerprint)) = keyed else {
        return Ok(None);
    };
    let token = crate::stream::ids::random_id()?.to_string();
    let store = s.inner.store.clone();
    let decision = store
        .claim_key(&keyed.record, &fingerprint, &token, SystemTime::now())
        .await?;
    match decision {
        Decision::Claim => Ok(Some(Begun::Run(Claim {
            store,
            record: keyed.record.clone(),
            token,
            settled: false,
        }))),
        Decision::Replay(answer) => Ok(Some(Begun::Replay(replayed(answer)))),
        other => Err(refusal(&other).unwrap_or(Error::KeyReused)),
    }
}

/// Runs `run` under the request's key: claimed first, its answer stored (a success) or
/// the key given up (anything else); a replay or a refusal instead of running it.
pub(super) async fn once<F: Flavour>(
    s: &Sandbox,
    keyed: Option<(&Keyed, Fingerprint)>,
    run: impl Future<Output = Reply<F>>,
) -> Reply<F> {
    match claim(s, keyed).await? {
        None => run.await,
        Some(Begun::Replay(answer)) => Ok(answer),
        Some(Begun::Run(claim)) => claim.settle(run.await).await,
    }
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
