//! Messages of the [`ObjectStoreBackend`]: objects beside the attachments, so every server
//! process on the bucket sees the same messages and none keeps any.
//!
//! ```text
//! messages/records/<message_id>            the message (JSON), created with If-None-Match: *
//! messages/unconfirmed/<message_id>        empty: not confirmed yet (listed in key order by `latest`)
//! messages/confirmed/<message_id>          empty, created with If-None-Match: *: the confirm that counted it
//! messages/conversations/<h>/<message_id>  empty: the conversation's messages
//!                                          (h: SHA-256 of accommodation and conversation)
//! messages/reservations/<h>                a reservation's conversation, created with If-None-Match: *
//!                                          (h: SHA-256 of accommodation and reservation)
//! ```
//!
//! - **Post**: the record is created conditionally (a taken id is refused), then the
//!   conversation's entry and the unconfirmed entry are written, then the confirmed marker
//!   is looked for: a confirm that ran between the record and the entry removes the entry
//!   here instead (the confirm writes its marker before deleting, the post writes its
//!   entry before looking, so one of the two sees the other).
//! - **Latest**: one `LIST` of `unconfirmed/`, which S3 returns in key order, so the first
//!   `limit` names are the oldest (a backend that does not list in key order is detected
//!   and read whole); then a `GET` of each record, a few at a time.
//! - **Confirm**, per id: `HEAD` of the record (an unknown id counts 0), a conditional
//!   create of the confirmed marker (of two servers confirming at once, one counts the
//!   message), and a `DELETE` of the unconfirmed entry (also when the marker existed, which
//!   finishes a confirm interrupted before its delete). Ids are handled 16 at a time.
//! - **Reservation**: the record is created conditionally; a loser reads the winner's.
//!
//! Records are read back only up to [`MAX_MESSAGE_RECORD`] bytes. Nothing is removed:
//! messages are kept as long as the bucket (as linked attachments are); each costs one
//! record of at most [`MAX_MESSAGE_RECORD`] bytes and two or three empty objects.

use std::collections::BinaryHeap;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::ObjectStoreBackend;
use super::messages::{
    MAX_MESSAGE_PAGE, MAX_MESSAGE_RECORD, MAX_RESERVATION_RECORD, Message, MessageStore,
    ReservationRecord, check_id, check_message_id, confirmable, key_hash, parse_record, to_record,
};
use crate::error::{Error, Result};

/// Requests in flight for one call (record reads of a page, lookups of a confirm).
const IN_FLIGHT: usize = 16;

fn io(op: &str, path: &Path, e: object_store::Error) -> Error {
    let kind = match e {
        object_store::Error::NotFound { .. } => std::io::ErrorKind::NotFound,
        object_store::Error::AlreadyExists { .. } => std::io::ErrorKind::AlreadyExists,
        _ => std::io::ErrorKind::Other,
    };
    Error::io_other(format!("{op} {path}"), kind, e)
}

/// Whether a conditional create lost: the object exists.
fn exists(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }
    )
}

impl ObjectStoreBackend {
    fn messages_path(&self, parts: &[&str]) -> Path {
        let mut path = self.object_store().1.clone().join("messages");
        for part in parts {
            path = path.join(*part);
        }
        path
    }

    fn conversation_prefix(&self, accommodation: u64, conversation: &str) -> Path {
        let h = key_hash("conversation", accommodation, conversation);
        self.messages_path(&["conversations", &h])
    }

    fn store(&self) -> &dyn ObjectStore {
        self.object_store().0.as_ref()
    }

