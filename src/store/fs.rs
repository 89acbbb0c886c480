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
    incomplete, not_found, parse_id, scope_key, staged_slices, tiling, within_budget,
};
use crate::error::{Error, Result};
use crate::upload::RandomId;

/// The largest record file (metadata, session record, upload record) read back, and so
/// the largest written: 64 KiB (a record is a few hundred bytes; names are at most 255
/// bytes, 1,530 once JSON-escaped). A write over it is refused with
/// [`Error::NotSaveable`].
pub const MAX_META_FILE: u64 = 64 * 1024;

/// A [`Store`] in one directory: the embedded default.
///
/// Layout under the root:
///
/// ```text
/// uploads/<upload_id>/begun                 {"started": <unix ms>}: the upload is open
/// uploads/<upload_id>/chunks/<n>.<offset>   chunk n, stored at byte offset (both 20 digits)
/// uploads/<upload_id>/session               the session record: a JSON header line, then
///                                           the record
/// uploads/<upload_id>/lock                  locked (`File::lock`) while the session record
///                                           is saved
/// uploads/<upload_id>/commit-<nonce>/       an attachment being assembled by a commit
/// attachments/<id>/meta.json                the metadata of a committed attachment
/// attachments/<id>/<offset>                 its chunks (20 digits), hard links to the upload's
/// attachments/.lock                         locked while metadata is changed or removed
/// index/<h>/<id>                            empty: attachment id is in the scope, or the
///                                           conversation, h names (32 hex digits of the
///                                           SHA-256 of the scope, or of scope NUL conversation)
/// quarantine/<id>[.<nonce>]/                an attachment whose metadata cannot be read,
///                                           moved aside whole by the sweep
/// **/.tmp-*                                 files being written, renamed into place when complete
/// ```
///
/// # Chunks and the commit scheme
///
/// Each chunk is a file of its own, written under a temporary name and renamed into
/// place, so a chunk file is only ever seen whole; storing a number again replaces its
/// file (and removes one the number had at another offset). Processes sharing the
/// directory may each take chunks of the same upload.
///
/// [`Store::commit`] assembles the attachment in a directory of its own inside the
/// upload's: a hard link to every chunk file (no byte is copied), named by offset. It
/// then checks that *those* files tile `0..file_size` exactly (no gap, no overlap, no
/// byte past the end; otherwise [`Error::Incomplete`]), so a chunk stored while it runs
/// can neither slip into the attachment unchecked nor be lost to the upload. It fsyncs
/// the files, writes the metadata beside them, fsyncs the directory and renames it to
/// `attachments/<id>`: one rename makes the attachment visible whole, and a rename onto
/// an existing attachment fails, so an id is never taken twice ([`Error::Taken`]), even
/// by two processes at once. Only then is the upload forgotten (its `begun` record, then
/// its chunk files). A crash before the rename leaves a `commit-*` directory inside the
/// upload, which goes with the upload when the sweep removes it; nothing becomes visible
/// half-written. Chunk files are made durable by the commit (a crash before it may lose
/// chunks, which a later commit then refuses as incomplete).
///
/// A range read reads the one or two chunk files the range overlaps.
///
/// # Expiry
///
/// An upload's activity ([`Store::list_expired`]) is the latest of its `begun` record, its
/// session record's save time and the modification times of its chunk files (one being
/// written included). The sweep reads every attachment's metadata; one whose metadata
/// cannot be read is listed as [`Expired::Damaged`], and a directory without metadata (a
/// removal that stopped half-way) as an expired attachment once older than the cutoff.
///
/// # Listing a scope
///
/// [`Store::list_attachments`] reads the index directory of the scope (or of the
/// conversation, for a conversation's list): its names are the ids, sorted highest
/// first, and only the metadata of the page's attachments is read, so a page costs about
/// the page whatever else the store holds. Entries are written (durably) before the
/// attachment becomes visible and removed after it stops being visible; an entry without
/// an attachment (a crash in between, a quarantined attachment) is skipped.
///
/// A session save reads, compares and replaces the record under an exclusive lock on the
/// upload's `lock` file, so it is atomic across processes too. Ids must be [`RandomId`]
/// text; anything else is not found, so no id becomes a path outside the directory.
///
/// A metadata file that cannot be read back (over [`MAX_META_FILE`], not JSON) is skipped
/// by listings with a warning, listed by [`Store::list_expired`] as
/// [`Expired::Damaged`], and moved into `quarantine/` by [`Store::remove`].
///
/// The blocking file calls run on tokio's blocking pool. Hard links are needed (any POSIX
/// file system, NTFS).
#[derive(Debug, Clone)]
pub struct FsStore {
    root: Arc<PathBuf>,
}

