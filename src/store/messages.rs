//! Messages in the store: the [`MessageStore`] trait, the [`Message`] record, and the caps
//! every backend keeps.
//!
//! The sandbox's messages (Connectivity posts, Demand `send` / `latest` / `confirm` /
//! `conversations`; `docs/protocol.md`, *Demand messages*) live where its attachments live,
//! so a restart loses none of them and several server processes on one bucket or directory
//! see the same ones.
//!
//! # The contract
//!
//! - [`MessageStore::post_message`] stores a message under the id its caller chose. Ids
//!   are expected to be time-ordered ([`RandomId::time_ordered`](crate::upload::RandomId::time_ordered)),
//!   so that the order of ids is the order of posts: every listing below is in id order.
//!   A taken id is refused ([`Error::Taken`]); nothing else about the message is changed.
//! - [`MessageStore::latest_messages`] lists the unconfirmed messages with the lowest ids
//!   (the oldest), up to a limit; [`MessageStore::confirm_messages`] confirms messages by
//!   id, each by one lookup, and says how many were confirmed by this call (unknown ids,
//!   ids confirmed before and repeated ids count 0), at most [`MAX_CONFIRM_IDS`] a call.
//!   Of two processes confirming the same id at once, one counts it.
//! - [`MessageStore::conversation_messages`] reads a conversation (accommodation and
//!   conversation id) oldest first, a page at a time, confirmed or not.
//! - [`MessageStore::reservation_conversation`] gives a reservation its conversation:
//!   the proposed one if it has none yet, else the one it has. It is a create-if-absent:
//!   two processes proposing different conversations for one reservation at once both get
//!   the one that won.
//!
//! Every field that ends up in a record is bounded ([`check_message`]), so a record has a
//! bounded size ([`MAX_MESSAGE_RECORD`]), which the file and S3 backends check again when
//! they read one back.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest message content accepted, in bytes (8 KiB: a chat message, not a document; a
/// file goes in an attachment).
pub const MAX_CONTENT: usize = 8 * 1024;

/// Longest id accepted, in bytes, for a message, a conversation, a reservation and an
/// attachment named in a message: 255, as for file names. Ids are also refused when they
/// hold control characters. Without a bound, one message with a 63 KB reservation id cost
/// 117 KB of the sandbox's memory.
pub const MAX_ID_LEN: usize = crate::wire::MAX_REF_LEN;

/// Most attachments one message may carry: 20. A send checks and links each one (two store
/// calls apiece, four S3 requests), so this bounds the work of one request; the APIs
/// document no number.
pub const MAX_MESSAGE_ATTACHMENTS: usize = 20;

/// Most ids one `latest/confirm` request may name: 1,000 (ten `latest` pages). Each is one
/// lookup (three S3 requests on the S3 store), so this bounds the work of one request;
/// more is refused with a 400 naming this cap.
pub const MAX_CONFIRM_IDS: usize = 1_000;

/// Most messages one [`MessageStore::latest_messages`] or
/// [`MessageStore::conversation_messages`] call returns: 1,000. The sandbox's `latest`
/// asks for 100, as the Demand API documents.
pub const MAX_MESSAGE_PAGE: usize = 1_000;

/// Longest `created_at` text kept (an RFC 3339 time is 20 to 35 bytes).
pub const MAX_CREATED_AT: usize = 64;

/// Largest record of one message, as JSON, that a backend writes or reads back: every
/// field at its cap, each character escaped as JSON escapes it at worst (six bytes for a
/// control character in the content, two for a quote or backslash in an id), plus 1 KiB
/// for the field names and numbers: 62,604 bytes (about 61 KiB).
pub const MAX_MESSAGE_RECORD: usize = 6 * MAX_CONTENT
    + 2 * (4 * MAX_ID_LEN + MAX_CREATED_AT)
    + MAX_MESSAGE_ATTACHMENTS * (2 * MAX_ID_LEN + 3)
    + 1024;

