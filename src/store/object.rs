//! [`ObjectStoreBackend`]: a [`Store`] in S3 (or any `object_store` backend), with no
//! state in the process.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use super::{
    AttachmentMeta, Expired, ListQuery, MetaChange, Store, StoredSession, check_range, concat,
    contended, incomplete, not_found, parse_id, scope_key, staged_slices, tiling, within_budget,
};
use crate::error::{Error, Result};
use crate::upload::RandomId;

/// How many times a conditional rewrite is tried again after losing a race.
const MAX_CONTENDED: usize = 8;

/// The largest record object read back (session records, upload markers, manifests): 1 MiB.
/// A manifest lists one part per chunk (about 100 bytes each), so this bounds an attachment
/// at some 10,000 chunks, far above any preset's limits.
pub const MAX_RECORD_OBJECT: u64 = 1024 * 1024;

/// A [`Store`] over an [`ObjectStore`]: Amazon S3 or any S3-compatible service (tested
/// against Ceph's RADOS Gateway), or any other `object_store` backend. It keeps nothing
/// in the process, so any number of server processes may share one bucket.
///
/// Object layout under the store's root (a bucket, or a prefix of one):
///
/// ```text
/// uploads/<upload_id>/begun      {"started": ms, "committing": null | "<attachment_id>"}
/// uploads/<upload_id>/session    the session record: a JSON header line, then the record
/// data/<upload_id>/<n>.<offset>  chunk n of the upload (n and offset zero-padded)
/// attachments/<attachment_id>    the manifest: metadata and the list of chunk objects
/// unlinked/<created ms>.<id>     index of attachments no message carries yet
/// scopes/<h>/<inverted id>       index of each scope's attachments, and of each
///                                conversation's (h: SHA-256 of the scope, hex, 32 digits)
/// quarantine/<attachment_id>     a manifest that could not be read, moved aside
/// ```
///
/// # The commit scheme: chunk objects and a manifest
///
/// S3 multipart parts must be at least 5 MiB (except the last), and the APIs' chunks are
/// under 1 MB, so chunks cannot map onto parts; composing them into one object at `finish`
/// would copy every byte once more. Instead each chunk stays the object it was stored as,
/// and `commit` writes a **manifest** naming them, with a conditional create
/// (`If-None-Match: *`): one small PUT, atomic by S3's own guarantee, so the attachment
/// appears whole or not at all, and a taken attachment id is refused. A range read fetches
/// the one or two chunk objects it overlaps, in parallel.
///
/// Before the manifest is written the upload's marker is rewritten to say which attachment
/// it is becoming, and the marker is deleted after; the sweep ([`Store::remove`] of an
/// upload) deletes chunk objects only when no manifest owns them.
///
/// # Session records and races
///
/// [`Store::save_session`] is a conditional PUT: `If-None-Match: *` for the first save,
/// `If-Match: <ETag>` after, the ETag being the version. Two processes that loaded the
/// same version cannot both save: S3 answers the second with 412, which becomes
/// [`Error::Contended`]. Ceph RGW 16 compares `If-Match` without the quotes an ETag
/// carries; when a conditional save fails although the object still has the ETag named,
/// the backend repeats it unquoted once and keeps doing so for this store.
///
/// Listing for expiry reads each upload's two small records (and, for an open upload
/// they say is idle, the listing of its chunk objects: a chunk stored is activity, at the
/// object's last-modified time), and the `unlinked/` index by name only, so no
/// attachment is read to be found.
///
/// # Records and quarantine
///
/// Records are read back under [`MAX_RECORD_OBJECT`], and none over it is written
/// ([`Error::NotSaveable`]; a manifest is checked before anything of its commit is
/// written). A manifest that cannot be read back is skipped by listings with a warning;
/// removing it (as [`Expired::Damaged`], or as the [`Expired::Attachment`] the expiry
/// index lists) copies it to `quarantine/<id>` and deletes it, leaving the chunk objects
/// it names in place. The sweep does not read every manifest, so it meets a damaged one
/// only through the expiry index.
///
/// # Listing a scope
///
/// [`Store::list_attachments`] reads the scope's index: its keys are the ids with every
/// hex digit inverted (`d` becomes `f - d`), so S3's ascending key order is highest id
/// first, and a page after a cursor is one `LIST` with `start-after`, then one `GET` of
/// each listed manifest, a page's worth at a time, concurrently. Index entries are written
/// before the manifest and removed after it, so an entry without a manifest (a crash in
/// between) is skipped. A backend that does not list in key order is detected and read
/// whole, then sorted.
#[derive(Clone)]
pub struct ObjectStoreBackend {
    inner: Arc<dyn ObjectStore>,
    /// The root prefix (empty: the bucket's root).
    root: Path,
    /// Send `If-Match` ETags without quotes (see the type's documentation).
    unquoted_etags: Arc<AtomicBool>,
}

impl fmt::Debug for ObjectStoreBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStoreBackend")
            .field("inner", &self.inner.to_string())
            .field("root", &self.root.as_ref())
            .finish_non_exhaustive()
    }
}

/// Why an attachment is removed: what [`ObjectStoreBackend::remove_attachment`]
/// re-checks first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    /// Listed as expired: removed only if still unlinked.
    Expired,
    /// Listed as damaged: moved aside only if still damaged.
    Damaged,
    /// Deleted on request, whatever its state.
    Delete,
}

