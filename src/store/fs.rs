//! [`FsStore`]: one directory, atomic commits by rename.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::{
    AttachmentMeta, Expired, ListQuery, MetaChange, Store, StoredSession, check_range, contended,
    incomplete, not_found, parse_id,
};
use crate::error::{Error, Result};
use crate::upload::RandomId;

/// The largest metadata file read back: 64 KiB (a record is a few hundred bytes; names are
/// at most 255 bytes, 1,530 once JSON-escaped).
pub const MAX_META_FILE: u64 = 64 * 1024;

/// A [`Store`] in one directory: the embedded default.
///
/// Layout under the root:
///
/// ```text
/// uploads/<upload_id>.json       {"started": <unix ms>}
/// uploads/<upload_id>.part       the chunks, each written at its offset
/// uploads/<upload_id>.session    the session record: a JSON header line, then the record
/// uploads/<upload_id>.lock       locked (`File::lock`) while the session record is saved
/// attachments/<id>.bin           the bytes of a committed attachment
/// attachments/<id>.json          its metadata; the attachment exists when this does
/// */.tmp-*                       files being written, renamed into place when complete
/// ```
///
/// Commit fsyncs the `.part` file, renames it to `attachments/<id>.bin`, writes the
/// metadata to a temporary file, fsyncs it and renames it to `<id>.json`, then fsyncs the
/// directory: a reader sees the attachment whole or not at all, and a crash in between
/// leaves a `.bin` without metadata, which [`Store::list_expired`] reports for removal.
/// Chunks are written at their offsets, so processes sharing the directory may each take
/// chunks of the same upload; a session save reads, compares and replaces the record under
/// an exclusive lock on the upload's `.lock` file, so it is atomic across processes too. Ids must be [`RandomId`] text; anything else is not found,
/// so no id becomes a path outside the directory.
///
/// The blocking file calls run on tokio's blocking pool.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: Arc<PathBuf>,
}

/// The first line of a `.session` file.
#[derive(Serialize, Deserialize)]
struct SessionHeader {
    version: u64,
    #[serde(with = "super::unix_millis")]
    saved: SystemTime,
}

/// Reads a `.session` file: its header and the record after the first newline.
fn read_session(path: &Path) -> io::Result<Option<(SessionHeader, Bytes)>> {
    let text = match read_small(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let bad = |m: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {m}", path.display()),
        )
    };
    let split = text
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| bad("no header line"))?;
    let header: SessionHeader =
        serde_json::from_slice(&text[..split]).map_err(|e| bad(&e.to_string()))?;
    let record = Bytes::from(text).slice(split + 1..);
    Ok(Some((header, record)))
}

#[derive(Serialize, Deserialize)]
struct UploadRecord {
    #[serde(with = "super::unix_millis")]
    started: SystemTime,
}

impl FsStore {
    /// A store rooted at `root`, creating its directories when missing.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the directories cannot be created.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for dir in ["uploads", "attachments"] {
            fs::create_dir_all(root.join(dir))
                .map_err(|e| Error::io(format!("creating {}", root.join(dir).display()), e))?;
        }
        Ok(FsStore {
            root: Arc::new(root),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn upload_path(&self, id: &RandomId, ext: &str) -> PathBuf {
        self.root.join("uploads").join(format!("{id}.{ext}"))
    }

    fn attachment_path(&self, id: &RandomId, ext: &str) -> PathBuf {
        self.root.join("attachments").join(format!("{id}.{ext}"))
    }

    /// Runs `f` on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(FsStore) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(this))
            .await
            .map_err(|e| Error::io_other("a blocking store task", io::ErrorKind::Other, e))?
    }

    fn read_meta(&self, id: &RandomId) -> Result<AttachmentMeta> {
        let path = self.attachment_path(id, "json");
        let text = read_small(&path).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => {
                Error::corrupt(format!("the metadata of attachment {id}"), e.to_string())
            }
            _ => map_missing(e, "attachment", &id.to_string(), "reading metadata"),
        })?;
        serde_json::from_slice(&text)
            .map_err(|e| Error::corrupt(format!("the metadata of attachment {id}"), e.to_string()))
    }
}