/// The metadata file in an attachment's directory.
const META: &str = "meta.json";

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
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_owned());
    let split = text
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| bad("no header line"))?;
    let header: SessionHeader =
        serde_json::from_slice(&text[..split]).map_err(|e| bad(&e.to_string()))?;
    let record = Bytes::from(text).slice(split + 1..);
    Ok(Some((header, record)))
}

/// Why an attachment is removed: what [`FsStore::remove_attachment`] re-checks first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    /// Listed as expired: removed only if still unlinked.
    Expired,
    /// Listed as damaged: moved aside only if still damaged.
    Damaged,
    /// Deleted on request, whatever its state.
    Delete,
}

impl From<&Expired> for Removal {
    fn from(item: &Expired) -> Self {
        match item {
            Expired::Damaged(_) => Removal::Damaged,
            _ => Removal::Expired,
        }
    }
}

/// The error for a session file that cannot be read: damaged (not a record this store
/// wrote) or an IO failure.
fn session_error(id: &RandomId, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::InvalidData {
        Error::corrupt(format!("the session record of upload {id}"), e.to_string())
    } else {
        Error::io(format!("reading the session of upload {id}"), e)
    }
}

#[derive(Serialize, Deserialize)]
struct UploadRecord {
    #[serde(with = "super::unix_millis")]
    started: SystemTime,
}