#[derive(Debug, Serialize, Deserialize)]
struct Begun {
    #[serde(with = "super::unix_millis")]
    started: SystemTime,
    #[serde(default)]
    committing: Option<String>,
    /// The index entries the commit in progress writes before its manifest: a commit a
    /// crash cut short leaves them, and removing the upload removes them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    indexed: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SessionHeader {
    #[serde(with = "super::unix_millis")]
    saved: SystemTime,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    meta: AttachmentMeta,
    upload_id: String,
    parts: Vec<Part>,
    /// Set by the sweep before it deletes the attachment (a conditional rewrite): a link
    /// racing the sweep then loses its own conditional rewrite and finds no attachment,
    /// instead of being answered and then swept.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    removing: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Part {
    key: String,
    offset: u64,
    size: u64,
}

impl ObjectStoreBackend {
    /// A store over `inner`, at its root.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        ObjectStoreBackend {
            inner,
            root: Path::default(),
            unquoted_etags: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Keeps every object under `prefix` (for instance one per deployment, or per test).
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.root = Path::from(prefix);
        self
    }

    /// The object store and the root prefix (for the messages, `object_messages`).
    pub(super) fn object_store(&self) -> (&Arc<dyn ObjectStore>, &Path) {
        (&self.inner, &self.root)
    }

    /// An S3 store from a URL `s3://BUCKET[/PREFIX]?endpoint=URL&region=R`, with the
    /// credentials of the usual `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` variables
    /// (and the other `AWS_*` ones `object_store` reads). `endpoint` is for S3-compatible
    /// services (plain `http://` is allowed for it); without it, Amazon S3 in `region`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidField`] naming what is wrong with the URL.
    ///
    /// # Examples
    ///
    /// ```
    /// use attachments::store::ObjectStoreBackend;
    ///
    /// let store = ObjectStoreBackend::from_s3_url(
    ///     "s3://attachments/staging?endpoint=http://127.0.0.1:7480&region=us-east-1")?;
    /// assert!(format!("{store:?}").contains("staging"));
    /// assert!(ObjectStoreBackend::from_s3_url("http://example.com/bucket").is_err());
    /// # Ok::<(), attachments::Error>(())
    /// ```
    pub fn from_s3_url(url: &str) -> Result<Self> {
        let invalid = |problem: String| Error::InvalidField {
            field: "store".into(),
            problem,
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| invalid(format!("{url:?} does not start with s3://")))?;
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
        if bucket.is_empty() {
            return Err(invalid(format!("{url:?} names no bucket")));
        }
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            builder = match key {
                "endpoint" => builder
                    .with_endpoint(value)
                    .with_allow_http(value.starts_with("http://")),
                "region" => builder.with_region(value),
                other => {
                    return Err(invalid(format!(
                        "unknown parameter {other:?} in {url:?}; endpoint and region are known"
                    )));
                }
            };
        }
        let s3 = builder
            .build()
            .map_err(|e| invalid(format!("{url:?}: {e}")))?;
        Ok(Self::new(Arc::new(s3)).with_prefix(prefix.trim_matches('/')))
    }

    pub(super) fn path(&self, parts: &[&str]) -> Path {
        let mut path = self.root.clone();
        for part in parts {
            path = path.join(*part);
        }
        path
    }

    fn begun_path(&self, id: &RandomId) -> Path {
        self.path(&["uploads", &id.to_string(), "begun"])
    }

    fn session_path(&self, id: &RandomId) -> Path {
        self.path(&["uploads", &id.to_string(), "session"])
    }

    fn data_prefix(&self, id: &RandomId) -> Path {
        self.path(&["data", &id.to_string()])
    }

    fn manifest_path(&self, id: &RandomId) -> Path {
        self.path(&["attachments", &id.to_string()])
    }

    fn unlinked_path(&self, meta: &AttachmentMeta) -> Path {
        let ms = crate::upload::unix_millis(meta.created);
        self.path(&["unlinked", &format!("{ms:020}.{}", meta.id)])
    }

    /// The index folder of a scope, or of a conversation in it.
    fn scope_prefix(&self, scope: &str, conversation: Option<&str>) -> Path {
        self.path(&["scopes", &scope_key(scope, conversation)])
    }

    /// The index entries of an attachment: its scope's, and its conversation's.
    fn scope_paths(&self, meta: &AttachmentMeta) -> Vec<Path> {
        let name = invert_id(&meta.id);
        let mut out = vec![self.scope_prefix(&meta.scope, None).join(name.as_str())];
        if let Some(c) = &meta.conversation_id {
            out.push(self.scope_prefix(&meta.scope, Some(c)).join(name.as_str()));
        }
        out
    }

    /// The attachments named by index keys, in the keys' order, skipping entries whose
    /// manifest is gone; at most `limit`. Manifests are read `limit` at a time, concurrently.
    async fn read_listed(
        &self,
        names: impl IntoIterator<Item = String>,
        query: &ListQuery,
        found: &mut Vec<AttachmentMeta>,
    ) -> Result<()> {
        let mut names = names.into_iter().peekable();
        while found.len() < query.limit && names.peek().is_some() {
            let batch: Vec<String> = names.by_ref().take(query.limit - found.len()).collect();
            let reads = batch.iter().map(|name| async move {
                let Ok(id) = invert_id(name).parse::<RandomId>() else {
                    return Ok(None);
                };
                match self.manifest(&id).await {
                    // One damaged record must not hide every other.
                    Err(e @ Error::CorruptState { .. }) => {
                        tracing::warn!(
                            attachment = %id,
                            error = %e,
                            "listing skips an unreadable record",
                        );
                        Ok(None)
                    }
                    read => read,
                }
            });
            for manifest in futures::future::try_join_all(reads)
                .await?
                .into_iter()
                .flatten()
            {
                if query.matches(&manifest.meta) && query.after_cursor(&manifest.meta.id) {
                    found.push(manifest.meta);
                }
            }
        }
        Ok(())
    }

    /// Reads a small object whole; `None` when it does not exist.
    pub(super) async fn read_record(&self, path: &Path) -> Result<Option<(Bytes, Option<String>)>> {
        let got = match self.inner.get(path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(io("reading", path, e)),
        };
        if got.meta.size > MAX_RECORD_OBJECT {
            return Err(Error::corrupt(
                format!("the record {path}"),
                format!(
                    "{} bytes, over the {MAX_RECORD_OBJECT}-byte limit for records",
                    got.meta.size
                ),
            ));
        }
        let e_tag = got.meta.e_tag.clone();
        let bytes = got.bytes().await.map_err(|e| io("reading", path, e))?;
        Ok(Some((bytes, e_tag)))
    }

    async fn read_json<T: for<'de> Deserialize<'de>>(&self, path: &Path) -> Result<Option<T>> {
        Ok(self.read_json_tagged(path).await?.map(|(value, _)| value))
    }

    /// A JSON record with its ETag.
    async fn read_json_tagged<T: for<'de> Deserialize<'de>>(
        &self,
        path: &Path,
    ) -> Result<Option<(T, Option<String>)>> {
        let Some((bytes, e_tag)) = self.read_record(path).await? else {
            return Ok(None);
        };
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::corrupt(format!("the record {path}"), e.to_string()))?;
        Ok(Some((value, e_tag)))
    }

    async fn put_json<T: Serialize>(&self, path: &Path, value: &T, mode: PutMode) -> Result<()> {
        let body = serde_json::to_vec(value)?;
        within_budget(
            || format!("the record {path}"),
            body.len(),
            MAX_RECORD_OBJECT,
        )?;
        self.inner
            .put_opts(path, PutPayload::from(body), PutOptions::from(mode))
            .await
            .map(drop)
            .map_err(|e| io("writing", path, e))
    }

    pub(super) async fn delete(&self, path: &Path) -> Result<()> {
        match self.inner.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(io("deleting", path, e)),
        }
    }

    /// Every object under `prefix`.
    pub(super) async fn list(&self, prefix: &Path) -> Result<Vec<object_store::ObjectMeta>> {
        self.inner
            .list(Some(prefix))
            .try_collect()
            .await
            .map_err(|e| io("listing", prefix, e))
    }

    /// The chunk objects of an upload by number, each with its last-modified time.
    async fn chunks(&self, id: &RandomId) -> Result<BTreeMap<u64, Vec<(SystemTime, Part)>>> {
        let mut out: BTreeMap<u64, Vec<_>> = BTreeMap::new();
        for object in self.list(&self.data_prefix(id)).await? {
            let Some(name) = object.location.filename() else {
                continue;
            };
            let parsed = name
                .split_once('.')
                .and_then(|(n, o)| Some((n.parse::<u64>().ok()?, o.parse::<u64>().ok()?)));
            let Some((number, offset)) = parsed else {
                continue;
            };
            out.entry(number).or_default().push((
                SystemTime::from(object.last_modified),
                Part {
                    key: object.location.to_string(),
                    offset,
                    size: object.size,
                },
            ));
        }
        Ok(out)
    }

    /// Deletes the chunk objects of an upload, unless a manifest owns them.
    async fn release(&self, id: &RandomId) -> Result<()> {
        if let Some(begun) = self.read_json::<Begun>(&self.begun_path(id)).await? {
            if let Some(att) = begun.committing.as_deref().and_then(|a| a.parse().ok()) {
                match self.manifest_tagged(&att).await {
                    // Committed: the chunk objects are the attachment's now.
                    Ok(Some((found, _))) if found.upload_id == id.to_string() => {
                        return self.delete(&self.begun_path(id)).await;
                    }
                    // Another upload's attachment under that id: its index entries too.
                    Ok(Some(_)) => {}
                    // A commit cut short between its index entries and its manifest.
                    Ok(None) => self.drop_indexed(&begun.indexed).await?,
                    // Unknown (a damaged manifest, or the store failing): keep the chunks.
                    Err(e) => return Err(e),
                }
            }
        } else {
            // No marker: never begun, removed, or committed (the marker goes after the
            // manifest is written). Chunk objects of a committed upload are the attachment's.
            return Ok(());
        }
        let keys: Vec<Path> = self
            .list(&self.data_prefix(id))
            .await?
            .into_iter()
            .map(|m| m.location)
            .collect();
        for key in &keys {
            self.delete(key).await?;
        }
        self.delete(&self.begun_path(id)).await
    }

    /// Deletes index entries a commit named in its upload's marker, those under this
    /// store's own index prefixes only.
    async fn drop_indexed(&self, indexed: &[String]) -> Result<()> {
        for entry in indexed {
            // Only entries under this store's own index prefixes.
            let path = Path::from(entry.as_str());
            let ours = ["scopes", "unlinked"]
                .iter()
                .any(|top| path.prefix_matches(&self.path(&[top])));
            if ours {
                self.delete(&path).await?;
            }
        }
        Ok(())
    }

    /// Removes attachment `id` as `how` says (see [`Removal`]).
    async fn remove_attachment(&self, id: &str, how: Removal) -> Result<()> {
        let Ok(rid) = id.parse::<RandomId>() else {
            return Ok(());
        };
        let path = self.manifest_path(&rid);
        let mut tries = 0;
        let manifest = loop {
            let (mut manifest, e_tag) = match self.manifest_tagged(&rid).await {
                Err(e @ Error::CorruptState { .. }) => {
                    return self.quarantine(&rid, &e).await;
                }
                // A damaged record that reads back well now is not removed.
                _ if how == Removal::Damaged => return Ok(()),
                // Already gone; drop any index entry left behind.
                Ok(None) => return self.drop_unlinked(&rid).await,
                Ok(Some(found)) => found,
                Err(e) => return Err(e),
            };
            if manifest.removing {
                break manifest;
            }
            // Linked by a message since the listing: it stays.
            if manifest.meta.linked && how == Removal::Expired {
                return Ok(());
            }
            // Marked first, conditionally: a link racing this loses its own
            // conditional rewrite, or this one loses and reads the link.
            manifest.removing = true;
            let body = Bytes::from(serde_json::to_vec(&manifest)?);
            let marked = match e_tag.as_deref() {
                Some(tag) => self.put_if(&path, body, Some(tag)).await?.is_some(),
                None => {
                    self.put_json(&path, &manifest, PutMode::Overwrite).await?;
                    true
                }
            };
            if marked {
                break manifest;
            }
            tries += 1;
            if tries >= MAX_CONTENDED {
                return Err(Error::Contended {
                    what: "attachment",
                    id: id.to_owned(),
                });
            }
        };
        // The manifest first: the attachment stops being visible before its bytes go.
        self.delete(&path).await?;
        self.delete(&self.unlinked_path(&manifest.meta)).await?;
        for entry in self.scope_paths(&manifest.meta) {
            self.delete(&entry).await?;
        }
        for part in &manifest.parts {
            self.delete(&Path::from(part.key.as_str())).await?;
        }
        Ok(())
    }

    /// Drops the `unlinked/` index entries of attachment `id` (a scan of the index: for
    /// an attachment whose manifest is gone or damaged, so whose entry is not known).
    async fn drop_unlinked(&self, id: &RandomId) -> Result<()> {
        let suffix = format!(".{id}");
        for object in self.list(&self.path(&["unlinked"])).await? {
            if object
                .location
                .filename()
                .is_some_and(|n| n.ends_with(&suffix))
            {
                self.delete(&object.location).await?;
            }
        }
        Ok(())
    }

    /// Moves the manifest of attachment `id`, which is damaged (`problem`), out of sight
    /// to `quarantine/<id>`; the chunk objects it names stay where they are.
    async fn quarantine(&self, id: &RandomId, problem: &Error) -> Result<()> {
        let from = self.manifest_path(id);
        let to = self.path(&["quarantine", &id.to_string()]);
        match self.inner.copy(&from, &to).await {
            Ok(()) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(io("copying", &from, e)),
        }
        self.delete(&from).await?;
        tracing::warn!(
            attachment = %id,
            error = %problem,
            to = %to,
            "moved a damaged record aside",
        );
        self.drop_unlinked(id).await
    }

    /// The manifest of attachment `id`, checked; `None` when there is none, or when the
    /// sweep is removing it.
    async fn manifest(&self, id: &RandomId) -> Result<Option<Manifest>> {
        Ok(self
            .manifest_tagged(id)
            .await?
            .map(|(manifest, _)| manifest)
            .filter(|m| !m.removing))
    }

    /// The manifest of attachment `id` with its ETag, checked against what a commit
    /// writes: it names this attachment, an upload id, and parts of that upload that tile
    /// `0..file_size` exactly. A manifest that does not is damaged ([`Error::CorruptState`]):
    /// its bytes would be another file's, or short, or long.
    async fn manifest_tagged(&self, id: &RandomId) -> Result<Option<(Manifest, Option<String>)>> {
        let path = self.manifest_path(id);
        let Some((manifest, e_tag)) = self.read_json_tagged::<Manifest>(&path).await? else {
            return Ok(None);
        };
        let bad = |problem: &str| Err(Error::corrupt(format!("the record {path}"), problem));
        if manifest.meta.id != id.to_string() {
            return bad("it names another attachment");
        }
        let Ok(upload) = manifest.upload_id.parse::<RandomId>() else {
            return bad("its upload id is malformed");
        };
        let prefix = self.data_prefix(&upload);
        if !manifest
            .parts
            .iter()
            .all(|p| Path::from(p.key.as_str()).prefix_matches(&prefix))
        {
            return bad("it names chunk objects of another upload");
        }
        let mut pieces: Vec<(u64, u64)> =
            manifest.parts.iter().map(|p| (p.offset, p.size)).collect();
        if tiling(&mut pieces, manifest.meta.file_size).is_err() {
            return bad("its parts do not tile the file");
        }
        Ok(Some((manifest, e_tag)))
    }

    /// Writes `body` to `path` if the object is still at ETag `expected` (`None`: if there
    /// is no object yet). `Ok(None)` when the condition failed (another write came first,
    /// or the object was removed).
    pub(super) async fn put_if(
        &self,
        path: &Path,
        body: Bytes,
        expected: Option<&str>,
    ) -> Result<Option<object_store::PutResult>> {
        let put = |mode: PutMode| {
            self.inner
                .put_opts(path, PutPayload::from(body.clone()), PutOptions::from(mode))
        };
        let update = |tag: &str| {
            PutMode::Update(UpdateVersion {
                e_tag: Some(tag.to_owned()),
                version: None,
            })
        };
        let lost = |result: object_store::Result<object_store::PutResult>| match result {
            Ok(put) => Ok(Some(put)),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. }
                | object_store::Error::NotFound { .. },
            ) => Ok(None),
            Err(e) => Err(io("writing", path, e)),
        };
        let Some(tag) = expected else {
            return lost(put(PutMode::Create).await);
        };
        let unquoted = tag.trim_matches('"');
        if self.unquoted_etags.load(Ordering::Relaxed) {
            return lost(put(update(unquoted)).await);
        }
        match put(update(tag)).await {
            Err(object_store::Error::Precondition { .. }) if unquoted != tag => {
                // Is the object still at `tag`? Then the server compared without quotes.
                let current = self.inner.head(path).await.ok().and_then(|m| m.e_tag);
                if current.as_deref() != Some(tag) {
                    return Ok(None);
                }
                let result = put(update(unquoted)).await;
                if result.is_ok() {
                    self.unquoted_etags.store(true, Ordering::Relaxed);
                }
                lost(result)
            }
            other => lost(other),
        }
    }
}

