//! The contract every [`MessageStore`] keeps, as one suite of checks (the messages' part
//! of [`conformance`](super::conformance)).
//!
//! Run [`run`] against a store with no messages yet, in a test; it panics with a message
//! naming the broken rule.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! attachments::store::conformance_messages::run(&attachments::store::MemoryStore::new()).await;
//! # });
//! ```

use super::messages::{MAX_CONFIRM_IDS, MAX_CONTENT, MAX_ID_LEN, Message, MessageStore};
use crate::error::Error;
use crate::upload::RandomId;

/// A time-ordered message id: the order of `n` is the order of ids.
fn id(n: u8) -> String {
    RandomId::time_ordered(1_700_000_000_000 + u64::from(n), [n; 16]).to_string()
}

fn message(n: u8, accommodation: u64, conversation: &str) -> Message {
    Message {
        message_id: id(n),
        conversation: conversation.to_owned(),
        accommodation,
        reservation: n.is_multiple_of(2).then(|| format!("res-{n}")),
        content: format!("message {n}: \"quoted\", ünïcödé, a newline\nand a tab\t"),
        attachments: (0..n % 3)
            .map(|k| RandomId::from_bytes([n.wrapping_add(k); 16]).to_string())
            .collect(),
        created_at: "2025-06-01T12:00:00Z".to_owned(),
    }
}

fn ids(messages: &[Message]) -> Vec<&str> {
    messages.iter().map(|m| m.message_id.as_str()).collect()
}

fn assert_invalid<T: std::fmt::Debug>(result: crate::Result<T>, field: &str, what: &str) {
    match result {
        Err(Error::InvalidField { field: f, .. }) if f == field => {}
        other => panic!("{what}: expected Error::InvalidField naming {field}, got {other:?}"),
    }
}

/// Runs every check against `store`, which must hold no messages yet.
///
/// # Panics
///
/// On the first broken rule, with a message naming it.
pub async fn run(store: &dyn MessageStore) {
    empty_store(store).await;
    post_latest_and_history(store).await;
    refusals(store).await;
    confirming(store).await;
    reservations(store).await;
}

async fn empty_store(store: &dyn MessageStore) {
    assert!(
        store.latest_messages(100).await.expect("latest").is_empty(),
        "no messages yet"
    );
    assert!(
        store
            .conversation_messages(1, "c", None, 100)
            .await
            .expect("history")
            .is_empty(),
        "an unknown conversation has no messages"
    );
    assert_eq!(
        store.confirm_messages(&[id(1)]).await.expect("confirm"),
        0,
        "an unknown id counts 0"
    );
}

/// Messages 1 to 6 in two conversations and two accommodations, posted out of id order.
async fn post_latest_and_history(store: &dyn MessageStore) {
    let posted = [
        message(3, 10, "conv-a"),
        message(1, 10, "conv-a"),
        message(2, 10, "conv-b"),
        message(5, 20, "conv-a"),
        message(4, 10, "conv-a"),
        message(6, 10, "conv-a"),
    ];
    for m in &posted {
        store.post_message(m).await.expect("post_message");
    }
    let mut by_id = posted.to_vec();
    by_id.sort_by(|a, b| a.message_id.cmp(&b.message_id));

    let latest = store.latest_messages(100).await.expect("latest");
    assert_eq!(
        latest, by_id,
        "latest: every message, whole, lowest id first"
    );
    let first = store.latest_messages(2).await.expect("latest 2");
    assert_eq!(ids(&first), [id(1), id(2)], "latest honours its limit");

    let history = store
        .conversation_messages(10, "conv-a", None, 100)
        .await
        .expect("history");
    assert_eq!(
        ids(&history),
        [id(1), id(3), id(4), id(6)],
        "a conversation: its accommodation's messages only, oldest first"
    );
    assert_eq!(history[0], posted[1], "history round trip");
    let page = store
        .conversation_messages(10, "conv-a", Some(&id(1)), 2)
        .await
        .expect("history page");
    assert_eq!(ids(&page), [id(3), id(4)], "a page after a cursor");
    let rest = store
        .conversation_messages(10, "conv-a", Some(&id(4)), 100)
        .await
        .expect("history rest");
    assert_eq!(ids(&rest), [id(6)], "the last page");
    let other = store
        .conversation_messages(20, "conv-a", None, 100)
        .await
        .expect("history of another accommodation");
    assert_eq!(ids(&other), [id(5)], "the accommodation is part of the key");
    assert!(
        store
            .conversation_messages(10, "conv-c", None, 100)
            .await
            .expect("unknown conversation")
            .is_empty()
    );
}

