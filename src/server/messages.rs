//! The sandbox's messages: enough of the messaging APIs to link attachments to messages and
//! to run seed 004's use cases locally (send, poll `latest`, confirm, read a conversation).
//!
//! The seeds give the request bodies; the response shapes are the project's decisions
//! (README, "Decisions"): Demand responses are `{"request_id", "data": {..}}` like the
//! other Demand responses, Connectivity ones an envelope whose `data` has `ok` and
//! `message_id`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::wire::{Id, OkFlag, lenient_u64};

/// Longest message content accepted, in bytes.
pub const MAX_CONTENT: usize = 8 * 1024;

/// Messages the sandbox keeps; beyond it the oldest are forgotten, so its memory stays
/// bounded (about 100,000 x 8 KiB at most) however long it runs.
pub const MAX_MESSAGES: usize = 100_000;

/// One message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Its id.
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

impl Message {
    /// A message posted now (its id is set when posted).
    pub fn new(
        accommodation: u64,
        conversation: String,
        reservation: Option<String>,
        content: String,
        attachments: Vec<String>,
    ) -> Self {
        Message {
            message_id: String::new(),
            conversation,
            accommodation,
            reservation,
            content,
            attachments,
            created_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        }
    }
}

/// The messages posted (the last [`MAX_MESSAGES`]), in order, and which ones
/// `latest/confirm` acknowledged.
#[derive(Debug, Default)]
pub struct MessageBoard {
    messages: VecDeque<Message>,
    confirmed: HashSet<String>,
    /// Conversation of each (accommodation, reservation), created by the first `send`.
    conversations: HashMap<(u64, String), String>,
}

impl MessageBoard {
    /// Posts `message` under a fresh id and returns the id.
    pub fn post(&mut self, mut message: Message) -> String {
        message.message_id = crate::stream::random_id()
            .map(|id| id.to_string())
            .unwrap_or_else(|_| format!("message-{}", self.messages.len()));
        let id = message.message_id.clone();
        if self.messages.len() >= MAX_MESSAGES
            && let Some(old) = self.messages.pop_front()
        {
            self.confirmed.remove(&old.message_id);
        }
        self.messages.push_back(message);
        id
    }

    /// The conversation of a reservation, started (with an id from `new_id`) if there is
    /// none yet, as seed 004 describes.
    pub fn conversation_for(
        &mut self,
        accommodation: u64,
        reservation: &str,
        new_id: impl FnOnce() -> String,
    ) -> String {
        let key = (accommodation, reservation.to_owned());
        // Bounded: past the cap one is forgotten (its reservation gets a new conversation
        // on its next message).
        if self.conversations.len() >= MAX_MESSAGES
            && !self.conversations.contains_key(&key)
            && let Some(old) = self.conversations.keys().next().cloned()
        {
            self.conversations.remove(&old);
        }
        self.conversations.entry(key).or_insert_with(new_id).clone()
    }

    /// Up to `limit` messages not confirmed yet, oldest first.
    pub fn latest(&self, limit: usize) -> Vec<Message> {
        self.messages
            .iter()
            .filter(|m| !self.confirmed.contains(&m.message_id))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Confirms these messages; returns how many were known and not yet confirmed.
    pub fn confirm(&mut self, ids: &[String]) -> usize {
        ids.iter()
            .filter(|id| self.messages.iter().any(|m| &m.message_id == *id))
            .filter(|id| self.confirmed.insert((*id).clone()))
            .count()
    }

    /// Every message of a conversation, or `None` when it has none.
    pub fn history(&self, accommodation: u64, conversation: &str) -> Option<Vec<Message>> {
        let found: Vec<Message> = self
            .messages
            .iter()
            .filter(|m| m.accommodation == accommodation && m.conversation == conversation)
            .cloned()
            .collect();
        (!found.is_empty()).then_some(found)
    }
}

/// Message content is required (Booking documents it) and bounded.
pub(crate) fn check_content(content: &str) -> Result<()> {
    if content.trim().is_empty() {
        return Err(Error::InvalidField {
            field: "content".into(),
            problem: "is required and must not be empty".into(),
        });
    }
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

/// Connectivity `POST .../conversations/{conversation_id}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ConnPostMessage {
    pub message: ConnMessage,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ConnMessage {
    pub content: String,
    #[serde(default)]
    pub attachment_ids: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ConnPosted {
    pub ok: OkFlag,
    pub message_id: String,
}

/// Demand `POST /messages/send` (seeds 002 and 004). `reply_to` is accepted and, like
/// every unknown field, ignored: the sandbox does not thread messages.
#[derive(Debug, Deserialize)]
pub(crate) struct DemandSend {
    pub reservation: Id,
    #[serde(with = "lenient_u64")]
    pub accommodation: u64,
    pub content: String,
    #[serde(default)]
    pub attachments: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct DemandSent {
    pub message_id: String,
    pub conversation: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct Messages {
    pub messages: Vec<Message>,
}

/// `POST /messages/latest/confirm` (seed 004).
#[derive(Debug, Deserialize)]
pub(crate) struct Confirm {
    pub messages: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Confirmed {
    pub confirmed: usize,
}

/// `POST /messages/conversations` (seed 004).
#[derive(Debug, Deserialize)]
pub(crate) struct ConversationQuery {
    pub conversation: String,
    #[serde(with = "lenient_u64")]
    pub accommodation: u64,
    #[allow(dead_code)]
    pub reservation: Id,
}

#[derive(Debug, Serialize)]
pub(crate) struct History {
    pub conversation: String,
    pub messages: Vec<Message>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(n: usize) -> Message {
        Message::new(1, "c".into(), None, format!("m{n}"), Vec::new())
    }

    #[test]
    fn the_board_keeps_the_newest_messages_up_to_its_cap() {
        let mut board = MessageBoard::default();
        let first = board.post(message(0));
        assert_eq!(board.confirm(&[first.clone(), "unknown".into()]), 1);
        assert_eq!(board.confirm(std::slice::from_ref(&first)), 0);
        for n in 1..MAX_MESSAGES + 5 {
            board.post(message(n));
        }
        let kept = board.latest(usize::MAX);
        assert_eq!(kept.len(), MAX_MESSAGES);
        assert_eq!(kept[0].content, "m5");
        assert_eq!(kept.last().map(|m| m.content.as_str()), Some("m100004"));
        assert_eq!(board.history(1, "c").map(|h| h.len()), Some(MAX_MESSAGES));
        assert_eq!(board.history(2, "c"), None);
    }

    #[test]
    fn content_is_required_and_bounded() {
        assert!(check_content("hi").is_ok());
        assert_eq!(
            check_content("  ").unwrap_err().to_string(),
            "content is required and must not be empty"
        );
        assert_eq!(
            check_content(&"x".repeat(MAX_CONTENT + 1))
                .unwrap_err()
                .to_string(),
            "content is 8193 bytes, more than the 8192 bytes allowed"
        );
    }
}
