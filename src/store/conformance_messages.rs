//! The contract every [`MessageStore`] keeps, one check per capability (feature
//! `conformance`; the messages' part of [`conformance`](super::conformance)).
//!
//! Each check is a `pub async fn` taking the store under test and panics with a message
//! naming the broken rule. [`run_all`] runs them all on one store.
//!
//! Give the checks a store of their own. The messages' contract has no deletion and
//! `latest` lists the whole store, so each check starts by confirming every unconfirmed
//! message it finds (the others' leftovers) and posts under ids and in accommodations no
//! other check uses, so a check passes on a fresh store of its own, and the checks pass
//! in turn on one store (as [`run_all`] runs them).
//!
//! | check | the rule |
//! | --- | --- |
//! | [`unknown_ids_and_conversations`] | an unknown conversation is empty and an unknown id confirms nothing |
//! | [`post_latest_and_history`] | posted messages come back whole, in id order, from `latest` and from their conversation |
//! | [`refusals`] | a taken id and fields over their caps are refused and change nothing; fields at their caps round trip |
//! | [`confirming`] | confirming counts each message once, also under a race, and takes at most [`MAX_CONFIRM_IDS`] ids |
//! | [`reservations`] | a reservation keeps the first conversation proposed for it, also under a race |
//!
//! See [`conformance`](super::conformance) for how to run them against a backend of your
//! own.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! attachments::store::conformance_messages::run_all(&attachments::store::MemoryStore::new()).await;
//! # });
//! ```

use super::messages::{MAX_CONFIRM_IDS, MAX_CONTENT, MAX_ID_LEN, Message, MessageStore};
use crate::error::Error;
use crate::upload::RandomId;

/// The names of the checks [`run_all`] runs, in the order it runs them (each is a function
/// of this module).
pub const CHECKS: &[&str] = &[
    "unknown_ids_and_conversations",
    "post_latest_and_history",
    "refusals",
    "confirming",
    "reservations",
];

/// Runs every check against `store`, in the order of [`CHECKS`].
///
/// # Panics
///
/// On the first broken rule, with a message naming it.
pub async fn run_all(store: &dyn MessageStore) {
    unknown_ids_and_conversations(store).await;
    post_latest_and_history(store).await;
    refusals(store).await;
    confirming(store).await;
    reservations(store).await;
}

/// The same as [`run_all`] (its name before the checks were public one by one).
///
/// # Panics
///
/// As [`run_all`].
pub async fn run(store: &dyn MessageStore) {
    run_all(store).await;
}

/// A check's time-ordered message id: check `check`'s `n`th. The order of `(check, n)`
/// is the order of ids, and no two checks share one.
fn id(check: u8, n: u8) -> String {
    let ms = 1_700_000_000_000 + u64::from(check) * 1_000 + u64::from(n);
    RandomId::time_ordered(ms, [check.wrapping_mul(16).wrapping_add(n); 16]).to_string()
}

