//! Chunked upload, both sides: the client's bodies through the server's sessions into a
//! store, the exact JSON of the bodies, and every error path with its message.
#![cfg(feature = "async")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use attachments::codec::base64::encode_to;
use attachments::digest::sha256;
use attachments::store::{MemoryStore, Store};
use attachments::stream::UploadReceiver;
use attachments::upload::{
    DEFAULT_CHUNK_SIZE, RandomId, Received, RequestKind, Sessions, Step, Target, UploadPlan,
    UploadSession,
};
use attachments::wire::connectivity::{ChunkAction, ChunkRequest};
use attachments::wire::{self, Id};
use attachments::{Error, Limits, Policy, UploadMode};
use futures::StreamExt as _;
use proptest::prelude::*;
use serde_json::{Value, json};

/// Chunked uploads from 1,001 bytes (single requests below), up to 10 MiB in chunks of at
/// most 1 MiB, for any type.
fn any_type_small_single() -> Policy {
    let mut limits = Limits::connectivity();
    limits.max_single_size = 1000;
    Policy::chat().with_limits(limits)
}

/// A Connectivity plan under the Connectivity policy.
fn conn_plan(name: &str, ty: &str, size: u64) -> attachments::Result<UploadPlan> {
    UploadPlan::new(
        &Policy::connectivity(),
        Target::Connectivity,
        name,
        ty,
        size,
    )
}