impl FsStore {
    /// A store rooted at `root`, creating its directories when missing. What an earlier
    /// version of this store left in its one-file layout is moved into this one (see
    /// [`FsStore`]).
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
        let store = FsStore {
            root: Arc::new(root),
        };
        store.migrate().map_err(|e| {
            Error::io(
                format!("moving {} to the new layout", store.root.display()),
                e,
            )
        })?;
        Ok(store)
    }

    /// Moves files of the earlier layout into this one: an attachment's `<id>.json` and
    /// `<id>.bin` become `attachments/<id>/` (the bytes hard-linked as its one chunk, then
    /// indexed), a `.bin` alone (a commit a crash stopped) is removed, unreadable metadata
    /// goes to `quarantine/`; of an upload in progress only its session record is kept
    /// (it answers the upload's next chunk, which must start the upload again: the bytes
    /// of the one `.part` file could not be told apart from a hole).
    fn migrate(&self) -> io::Result<()> {
        let attachments = self.root.join("attachments");
        let old = |dir: &Path, ext: &str| -> io::Result<Vec<RandomId>> {
            let mut ids = Vec::new();
            for entry in fs::read_dir(dir)? {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == ext)
                    && let Some(id) = path.file_stem().and_then(|s| s.to_str()?.parse().ok())
                {
                    ids.push(id);
                }
            }
            Ok(ids)
        };
        for id in old(&attachments, "json")? {
            let (json, bin) = (
                attachments.join(format!("{id}.json")),
                attachments.join(format!("{id}.bin")),
            );
            let target = self.attachment_dir(&id);
            let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
            let parsed = read_small(&json).and_then(|text| {
                let meta = serde_json::from_slice::<AttachmentMeta>(&text)
                    .map_err(|e| invalid(e.to_string()))?;
                // The bytes must be there, all of them.
                let len = fs::metadata(&bin)
                    .map(|m| m.len())
                    .map_err(|e| match e.kind() {
                        io::ErrorKind::NotFound => invalid(e.to_string()),
                        _ => e,
                    })?;
                if len != meta.file_size {
                    return Err(invalid(format!("{len} bytes of {}", meta.file_size)));
                }
                Ok((meta, text))
            });
            let (meta, text) = match parsed {
                // Moved already (by another process opening the store) but for the old files.
                _ if target.exists() => {
                    remove_if_present(&json)?;
                    remove_if_present(&bin)?;
                    continue;
                }
                Ok(parsed) => parsed,
                // Moved meanwhile by another process opening the store.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    let aside = self.root.join("quarantine");
                    fs::create_dir_all(&aside)?;
                    for (from, ext) in [(&json, "json"), (&bin, "bin")] {
                        match fs::rename(from, aside.join(format!("{id}.{ext}"))) {
                            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                            _ => {}
                        }
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            let stage = attachments.join(temp_name()?);
            fs::create_dir(&stage)?;
            let moved = (|| {
                fs::hard_link(&bin, stage.join(offset_name(0)))?;
                write_atomic(&stage.join(META), &text, true)?;
                sync_dir(&stage)?;
                self.index(&id, &meta)?;
                fs::rename(&stage, &target)
            })();
            if let Err(e) = moved {
                let _ = remove_tree(&stage);
                // Another process moved it first.
                if !target.exists() {
                    return Err(e);
                }
            }
            sync_dir(&attachments)?;
            remove_if_present(&json)?;
            remove_if_present(&bin)?;
        }
        for id in old(&attachments, "bin")? {
            remove_if_present(&attachments.join(format!("{id}.bin")))?;
        }
        let uploads = self.root.join("uploads");
        for ext in ["json", "part", "lock", "session"] {
            for id in old(&uploads, ext)? {
                let path = uploads.join(format!("{id}.{ext}"));
                if ext == "session" {
                    fs::create_dir_all(self.upload_dir(&id))?;
                    fs::rename(&path, self.upload_dir(&id).join("session"))?;
                } else {
                    remove_if_present(&path)?;
                }
            }
        }
        Ok(())
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn upload_dir(&self, id: &RandomId) -> PathBuf {
        self.root.join("uploads").join(id.to_string())
    }

    fn chunks_dir(&self, id: &RandomId) -> PathBuf {
        self.upload_dir(id).join("chunks")
    }

    fn attachment_dir(&self, id: &RandomId) -> PathBuf {
        self.root.join("attachments").join(id.to_string())
    }

    /// The index directory of a scope, or of a conversation in it.
    fn index_dir(&self, scope: &str, conversation: Option<&str>) -> PathBuf {
        self.root.join("index").join(scope_key(scope, conversation))
    }

    /// The index entries of attachment `id`: in its scope's directory, and its
    /// conversation's.
    fn index_entries(&self, id: &RandomId, meta: &AttachmentMeta) -> Vec<PathBuf> {
        let mut dirs = vec![self.index_dir(&meta.scope, None)];
        if let Some(c) = &meta.conversation_id {
            dirs.push(self.index_dir(&meta.scope, Some(c)));
        }
        dirs.into_iter().map(|d| d.join(id.to_string())).collect()
    }

    /// Writes the index entries of attachment `id` (durably).
    fn index(&self, id: &RandomId, meta: &AttachmentMeta) -> io::Result<()> {
        for entry in self.index_entries(id, meta) {
            let dir = entry.parent().unwrap_or(&self.root);
            fs::create_dir_all(dir)?;
            File::create(&entry)?;
            sync_dir(dir)?;
        }
        Ok(())
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
        let path = self.attachment_dir(id).join(META);
        let text = read_small(&path).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => {
                Error::corrupt(format!("the metadata of attachment {id}"), e.to_string())
            }
            _ => map_missing(e, "attachment", &id.to_string(), "reading metadata"),
        })?;
        let meta: AttachmentMeta = serde_json::from_slice(&text).map_err(|e| {
            Error::corrupt(format!("the metadata of attachment {id}"), e.to_string())
        })?;
        // Metadata moved under another attachment's name is not that attachment's.
        if meta.id != id.to_string() {
            return Err(Error::corrupt(
                format!("the metadata of attachment {id}"),
                "it names another attachment",
            ));
        }
        Ok(meta)
    }

    /// Holds the lock under which metadata is changed or removed, until dropped.
    fn meta_lock(&self) -> io::Result<File> {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join("attachments").join(".lock"))?;
        lock.lock()?;
        Ok(lock)
    }

    /// Moves the attachment `id`, whose metadata is damaged (`problem`), out of sight into
    /// `quarantine/<id>` (`quarantine/<id>.<nonce>` when that is taken), whole.
    fn quarantine(&self, id: &RandomId, problem: &Error) -> Result<()> {
        let op = |e: io::Error| Error::io(format!("moving attachment {id} aside"), e);
        let dir = self.root.join("quarantine");
        fs::create_dir_all(&dir).map_err(op)?;
        let mut target = dir.join(id.to_string());
        if fs::symlink_metadata(&target).is_ok() {
            target = dir.join(format!("{id}.{}", &temp_name().map_err(op)?[5..]));
        }
        match fs::rename(self.attachment_dir(id), &target) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            moved => moved.map_err(op)?,
        }
        tracing::warn!(
            attachment = %id,
            error = %problem,
            to = %target.display(),
            "moved an attachment with a damaged record aside",
        );
        sync_dir(&self.root.join("attachments")).map_err(op)
    }

    /// Links every chunk file of upload `id` into `stage`, named by offset, checks that
    /// the linked files tile the file, makes them and the metadata durable there.
    /// Deletes the index entries of commits a crash stopped in upload directory `dir`:
    /// a commit indexes its attachment before it renames its `commit-*` directory into
    /// place, so a stage directory left behind whose attachment does not exist names
    /// entries nothing else will remove.
    fn drop_unpublished_index(&self, dir: &Path) -> io::Result<()> {
        let stages = match fs::read_dir(dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for stage in stages {
            let stage = stage?.path();
            let is_stage = stage
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("commit-"));
            if !is_stage {
                continue;
            }
            let Some(meta) = read_small(&stage.join(META))
                .ok()
                .and_then(|text| serde_json::from_slice::<AttachmentMeta>(&text).ok())
            else {
                continue;
            };
            let Ok(att) = meta.id.parse::<RandomId>() else {
                continue;
            };
            // Published after all (a second commit under the same id): its entries stay.
            if fs::symlink_metadata(self.attachment_dir(&att)).is_ok() {
                continue;
            }
            for entry in self.index_entries(&att, &meta) {
                remove_if_present(&entry)?;
            }
        }
        Ok(())
    }

    /// Removes attachment `id` as `how` says (see [`Removal`]).
    fn remove_attachment(&self, id: &str, how: Removal) -> Result<()> {
        let Ok(rid) = id.parse::<RandomId>() else {
            return Ok(());
        };
        let op = |e: io::Error| Error::io(format!("removing attachment {id}"), e);
        let dir = self.attachment_dir(&rid);
        {
            // Under the metadata lock, so that an update under way cannot bring the
            // metadata back.
            let _lock = self.meta_lock().map_err(op)?;
            match self.read_meta(&rid) {
                Err(e @ Error::CorruptState { .. }) => return self.quarantine(&rid, &e),
                // A damaged record that reads back well now is not removed.
                _ if how == Removal::Damaged => return Ok(()),
                // Linked by a message since the listing (the link took this lock
                // too): it stays.
                Ok(meta) if meta.linked && how == Removal::Expired => return Ok(()),
                // The metadata first: the attachment stops being visible before
                // its index entries and bytes go.
                Ok(meta) => {
                    remove_if_present(&dir.join(META)).map_err(op)?;
                    for entry in self.index_entries(&rid, &meta) {
                        remove_if_present(&entry).map_err(op)?;
                    }
                }
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        remove_tree(&dir).map_err(op)
    }

    fn assemble(&self, id: &RandomId, stage: &Path, meta: &AttachmentMeta) -> Result<()> {
        let op = |e: io::Error| Error::io(format!("commit of upload {id}"), e);
        let record = serde_json::to_vec(meta)?;
        within_budget(
            || format!("the metadata of attachment {}", meta.id),
            record.len(),
            MAX_META_FILE,
        )?;
        let listing = fs::read_dir(self.chunks_dir(id))
            .map_err(|e| map_missing(e, "upload", &id.to_string(), "commit"))?;
        let mut pieces = Vec::new();
        for entry in listing {
            let entry = entry.map_err(op)?;
            let Some((_, offset)) = parse_chunk(&entry.file_name()) else {
                continue;
            };
            let linked = stage.join(offset_name(offset));
            match fs::hard_link(entry.path(), &linked) {
                Ok(()) => pieces.push((offset, fs::metadata(&linked).map_err(op)?.len())),
                // Two chunks at one offset: only one could be linked, so this one counts
                // at least one byte long, an overlap the check below refuses.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    pieces.push((offset, entry.metadata().map_or(1, |m| m.len().max(1))));
                }
                // Replaced by the same number at another offset since the listing.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(op(e)),
            }
        }
        // What is checked is what the links hold: a chunk stored from now on is not in it.
        if let Err(stored) = tiling(&mut pieces, meta.file_size) {
            return Err(incomplete(&id.to_string(), stored, meta.file_size));
        }
        for (offset, _) in &pieces {
            File::open(stage.join(offset_name(*offset)))
                .and_then(|f| f.sync_all())
                .map_err(op)?;
        }
        let mut file = File::create(stage.join(META)).map_err(op)?;
        file.write_all(&record)
            .and_then(|()| file.sync_all())
            .map_err(op)?;
        sync_dir(stage).map_err(op)
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
pub(super) fn read_small(path: &Path) -> io::Result<Vec<u8>> {
    // Only a regular file is ours: a FIFO put in its place would block the open (and a
    // blocking thread) for good, and a symbolic link could point anywhere. (Checked before
    // the open; replacing the file between the two takes write access to the store.)
    if !std::fs::symlink_metadata(path)?.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a regular file", path.display()),
        ));
    }
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

