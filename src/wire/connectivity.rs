//! Booking.com Connectivity (supply-xml) messaging attachments (`docs/protocol.md`,
//! *Connectivity*).
//!
//! Paths, under `/messaging/properties/{property_id}/conversations/{conversation_id}`:
//! `POST attachments` ([`UploadRequest`] -> [`UploadResponse`]), `POST attachment_chunks`
//! ([`ChunkRequest`] -> [`ChunkResponse`]), `GET attachments/{attachment_id}?from=&to=`
//! (-> [`DownloadResponse`]) and `GET attachments/{attachment_id}/file_info`
//! (-> [`FileInfoResponse`]). Every response is an [`Envelope`].

use serde::{Deserialize, Serialize};

use super::{Base64Text, OkFlag, lenient_u64};
use crate::error::Error;
use crate::upload::ChunkHeader;

/// The phase of a chunked upload: `start`, `resume` or `finish`.
pub use crate::upload::ChunkAction;

/// The response envelope: `errors`, `warnings`, `data`, `meta.ruid`.
///
/// `data` is absent from some error responses, so it is optional on input; the success
/// examples of the API's documentation always carry it (`docs/protocol.md`, *Connectivity
/// envelope*).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Errors; empty on success.
    #[serde(default)]
    pub errors: Vec<Problem>,
    /// Warnings; usually empty.
    #[serde(default)]
    pub warnings: Vec<Problem>,
    /// The payload.
    #[serde(default = "none", skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
    /// Request metadata.
    pub meta: Meta,
}

fn none<T>() -> Option<T> {
    None
}

impl<T> Envelope<T> {
    /// A success envelope around `data`.
    pub fn ok(data: T, ruid: impl Into<String>) -> Self {
        Envelope {
            errors: Vec::new(),
            warnings: Vec::new(),
            data: Some(data),
            meta: Meta { ruid: ruid.into() },
        }
    }

    /// An error envelope for `err` (no `data`), with the error's status as `code` and its
    /// wire message.
    pub fn error(err: &Error, ruid: impl Into<String>) -> Self {
        Envelope {
            errors: vec![Problem::from(err)],
            warnings: Vec::new(),
            data: None,
            meta: Meta { ruid: ruid.into() },
        }
    }
}

/// `meta` of an [`Envelope`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Booking's request id, quoted when asking support about a request.
    pub ruid: String,
}

/// One entry of `errors` or `warnings`.
///
/// The API's documentation only shows empty arrays; the project writes `{"code": <status>,
/// "message": ..}` and reads any object, keeping fields it does not know in `details`
/// (`docs/protocol.md`, *Connectivity envelope*).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// A numeric code (the HTTP status, on the project's server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u64>,
    /// What went wrong.
    #[serde(default)]
    pub message: String,
    /// Other fields, kept as they came.
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl From<&Error> for Problem {
    fn from(err: &Error) -> Self {
        Problem {
            code: Some(u64::from(err.status())),
            message: err.wire_message().into_owned(),
            details: serde_json::Map::new(),
        }
    }
}

/// `POST .../attachments`: a whole file (<= 1 MB decoded) in one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRequest<'a> {
    /// The attachment.
    #[serde(borrow)]
    pub attachment: Attachment<'a>,
}

/// The `attachment` object of an [`UploadRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment<'a> {
    /// The name shown to the other party.
    pub file_name: String,
    /// The file, base64.
    #[serde(borrow)]
    pub file_content: Base64Text<'a>,
    /// `image/jpeg` or `image/png`.
    pub file_type: String,
    /// Decoded size in bytes.
    #[serde(with = "lenient_u64")]
    pub file_size: u64,
}

/// Response `data` of an upload: `{"ok": "true", "attachment_id": ..}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadData {
    /// `"true"` on success.
    pub ok: OkFlag,
    /// The new attachment's id.
    pub attachment_id: String,
}

/// Response of `POST .../attachments`.
pub type UploadResponse = Envelope<UploadData>;

/// `POST .../attachment_chunks`: one chunk of a file over 1 MB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRequest<'a> {
    /// The chunk and its file's description.
    #[serde(borrow)]
    pub attachment: ChunkAttachment<'a>,
}

/// The `attachment` object of a [`ChunkRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkAttachment<'a> {
    /// `start`, `resume` or `finish`.
    pub action: ChunkAction,
    /// The id the `start` response returned; required with `resume` and `finish`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
    /// The chunk.
    #[serde(borrow)]
    pub chunk: Chunk<'a>,
    /// `image/jpeg` or `image/png`.
    pub file_type: String,
    /// Total decoded size of the file (1 MB < size <= 10 MB).
    #[serde(with = "lenient_u64")]
    pub file_size: u64,
    /// The name shown to the other party.
    pub file_name: String,
}

/// What the upload session judges: the chunk's fields, borrowed (the base64 text is not
/// copied).
impl<'a> From<&'a ChunkAttachment<'_>> for ChunkHeader<'a> {
    fn from(a: &'a ChunkAttachment<'_>) -> Self {
        ChunkHeader {
            action: a.action,
            upload_id: a.upload_id.as_deref(),
            number: a.chunk.chunk_number,
            size: a.chunk.chunk_size,
            file_name: &a.file_name,
            file_type: &a.file_type,
            file_size: a.file_size,
            content: a.chunk.chunk_content.as_bytes(),
        }
    }
}

/// The `chunk` object of a [`ChunkAttachment`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk<'a> {
    /// 0 for `start`, then one more for each chunk.
    #[serde(with = "lenient_u64")]
    pub chunk_number: u64,
    /// The chunk, base64.
    #[serde(borrow)]
    pub chunk_content: Base64Text<'a>,
    /// Decoded size of this chunk (<= 1 MB).
    #[serde(with = "lenient_u64")]
    pub chunk_size: u64,
}

/// Response `data` of a chunk: `upload_id` after `start`, `attachment_id` after `finish`,
/// both written as `null` otherwise (as the API's documentation shows; `docs/protocol.md`,
/// *Start resume and finish*).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkData {
    /// The new attachment's id, after `finish`.
    #[serde(default)]
    pub attachment_id: Option<String>,
    /// The upload's id, after `start`.
    #[serde(default)]
    pub upload_id: Option<String>,
    /// `"true"` on success.
    pub ok: OkFlag,
}

/// Response of `POST .../attachment_chunks`.
pub type ChunkResponse = Envelope<ChunkData>;

/// Response `data` of a download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadData<'a> {
    /// `"true"` on success.
    pub ok: OkFlag,
    /// The requested bytes, base64.
    #[serde(borrow)]
    pub file_content: Base64Text<'a>,
    /// The attachment's id.
    pub attachment_id: String,
    /// The conversation's id.
    pub conversation_id: String,
}

/// Response of `GET .../attachments/{attachment_id}`.
pub type DownloadResponse<'a> = Envelope<DownloadData<'a>>;

/// Response `data` of `file_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// The attachment's type.
    pub file_type: String,
    /// The attachment's name.
    pub file_name: String,
    /// Its size in bytes.
    #[serde(with = "lenient_u64")]
    pub file_size: u64,
}

/// Response of `GET .../attachments/{attachment_id}/file_info`.
pub type FileInfoResponse = Envelope<FileInfo>;
