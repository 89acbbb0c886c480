//! Idempotency keys ([`KeyStore`]): each backend keeps one record per key, claimed
//! atomically, so that of any number of requests with one key (on one process or on
//! several sharing the store) one runs and the others wait for, or replay, its answer.
//! The rules are in [`crate::idempotency`]; this module is where they are kept.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::idempotency::{Decision, Fingerprint, KeyRecord, RecordKey, StoredAnswer, decide};

/// Where idempotency keys are kept: a supertrait of [`Store`](super::Store), so a server
/// keeps its keys where it keeps its attachments, shared by every process that shares
/// them.
///
/// # Examples
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::time::SystemTime;
/// use attachments::idempotency::{Decision, Fingerprint, IdempotencyKey, RecordKey, StoredAnswer};
/// use attachments::store::{KeyStore, MemoryStore};
///
/// let store = MemoryStore::new();
/// let key = RecordKey::new("client-1", &IdempotencyKey::parse(b"op-1")?);
/// let fp = Fingerprint::of(&[b"POST", b"/messages", b"{}"]);
/// let now = SystemTime::now();
/// assert_eq!(store.claim_key(&key, &fp, "claim-a", now).await?, Decision::Claim);
/// // A retry while the first runs is told to wait.
/// assert_eq!(store.claim_key(&key, &fp, "claim-b", now).await?, Decision::InFlight);
/// let answer = StoredAnswer::new(200, None, "{\"id\":1}".into());
/// assert!(store.settle_key(&key, "claim-a", Some(&answer), now).await?);
/// assert_eq!(store.claim_key(&key, &fp, "claim-c", now).await?, Decision::Replay(answer));
/// # Ok::<(), attachments::Error>(())
/// # }).unwrap();
/// ```
#[async_trait]
pub trait KeyStore: Send + Sync + std::fmt::Debug {
    /// Reads the record of `key` and [`decide`]s for a request of `fingerprint` at `now`.
    /// On [`Decision::Claim`] the key is recorded as claimed by `claim` (a random token
    /// of the caller's), atomically: of requests claiming one key at once, one gets
    /// `Claim` and the others [`Decision::InFlight`] (or [`Decision::Mismatch`]).
    ///
    /// # Errors
    ///
    /// [`Error::KeysFull`] when the store keeps as many keys as it may; IO errors.
    async fn claim_key(
        &self,
        key: &RecordKey,
        fingerprint: &Fingerprint,
        claim: &str,
        now: SystemTime,
    ) -> Result<Decision>;

    /// Settles the claim `claim` of `key`: stores `answer` (replayed to retries for
    /// [`IDEMPOTENCY_TTL`](crate::idempotency::IDEMPOTENCY_TTL)), or with `None` gives the
    /// key up, so that a retry runs. `Ok(false)` when the key is no longer `claim`'s (its
    /// lease ran out and another request took it): nothing is changed.
    async fn settle_key(
        &self,
        key: &RecordKey,
        claim: &str,
        answer: Option<&StoredAnswer>,
        now: SystemTime,
    ) -> Result<bool>;

    /// Removes up to `limit` records expired at `now`; returns how many it removed.
    async fn sweep_keys(&self, now: SystemTime, limit: usize) -> Result<usize>;
}

/// Most keys a [`MemoryStore`](super::MemoryStore) keeps: 100,000. Past it, or past
/// [`MAX_MEMORY_KEY_BYTES`], the answer that expires first is forgotten (a retry of its
/// request after that runs again) if it is at least [`MIN_REPLAY_WINDOW`] old; when none
/// is, a new key is refused ([`Error::KeysFull`], 503): a flood of keys can deny keyed
/// requests for a while, but never takes a recent answer from the client it belongs to.
pub const MAX_MEMORY_KEYS: usize = 100_000;

/// How long a [`MemoryStore`](super::MemoryStore) keeps an answer whatever the load: 10
/// minutes (past it, the cap may forget it before
/// [`IDEMPOTENCY_TTL`](crate::idempotency::IDEMPOTENCY_TTL)).
pub const MIN_REPLAY_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);

/// Most bytes of stored answers a [`MemoryStore`](super::MemoryStore) keeps: 32 MiB,
/// each record counted as its answer's body and type plus [`KEY_OVERHEAD`].
pub const MAX_MEMORY_KEY_BYTES: usize = 32 * 1024 * 1024;

/// What a record counts for in [`MAX_MEMORY_KEY_BYTES`] beside its answer.
pub const KEY_OVERHEAD: usize = 256;