/// Runs the plan to the end against `receiver`, feeding `file` in slices of `step` bytes;
/// returns the attachment id.
async fn upload(
    receiver: &UploadReceiver,
    mut plan: UploadPlan,
    file: &[u8],
    step: usize,
) -> String {
    let mut fed = 0;
    loop {
        match plan.poll().unwrap() {
            Step::NeedData => {
                let end = (fed + step).min(file.len());
                fed += plan.write(&file[fed..end]).unwrap();
            }
            Step::NeedUploadId => panic!("upload_id is set after start"),
            Step::Done => panic!("finish came without an attachment id"),
            Step::Send(request) if request.kind == RequestKind::Single => {
                let att = receiver.single(&request.body, "").await.unwrap();
                assert_eq!(plan.poll().unwrap(), Step::Done);
                return att;
            }
            Step::Send(request) => {
                let data = receiver.chunk(&request.body, "").await.unwrap();
                if let Some(id) = data.upload_id {
                    plan.set_upload_id(id);
                }
                if let Some(att) = data.attachment_id {
                    assert_eq!(plan.poll().unwrap(), Step::Done);
                    return att;
                }
            }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Any size from 1 byte to 10 MiB, any chunk size up to the limit (at most 2,000 chunks
    /// for small files and 64 for large ones, to keep the number of requests sane), any
    /// slicing of the source. Files up to 1,000 bytes go in one request.
    #[test]
    fn client_bodies_commit_exactly_the_file(
        (size, chunk) in prop_oneof![
            (1usize..=200_000).prop_flat_map(|s| (Just(s), (s as u64 / 2000).max(1)..=1_048_576)),
            (1usize..=10 * 1_048_576).prop_flat_map(|s| (Just(s), (s as u64 / 64).max(1)..=1_048_576)),
        ],
        step in 1usize..300_000,
        seed in any::<u32>(),
    ) {
        let file = common::noise(size, seed);
        let policy = any_type_small_single();
        let store = Arc::new(MemoryStore::new());
        let receiver = UploadReceiver::new(policy.clone(), store.clone());
        let plan = UploadPlan::new(&policy, Target::Connectivity, "f.bin", "application/octet-stream", size as u64)
            .unwrap()
            .with_chunk_size(chunk)
            .unwrap();
        let expected_bodies = match size {
            ..=1000 => 1,
            _ if chunk >= size as u64 => 2,
            _ => (size as u64).div_ceil(chunk),
        };
        prop_assert_eq!(plan.body_count(), expected_bodies);
        let att = runtime().block_on(upload(&receiver, plan, &file, step));
        let rt = runtime();
        let meta = rt.block_on(store.metadata(&att)).unwrap();
        prop_assert_eq!(meta.file_size, size as u64);
        prop_assert_eq!(meta.sha256, sha256(&file));
        let stored = rt.block_on(store.read_range(&att, 0..size as u64)).unwrap();
        prop_assert!(stored == file, "stored bytes differ");
        prop_assert_eq!(store.upload_count(), 0);
    }
}

#[tokio::test]
async fn a_jpeg_of_seed_001s_size_commits_with_default_chunks() {
    let file = common::structural_jpeg(2_602_519);
    let policy = Policy::connectivity();
    let store = Arc::new(MemoryStore::new());
    let receiver = UploadReceiver::new(policy.clone(), store.clone());
    let plan = UploadPlan::new(
        &policy,
        Target::Connectivity,
        "test.jpg",
        "image/jpeg",
        file.len() as u64,
    )
    .unwrap();
    assert_eq!(plan.mode(), UploadMode::Chunked);
    assert_eq!(plan.chunk_size(), DEFAULT_CHUNK_SIZE);
    let att = upload(&receiver, plan, &file, 65_536).await;
    let meta = store.metadata(&att).await.unwrap();
    assert_eq!(
        (meta.file_type.as_str(), meta.file_size),
        ("image/jpeg", file.len() as u64)
    );
    assert_eq!(meta.sha256, sha256(&file));
    assert_eq!(meta.dimensions, Some((1024, 768)));
}

/// The bodies of a plan, all of them, fed in one go.
fn bodies(mut plan: UploadPlan, file: &[u8]) -> Vec<(RequestKind, Value)> {
    let mut out = Vec::new();
    let mut fed = 0;
    loop {
        match plan.poll().unwrap() {
            Step::NeedData => fed += plan.write(&file[fed..]).unwrap(),
            Step::NeedUploadId => plan.set_upload_id("70f676b0-0fc0-11eb-bd1d-af10278183bb"),
            Step::Done => return out,
            Step::Send(r) => out.push((r.kind, serde_json::from_slice(&r.body).unwrap())),
        }
    }
}

fn b64(data: &[u8]) -> String {
    let mut out = Vec::new();
    encode_to(data, &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn chunk_bodies_have_seed_001s_shape() {
    let file = common::structural_png(2_602_519);
    let plan = conn_plan("test \"1\".png", "image/png", file.len() as u64).unwrap();
    let got = bodies(plan, &file);
    assert_eq!(got.len(), 3);
    let size = file.len() as u64;
    let expect = |action: &str, n: u64, range: std::ops::Range<usize>, id: bool| {
        let mut att = json!({
            "action": action,
            "chunk": {"chunk_number": n, "chunk_size": range.len(), "chunk_content": b64(&file[range])},
            "file_type": "image/png",
            "file_size": size,
            "file_name": "test \"1\".png",
        });
        if id {
            att["upload_id"] = json!("70f676b0-0fc0-11eb-bd1d-af10278183bb");
        }
        json!({"attachment": att})
    };
    let c = DEFAULT_CHUNK_SIZE as usize;
    assert_eq!(got[0].1, expect("start", 0, 0..c, false));
    assert_eq!(got[1].1, expect("resume", 1, c..2 * c, true));
    assert_eq!(got[2].1, expect("finish", 2, 2 * c..file.len(), true));
    assert_eq!(
        got[2].0,
        RequestKind::Chunk {
            action: ChunkAction::Finish,
            number: 2
        }
    );
    // The chunk contents, concatenated, are one valid base64 text of the whole file.
    let joined: String = got
        .iter()
        .map(|(_, v)| v["attachment"]["chunk"]["chunk_content"].as_str().unwrap())
        .collect();
    assert_eq!(joined, b64(&file));
    // And they parse as the crate's own wire types, borrowing the content.
    let body = serde_json::to_vec(&got[1].1).unwrap();
    let req: ChunkRequest<'_> = wire::from_slice(&body).unwrap();
    assert!(req.attachment.chunk.chunk_content.is_borrowed());
}

#[test]
fn single_bodies_have_each_flavours_shape() {
    let file = common::structural_jpeg(30_220);
    let plan = conn_plan("food.jpeg", "image/jpeg", file.len() as u64).unwrap();
    assert_eq!(
        bodies(plan, &file),
        [(
            RequestKind::Single,
            json!({"attachment": {
                "file_name": "food.jpeg", "file_content": b64(&file),
                "file_type": "image/jpeg", "file_size": file.len()
            }})
        )]
    );
    let target = Target::Demand {
        accommodation: 8_011_855,
        conversation: "f3a9c29d-480d-5f5b-a6c0-65451e335353".into(),
        reservation: Id::from("4380765874"),
    };
    let plan = UploadPlan::new(
        &Policy::demand(),
        target,
        "food.jpeg",
        "image/jpg",
        file.len() as u64,
    )
    .unwrap();
    assert_eq!(
        bodies(plan, &file),
        [(
            RequestKind::Single,
            json!({
                "accommodation": 8_011_855, "conversation": "f3a9c29d-480d-5f5b-a6c0-65451e335353",
                "reservation": "4380765874", "file_content": b64(&file), "file_name": "food.jpeg",
                "file_type": "image/jpg", "file_size": file.len()
            })
        )]
    );
}

#[test]
fn plans_refuse_what_no_route_takes() {
    let too_big = conn_plan("a.png", "image/png", 10_485_761).unwrap_err();
    assert_eq!(too_big.wire_message(), "File size exceeds the 10MB limit");
    let demand = Target::Demand {
        accommodation: 1,
        conversation: "c".into(),
        reservation: Id::number(2),
    };
    let err =
        UploadPlan::new(&Policy::demand(), demand, "a.png", "image/png", 1_048_577).unwrap_err();
    assert_eq!(err.wire_message(), "File size exceeds the 1MB limit");
    let plan = conn_plan("a.png", "image/png", 2_000_000).unwrap();
    assert_eq!(
        plan.with_chunk_size(1_048_577).unwrap_err().wire_message(),
        "Chunk size exceeds the 1MB limit"
    );
    let plan = conn_plan("a.png", "image/png", 2_000_000).unwrap();
    assert_eq!(
        plan.with_chunk_size(0).unwrap_err().to_string(),
        "chunk rejected: a chunk size of 0 bytes cannot carry a file; use at least 1 byte (the default is 1048575)"
    );
    let err = conn_plan("../a.png", "image/png", 10).unwrap_err();
    assert!(matches!(err, Error::InvalidFileName(_)), "{err}");
}

#[test]
fn a_rejected_file_never_yields_its_finish_body() {
    // A PNG whose last chunk is cut: every body but the last goes out, then the plan fails.
    let mut file = common::structural_png(2_500_000);
    file.truncate(file.len() - 6);
    let mut plan = conn_plan("a.png", "image/png", file.len() as u64).unwrap();
    plan.set_upload_id("u");
    let (mut fed, mut sent) = (0, Vec::new());
    let err = loop {
        match plan.poll() {
            Ok(Step::NeedData) => match plan.write(&file[fed..]) {
                Ok(n) => fed += n,
                Err(e) => break e,
            },
            Ok(Step::Send(r)) => sent.push(r.kind),
            Ok(other) => panic!("{other:?}"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::InvalidContent { .. }), "{err}");
    assert_eq!(
        sent,
        [
            RequestKind::Chunk {
                action: ChunkAction::Start,
                number: 0
            },
            RequestKind::Chunk {
                action: ChunkAction::Resume,
                number: 1
            }
        ]
    );
    assert!(matches!(plan.poll(), Err(Error::AlreadyFailed { .. })));
    // Starting over with the fixed file is possible on the same plan only for the same size;
    // the same bytes fail the same way.
    plan.restart();
    assert_eq!(plan.poll().unwrap(), Step::NeedData);
    assert_eq!(plan.upload_id(), None);
}

#[test]
fn a_source_of_the_wrong_length_is_caught() {
    let file = common::noise(3_000_000, 1);
    let policy = any_type_small_single();
    let mut plan = UploadPlan::new(
        &policy,
        Target::Connectivity,
        "a",
        "application/octet-stream",
        2_999_999,
    )
    .unwrap();
    plan.set_upload_id("u");
    let mut fed = 0;
    loop {
        match plan.poll().unwrap() {
            Step::NeedData => fed += plan.write(&file[fed..]).unwrap(),
            Step::Send(_) => {}
            Step::Done => break,
            other => panic!("{other:?}"),
        }
    }
    // The plan took the declared bytes; the byte after them is refused. (The stream
    // adapter reads past the end before it releases the finish body; see tests/stream.rs.)
    let err = plan.write(&file[fed..]).unwrap_err();
    // The finish body was ready, but the source went on.
    assert_eq!(
        err.to_string(),
        "Content length is 3000000 but metadata size is 2999999"
    );

    let mut plan = UploadPlan::new(
        &policy,
        Target::Connectivity,
        "a",
        "application/octet-stream",
        3_000_001,
    )
    .unwrap();
    plan.set_upload_id("u");
    let mut fed = 0;
    while fed < file.len() {
        match plan.poll().unwrap() {
            Step::NeedData => fed += plan.write(&file[fed..]).unwrap(),
            Step::Send(_) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(plan.poll().unwrap(), Step::NeedData);
    assert_eq!(
        plan.end().unwrap_err().to_string(),
        "Content length is 3000000 but metadata size is 3000001"
    );
}

// ---- Server side: every error path, with its message ----

const MB: usize = 1_048_576;

/// A receiver over a memory store with a clock the test moves.
struct Server {
    receiver: UploadReceiver,
    store: Arc<MemoryStore>,
    now: Arc<Mutex<SystemTime>>,
}

impl Server {
    fn new(policy: Policy) -> Self {
        let now = Arc::new(Mutex::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ));
        let clock_now = now.clone();
        let clock = move || *clock_now.lock().unwrap();
        // The store times chunks by the same clock.
        let store = Arc::new(MemoryStore::new().with_clock(clock.clone()));
        let receiver = UploadReceiver::new(policy, store.clone())
            .with_ttl(Duration::from_secs(600))
            .with_clock(clock);
        Server {
            receiver,
            store,
            now,
        }
    }

    fn advance(&self, secs: u64) {
        *self.now.lock().unwrap() += Duration::from_secs(secs);
    }

    async fn send(&self, body: Value) -> Result<(Option<String>, Option<String>), Error> {
        let data = self
            .receiver
            .chunk(&serde_json::to_vec(&body).unwrap(), "")
            .await?;
        assert!(data.ok.0);
        Ok((data.upload_id, data.attachment_id))
    }
}

/// A chunk request body for `file` (declared size `size`), bytes `range`.
fn chunk(
    action: &str,
    id: Option<&str>,
    n: u64,
    file: &[u8],
    range: std::ops::Range<usize>,
) -> Value {
    let mut att = json!({
        "action": action,
        "chunk": {"chunk_number": n.to_string(), "chunk_size": range.len().to_string(),
                  "chunk_content": b64(&file[range])},
        "file_type": "image/jpeg", "file_size": file.len(), "file_name": "test.jpg",
    });
    if let Some(id) = id {
        att["upload_id"] = json!(id);
    }
    json!({"attachment": att})
}

/// A JPEG of a little under 3 MiB: three chunks of at most 1 MiB.
fn jpeg_3mb() -> Vec<u8> {
    let file = common::structural_jpeg(3 * MB - 20_000);
    assert!(
        file.len() > 2 * MB + 1 && file.len() <= 3 * MB,
        "{}",
        file.len()
    );
    file
}

async fn started(server: &Server, file: &[u8]) -> String {
    let (id, att) = server
        .send(chunk("start", None, 0, file, 0..MB))
        .await
        .unwrap();
    assert_eq!(att, None);
    id.unwrap()
}

#[tokio::test]
async fn the_happy_path_with_an_idempotent_retry_of_each_step() {
    let server = Server::new(Policy::connectivity());
    let file = jpeg_3mb();
    let id = started(&server, &file).await;
    assert!(id.parse::<RandomId>().is_ok(), "{id}");
    let resume = chunk("resume", Some(&id), 1, &file, MB..2 * MB);
    assert_eq!(server.send(resume.clone()).await.unwrap(), (None, None));
    // The same chunk again (a lost response): answered as before, nothing stored twice.
    assert_eq!(server.send(resume).await.unwrap(), (None, None));
    let finish = chunk("finish", Some(&id), 2, &file, 2 * MB..file.len());
    let (_, att) = server.send(finish.clone()).await.unwrap();
    let att = att.unwrap();
    assert_eq!(
        server.send(finish).await.unwrap(),
        (None, Some(att.clone()))
    );
    assert_eq!(
        server
            .store
            .read_range(&att, 0..file.len() as u64)
            .await
            .unwrap(),
        &file[..]
    );
    assert_eq!(server.store.upload_count(), 0);
    // Anything else after the commit.
    let late = server
        .send(chunk("resume", Some(&id), 3, &file, 0..10))
        .await
        .unwrap_err();
    assert_eq!(
        late.to_string(),
        format!(
            "upload {id} is already finished as attachment {att}; start a new upload for another file"
        )
    );
    assert_eq!(late.status(), 409);
}

/// Starts an upload, sends `bad`, and checks the message, that the upload is dead and that
/// its bytes were released.
async fn fails_with(bad: impl FnOnce(&str, &[u8]) -> Value, message: &str) {
    let server = Server::new(Policy::connectivity());
    let file = jpeg_3mb();
    let id = started(&server, &file).await;
    assert_eq!(server.store.upload_count(), 1);
    let err = server.send(bad(&id, &file)).await.unwrap_err();
    assert_eq!(err.wire_message(), message, "{err:?}");
    assert_eq!(
        server.store.upload_count(),
        0,
        "the failed upload's bytes are released"
    );
    // Any later call, even a correct one, says the upload failed.
    let again = server
        .send(chunk("resume", Some(&id), 1, &file, MB..2 * MB))
        .await
        .unwrap_err();
    assert_eq!(
        again.wire_message(),
        format!(
            "upload {id} failed earlier ({message}); start again with action start and chunk 0"
        )
    );
    assert_eq!(server.store.attachment_count(), 0);
}

#[tokio::test]
async fn a_skipped_number_fails_the_upload() {
    fails_with(
        |id, f| chunk("resume", Some(id), 2, f, MB..2 * MB),
        "chunk rejected: expected chunk_number 1 next but got 2; send the chunks in order, each number once",
    )
    .await;
}

#[tokio::test]
async fn a_used_number_with_other_bytes_fails_the_upload() {
    fails_with(
        |id, f| chunk("resume", Some(id), 0, f, MB..2 * MB),
        "chunk rejected: chunk_number 0 was already accepted with other content; the next chunk is 1",
    )
    .await;
}

#[tokio::test]
async fn a_wrong_chunk_size_is_the_seeds_size_mismatch() {
    fails_with(
        |id, f| {
            let mut body = chunk("resume", Some(id), 1, f, MB..2 * MB);
            body["attachment"]["chunk"]["chunk_size"] = json!(1_048_570);
            body
        },
        "Request failed with code: 400, message: Content length is 1048576 but metadata size is 1048570",
    )
    .await;
}

#[tokio::test]
async fn a_chunk_over_the_limit_fails_before_decoding() {
    fails_with(
        |id, f| chunk("resume", Some(id), 1, f, MB..2 * MB + 1),
        "Chunk size exceeds the 1MB limit",
    )
    .await;
}

#[tokio::test]
async fn a_changed_file_description_fails_the_upload() {
    fails_with(
        |id, f| {
            let mut body = chunk("resume", Some(id), 1, f, MB..2 * MB);
            body["attachment"]["file_size"] = json!(5_000_000);
            body
        },
        &format!("chunk rejected: file_size is 5000000 but was {} at start; every chunk must describe the same file", jpeg_3mb().len()),
    )
    .await;
}

#[tokio::test]
async fn finish_must_complete_the_file_and_resume_must_not() {
    fails_with(
        |id, f| chunk("finish", Some(id), 1, f, MB..2 * MB),
        &format!(
            "Request failed with code: 400, message: Content length is {} but metadata size is {}",
            2 * MB,
            jpeg_3mb().len()
        ),
    )
    .await;
    // A file of exactly two chunks: the second sent as resume.
    let server = Server::new(Policy::connectivity());
    let file = common::structural_jpeg(2 * MB - 20_000);
    assert!(
        file.len() > MB + 1 && file.len() <= 2 * MB,
        "{}",
        file.len()
    );
    let file = &file[..];
    let (id, _) = server
        .send(chunk("start", None, 0, file, 0..MB))
        .await
        .unwrap();
    let err = server
        .send(chunk("resume", id.as_deref(), 1, file, MB..file.len()))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "chunk rejected: chunk 1 brings the total to the file_size of {} bytes; send the last chunk with action finish",
            file.len()
        )
    );
}

#[tokio::test]
async fn malformed_base64_names_the_offset() {
    fails_with(
        |id, f| {
            let mut body = chunk("resume", Some(id), 1, f, MB..2 * MB);
            let text = body["attachment"]["chunk"]["chunk_content"].as_str().unwrap().replacen('/', "_", 1);
            body["attachment"]["chunk"]["chunk_content"] = json!(text);
            body
        },
        // The offset depends on where the first '/' falls in this file's base64.
        &{
            let f = jpeg_3mb();
            let at = b64(&f[MB..2 * MB]).find('/').unwrap();
            format!("invalid base64 at byte offset {at}: '_' is from the URL-safe alphabet; encode with the standard alphabet (+ and /)")
        },
    )
    .await;
}

#[tokio::test]
async fn content_of_another_type_is_refused_at_start_and_nothing_is_kept() {
    let server = Server::new(Policy::connectivity());
    let file = common::structural_png(3 * MB);
    let err = server
        .send(chunk("start", None, 0, &file, 0..MB))
        .await
        .unwrap_err();
    assert_eq!(
        err.wire_message(),
        "the content is image/png but the declared file type is image/jpeg; declare the real type or send the intended file"
    );
    assert_eq!(
        (server.store.upload_count(), server.store.attachment_count()),
        (0, 0)
    );
}

#[tokio::test]
async fn a_truncated_image_is_refused_at_finish_and_nothing_is_committed() {
    let server = Server::new(Policy::connectivity());
    let mut file = jpeg_3mb();
    let n = file.len();
    file[n - 2..].copy_from_slice(&[0x12, 0x34]); // no EOI
    let id = started(&server, &file).await;
    server
        .send(chunk("resume", Some(&id), 1, &file, MB..2 * MB))
        .await
        .unwrap();
    let err = server
        .send(chunk("finish", Some(&id), 2, &file, 2 * MB..n))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidContent { .. }), "{err}");
    assert_eq!(
        (server.store.upload_count(), server.store.attachment_count()),
        (0, 0)
    );
}

#[tokio::test]
async fn start_checks_the_declaration() {
    let server = Server::new(Policy::connectivity());
    let file = jpeg_3mb();
    let mut body = chunk("start", None, 1, &file, 0..MB);
    assert_eq!(
        server.send(body.clone()).await.unwrap_err().to_string(),
        "chunk rejected: action start must carry chunk_number 0, not 1; use resume for later chunks"
    );
    body["attachment"]["chunk"]["chunk_number"] = json!(0);
    body["attachment"]["file_size"] = json!(1_048_576);
    assert_eq!(
        server.send(body.clone()).await.unwrap_err().to_string(),
        "file size 1048576 bytes is too small for a chunked upload, which takes files of 1048577 bytes and more; send it in one request instead"
    );
    body["attachment"]["file_size"] = json!(10_485_761);
    assert_eq!(
        server.send(body.clone()).await.unwrap_err().wire_message(),
        "File size exceeds the 10MB limit"
    );
    body["attachment"]["file_size"] = json!(file.len());
    body["attachment"]["file_type"] = json!("image/gif");
    let err = server.send(body.clone()).await.unwrap_err();
    assert_eq!(
        (err.status(), err.to_string().as_str()),
        (
            415,
            "file type \"image/gif\" is not supported here; use one of: image/jpeg, image/png"
        )
    );
    body["attachment"]["action"] = json!("resume");
    assert_eq!(
        server.send(body).await.unwrap_err().to_string(),
        "chunk rejected: action resume needs the upload_id that the start response returned"
    );
    assert_eq!(server.store.upload_count(), 0);
}

#[tokio::test]
async fn unknown_and_expired_uploads_say_so() {
    let server = Server::new(Policy::connectivity());
    let file = jpeg_3mb();
    for unknown in ["70f676b0-0fc0-11eb-bd1d-af10278183bb", "not an id"] {
        let err = server
            .send(chunk("resume", Some(unknown), 1, &file, MB..2 * MB))
            .await
            .unwrap_err();
        assert_eq!(err.status(), 404);
        assert_eq!(
            err.to_string(),
            format!(
                "no upload {unknown:?} is in progress (it was never started here, or it ended and was cleared); start again with action start and chunk 0"
            )
        );
    }
    let id = started(&server, &file).await;
    server.advance(601);
    let err = server
        .send(chunk("resume", Some(&id), 1, &file, MB..2 * MB))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "upload {id} expired after 601 s without a chunk (the limit is 600 s) and its bytes were released; start again with action start and chunk 0"
        )
    );
    assert_eq!(server.store.upload_count(), 0, "expired bytes are released");
    // Two more TTLs later, the store sweep removes the record too.
    server.advance(1201);
    server.receiver.sweep().await.unwrap();
    let err = server
        .send(chunk("resume", Some(&id), 1, &file, MB..2 * MB))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UploadNotFound { .. }), "{err}");
}

