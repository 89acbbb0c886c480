//! Chunked uploads recover from requests (or processes) that die halfway: a `finish` whose
//! request died after it claimed the commit is committed by an identical retry once the
//! claim's lease ([`COMMIT_LEASE`]) has passed, under the attachment id the claim chose,
//! and a pipelining client can send its unanswered chunks again after a crash
//! ([`RECENT_CHUNKS`] are recognised as retries and their bytes stored again).
#![cfg(feature = "async")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use attachments::Error;
use attachments::Policy;
use attachments::store::{MemoryStore, Store};
use attachments::stream::UploadReceiver;
use attachments::upload::{COMMIT_LEASE, RECENT_CHUNKS};
use base64::Engine;
use common::hooked::{Hooked, Op, Then};
use serde_json::{Value, json};

const MB: usize = 1 << 20;
/// Chunks of 300,000 bytes: a 2.5 MB file in nine of them.
const CHUNK: usize = 300_000;

/// Where a request should die: the store operation that never returns while armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stall {
    /// `commit` never returns (the request dies before the commit).
    Commit,
    /// The session save after a successful commit never returns (the request dies after
    /// the store took the attachment, before the record says so).
    SaveAfterCommit,
}

type Stalling = Hooked<MemoryStore>;

/// Stalls `store` at `stall` from now on.
fn arm(store: &Stalling, stall: Stall) {
    let committed = AtomicBool::new(false);
    store.set_hook(move |op| match (stall, op) {
        (Stall::Commit, Op::Commit) => Then::Stall,
        (Stall::SaveAfterCommit, Op::Committed) => {
            committed.store(true, Ordering::SeqCst);
            Then::Go
        }
        (Stall::SaveAfterCommit, Op::SaveSession) if committed.load(Ordering::SeqCst) => {
            Then::Stall
        }
        _ => Then::Go,
    });
}

fn disarm(store: &Stalling) {
    store.set_hook(|_| Then::Go);
}

struct Server {
    receiver: UploadReceiver,
    store: Arc<Stalling>,
    now: Arc<Mutex<SystemTime>>,
}

impl Server {
    fn new() -> Self {
        let now = Arc::new(Mutex::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ));
        let clock_now = now.clone();
        let clock = move || *clock_now.lock().unwrap();
        let store = Arc::new(Hooked::new(MemoryStore::new().with_clock(clock.clone())));
        let receiver = UploadReceiver::new(Policy::connectivity(), store.clone())
            .with_ttl(Duration::from_secs(600))
            .with_clock(clock);
        Server {
            receiver,
            store,
            now,
        }
    }

    fn advance(&self, by: Duration) {
        *self.now.lock().unwrap() += by;
    }

    async fn send(&self, body: &Value) -> Result<(Option<String>, Option<String>), Error> {
        let data = self
            .receiver
            .chunk(&serde_json::to_vec(body).unwrap(), "scope")
            .await?;
        Ok((data.upload_id, data.attachment_id))
    }

    /// Sends `body` and drops the request after 200 ms: a request that died.
    async fn send_and_die(&self, body: &Value) {
        let sent = tokio::time::timeout(Duration::from_millis(200), self.send(body)).await;
        assert!(
            sent.is_err(),
            "the request was meant to stall, got {sent:?}"
        );
    }

    async fn attachment_count(&self) -> usize {
        self.store.inner.attachment_count()
    }
}

fn chunk(action: &str, id: Option<&str>, n: usize, file: &[u8]) -> Value {
    let range = n * CHUNK..((n + 1) * CHUNK).min(file.len());
    let content = base64::engine::general_purpose::STANDARD.encode(&file[range.clone()]);
    let mut att = json!({
        "action": action,
        "chunk": {"chunk_number": n, "chunk_size": range.len(), "chunk_content": content},
        "file_type": "image/jpeg", "file_size": file.len(), "file_name": "photo.jpg",
    });
    if let Some(id) = id {
        att["upload_id"] = json!(id);
    }
    json!({ "attachment": att })
}