/// The keys of a [`MemoryStore`](super::MemoryStore): the records, and their expiry times
/// in order, so expired ones are dropped in O(log n) each.
#[derive(Debug, Default)]
pub(crate) struct MemoryKeys {
    inner: Mutex<KeyTable>,
}

#[derive(Debug, Default)]
struct KeyTable {
    records: HashMap<RecordKey, KeyRecord>,
    by_expiry: BTreeSet<(u64, RecordKey)>,
    bytes: usize,
}

fn cost(record: &KeyRecord) -> usize {
    KEY_OVERHEAD
        + record.answer.as_ref().map_or(0, |a| {
            a.body.len() + a.content_type.as_ref().map_or(0, String::len)
        })
}

impl KeyTable {
    fn remove(&mut self, key: &RecordKey) -> Option<KeyRecord> {
        let old = self.records.remove(key)?;
        self.by_expiry.remove(&(old.expires_ms(), key.clone()));
        self.bytes -= cost(&old);
        Some(old)
    }

    fn insert(&mut self, key: RecordKey, record: KeyRecord) {
        self.remove(&key);
        self.bytes += cost(&record);
        self.by_expiry.insert((record.expires_ms(), key.clone()));
        self.records.insert(key, record);
    }

    /// Forgets the answered record that expires first (other than `keep`), if it was
    /// answered [`MIN_REPLAY_WINDOW`] or more before `now_ms`: `false` when there is none.
    /// Unanswered claims are skipped (there are no more of them than requests running).
    fn evict_oldest_answer(&mut self, keep: &RecordKey, now_ms: u64) -> bool {
        let window = MIN_REPLAY_WINDOW.as_millis() as u64;
        let oldest = self
            .by_expiry
            .iter()
            .map(|(_, key)| key)
            .find(|key| *key != keep && self.records[*key].answer.is_some())
            .filter(|key| self.records[*key].at_ms.saturating_add(window) <= now_ms)
            .cloned();
        match oldest {
            Some(key) => {
                self.remove(&key);
                true
            }
            None => false,
        }
    }

    /// Drops up to `limit` records expired at `now_ms`.
    fn prune(&mut self, now_ms: u64, limit: usize) -> usize {
        let mut removed = 0;
        while removed < limit {
            match self.by_expiry.first() {
                Some((at, key)) if *at <= now_ms => {
                    let key = key.clone();
                    self.remove(&key);
                    removed += 1;
                }
                _ => break,
            }
        }
        removed
    }
}

impl MemoryKeys {
    fn lock(&self) -> std::sync::MutexGuard<'_, KeyTable> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn claim(
        &self,
        key: &RecordKey,
        fingerprint: &Fingerprint,
        claim: &str,
        now: SystemTime,
    ) -> Result<Decision> {
        let now_ms = crate::idempotency::unix_ms(now);
        let mut table = self.lock();
        // Each claim drops a few expired records: the table never holds many.
        table.prune(now_ms, 8);
        let decision = decide(table.records.get(key), fingerprint, now);
        if decision == Decision::Claim {
            let fresh = !table.records.contains_key(key);
            // Full: the oldest answer is forgotten (its retries, if any still come, run
            // again), as the message board forgets its oldest messages.
            if fresh
                && table.records.len() >= MAX_MEMORY_KEYS
                && !table.evict_oldest_answer(key, now_ms)
            {
                return Err(Error::KeysFull {
                    what: "records",
                    limit: MAX_MEMORY_KEYS as u64,
                });
            }
            let record = KeyRecord::claimed(*fingerprint, claim.to_owned(), now);
            table.insert(key.clone(), record);
        }
        Ok(decision)
    }

    pub(crate) fn settle(
        &self,
        key: &RecordKey,
        claim: &str,
        answer: Option<&StoredAnswer>,
        now: SystemTime,
    ) -> Result<bool> {
        let mut table = self.lock();
        let Some(record) = table.records.get(key) else {
            return Ok(false);
        };
        if record.claim != claim || record.answer.is_some() {
            return Ok(false);
        }
        let fingerprint = record.fingerprint;
        match answer {
            None => {
                table.remove(key);
            }
            Some(answer) => {
                let record =
                    KeyRecord::answered(fingerprint, claim.to_owned(), answer.clone(), now);
                let old = cost(&table.records[key]);
                while table.bytes - old + cost(&record) > MAX_MEMORY_KEY_BYTES {
                    if !table.evict_oldest_answer(key, crate::idempotency::unix_ms(now)) {
                        // No room for the answer: the key is given up (a retry runs
                        // again), which the caller learns as for any answer not kept.
                        table.remove(key);
                        return Err(Error::KeysFull {
                            what: "bytes",
                            limit: MAX_MEMORY_KEY_BYTES as u64,
                        });
                    }
                }
                table.insert(key.clone(), record);
            }
        }
        Ok(true)
    }

    pub(crate) fn sweep(&self, now: SystemTime, limit: usize) -> usize {
        self.lock().prune(crate::idempotency::unix_ms(now), limit)
    }

    /// How many records are kept (expired ones included until swept).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().records.len()
    }
}

