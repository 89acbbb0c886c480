//! Idempotency keys of the [`FsStore`]: one file per key, changed under one lock file, so
//! processes sharing the directory claim each key once.
//!
//! ```text
//! keys/<record key>.json   the record (JSON, at most MAX_KEY_RECORD bytes)
//! keys/.lock-<xx>          held (flock) while a record whose name starts with xx is
//!                          read and changed (256 locks, so unrelated keys rarely wait)
//! keys/.tmp-*              records being written
//! ```
//!
//! A claim, a settle and each removal of the sweep take the lock for one read and one
//! write of one small file: the lock is never held for longer than that, and every call
//! runs on tokio's blocking pool. Records are named by [`RecordKey`] (64 hex digits), so
//! no name a client sends reaches the file system.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::FsStore;
use super::fs::{read_small, write_atomic};
use super::keys::KeyStore;
use crate::error::{Error, Result};
use crate::idempotency::{
    Decision, Fingerprint, IN_FLIGHT_LEASE, KeyRecord, RecordKey, StoredAnswer, decide,
};

fn dir(root: &Path) -> PathBuf {
    root.join("keys")
}

fn record_path(root: &Path, key: &RecordKey) -> PathBuf {
    dir(root).join(format!("{key}.json"))
}

/// Holds the lock of `key`'s shard until dropped.
fn lock(root: &Path, key: &RecordKey) -> io::Result<File> {
    let dir = dir(root);
    fs::create_dir_all(&dir)?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!(".lock-{}", &key.as_str()[..2])))?;
    lock.lock()?;
    Ok(lock)
}

/// The record at `path`, checked; `None` when there is none. A damaged record is
/// removed (it is a key's bookkeeping, not a client's data) and reads as none.
fn read(path: &Path, key: &RecordKey) -> io::Result<Option<KeyRecord>> {
    let bytes = match read_small(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            tracing::warn!(key = %key, error = %e, "a damaged idempotency record is removed");
            fs::remove_file(path)?;
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    match KeyRecord::from_bytes(&bytes, &key) {
        Ok(record) => Ok(Some(record)),
        Err(e) => {
            tracing::warn!(key = %key, error = %e, "a damaged idempotency record is removed");
            fs::remove_file(path)?;
            Ok(None)
        }
    }
}

async fn blocking<T: Send + 'static>(
    store: &FsStore,
    op: &'static str,
    f: impl FnOnce(&Path) -> io::Result<T> + Send + 'static,
) -> Result<T> {
    let root = store.root().to_owned();
    tokio::task::spawn_blocking(move || f(&root))
        .await
        .map_err(|e| Error::io_other(op, io::ErrorKind::Other, e))?
        .map_err(|e| Error::io(op, e))
}

#[async_trait]
impl KeyStore for FsStore {
    async fn claim_key(
        &self,
        key: &RecordKey,
        fingerprint: &Fingerprint,
        claim: &str,
        now: SystemTime,
    ) -> Result<Decision> {
        let (key, fingerprint, claim) = (key.clone(), *fingerprint, claim.to_owned());
        blocking(self, "claiming an idempotency key", move |root| {
            let _lock = lock(root, &key)?;
            let path = record_path(root, &key);
            let decision = decide(read(&path, &key)?.as_ref(), &fingerprint, now);
            if decision == Decision::Claim {
                let record = KeyRecord::claimed(fingerprint, claim, now);
                // Not synced: a claim a crash loses only frees its key early, as the
                // crash freed the request.
                write_atomic(&path, &record.to_bytes(), false)?;
            }
            Ok(decision)
        })
        .await
    }

    async fn settle_key(
        &self,
        key: &RecordKey,
        claim: &str,
        answer: Option<&StoredAnswer>,
        now: SystemTime,
    ) -> Result<bool> {
        let (key, claim, answer) = (key.clone(), claim.to_owned(), answer.cloned());
        blocking(self, "settling an idempotency key", move |root| {
            let _lock = lock(root, &key)?;
            let path = record_path(root, &key);
            let Some(record) = read(&path, &key)? else {
                return Ok(false);
            };
            if record.claim != claim || record.answer.is_some() {
                return Ok(false);
            }
            match answer {
                None => fs::remove_file(&path)?,
                Some(answer) => {
                    let done = KeyRecord::answered(record.fingerprint, claim, answer, now);
                    write_atomic(&path, &done.to_bytes(), true)?;
                }
            }
            Ok(true)
        })
        .await
    }

    async fn sweep_keys(&self, now: SystemTime, limit: usize) -> Result<usize> {
        blocking(self, "sweeping idempotency keys", move |root| {
            let entries = match fs::read_dir(dir(root)) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(e),
            };
            // A record younger than the shortest life (the lease) is not read at all.
            let young = now
                .checked_sub(IN_FLIGHT_LEASE)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let mut removed = 0;
            for entry in entries {
                if removed >= limit {
                    break;
                }
                let entry = entry?;
                let name = entry.file_name();
                let Some(key) = name
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .and_then(RecordKey::parse)
                else {
                    // Leftover temporary files of a writer that died.
                    let stale = entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t + Duration::from_secs(3600) < now);
                    if name.to_string_lossy().starts_with(".tmp-") && stale {
                        let _ = fs::remove_file(entry.path());
                    }
                    continue;
                };
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t <= young);
                if !old {
                    continue;
                }
                let _lock = lock(root, &key)?;
                let path = entry.path();
                if read(&path, &key)?.is_some_and(|r| r.is_expired(now)) {
                    fs::remove_file(&path)?;
                    removed += 1;
                }
            }
            Ok(removed)
        })
        .await
    }
}
