//! The Demand API's attachments (`docs/protocol.md`, *Demand*), under
//! `/3.1/messages/attachments/`: `upload`, `metadata`, `download`. The scope comes in the
//! body: the accommodation and the conversation.

use axum::extract::{FromRequest, Request, State};
use bytes::BytesMut;

use super::Sandbox;
use super::extract::{UploadBody, WireJson, WireRequest};
use super::idempotent;
use super::reply::{Demand, Failure, Reply, new_id, ok_bytes, ok_json};
use crate::download::{RangeQuery, write_demand_download};
use crate::error::Result;
use crate::store::AttachmentMeta;
use crate::wire::{self, demand};

/// The scope a Demand body names, its conversation checked.
pub(super) fn scope(accommodation: u64, conversation: &str) -> Result<String> {
    wire::check_ref("conversation", conversation)?;
    Ok(super::scope(accommodation, conversation))
}

/// `POST /3.1/messages/attachments/upload`: a whole file (the Demand API has no chunks).
pub(super) async fn upload(State(s): State<Sandbox>, body: UploadBody<Demand>) -> Reply<Demand> {
    let key = body.key();
    idempotent::once(&s, key, upload_once(s.clone(), body)).await
}

/// One upload, run once per `Idempotency-Key`.
async fn upload_once(s: Sandbox, body: UploadBody<Demand>) -> Reply<Demand> {
    let req: demand::UploadRequest<'_> = wire::from_slice(&body)?;
    let scope = scope(req.accommodation, &req.conversation)?;
    wire::check_ref("reservation", req.reservation.as_str())?;
    let file_content = req.file_content.as_bytes();
    let attachment = s
        .inner
        .demand
        .single_parts(
            &req.file_name,
            &req.file_type,
            req.file_size,
            file_content,
            &scope,
        )
        .await?;
    // The upload names the reservation's conversation, if it has none yet
    // (`docs/protocol.md`, *Demand upload*): a send for the reservation then links it.
    let reservation = req.reservation.as_str();
    s.inner
        .store
        .reservation_conversation(req.accommodation, reservation, &req.conversation)
        .await?;
    Ok(ok_json(&demand::Response {
        request_id: new_id(),
        data: demand::UploadData { attachment },
    }))
}

impl WireRequest for demand::AttachmentRef {
    type Flavour = Demand;
}

/// The attachment a `metadata` or `download` body names ([`demand::AttachmentRef`]), if
/// it lies in the scope the body names; else a 404 exactly like a missing id.
pub(super) struct Named(AttachmentMeta);

impl FromRequest<Sandbox> for Named {
    type Rejection = Failure<Demand>;

    async fn from_request(req: Request, s: &Sandbox) -> std::result::Result<Self, Failure<Demand>> {
        let WireJson(named) = WireJson::<demand::AttachmentRef>::from_request(req, s).await?;
        let scope = scope(named.accommodation, &named.conversation)?;
        wire::check_ref("attachment", &named.attachment)?;
        Ok(Named(s.scoped(&named.attachment, &scope).await?))
    }
}

/// `POST /3.1/messages/attachments/metadata`: its name, type and size.
pub(super) async fn metadata(Named(meta): Named) -> Reply<Demand> {
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

/// `POST /3.1/messages/attachments/download`: the whole file, as base64.
pub(super) async fn download(State(s): State<Sandbox>, Named(meta): Named) -> Reply<Demand> {
    // The Demand API has no ranges: the whole file, which its upload limit keeps small.
    let range = RangeQuery::default().resolve(meta.file_size, &s.inner.config.demand.limits)?;
    let bytes = s.inner.store.read_range(&meta.id, range).await?;
    let mut body = BytesMut::new();
    write_demand_download(&mut body, &new_id(), &meta.id, [bytes]);
    Ok(ok_bytes(body))
}
