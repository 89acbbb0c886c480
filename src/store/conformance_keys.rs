//! The contract every [`KeyStore`] keeps, one check per capability (feature
//! `conformance`; the idempotency keys' part of [`conformance`](super::conformance)).
//!
//! Each check is a `pub async fn` taking the store under test and panics with a message
//! naming the broken rule. [`run_all`] runs them all on one store; every check uses keys
//! of its own, so they pass in turn on one store.
//!
//! | check | the rule |
//! | --- | --- |
//! | [`claim_replay_and_mismatch`] | a key is claimed once; its retry waits, then replays the stored answer; another request under it is refused |
//! | [`given_up_keys_run_again`] | a key given up (no answer kept) is claimed anew; a settle by a stale claim changes nothing |
//! | [`leases_and_ttl_expire`] | an unanswered claim expires after the lease, an answer after the TTL; the sweep removes expired records only |
//! | [`racing_claims`] | of many claims at once on one key exactly one wins; keys of different clients do not meet |
//! | [`interleaving`] | any schedule of retries of one key takes effect once and every answer is that effect's (the proptest in `tests/idempotency.rs` draws the schedules) |
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! attachments::store::conformance_keys::run_all(&attachments::store::MemoryStore::new()).await;
//! # });
//! ```

use std::time::{Duration, SystemTime};

use super::keys::KeyStore;
use crate::idempotency::{
    Decision, Fingerprint, IDEMPOTENCY_TTL, IN_FLIGHT_LEASE, IdempotencyKey, RecordKey,
    StoredAnswer,
};

/// The names of the checks [`run_all`] runs, in the order it runs them.
pub const CHECKS: &[&str] = &[
    "claim_replay_and_mismatch",
    "given_up_keys_run_again",
    "leases_and_ttl_expire",
    "racing_claims",
];

/// Runs every check against `store`, in the order of [`CHECKS`], then one fixed
/// [`interleaving`].
///
/// # Panics
///
/// On the first broken rule, with a message naming it.
pub async fn run_all(store: &dyn KeyStore) {
    claim_replay_and_mismatch(store).await;
    given_up_keys_run_again(store).await;
    leases_and_ttl_expire(store).await;
    racing_claims(store).await;
    let schedule = [0, 1, 0, 1, 2, 2, 0, 1, 2].map(|r| Step {
        request: r,
        fails: r == 0,
    });
    interleaving(store, &schedule).await;
}

/// A key of this run only: checks sharing a store never meet.
fn fresh_key(check: &str) -> RecordKey {
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).expect("random bytes");
    let key = IdempotencyKey::parse(format!("{check}-{}", hex::encode(nonce)).as_bytes())
        .expect("a valid key");
    RecordKey::new("conformance", &key)
}

fn answer(body: &str) -> StoredAnswer {
    StoredAnswer::new(200, Some("application/json".into()), body.to_owned())
}

/// A claimed key answers [`Decision::InFlight`] to the same request and
/// [`Decision::Mismatch`] to another; once settled with an answer, the same request gets
/// [`Decision::Replay`] of it (again and again), another still `Mismatch`. Only the
/// claim's own token settles it, once.
///
/// # Panics
///
/// When a rule is broken, naming it.
pub async fn claim_replay_and_mismatch(store: &dyn KeyStore) {
    let key = fresh_key("replay");
    let fp = Fingerprint::of(&[b"POST", b"/a", b"body"]);
    let other = Fingerprint::of(&[b"POST", b"/a", b"other body"]);
    let now = SystemTime::now();
    let claim = |token: &'static str, fp: Fingerprint| {
        let key = key.clone();
        async move {
            store
                .claim_key(&key, &fp, token, now)
                .await
                .expect("claim_key")
        }
    };
    assert_eq!(
        claim("c1", fp).await,
        Decision::Claim,
        "a fresh key is claimed"
    );
    assert_eq!(
        claim("c2", fp).await,
        Decision::InFlight,
        "a retry waits while the first runs"
    );
    assert_eq!(
        claim("c3", other).await,
        Decision::Mismatch,
        "another request under a claimed key"
    );
    let done = answer("{\"id\":\"first\"}");
    assert!(
        !store
            .settle_key(&key, "c2", Some(&answer("{\"id\":\"second\"}")), now)
            .await
            .unwrap(),
        "a token that did not claim the key settled it"
    );
    assert!(
        store
            .settle_key(&key, "c1", Some(&done), now)
            .await
            .unwrap(),
        "the claim could not store its answer"
    );
    for round in 0..2 {
        assert_eq!(
            claim("c4", fp).await,
            Decision::Replay(done.clone()),
            "retry {round} after the answer"
        );
    }
    assert_eq!(
        claim("c5", other).await,
        Decision::Mismatch,
        "another request under an answered key"
    );
    assert!(
        !store.settle_key(&key, "c1", None, now).await.unwrap(),
        "an answered key was settled twice"
    );
    assert_eq!(
        claim("c6", fp).await,
        Decision::Replay(done),
        "a second settle changed the answer"
    );
}

