//! [`MemoryStore`]: everything in a map behind a lock.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    AttachmentMeta, Expired, ListQuery, MetaChange, Store, StoredSession, check_range, concat,
    contended, incomplete, not_found, staged_slices, tiling,
};
use crate::error::{Error, Result};

/// A [`Store`] in memory: chunks are kept as the `Bytes` they arrive in (no copy), and an
/// attachment is its list of chunks. For tests and short-lived processes; it holds every
/// file it stores.
///
/// A stored chunk is activity ([`Store::list_expired`]) at the time it was stored, which
/// this store reads from its clock: the system clock, or the one given to
/// [`MemoryStore::with_clock`] (a test that moves an
/// [`UploadReceiver`](crate::stream::UploadReceiver)'s clock gives it the same one).
///
/// # Examples
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::time::SystemTime;
/// use attachments::store::{MemoryStore, Store};
///
/// let store = MemoryStore::new();
/// let now = SystemTime::now();
/// store.begin_upload("u1", now).await?;
/// store.put_chunk("u1", 0, 0, "hello ".into()).await?;
/// store.put_chunk("u1", 1, 6, "world".into()).await?;
/// assert_eq!(store.upload_count(), 1);
/// store.abort("u1").await?;
/// assert_eq!(store.upload_count(), 0);
/// # Ok::<(), attachments::Error>(())
/// # }).unwrap();
/// ```
pub struct MemoryStore {
    inner: Mutex<Inner>,
    /// The messages ([`MessageStore`](super::MessageStore)), under a lock of their own.
    pub(super) messages: super::memory_messages::MemoryMessages,
    /// The idempotency keys ([`KeyStore`](super::KeyStore)), under a lock of their own.
    pub(super) keys: super::keys::MemoryKeys,
    clock: Arc<dyn Fn() -> SystemTime + Send + Sync>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            inner: Mutex::default(),
            messages: Default::default(),
            keys: Default::default(),
            clock: Arc::new(SystemTime::now),
        }
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Inner {
    uploads: HashMap<String, Upload>,
    attachments: HashMap<String, Attachment>,
    sessions: HashMap<String, Session>,
}

#[derive(Debug)]
struct Session {
    record: Bytes,
    version: u64,
    saved: SystemTime,
}

#[derive(Debug)]
struct Upload {
    started: SystemTime,
    /// When the latest chunk was stored, by the store's clock.
    stored: Option<SystemTime>,
    /// By chunk number: (offset, bytes).
    chunks: BTreeMap<u64, (u64, Bytes)>,
}

#[derive(Debug)]
struct Attachment {
    meta: AttachmentMeta,
    /// (offset, bytes), in order, contiguous.
    parts: Vec<(u64, Bytes)>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the time a chunk is stored at from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Uploads in progress.
    pub fn upload_count(&self) -> usize {
        self.lock().uploads.len()
    }

    /// Committed attachments.
    pub fn attachment_count(&self) -> usize {
        self.lock().attachments.len()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated: every update
        // is a single insert or remove.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn begin_upload(&self, upload_id: &str, started: SystemTime) -> Result<()> {
        self.lock().uploads.insert(
            upload_id.to_owned(),
            Upload {
                started,
                stored: None,
                chunks: BTreeMap::new(),
            },
        );
        Ok(())
    }

    async fn put_chunk(
        &self,
        upload_id: &str,
        number: u64,
        offset: u64,
        data: Bytes,
    ) -> Result<()> {
        let now = (self.clock)();
        let mut inner = self.lock();
        let upload = inner
            .uploads
            .get_mut(upload_id)
            .ok_or_else(|| not_found("upload", upload_id))?;
        upload.chunks.insert(number, (offset, data));
        upload.stored = upload.stored.max(Some(now));
        Ok(())
    }

    async fn commit(&self, upload_id: &str, meta: &AttachmentMeta) -> Result<()> {
        let mut inner = self.lock();
        let upload = inner
            .uploads
            .get(upload_id)
            .ok_or_else(|| not_found("upload", upload_id))?;
        if inner.attachments.contains_key(&meta.id) {
            return Err(Error::Taken {
                what: "attachment",
                id: meta.id.clone(),
            });
        }
        let mut pieces: Vec<(u64, u64)> = upload
            .chunks
            .values()
            .map(|(offset, data)| (*offset, data.len() as u64))
            .collect();
        if let Err(stored) = tiling(&mut pieces, meta.file_size) {
            return Err(incomplete(upload_id, stored, meta.file_size));
        }
        let upload = inner.uploads.remove(upload_id).expect("looked up above");
        inner.attachments.insert(
            meta.id.clone(),
            Attachment {
                meta: meta.clone(),
                parts: {
                    let mut parts: Vec<(u64, Bytes)> = upload.chunks.into_values().collect();
                    parts.sort_unstable_by_key(|(offset, _)| *offset);
                    parts
                },
            },
        );
        Ok(())
    }

    async fn abort(&self, upload_id: &str) -> Result<()> {
        self.lock().uploads.remove(upload_id);
        Ok(())
    }