/// A name no other writer picks: `.tmp-` and 16 random hex digits.
fn temp_name() -> io::Result<String> {
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(format!(".tmp-{}", hex::encode(nonce)))
}

/// Writes `data` to `path` atomically: a temporary file beside it, renamed into place
/// (after an fsync when `durable`).
pub(super) fn write_atomic(path: &Path, data: &[u8], durable: bool) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(temp_name()?);
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(data)?;
        if durable {
            file.sync_all()?;
        }
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

/// Removes a directory and everything in it; nothing happens when it is gone. A file
/// another process adds meanwhile (a late chunk) is removed on a second pass.
fn remove_tree(path: &Path) -> io::Result<()> {
    let mut tries = 0;
    loop {
        match fs::remove_dir_all(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty && tries < 3 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// The file name of chunk `number` at `offset` in an upload.
fn chunk_name(number: u64, offset: u64) -> String {
    format!("{number:020}.{offset:020}")
}

/// The number and offset in a chunk file's name.
fn parse_chunk(name: &std::ffi::OsStr) -> Option<(u64, u64)> {
    let (number, offset) = name.to_str()?.split_once('.')?;
    Some((parse_digits(number)?, parse_digits(offset)?))
}

/// The file name of an attachment's chunk at `offset`.
fn offset_name(offset: u64) -> String {
    format!("{offset:020}")
}

/// Twenty decimal digits.
fn parse_digits(text: &str) -> Option<u64> {
    if text.len() == 20 && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse().ok()
    } else {
        None
    }
}

#[async_trait]
impl Store for FsStore {
    async fn begin_upload(&self, upload_id: &str, started: SystemTime) -> Result<()> {
        let id = parse_id("upload", upload_id)?;
        self.blocking(move |s| {
            let op = |e: io::Error| Error::io(format!("beginning upload {id}"), e);
            fs::create_dir_all(s.chunks_dir(&id)).map_err(op)?;
            let record = serde_json::to_vec(&UploadRecord { started })?;
            within_budget(
                || format!("the record of upload {id}"),
                record.len(),
                MAX_META_FILE,
            )?;
            write_atomic(&s.upload_dir(&id).join("begun"), &record, true).map_err(op)
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
            let op = format!("writing chunk {number}");
            let missing = |e: io::Error| map_missing(e, "upload", &id.to_string(), &op);
            let chunks = s.chunks_dir(&id);
            let path = chunks.join(chunk_name(number, offset));
            write_atomic(&path, &data, false).map_err(missing)?;
            // The number at another offset is replaced too.
            for entry in fs::read_dir(&chunks).map_err(missing)? {
                let entry = entry.map_err(missing)?;
                if let Some((n, o)) = parse_chunk(&entry.file_name())
                    && n == number
                    && o != offset
                {
                    remove_if_present(&entry.path()).map_err(missing)?;
                }
            }
            // Abort and commit remove `begun` before the chunk files: a chunk stored after
            // they listed them is found here and taken back.
            if let Err(e) = fs::metadata(s.upload_dir(&id).join("begun")) {
                let _ = fs::remove_file(&path);
                return Err(missing(e));
            }
            Ok(())
        })
        .await
    }

    async fn commit(&self, upload_id: &str, meta: &AttachmentMeta) -> Result<()> {
        let id = parse_id("upload", upload_id)?;
        let att = parse_id("attachment", &meta.id)?;
        let meta = meta.clone();
        self.blocking(move |s| {
            let op = |e: io::Error| Error::io(format!("commit of upload {id}"), e);
            let upload = s.upload_dir(&id);
            fs::metadata(upload.join("begun"))
                .map_err(|e| map_missing(e, "upload", &id.to_string(), "commit"))?;
            let taken = || Error::Taken {
                what: "attachment",
                id: att.to_string(),
            };
            let target = s.attachment_dir(&att);
            match fs::symlink_metadata(&target) {
                Ok(_) => return Err(taken()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(op(e)),
            }
            let stage = upload.join(format!("commit-{}", &temp_name().map_err(op)?[5..]));
            fs::create_dir(&stage)
                .map_err(|e| map_missing(e, "upload", &id.to_string(), "commit"))?;
            let published = s.assemble(&id, &stage, &meta).and_then(|()| {
                // Indexed before it is visible: an entry without an attachment (a crash
                // before the rename) is skipped by listings.
                s.index(&att, &meta).map_err(op)?;
                // Onto an existing attachment (always a directory with files in it), the
                // rename fails: the id is taken.
                fs::rename(&stage, &target).map_err(|e| match e.kind() {
                    io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::AlreadyExists => taken(),
                    _ => {
                        for entry in s.index_entries(&att, &meta) {
                            let _ = fs::remove_file(entry);
                        }
                        op(e)
                    }
                })
            });
            if let Err(e) = published {
                // (When the id is taken, the index entries may be the other attachment's.)
                let _ = remove_tree(&stage);
                return Err(e);
            }
            // Visible from here on: what follows is tidying, and a failure leaves only what
            // the sweep removes with the idle upload.
            let _ = sync_dir(&s.root.join("attachments"));
            let _ = fs::remove_file(upload.join("begun"));
            let _ = remove_tree(&s.chunks_dir(&id));
            // Gone with its last file (an upload without a session record).
            let _ = fs::remove_dir(&upload);
            let _ = sync_dir(&s.root.join("uploads"));
            Ok(())
        })
        .await
    }

    async fn read_staged(&self, upload_id: &str, range: Range<u64>) -> Result<Bytes> {
        let id = parse_id("upload", upload_id)?;
        self.blocking(move |s| {
            let op = |e: io::Error| Error::io(format!("reading upload {id}"), e);
            fs::metadata(s.upload_dir(&id).join("begun"))
                .map_err(|e| map_missing(e, "upload", &id.to_string(), "read"))?;
            let listing = fs::read_dir(s.chunks_dir(&id))
                .map_err(|e| map_missing(e, "upload", &id.to_string(), "read"))?;
            let mut chunks = Vec::new();
            for entry in listing {
                let entry = entry.map_err(op)?;
                if let Some((_, offset)) = parse_chunk(&entry.file_name()) {
                    let len = entry.metadata().map_err(op)?.len();
                    chunks.push((offset, len, entry.path()));
                }
            }
            chunks.sort_by_key(|(offset, ..)| *offset);
            let pieces: Vec<(u64, u64)> = chunks.iter().map(|(o, l, _)| (*o, *l)).collect();
            let slices = staged_slices(&pieces, &range)
                .map_err(|at| incomplete(&id.to_string(), at, range.end))?;
            let mut out = bytes::BytesMut::with_capacity((range.end - range.start) as usize);
            for (i, part) in slices {
                let mut file = File::open(&chunks[i].2).map_err(op)?;
                std::io::Seek::seek(&mut file, io::SeekFrom::Start(part.start)).map_err(op)?;
                let start = out.len();
                out.resize(start + (part.end - part.start) as usize, 0);
                file.read_exact(&mut out[start..]).map_err(op)?;
            }
            Ok(out.freeze())
        })
        .await
    }

    async fn abort(&self, upload_id: &str) -> Result<()> {
        let Ok(id) = upload_id.parse::<RandomId>() else {
            return Ok(());
        };
        self.blocking(move |s| {
            let op = |e: io::Error| Error::io(format!("aborting upload {id}"), e);
            remove_if_present(&s.upload_dir(&id).join("begun")).map_err(op)?;
            remove_tree(&s.chunks_dir(&id)).map_err(op)?;
            // Gone with its last file, unless a session record stays.
            let _ = fs::remove_dir(s.upload_dir(&id));
            Ok(())
        })
        .await
    }

    async fn load_session(&self, upload_id: &str) -> Result<Option<StoredSession>> {
        let Ok(id) = upload_id.parse::<RandomId>() else {
            return Ok(None);
        };
        self.blocking(move |s| {
            let found = read_session(&s.upload_dir(&id).join("session"))
                .map_err(|e| session_error(&id, e))?;
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
            let dir = s.upload_dir(&id);
            fs::create_dir_all(&dir).map_err(op)?;
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join("lock"))
                .map_err(op)?;
            // Held until `lock` drops at the end of this closure (released on close).
            lock.lock().map_err(op)?;
            let path = dir.join("session");
            let current = read_session(&path)
                .map_err(|e| session_error(&id, e))?
                .map(|(h, _)| h.version);
            if current.map(|v| v.to_string()) != expected {
                return Err(contended(&id.to_string()));
            }
            // The version is read back from the file: one that cannot advance is damaged
            // (saves would stop guarding against each other), never a panic.
            let version = match current {
                None => 1,
                Some(v) => v.checked_add(1).ok_or_else(|| {
                    Error::corrupt(
                        format!("the session record of upload {id}"),
                        "its version cannot advance",
                    )
                })?,
            };
            let mut text = serde_json::to_vec(&SessionHeader { version, saved })?;
            text.push(b'\n');
            text.extend_from_slice(&record);
            within_budget(
                || format!("the session of upload {id}"),
                text.len(),
                MAX_META_FILE,
            )?;
            write_atomic(&path, &text, true).map_err(op)?;
            Ok(version.to_string())
        })
        .await
    }

    async fn read_range(&self, attachment_id: &str, range: Range<u64>) -> Result<Bytes> {
        let id = parse_id("attachment", attachment_id)?;
        self.blocking(move |s| {
            let meta = s.read_meta(&id)?;
            check_range(&range, meta.file_size)?;
            if range.is_empty() {
                return Ok(Bytes::new());
            }
            let op = |e: io::Error| Error::io(format!("reading attachment {id}"), e);
            let dir = s.attachment_dir(&id);
            // The chunk files as they are on disk, checked against the metadata before a
            // byte is reserved or served: they must tile 0..file_size exactly (the commit
            // made them so; a damaged or tampered directory is refused, never read short,
            // long or past its end).
            let mut pieces = Vec::new();
            for entry in fs::read_dir(&dir).map_err(op)? {
                let entry = entry.map_err(op)?;
                if let Some(offset) = entry.file_name().to_str().and_then(parse_digits) {
                    pieces.push((offset, entry.metadata().map_err(op)?.len()));
                }
            }
            if let Err(stored) = tiling(&mut pieces, meta.file_size) {
                return Err(Error::corrupt(
                    format!("attachment {id}"),
                    format!(
                        "its chunk files hold {stored} bytes from the start without a gap, but \
                         its metadata says {}",
                        meta.file_size
                    ),
                ));
            }
            let mut out = BytesMut::zeroed((range.end - range.start) as usize);
            for &(offset, len) in &pieces {
                let (from, to) = (range.start.max(offset), range.end.min(offset + len));
                if from >= to {
                    continue;
                }
                let mut file = File::open(dir.join(offset_name(offset))).map_err(op)?;
                let into = &mut out[(from - range.start) as usize..(to - range.start) as usize];
                file.seek(SeekFrom::Start(from - offset))
                    .and_then(|_| file.read_exact(into))
                    .map_err(op)?;
            }
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
            let op = |e: io::Error| map_missing(e, "attachment", &id.to_string(), "updating");
            // One lock for all metadata updates (they are rare): the metadata file itself is
            // replaced by rename, so a lock on it would not hold across the replacement.
            let _lock = s.meta_lock().map_err(op)?;
            let mut meta = s.read_meta(&id)?;
            if change.apply(&mut meta) {
                let record = serde_json::to_vec(&meta)?;
                within_budget(
                    || format!("the metadata of attachment {id}"),
                    record.len(),
                    MAX_META_FILE,
                )?;
                write_atomic(&s.attachment_dir(&id).join(META), &record, true).map_err(op)?;
            }
            Ok(meta)
        })
        .await
    }

    /// Lists by reading the names (ids) in the index directory of the scope (or of the
    /// conversation), highest first, and the metadata of each below the cursor until
    /// `limit` are found: one directory read of that scope's or conversation's size and
    /// about `limit` small file reads a page, whatever else the store holds.
    async fn list_attachments(&self, query: &ListQuery) -> Result<Vec<AttachmentMeta>> {
        let query = query.clone();
        self.blocking(move |s| {
            let op = |e: io::Error| Error::io("listing attachments", e);
            let dir = s.index_dir(&query.scope, query.conversation_id.as_deref());
            let listing = match fs::read_dir(&dir) {
                Ok(listing) => listing,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(op(e)),
            };
            let mut ids = Vec::new();
            for entry in listing {
                let name = entry.map_err(op)?.file_name();
                if let Some(id) = id_of(&name)
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
                    // An entry without an attachment: removed since the index was read,
                    // or a commit or removal that stopped half-way.
                    Ok(_) | Err(Error::NotFound { .. }) => {}
                    // One damaged record must not hide every other: the sweep moves it aside.
                    Err(e @ Error::CorruptState { .. }) => {
                        tracing::warn!(
                            attachment = %id,
                            error = %e,
                            "listing skips an unreadable record",
                        );
                    }
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
            for entry in fs::read_dir(s.root.join("uploads")).map_err(op)? {
                let entry = entry.map_err(op)?;
                let Some(id) = id_of(&entry.file_name()) else {
                    continue;
                };
                let dir = entry.path();
                // Activity: the begin and the session save its records give, and every
                // chunk stored (the chunk files' times, a chunk being written included).
                // When none of these is readable (a crash during `begin_upload`, or a
                // damaged record), the latest time of the upload's directory and files.
                let begun = read_small(&dir.join("begun"))
                    .ok()
                    .and_then(|t| serde_json::from_slice::<UploadRecord>(&t).ok())
                    .map(|r| r.started);
                let saved = read_session(&dir.join("session"))
                    .ok()
                    .flatten()
                    .map(|(h, _)| h.saved);
                let recorded = begun.max(saved);
                let active = recorded
                    .max(newest_in(&dir.join("chunks")))
                    .or_else(|| modified(&dir).max(newest_in(&dir)));
                if active.is_none_or(|t| t < uploads_before) {
                    out.push(Expired::Upload(id.to_string()));
                }
            }
            for entry in fs::read_dir(s.root.join("attachments")).map_err(op)? {
                let entry = entry.map_err(op)?;
                let Some(id) = id_of(&entry.file_name()) else {
                    continue;
                };
                match s.read_meta(&id) {
                    Ok(meta) if !meta.linked && meta.created < unlinked_before => {
                        out.push(Expired::Attachment(id.to_string()));
                    }
                    Ok(_) => {}
                    // Chunks without metadata: a removal that stopped half-way.
                    Err(Error::NotFound { .. }) => {
                        if modified(&entry.path()).is_none_or(|t| t < unlinked_before) {
                            out.push(Expired::Attachment(id.to_string()));
                        }
                    }
                    Err(e @ Error::CorruptState { .. }) => {
                        tracing::warn!(
                            attachment = %id,
                            error = %e,
                            "the sweep will move an unreadable record aside",
                        );
                        out.push(Expired::Damaged(id.to_string()));
                    }
                    Err(e) => {
                        tracing::warn!(
                            attachment = %id,
                            error = %e,
                            "the sweep skips a record it cannot read",
                        );
                    }
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
        self.blocking(move |s| match &item {
            Expired::Upload(id) => {
                let Ok(rid) = id.parse::<RandomId>() else {
                    return Ok(());
                };
                let op = |e: io::Error| Error::io(format!("removing upload {id}"), e);
                let dir = s.upload_dir(&rid);
                remove_if_present(&dir.join("begun")).map_err(op)?;
                s.drop_unpublished_index(&dir).map_err(op)?;
                remove_tree(&dir).map_err(op)
            }
            Expired::Attachment(id) | Expired::Damaged(id) => {
                s.remove_attachment(id, Removal::from(&item))
            }
        })
        .await
    }

    async fn delete_attachment(&self, attachment_id: &str) -> Result<()> {
        let id = attachment_id.to_owned();
        self.blocking(move |s| s.remove_attachment(&id, Removal::Delete))
            .await
    }
}

/// The id an entry of `uploads/` or `attachments/` is named by, if it is one.
fn id_of(name: &std::ffi::OsStr) -> Option<RandomId> {
    name.to_str()?.parse().ok()
}

fn modified(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The latest modification time of the files directly in `dir`.
fn newest_in(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        newest = newest.max(entry.metadata().and_then(|m| m.modified()).ok());
    }
    newest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256;

    fn meta(id: &RandomId, data: &[u8]) -> AttachmentMeta {
        let mut meta = AttachmentMeta::new(
            id.to_string(),
            &crate::upload::AttachmentInfo {
                file_name: "a.bin".into(),
                media_type: crate::MediaType::OCTET_STREAM,
                size: data.len() as u64,
                sha256: sha256(data),
                dimensions: None,
                created: SystemTime::UNIX_EPOCH,
            },
            "scope-1",
        );
        meta.conversation_id = Some("conv-1".into());
        meta
    }

    /// A commit stopped by a crash after it indexed the attachment and before it renamed
    /// the stage into place: listings skip the entries, and removing the upload deletes
    /// them (nothing else knows of them).
    #[tokio::test]
    async fn removing_an_upload_drops_the_index_entries_of_a_commit_a_crash_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
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
        let meta = meta(&att, &data);
        let entries = store.index_entries(&att, &meta);
        let cut = meta.clone();
        store
            .blocking(move |s| {
                let stage = s.upload_dir(&up).join("commit-cut");
                fs::create_dir(&stage).map_err(|e| Error::io("stage", e))?;
                s.assemble(&up, &stage, &cut)?;
                s.index(&att, &cut).map_err(|e| Error::io("index", e))
            })
            .await
            .unwrap();
        assert_eq!(entries.len(), 2);
        assert!(entries.iter().all(|e| e.exists()));
        let page = store
            .list_attachments(&ListQuery::new("scope-1", 10))
            .await
            .unwrap();
        assert!(page.is_empty(), "an entry without an attachment is skipped");

        store
            .remove(&Expired::Upload(up.to_string()))
            .await
            .unwrap();
        assert!(entries.iter().all(|e| !e.exists()), "{entries:?}");
        assert!(!store.upload_dir(&up).exists());
    }
}