    /// Writes an object; with `create`, only if it does not exist (`Ok(false)` when it does).
    async fn put_object(&self, path: &Path, body: Bytes, create: bool) -> Result<bool> {
        let mode = if create {
            PutMode::Create
        } else {
            PutMode::Overwrite
        };
        match self
            .store()
            .put_opts(path, PutPayload::from(body), PutOptions::from(mode))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if create && exists(&e) => Ok(false),
            Err(e) => Err(io("writing", path, e)),
        }
    }

    async fn delete_object(&self, path: &Path) -> Result<()> {
        match self.store().delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(io("deleting", path, e)),
        }
    }

    async fn object_exists(&self, path: &Path) -> Result<bool> {
        match self.store().head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(io("checking", path, e)),
        }
    }

    /// Reads an object of at most `limit` bytes (a bigger one is damaged state, refused
    /// before its bytes are read); `None` when it does not exist.
    async fn read_bounded(&self, path: &Path, limit: usize) -> Result<Option<Bytes>> {
        let got = match self.store().get(path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(io("reading", path, e)),
        };
        if got.meta.size > limit as u64 {
            return Err(Error::corrupt(
                format!("the record {path}"),
                format!("{} bytes, over the {limit}-byte limit", got.meta.size),
            ));
        }
        let bytes = got.bytes().await.map_err(|e| io("reading", path, e))?;
        Ok(Some(bytes))
    }

    /// The lowest `limit` message ids under `prefix` (above `after`), in order. S3 lists in
    /// key order, so this stops after `limit` names; a listing out of order is read whole.
    async fn lowest_names(
        &self,
        prefix: &Path,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let offset = after.map(|a| prefix.clone().join(a));
        let mut listing = match &offset {
            Some(offset) => self.store().list_with_offset(Some(prefix), offset),
            None => self.store().list(Some(prefix)),
        };
        let mut lowest = BinaryHeap::with_capacity(limit + 1);
        let mut last: Option<String> = None;
        let mut ordered = true;
        let mut seen = 0usize;
        while let Some(object) = listing
            .try_next()
            .await
            .map_err(|e| io("listing", prefix, e))?
        {
            let Some(name) = object.location.filename() else {
                continue;
            };
            if check_message_id(name).is_err() || after.is_some_and(|a| name <= a) {
                continue;
            }
            if last.as_deref().is_some_and(|l| name <= l) {
                ordered = false;
            }
            last = Some(name.to_owned());
            if lowest.len() < limit {
                lowest.push(name.to_owned());
            } else if lowest
                .peek()
                .is_some_and(|top: &String| name < top.as_str())
            {
                lowest.pop();
                lowest.push(name.to_owned());
            }
            seen += 1;
            // Two names in order at least: one name says nothing about the order.
            if ordered && lowest.len() >= limit && seen >= 2 {
                break;
            }
        }
        Ok(lowest.into_sorted_vec())
    }

    /// The records of `ids`, in order, skipping any that are gone, and any damaged: one
    /// unreadable record must not hide every other message, so it is logged and moved
    /// aside ([`ObjectStoreBackend::quarantine_message`]).
    async fn read_messages(&self, ids: Vec<String>) -> Result<Vec<Message>> {
        let found: Vec<Option<Message>> = futures::stream::iter(ids)
            .map(|id| async move {
                let path = self.messages_path(&["records", &id]);
                let read = match self.read_bounded(&path, MAX_MESSAGE_RECORD).await {
                    Ok(Some(bytes)) => parse_record(&bytes, &id, &path).map(Some),
                    other => other.map(|_| None),
                };
                match read {
                    Err(e @ Error::CorruptState { .. }) => {
                        self.quarantine_message(&id, &e).await.map(|()| None)
                    }
                    other => other,
                }
            })
            .buffered(IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// Moves the damaged record of message `id` (`problem`) under `messages/quarantine/`,
    /// and takes it out of the unconfirmed messages, so that it is read no more.
    async fn quarantine_message(&self, id: &str, problem: &Error) -> Result<()> {
        tracing::warn!(message = id, error = %problem, "a damaged message record is moved aside");
        let from = self.messages_path(&["records", id]);
        let to = self.messages_path(&["quarantine", id]);
        match self.store().rename(&from, &to).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(io("moving aside", &from, e)),
        }
        self.delete_object(&self.messages_path(&["unconfirmed", id]))
            .await
    }

    /// Confirms one message; whether this call confirmed it.
    async fn confirm_one(&self, id: &str) -> Result<bool> {
        if !self
            .object_exists(&self.messages_path(&["records", id]))
            .await?
        {
            return Ok(false);
        }
        let first = self
            .put_object(&self.messages_path(&["confirmed", id]), Bytes::new(), true)
            .await?;
        self.delete_object(&self.messages_path(&["unconfirmed", id]))
            .await?;
        Ok(first)
    }
}