/// Message `n` of check `check`, in `accommodation` and `conversation`.
fn message(check: u8, n: u8, accommodation: u64, conversation: &str) -> Message {
    Message {
        message_id: id(check, n),
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

/// Confirms every unconfirmed message in the store, so that `latest` shows only what the
/// check posts next.
async fn confirm_everything(store: &dyn MessageStore) {
    loop {
        let pending = store.latest_messages(100).await.expect("latest");
        if pending.is_empty() {
            return;
        }
        let pending: Vec<String> = pending.into_iter().map(|m| m.message_id).collect();
        assert!(
            store.confirm_messages(&pending).await.expect("confirm") > 0,
            "confirming the messages latest lists confirms them"
        );
    }
}

/// An unknown conversation has no messages, an unknown id confirms nothing, and once
/// everything is confirmed `latest` is empty.
///
/// # Panics
///
/// When a rule is broken, naming it.
pub async fn unknown_ids_and_conversations(store: &dyn MessageStore) {
    confirm_everything(store).await;
    assert!(
        store.latest_messages(100).await.expect("latest").is_empty(),
        "nothing is unconfirmed once everything was confirmed"
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
        store.confirm_messages(&[id(1, 1)]).await.expect("confirm"),
        0,
        "an unknown id counts 0"
    );
}

/// Six messages in two conversations and two accommodations, posted out of id order,
/// come back whole: `latest` lists them lowest id first and honours its limit; a
/// conversation (accommodation and conversation id together) lists its own, oldest
/// first, a page at a time after a cursor.
///
/// # Panics
///
/// When a rule is broken, naming it.
pub async fn post_latest_and_history(store: &dyn MessageStore) {
    confirm_everything(store).await;
    let m = |n, accommodation, conversation| message(2, n, accommodation, conversation);
    let posted = [
        m(3, 210, "conv-a"),
        m(1, 210, "conv-a"),
        m(2, 210, "conv-b"),
        m(5, 220, "conv-a"),
        m(4, 210, "conv-a"),
        m(6, 210, "conv-a"),
    ];
    for m in &posted {
        store.post_message(m).await.expect("post_message");
    }
    let mut by_id = posted.to_vec();
    by_id.sort_by(|a, b| a.message_id.cmp(&b.message_id));
    let id = |n| id(2, n);

    let latest = store.latest_messages(100).await.expect("latest");
    assert_eq!(
        latest, by_id,
        "latest: every message, whole, lowest id first"
    );
    let first = store.latest_messages(2).await.expect("latest 2");
    assert_eq!(ids(&first), [id(1), id(2)], "latest honours its limit");

    let history = store
        .conversation_messages(210, "conv-a", None, 100)
        .await
        .expect("history");
    assert_eq!(
        ids(&history),
        [id(1), id(3), id(4), id(6)],
        "a conversation: its accommodation's messages only, oldest first"
    );
    assert_eq!(history[0], posted[1], "history round trip");
    let page = store
        .conversation_messages(210, "conv-a", Some(&id(1)), 2)
        .await
        .expect("history page");
    assert_eq!(ids(&page), [id(3), id(4)], "a page after a cursor");
    let rest = store
        .conversation_messages(210, "conv-a", Some(&id(4)), 100)
        .await
        .expect("history rest");
    assert_eq!(ids(&rest), [id(6)], "the last page");
    let other = store
        .conversation_messages(220, "conv-a", None, 100)
        .await
        .expect("history of another accommodation");
    assert_eq!(ids(&other), [id(5)], "the accommodation is part of the key");
    assert!(
        store
            .conversation_messages(210, "conv-c", None, 100)
            .await
            .expect("unknown conversation")
            .is_empty()
    );
}

/// A taken message id is refused with [`Error::Taken`] and changes nothing (the stored
/// message, its conversation's index); a reservation or content over its cap, a control
/// character in an id, a path as a message id are refused with [`Error::InvalidField`]
/// naming the field, and stored nowhere. Every field at its cap, of the characters JSON
/// escapes most, round trips.
///
/// # Panics
///
/// When a rule is broken, naming it.
pub async fn refusals(store: &dyn MessageStore) {
    confirm_everything(store).await;
    let first = message(3, 1, 310, "conv-a");
    store.post_message(&first).await.expect("post_message");

    // A taken id: refused, and the stored message is unchanged.
    let mut again = message(3, 1, 310, "conv-b");
    again.content = "another text".into();
    match store.post_message(&again).await {
        Err(Error::Taken { .. }) => {}
        other => panic!("a taken message id: expected Error::Taken, got {other:?}"),
    }
    let stored = store
        .conversation_messages(310, "conv-a", None, 10)
        .await
        .expect("history");
    assert_eq!(
        stored,
        std::slice::from_ref(&first),
        "a taken id changes nothing"
    );
    assert!(
        store
            .conversation_messages(310, "conv-b", None, 100)
            .await
            .expect("history")
            .iter()
            .all(|m| m.message_id != first.message_id),
        "a refused post is not indexed"
    );

    // Fields over their caps.
    let mut m = message(3, 7, 310, "conv-a");
    m.reservation = Some("r".repeat(MAX_ID_LEN + 1));
    assert_invalid(
        store.post_message(&m).await,
        "reservation",
        "a long reservation",
    );
    let mut m = message(3, 7, 310, "conv-a");
    m.conversation = "conv\u{0}".into();
    assert_invalid(
        store.post_message(&m).await,
        "conversation",
        "a control character",
    );
    let mut m = message(3, 7, 310, "conv-a");
    m.message_id = "../../etc/passwd".into();
    assert_invalid(
        store.post_message(&m).await,
        "message_id",
        "a path as an id",
    );
    let mut m = message(3, 7, 310, "conv-a");
    m.content = "x".repeat(MAX_CONTENT + 1);
    assert_invalid(store.post_message(&m).await, "content", "long content");
    assert_eq!(
        ids(&store.latest_messages(100).await.expect("latest")),
        [first.message_id.as_str()],
        "refused messages are not stored"
    );

    // Content at its cap, of the characters JSON escapes most, round trips.
    let mut m = message(3, 8, 330, "conv-z");
    m.content = "\u{1}".repeat(MAX_CONTENT);
    m.conversation = "\"".repeat(MAX_ID_LEN);
    m.reservation = Some("\\".repeat(MAX_ID_LEN));
    store.post_message(&m).await.expect("a message at its caps");
    let read = store
        .conversation_messages(330, &m.conversation, None, 10)
        .await
        .expect("history at the caps");
    assert_eq!(read, [m], "a message at its caps round trips");
}

/// Confirming counts: known ids count once (repeats, unknown and malformed ids count 0), a
/// confirmed message counts 0 the next time and leaves `latest` but stays in its
/// conversation, two confirms of one message at once count it once, and a call takes at
/// most [`MAX_CONFIRM_IDS`] ids (more is [`Error::InvalidField`] naming `messages`; a
/// full batch is served).
///
/// # Panics
///
/// When a rule is broken, naming it.
pub async fn confirming(store: &dyn MessageStore) {
    confirm_everything(store).await;
    let id = |n| id(4, n);
    for n in 1..=6 {
        store
            .post_message(&message(4, n, 410, "conv-a"))
            .await
            .expect("post_message");
    }
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
        [id(2), id(4), id(5), id(6)],
        "confirmed messages leave latest"
    );
    let history = store
        .conversation_messages(410, "conv-a", None, 100)
        .await
        .expect("history");
    assert_eq!(
        ids(&history),
        [id(1), id(2), id(3), id(4), id(5), id(6)],
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
        [id(2)]
    );
}

/// A reservation's conversation: a reservation with none takes the one proposed, keeps
/// it when another is proposed later, is keyed by accommodation too, and of two proposals
/// at once both get the one that won. An id over its cap or with a control character is
/// [`Error::InvalidField`] naming it.
///
/// # Panics
///
/// When a rule is broken, naming it.
pub async fn reservations(store: &dyn MessageStore) {
    let first = store
        .reservation_conversation(510, "4380765874", "conv-1")
        .await
        .expect("reservation");
    assert_eq!(
        first, "conv-1",
        "a reservation with none takes the proposal"
    );
    let second = store
        .reservation_conversation(510, "4380765874", "conv-2")
        .await
        .expect("reservation again");
    assert_eq!(second, "conv-1", "a reservation keeps its conversation");
    let other = store
        .reservation_conversation(511, "4380765874", "conv-3")
        .await
        .expect("another accommodation");
    assert_eq!(other, "conv-3", "the accommodation is part of the key");

    let (a, b) = futures::join!(
        store.reservation_conversation(510, "race", "conv-a"),
        store.reservation_conversation(510, "race", "conv-b"),
    );
    let (a, b) = (a.expect("race a"), b.expect("race b"));
    assert_eq!(a, b, "two proposals at once get the same answer");
    assert!(a == "conv-a" || a == "conv-b");

    assert_invalid(
        store
            .reservation_conversation(510, &"9".repeat(MAX_ID_LEN + 1), "conv-1")
            .await,
        "reservation",
        "a long reservation",
    );
    assert_invalid(
        store
            .reservation_conversation(510, "r", "bad\nconversation")
            .await,
        "conversation",
        "a control character in a proposal",
    );
}