/// One message, as stored and as the sandbox's `latest` and `conversations` answer it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Its id (time-ordered: the order of ids is the order of posts).
    pub message_id: String,
    /// The conversation it belongs to.
    pub conversation: String,
    /// The accommodation (property).
    pub accommodation: u64,
    /// The reservation, when sent through the Demand API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<String>,
    /// The text.
    pub content: String,
    /// Ids of the attachments it carries.
    pub attachments: Vec<String>,
    /// When it was posted, RFC 3339 UTC.
    pub created_at: String,
}

/// Messages kept in a store beside its attachments. Every [`Store`](super::Store) is one
/// (it is a supertrait of `Store`): a server reaches its messages through the same
/// `Arc<dyn Store>` as its attachments, so they cannot end up in different places (the
/// attachments in a shared bucket, the messages in one process), and a store of your own
/// says how it keeps them. See the [module documentation](self) for the contract.
#[async_trait]
pub trait MessageStore: Send + Sync + fmt::Debug {
    /// Stores `message` under its `message_id`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidField`] for a field over its cap ([`check_message`]);
    /// [`Error::Taken`] when the id is in use; [`Error::Io`].
    async fn post_message(&self, message: &Message) -> Result<()>;

    /// Up to `limit` (at most [`MAX_MESSAGE_PAGE`]) unconfirmed messages, lowest id
    /// (oldest) first.
    ///
    /// # Errors
    ///
    /// [`Error::Io`]; [`Error::CorruptState`] for a record that cannot be read back.
    async fn latest_messages(&self, limit: usize) -> Result<Vec<Message>>;

    /// Confirms the messages `ids` names; returns how many this call confirmed. Unknown
    /// ids, ids already confirmed and repeats count 0.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidField`] (field `messages`) for more than [`MAX_CONFIRM_IDS`] ids;
    /// [`Error::Io`].
    async fn confirm_messages(&self, ids: &[String]) -> Result<usize>;

    /// Up to `limit` (at most [`MAX_MESSAGE_PAGE`]) messages of a conversation, oldest
    /// first, those with an id above `after` when it is given (the last id of the
    /// previous page); empty for a conversation with no messages.
    ///
    /// # Errors
    ///
    /// [`Error::Io`]; [`Error::CorruptState`] for a record that cannot be read back.
    async fn conversation_messages(
        &self,
        accommodation: u64,
        conversation: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Message>>;

    /// The conversation of reservation `reservation` at `accommodation`: `proposed` if the
    /// reservation has none yet (it then becomes its conversation), else the one it has.
    /// Atomic: of several callers at once, all get the same answer.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidField`] for an id over its cap; [`Error::Io`].
    async fn reservation_conversation(
        &self,
        accommodation: u64,
        reservation: &str,
        proposed: &str,
    ) -> Result<String>;
}

/// Checks an id against [`MAX_ID_LEN`]: 1 to 255 bytes, no control characters, as
/// [`wire::check_ref`](crate::wire::check_ref) checks every id a request carries. `field`
/// names it in the error.
///
/// # Errors
///
/// [`Error::InvalidField`] naming `field` and the rule.
pub fn check_id(field: &str, id: &str) -> Result<()> {
    crate::wire::check_ref(field, id)
}

/// Checks a message id: as [`check_id`], and only ASCII letters, digits, `-` and `_`, since
/// backends use it as a file or object name.
///
/// # Errors
///
/// [`Error::InvalidField`] (field `message_id`).
pub fn check_message_id(id: &str) -> Result<()> {
    check_id("message_id", id)?;
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Error::InvalidField {
            field: "message_id".into(),
            problem: "must be ASCII letters, digits, '-' and '_' only".into(),
        });
    }
    Ok(())
}