/// A key given up (settled with `None`: the request failed and nothing took effect) is
/// claimed by the next retry, and the first claim can no longer settle it.
///
/// # Panics
///
/// When a rule is broken, naming it.
pub async fn given_up_keys_run_again(store: &dyn KeyStore) {
    let key = fresh_key("given-up");
    let fp = Fingerprint::of(&[b"POST", b"/b", b""]);
    let now = SystemTime::now();
    assert_eq!(
        store.claim_key(&key, &fp, "first", now).await.unwrap(),
        Decision::Claim
    );
    assert!(
        store.settle_key(&key, "first", None, now).await.unwrap(),
        "giving a key up"
    );
    assert_eq!(
        store.claim_key(&key, &fp, "second", now).await.unwrap(),
        Decision::Claim,
        "a given-up key is claimed again"
    );
    assert!(
        !store
            .settle_key(&key, "first", Some(&answer("{}")), now)
            .await
            .unwrap(),
        "a claim given up settled the key another holds"
    );
    assert!(
        store
            .settle_key(&key, "second", Some(&answer("{\"n\":2}")), now)
            .await
            .unwrap()
    );
    assert_eq!(
        store.claim_key(&key, &fp, "third", now).await.unwrap(),
        Decision::Replay(answer("{\"n\":2}"))
    );
}

/// An unanswered claim blocks its key for [`IN_FLIGHT_LEASE`] and no longer; an answer is
/// replayed for [`IDEMPOTENCY_TTL`] and no longer. The claim that lost its lease cannot
/// settle the key afterwards. [`KeyStore::sweep_keys`] removes expired records and keeps
/// live ones.
///
/// # Panics
///
/// When a rule is broken, naming it.
pub async fn leases_and_ttl_expire(store: &dyn KeyStore) {
    let (lapsed, kept) = (fresh_key("lapsed"), fresh_key("kept"));
    let fp = Fingerprint::of(&[b"POST", b"/c", b"x"]);
    let t0 = SystemTime::now();
    let second = Duration::from_secs(1);
    assert_eq!(
        store.claim_key(&lapsed, &fp, "slow", t0).await.unwrap(),
        Decision::Claim
    );
    assert_eq!(
        store
            .claim_key(&lapsed, &fp, "r1", t0 + IN_FLIGHT_LEASE - second)
            .await
            .unwrap(),
        Decision::InFlight,
        "the lease ended early"
    );
    let t1 = t0 + IN_FLIGHT_LEASE;
    assert_eq!(
        store.claim_key(&lapsed, &fp, "r2", t1).await.unwrap(),
        Decision::Claim,
        "a claim past its lease still blocked its key"
    );
    assert!(
        !store
            .settle_key(&lapsed, "slow", Some(&answer("{}")), t1)
            .await
            .unwrap(),
        "a claim past its lease settled the key"
    );
    let done = answer("{\"ttl\":true}");
    assert!(
        store
            .settle_key(&lapsed, "r2", Some(&done), t1)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .claim_key(&lapsed, &fp, "r3", t1 + IDEMPOTENCY_TTL - second)
            .await
            .unwrap(),
        Decision::Replay(done),
        "the answer expired early"
    );
    // A record answered ten seconds later: still live when `lapsed` has expired.
    let later = t1 + 10 * second;
    assert_eq!(
        store.claim_key(&kept, &fp, "k", later).await.unwrap(),
        Decision::Claim
    );
    assert!(
        store
            .settle_key(&kept, "k", Some(&answer("{}")), later)
            .await
            .unwrap()
    );
    let t2 = t1 + IDEMPOTENCY_TTL;
    let swept = store.sweep_keys(t2 + second, usize::MAX).await.unwrap();
    assert!(swept >= 1, "the sweep removed no expired record");
    assert_eq!(
        store
            .claim_key(&kept, &fp, "k2", t2 + second)
            .await
            .unwrap(),
        Decision::Replay(answer("{}")),
        "the sweep removed a live record"
    );
    assert_eq!(
        store
            .claim_key(&lapsed, &fp, "r4", t2 + second)
            .await
            .unwrap(),
        Decision::Claim,
        "an answer past its TTL was replayed"
    );
}

