//! Messages of the [`FsStore`]: files under its directory, so processes sharing the
//! directory share them and a restart keeps them.
//!
//! ```text
//! messages/records/<message_id>.json        the message (JSON, at most MAX_MESSAGE_RECORD bytes)
//! messages/unconfirmed/<message_id>         empty: the message is not confirmed yet
//! messages/conversations/<h>/<message_id>   empty: the conversation's messages
//!                                           (h: SHA-256 of accommodation and conversation)
//! messages/reservations/<h>.json            a reservation's conversation
//!                                           (h: SHA-256 of accommodation and reservation)
//! messages/*/.tmp-*                         files being written
//! ```
//!
//! Records and reservation files are written whole to a temporary file, fsynced, and
//! linked into place with `link(2)`, which refuses an existing name: they appear complete
//! or not at all, a taken message id is refused, and of two processes giving a reservation
//! a conversation at once one wins and the other reads the winner. A post writes the
//! record, then the conversation's entry, then the unconfirmed entry. A confirm removes
//! the unconfirmed entry: `unlink(2)` succeeds for one caller only, so a message is
//! counted once however many processes confirm it. `latest` and a conversation's page read
//! the names in one directory, keep the lowest `limit` of them, and read those records;
//! the records are checked against [`MAX_MESSAGE_RECORD`] before they are read. Every file
//! call runs on tokio's blocking pool.
//!
//! Nothing is removed: messages are kept as long as the directory (as linked attachments
//! are). Each costs one record of at most [`MAX_MESSAGE_RECORD`] bytes and two empty
//! files; no process holds any of them in memory beyond one page.

use std::collections::BinaryHeap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::FsStore;
use super::messages::{
    MAX_MESSAGE_PAGE, MAX_MESSAGE_RECORD, MAX_RESERVATION_RECORD, Message, MessageStore,
    ReservationRecord, check_id, check_message_id, confirmable, key_hash, parse_record, to_record,
};
use crate::error::{Error, Result};

struct Dirs {
    records: PathBuf,
    unconfirmed: PathBuf,
    conversations: PathBuf,
    reservations: PathBuf,
}

impl Dirs {
    fn new(root: &Path) -> Self {
        let base = root.join("messages");
        Dirs {
            records: base.join("records"),
            unconfirmed: base.join("unconfirmed"),
            conversations: base.join("conversations"),
            reservations: base.join("reservations"),
        }
    }

    fn record(&self, id: &str) -> PathBuf {
        self.records.join(format!("{id}.json"))
    }

    /// Moves the damaged record of message `id` (`problem`) to `messages/quarantine/`, and
    /// takes it out of the unconfirmed messages, so that it is read no more.
    fn quarantine(&self, id: &str, problem: &Error) -> Result<()> {
        tracing::warn!(message = id, error = %problem, "a damaged message record is moved aside");
        let op = |e| Error::io(format!("moving the record of message {id} aside"), e);
        let aside = self.records.with_file_name("quarantine");
        fs::create_dir_all(&aside).map_err(op)?;
        match fs::rename(self.record(id), aside.join(format!("{id}.json"))) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(op(e)),
            _ => {}
        }
        match fs::remove_file(self.unconfirmed.join(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(op(e)),
            _ => Ok(()),
        }
    }

    fn conversation(&self, accommodation: u64, conversation: &str) -> PathBuf {
        self.conversations
            .join(key_hash("conversation", accommodation, conversation))
    }
}

/// Runs `f` on the blocking pool with the message directories of `store`.
async fn blocking<T: Send + 'static>(
    store: &FsStore,
    f: impl FnOnce(Dirs) -> Result<T> + Send + 'static,
) -> Result<T> {
    let dirs = Dirs::new(store.root());
    tokio::task::spawn_blocking(move || f(dirs))
        .await
        .map_err(|e| Error::io_other("a blocking message task", io::ErrorKind::Other, e))?
}