/// Checks every field of a message against its cap: the ids ([`check_id`],
/// [`check_message_id`]), the content ([`MAX_CONTENT`]), the number of attachments
/// ([`MAX_MESSAGE_ATTACHMENTS`]) and `created_at` ([`MAX_CREATED_AT`]). Every backend
/// calls it before storing a message.
///
/// # Errors
///
/// [`Error::InvalidField`] naming the field and its cap.
pub fn check_message(message: &Message) -> Result<()> {
    check_message_id(&message.message_id)?;
    check_id("conversation", &message.conversation)?;
    if let Some(reservation) = &message.reservation {
        check_id("reservation", reservation)?;
    }
    check_content_len(&message.content)?;
    check_attachment_count(message.attachments.len())?;
    for id in &message.attachments {
        check_id("attachments", id)?;
    }
    if message.created_at.len() > MAX_CREATED_AT {
        return Err(Error::InvalidField {
            field: "created_at".into(),
            problem: format!(
                "is {} bytes, more than the {MAX_CREATED_AT} bytes allowed",
                message.created_at.len()
            ),
        });
    }
    Ok(())
}

/// Checks the content's length against [`MAX_CONTENT`].
///
/// # Errors
///
/// [`Error::InvalidField`] (field `content`).
pub fn check_content_len(content: &str) -> Result<()> {
    if content.len() > MAX_CONTENT {
        return Err(Error::InvalidField {
            field: "content".into(),
            problem: format!(
                "is {} bytes, more than the {MAX_CONTENT} bytes allowed",
                content.len()
            ),
        });
    }
    Ok(())
}

/// Checks a number of attachments against [`MAX_MESSAGE_ATTACHMENTS`].
///
/// # Errors
///
/// [`Error::InvalidField`] (field `attachments`).
pub fn check_attachment_count(n: usize) -> Result<()> {
    if n > MAX_MESSAGE_ATTACHMENTS {
        return Err(Error::InvalidField {
            field: "attachments".into(),
            problem: format!(
                "names {n} attachments, more than the {MAX_MESSAGE_ATTACHMENTS} a message may carry"
            ),
        });
    }
    Ok(())
}

/// Checks the number of ids of one confirm call against [`MAX_CONFIRM_IDS`].
///
/// # Errors
///
/// [`Error::InvalidField`] (field `messages`).
pub fn check_confirm_count(n: usize) -> Result<()> {
    if n > MAX_CONFIRM_IDS {
        return Err(Error::InvalidField {
            field: "messages".into(),
            problem: format!(
                "names {n} ids, more than the {MAX_CONFIRM_IDS} one request may confirm; \
                 confirm them in batches of at most {MAX_CONFIRM_IDS}"
            ),
        });
    }
    Ok(())
}

/// The ids of a confirm call worth looking up, in order, without repeats: those that can
/// be message ids at all (others are unknown, and count 0).
pub(crate) fn confirmable(ids: &[String]) -> Result<Vec<&str>> {
    check_confirm_count(ids.len())?;
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    Ok(ids
        .iter()
        .map(String::as_str)
        .filter(|id| check_message_id(id).is_ok() && seen.insert(*id))
        .collect())
}

/// A short, fixed-length name for a key made of an accommodation and an id (a
/// conversation or a reservation): SHA-256 of both, hex, 32 digits. Used by the backends
/// that name files or objects after it.
pub(crate) fn key_hash(kind: &str, accommodation: u64, id: &str) -> String {
    let text = format!("{kind}\0{accommodation}\0{id}");
    crate::digest::sha256(text.as_bytes()).to_hex()[..32].to_owned()
}

/// What a backend stores for a reservation's conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ReservationRecord {
    pub accommodation: u64,
    pub reservation: String,
    pub conversation: String,
}

/// Largest reservation record read back: three ids at their cap, escaped, and room for the
/// field names.
pub(crate) const MAX_RESERVATION_RECORD: usize = 6 * MAX_ID_LEN + 512;

/// Reads a message record read back from a backend: within [`MAX_MESSAGE_RECORD`], valid
/// JSON, fields within their caps, and the id it was stored under.
pub(crate) fn parse_record(bytes: &[u8], id: &str, where_: &dyn fmt::Display) -> Result<Message> {
    let what = || format!("the record of message {id} ({where_})");
    if bytes.len() > MAX_MESSAGE_RECORD {
        return Err(Error::corrupt(
            what(),
            format!(
                "{} bytes, over the {MAX_MESSAGE_RECORD}-byte limit for a message",
                bytes.len()
            ),
        ));
    }
    let message: Message =
        serde_json::from_slice(bytes).map_err(|e| Error::corrupt(what(), e.to_string()))?;
    check_message(&message).map_err(|e| Error::corrupt(what(), e.to_string()))?;
    if message.message_id != id {
        return Err(Error::corrupt(
            what(),
            format!("it holds message {:?}", message.message_id),
        ));
    }
    Ok(message)
}