/// Sixteen claims of one key at once: exactly one is [`Decision::Claim`], the others
/// [`Decision::InFlight`]. The same key sent by another client is its own.
///
/// # Panics
///
/// When a rule is broken, naming it.
pub async fn racing_claims(store: &dyn KeyStore) {
    let raw = IdempotencyKey::parse(fresh_key("race").as_str().as_bytes()).unwrap();
    let (mine, theirs) = (
        RecordKey::new("client-a", &raw),
        RecordKey::new("client-b", &raw),
    );
    let fp = Fingerprint::of(&[b"POST", b"/d", b"y"]);
    let now = SystemTime::now();
    let tokens: Vec<String> = (0..16).map(|n| format!("racer-{n}")).collect();
    let claims = tokens.iter().map(|t| store.claim_key(&mine, &fp, t, now));
    let decisions: Vec<Decision> = futures::future::join_all(claims)
        .await
        .into_iter()
        .map(|d| d.expect("claim_key"))
        .collect();
    let won = decisions.iter().filter(|d| **d == Decision::Claim).count();
    assert_eq!(won, 1, "racing claims: {decisions:?}");
    assert!(
        decisions
            .iter()
            .all(|d| matches!(d, Decision::Claim | Decision::InFlight)),
        "{decisions:?}"
    );
    assert_eq!(
        store
            .claim_key(&theirs, &fp, "other-client", now)
            .await
            .unwrap(),
        Decision::Claim,
        "another client's key was taken by this one's"
    );
}

/// One step of a schedule for [`interleaving`]: request number `request` moves one step
/// (claims its key if it holds nothing, settles if it holds the claim); `fails` says
/// whether, holding the claim, it fails (gives the key up, with no effect) or succeeds
/// (takes effect and stores its answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Which of the retrying requests moves.
    pub request: usize,
    /// Whether its run, if it holds the claim, fails.
    pub fails: bool,
}

/// Runs `schedule` against one fresh key: every request is the same operation retried
/// (same fingerprint), each moving one step at a time in the schedule's order. Checks
/// that the operation takes effect at most once, that exactly once if any run succeeded,
/// and that every request that got an answer got that effect's answer.
///
/// # Panics
///
/// When a rule is broken, naming it and the schedule.
pub async fn interleaving(store: &dyn KeyStore, schedule: &[Step]) {
    #[derive(Clone, PartialEq, Debug)]
    enum State {
        Idle,
        Holding(String),
        Answered(String),
    }
    let key = fresh_key("interleaving");
    let fp = Fingerprint::of(&[b"POST", b"/e", b"same body"]);
    let now = SystemTime::now();
    let requests = schedule.iter().map(|s| s.request + 1).max().unwrap_or(0);
    let mut states = vec![State::Idle; requests];
    let mut effects: Vec<String> = Vec::new();
    let mut token = 0;
    for (i, step) in schedule.iter().enumerate() {
        let state = states[step.request].clone();
        match state {
            State::Idle => {
                token += 1;
                let claim = format!("t{token}");
                match store.claim_key(&key, &fp, &claim, now).await.unwrap() {
                    Decision::Claim => states[step.request] = State::Holding(claim),
                    Decision::InFlight => {}
                    Decision::Replay(a) => states[step.request] = State::Answered(a.body),
                    Decision::Mismatch => {
                        panic!("step {i}: the same request was a mismatch; schedule {schedule:?}")
                    }
                }
            }
            State::Holding(claim) if step.fails => {
                assert!(
                    store.settle_key(&key, &claim, None, now).await.unwrap(),
                    "step {i}: the holder could not give its key up; schedule {schedule:?}"
                );
                states[step.request] = State::Idle;
            }
            State::Holding(claim) => {
                let body = format!("{{\"effect\":{}}}", effects.len());
                effects.push(body.clone());
                assert!(
                    store
                        .settle_key(&key, &claim, Some(&answer(&body)), now)
                        .await
                        .unwrap(),
                    "step {i}: the holder could not store its answer; schedule {schedule:?}"
                );
                states[step.request] = State::Answered(body);
            }
            State::Answered(_) => {}
        }
        assert!(
            effects.len() <= 1,
            "step {i}: {} effects; schedule {schedule:?}",
            effects.len()
        );
    }
    for (n, state) in states.iter().enumerate() {
        if let State::Answered(body) = state {
            assert_eq!(
                Some(body),
                effects.first(),
                "request {n} got another answer than the effect's; schedule {schedule:?}"
            );
        }
    }
    // Whatever is still held is given up, so the store is left as it was found.
    for state in states {
        if let State::Holding(claim) = state {
            store.settle_key(&key, &claim, None, now).await.unwrap();
        }
    }
}
