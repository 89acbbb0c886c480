//! Messages of the [`MemoryStore`]: ordered indexes behind one lock, held only for
//! operations whose cost does not grow with the number of messages kept.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::MemoryStore;
use super::messages::{
    MAX_MESSAGE_PAGE, Message, MessageStore, check_id, check_message, confirmable,
};
use crate::error::{Error, Result};

/// Most messages a [`MemoryStore`] keeps: 100,000. Past it (or past
/// [`MAX_MESSAGE_BYTES`]) the oldest are forgotten, confirmed or not, so a long-running
/// sandbox's memory stays bounded.
pub const MAX_MESSAGES: usize = 100_000;

/// Most bytes of messages a [`MemoryStore`] keeps: 64 MiB, counted as the bytes of each
/// message's text and ids plus [`MESSAGE_OVERHEAD`] for its map and index entries. At the
/// caps a message counts for about 15 KiB, so this keeps some 4,300 of the largest
/// messages, or [`MAX_MESSAGES`] short ones.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// What a message is counted for in [`MAX_MESSAGE_BYTES`] beside its text and ids: the
/// allocation headers, the tree nodes of its three index entries and the `Arc`.
pub const MESSAGE_OVERHEAD: usize = 256;

/// Most reservations whose conversation a [`MemoryStore`] remembers: 100,000 (at most
/// about 60 MiB with ids at their cap). Past it the oldest mapping is forgotten, and that
/// reservation's next message starts a new conversation.
pub const MAX_RESERVATIONS: usize = 100_000;

type ConversationKey = (u64, String);

/// The messages: by id (ids are time-ordered, so the first is the oldest), the unconfirmed
/// ones by id, each conversation's by id, and the reservations' conversations.
#[derive(Default)]
pub(crate) struct MemoryMessages {
    inner: Mutex<Board>,
}

impl std::fmt::Debug for MemoryMessages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let board = self.lock();
        f.debug_struct("MemoryMessages")
            .field("messages", &board.messages.len())
            .field("unconfirmed", &board.unconfirmed.len())
            .field("bytes", &board.bytes)
            .finish_non_exhaustive()
    }
}

struct Board {
    /// Most messages kept ([`MAX_MESSAGES`] unless configured).
    max_messages: usize,
    /// Most bytes of messages kept ([`MAX_MESSAGE_BYTES`] unless configured).
    max_bytes: usize,
    messages: BTreeMap<String, Arc<Message>>,
    unconfirmed: BTreeSet<String>,
    conversations: HashMap<ConversationKey, BTreeSet<String>>,
    reservations: HashMap<ConversationKey, String>,
    /// The reservations in the order they got their conversation (to forget the oldest).
    reservation_order: VecDeque<ConversationKey>,
    /// Bytes counted for the messages kept ([`cost`]).
    bytes: usize,
    /// Messages examined by the last operation: what the tests check instead of timing.
    #[cfg(test)]
    visited: usize,
}

impl Default for Board {
    fn default() -> Self {
        Board {
            max_messages: MAX_MESSAGES,
            max_bytes: MAX_MESSAGE_BYTES,
            messages: BTreeMap::new(),
            unconfirmed: BTreeSet::new(),
            conversations: HashMap::new(),
            reservations: HashMap::new(),
            reservation_order: VecDeque::new(),
            bytes: 0,
            #[cfg(test)]
            visited: 0,
        }
    }
}

/// What a message counts for in [`MAX_MESSAGE_BYTES`]: its id three times (map and two
/// indexes), its other text, and [`MESSAGE_OVERHEAD`].
fn cost(m: &Message) -> usize {
    3 * m.message_id.len()
        + 2 * m.conversation.len()
        + m.reservation.as_ref().map_or(0, String::len)
        + m.content.len()
        + m.attachments.iter().map(|a| a.len() + 24).sum::<usize>()
        + m.created_at.len()
        + MESSAGE_OVERHEAD
}

impl MemoryMessages {
    fn lock(&self) -> MutexGuard<'_, Board> {
        // Every update leaves the indexes consistent before it can panic (inserts first,
        // removals in one step), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MemoryStore {
    /// Keeps at most `max_messages` messages and `max_bytes` bytes of them (counted as
    /// for [`MAX_MESSAGE_BYTES`]) instead of the defaults; past either, the oldest are
    /// forgotten. Each is at least 1.
    ///
    /// # Examples
    ///
    /// ```
    /// use attachments::store::MemoryStore;
    ///
    /// // A small board for a box with little memory.
    /// let store = MemoryStore::new().with_board_limits(1_000, 4 << 20);
    /// assert_eq!(store.message_count(), 0);
    /// ```
    pub fn with_board_limits(self, max_messages: usize, max_bytes: usize) -> Self {
        {
            let mut board = self.messages.lock();
            board.max_messages = max_messages.max(1);
            board.max_bytes = max_bytes.max(1);
        }
        self
    }