/// The JSON record of a message, checked against the caps first.
pub(crate) fn to_record(message: &Message) -> Result<Vec<u8>> {
    check_message(message)?;
    let bytes = serde_json::to_vec(message)?;
    debug_assert!(bytes.len() <= MAX_MESSAGE_RECORD);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        Message {
            message_id: "0190c1a2-0000-7000-8000-000000000001".into(),
            conversation: "c".into(),
            accommodation: 1,
            reservation: Some("r".into()),
            content: "hi".into(),
            attachments: vec![],
            created_at: "2025-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn a_record_with_every_field_at_its_cap_fits_the_record_limit() {
        // The worst case for JSON escaping: control characters in the content (six bytes
        // each) and quotes in every id (two bytes each).
        let id = "\"".repeat(MAX_ID_LEN);
        let m = Message {
            message_id: "a".repeat(MAX_ID_LEN),
            conversation: id.clone(),
            accommodation: u64::MAX,
            reservation: Some(id.clone()),
            content: "\u{1}".repeat(MAX_CONTENT),
            attachments: vec![id; MAX_MESSAGE_ATTACHMENTS],
            created_at: "\"".repeat(MAX_CREATED_AT),
        };
        let record = to_record(&m).unwrap();
        assert!(record.len() <= MAX_MESSAGE_RECORD, "{}", record.len());
        assert_eq!(parse_record(&record, &m.message_id, &"test").unwrap(), m);
    }

    #[test]
    fn fields_over_their_caps_are_refused_naming_field_and_cap() {
        type Change = fn(&mut Message);
        let cases: [(Change, &str); 7] = [
            (
                |m| m.reservation = Some("r".repeat(256)),
                "reservation is 256 bytes long, over the 255-byte limit",
            ),
            (
                |m| m.conversation = "c\nd".into(),
                "conversation contains a control character",
            ),
            (|m| m.conversation = String::new(), "conversation is empty"),
            (
                |m| m.message_id = "a/b".into(),
                "message_id must be ASCII letters, digits, '-' and '_' only",
            ),
            (
                |m| m.content = "x".repeat(MAX_CONTENT + 1),
                "content is 8193 bytes, more than the 8192 bytes allowed",
            ),
            (
                |m| m.attachments = vec!["a".into(); 21],
                "attachments names 21 attachments, more than the 20 a message may carry",
            ),
            (
                |m| m.attachments = vec!["a".repeat(300)],
                "attachments is 300 bytes long, over the 255-byte limit",
            ),
        ];
        for (change, expected) in cases {
            let mut m = message();
            change(&mut m);
            let err = check_message(&m).unwrap_err();
            assert!(matches!(err, Error::InvalidField { .. }), "{err:?}");
            assert_eq!(err.to_string(), expected);
            assert_eq!(err.status(), 400);
        }
        assert!(check_message(&message()).is_ok());
    }

    #[test]
    fn confirm_ids_are_capped_and_deduplicated() {
        let err = confirmable(&vec!["a".to_owned(); 13_000]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "messages names 13000 ids, more than the 1000 one request may confirm; confirm \
             them in batches of at most 1000"
        );
        let ids = ["b", "a", "b", "../x", ""].map(String::from);
        assert_eq!(confirmable(&ids).unwrap(), ["b", "a"]);
    }

    #[test]
    fn records_read_back_are_checked() {
        let m = message();
        let mut record = to_record(&m).unwrap();
        assert!(matches!(
            parse_record(&record, "other", &"test"),
            Err(Error::CorruptState { .. })
        ));
        record.resize(MAX_MESSAGE_RECORD + 1, b' ');
        let err = parse_record(&record, &m.message_id, &"test").unwrap_err();
        assert!(err.to_string().contains("over the"), "{err}");
    }
}