fn file() -> Vec<u8> {
    common::exact_jpeg(2 * MB + 400_000)
}

/// Chunk count of [`file`].
fn chunks(file: &[u8]) -> usize {
    file.len().div_ceil(CHUNK)
}

/// Starts an upload and sends every chunk but `finish`; returns the upload id.
async fn all_but_finish(server: &Server, file: &[u8]) -> String {
    let (id, _) = server.send(&chunk("start", None, 0, file)).await.unwrap();
    let id = id.unwrap();
    for n in 1..chunks(file) - 1 {
        server
            .send(&chunk("resume", Some(&id), n, file))
            .await
            .unwrap();
    }
    id
}

async fn read_whole(server: &Server, id: &str, len: usize) -> Vec<u8> {
    server
        .store
        .read_range(id, 0..len as u64)
        .await
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn a_finish_that_died_before_its_commit_is_committed_by_its_retry_after_the_lease() {
    let server = Server::new();
    let file = file();
    let id = all_but_finish(&server, &file).await;
    let finish = chunk("finish", Some(&id), chunks(&file) - 1, &file);
    arm(&server.store, Stall::Commit);
    server.send_and_die(&finish).await;
    disarm(&server.store);

    // Within the lease the claim stands: the retry hears that a commit is under way.
    server.advance(COMMIT_LEASE - Duration::from_millis(1500));
    let err = server.send(&finish).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "upload {id} is being committed by an earlier finish; if that request got no answer, send the same finish again in 2 s"
        )
    );
    assert_eq!(err.status(), 409);
    // What is left of the lease is rounded up: a client waiting as told finds it over.
    server.advance(Duration::from_millis(500));
    let err = server.send(&finish).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
    server.advance(Duration::from_millis(500));
    // A chunk that is not the same `finish` never takes the claim over.
    server.advance(Duration::from_secs(2));
    let mut other = finish.clone();
    other["attachment"]["chunk"]["chunk_content"] = json!("AAAA");
    other["attachment"]["chunk"]["chunk_size"] = json!(3);
    assert!(matches!(
        server.send(&other).await.unwrap_err(),
        Error::UploadCommitting { .. }
    ));

    // Past the lease, the identical retry commits, and a retry of that is answered alike.
    let (_, attachment) = server.send(&finish).await.unwrap();
    let attachment = attachment.expect("an attachment id");
    assert_eq!(read_whole(&server, &attachment, file.len()).await, file);
    let (_, again) = server.send(&finish).await.unwrap();
    assert_eq!(again.as_deref(), Some(attachment.as_str()));
    assert_eq!(server.attachment_count().await, 1);
}

#[tokio::test]
async fn a_finish_that_died_after_its_commit_answers_the_committed_attachment_on_retry() {
    let server = Server::new();
    let file = file();
    let id = all_but_finish(&server, &file).await;
    let finish = chunk("finish", Some(&id), chunks(&file) - 1, &file);
    arm(&server.store, Stall::SaveAfterCommit);
    server.send_and_die(&finish).await;
    disarm(&server.store);
    // The store took the attachment; the record still says "committing".
    assert_eq!(server.attachment_count().await, 1);

    server.advance(COMMIT_LEASE + Duration::from_secs(1));
    let (_, attachment) = server.send(&finish).await.unwrap();
    let attachment = attachment.expect("the attachment the dead request committed");
    assert_eq!(read_whole(&server, &attachment, file.len()).await, file);
    assert_eq!(
        server.attachment_count().await,
        1,
        "no second copy of the file"
    );
}