fn map_missing(e: io::Error, what: &'static str, id: &str, op: &str) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        not_found(what, id)
    } else {
        Error::io(format!("{op} of {what} {id}"), e)
    }
}

/// Reads a file of at most [`MAX_META_FILE`] bytes.
fn read_small(path: &Path) -> io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len > MAX_META_FILE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is {len} bytes, over the {MAX_META_FILE}-byte limit for metadata",
                path.display()
            ),
        ));
    }
    let mut out = Vec::with_capacity(len as usize);
    file.take(MAX_META_FILE).read_to_end(&mut out)?;
    Ok(out)
}

/// Writes `data` to `path` atomically: a temporary file beside it, fsync, rename.
fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
    let tmp = dir.join(format!(".tmp-{}", hex::encode(nonce)));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes renames in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[async_trait]
impl Store for FsStore {
    async fn begin_upload(&self, upload_id: &str, started: SystemTime) -> Result<()> {
        let id = parse_id("upload", upload_id)?;
        self.blocking(move |s| {
            let op = |e: io::Error| Error::io(format!("beginning upload {id}"), e);
            File::create(s.upload_path(&id, "part")).map_err(op)?;
            let record = serde_json::to_vec(&UploadRecord { started })?;
            write_atomic(&s.upload_path(&id, "json"), &record).map_err(op)
        })
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
        self.blocking(move |s| {
            let path = s.upload_path(&id, "part");
            let op = format!("writing chunk {number}");
            let mut file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| map_missing(e, "upload", &id.to_string(), &op))?;
            file.seek(SeekFrom::Start(offset))
                .and_then(|_| file.write_all(&data))
                .map_err(|e| Error::io(format!("{op} of upload {id}"), e))
        })
        .await
    }

    async fn commit(&self, upload_id: &str, meta: &AttachmentMeta) -> Result<()> {
        let id = parse_id("upload", upload_id)?;
        let att = parse_id("attachment", &meta.id)?;
        let meta = meta.clone();
        self.blocking(move |s| {
            let op = |e: io::Error| Error::io(format!("commit of upload {id}"), e);
            let part = s.upload_path(&id, "part");
            let file = File::open(&part)
                .map_err(|e| map_missing(e, "upload", &id.to_string(), "commit"))?;
            let len = file.metadata().map_err(op)?.len();
            if len != meta.file_size {
                return Err(incomplete(&id.to_string(), len, meta.file_size));
            }
            let json_path = s.attachment_path(&att, "json");
            if json_path.exists() {
                return Err(Error::Taken {
                    what: "attachment",
                    id: att.to_string(),
                });
            }
            file.sync_all().map_err(op)?;
            drop(file);
            fs::rename(&part, s.attachment_path(&att, "bin")).map_err(op)?;
            let record = serde_json::to_vec(&meta)?;
            write_atomic(&json_path, &record).map_err(op)?;
            sync_dir(&s.root.join("attachments")).map_err(op)?;
            remove_if_present(&s.upload_path(&id, "json")).map_err(op)?;
            sync_dir(&s.root.join("uploads")).map_err(op)
        })
        .await
    }

    async fn abort(&self, upload_id: &str) -> Result<()> {
        let Ok(id) = upload_id.parse::<RandomId>() else {
            return Ok(());
        };
        self.blocking(move |s| {
            let op = |e: io::Error| Error::io(format!("aborting upload {id}"), e);
            remove_if_present(&s.upload_path(&id, "part")).map_err(op)?;
            remove_if_present(&s.upload_path(&id, "json")).map_err(op)
        })
        .await
    }

    async fn load_session(&self, upload_id: &str) -> Result<Option<StoredSession>> {
        let Ok(id) = upload_id.parse::<RandomId>() else {
            return Ok(None);
        };
        self.blocking(move |s| {
            let found = read_session(&s.upload_path(&id, "session"))
                .map_err(|e| Error::io(format!("reading the session of upload {id}"), e))?;
            Ok(found.map(|(header, record)| StoredSession {
                record,
                version: header.version.to_string(),
            }))
        })
        .await
    }

    async fn save_session(
        &self,
        upload_id: &str,
        record: Bytes,
        expected: Option<&str>,
        saved: SystemTime,
    ) -> Result<String> {
        let id = parse_id("upload", upload_id)?;
        let expected = expected.map(str::to_owned);
        self.blocking(move |s| {
            let op = |e: io::Error| Error::io(format!("saving the session of upload {id}"), e);
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(s.upload_path(&id, "lock"))
                .map_err(op)?;
            // Held until `lock` drops at the end of this closure (released on close).
            lock.lock().map_err(op)?;
            let path = s.upload_path(&id, "session");
            let current = read_session(&path).map_err(op)?.map(|(h, _)| h.version);
            if current.map(|v| v.to_string()) != expected {
                return Err(contended(&id.to_string()));
            }
            // The version is read back from the file: a damaged one is not a panic.
            let version = current.map_or(1, |v| v.saturating_add(1));
            let mut text = serde_json::to_vec(&SessionHeader { version, saved })?;
            text.push(b'\n');
            text.extend_from_slice(&record);
            if text.len() as u64 > MAX_META_FILE {
                return Err(Error::NotSaveable {
                    what: format!("the session of upload {id}"),
                    reason: format!(
                        "the record is {} bytes, over the {MAX_META_FILE}-byte limit",
                        text.len()
                    ),
                });
            }
            write_atomic(&path, &text).map_err(op)?;
            Ok(version.to_string())
        })
        .await
    }

    async fn read_range(&self, attachment_id: &str, range: Range<u64>) -> Result<Bytes> {
        let id = parse_id("attachment", attachment_id)?;
        self.blocking(move |s| {
            let meta = s.read_meta(&id)?;
            check_range(&range, meta.file_size)?;
            let op = |e: io::Error| Error::io(format!("reading attachment {id}"), e);
            let mut file = File::open(s.attachment_path(&id, "bin")).map_err(op)?;
            let mut out = BytesMut::zeroed((range.end - range.start) as usize);
            file.seek(SeekFrom::Start(range.start))
                .and_then(|_| file.read_exact(&mut out))
                .map_err(op)?;
            Ok(out.freeze())
        })
        .await
    }

    async fn metadata(&self, attachment_id: &str) -> Result<AttachmentMeta> {
        let id = parse_id("attachment", attachment_id)?;
        self.blocking(move |s| s.read_meta(&id)).await
    }

    async fn update(&self, attachment_id: &str, change: &MetaChange) -> Result<AttachmentMeta> {
        let id = parse_id("attachment", attachment_id)?;
        let change = change.clone();
        self.blocking(move |s| {
            let op = |e: io::Error| Error::io(format!("updating attachment {id}"), e);
            // One lock for all metadata updates (they are rare): the metadata file itself is
            // replaced by rename, so a lock on it would not hold across the replacement.
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(s.root.join("attachments").join(".lock"))
                .map_err(op)?;
            lock.lock().map_err(op)?;
            let mut meta = s.read_meta(&id)?;
            if change.apply(&mut meta) {
                let record = serde_json::to_vec(&meta)?;
                write_atomic(&s.attachment_path(&id, "json"), &record).map_err(op)?;
            }
            Ok(meta)
        })
        .await
    }

    /// Lists by reading the directory's names (ids), highest first, and the metadata of
    /// each below the cursor until `limit` match: one directory read and at least `limit`
    /// small file reads a page, more when the scope is a small part of the store.
    async fn list_attachments(&self, query: &ListQuery) -> Result<Vec<AttachmentMeta>> {
        let query = query.clone();
        self.blocking(move |s| {
            let op = |e: io::Error| Error::io("listing attachments", e);
            let mut ids = Vec::new();
            for entry in fs::read_dir(s.root.join("attachments")).map_err(op)? {
                let path = entry.map_err(op)?.path();
                if path.extension().is_some_and(|e| e == "json")
                    && let Some(id) = id_of(&path)
                    && query.after_cursor(&id.to_string())
                {
                    ids.push(id);
                }
            }
            ids.sort_unstable_by(|a, b| b.cmp(a));
            let mut found = Vec::new();
            for id in ids {
                if found.len() >= query.limit {
                    break;
                }
                match s.read_meta(&id) {
                    Ok(meta) if query.matches(&meta) => found.push(meta),
                    // Removed since the directory was read.
                    Ok(_) | Err(Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(found)
        })
        .await
    }

    async fn list_expired(
        &self,
        uploads_before: SystemTime,
        unlinked_before: SystemTime,
    ) -> Result<Vec<Expired>> {
        self.blocking(move |s| {
            let mut out = Vec::new();
            let op = |e: io::Error| Error::io("listing the store", e);
            // Per upload: the latest time its records give (begin, session save), and the
            // latest file time, used only when no record is readable (a crash during
            // `begin_upload`, or a damaged record).
            type Times = (Option<SystemTime>, Option<SystemTime>);
            let mut uploads: std::collections::BTreeMap<RandomId, Times> = Default::default();
            for entry in fs::read_dir(s.root.join("uploads")).map_err(op)? {
                let path = entry.map_err(op)?.path();
                let Some(id) = id_of(&path) else { continue };
                let times = uploads.entry(id).or_default();
                let recorded = match path.extension().and_then(|e| e.to_str()) {
                    Some("json") => read_small(&path)
                        .ok()
                        .and_then(|t| serde_json::from_slice::<UploadRecord>(&t).ok())
                        .map(|r| r.started),
                    Some("session") => read_session(&path).ok().flatten().map(|(h, _)| h.saved),
                    Some("part" | "lock") => {
                        times.1 = times.1.max(modified(&path));
                        continue;
                    }
                    _ => continue,
                };
                times.0 = times.0.max(recorded);
            }
            for (id, (recorded, file_time)) in uploads {
                if recorded.or(file_time).is_none_or(|t| t < uploads_before) {
                    out.push(Expired::Upload(id.to_string()));
                }
            }
            for entry in fs::read_dir(s.root.join("attachments")).map_err(op)? {
                let path = entry.map_err(op)?.path();
                let Some(id) = id_of(&path) else { continue };
                match path.extension().and_then(|e| e.to_str()) {
                    Some("json") => {
                        if let Ok(meta) = s.read_meta(&id)
                            && !meta.linked
                            && meta.created < unlinked_before
                        {
                            out.push(Expired::Attachment(id.to_string()));
                        }
                    }
                    // Data without metadata: a crash between the two renames of a commit.
                    Some("bin")
                        if !s.attachment_path(&id, "json").exists()
                            && modified(&path).is_none_or(|t| t < unlinked_before) =>
                    {
                        out.push(Expired::Attachment(id.to_string()));
                    }
                    _ => {}
                }
            }
            out.sort();
            out.dedup();
            Ok(out)
        })
        .await
    }

    async fn remove(&self, item: &Expired) -> Result<()> {
        let item = item.clone();
        self.blocking(move |s| {
            let (id, paths) = match &item {
                Expired::Upload(id) => {
                    let Ok(rid) = id.parse::<RandomId>() else {
                        return Ok(());
                    };
                    for ext in ["session", "lock"] {
                        remove_if_present(&s.upload_path(&rid, ext))
                            .map_err(|e| Error::io(format!("removing {id}"), e))?;
                    }
                    (
                        id,
                        [s.upload_path(&rid, "json"), s.upload_path(&rid, "part")],
                    )
                }
                Expired::Attachment(id) => {
                    let Ok(rid) = id.parse::<RandomId>() else {
                        return Ok(());
                    };
                    // Metadata first: the attachment stops being visible before its bytes go.
                    (
                        id,
                        [
                            s.attachment_path(&rid, "json"),
                            s.attachment_path(&rid, "bin"),
                        ],
                    )
                }
            };
            for path in paths {
                remove_if_present(&path).map_err(|e| Error::io(format!("removing {id}"), e))?;
            }
            Ok(())
        })
        .await
    }
}

/// The id in a store file's name, if it is one.
fn id_of(path: &Path) -> Option<RandomId> {
    path.file_stem()?.to_str()?.parse().ok()
}

fn modified(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}
