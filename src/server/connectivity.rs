//! The Connectivity API's attachments (`docs/protocol.md`, *Connectivity*), under
//! `/messaging/properties/{property_id}/conversations/{conversation_id}`: `POST
//! attachments`, `POST attachment_chunks`, `GET attachments/{attachment_id}?from=&to=`,
//! `GET attachments/{attachment_id}/file_info`. Every answer is an envelope.

use axum::Extension;
use axum::extract::{RawQuery, State};
use bytes::BytesMut;
use serde::Deserialize;

use super::Sandbox;
use super::extract::{ConnScope, FlavourPath, UploadBody};
use super::idempotent;
use super::quota::ClientKey;
use super::reply::{Connectivity, Reply, new_id, ok_bytes, ok_json};
use crate::download::{RangeQuery, write_connectivity_download};
use crate::wire::connectivity::{ChunkRequest, Envelope, FileInfo, UploadData};
use crate::wire::{self, OkFlag};

/// The attachment a path names, after its scope.
#[derive(Deserialize)]
pub(super) struct AttachmentPath {
    attachment_id: String,
}

/// `POST .../attachments`: a whole file in one request.
pub(super) async fn upload(
    State(s): State<Sandbox>,
    to: ConnScope,
    body: UploadBody<Connectivity>,
) -> Reply<Connectivity> {
    let key = body.key();
    let sandbox = s.clone();
    idempotent::once(&s, key, async move {
        let attachment_id = sandbox.inner.connectivity.single(&body, &to.scope).await?;
        let data = UploadData {
            ok: OkFlag(true),
            attachment_id,
        };
        Ok(ok_json(&Envelope::ok(data, new_id())))
    })
    .await
}

/// `POST .../attachment_chunks`: one chunk of a chunked upload, counted against its
/// client's and conversation's upload quota ([`ServerConfig::upload_quota`](super::ServerConfig::upload_quota)) from
/// `start` until it finishes or fails.
pub(super) async fn chunk(
    State(s): State<Sandbox>,
    Extension(client): Extension<ClientKey>,
    to: ConnScope,
    body: UploadBody<Connectivity>,
) -> Reply<Connectivity> {
    let key = body.key();
    idempotent::once(&s, key, chunk_once(s.clone(), client, to, body)).await
}

/// One chunk, run once per `Idempotency-Key`.
async fn chunk_once(
    s: Sandbox,
    client: ClientKey,
    to: ConnScope,
    body: UploadBody<Connectivity>,
) -> Reply<Connectivity> {
    let s = &s;
    let req: ChunkRequest<'_> = wire::from_slice(&body)?;
    let chunk = &req.attachment;
    // What the chunk stages: its decoded length, as its base64 text gives it.
    let bytes = chunk.chunk.chunk_content.len() as u64 / 4 * 3;
    let receiver = &s.inner.connectivity;
    let data = match chunk.upload_id.as_deref() {
        None => {
            let opened = s.open_upload(&client, Some(&to.scope), bytes)?;
            let data = receiver.chunk_request(chunk, &to.scope).await?;
            if let Some(upload_id) = &data.upload_id {
                opened.name(upload_id);
            }
            data
        }
        Some(upload_id) => {
            // Counted under the id as the store knows it (ids parse in any case).
            let upload_id = upload_id
                .parse::<crate::upload::RandomId>()
                .map_or_else(|_| upload_id.to_owned(), |id| id.to_string());
            s.stage_upload(&upload_id, bytes)?;
            // Given back if the request ends without settling it (cancelled, say).
            let mut staged = StagedChunk {
                sandbox: s,
                upload_id: &upload_id,
                bytes,
                settled: false,
            };
            let answer = receiver.chunk_request(chunk, &to.scope).await;
            match &answer {
                Ok(data) => {
                    staged.settled = true;
                    if data.attachment_id.is_some() {
                        s.close_upload(&upload_id);
                    }
                }
                // Busy, committing, contended (409) or a store fault (5xx): the upload
                // goes on, and this chunk may come again; its bytes are given back. Not
                // found (404) either: the id may be an upload of another conversation,
                // which must keep its place (it idles out if it is truly gone).
                Err(e) if matches!(e.status(), 404 | 409) || e.status() >= 500 => {}
                // Any other refusal came after the upload was found in this scope, and
                // failed it: its place is free.
                Err(_) => {
                    staged.settled = true;
                    s.close_upload(&upload_id);
                }
            }
            drop(staged);
            answer?
        }
    };
    Ok(ok_json(&Envelope::ok(data, new_id())))
}

/// `GET .../attachments/{attachment_id}?from=&to=`: bytes of the attachment, as base64 in
/// the envelope.
pub(super) async fn download(
    State(s): State<Sandbox>,
    from: ConnScope,
    FlavourPath(AttachmentPath { attachment_id }, _): FlavourPath<AttachmentPath, Connectivity>,
    RawQuery(query): RawQuery,
) -> Reply<Connectivity> {
    wire::check_ref("attachment_id", &attachment_id)?;
    let query = RangeQuery::from_query_string(query.as_deref().unwrap_or(""))?;
    let meta = s.scoped(&attachment_id, &from.scope).await?;
    let range = query.resolve(meta.file_size, &s.inner.config.connectivity.limits)?;
    let bytes = s.inner.store.read_range(&meta.id, range).await?;
    let mut body = BytesMut::new();
    let conversation = &from.conversation;
    write_connectivity_download(&mut body, &attachment_id, conversation, &new_id(), [bytes]);
    Ok(ok_bytes(body))
}

/// `GET .../attachments/{attachment_id}/file_info`: its name, type and size.
pub(super) async fn file_info(
    State(s): State<Sandbox>,
    from: ConnScope,
    FlavourPath(AttachmentPath { attachment_id }, _): FlavourPath<AttachmentPath, Connectivity>,
) -> Reply<Connectivity> {
    wire::check_ref("attachment_id", &attachment_id)?;
    let meta = s.scoped(&attachment_id, &from.scope).await?;
    let info = FileInfo {
        file_type: meta.file_type,
        file_name: meta.file_name,
        file_size: meta.file_size,
    };
    Ok(ok_json(&Envelope::ok(info, new_id())))
}

/// A chunk's bytes counted against its upload's quota until the chunk is stored or its
/// upload closed: given back when dropped unsettled (refused for now, or cancelled).
struct StagedChunk<'a> {
    sandbox: &'a Sandbox,
    upload_id: &'a str,
    bytes: u64,
    settled: bool,
}

impl Drop for StagedChunk<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.sandbox.unstage_upload(self.upload_id, self.bytes);
        }
    }
}
