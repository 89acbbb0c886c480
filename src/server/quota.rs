//! Quotas on open uploads and the bytes they stage, per client and per scope. IO-free:
//! the caller passes the time.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use super::Sandbox;
use crate::error::{Error, Result};

/// Default of [`UploadQuota::max_open`]: 100 open uploads.
pub const DEFAULT_MAX_OPEN_UPLOADS: usize = 100;

/// Default of [`UploadQuota::max_staged`]: 256 MiB.
pub const DEFAULT_MAX_STAGED: u64 = 256 * 1024 * 1024;

/// Open uploads tracked at the most, over all keys: past it a new upload is refused as if
/// its keys were full, so a flood of distinct clients and scopes cannot grow the tracker
/// without bound.
pub const MAX_TRACKED_UPLOADS: usize = 100_000;

/// What one key (one client, one scope) may hold at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadQuota {
    /// Uploads open at once (chunked uploads started and not yet finished, failed or
    /// expired; chat uploads while their body streams in).
    pub max_open: usize,
    /// Bytes staged by those uploads.
    pub max_staged: u64,
}

impl Default for UploadQuota {
    fn default() -> Self {
        UploadQuota {
            max_open: DEFAULT_MAX_OPEN_UPLOADS,
            max_staged: DEFAULT_MAX_STAGED,
        }
    }
}

/// Which limit of an [`UploadQuota`] a refused upload met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaLimit {
    /// [`UploadQuota::max_open`].
    OpenUploads,
    /// [`UploadQuota::max_staged`].
    StagedBytes,
}

/// A refusal: key number `key` (its index in the keys the upload was opened with) holds
/// `used` of `limit`, and the request would pass it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaRefusal {
    /// The index of the key that is full.
    pub key: usize,
    /// Which of its limits.
    pub limit_kind: QuotaLimit,
    /// What it holds.
    pub used: u64,
    /// Its limit.
    pub limit: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    open: usize,
    staged: u64,
}

#[derive(Debug)]
struct Open {
    keys: Vec<String>,
    staged: u64,
    last: Duration,
}

/// The open uploads of every client and scope, and what each has staged.
///
/// An upload is opened under a few keys (the server uses two: the client's address and
/// the conversation), each of which may hold at most [`UploadQuota::max_open`] uploads and
/// [`UploadQuota::max_staged`] bytes. Every operation is O(log n): uploads idle for longer
/// than the idle time given to [`Quotas::new`] are closed as time passes, oldest first.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use attachments::server::{QuotaLimit, Quotas, UploadQuota};
///
/// let quota = UploadQuota { max_open: 1, max_staged: 1000 };
/// let mut q = Quotas::new(quota, Duration::from_secs(60));
/// let t = Duration::ZERO;
/// q.open("u1", &["client-a", "conversation-1"], 600, t).unwrap();
/// // The client's one place is taken.
/// let refused = q.open("u2", &["client-a", "conversation-2"], 10, t).unwrap_err();
/// assert_eq!((refused.key, refused.limit_kind), (0, QuotaLimit::OpenUploads));
/// // More bytes than the quota leaves are refused; the upload stays open.
/// let refused = q.stage("u1", 500, t).unwrap_err();
/// assert_eq!((refused.limit_kind, refused.used, refused.limit), (QuotaLimit::StagedBytes, 600, 1000));
/// // Closing it (finished, failed) frees its place and bytes.
/// q.close("u1");
/// q.open("u2", &["client-a", "conversation-2"], 10, t).unwrap();
/// // So does a minute without a chunk.
/// q.open("u3", &["client-b", "conversation-3"], 10, Duration::from_secs(30)).unwrap();
/// assert_eq!(q.open_uploads(), 2);
/// q.expire(Duration::from_secs(61));
/// assert_eq!(q.open_uploads(), 1);
/// ```
#[derive(Debug)]
pub struct Quotas {
    quota: UploadQuota,
    idle: Duration,
    keys: HashMap<String, Usage>,
    uploads: HashMap<String, Open>,
    /// The uploads by their last activity, oldest first.
    by_time: BTreeSet<(Duration, String)>,
}

impl Quotas {
    /// Quotas of `quota` per key; an upload with no activity for `idle` is closed.
    pub fn new(quota: UploadQuota, idle: Duration) -> Self {
        Quotas {
            quota,
            idle,
            keys: HashMap::new(),
            uploads: HashMap::new(),
            by_time: BTreeSet::new(),
        }
    }

    /// The uploads open now.
    pub fn open_uploads(&self) -> usize {
        self.uploads.len()
    }

    /// Whether upload `id` is open.
    pub fn is_open(&self, id: &str) -> bool {
        self.uploads.contains_key(id)
    }