/// Writes `data` as a new file `path`: a temporary file beside it, fsync, then a hard link
/// to `path`, which fails with `AlreadyExists` when the name is taken. Where the file
/// system has no hard links, an existence check and a rename (not atomic against another
/// process).
fn create_new(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
    let tmp = dir.join(format!(".tmp-{}", hex::encode(nonce)));
    let result = (|| {
        let mut file = File::create_new(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        drop(file);
        match fs::hard_link(&tmp, path) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Unsupported | io::ErrorKind::PermissionDenied
                ) =>
            {
                if path.exists() {
                    return Err(io::ErrorKind::AlreadyExists.into());
                }
                fs::rename(&tmp, path)
            }
            other => other,
        }
    })();
    let _ = fs::remove_file(&tmp);
    result?;
    sync_dir(dir)
}

/// Creates the empty file `name` in `dir` (nothing happens when it exists).
fn touch(dir: &Path, name: &str) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(name))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Reads a file of at most `limit` bytes; a bigger one is damaged state, refused before
/// it is read. `None` when it does not exist.
fn read_bounded(path: &Path, limit: usize, what: &str) -> Result<Option<Vec<u8>>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {what}"), e)),
    };
    let op = |e| Error::io(format!("reading {what}"), e);
    let len = file.metadata().map_err(op)?.len();
    if len > limit as u64 {
        return Err(Error::corrupt(
            what.to_owned(),
            format!("{len} bytes, over the {limit}-byte limit"),
        ));
    }
    let mut out = Vec::with_capacity(len as usize);
    file.take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(op)?;
    if out.len() > limit {
        return Err(Error::corrupt(
            what.to_owned(),
            format!("over the {limit}-byte limit"),
        ));
    }
    Ok(Some(out))
}

/// The lowest `limit` message ids named in `dir` (above `after`), in order; none when the
/// directory does not exist. Reads every name but keeps at most `limit`.
fn lowest_names(dir: &Path, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
    let op = |e| Error::io(format!("listing {}", dir.display()), e);
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(op(e)),
    };
    let mut lowest = BinaryHeap::with_capacity(limit + 1);
    for entry in entries {
        let name = entry.map_err(op)?.file_name();
        let Some(name) = name.to_str() else { continue };
        if check_message_id(name).is_err() || after.is_some_and(|a| name <= a) {
            continue;
        }
        if lowest.len() < limit {
            lowest.push(name.to_owned());
        } else if lowest.peek().is_some_and(|top| name < top.as_str()) {
            lowest.pop();
            lowest.push(name.to_owned());
        }
    }
    Ok(lowest.into_sorted_vec())
}

