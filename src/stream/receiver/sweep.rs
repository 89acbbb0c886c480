//! Expiry: uploads idle past the session TTL, ended uploads, and attachments no message
//! carries, found from one listing of the store.

use std::time::{Duration, SystemTime};

use super::UploadReceiver;
use crate::error::{Error, Result};
use crate::store::Expired;
use crate::upload::{ResumableRecord, SessionRecord, UploadSession};

impl UploadReceiver {
    /// Sweeps the store, from one listing of it: uploads still receiving but idle past
    /// the session TTL expire (their stored bytes are released, and later chunks answer
    /// [`Error::UploadExpired`]); uploads that ended (finished, failed, expired) are
    /// removed, record included, once idle for two session TTLs; uploads without a
    /// session record (a streamed upload whose stream stopped, or a crash between the two
    /// writes of `start`) are removed once idle for one; attachments not carried by any
    /// message are removed after the unlinked TTL ([`UploadReceiver::with_unlinked_ttl`]),
    /// attachments whose record is damaged are moved aside ([`Expired::Damaged`]), and
    /// whatever else the store reports is removed. "Idle" counts every
    /// stored chunk and session save as activity. Returns how many uploads and attachments
    /// expired or were removed.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] from the store's listing. A single upload that cannot be read or
    /// removed is logged and skipped, so one bad record does not stop the sweep.
    pub async fn sweep(&self) -> Result<usize> {
        let now = (self.clock)();
        let before = |d: Duration| now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH);
        let expired = self
            .store
            .list_expired(before(self.ttl), before(self.unlinked_ttl))
            .await?;
        let mut count = 0;
        for item in expired {
            let done = match &item {
                Expired::Upload(id) => self.sweep_upload(id, now, before(self.ttl * 2)).await,
                other => self.store.remove(other).await.map(|()| true),
            };
            match done {
                Ok(true) => count += 1,
                Ok(false) => {}
                Err(e) => log_sweep_failure(&item, &e),
            }
        }
        Ok(count)
    }

    /// One idle upload of [`UploadReceiver::sweep`]: expired while receiving, removed once
    /// it ended before `ended_before` or when it has no record. Says whether it changed.
    async fn sweep_upload(
        &self,
        id: &str,
        now: SystemTime,
        ended_before: SystemTime,
    ) -> Result<bool> {
        let item = Expired::Upload(id.to_owned());
        let remove = || self.store.remove(&item);
        // Idle past its TTL and damaged (unreadable, or another upload's record): nothing
        // can continue it.
        let damaged = |e: &Error| {
            log_sweep_failure(&item, e);
            remove()
        };
        let stored = match self.store.load_session(id).await {
            Ok(Some(stored)) => stored,
            Ok(None) => {
                remove().await?;
                return Ok(true);
            }
            Err(e @ Error::CorruptState { .. }) => {
                damaged(&e).await?;
                return Ok(true);
            }
            Err(e) => return Err(e),
        };
        let record: SessionRecord = match serde_json::from_slice(&stored.record) {
            Ok(record) => record,
            Err(e) => {
                if let Ok(record) = serde_json::from_slice::<ResumableRecord>(&stored.record) {
                    return self.sweep_resumable(id, record, now, ended_before).await;
                }
                let e = Error::corrupt(format!("the session record of upload {id}"), e.to_string());
                damaged(&e).await?;
                return Ok(true);
            }
        };
        if !record.is_receiving() {
            if record.last_activity() < ended_before {
                remove().await?;
                return Ok(true);
            }
            return Ok(false);
        }
        let mut session = match UploadSession::restore(&self.policy, record)
            .and_then(|session| super::check_own(session, id))
        {
            Ok(session) => session,
            Err(e) => {
                damaged(&e).await?;
                return Ok(true);
            }
        };
        if session.expire_if_idle(now, self.ttl).is_none() {
            return Ok(false);
        }
        // Lost to a chunk that arrived meanwhile: not idle after all.
        let save = self.save(&session, Some(&stored.version), now);
        if save.await.is_err() {
            return Ok(false);
        }
        self.store.abort(id).await?;
        Ok(true)
    }
}

/// A sweep step that failed: logged (where the crate logs), and the sweep goes on.
fn log_sweep_failure(item: &Expired, e: &Error) {
    #[cfg(feature = "server")]
    tracing::warn!(item = ?item, error = %e, "sweep skipped an item");
    #[cfg(not(feature = "server"))]
    let _ = (item, e);
}