#[tokio::test]
async fn expiry_releases_idle_uploads_without_a_request() {
    let server = Server::new(Policy::connectivity());
    let file = jpeg_3mb();
    started(&server, &file).await;
    server.advance(599);
    assert_eq!(server.receiver.sweep().await.unwrap(), 0);
    assert_eq!(server.store.upload_count(), 1);
    server.advance(2);
    assert_eq!(server.receiver.sweep().await.unwrap(), 1);
    assert_eq!(server.store.upload_count(), 0);
}

/// 1 MiB pieces of a text file, 400 s apart by the test's clock (the session TTL is
/// 600 s), with the receiver's sweep run before each: six pieces, 2,000 s
/// in all, well past the two TTLs after which the sweep removes an idle upload.
#[tokio::test]
async fn a_streamed_upload_stays_active_while_its_chunks_arrive() {
    let server = Server::new(Policy::chat());
    let piece = bytes::Bytes::from(vec![b'a'; MB]);
    let server_ref = &server;
    let pieces = futures::stream::iter(0..6).then(|i| {
        let piece = piece.clone();
        async move {
            if i > 0 {
                server_ref.advance(400);
                server_ref.receiver.sweep().await.unwrap();
                assert_eq!(server_ref.store.upload_count(), 1, "still in progress");
            }
            Ok::<_, Error>(piece)
        }
    });
    let staged = server
        .receiver
        .receive_stream("notes.txt", "text/plain", pieces)
        .await
        .expect("a streamed upload whose chunks keep arriving is not swept");
    let meta = server
        .receiver
        .commit_staged(staged, "owner", |_| {})
        .await
        .unwrap();
    assert_eq!(meta.file_size, 6 * MB as u64);
    assert_eq!(
        server
            .store
            .read_range(&meta.id, 0..6 * MB as u64)
            .await
            .unwrap(),
        vec![b'a'; 6 * MB]
    );
    // Once the chunks stop, the upload is idle like any other.
    let staged = server
        .receiver
        .receive_stream(
            "notes.txt",
            "text/plain",
            futures::stream::iter([Ok::<_, Error>(piece)]),
        )
        .await
        .unwrap();
    server.advance(601);
    server.receiver.sweep().await.unwrap();
    assert_eq!(
        server.store.upload_count(),
        0,
        "an idle streamed upload is released"
    );
    assert!(
        server
            .receiver
            .commit_staged(staged, "owner", |_| {})
            .await
            .is_err()
    );
}