    async fn read_staged(&self, upload_id: &str, range: Range<u64>) -> Result<Bytes> {
        // The chunks are `Bytes`: cloned out under the lock (reference counts), sliced
        // after it.
        let mut chunks: Vec<(u64, Bytes)> = {
            let inner = self.lock();
            let upload = inner
                .uploads
                .get(upload_id)
                .ok_or_else(|| not_found("upload", upload_id))?;
            upload.chunks.values().cloned().collect()
        };
        chunks.sort_unstable_by_key(|(offset, _)| *offset);
        let pieces: Vec<(u64, u64)> = chunks.iter().map(|(o, b)| (*o, b.len() as u64)).collect();
        let slices =
            staged_slices(&pieces, &range).map_err(|at| incomplete(upload_id, at, range.end))?;
        let parts = slices
            .into_iter()
            .map(|(i, r)| chunks[i].1.slice(r.start as usize..r.end as usize))
            .collect();
        Ok(concat(parts, range.end - range.start))
    }

    async fn load_session(&self, upload_id: &str) -> Result<Option<StoredSession>> {
        Ok(self.lock().sessions.get(upload_id).map(|s| StoredSession {
            record: s.record.clone(),
            version: s.version.to_string(),
        }))
    }

    async fn save_session(
        &self,
        upload_id: &str,
        record: Bytes,
        expected: Option<&str>,
        saved: SystemTime,
    ) -> Result<String> {
        let mut inner = self.lock();
        let current = inner.sessions.get(upload_id).map(|s| s.version);
        if current.map(|v| v.to_string()).as_deref() != expected {
            return Err(contended(upload_id));
        }
        let version = current.map_or(1, |v| v + 1);
        inner.sessions.insert(
            upload_id.to_owned(),
            Session {
                record,
                version,
                saved,
            },
        );
        Ok(version.to_string())
    }

    async fn read_range(&self, attachment_id: &str, range: Range<u64>) -> Result<Bytes> {
        let inner = self.lock();
        let att = inner
            .attachments
            .get(attachment_id)
            .ok_or_else(|| not_found("attachment", attachment_id))?;
        check_range(&range, att.meta.file_size)?;
        // Parts overlapping the range; one part is served as a slice of it, without a copy.
        let overlapping: Vec<Bytes> = att
            .parts
            .iter()
            .filter(|(off, data)| *off < range.end && off + data.len() as u64 > range.start)
            .map(|(off, data)| {
                let from = range.start.saturating_sub(*off) as usize;
                let to = (range.end - off).min(data.len() as u64) as usize;
                data.slice(from..to)
            })
            .collect();
        Ok(concat(overlapping, range.end - range.start))
    }

    async fn metadata(&self, attachment_id: &str) -> Result<AttachmentMeta> {
        self.lock()
            .attachments
            .get(attachment_id)
            .map(|a| a.meta.clone())
            .ok_or_else(|| not_found("attachment", attachment_id))
    }

    async fn update(&self, attachment_id: &str, change: &MetaChange) -> Result<AttachmentMeta> {
        let mut inner = self.lock();
        let att = inner
            .attachments
            .get_mut(attachment_id)
            .ok_or_else(|| not_found("attachment", attachment_id))?;
        change.apply(&mut att.meta);
        Ok(att.meta.clone())
    }

    async fn list_attachments(&self, query: &ListQuery) -> Result<Vec<AttachmentMeta>> {
        let inner = self.lock();
        let mut found: Vec<&AttachmentMeta> = inner
            .attachments
            .values()
            .map(|a| &a.meta)
            .filter(|m| query.matches(m) && query.after_cursor(&m.id))
            .collect();
        found.sort_unstable_by(|a, b| b.id.cmp(&a.id));
        Ok(found.into_iter().take(query.limit).cloned().collect())
    }

    async fn list_expired(
        &self,
        uploads_before: SystemTime,
        unlinked_before: SystemTime,
    ) -> Result<Vec<Expired>> {
        let inner = self.lock();
        let idle = |id: &String| {
            inner
                .uploads
                .get(id)
                .is_none_or(|u| u.started.max(u.stored.unwrap_or(u.started)) < uploads_before)
                && inner
                    .sessions
                    .get(id)
                    .is_none_or(|s| s.saved < uploads_before)
        };
        let mut out: Vec<Expired> = inner
            .uploads
            .keys()
            .chain(inner.sessions.keys())
            .filter(|id| idle(id))
            .map(|id| Expired::Upload(id.clone()))
            .collect();
        out.extend(
            inner
                .attachments
                .values()
                .filter(|a| !a.meta.linked && a.meta.created < unlinked_before)
                .map(|a| Expired::Attachment(a.meta.id.clone())),
        );
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn delete_attachment(&self, attachment_id: &str) -> Result<()> {
        self.lock().attachments.remove(attachment_id);
        Ok(())
    }

    async fn remove(&self, item: &Expired) -> Result<()> {
        let mut inner = self.lock();
        match item {
            Expired::Upload(id) => {
                inner.uploads.remove(id);
                inner.sessions.remove(id);
            }
            Expired::Attachment(id) => {
                // Linked by a message since the listing: it stays.
                if inner.attachments.get(id).is_some_and(|a| !a.meta.linked) {
                    inner.attachments.remove(id);
                }
            }
            // Nothing in memory is ever damaged.
            Expired::Damaged(_) => {}
        }
        Ok(())
    }
}
