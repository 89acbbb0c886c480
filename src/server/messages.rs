//! The sandbox's messages: enough of the messaging APIs to link attachments to messages and
//! to run the Demand API's documented use cases locally (send, poll `latest`, confirm, read
//! a conversation).
//!
//! The APIs document the requests; the response shapes are the project's decisions
//! (`docs/protocol.md`, *Demand messages* and *Posting a message*): Demand responses are
//! `{"request_id", "data": {..}}` like the other Demand responses, Connectivity ones an
//! envelope whose `data` has `ok` and `message_id`.
//!
//! The messages live in the store ([`MessageStore`](crate::store::MessageStore)), beside
//! the attachments they carry: a restart keeps them and servers sharing a store share
//! them. The handlers hold no lock of their own.

use std::time::SystemTime;

use axum::extract::State;
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::extract::{ConnScope, KeyedJson, WireJson, WireRequest};
use super::idempotent;
use super::reply::{Connectivity, Demand, Reply, new_id, ok_json};
use super::{Sandbox, scope};
use crate::error::{Error, Result};
use crate::store::messages::{
    MAX_CONFIRM_IDS, MAX_MESSAGE_PAGE, check_attachment_count, check_confirm_count,
    check_content_len,
};
use crate::wire::connectivity::Envelope;
use crate::wire::{self, Id, OkFlag, demand, lenient_u64};

pub use crate::store::messages::{MAX_CONTENT, Message};

/// Messages `latest` returns at most: 100, as the Demand API documents.
pub const LATEST_LIMIT: usize = 100;

/// Largest `latest/confirm` body: 1 MiB, room for [`MAX_CONFIRM_IDS`] ids at their longest
/// ([`MAX_ID_LEN`](crate::store::messages::MAX_ID_LEN), escaped), so that a request naming
/// too many ids is answered with the cap on ids rather than a body size.
pub const MAX_CONFIRM_BODY: usize = 1024 * 1024;

/// A message posted now under a fresh time-ordered id (the order of ids is the order of
/// posts, across processes as far as their clocks agree).
pub(crate) fn new_message(
    accommodation: u64,
    conversation: String,
    reservation: Option<String>,
    content: String,
    attachments: Vec<String>,
) -> Result<Message> {
    let now = SystemTime::now();
    Ok(Message {
        message_id: crate::stream::ids::time_ordered_id(now)?.to_string(),
        conversation,
        accommodation,
        reservation,
        content,
        attachments,
        created_at: humantime::format_rfc3339_seconds(now).to_string(),
    })
}

/// Message content is required (Booking documents it) and bounded.
pub(crate) fn check_content(content: &str) -> Result<()> {
    if content.trim().is_empty() {
        return Err(Error::InvalidField {
            field: "content".into(),
            problem: "is required and must not be empty".into(),
        });
    }
    check_content_len(content)
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

/// Demand `POST /messages/send` (`docs/protocol.md`, *Demand messages*). `reply_to` is
/// accepted and, like every unknown field, ignored: the sandbox does not thread messages.
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

/// `POST /messages/latest/confirm` (`docs/protocol.md`, *Demand messages*).
#[derive(Debug, Deserialize)]
pub(crate) struct Confirm {
    pub messages: ConfirmIds,
}

/// The ids of a confirm request: the first [`MAX_CONFIRM_IDS`] kept, the rest only counted
/// (so a request over the cap costs no allocation per id, and is refused naming the cap).
#[derive(Debug)]
pub(crate) struct ConfirmIds {
    pub ids: Vec<String>,
    pub total: usize,
}

impl<'de> Deserialize<'de> for ConfirmIds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Ids;
        impl<'de> Visitor<'de> for Ids {
            type Value = ConfirmIds;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of message ids")
            }

            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<ConfirmIds, A::Error> {
                let mut ids = Vec::new();
                let mut total = 0;
                loop {
                    if total < MAX_CONFIRM_IDS {
                        match seq.next_element::<String>()? {
                            Some(id) => ids.push(id),
                            None => break,
                        }
                    } else if seq.next_element::<IgnoredAny>()?.is_none() {
                        break;
                    }
                    total += 1;
                }
                Ok(ConfirmIds { ids, total })
            }
        }
        d.deserialize_seq(Ids)
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct Confirmed {
    pub confirmed: usize,
}

/// `POST /messages/conversations` (`docs/protocol.md`, *Demand messages*).
#[derive(Debug, Deserialize)]
pub(crate) struct ConversationQuery {
    pub conversation: String,
    #[serde(with = "lenient_u64")]
    pub accommodation: u64,
    pub reservation: Id,
}

#[derive(Debug, Serialize)]
pub(crate) struct History {
    pub conversation: String,
    pub messages: Vec<Message>,
}

impl WireRequest for ConnPostMessage {
    type Flavour = Connectivity;
}

impl WireRequest for DemandSend {
    type Flavour = Demand;
}

impl WireRequest for Confirm {
    type Flavour = Demand;
    const LIMIT: usize = MAX_CONFIRM_BODY;
}

impl WireRequest for ConversationQuery {
    type Flavour = Demand;
}