#[async_trait]
impl KeyStore for super::MemoryStore {
    async fn claim_key(
        &self,
        key: &RecordKey,
        fingerprint: &Fingerprint,
        claim: &str,
        now: SystemTime,
    ) -> Result<Decision> {
        self.keys.claim(key, fingerprint, claim, now)
    }

    async fn settle_key(
        &self,
        key: &RecordKey,
        claim: &str,
        answer: Option<&StoredAnswer>,
        now: SystemTime,
    ) -> Result<bool> {
        self.keys.settle(key, claim, answer, now)
    }

    async fn sweep_keys(&self, now: SystemTime, limit: usize) -> Result<usize> {
        Ok(self.keys.sweep(now, limit))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::idempotency::{IDEMPOTENCY_TTL, IdempotencyKey};

    /// The record of key `n` of one client.
    fn k(n: usize) -> RecordKey {
        RecordKey::new(
            "s",
            &IdempotencyKey::parse(n.to_string().as_bytes()).unwrap(),
        )
    }

    #[test]
    fn a_full_table_forgets_only_answers_past_the_window() {
        let keys = MemoryKeys::default();
        let fp = Fingerprint::of(&[b"x"]);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        {
            let mut table = keys.lock();
            for n in 0..MAX_MEMORY_KEYS {
                let at = t0 + Duration::from_millis(n as u64);
                let a = StoredAnswer::new(200, None, "{}".into());
                table.insert(k(n), KeyRecord::answered(fp, "c".into(), a, at));
            }
        }
        // Within the window of every answer: a new key is refused, nothing forgotten.
        let soon = t0 + Duration::from_secs(200);
        let e = keys.claim(&k(MAX_MEMORY_KEYS), &fp, "c", soon).unwrap_err();
        assert_eq!(e.status(), 503, "{e}");
        assert!(matches!(
            keys.claim(&k(0), &fp, "c", soon).unwrap(),
            Decision::Replay(_)
        ));
        let later = t0 + MIN_REPLAY_WINDOW + Duration::from_secs(1);
        assert_eq!(
            keys.claim(&k(MAX_MEMORY_KEYS), &fp, "c", later).unwrap(),
            Decision::Claim
        );
        assert_eq!(keys.len(), MAX_MEMORY_KEYS);
        // The oldest answer went; the next oldest is still replayed.
        assert_eq!(keys.claim(&k(0), &fp, "c", later).unwrap(), Decision::Claim);
        assert!(matches!(
            keys.claim(&k(2), &fp, "c", later).unwrap(),
            Decision::Replay(_)
        ));
        // All running: nothing to forget.
        let running = MemoryKeys::default();
        {
            let mut table = running.lock();
            for n in 0..MAX_MEMORY_KEYS {
                table.insert(k(n), KeyRecord::claimed(fp, "c".into(), t0));
            }
        }
        let e = running
            .claim(&k(MAX_MEMORY_KEYS), &fp, "c", t0)
            .unwrap_err();
        assert_eq!(e.status(), 503, "{e}");
    }

    #[test]
    fn expired_records_are_dropped_and_the_count_is_capped() {
        let keys = MemoryKeys::default();
        let fp = Fingerprint::of(&[b"x"]);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        for n in 0..10 {
            assert_eq!(keys.claim(&k(n), &fp, "c", t0).unwrap(), Decision::Claim);
            let a = StoredAnswer::new(200, None, "{}".into());
            assert!(keys.settle(&k(n), "c", Some(&a), t0).unwrap());
        }
        assert_eq!(keys.len(), 10);
        let later = t0 + IDEMPOTENCY_TTL;
        assert_eq!(keys.sweep(later, 4), 4);
        assert_eq!(keys.sweep(later, 100), 6);
        assert_eq!(keys.len(), 0);
        assert_eq!(keys.lock().bytes, 0);
    }
}
