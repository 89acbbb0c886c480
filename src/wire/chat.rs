//! The chat-platform attachments resource (`docs/protocol.md`, *Chat attachments resource*):
//! attachment objects, the paginated list, the rename body, and the error shape.
//!
//! The platform's documentation shows no error body (`docs/protocol.md`, *Chat responses*);
//! this crate's server answers
//! `{"error": {"status": 404, "message": "..."}}` and its client reads that shape (or
//! falls back to the start of the body).
//!
//! # Examples
//!
//! ```
//! use attachments::wire::chat::AttachmentList;
//!
//! // The documented list response (`docs/protocol.md`, *The attachment object*), its
//! // second attachment cut short as in the documentation.
//! let page: AttachmentList = serde_json::from_str(r#"{"has_more": false, "data": [{
//!     "id": "Nc6yKKMpcxiiFxp6", "message_id": "LoPsJaMcPBuFNjg1",
//!     "filename": "Invoice_room_service__Plaza_Hotel.pdf",
//!     "file_url": "https://assets.protocol.chat/attachments/Invoice_room_service__Plaza_Hotel.pdf",
//!     "file_type": "application/pdf", "file_size": 21352, "created_at": 692233200}]}"#)?;
//! assert_eq!(page.data[0].file_size, 21352);
//! assert!(!page.has_more);
//! # Ok::<(), serde_json::Error>(())
//! ```

use serde::{Deserialize, Serialize};

/// The largest `limit` of a list request.
pub const MAX_LIST_LIMIT: usize = 100;

/// The `limit` of a list request that names none.
pub const DEFAULT_LIST_LIMIT: usize = 10;

/// One attachment, as every endpoint of the resource returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The attachment's id.
    pub id: String,
    /// The message it belongs to (`null` when the upload named none).
    #[serde(default)]
    pub message_id: Option<String>,
    /// The conversation it was uploaded to (`null` when the upload named none). The
    /// platform's documentation lists it as a filter, not a property; it is returned so a
    /// client can check it (`docs/protocol.md`, *The attachment object*).
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// The file name.
    pub filename: String,
    /// Where the file's bytes are served (`GET /v1/attachments/{id}/content`).
    pub file_url: String,
    /// The type it was accepted as (recognised from its content where possible).
    pub file_type: String,
    /// Size in bytes.
    pub file_size: u64,
    /// When it was uploaded, Unix seconds.
    pub created_at: u64,
}

/// A page of `GET /v1/attachments`: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentList {
    /// Whether older attachments follow: ask again with `starting_after` = the last id.
    pub has_more: bool,
    /// The attachments, newest first.
    pub data: Vec<Attachment>,
}

/// The body of `PUT /v1/attachments/{id}` (sent as a form or as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Update {
    /// The new file name; the name stays as it is when absent.
    #[serde(default)]
    pub filename: Option<String>,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// What went wrong.
    pub error: ErrorBody,
}

/// The inside of an [`ErrorResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The HTTP status, repeated.
    pub status: u16,
    /// What went wrong and what to do.
    pub message: String,
}