    /// Messages kept (confirmed or not).
    pub fn message_count(&self) -> usize {
        self.messages.lock().messages.len()
    }
}

impl Board {
    fn post(&mut self, message: Message) -> Result<()> {
        if self.messages.contains_key(&message.message_id) {
            return Err(Error::Taken {
                what: "message",
                id: message.message_id,
            });
        }
        let id = message.message_id.clone();
        self.bytes += cost(&message);
        self.unconfirmed.insert(id.clone());
        self.conversations
            .entry((message.accommodation, message.conversation.clone()))
            .or_default()
            .insert(id.clone());
        self.messages.insert(id, Arc::new(message));
        while self.messages.len() > self.max_messages || self.bytes > self.max_bytes {
            self.evict_oldest();
        }
        Ok(())
    }

    fn evict_oldest(&mut self) {
        let Some((id, old)) = self.messages.pop_first() else {
            return;
        };
        self.bytes -= cost(&old);
        self.unconfirmed.remove(&id);
        let key = (old.accommodation, old.conversation.clone());
        if let Some(ids) = self.conversations.get_mut(&key) {
            ids.remove(&id);
            if ids.is_empty() {
                self.conversations.remove(&key);
            }
        }
    }

    fn latest(&mut self, limit: usize) -> Vec<Arc<Message>> {
        let found: Vec<_> = self
            .unconfirmed
            .iter()
            .take(limit)
            .filter_map(|id| self.messages.get(id).cloned())
            .collect();
        self.visited(found.len());
        found
    }

    fn confirm(&mut self, ids: &[&str]) -> usize {
        self.visited(ids.len());
        ids.iter()
            .filter(|id| self.unconfirmed.remove(**id))
            .count()
    }

    fn history(
        &mut self,
        key: &ConversationKey,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<Arc<Message>> {
        let Some(ids) = self.conversations.get(key) else {
            return Vec::new();
        };
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let found: Vec<_> = ids
            .range::<str, _>((from, Bound::Unbounded))
            .take(limit)
            .filter_map(|id| self.messages.get(id).cloned())
            .collect();
        self.visited(found.len());
        found
    }

    fn reservation(&mut self, key: ConversationKey, proposed: &str) -> String {
        if let Some(found) = self.reservations.get(&key) {
            return found.clone();
        }
        if self.reservations.len() >= MAX_RESERVATIONS
            && let Some(old) = self.reservation_order.pop_front()
        {
            self.reservations.remove(&old);
        }
        self.reservations.insert(key.clone(), proposed.to_owned());
        self.reservation_order.push_back(key);
        proposed.to_owned()
    }

    #[cfg(test)]
    fn visited(&mut self, n: usize) {
        self.visited = n;
    }

    #[cfg(not(test))]
    fn visited(&mut self, _: usize) {}
}

/// The owned copies of messages, made after the lock is released.
fn owned(found: Vec<Arc<Message>>) -> Vec<Message> {
    found
        .into_iter()
        .map(|m| Arc::try_unwrap(m).unwrap_or_else(|m| (*m).clone()))
        .collect()
}

/// Every operation holds the lock for one index operation: a post and its evictions are
/// O(log n) each, `latest` O(limit log n), a confirm O(k log n) for k ids, a page of a
/// conversation O(limit log n). Messages are shared (`Arc`) under the lock and copied
/// after it is released.
#[async_trait]
impl MessageStore for MemoryStore {
    async fn post_message(&self, message: &Message) -> Result<()> {
        check_message(message)?;
        let message = message.clone();
        self.messages.lock().post(message)
    }

    async fn latest_messages(&self, limit: usize) -> Result<Vec<Message>> {
        let found = self.messages.lock().latest(limit.min(MAX_MESSAGE_PAGE));
        Ok(owned(found))
    }

    async fn confirm_messages(&self, ids: &[String]) -> Result<usize> {
        let ids = confirmable(ids)?;
        Ok(self.messages.lock().confirm(&ids))
    }

