//! Extractors shared by the handlers: request bodies read under their limit and parsed,
//! and the Connectivity path's scope. Each rejects in its flavour's error shape, so no
//! handler reads, parses or maps an error by hand.

use std::marker::PhantomData;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::budget::{Full, Place};
use super::idempotent::{Keyed, KeyedRequest};
use super::quota::ClientKey;
use super::reply::{Connectivity, Failure, Flavour};
use super::{MAX_SMALL_BODY, Sandbox, scope};
use crate::error::{Error, Result, SizeLimit};
use crate::stream::{max_body_len, read_body_sized};
use crate::wire;

/// Reads `body` whole under `limit`: refused (400) as soon as it passes it, before more
/// is buffered; gathered into one allocation of its announced length.
///
/// A body that cannot be read (a malformed chunked transfer coding, a connection the
/// client closed halfway) is the client's doing: a 400 naming what HTTP found, never
/// the 500 of a storage error.
///
/// The whole body must arrive within `deadline` (408 otherwise): a body trickling one
/// byte at a time, each inside the idle timeout, is not held for hours.
pub(super) async fn read_limited(body: Body, limit: usize, deadline: Duration) -> Result<Bytes> {
    let announced = axum::body::HttpBody::size_hint(&body).lower();
    // The guard's idle timeout, told apart from other failures (seconds, 0: none).
    let idle = std::sync::atomic::AtomicU64::new(0);
    let stream = futures::TryStreamExt::inspect_err(body.into_data_stream(), |e| {
        if let Some(timeout) = body_idle(e) {
            idle.store(
                timeout.as_secs().max(1),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    });
    let read = read_body_sized(stream, limit, announced);
    let Ok(read) = tokio::time::timeout(deadline, read).await else {
        return Err(Error::RequestTimeout {
            secs: deadline.as_secs().max(1),
            limit: limit as u64,
        });
    };
    read.map_err(|e| match idle.load(std::sync::atomic::Ordering::Relaxed) {
        0 => unreadable_body(e),
        idle_secs => Error::BodyTimeout { idle_secs },
    })
}

/// The idle timeout that failed a body's read, if that is what failed it: `e` or one of
/// its sources (axum's and multer's errors wrap the body's).
pub(super) fn body_idle(e: &(dyn std::error::Error + 'static)) -> Option<std::time::Duration> {
    find_source::<super::guard::BodyIdle>(e).map(|idle| idle.idle)
}

/// `e` or the first of its sources that is a `T`.
pub(super) fn find_source<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut at = Some(e);
    while let Some(e) = at {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        at = e.source();
    }
    None
}

/// [`read_limited`]'s error for a body the connection could not deliver.
pub(super) fn unreadable_body(e: Error) -> Error {
    match e {
        Error::Io(io) => Error::InvalidField {
            field: "request body".into(),
            problem: format!(
                "could not be read ({}): send the body whole, in a well-formed transfer coding",
                io.io_error()
            ),
        },
        other => other,
    }
}

/// The name/value pairs of an `application/x-www-form-urlencoded` text (a query string,
/// a form body): `&`-separated, `+` a space, percent-decoded.
///
/// Strict where the `form_urlencoded` crate is lenient: a name or value that is not
/// UTF-8 once decoded is refused (400 naming it) instead of having its bytes replaced by
/// U+FFFD, so a file name is stored as sent or not at all. (Hand-written for that: the
/// crate has no strict mode; the decoding itself is `percent-encoding`'s.)
pub(super) fn form_pairs(input: &[u8]) -> Result<Vec<(String, String)>> {
    let decode = |raw: &[u8], what: &dyn Fn() -> String| -> Result<String> {
        let spaced: Vec<u8> = raw
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        percent_encoding::percent_decode(&spaced)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| Error::InvalidField {
                field: what(),
                problem: "is not UTF-8 once percent-decoded: encode the text as UTF-8".into(),
            })
    };
    input
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            let name = decode(name, &|| "a parameter name".to_owned())?;
            let value = decode(value, &|| name.clone())?;
            Ok((name, value))
        })
        .collect()
}

/// A request a handler takes as JSON: the API it belongs to (the shape of its errors) and
/// the largest body it may come in.
pub(super) trait WireRequest: DeserializeOwned {
    /// Its API.
    type Flavour: Flavour;

    /// Its largest body, in bytes.
    const LIMIT: usize = MAX_SMALL_BODY;
}

/// A JSON request body of type `T`, read under `T::LIMIT` and parsed; either failing is
/// answered in `T`'s flavour's error shape.
pub(super) struct WireJson<T>(pub T);

impl<T: WireRequest> FromRequest<Sandbox> for WireJson<T> {
    type Rejection = Failure<T::Flavour>;