/// An id with every hex digit `d` replaced by `f - d`: ascending order of the result is
/// descending order of ids. Its own inverse; other characters stay.
fn invert_id(id: &str) -> String {
    id.chars()
        .map(|c| match c.to_digit(16) {
            Some(d) => char::from_digit(15 - d, 16).unwrap_or(c),
            None => c,
        })
        .collect()
}

fn io(op: &str, path: &Path, e: object_store::Error) -> Error {
    let kind = match e {
        object_store::Error::NotFound { .. } => std::io::ErrorKind::NotFound,
        object_store::Error::AlreadyExists { .. } => std::io::ErrorKind::AlreadyExists,
        _ => std::io::ErrorKind::Other,
    };
    Error::io_other(format!("{op} {path}"), kind, e)
}

#[async_trait]
impl Store for ObjectStoreBackend {
    async fn begin_upload(&self, upload_id: &str, started: SystemTime) -> Result<()> {
        let id = parse_id("upload", upload_id)?;
        let begun = Begun {
            started,
            committing: None,
            indexed: Vec::new(),
        };
        self.put_json(&self.begun_path(&id), &begun, PutMode::Overwrite)
            .await
    }

    async fn put_chunk(
        &self,
        upload_id: &str,
        number: u64,
        offset: u64,
        data: Bytes,
    ) -> Result<()> {
        let id = parse_id("upload", upload_id)?;
        // The upload must be begun (and not removed): one HEAD of its marker.
        match self.inner.head(&self.begun_path(&id)).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => {
                return Err(not_found("upload", upload_id));
            }
            Err(e) => return Err(io("checking", &self.begun_path(&id), e)),
        }
        let key = self
            .data_prefix(&id)
            .join(format!("{number:020}.{offset:020}").as_str());
        self.inner
            .put(&key, PutPayload::from(data))
            .await
            .map(drop)
            .map_err(|e| io("writing", &key, e))
    }

    async fn commit(&self, upload_id: &str, meta: &AttachmentMeta) -> Result<()> {
        let id = parse_id("upload", upload_id)?;
        let att = parse_id("attachment", &meta.id)?;
        let begun_path = self.begun_path(&id);
        let Some(mut begun) = self.read_json::<Begun>(&begun_path).await? else {
            return Err(not_found("upload", upload_id));
        };
        // One object per number (a number stored again at another offset leaves two:
        // the later one counts), and together they must tile 0..file_size exactly.
        let mut parts = Vec::new();
        let mut stale = Vec::new();
        for (_, mut candidates) in self.chunks(&id).await? {
            candidates.sort_by_key(|(modified, part)| (*modified, part.offset));
            if let Some((_, part)) = candidates.pop() {
                parts.push(part);
            }
            stale.extend(candidates.into_iter().map(|(_, p)| p.key));
        }
        let mut pieces: Vec<(u64, u64)> = parts.iter().map(|p| (p.offset, p.size)).collect();
        if let Err(stored) = tiling(&mut pieces, meta.file_size) {
            return Err(incomplete(upload_id, stored, meta.file_size));
        }
        parts.sort_by_key(|p| p.offset);
        let manifest = Manifest {
            meta: meta.clone(),
            upload_id: upload_id.to_owned(),
            parts,
            removing: false,
        };
        // Refused before anything is written when it could not be read back.
        let path = self.manifest_path(&att);
        let size = serde_json::to_vec(&manifest)?.len();
        within_budget(|| format!("the record {path}"), size, MAX_RECORD_OBJECT)?;
        let taken = || Error::Taken {
            what: "attachment",
            id: att.to_string(),
        };
        // This upload's commit, already done (a retry after a lost answer, or a commit
        // racing its own takeover): done, not taken.
        let ours = |found: &Manifest| {
            found.upload_id == upload_id
                && found.meta.file_size == meta.file_size
                && found.meta.sha256 == meta.sha256
        };
        match self.manifest_tagged(&att).await {
            Ok(None) => {}
            Ok(Some((found, _))) if ours(&found) && !found.removing => {
                return self.delete(&begun_path).await;
            }
            Ok(Some(_)) | Err(Error::CorruptState { .. }) => return Err(taken()),
            Err(e) => return Err(e),
        }
        // The index entries before the manifest: a crash in between leaves entries
        // without a manifest, which listings skip and removing the upload (named in its
        // marker) deletes, never an attachment they cannot find.
        let index = self.unlinked_path(meta);
        let mut entries = self.scope_paths(meta);
        if !meta.linked {
            entries.push(index.clone());
        }
        begun.committing = Some(meta.id.clone());
        begun.indexed = entries.iter().map(ToString::to_string).collect();
        self.put_json(&begun_path, &begun, PutMode::Overwrite)
            .await?;
        for entry in &entries {
            self.inner
                .put(entry, PutPayload::default())
                .await
                .map_err(|e| io("indexing", entry, e))?;
        }
        if let Err(e) = self
            .put_json(&self.manifest_path(&att), &manifest, PutMode::Create)
            .await
        {
            // Did it land all the same? A PUT the service took but whose answer was lost
            // (retried, it meets its own object: "exists"), or this upload's own commit
            // racing it. Until that is known, the marker keeps naming the attachment, so
            // removing the upload never deletes chunks a manifest may own.
            match self.manifest_tagged(&att).await {
                Ok(Some((found, _))) if ours(&found) => {}
                Ok(Some(_)) => {
                    // Another upload's attachment: the index entries are its too.
                    begun.committing = None;
                    begun.indexed.clear();
                    let _ = self.put_json(&begun_path, &begun, PutMode::Overwrite).await;
                    return Err(taken());
                }
                Ok(None) => {
                    for entry in &entries {
                        let _ = self.delete(entry).await;
                    }
                    begun.committing = None;
                    begun.indexed.clear();
                    let _ = self.put_json(&begun_path, &begun, PutMode::Overwrite).await;
                    return Err(e);
                }
                Err(_) => return Err(e),
            }
        }
        // Objects of a number stored again elsewhere: no manifest names them.
        for key in stale {
            let _ = self.delete(&Path::from(key)).await;
        }
        self.delete(&begun_path).await
    }

    async fn abort(&self, upload_id: &str) -> Result<()> {
        let Ok(id) = upload_id.parse::<RandomId>() else {
            return Ok(());
        };
        self.release(&id).await
    }

    async fn load_session(&self, upload_id: &str) -> Result<Option<StoredSession>> {
        let Ok(id) = upload_id.parse::<RandomId>() else {
            return Ok(None);
        };
        let path = self.session_path(&id);
        let Some((bytes, e_tag)) = self.read_record(&path).await? else {
            return Ok(None);
        };
        let split = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| Error::corrupt(format!("the record {path}"), "no header line"))?;
        Ok(Some(StoredSession {
            record: bytes.slice(split + 1..),
            version: e_tag.unwrap_or_default(),
        }))
    }

    async fn save_session(
        &self,
        upload_id: &str,
        record: Bytes,
        expected: Option<&str>,
        saved: SystemTime,
    ) -> Result<String> {
        let id = parse_id("upload", upload_id)?;
        let mut body = serde_json::to_vec(&SessionHeader { saved })?;
        body.push(b'\n');
        body.extend_from_slice(&record);
        let path = self.session_path(&id);
        within_budget(
            || format!("the session of upload {id}"),
            body.len(),
            MAX_RECORD_OBJECT,
        )?;
        let put = self
            .put_if(&path, body.into(), expected)
            .await?
            .ok_or_else(|| contended(upload_id))?;
        match put.e_tag {
            Some(tag) if !tag.is_empty() => Ok(tag),
            // A service that gives no ETag on PUT: ask for it.
            _ => self
                .inner
                .head(&path)
                .await
                .ok()
                .and_then(|m| m.e_tag)
                .ok_or_else(|| {
                    Error::io_other(
                        format!("saving {path}"),
                        std::io::ErrorKind::Unsupported,
                        "the object store gives no ETag, so saves cannot be conditional",
                    )
                }),
        }
    }

    async fn read_staged(&self, upload_id: &str, range: Range<u64>) -> Result<Bytes> {
        let id = parse_id("upload", upload_id)?;
        if self
            .read_json::<Begun>(&self.begun_path(&id))
            .await?
            .is_none()
        {
            return Err(not_found("upload", upload_id));
        }
        // The part a commit would take of each number: the latest stored.
        let mut parts: Vec<Part> = Vec::new();
        for (_, mut candidates) in self.chunks(&id).await? {
            candidates.sort_by_key(|(modified, part)| (*modified, part.offset));
            if let Some((_, part)) = candidates.pop() {
                parts.push(part);
            }
        }
        parts.sort_by_key(|p| p.offset);
        let pieces: Vec<(u64, u64)> = parts.iter().map(|p| (p.offset, p.size)).collect();
        let slices =
            staged_slices(&pieces, &range).map_err(|at| incomplete(upload_id, at, range.end))?;
        let inner = Arc::clone(&self.inner);
        let reads = slices.into_iter().map(|(i, part)| {
            let inner = Arc::clone(&inner);
            let key = Path::from(parts[i].key.as_str());
            async move {
                inner
                    .get_range(&key, part)
                    .await
                    .map_err(|e| io("reading", &key, e))
            }
        });
        let pieces: Vec<Bytes> = futures::future::try_join_all(reads).await?;
        Ok(concat(pieces, range.end - range.start))
    }

    async fn read_range(&self, attachment_id: &str, range: Range<u64>) -> Result<Bytes> {
        let id = parse_id("attachment", attachment_id)?;
        let manifest = self
            .manifest(&id)
            .await?
            .ok_or_else(|| not_found("attachment", attachment_id))?;
        check_range(&range, manifest.meta.file_size)?;
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let wanted: Vec<(Path, Range<u64>)> = manifest
            .parts
            .iter()
            .filter(|p| p.offset < range.end && p.offset.saturating_add(p.size) > range.start)
            .map(|p| {
                let from = range.start.saturating_sub(p.offset);
                let to = (range.end - p.offset).min(p.size);
                (Path::from(p.key.as_str()), from..to)
            })
            .collect();
        let inner = Arc::clone(&self.inner);
        let reads = wanted.into_iter().map(move |(key, part)| {
            let inner = Arc::clone(&inner);
            async move {
                inner
                    .get_range(&key, part)
                    .await
                    .map_err(|e| io("reading", &key, e))
            }
        });
        let pieces: Vec<Bytes> = futures::future::try_join_all(reads).await?;
        let read: u64 = pieces.iter().map(|p| p.len() as u64).sum();
        if read != range.end - range.start {
            return Err(Error::corrupt(
                format!("attachment {id}"),
                format!(
                    "its chunk objects hold {read} of the {} bytes its manifest promises there",
                    range.end - range.start
                ),
            ));
        }
        Ok(concat(pieces, read))
    }

    async fn metadata(&self, attachment_id: &str) -> Result<AttachmentMeta> {
        let id = parse_id("attachment", attachment_id)?;
        self.manifest(&id)
            .await?
            .map(|m| m.meta)
            .ok_or_else(|| not_found("attachment", attachment_id))
    }

    async fn update(&self, attachment_id: &str, change: &MetaChange) -> Result<AttachmentMeta> {
        let id = parse_id("attachment", attachment_id)?;
        let path = self.manifest_path(&id);
        // A conditional rewrite: a concurrent change is read again, and a manifest the
        // sweep removed meanwhile is not brought back.
        for _ in 0..MAX_CONTENDED {
            let Some((mut manifest, e_tag)) = self
                .manifest_tagged(&id)
                .await?
                .filter(|(m, _)| !m.removing)
            else {
                return Err(not_found("attachment", attachment_id));
            };
            let was_linked = manifest.meta.linked;
            if !change.apply(&mut manifest.meta) {
                return Ok(manifest.meta);
            }
            let linked = manifest.meta.linked;
            // Linking takes the attachment out of the expiry index first; unlinking puts
            // it back only after the manifest says so.
            let index = self.unlinked_path(&manifest.meta);
            if linked && !was_linked {
                self.delete(&index).await?;
            }
            let body = Bytes::from(serde_json::to_vec(&manifest)?);
            within_budget(
                || format!("the record {path}"),
                body.len(),
                MAX_RECORD_OBJECT,
            )?;
            let written = match e_tag.as_deref() {
                Some(tag) => self.put_if(&path, body, Some(tag)).await?.is_some(),
                // A service without ETags: no condition is possible.
                None => {
                    self.put_json(&path, &manifest, PutMode::Overwrite).await?;
                    true
                }
            };
            if !written {
                continue;
            }
            if was_linked && !linked {
                self.inner
                    .put(&index, PutPayload::default())
                    .await
                    .map_err(|e| io("indexing", &index, e))?;
            }
            return Ok(manifest.meta);
        }
        Err(Error::Contended {
            what: "attachment",
            id: attachment_id.to_owned(),
        })
    }

    async fn list_attachments(&self, query: &ListQuery) -> Result<Vec<AttachmentMeta>> {
        let prefix = self.scope_prefix(&query.scope, query.conversation_id.as_deref());
        let offset = match query.before.as_deref().map(str::parse::<RandomId>) {
            Some(Ok(before)) => Some(prefix.clone().join(invert_id(&before.to_string()).as_str())),
            // Not an id: no id this store makes is listed past it.
            Some(Err(_)) => return Ok(Vec::new()),
            None => None,
        };
        let mut listing = match &offset {
            Some(offset) => self.inner.list_with_offset(Some(&prefix), offset),
            None => self.inner.list(Some(&prefix)),
        };
        let mut found = Vec::new();
        // Every name listed so far, and those not yet read.
        let (mut listed, mut pending) = (Vec::<String>::new(), Vec::new());
        while found.len() < query.limit {
            let next = listing
                .try_next()
                .await
                .map_err(|e| io("listing", &prefix, e))?;
            let Some(object) = next else { break };
            let Some(name) = object.location.filename().map(str::to_owned) else {
                continue;
            };
            if listed.last().is_some_and(|last| name <= *last) {
                // Not listed in key order: read every name, sort them, and read the page
                // from the start of the sorted names.
                listed.push(name);
                let rest: Vec<_> = listing
                    .try_collect()
                    .await
                    .map_err(|e| io("listing", &prefix, e))?;
                listed.extend(
                    rest.into_iter()
                        .filter_map(|o| o.location.filename().map(str::to_owned)),
                );
                listed.sort_unstable();
                listed.dedup();
                found.clear();
                self.read_listed(listed, query, &mut found).await?;
                return Ok(found);
            }
            listed.push(name.clone());
            pending.push(name);
            if pending.len() >= query.limit - found.len() {
                self.read_listed(std::mem::take(&mut pending), query, &mut found)
                    .await?;
            }
        }
        self.read_listed(pending, query, &mut found).await?;
        found.truncate(query.limit);
        Ok(found)
    }

    async fn list_expired(
        &self,
        uploads_before: SystemTime,
        unlinked_before: SystemTime,
    ) -> Result<Vec<Expired>> {
        let mut out = Vec::new();
        let mut uploads = BTreeSet::new();
        for object in self.list(&self.path(&["uploads"])).await? {
            let parts: Vec<_> = object.location.parts().collect();
            let id = parts
                .len()
                .checked_sub(2)
                .and_then(|i| parts[i].as_ref().parse::<RandomId>().ok());
            uploads.extend(id);
        }
        for id in uploads {
            let begun = self
                .read_json::<Begun>(&self.begun_path(&id))
                .await
                .ok()
                .flatten();
            let saved = match self.read_record(&self.session_path(&id)).await {
                Ok(Some((bytes, _))) => bytes
                    .split(|&b| b == b'\n')
                    .next()
                    .and_then(|h| serde_json::from_slice::<SessionHeader>(h).ok())
                    .map(|h| h.saved),
                _ => None,
            };
            let open = begun.is_some();
            let mut active = begun.map(|b| b.started).max(saved);
            if open && active.is_none_or(|t| t < uploads_before) {
                // Open and idle by its records: is a chunk stored since? (Their objects'
                // times, from one listing of the upload's chunk objects. Those of a
                // committed upload are the attachment's, and an aborted one has none.)
                for object in self.list(&self.data_prefix(&id)).await? {
                    active = active.max(Some(SystemTime::from(object.last_modified)));
                }
            }
            if active.is_none_or(|t| t < uploads_before) {
                out.push(Expired::Upload(id.to_string()));
            }
        }
        let cutoff = crate::upload::unix_millis(unlinked_before);
        for object in self.list(&self.path(&["unlinked"])).await? {
            let Some((ms, id)) = object
                .location
                .filename()
                .and_then(|n| n.split_once('.'))
                .and_then(|(ms, id)| Some((ms.parse::<u64>().ok()?, id.to_owned())))
            else {
                continue;
            };
            if ms < cutoff {
                out.push(Expired::Attachment(id));
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn remove(&self, item: &Expired) -> Result<()> {
        match item {
            Expired::Upload(id) => {
                let Ok(id) = id.parse::<RandomId>() else {
                    return Ok(());
                };
                self.release(&id).await?;
                self.delete(&self.session_path(&id)).await
            }
            Expired::Attachment(id) => self.remove_attachment(id, Removal::Expired).await,
            Expired::Damaged(id) => self.remove_attachment(id, Removal::Damaged).await,
        }
    }

    async fn delete_attachment(&self, attachment_id: &str) -> Result<()> {
        self.remove_attachment(attachment_id, Removal::Delete).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256;

    /// A commit stopped by a crash after its index entries and before its manifest:
    /// listings skip the entries, and removing the upload (its marker names them) deletes
    /// them, where before they were left for good.
    #[tokio::test]
    async fn removing_an_upload_drops_the_index_entries_of_a_commit_a_crash_stopped() {
        let bucket = Arc::new(object_store::memory::InMemory::new());
        let store = ObjectStoreBackend::new(bucket.clone()).with_prefix("root");
        let (up, att) = (RandomId::from_bytes([1; 16]), RandomId::from_bytes([2; 16]));
        let data = Bytes::from_static(b"hello");
        store
            .begin_upload(&up.to_string(), SystemTime::UNIX_EPOCH)
            .await
            .unwrap();
        store
            .put_chunk(&up.to_string(), 0, 0, data.clone())
            .await
            .unwrap();
        let mut meta = AttachmentMeta::new(
            att.to_string(),
            &crate::upload::AttachmentInfo {
                file_name: "a.bin".into(),
                media_type: crate::MediaType::OCTET_STREAM,
                size: data.len() as u64,
                sha256: sha256(&data),
                dimensions: None,
                created: SystemTime::UNIX_EPOCH,
            },
            "scope-1",
        );
        meta.conversation_id = Some("conv-1".into());
        // What `commit` writes before the manifest, as it writes it.
        let mut entries = store.scope_paths(&meta);
        entries.push(store.unlinked_path(&meta));
        let begun = Begun {
            started: SystemTime::UNIX_EPOCH,
            committing: Some(att.to_string()),
            indexed: entries.iter().map(ToString::to_string).collect(),
        };
        store
            .put_json(&store.begun_path(&up), &begun, PutMode::Overwrite)
            .await
            .unwrap();
        for entry in &entries {
            bucket.put(entry, PutPayload::default()).await.unwrap();
        }
        let page = store
            .list_attachments(&ListQuery::new("scope-1", 10))
            .await
            .unwrap();
        assert!(page.is_empty(), "an entry without a manifest is skipped");

        store
            .remove(&Expired::Upload(up.to_string()))
            .await
            .unwrap();
        let left: Vec<String> = store
            .list(&Path::from("root"))
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.location.to_string())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