    /// What key `key` holds: open uploads and staged bytes.
    pub fn usage(&self, key: &str) -> (usize, u64) {
        self.keys.get(key).map_or((0, 0), |u| (u.open, u.staged))
    }

    /// Opens upload `id` under `keys` with its first `bytes` staged, at time `now`.
    ///
    /// # Errors
    ///
    /// The first key that has no place or no room for `bytes` (nothing is taken then);
    /// an id already open is refused as a full key 0 would be, and so is any upload once
    /// [`MAX_TRACKED_UPLOADS`] are open.
    pub fn open(
        &mut self,
        id: &str,
        keys: &[&str],
        bytes: u64,
        now: Duration,
    ) -> Result<(), QuotaRefusal> {
        self.expire(now);
        let max_open = self.quota.max_open;
        let full = QuotaRefusal {
            key: 0,
            limit_kind: QuotaLimit::OpenUploads,
            used: max_open as u64,
            limit: max_open as u64,
        };
        if self.uploads.contains_key(id) || self.uploads.len() >= MAX_TRACKED_UPLOADS {
            return Err(full);
        }
        for (n, key) in keys.iter().enumerate() {
            let usage = self.keys.get(*key).copied().unwrap_or_default();
            if usage.open >= max_open {
                return Err(QuotaRefusal {
                    key: n,
                    used: usage.open as u64,
                    ..full
                });
            }
            self.room(n, usage, bytes)?;
        }
        for key in keys {
            let usage = self.keys.entry((*key).to_owned()).or_default();
            usage.open += 1;
            usage.staged += bytes;
        }
        self.uploads.insert(
            id.to_owned(),
            Open {
                keys: keys.iter().map(|k| (*k).to_owned()).collect(),
                staged: bytes,
                last: now,
            },
        );
        self.by_time.insert((now, id.to_owned()));
        Ok(())
    }

    /// Whether key number `n`, holding `usage`, has room for `bytes` more.
    fn room(&self, n: usize, usage: Usage, bytes: u64) -> Result<(), QuotaRefusal> {
        if usage.staged.saturating_add(bytes) > self.quota.max_staged {
            return Err(QuotaRefusal {
                key: n,
                limit_kind: QuotaLimit::StagedBytes,
                used: usage.staged,
                limit: self.quota.max_staged,
            });
        }
        Ok(())
    }

    /// Stages `bytes` more for upload `id` at time `now`. An id that is not open (an
    /// upload started by another process sharing the store, or before a restart) is let
    /// through uncounted.
    ///
    /// # Errors
    ///
    /// The first of its keys without room for `bytes` (nothing is taken then).
    pub fn stage(&mut self, id: &str, bytes: u64, now: Duration) -> Result<(), QuotaRefusal> {
        self.expire(now);
        let Some(open) = self.uploads.get_mut(id) else {
            return Ok(());
        };
        self.by_time.remove(&(open.last, id.to_owned()));
        open.last = now;
        self.by_time.insert((now, id.to_owned()));
        let open = &self.uploads[id];
        for (n, key) in open.keys.iter().enumerate() {
            let usage = self.keys.get(key).copied().unwrap_or_default();
            self.room(n, usage, bytes)?;
        }
        let open = self.uploads.get_mut(id).expect("looked up above");
        open.staged += bytes;
        for key in &open.keys {
            if let Some(usage) = self.keys.get_mut(key) {
                usage.staged += bytes;
            }
        }
        Ok(())
    }

    /// Gives back `bytes` staged for upload `id` that were not stored after all.
    pub fn unstage(&mut self, id: &str, bytes: u64) {
        let Some(open) = self.uploads.get_mut(id) else {
            return;
        };
        let bytes = bytes.min(open.staged);
        open.staged -= bytes;
        for key in &open.keys {
            if let Some(usage) = self.keys.get_mut(key) {
                usage.staged = usage.staged.saturating_sub(bytes);
            }
        }
    }

    /// Renames open upload `from` to `to` (the id a store gave an upload opened under a
    /// provisional one). Nothing happens if `from` is not open or `to` already is.
    pub fn rename(&mut self, from: &str, to: &str) {
        if self.uploads.contains_key(to) {
            return;
        }
        if let Some(open) = self.uploads.remove(from) {
            self.by_time.remove(&(open.last, from.to_owned()));
            self.by_time.insert((open.last, to.to_owned()));
            self.uploads.insert(to.to_owned(), open);
        }
    }