    async fn from_request(req: Request, s: &Sandbox) -> std::result::Result<Self, Self::Rejection> {
        let client = client_of(&req);
        let (body, _budget) = s.read_body(&client, req.into_body(), T::LIMIT).await?;
        Ok(WireJson(wire::from_slice(&body)?))
    }
}

/// A JSON request body of type `T`, as [`WireJson`], with the request's
/// `Idempotency-Key` and its fingerprint (method, path, query and body), if it sent one.
pub(super) struct KeyedJson<T> {
    value: T,
    keyed: Option<KeyedRequest>,
}

impl<T> KeyedJson<T> {
    /// The request, and its key and fingerprint.
    pub(super) fn into_parts(self) -> (T, Option<KeyedRequest>) {
        (self.value, self.keyed)
    }
}

impl<T: WireRequest> FromRequest<Sandbox> for KeyedJson<T> {
    type Rejection = Failure<T::Flavour>;

    async fn from_request(req: Request, s: &Sandbox) -> std::result::Result<Self, Self::Rejection> {
        let client = client_of(&req);
        let keyed = Keyed::from_request(req.method(), req.uri(), req.headers(), &client)?;
        let (body, _budget) = s.read_body(&client, req.into_body(), T::LIMIT).await?;
        let value = wire::from_slice(&body)?;
        let keyed = keyed.map(|k| {
            let fingerprint = k.fingerprint(&[&body]);
            (k, fingerprint)
        });
        Ok(KeyedJson { value, keyed })
    }
}

/// An upload's body (the file as base64 in JSON), read under the largest body the
/// flavour's policy accepts ([`max_body_len`]). The handler parses it, borrowing the
/// base64 text from it rather than copying it.
pub(super) struct UploadBody<F> {
    bytes: Bytes,
    /// Its `Idempotency-Key`, if it sent one.
    keyed: Option<Keyed>,
    /// Its place in the budget of bytes buffered in flight, held while the handler runs.
    _budget: Place,
    flavour: PhantomData<F>,
}

impl<F> std::ops::Deref for UploadBody<F> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl<F> UploadBody<F> {
    /// The request's `Idempotency-Key` and its fingerprint (method, path, query, body).
    pub(super) fn key(&self) -> Option<KeyedRequest> {
        self.keyed.as_ref().map(|k| {
            let fingerprint = k.fingerprint(&[&self.bytes]);
            (k.clone(), fingerprint)
        })
    }
}

impl<F: Flavour> FromRequest<Sandbox> for UploadBody<F> {
    type Rejection = Failure<F>;

    async fn from_request(req: Request, s: &Sandbox) -> std::result::Result<Self, Failure<F>> {
        let policy = F::policy(&s.inner.config);
        let limit = max_body_len(policy);
        let client = client_of(&req);
        let chunk = req.uri().path().ends_with("/attachment_chunks");
        let keyed = Keyed::from_request(req.method(), req.uri(), req.headers(), &client)?;
        let (bytes, budget) = s
            .read_body(&client, req.into_body(), limit)
            .await
            .map_err(|e| match e {
                // A body past the limit carries a file (or chunk) past its own: answered
                // with the file's (chunk's) text whatever the size, as one just over it is
                // (SPEC, *Size-limit texts*). Its size, from the base64 that fills it.
                Error::TooLarge {
                    size,
                    kind: SizeLimit::Body,
                    ..
                } => {
                    let (limit, kind) = if chunk {
                        (policy.limits.max_chunk_size, SizeLimit::Chunk)
                    } else {
                        (policy.limits.max_single_size, SizeLimit::Single)
                    };
                    Error::TooLarge {
                        size: (size / 4 * 3).max(limit + 1),
                        limit,
                        kind,
                    }
                }
                other => other,
            })?;
        Ok(UploadBody {
            bytes,
            keyed,
            _budget: budget,
            flavour: PhantomData,
        })
    }
}

/// Path parameters of type `T`. A path axum cannot decode into them (one not UTF-8 once
/// percent-decoded, say) is a 400 in flavour `F`'s error shape, like every other client
/// mistake, rather than axum's plain-text answer.
pub(super) struct FlavourPath<T, F>(pub T, pub PhantomData<F>);

impl<T, F, S> FromRequestParts<S> for FlavourPath<T, F>
where
    T: DeserializeOwned + Send,
    F: Flavour,
    S: Send + Sync,
{
    type Rejection = Failure<F>;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> std::result::Result<Self, Failure<F>> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(FlavourPath(value, PhantomData)),
            Err(rejection) => Err(Error::InvalidField {
                field: "path".into(),
                problem: format!("cannot be read: {}", rejection.body_text()),
            }
            .into()),
        }
    }
}

/// The scope of a Connectivity path (`.../properties/{property_id}/conversations/
/// {conversation_id}/...`): the property an integer, the conversation a valid reference
/// ([`wire::check_ref`]); else a 400 in the Connectivity shape.
pub(super) struct ConnScope {
    pub property: u64,
    pub conversation: String,
    /// [`scope`] of the two.
    pub scope: String,
}