/// Reads the records of `ids`, skipping any removed meanwhile, and any damaged: one
/// unreadable record must not hide every other message from `latest` (or a
/// conversation's history), so it is logged and moved aside ([`Dirs::quarantine`]).
fn read_records(dirs: &Dirs, ids: Vec<String>) -> Result<Vec<Message>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let path = dirs.record(&id);
        let what = format!("the record of message {id}");
        let read = read_bounded(&path, MAX_MESSAGE_RECORD, &what).and_then(|found| {
            found
                .map(|b| parse_record(&b, &id, &path.display()))
                .transpose()
        });
        match read {
            Ok(Some(message)) => out.push(message),
            Ok(None) => {}
            Err(e @ Error::CorruptState { .. }) => dirs.quarantine(&id, &e)?,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[async_trait]
impl MessageStore for FsStore {
    async fn post_message(&self, message: &Message) -> Result<()> {
        let record = to_record(message)?;
        let (id, accommodation, conversation) = (
            message.message_id.clone(),
            message.accommodation,
            message.conversation.clone(),
        );
        blocking(self, move |dirs| {
            let op = |e| Error::io(format!("posting message {id}"), e);
            match create_new(&dirs.record(&id), &record) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(Error::Taken {
                        what: "message",
                        id,
                    });
                }
                other => other.map_err(op)?,
            }
            touch(&dirs.conversation(accommodation, &conversation), &id).map_err(op)?;
            touch(&dirs.unconfirmed, &id).map_err(op)
        })
        .await
    }

    async fn latest_messages(&self, limit: usize) -> Result<Vec<Message>> {
        let limit = limit.min(MAX_MESSAGE_PAGE);
        blocking(self, move |dirs| {
            let ids = lowest_names(&dirs.unconfirmed, None, limit)?;
            read_records(&dirs, ids)
        })
        .await
    }

    async fn confirm_messages(&self, ids: &[String]) -> Result<usize> {
        let ids: Vec<String> = confirmable(ids)?.into_iter().map(str::to_owned).collect();
        if ids.is_empty() {
            return Ok(0);
        }
        blocking(self, move |dirs| {
            let mut confirmed = 0;
            for id in ids {
                match fs::remove_file(dirs.unconfirmed.join(&id)) {
                    Ok(()) => confirmed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(format!("confirming message {id}"), e)),
                }
            }
            if confirmed > 0 {
                sync_dir(&dirs.unconfirmed).map_err(|e| Error::io("confirming messages", e))?;
            }
            Ok(confirmed)
        })
        .await
    }

    async fn conversation_messages(
        &self,
        accommodation: u64,
        conversation: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Message>> {
        let limit = limit.min(MAX_MESSAGE_PAGE);
        let conversation = conversation.to_owned();
        let after = after.map(str::to_owned);
        blocking(self, move |dirs| {
            let dir = dirs.conversation(accommodation, &conversation);
            let ids = lowest_names(&dir, after.as_deref(), limit)?;
            let mut found = read_records(&dirs, ids)?;
            found.retain(|m| m.accommodation == accommodation && m.conversation == conversation);
            Ok(found)
        })
        .await
    }

    async fn reservation_conversation(
        &self,
        accommodation: u64,
        reservation: &str,
        proposed: &str,
    ) -> Result<String> {
        check_id("reservation", reservation)?;
        check_id("conversation", proposed)?;
        let record = ReservationRecord {
            accommodation,
            reservation: reservation.to_owned(),
            conversation: proposed.to_owned(),
        };
        blocking(self, move |dirs| {
            let name = key_hash("reservation", accommodation, &record.reservation);
            let path = dirs.reservations.join(format!("{name}.json"));
            let what = format!("the conversation of reservation {:?}", record.reservation);
            let op = |e| Error::io(format!("recording {what}"), e);
            match create_new(&path, &serde_json::to_vec(&record)?) {
                Ok(()) => return Ok(record.conversation),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(op(e)),
            }
            let read = read_bounded(&path, MAX_RESERVATION_RECORD, &what).and_then(|bytes| {
                let bytes = bytes.ok_or_else(|| op(io::ErrorKind::NotFound.into()))?;
                let found: ReservationRecord = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::corrupt(what.clone(), e.to_string()))?;
                if (found.accommodation, found.reservation.as_str())
                    != (accommodation, record.reservation.as_str())
                {
                    return Err(Error::corrupt(what.clone(), "it names another reservation"));
                }
                check_id("conversation", &found.conversation)
                    .map_err(|e| Error::corrupt(what.clone(), e.to_string()))?;
                Ok(found.conversation)
            });
            match read {
                // Damaged: moved aside, and the reservation's conversation is chosen again
                // (of several servers doing this at once, one create wins).
                Err(e @ Error::CorruptState { .. }) => {
                    tracing::warn!(error = %e, "a damaged reservation record is moved aside");
                    let aside = dirs.records.with_file_name("quarantine");
                    fs::create_dir_all(&aside).map_err(op)?;
                    let _ = fs::rename(&path, aside.join(format!("{name}.json")));
                    match create_new(&path, &serde_json::to_vec(&record)?) {
                        Ok(()) => Ok(record.conversation),
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            let bytes = read_bounded(&path, MAX_RESERVATION_RECORD, &what)?
                                .ok_or_else(|| op(io::ErrorKind::NotFound.into()))?;
                            let found: ReservationRecord = serde_json::from_slice(&bytes)
                                .map_err(|e| Error::corrupt(what, e.to_string()))?;
                            Ok(found.conversation)
                        }
                        Err(e) => Err(op(e)),
                    }
                }
                other => other,
            }
        })
        .await
    }
}
