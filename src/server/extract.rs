//! Extractors shared by the handlers: request bodies read under their limit and parsed,
//! and the Connectivity path's scope. Each rejects in its flavour's error shape, so no
//! handler reads, parses or maps an error by hand.

use std::marker::PhantomData;

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::reply::{Connectivity, Failure, Flavour};
use super::{MAX_SMALL_BODY, Sandbox, scope};
use crate::error::{Error, Result};
use crate::stream::{max_body_len, read_body_sized};
use crate::wire;

/// Reads `body` whole under `limit`: refused (400) as soon as it passes it, before more
/// is buffered; gathered into one allocation of its announced length.
pub(super) async fn read_limited(body: Body, limit: usize) -> Result<Bytes> {
    let announced = axum::body::HttpBody::size_hint(&body).lower();
    read_body_sized(body.into_data_stream(), limit, announced).await
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

impl<T: WireRequest, S: Send + Sync> FromRequest<S> for WireJson<T> {
    type Rejection = Failure<T::Flavour>;

    async fn from_request(req: Request, _: &S) -> std::result::Result<Self, Self::Rejection> {
        let body = read_limited(req.into_body(), T::LIMIT).await?;
        Ok(WireJson(wire::from_slice(&body)?))
    }
}

/// An upload's body (the file as base64 in JSON), read under the largest body the
/// flavour's policy accepts ([`max_body_len`]). The handler parses it, borrowing the
/// base64 text from it rather than copying it.
pub(super) struct UploadBody<F> {
    bytes: Bytes,
    flavour: PhantomData<F>,
}

impl<F> std::ops::Deref for UploadBody<F> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl<F: Flavour> FromRequest<Sandbox> for UploadBody<F> {
    type Rejection = Failure<F>;

    async fn from_request(req: Request, s: &Sandbox) -> std::result::Result<Self, Failure<F>> {
        let limit = max_body_len(F::policy(&s.inner.config));
        Ok(UploadBody {
            bytes: read_limited(req.into_body(), limit).await?,
            flavour: PhantomData,
        })
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
    /// axum's own answer for a path it cannot decode, as every handler gave before.
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> std::result::Result<Self, Response> {
        let Path(path) = Path::<ConversationPath>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let checked = parse_property(&path.property_id).and_then(|property| {
            wire::check_ref("conversation_id", &path.conversation_id)?;
            Ok(property)
        });
        let property = checked.map_err(|e| Failure::<Connectivity>::from(e).into_response())?;
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