#[derive(Deserialize)]
struct ConversationPath {
    property_id: String,
    conversation_id: String,
}

impl<S: Send + Sync> FromRequestParts<S> for ConnScope {
    type Rejection = Failure<Connectivity>;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> std::result::Result<Self, Failure<Connectivity>> {
        let FlavourPath(path, _) =
            FlavourPath::<ConversationPath, Connectivity>::from_request_parts(parts, state).await?;
        let property = parse_property(&path.property_id)?;
        wire::check_ref("conversation_id", &path.conversation_id)?;
        Ok(ConnScope {
            scope: scope(property, &path.conversation_id),
            property,
            conversation: path.conversation_id,
        })
    }
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

/// The client the guard found for `req` (one key for all when the router runs without
/// the guard, as no router of this crate does).
pub(super) fn client_of(req: &Request) -> ClientKey {
    req.extensions()
        .get::<ClientKey>()
        .cloned()
        .unwrap_or_else(|| ClientKey("unknown peer".to_owned()))
}

/// How long a body waits for room in the buffered-bytes budget before it is refused
/// (503): 5 s.
pub const BUFFER_WAIT: Duration = Duration::from_secs(5);

impl Sandbox {
    /// Reads a request body whole under `limit` and the body timeout
    /// ([`read_limited`]), after taking its place in the budget of bytes buffered in
    /// flight ([`ServerConfig::max_buffered`](super::ServerConfig::max_buffered)): its
    /// announced length, or `limit` when it announces none, waiting for it at most
    /// [`BUFFER_WAIT`] (a queue bounded by the in-flight cap), else 503. The place is held
    /// as long as the returned permit.
    pub(super) async fn read_body(
        &self,
        client: &ClientKey,
        body: Body,
        limit: usize,
    ) -> Result<(Bytes, Place)> {
        // A `Content-Length` is the hint's lower bound; 0 is read as none announced.
        let announced = axum::body::HttpBody::size_hint(&body).lower();
        // One announced over the limit is refused before a byte is read or a place taken.
        if announced > limit as u64 {
            return Err(Error::TooLarge {
                size: announced,
                limit: limit as u64,
                kind: crate::error::SizeLimit::Body,
            });
        }
        let wanted = match usize::try_from(announced) {
            Ok(0) => limit,
            Ok(n) => n.min(limit),
            Err(_) => limit,
        };
        // Waits its turn for at most BUFFER_WAIT, its body left unread in the socket
        // (TCP holds the client back meanwhile); the requests waiting are bounded by the
        // in-flight cap.
        let config = &self.inner.config;
        let place = match self
            .inner
            .buffered
            .take(&client.0, wanted, BUFFER_WAIT)
            .await
        {
            Ok(place) => place,
            Err(Full::Client) => {
                return Err(Error::BufferFull {
                    whose: "this client's",
                    wanted: wanted as u64,
                    budget: config.max_buffered_per_client.min(config.max_buffered) as u64,
                });
            }
            Err(Full::Total) => {
                return Err(Error::BufferFull {
                    whose: "its",
                    wanted: wanted as u64,
                    budget: config.max_buffered as u64,
                });
            }
        };
        let bytes = read_limited(body, limit, config.body_timeout).await?;
        Ok((bytes, place))
    }
}

#[cfg(test)]
mod form_tests {
    use super::form_pairs;

    #[test]
    fn pairs_decode_like_a_form_and_refuse_what_is_not_utf8() {
        let pairs = form_pairs(b"a=1&&b=x+y%2Bz&c&d=caf%C3%A9&a%3D=%").unwrap();
        let want = [
            ("a", "1"),
            ("b", "x y+z"),
            ("c", ""),
            ("d", "café"),
            ("a=", "%"),
        ];
        let got: Vec<_> = pairs
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(got, want);
        let err = form_pairs(b"ok=1&filename=caf%E9").unwrap_err();
        assert_eq!(
            err.to_string(),
            "filename is not UTF-8 once percent-decoded: encode the text as UTF-8"
        );
        assert!(form_pairs(b"%FF=1").is_err());
    }

    proptest::proptest! {
        /// Whatever names and values a client encodes (as the `form_urlencoded` crate, a
        /// browser or curl does), they decode back exactly; and arbitrary bytes either
        /// decode or are refused, never a panic.
        #[test]
        fn encoded_pairs_decode_back_exactly(
            pairs in proptest::collection::vec(("\\PC{1,12}", "\\PC{0,12}"), 0..8),
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let mut form = form_urlencoded::Serializer::new(String::new());
            for (name, value) in &pairs {
                form.append_pair(name, value);
            }
            let encoded = form.finish();
            proptest::prop_assert_eq!(form_pairs(encoded.as_bytes()).unwrap(), pairs);
            let _ = form_pairs(&noise);
        }
    }
}