/// Connectivity `POST .../conversations/{conversation_id}`: a message, linking the
/// attachments it carries.
pub(super) async fn conn_post(
    State(s): State<Sandbox>,
    to: ConnScope,
    req: KeyedJson<ConnPostMessage>,
) -> Reply<Connectivity> {
    let (value, key) = req.into_parts();
    idempotent::once(&s, key, conn_post_once(s.clone(), to, value)).await
}

/// One Connectivity message, posted once per `Idempotency-Key`.
async fn conn_post_once(s: Sandbox, to: ConnScope, req: ConnPostMessage) -> Reply<Connectivity> {
    let m = req.message;
    check_content(&m.content)?;
    check_attachment_count(m.attachment_ids.len())?;
    s.link(&m.attachment_ids, &to.scope).await?;
    let message = new_message(
        to.property,
        to.conversation,
        None,
        m.content,
        m.attachment_ids,
    )?;
    s.inner.store.post_message(&message).await?;
    let data = ConnPosted {
        ok: OkFlag(true),
        message_id: message.message_id,
    };
    Ok(ok_json(&Envelope::ok(data, new_id())))
}

/// Demand `POST /3.1/messages/send` (`docs/protocol.md`, *Demand messages*).
pub(super) async fn demand_send(
    State(s): State<Sandbox>,
    req: KeyedJson<DemandSend>,
) -> Reply<Demand> {
    let (value, key) = req.into_parts();
    idempotent::once(&s, key, demand_send_once(s.clone(), value)).await
}

/// One Demand message, sent once per `Idempotency-Key`.
async fn demand_send_once(s: Sandbox, req: DemandSend) -> Reply<Demand> {
    check_content(&req.content)?;
    wire::check_ref("reservation", req.reservation.as_str())?;
    let reservation = req.reservation.as_str().to_owned();
    check_attachment_count(req.attachments.len())?;
    let store = &s.inner.store;
    // Started by this message unless an upload or an earlier message gave the reservation
    // one (`docs/protocol.md`, *Demand messages*).
    let conversation = store
        .reservation_conversation(req.accommodation, &reservation, &new_id())
        .await?;
    s.link(&req.attachments, &scope(req.accommodation, &conversation))
        .await?;
    let message = new_message(
        req.accommodation,
        conversation,
        Some(reservation),
        req.content,
        req.attachments,
    )?;
    store.post_message(&message).await?;
    Ok(ok_json(&demand::Response {
        request_id: new_id(),
        data: DemandSent {
            message_id: message.message_id,
            conversation: message.conversation,
        },
    }))
}

/// Demand `GET` or `POST /3.1/messages/latest`: the unconfirmed messages, oldest first.
pub(super) async fn demand_latest(State(s): State<Sandbox>) -> Reply<Demand> {
    let messages = s.inner.store.latest_messages(LATEST_LIMIT).await?;
    Ok(ok_json(&demand::Response {
        request_id: new_id(),
        data: Messages { messages },
    }))
}

/// Demand `POST /3.1/messages/latest/confirm`.
pub(super) async fn demand_confirm(
    State(s): State<Sandbox>,
    WireJson(req): WireJson<Confirm>,
) -> Reply<Demand> {
    check_confirm_count(req.messages.total)?;
    // Ids are looked up in the store (a file name on fs, a key on S3): capped like every
    // other id before that.
    for (i, id) in req.messages.ids.iter().enumerate() {
        wire::check_ref(&format!("messages[{i}]"), id)?;
    }
    let confirmed = s.inner.store.confirm_messages(&req.messages.ids).await?;
    Ok(ok_json(&demand::Response {
        request_id: new_id(),
        data: Confirmed { confirmed },
    }))
}

/// Demand `POST /3.1/messages/conversations`: a conversation's messages.
pub(super) async fn demand_conversations(
    State(s): State<Sandbox>,
    WireJson(req): WireJson<ConversationQuery>,
) -> Reply<Demand> {
    wire::check_ref("conversation", &req.conversation)?;
    wire::check_ref("reservation", req.reservation.as_str())?;
    // The oldest MAX_MESSAGE_PAGE messages: one bounded page.
    let messages = s
        .inner
        .store
        .conversation_messages(req.accommodation, &req.conversation, None, MAX_MESSAGE_PAGE)
        .await?;
    if messages.is_empty() {
        return Err(Error::NotFound {
            what: "conversation",
            id: req.conversation,
        }
        .into());
    }
    Ok(ok_json(&demand::Response {
        request_id: new_id(),
        data: History {
            conversation: req.conversation,
            messages,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirm_requests_keep_the_first_ids_and_count_the_rest() {
        let ids: Vec<String> = (0..13_000).map(|n| n.to_string()).collect();
        let body = serde_json::json!({ "messages": ids }).to_string();
        let req: Confirm = crate::wire::from_slice(body.as_bytes()).unwrap();
        assert_eq!(req.messages.total, 13_000);
        assert_eq!(req.messages.ids.len(), MAX_CONFIRM_IDS);
        let req: Confirm = crate::wire::from_slice(br#"{"messages": ["a", "b"]}"#).unwrap();
        assert_eq!(
            (req.messages.ids, req.messages.total),
            (vec!["a".into(), "b".into()], 2)
        );
        assert!(crate::wire::from_slice::<Confirm>(br#"{"messages": [1]}"#).is_err());
        assert!(crate::wire::from_slice::<Confirm>(br#"{"messages": "a"}"#).is_err());
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