#[async_trait]
impl MessageStore for ObjectStoreBackend {
    async fn post_message(&self, message: &Message) -> Result<()> {
        let record = to_record(message)?;
        let id = message.message_id.as_str();
        let path = self.messages_path(&["records", id]);
        if !self.put_object(&path, record.into(), true).await? {
            return Err(Error::Taken {
                what: "message",
                id: id.to_owned(),
            });
        }
        let entry = self
            .conversation_prefix(message.accommodation, &message.conversation)
            .join(id);
        self.put_object(&entry, Bytes::new(), false).await?;
        let unconfirmed = self.messages_path(&["unconfirmed", id]);
        self.put_object(&unconfirmed, Bytes::new(), false).await?;
        // A confirm between the record and the entry: it found no entry to delete.
        if self
            .object_exists(&self.messages_path(&["confirmed", id]))
            .await?
        {
            self.delete_object(&unconfirmed).await?;
        }
        Ok(())
    }

    async fn latest_messages(&self, limit: usize) -> Result<Vec<Message>> {
        let prefix = self.messages_path(&["unconfirmed"]);
        let ids = self
            .lowest_names(&prefix, None, limit.min(MAX_MESSAGE_PAGE))
            .await?;
        self.read_messages(ids).await
    }

    async fn confirm_messages(&self, ids: &[String]) -> Result<usize> {
        let ids: Vec<String> = confirmable(ids)?.into_iter().map(str::to_owned).collect();
        futures::stream::iter(ids)
            .map(|id| async move { self.confirm_one(&id).await })
            .buffer_unordered(IN_FLIGHT)
            .try_fold(
                0,
                |n, confirmed| async move { Ok(n + usize::from(confirmed)) },
            )
            .await
    }

    async fn conversation_messages(
        &self,
        accommodation: u64,
        conversation: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Message>> {
        // A cursor that is no message id: nothing this store names lies after it.
        if after.is_some_and(|a| check_message_id(a).is_err()) {
            return Ok(Vec::new());
        }
        let prefix = self.conversation_prefix(accommodation, conversation);
        let ids = self
            .lowest_names(&prefix, after, limit.min(MAX_MESSAGE_PAGE))
            .await?;
        let mut found = self.read_messages(ids).await?;
        found.retain(|m| m.accommodation == accommodation && m.conversation == conversation);
        Ok(found)
    }

    async fn reservation_conversation(
        &self,
        accommodation: u64,
        reservation: &str,
        proposed: &str,
    ) -> Result<String> {
        check_id("reservation", reservation)?;
        check_id("conversation", proposed)?;
        let record = ReservationRecord {
            accommodation,
            reservation: reservation.to_owned(),
            conversation: proposed.to_owned(),
        };
        let h = key_hash("reservation", accommodation, reservation);
        let path = self.messages_path(&["reservations", &h]);
        let what = || format!("the conversation of reservation {reservation:?} ({path})");
        if self
            .put_object(&path, serde_json::to_vec(&record)?.into(), true)
            .await?
        {
            return Ok(record.conversation);
        }
        let read = async {
            let Some(bytes) = self.read_bounded(&path, MAX_RESERVATION_RECORD).await? else {
                // Records are never deleted: the create lost to an object that is not there.
                return Err(Error::Contended {
                    what: "reservation",
                    id: reservation.to_owned(),
                });
            };
            let found: ReservationRecord = serde_json::from_slice(&bytes)
                .map_err(|e| Error::corrupt(what(), e.to_string()))?;
            if (found.accommodation, found.reservation.as_str()) != (accommodation, reservation) {
                return Err(Error::corrupt(what(), "it names another reservation"));
            }
            check_id("conversation", &found.conversation)
                .map_err(|e| Error::corrupt(what(), e.to_string()))?;
            Ok(found.conversation)
        };
        match read.await {
            // Damaged: moved aside, and the conversation is chosen again (of several
            // servers doing this at once, one create wins; the others are contended and
            // read the winner's on their retry).
            Err(e @ Error::CorruptState { .. }) => {
                tracing::warn!(error = %e, "a damaged reservation record is moved aside");
                let aside = self.messages_path(&["quarantine", &format!("reservation-{h}")]);
                match self.store().rename(&path, &aside).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(io("moving aside", &path, e)),
                }
                if self
                    .put_object(&path, serde_json::to_vec(&record)?.into(), true)
                    .await?
                {
                    Ok(record.conversation)
                } else {
                    Err(Error::Contended {
                        what: "reservation",
                        id: reservation.to_owned(),
                    })
                }
            }
            other => other,
        }
    }
}