async fn refusals(store: &dyn MessageStore) {
    // A taken id: refused, and the stored message is unchanged.
    let mut again = message(1, 10, "conv-b");
    again.content = "another text".into();
    match store.post_message(&again).await {
        Err(Error::Taken { .. }) => {}
        other => panic!("a taken message id: expected Error::Taken, got {other:?}"),
    }
    let stored = store
        .conversation_messages(10, "conv-a", None, 1)
        .await
        .expect("history");
    assert_eq!(
        stored,
        [message(1, 10, "conv-a")],
        "a taken id changes nothing"
    );
    assert!(
        store
            .conversation_messages(10, "conv-b", None, 100)
            .await
            .expect("history")
            .iter()
            .all(|m| m.message_id != id(1)),
        "a refused post is not indexed"
    );

    // Fields over their caps.
    let mut m = message(7, 10, "conv-a");
    m.reservation = Some("r".repeat(MAX_ID_LEN + 1));
    assert_invalid(
        store.post_message(&m).await,
        "reservation",
        "a long reservation",
    );
    let mut m = message(7, 10, "conv-a");
    m.conversation = "conv\u{0}".into();
    assert_invalid(
        store.post_message(&m).await,
        "conversation",
        "a control character",
    );
    let mut m = message(7, 10, "conv-a");
    m.message_id = "../../etc/passwd".into();
    assert_invalid(
        store.post_message(&m).await,
        "message_id",
        "a path as an id",
    );
    let mut m = message(7, 10, "conv-a");
    m.content = "x".repeat(MAX_CONTENT + 1);
    assert_invalid(store.post_message(&m).await, "content", "long content");
    assert_eq!(
        store.latest_messages(100).await.expect("latest").len(),
        6,
        "refused messages are not stored"
    );

    // Content at its cap, of the characters JSON escapes most, round trips.
    let mut m = message(8, 30, "conv-z");
    m.content = "\u{1}".repeat(MAX_CONTENT);
    m.conversation = "\"".repeat(MAX_ID_LEN);
    m.reservation = Some("\\".repeat(MAX_ID_LEN));
    store.post_message(&m).await.expect("a message at its caps");
    let read = store
        .conversation_messages(30, &m.conversation, None, 10)
        .await
        .expect("history at the caps");
    assert_eq!(read, [m], "a message at its caps round trips");
}

async fn confirming(store: &dyn MessageStore) {
    let unknown = RandomId::from_bytes([0xee; 16]).to_string();
    let asked = [id(1), id(1), unknown, "../x".into(), String::new(), id(3)];
    assert_eq!(
        store.confirm_messages(&asked).await.expect("confirm"),
        2,
        "known ids count once; unknown, malformed and repeated ones count 0"
    );
    assert_eq!(
        store
            .confirm_messages(&[id(3)])
            .await
            .expect("confirm again"),
        0,
        "a confirmed message counts 0 the next time"
    );
    let latest = store.latest_messages(100).await.expect("latest");
    assert_eq!(
        ids(&latest),
        [id(2), id(4), id(5), id(6), id(8)],
        "confirmed messages leave latest"
    );
    let history = store
        .conversation_messages(10, "conv-a", None, 100)
        .await
        .expect("history");
    assert_eq!(
        ids(&history),
        [id(1), id(3), id(4), id(6)],
        "confirmed messages stay in their conversation"
    );

    // Two confirms of one message at once: one counts it.
    let one = [id(4)];
    let (a, b) = futures::join!(store.confirm_messages(&one), store.confirm_messages(&one));
    assert_eq!(
        a.expect("confirm a") + b.expect("confirm b"),
        1,
        "a message raced by two confirms is counted once"
    );

    // The cap on ids per call, and a full batch.
    let too_many = vec![id(5); MAX_CONFIRM_IDS + 1];
    assert_invalid(
        store.confirm_messages(&too_many).await,
        "messages",
        "more ids than the cap",
    );
    let mut batch: Vec<String> = (0..MAX_CONFIRM_IDS as u32 - 2)
        .map(|n| {
            let mut bytes = [0xaa; 16];
            bytes[..4].copy_from_slice(&n.to_be_bytes());
            RandomId::from_bytes(bytes).to_string()
        })
        .collect();
    batch.extend([id(5), id(6)]);
    assert_eq!(
        store.confirm_messages(&batch).await.expect("a full batch"),
        2,
        "a batch at the cap"
    );
    assert_eq!(
        ids(&store.latest_messages(100).await.expect("latest")),
        [id(2), id(8)]
    );
}

async fn reservations(store: &dyn MessageStore) {
    let first = store
        .reservation_conversation(10, "4380765874", "conv-1")
        .await
        .expect("reservation");
    assert_eq!(
        first, "conv-1",
        "a reservation with none takes the proposal"
    );
    let second = store
        .reservation_conversation(10, "4380765874", "conv-2")
        .await
        .expect("reservation again");
    assert_eq!(second, "conv-1", "a reservation keeps its conversation");
    let other = store
        .reservation_conversation(11, "4380765874", "conv-3")
        .await
        .expect("another accommodation");
    assert_eq!(other, "conv-3", "the accommodation is part of the key");

    let (a, b) = futures::join!(
        store.reservation_conversation(10, "race", "conv-a"),
        store.reservation_conversation(10, "race", "conv-b"),
    );
    let (a, b) = (a.expect("race a"), b.expect("race b"));
    assert_eq!(a, b, "two proposals at once get the same answer");
    assert!(a == "conv-a" || a == "conv-b");

    assert_invalid(
        store
            .reservation_conversation(10, &"9".repeat(MAX_ID_LEN + 1), "conv-1")
            .await,
        "reservation",
        "a long reservation",
    );
    assert_invalid(
        store
            .reservation_conversation(10, "r", "bad\nconversation")
            .await,
        "conversation",
        "a control character in a proposal",
    );
}
