//! Booking.com Demand API v3 messaging attachments (`docs/protocol.md`, *Demand*).
//!
//! `POST /messages/attachments/upload` ([`UploadRequest`] -> [`Response`]`<`[`UploadData`]`>`),
//! `POST /messages/attachments/metadata` ([`AttachmentRef`] ->
//! [`Response`]`<`[`MetadataData`]`>`) and `POST /messages/attachments/download`
//! ([`AttachmentRef`]). Errors are an [`ErrorResponse`].

use serde::{Deserialize, Serialize};

use super::{Base64Text, Id, lenient_u64};
use crate::error::Error;

/// `POST /messages/attachments/upload`: one file (< 1 MB decoded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRequest<'a> {
    /// The accommodation (property) id.
    #[serde(with = "lenient_u64")]
    pub accommodation: u64,
    /// The conversation id.
    pub conversation: String,
    /// The reservation id (a string in the documented upload, an integer in the documented
    /// messages; read as either: `docs/protocol.md`, *Conventions*).
    pub reservation: Id,
    /// The file, base64 (padded or not).
    #[serde(borrow)]
    pub file_content: Base64Text<'a>,
    /// The name shown to the other party.
    pub file_name: String,
    /// `image/png`, `image/jpeg` (or `image/jpg`).
    pub file_type: String,
    /// Decoded size in bytes.
    #[serde(with = "lenient_u64")]
    pub file_size: u64,
}

/// A success response: `request_id` and `data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response<T> {
    /// The request's id.
    pub request_id: String,
    /// The payload.
    pub data: T,
}

/// Response `data` of an upload: `{"attachment": <id>}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadData {
    /// The new attachment's id.
    pub attachment: String,
}

/// Body of `metadata` and `download` requests: which attachment, in which conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRef {
    /// The conversation id.
    pub conversation: String,
    /// The accommodation (property) id.
    #[serde(with = "lenient_u64")]
    pub accommodation: u64,
    /// The attachment id.
    pub attachment: String,
}

/// Response `data` of `metadata`: `{"metadata": {..}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataData {
    /// The attachment's basic metadata.
    pub metadata: Metadata,
}

/// Name, type and size of an attachment; no timestamps or status flags (`docs/protocol.md`,
/// *Demand metadata and download*).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Size in bytes.
    #[serde(with = "lenient_u64")]
    pub file_size: u64,
    /// The stored name.
    pub file_name: String,
    /// The type.
    pub file_type: String,
}

/// An error response: `errors` and, when the server gave one, `request_id`.
///
/// # Examples
///
/// ```
/// use attachments::{Error, wire::demand::ErrorResponse};
///
/// let body = ErrorResponse::from_error(&Error::SizeMismatch { actual: 35, declared: 350 }, None);
/// assert_eq!(
///     serde_json::to_value(&body).unwrap(),
///     serde_json::json!({"errors": [{"id": 400, "message": {
///         "error": "bad request",
///         "message": "Request failed with code: 400, message: Content length is 35 but metadata size is 350"
///     }}]})
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The request's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// What went wrong.
    pub errors: Vec<ErrorEntry>,
}

impl ErrorResponse {
    /// The response for `err`: one entry with its status, status text and wire message.
    pub fn from_error(err: &Error, request_id: Option<String>) -> Self {
        let status = err.status();
        ErrorResponse {
            request_id,
            errors: vec![ErrorEntry {
                id: status,
                message: ErrorMessage {
                    error: status_text(status).to_owned(),
                    message: err.wire_message().into_owned(),
                },
            }],
        }
    }
}

/// One entry of [`ErrorResponse::errors`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEntry {
    /// The HTTP status.
    pub id: u16,
    /// The status text and the message.
    pub message: ErrorMessage,
}

/// `{"error": "bad request", "message": ..}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMessage {
    /// The status in words, lowercase (`bad request`).
    pub error: String,
    /// What went wrong.
    pub message: String,
}

/// The lowercase status text the Demand API puts in `error`.
pub fn status_text(status: u16) -> &'static str {
    match status {
        400 => "bad request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not found",
        413 => "payload too large",
        415 => "unsupported media type",
        429 => "too many requests",
        500 => "internal server error",
        503 => "service unavailable",
        _ => "error",
    }
}