    async fn conversation_messages(
        &self,
        accommodation: u64,
        conversation: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Message>> {
        let key = (accommodation, conversation.to_owned());
        let found = self
            .messages
            .lock()
            .history(&key, after, limit.min(MAX_MESSAGE_PAGE));
        Ok(owned(found))
    }

    async fn reservation_conversation(
        &self,
        accommodation: u64,
        reservation: &str,
        proposed: &str,
    ) -> Result<String> {
        check_id("reservation", reservation)?;
        check_id("conversation", proposed)?;
        let key = (accommodation, reservation.to_owned());
        Ok(self.messages.lock().reservation(key, proposed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upload::RandomId;

    fn id(n: u64) -> String {
        let mut random = [0u8; 16];
        random[8..].copy_from_slice(&n.to_be_bytes());
        RandomId::time_ordered(1_700_000_000_000 + n, random).to_string()
    }

    fn message(n: u64, conversation: &str, content: String) -> Message {
        Message {
            message_id: id(n),
            conversation: conversation.into(),
            accommodation: 7,
            reservation: None,
            content,
            attachments: Vec::new(),
            created_at: "2025-01-01T00:00:00Z".into(),
        }
    }

    fn post(board: &mut Board, n: u64) {
        let conversation = format!("c{}", n % 10);
        board
            .post(message(n, &conversation, format!("m{n}")))
            .unwrap();
    }

    /// A configured board keeps its own limits: past them the oldest messages go.
    #[tokio::test]
    async fn configured_board_limits_are_kept() {
        let store = MemoryStore::new().with_board_limits(3, usize::MAX);
        for n in 0..5 {
            store
                .post_message(&message(n, "c", format!("m{n}")))
                .await
                .unwrap();
        }
        assert_eq!(store.message_count(), 3);
        let kept: Vec<String> = store.messages.lock().messages.keys().cloned().collect();
        assert_eq!(kept, [id(2), id(3), id(4)]);
        // By bytes: room for about two messages of this size.
        let one = cost(&message(0, "c", "x".repeat(1000)));
        let store = MemoryStore::new().with_board_limits(100, 2 * one + one / 2);
        for n in 0..5 {
            store
                .post_message(&message(n, "c", "x".repeat(1000)))
                .await
                .unwrap();
        }
        assert_eq!(store.message_count(), 2);
    }

    /// The reported slowdown: 12 clients confirming 13,000 ids each against a full board
    /// compared every id with every message. Confirming 1,000 ids now looks up 1,000 ids,
    /// and `latest` reads `limit` entries, whatever the number of messages kept.
    #[test]
    fn confirm_and_latest_look_up_ids_instead_of_scanning_the_board() {
        let mut board = Board::default();
        for n in 0..MAX_MESSAGES as u64 {
            post(&mut board, n);
        }
        let ids: Vec<String> = (0..2_000u64).step_by(2).map(id).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        assert_eq!(board.confirm(&ids), 1_000);
        assert_eq!(board.visited, 1_000);
        assert_eq!(board.confirm(&ids), 0, "confirmed once only");

        let latest = board.latest(100);
        assert_eq!(board.visited, 100);
        // The oldest unconfirmed: 1, 3, 5, ..., then from 2,000 on.
        assert_eq!(latest[0].message_id, id(1));
        assert_eq!(latest[99].message_id, id(199));

        let page = board.history(&(7, "c3".into()), Some(&id(3)), 50);
        assert_eq!(board.visited, 50);
        assert_eq!(page[0].message_id, id(13));
        assert_eq!(page[49].message_id, id(503));
    }

    #[test]
    fn the_oldest_messages_are_forgotten_past_the_count_and_byte_caps() {
        let mut board = Board::default();
        for n in 0..MAX_MESSAGES as u64 + 5 {
            post(&mut board, n);
        }
        assert_eq!(board.messages.len(), MAX_MESSAGES);
        assert_eq!(board.unconfirmed.len(), MAX_MESSAGES);
        assert_eq!(board.latest(1)[0].message_id, id(5));
        let kept: usize = board.conversations.values().map(BTreeSet::len).sum();
        assert_eq!(kept, MAX_MESSAGES);

        // Big messages: the byte cap comes first.
        let mut board = Board::default();
        let big = "x".repeat(8 * 1024);
        for n in 0..10_000u64 {
            board.post(message(n, "c", big.clone())).unwrap();
        }
        assert!(board.bytes <= MAX_MESSAGE_BYTES);
        let kept = board.messages.len();
        assert!((7_000..8_000).contains(&kept), "{kept}");
        assert_eq!(
            board.bytes,
            board.messages.values().map(|m| cost(m)).sum::<usize>()
        );
        assert_eq!(board.conversations[&(7, "c".into())].len(), kept);
    }

    #[test]
    fn a_reservation_keeps_its_first_conversation_until_the_cap_forgets_it() {
        let mut board = Board::default();
        assert_eq!(board.reservation((1, "r".into()), "c1"), "c1");
        assert_eq!(board.reservation((1, "r".into()), "c2"), "c1");
        assert_eq!(board.reservation((2, "r".into()), "c3"), "c3");
        for n in 0..MAX_RESERVATIONS {
            board.reservation((3, n.to_string()), "c");
        }
        assert_eq!(board.reservations.len(), MAX_RESERVATIONS);
        assert_eq!(board.reservation((1, "r".into()), "c4"), "c4");
    }
}