/// The same on a file-system store, by the system clock: 1 MiB pieces 250 ms apart for
/// 2.25 s, with a session TTL of 800 ms.
#[tokio::test]
async fn a_slow_streamed_upload_to_an_fs_store_is_not_swept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(attachments::store::FsStore::open(dir.path()).unwrap());
    let receiver =
        UploadReceiver::new(Policy::chat(), store.clone()).with_ttl(Duration::from_millis(800));
    let piece = bytes::Bytes::from(vec![b'z'; MB]);
    let receiver_ref = &receiver;
    let pieces = futures::stream::iter(0..10).then(|i| {
        let piece = piece.clone();
        async move {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(250)).await;
                assert_eq!(receiver_ref.sweep().await.unwrap(), 0);
            }
            Ok::<_, Error>(piece)
        }
    });
    let staged = receiver
        .receive_stream("notes.txt", "text/plain", pieces)
        .await
        .expect("a streamed upload whose chunks keep arriving is not swept");
    let meta = receiver
        .commit_staged(staged, "owner", |_| {})
        .await
        .unwrap();
    assert_eq!(
        store.read_range(&meta.id, 0..10 * MB as u64).await.unwrap(),
        vec![b'z'; 10 * MB]
    );
}

#[test]
fn a_second_chunk_while_one_is_processed_is_busy() {
    let policy = Policy::connectivity();
    let file = jpeg_3mb();
    let now = SystemTime::UNIX_EPOCH;
    let body = serde_json::to_vec(&chunk("start", None, 0, &file, 0..MB)).unwrap();
    let req: ChunkRequest<'_> = wire::from_slice(&body).unwrap();
    let id = RandomId::from_bytes([9; 16]);
    let (session, received) = UploadSession::start(&policy, id, &req.attachment, now).unwrap();
    assert!(matches!(
        received,
        Received::Chunk {
            number: 0,
            offset: 0,
            ..
        }
    ));
    let mut sessions = Sessions::new(Duration::from_secs(60));
    sessions.insert(session);
    let out = sessions.check_out(&id.to_string(), 1, now).unwrap();
    let err = sessions.check_out(&id.to_string(), 2, now).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "upload {id} is still processing an earlier chunk; wait for its answer before sending chunk 2"
        )
    );
    sessions.check_in(out);
    assert!(sessions.check_out(&id.to_string(), 1, now).is_ok());
    // A request that never came back: the session expires and its bytes are to be released.
    assert_eq!(sessions.expire(now + Duration::from_secs(61)), [id]);
}

