//! [`Hooked`]: a store that calls a hook before each operation (and after a commit), to
//! count calls or to stall one as if its request (or process) had died there.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use attachments::Result;
use attachments::idempotency::{Decision, Fingerprint, RecordKey, StoredAnswer};
use attachments::store::{
    AttachmentMeta, Expired, KeyStore, ListQuery, Message, MessageStore, MetaChange, Store,
    StoredSession,
};
use bytes::Bytes;

/// A store operation, as [`Hooked`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    BeginUpload,
    PutChunk,
    Commit,
    /// After a commit that succeeded.
    Committed,
    Abort,
    LoadSession,
    SaveSession,
    ReadRange,
    Metadata,
    Update,
    ListAttachments,
    ListExpired,
    Remove,
    Messages,
    /// Claiming or settling an idempotency key.
    Keys,
}

/// What the hook wants done with an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    Go,
    /// Never return (the caller's future is dropped from outside).
    Stall,
    /// Wait until [`Hooked::release`] opens `gate` (0 to 63), then go on, or fail with an
    /// IO error when `fail`: a request held up for a while, then done or broken.
    Hold {
        gate: u8,
        fail: bool,
    },
}

type Hook = Arc<dyn Fn(Op) -> Then + Send + Sync>;

/// `inner` with a hook before each operation and a count of each.
pub struct Hooked<S> {
    pub inner: S,
    hook: Mutex<Hook>,
    counts: Mutex<HashMap<Op, usize>>,
    /// The gates opened so far, one bit each.
    opened: tokio::sync::watch::Sender<u64>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Hooked<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooked")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S> Hooked<S> {
    pub fn new(inner: S) -> Self {
        Hooked {
            inner,
            hook: Mutex::new(Arc::new(|_| Then::Go)),
            counts: Mutex::default(),
            opened: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Opens `gate`: the operations held at it go on (or fail).
    #[allow(dead_code)]
    pub fn release(&self, gate: u8) {
        self.opened.send_modify(|opened| *opened |= 1 << gate);
    }

    /// Replaces the hook.
    pub fn set_hook(&self, hook: impl Fn(Op) -> Then + Send + Sync + 'static) {
        *self.hook.lock().unwrap() = Arc::new(hook);
    }

    /// How many times `op` ran (or was stalled).
    pub fn count(&self, op: Op) -> usize {
        self.counts.lock().unwrap().get(&op).copied().unwrap_or(0)
    }

    async fn before(&self, op: Op) -> Result<()> {
        *self.counts.lock().unwrap().entry(op).or_default() += 1;
        let hook = self.hook.lock().unwrap().clone();
        match hook(op) {
            Then::Go => Ok(()),
            Then::Stall => std::future::pending().await,
            Then::Hold { gate, fail } => {
                let mut opened = self.opened.subscribe();
                // The sender lives as long as `self`: waiting cannot fail.
                let _ = opened.wait_for(|o| o & (1 << gate) != 0).await;
                if fail {
                    let err = std::io::Error::other(format!("{op:?} failed (injected)"));
                    return Err(attachments::Error::io(format!("{op:?}"), err));
                }
                Ok(())
            }
        }
    }
}

#[async_trait]
impl<S: MessageStore> MessageStore for Hooked<S> {
    async fn post_message(&self, message: &Message) -> Result<()> {
        self.before(Op::Messages).await?;
        self.inner.post_message(message).await
    }
    async fn latest_messages(&self, limit: usize) -> Result<Vec<Message>> {
        self.before(Op::Messages).await?;
        self.inner.latest_messages(limit).await
    }
    async fn confirm_messages(&self, ids: &[String]) -> Result<usize> {
        self.before(Op::Messages).await?;
        self.inner.confirm_messages(ids).await
    }
    async fn conversation_messages(
        &self,
        accommodation: u64,
        conversation: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Message>> {
        self.before(Op::Messages).await?;
        self.inner
            .conversation_messages(accommodation, conversation, after, limit)
            .await
    }
    async fn reservation_conversation(
        &self,
        accommodation: u64,
        reservation: &str,
        proposed: &str,
    ) -> Result<String> {
        self.before(Op::Messages).await?;
        self.inner
            .reservation_conversation(accommodation, reservation, proposed)
            .await
    }
}

#[async_trait]
impl<S: KeyStore> KeyStore for Hooked<S> {
    async fn claim_key(
        &self,
        key: &RecordKey,
        fingerprint: &Fingerprint,
        claim: &str,
        now: SystemTime,
    ) -> Result<Decision> {
        self.before(Op::Keys).await?;
        self.inner.claim_key(key, fingerprint, claim, now).await
    }
    async fn settle_key(
        &self,
        key: &RecordKey,
        claim: &str,
        answer: Option<&StoredAnswer>,
        now: SystemTime,
    ) -> Result<bool> {
        self.before(Op::Keys).await?;
        self.inner.settle_key(key, claim, answer, now).await
    }
    async fn sweep_keys(&self, now: SystemTime, limit: usize) -> Result<usize> {
        self.inner.sweep_keys(now, limit).await
    }
}

#[async_trait]
impl<S: Store> Store for Hooked<S> {
    async fn read_staged(&self, id: &str, range: Range<u64>) -> Result<Bytes> {
        self.before(Op::ReadRange).await?;
        self.inner.read_staged(id, range).await
    }
    async fn begin_upload(&self, id: &str, started: SystemTime) -> Result<()> {
        self.before(Op::BeginUpload).await?;
        self.inner.begin_upload(id, started).await
    }
    async fn put_chunk(&self, id: &str, n: u64, offset: u64, data: Bytes) -> Result<()> {
        self.before(Op::PutChunk).await?;
        self.inner.put_chunk(id, n, offset, data).await
    }
    async fn commit(&self, id: &str, meta: &AttachmentMeta) -> Result<()> {
        self.before(Op::Commit).await?;
        self.inner.commit(id, meta).await?;
        self.before(Op::Committed).await?;
        Ok(())
    }
    async fn abort(&self, id: &str) -> Result<()> {
        self.before(Op::Abort).await?;
        self.inner.abort(id).await
    }
    async fn load_session(&self, id: &str) -> Result<Option<StoredSession>> {
        self.before(Op::LoadSession).await?;
        self.inner.load_session(id).await
    }
    async fn save_session(
        &self,
        id: &str,
        record: Bytes,
        expected: Option<&str>,
        saved: SystemTime,
    ) -> Result<String> {
        self.before(Op::SaveSession).await?;
        self.inner.save_session(id, record, expected, saved).await
    }
    async fn read_range(&self, id: &str, range: Range<u64>) -> Result<Bytes> {
        self.before(Op::ReadRange).await?;
        self.inner.read_range(id, range).await
    }
    async fn metadata(&self, id: &str) -> Result<AttachmentMeta> {
        self.before(Op::Metadata).await?;
        self.inner.metadata(id).await
    }
    async fn update(&self, id: &str, change: &MetaChange) -> Result<AttachmentMeta> {
        self.before(Op::Update).await?;
        self.inner.update(id, change).await
    }
    async fn list_attachments(&self, query: &ListQuery) -> Result<Vec<AttachmentMeta>> {
        self.before(Op::ListAttachments).await?;
        self.inner.list_attachments(query).await
    }
    async fn list_expired(
        &self,
        uploads_before: SystemTime,
        unlinked_before: SystemTime,
    ) -> Result<Vec<Expired>> {
        self.before(Op::ListExpired).await?;
        self.inner
            .list_expired(uploads_before, unlinked_before)
            .await
    }
    async fn remove(&self, item: &Expired) -> Result<()> {
        self.before(Op::Remove).await?;
        self.inner.remove(item).await
    }
    async fn delete_attachment(&self, id: &str) -> Result<()> {
        self.before(Op::Remove).await?;
        self.inner.delete_attachment(id).await
    }
}