#[tokio::test]
async fn a_pipelining_client_sends_its_unanswered_chunks_again_after_a_crash() {
    let server = Server::new();
    let file = file();
    let (id, _) = server.send(&chunk("start", None, 0, &file)).await.unwrap();
    let id = id.unwrap();
    let last = chunks(&file) - 1;
    for n in 1..last {
        server
            .send(&chunk("resume", Some(&id), n, &file))
            .await
            .unwrap();
    }
    // The answers to the last RECENT_CHUNKS chunks were lost: the client sends them again,
    // oldest first, then `finish`.
    for n in last - RECENT_CHUNKS..last {
        assert_eq!(
            server
                .send(&chunk("resume", Some(&id), n, &file))
                .await
                .unwrap(),
            (None, None),
            "chunk {n} again"
        );
    }
    let (_, attachment) = server
        .send(&chunk("finish", Some(&id), last, &file))
        .await
        .unwrap();
    let attachment = attachment.unwrap();
    assert_eq!(read_whole(&server, &attachment, file.len()).await, file);
}

#[tokio::test]
async fn only_identical_retries_of_recent_chunks_are_taken() {
    let server = Server::new();
    let file = file();
    let (id, _) = server.send(&chunk("start", None, 0, &file)).await.unwrap();
    let id = id.unwrap();
    let last = chunks(&file) - 1;
    for n in 1..last {
        server
            .send(&chunk("resume", Some(&id), n, &file))
            .await
            .unwrap();
    }
    // A chunk older than the recent ones is refused as reused, and ends the upload.
    let old = last - RECENT_CHUNKS - 1;
    let err = server
        .send(&chunk("resume", Some(&id), old, &file))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "chunk rejected: chunk_number {old} was already accepted with other content; the next chunk is {last}"
        ),
    );

    // On a fresh upload: a recent chunk with other bytes is refused too.
    let (id, _) = server.send(&chunk("start", None, 0, &file)).await.unwrap();
    let id = id.unwrap();
    for n in 1..4 {
        server
            .send(&chunk("resume", Some(&id), n, &file))
            .await
            .unwrap();
    }
    let mut changed = chunk("resume", Some(&id), 2, &file);
    let mut other = file.clone();
    other[2 * CHUNK + 10] ^= 1;
    changed["attachment"]["chunk"]["chunk_content"] =
        json!(base64::engine::general_purpose::STANDARD.encode(&other[2 * CHUNK..3 * CHUNK]));
    let err = server.send(&changed).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Chunk(attachments::error::ChunkProblem::Reused { number: 2, .. })
        ),
        "{err}"
    );
}

/// A pipelining client whose earlier chunk's answer is lost while its `finish` succeeds
/// takes the attachment the `finish` answered, instead of starting the upload over.
#[cfg(all(feature = "server", feature = "client"))]
#[tokio::test]
async fn a_pipelined_finish_that_succeeded_settles_the_upload_when_an_earlier_answer_is_lost() {
    use attachments::client::ConnectivityClient;
    use attachments::retry::RetryPolicy;
    use attachments::server::{Sandbox, ServerConfig};
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::middleware::{self, Next};
    use axum::response::{IntoResponse, Response};

    /// Lets chunk 2 through, then answers 503 in its place: its answer is lost.
    async fn lose_chunk_2(req: Request<Body>, next: Next) -> Response {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, 4 << 20).await.unwrap();
        let chunk_2 = serde_json::from_slice::<Value>(&body)
            .ok()
            .is_some_and(|v| v["attachment"]["chunk"]["chunk_number"] == json!(2));
        let answer = next.run(Request::from_parts(parts, Body::from(body))).await;
        if chunk_2 && answer.status().is_success() {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        answer
    }

    let store = Arc::new(MemoryStore::new());
    let sandbox = Sandbox::new(store.clone(), ServerConfig::default());
    let router = sandbox.router().layer(middleware::from_fn(lose_chunk_2));
    let url = common::serve_local(router).await;
    let client = ConnectivityClient::new(&url)
        .unwrap()
        .with_retry(RetryPolicy::none())
        .with_pipeline(4);
    // Four chunks of 1,048,575 bytes or less: start, two resumes, finish.
    let file = common::exact_jpeg(3 * MB + 1000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("photo.jpg");
    std::fs::write(&path, &file).unwrap();
    let uploaded = client
        .upload_file(42, "conv", &path, |_, _| {})
        .await
        .unwrap();
    assert_eq!(uploaded.restarts, 0, "no second upload of the same file");
    assert_eq!(store.attachment_count(), 1);
    let stored = store
        .read_range(&uploaded.attachment_id, 0..file.len() as u64)
        .await
        .unwrap();
    assert_eq!(stored, file);
}

/// A damaged session record is `CorruptState`: a 500 whose wire text says what to do and
/// names no record, which the receiver neither waits on nor calls transient (before, it
/// was an IO error of kind `InvalidData`: "internal storage error; try again later").
#[tokio::test]
async fn a_damaged_session_record_is_corrupt_state_not_a_transient_io_error() {
    let server = Server::new();
    let file = file();
    let (id, _) = server.send(&chunk("start", None, 0, &file)).await.unwrap();
    let id = id.unwrap();
    let stored = server.store.load_session(&id).await.unwrap().unwrap();
    server
        .store
        .save_session(
            &id,
            bytes::Bytes::from_static(b"{\"format\": 1, \"id\": "),
            Some(&stored.version),
            SystemTime::now(),
        )
        .await
        .unwrap();
    let err = server
        .send(&chunk("resume", Some(&id), 1, &file))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::CorruptState { .. }), "{err:?}");
    assert_eq!(err.status(), 500);
    assert!(!err.is_transient());
    assert_eq!(
        err.wire_message(),
        "internal error: stored state is damaged; start the upload or request again"
    );
    assert!(
        err.to_string()
            .contains(&format!("the session record of upload {id}"))
    );
}