#[tokio::test]
async fn an_abandoned_request_fails_the_upload_instead_of_losing_a_chunk() {
    use std::future::Future;
    let server = Server::new(Policy::connectivity());
    let file = jpeg_3mb();
    let id = started(&server, &file).await;
    let body = serde_json::to_vec(&chunk("resume", Some(&id), 1, &file, MB..2 * MB)).unwrap();
    {
        // Poll the request once and drop it, as a server does when the client disconnects.
        let fut = std::pin::pin!(server.receiver.chunk(&body, ""));
        let waker = futures::task::noop_waker();
        let _ = fut.poll(&mut std::task::Context::from_waker(&waker));
    }
    // Whether or not the chunk was stored, a retry must not be told "accepted as before".
    match server.receiver.chunk(&body, "").await {
        Err(Error::UploadFailed { .. }) => {}
        Ok(_) => {
            // The chunk was fully stored before the drop; then the upload goes on normally.
            let (_, att) = server
                .send(chunk("finish", Some(&id), 2, &file, 2 * MB..file.len()))
                .await
                .unwrap();
            let att = att.unwrap();
            assert_eq!(
                server
                    .store
                    .read_range(&att, 0..file.len() as u64)
                    .await
                    .unwrap(),
                &file[..]
            );
        }
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn single_uploads_store_one_attachment() {
    let server = Server::new(Policy::connectivity());
    let file = common::structural_jpeg(30_220);
    let body = json!({"attachment": {"file_name": "food.jpeg", "file_content": b64(&file), "file_type": "image/jpeg", "file_size": file.len()}});
    let att = server
        .receiver
        .single(&serde_json::to_vec(&body).unwrap(), "p/c")
        .await
        .unwrap();
    let meta = server.store.metadata(&att).await.unwrap();
    assert_eq!(
        (meta.file_size, meta.sha256, meta.scope.as_str()),
        (file.len() as u64, sha256(&file), "p/c")
    );
    let big = json!({"attachment": {"file_name": "a.jpeg", "file_content": b64(&common::structural_jpeg(MB + 1)), "file_type": "image/jpeg", "file_size": MB + 1}});
    let err = server
        .receiver
        .single(&serde_json::to_vec(&big).unwrap(), "")
        .await
        .unwrap_err();
    assert_eq!(err.wire_message(), "File size exceeds the 1MB limit");
}

/// The base64 payload is read as raw bytes and checked by the decoder alone: JSON escapes
/// are resolved first, and bytes JSON forbids in strings (control characters, invalid
/// UTF-8) are reported by the decoder with their offset in the payload.
#[tokio::test]
async fn single_upload_content_is_checked_once_by_the_decoder() {
    let server = Server::new(Policy::connectivity());
    let file = common::structural_jpeg(30_220);
    let text = b64(&file);
    assert!(
        text.contains('/'),
        "the file's base64 needs a '/' to escape"
    );
    let body = |content: &[u8]| {
        let mut body = format!(
            r#"{{"attachment": {{"file_name": "food.jpeg", "file_type": "image/jpeg", "file_size": {}, "file_content": ""#,
            file.len()
        )
        .into_bytes();
        body.extend_from_slice(content);
        body.extend_from_slice(br#""}}"#);
        body
    };
    // `\/` (PHP's json_encode writes it) is resolved; the upload goes through.
    let escaped = text.replace('/', "\\/");
    let att = server
        .receiver
        .single(&body(escaped.as_bytes()), "")
        .await
        .unwrap();
    assert_eq!(
        server.store.metadata(&att).await.unwrap().sha256,
        sha256(&file)
    );
    // A raw line break (invalid in a JSON string) at payload offset 76.
    let mut wrapped = text.clone().into_bytes();
    wrapped.insert(76, b'\n');
    let err = server
        .receiver
        .single(&body(&wrapped), "")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid base64 at byte offset 76: whitespace ('\\n') is not allowed; send the base64 text without line breaks or spaces"
    );
    // A byte that is not UTF-8.
    let mut binary = text.clone().into_bytes();
    binary[100] = 0xff;
    let err = server
        .receiver
        .single(&body(&binary), "")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid base64 at byte offset 100: byte 0xff is not in the standard base64 alphabet"
    );
    // Anything but a string is a JSON error naming the field's expected form.
    let err = server
        .receiver
        .single(br#"{"attachment": {"file_name": "a.jpeg", "file_type": "image/jpeg", "file_size": 3, "file_content": [1, 2, 3]}}"#, "")
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "invalid JSON body: attachment.file_content: invalid type: sequence, expected base64 \
             text as a JSON string"
        ),
        "{err}"
    );
    assert_eq!(server.store.attachment_count(), 1);
}

proptest! {
    /// Time-ordered ids keep their millisecond, parse back from their text, and sort by
    /// time as ids and as text whatever their random bits.
    #[test]
    fn time_ordered_ids_sort_by_their_millisecond(
        a in 0u64..(1 << 48),
        b in 0u64..(1 << 48),
        ra in any::<[u8; 16]>(),
        rb in any::<[u8; 16]>(),
    ) {
        let (x, y) = (RandomId::time_ordered(a, ra), RandomId::time_ordered(b, rb));
        prop_assert_eq!(x.unix_millis(), Some(a));
        prop_assert_eq!(x.to_string().parse::<RandomId>(), Ok(x));
        if a < b {
            prop_assert!(x < y);
            prop_assert!(x.to_string() < y.to_string());
        }
    }
}