    /// Closes upload `id` (finished, failed, aborted): its place and its bytes are free.
    pub fn close(&mut self, id: &str) {
        let Some(open) = self.uploads.remove(id) else {
            return;
        };
        self.by_time.remove(&(open.last, id.to_owned()));
        for key in &open.keys {
            if let Some(usage) = self.keys.get_mut(key) {
                usage.open = usage.open.saturating_sub(1);
                usage.staged = usage.staged.saturating_sub(open.staged);
                if usage.open == 0 {
                    self.keys.remove(key);
                }
            }
        }
    }

    /// Closes every upload idle for longer than the idle time at `now`, oldest first.
    pub fn expire(&mut self, now: Duration) {
        while let Some((last, id)) = self.by_time.first().cloned() {
            if now.saturating_sub(last) <= self.idle {
                break;
            }
            self.close(&id);
        }
    }
}

/// The client a request comes from, as the rate limit keys it; the guard puts it in every
/// request's extensions.
#[derive(Debug, Clone)]
pub(super) struct ClientKey(pub(super) String);

/// How long a client refused by its quota is asked to wait.
const QUOTA_RETRY_AFTER_SECS: u64 = 30;

fn refused(r: QuotaRefusal) -> Error {
    Error::QuotaExceeded {
        who: if r.key == 0 {
            "this client"
        } else {
            "this conversation"
        },
        what: match r.limit_kind {
            QuotaLimit::OpenUploads => "open uploads",
            QuotaLimit::StagedBytes => "bytes staged in open uploads",
        },
        used: r.used,
        limit: r.limit,
        retry_after_secs: QUOTA_RETRY_AFTER_SECS,
    }
}

impl Sandbox {
    fn quotas(&self) -> std::sync::MutexGuard<'_, Quotas> {
        self.inner.quotas.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens an upload for `client`, and in `scope` if given (a conversation; the chat
    /// resource's owner scope is not one, as every client of a token shares it), with
    /// `bytes` staged, under a provisional id; it is closed when the handle is dropped,
    /// unless [`Provisional::name`] gives it the store's id first.
    pub(super) fn open_upload(
        &self,
        client: &ClientKey,
        scope: Option<&str>,
        bytes: u64,
    ) -> Result<Provisional> {
        let n = self
            .inner
            .provisional
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("provisional {n}");
        let client = format!("client {}", client.0);
        let scope = scope.map(|s| format!("scope {s}"));
        let keys: Vec<&str> = std::iter::once(client.as_str())
            .chain(scope.as_deref())
            .collect();
        let now = self.inner.started.elapsed();
        self.quotas()
            .open(&id, &keys, bytes, now)
            .map_err(refused)?;
        Ok(Provisional {
            sandbox: self.clone(),
            id,
        })
    }

    /// Keeps the resumable upload `id` open for `client` between its requests: opened
    /// now unless it is open already (created by another process sharing the store, or
    /// its entry expired here), so its bytes count against the client's quota while it
    /// lives. Closed with [`Sandbox::close_upload`] once it ends.
    /// `bytes` are what the upload holds already (counted when it is opened here).
    pub(super) fn hold_upload(&self, client: &ClientKey, id: &str, bytes: u64) -> Result<()> {
        let key = format!("client {}", client.0);
        let now = self.inner.started.elapsed();
        let mut quotas = self.quotas();
        if quotas.is_open(id) {
            return Ok(());
        }
        quotas
            .open(id, &[key.as_str()], bytes, now)
            .map_err(refused)
    }

    /// Whether upload `id` holds a place in the quotas here.
    pub(super) fn holds_upload(&self, id: &str) -> bool {
        self.quotas().is_open(id)
    }

    /// Stages `bytes` more for upload `id`.
    pub(super) fn stage_upload(&self, id: &str, bytes: u64) -> Result<()> {
        let now = self.inner.started.elapsed();
        self.quotas().stage(id, bytes, now).map_err(refused)
    }

    /// Gives back `bytes` of upload `id` that were not stored.
    pub(super) fn unstage_upload(&self, id: &str, bytes: u64) {
        self.quotas().unstage(id, bytes);
    }

    /// Closes upload `id`: its place and bytes are free.
    pub(super) fn close_upload(&self, id: &str) {
        self.quotas().close(id);
    }
}

/// An upload opened under a provisional id: closed when dropped (the request failed or
/// was cancelled), unless named.
pub(super) struct Provisional {
    sandbox: Sandbox,
    id: String,
}

impl Provisional {
    /// Its provisional id.
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// Keeps the upload open under the store's id `upload_id`.
    pub(super) fn name(self, upload_id: &str) {
        self.sandbox.quotas().rename(&self.id, upload_id);
        // Renamed: the drop below finds nothing open under the provisional id.
    }
}

impl Drop for Provisional {
    fn drop(&mut self) {
        self.sandbox.close_upload(&self.id);
    }
}