/// From now on, the `n`th call (counting from 1) of each `op` listed does what its `Then`
/// says; every other call goes on.
fn hold(store: &Stalling, holds: Vec<(Op, usize, Then)>) {
    let seen = Mutex::new(std::collections::HashMap::<Op, usize>::new());
    store.set_hook(move |op| {
        let mut seen = seen.lock().unwrap();
        let n = seen.entry(op).or_default();
        *n += 1;
        holds
            .iter()
            .find(|(o, at, _)| *o == op && at == n)
            .map_or(Then::Go, |(_, _, then)| *then)
    });
}

/// Waits until `op` ran `count` times in all.
async fn ran(store: &Stalling, op: Op, count: usize) {
    for _ in 0..500 {
        if store.count(op) >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{op:?} ran {} times, not {count}", store.count(op));
}

/// A `finish` held up past its lease, whose retry took the commit over, fails late (its
/// last chunk's write breaks): it must not record its failure over the retry's record nor
/// release the upload's bytes, which the retry is committing. (Before, it saved "failed"
/// over whatever record it found and released the chunks: both requests failed and the
/// file was lost.)
#[tokio::test]
async fn a_finish_failing_after_its_retry_took_over_leaves_the_upload_to_the_retry() {
    let server = Arc::new(Server::new());
    let file = file();
    let id = all_but_finish(&server, &file).await;
    let finish = chunk("finish", Some(&id), chunks(&file) - 1, &file);
    let (puts, commits) = (
        server.store.count(Op::PutChunk),
        server.store.count(Op::Commit),
    );
    hold(
        &server.store,
        vec![
            (
                Op::PutChunk,
                1,
                Then::Hold {
                    gate: 0,
                    fail: true,
                },
            ),
            (
                Op::Commit,
                1,
                Then::Hold {
                    gate: 1,
                    fail: false,
                },
            ),
        ],
    );
    let first = tokio::spawn({
        let (server, finish) = (server.clone(), finish.clone());
        async move { server.send(&finish).await }
    });
    ran(&server.store, Op::PutChunk, puts + 1).await;
    server.advance(COMMIT_LEASE + Duration::from_secs(1));
    let retry = tokio::spawn({
        let (server, finish) = (server.clone(), finish.clone());
        async move { server.send(&finish).await }
    });
    ran(&server.store, Op::Commit, commits + 1).await;

    server.store.release(0);
    let err = first.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Io(_)), "{err:?}");
    server.store.release(1);
    let (_, attachment) = retry.await.unwrap().unwrap();
    let attachment = attachment.expect("the retry's attachment");
    assert_eq!(read_whole(&server, &attachment, file.len()).await, file);
    let (_, again) = server.send(&finish).await.unwrap();
    assert_eq!(again.as_deref(), Some(attachment.as_str()));
    assert_eq!(server.attachment_count().await, 1);
}

