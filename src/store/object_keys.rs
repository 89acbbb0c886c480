//! Idempotency keys of the [`ObjectStoreBackend`]: one object per key, claimed and
//! settled with conditional writes, so processes sharing the bucket claim each key once.
//!
//! ```text
//! keys/<record key>.json   the record (JSON, at most MAX_KEY_RECORD bytes)
//! ```
//!
//! A claim creates the object (`If-None-Match: *`) or replaces an expired record at the
//! ETag it was read at (`If-Match`); of claims racing for one key one write wins, and the
//! others read the winner's record. A settle replaces the claim at its ETag; giving a key
//! up writes an expired record the same way (the sweep deletes it), so a settle never
//! removes a record another request claimed meanwhile.

use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use object_store::ObjectStore;
use object_store::path::Path;

use super::ObjectStoreBackend;
use super::keys::KeyStore;
use crate::error::{Error, Result};
use crate::idempotency::{
    Decision, Fingerprint, IN_FLIGHT_LEASE, KeyRecord, MAX_KEY_RECORD, RecordKey, StoredAnswer,
    decide,
};

/// How often a claim reads and writes again after losing a race to another writer.
const CLAIM_ROUNDS: usize = 4;

impl ObjectStoreBackend {
    fn key_path(&self, key: &RecordKey) -> Path {
        self.path(&["keys", &format!("{key}.json")])
    }

    /// The record of `key` with its ETag; a damaged record reads as an expired one at its
    /// ETag (so it is replaced conditionally, never trusted).
    async fn key_record(&self, key: &RecordKey) -> Result<Option<(KeyRecord, Option<String>)>> {
        let path = self.key_path(key);
        let Some((bytes, e_tag)) = self.read_record(&path).await? else {
            return Ok(None);
        };
        if bytes.len() > MAX_KEY_RECORD {
            tracing::warn!(key = %key, size = bytes.len(), "an oversized idempotency record is replaced");
            return Ok(Some((expired_record(), e_tag)));
        }
        match KeyRecord::from_bytes(&bytes, &path) {
            Ok(record) => Ok(Some((record, e_tag))),
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "a damaged idempotency record is replaced");
                Ok(Some((expired_record(), e_tag)))
            }
        }
    }
}

/// A record that counts for nothing: an unanswered claim from the epoch.
fn expired_record() -> KeyRecord {
    KeyRecord::claimed(Fingerprint::of(&[]), String::new(), SystemTime::UNIX_EPOCH)
}

#[async_trait]
impl KeyStore for ObjectStoreBackend {
    async fn claim_key(
        &self,
        key: &RecordKey,
        fingerprint: &Fingerprint,
        claim: &str,
        now: SystemTime,
    ) -> Result<Decision> {
        let path = self.key_path(key);
        for _ in 0..CLAIM_ROUNDS {
            let current = self.key_record(key).await?;
            let decision = decide(current.as_ref().map(|(r, _)| r), fingerprint, now);
            if decision != Decision::Claim {
                return Ok(decision);
            }
            let record = KeyRecord::claimed(*fingerprint, claim.to_owned(), now);
            let expected = current.as_ref().map(|(_, tag)| tag.clone());
            let expected = match expected {
                // An object without an ETag cannot be replaced conditionally.
                Some(None) => return Ok(Decision::InFlight),
                Some(Some(tag)) => Some(tag),
                None => None,
            };
            if self
                .put_if(&path, Bytes::from(record.to_bytes()), expected.as_deref())
                .await?
                .is_some()
            {
                return Ok(Decision::Claim);
            }
            // Another writer came first: read what it wrote.
        }
        // Writers kept racing for this key: the client tries again shortly.
        Ok(Decision::InFlight)
    }

    async fn settle_key(
        &self,
        key: &RecordKey,
        claim: &str,
        answer: Option<&StoredAnswer>,
        now: SystemTime,
    ) -> Result<bool> {
        let Some((record, Some(tag))) = self.key_record(key).await? else {
            return Ok(false);
        };
        if record.claim != claim || record.answer.is_some() {
            return Ok(false);
        }
        let settled = match answer {
            Some(answer) => {
                KeyRecord::answered(record.fingerprint, claim.to_owned(), answer.clone(), now)
            }
            None => expired_record(),
        };
        Ok(self
            .put_if(
                &self.key_path(key),
                Bytes::from(settled.to_bytes()),
                Some(&tag),
            )
            .await?
            .is_some())
    }

    async fn sweep_keys(&self, now: SystemTime, limit: usize) -> Result<usize> {
        let (inner, _) = self.object_store();
        let inner = inner.clone();
        let prefix = self.path(&["keys"]);
        // A record younger than the shortest life (the lease) is not read at all.
        let young = now
            .checked_sub(IN_FLIGHT_LEASE)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut listing = inner.list(Some(&prefix));
        let mut removed = 0;
        while let Some(object) = listing.next().await {
            if removed >= limit {
                break;
            }
            let object = object.map_err(|e| {
                Error::io_other("listing idempotency keys", std::io::ErrorKind::Other, e)
            })?;
            let Some(key) = object
                .location
                .filename()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(RecordKey::parse)
            else {
                continue;
            };
            if SystemTime::from(object.last_modified) > young {
                continue;
            }
            if let Some((record, _)) = self.key_record(&key).await?
                && record.is_expired(now)
            {
                self.delete(&object.location).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