/// A `finish` held up in its commit past the lease, whose retry committed meanwhile: when
/// its own commit then fails (the store has the attachment already), the attachment is
/// there under the claim's id, so it answers success with that id. (Before, it failed,
/// and saved "failed" over the retry's "finished": later retries heard the upload failed.)
#[tokio::test]
async fn a_commit_refused_because_the_retry_made_it_answers_the_attachment() {
    let server = Arc::new(Server::new());
    let file = file();
    let id = all_but_finish(&server, &file).await;
    let finish = chunk("finish", Some(&id), chunks(&file) - 1, &file);
    hold(
        &server.store,
        vec![(
            Op::Commit,
            1,
            Then::Hold {
                gate: 0,
                fail: false,
            },
        )],
    );
    let commits = server.store.count(Op::Commit);
    let first = tokio::spawn({
        let (server, finish) = (server.clone(), finish.clone());
        async move { server.send(&finish).await }
    });
    ran(&server.store, Op::Commit, commits + 1).await;
    server.advance(COMMIT_LEASE + Duration::from_secs(1));
    let (_, attachment) = server.send(&finish).await.unwrap();
    let attachment = attachment.expect("the retry's attachment");

    server.store.release(0);
    let (_, first) = first.await.unwrap().unwrap();
    assert_eq!(first.as_deref(), Some(attachment.as_str()));
    let (_, again) = server.send(&finish).await.unwrap();
    assert_eq!(again.as_deref(), Some(attachment.as_str()));
    assert_eq!(read_whole(&server, &attachment, file.len()).await, file);
    assert_eq!(server.attachment_count().await, 1);
}

/// Copies of an early chunk flooding one upload: four wait for their turn, the rest are
/// answered "busy" at once (409, `Retry-After: 1`) instead of each polling the store for
/// up to 10 s (200 such requests slowed every other upload down). The upload goes on.
#[tokio::test]
async fn a_flood_of_early_chunks_of_one_upload_waits_four_and_answers_the_rest_busy() {
    let server = Arc::new(Server::new());
    let file = file();
    let (id, _) = server.send(&chunk("start", None, 0, &file)).await.unwrap();
    let id = id.unwrap();
    let early = chunk("resume", Some(&id), 2, &file);
    let copies: Vec<_> = (0..12)
        .map(|_| {
            let (server, early) = (server.clone(), early.clone());
            tokio::spawn(async move { server.send(&early).await })
        })
        .collect();
    // The busy ones are answered at once; the waiting ones not before chunk 1 comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answered = copies.iter().filter(|c| c.is_finished()).count();
    assert_eq!(answered, 8, "eight answered busy without waiting");
    server
        .send(&chunk("resume", Some(&id), 1, &file))
        .await
        .unwrap();
    let mut busy = 0;
    for copy in copies {
        match copy.await.unwrap() {
            Ok(_) => {}
            Err(e @ Error::UploadBusy { .. }) => {
                assert_eq!(e.status(), 409);
                assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
                busy += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(busy, 8, "four copies wait, eight are busy");
    for n in 3..chunks(&file) - 1 {
        server
            .send(&chunk("resume", Some(&id), n, &file))
            .await
            .unwrap();
    }
    let (_, attachment) = server
        .send(&chunk("finish", Some(&id), chunks(&file) - 1, &file))
        .await
        .unwrap();
    let attachment = attachment.unwrap();
    assert_eq!(read_whole(&server, &attachment, file.len()).await, file);
}
