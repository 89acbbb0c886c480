//! Virus scanning against a real `clamd` (Debian's clamav-daemon, started with test
//! signatures by `scripts/clamd-test-server.sh start`; `bash .ci/test` starts it): the
//! client reads every verdict; every flavour over HTTP refuses an infected file with 422
//! "The file failed the virus scan" and never stores it; a signature cut across two chunks,
//! and across two server processes sharing one S3 bucket, is found; a scanner that is down
//! or slow gives 503 and nothing is committed, and the same request later succeeds; with
//! fail-open the file is committed. And the protocol's reply parser and framing, as
//! property tests (no clamd needed).
#![cfg(all(feature = "server", feature = "client", feature = "object-store"))]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use attachments::Error;
use attachments::client::ConnectivityClient;
use attachments::codec::base64::encode_to;
use attachments::scan::clamd::{self, Reply};
use attachments::scan::{ClamdScanner, ScanStream, Scanner, Verdict};
use attachments::server::{Sandbox, ServerConfig};
use attachments::store::{MemoryStore, Store};
use proptest::prelude::*;
use serde_json::{Value, json};

const NEEDS_CLAMD: &str = "needs clamd: scripts/clamd-test-server.sh start, then cargo test --all-features -- --include-ignored (bash .ci/test does both)";
const PROPERTY: u64 = 2098153;
const CONV: &str = "scan-conversation";
const FAILED: &str = "The file failed the virus scan";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: {NEEDS_CLAMD} (eval \"$(scripts/clamd-test-server.sh env)\")")
    })
}

fn scanner() -> ClamdScanner {
    ClamdScanner::parse(&env("ATTACHMENTS_CLAMD"))
        .unwrap()
        .with_stream_max(env("ATTACHMENTS_CLAMD_STREAM_MAX").parse().unwrap())
}

fn marker() -> Vec<u8> {
    env("ATTACHMENTS_CLAMD_MARKER").into_bytes()
}

/// The file the database's hash signature names.
fn hash_file() -> Vec<u8> {
    let line = format!("{}\n", env("ATTACHMENTS_CLAMD_HASH_LINE"));
    line.repeat(env("ATTACHMENTS_CLAMD_HASH_COUNT").parse().unwrap())
        .into_bytes()
}

/// A structurally valid JPEG of `len` bytes with the test signature written at `at` in
/// its entropy-coded data (ASCII: no 0xFF, so the JPEG stays valid).
fn infected_jpeg(len: usize, at: usize) -> Vec<u8> {
    let mut file = common::exact_jpeg(len);
    let marker = marker();
    file[at..at + marker.len()].copy_from_slice(&marker);
    file
}

fn b64(data: &[u8]) -> String {
    let mut out = Vec::new();
    encode_to(data, &mut out);
    String::from_utf8(out).unwrap()
}

async fn start(store: Arc<dyn Store>, scanner: Arc<dyn Scanner>, fail_open: bool) -> String {
    let config = ServerConfig::default().with_scanner(scanner, fail_open);
    common::serve_local(Sandbox::new(store, config).router()).await
}

async fn post(url: &str, path: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let answer = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let headers = answer.headers().clone();
    let json = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    (status, headers, json)
}

fn conn(path: &str) -> String {
    format!("/messaging/properties/{PROPERTY}/conversations/{CONV}{path}")
}

fn single(name: &str, file: &[u8]) -> Value {
    json!({"attachment": {"file_name": name, "file_type": "image/jpeg",
        "file_size": file.len(), "file_content": b64(file)}})
}

/// A chunk request of `file`: number `n` with `range`, `start` or `finish` as given.
fn chunk(
    file: &[u8],
    n: u64,
    range: std::ops::Range<usize>,
    action: &str,
    upload_id: Option<&str>,
) -> Value {
    let mut attachment = json!({"action": action, "file_name": "big.jpg", "file_type": "image/jpeg",
        "file_size": file.len(),
        "chunk": {"chunk_number": n, "chunk_size": range.len(), "chunk_content": b64(&file[range])}});
    if let Some(id) = upload_id {
        attachment["upload_id"] = json!(id);
    }
    json!({ "attachment": attachment })
}

/// A scanner that can be switched off: while down it is the real client aimed at a port
/// where nothing listens.
#[derive(Debug)]
struct Switch {
    up: ClamdScanner,
    down: ClamdScanner,
    is_down: AtomicBool,
}

impl Switch {
    fn new() -> Arc<Self> {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        Arc::new(Switch {
            up: scanner(),
            down: ClamdScanner::parse(&format!("clamd://127.0.0.1:{port}")).unwrap(),
            is_down: AtomicBool::new(false),
        })
    }
}

#[async_trait]
impl Scanner for Switch {
    async fn open(&self, size: u64) -> attachments::Result<Box<dyn ScanStream>> {
        if self.is_down.load(Ordering::SeqCst) {
            self.down.open(size).await
        } else {
            self.up.open(size).await
        }
    }
}

/// A clamd that accepts connections, then neither reads nor answers; its address.
async fn silent_clamd() -> std::net::SocketAddr {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    addr
}

/// Every verdict through the real clamd, over TCP and the Unix socket: clean, a body
/// signature (also cut across two feeds), a hash signature; a file over the stream cap is
/// refused before it is sent; a closed port, a server that dies mid-stream and a silent
/// server are unavailable, the silent one within the timeout.
#[tokio::test]
#[ignore = "needs clamd: scripts/clamd-test-server.sh start, then cargo test --all-features -- --include-ignored (bash .ci/test does both)"]
async fn the_clamd_client_reads_every_verdict() {
    let unix =
        ClamdScanner::parse(&format!("clamd:unix:{}", env("ATTACHMENTS_CLAMD_SOCKET"))).unwrap();
    for scanner in [scanner(), unix] {
        scanner.ping().await.unwrap();
        assert!(scanner.version().await.unwrap().starts_with("ClamAV "));
        let scan = |pieces: Vec<Vec<u8>>| {
            let scanner = scanner.clone();
            async move {
                let size = pieces.iter().map(|p| p.len() as u64).sum();
                let mut stream = scanner.open(size).await?;
                for piece in &pieces {
                    stream.feed(piece).await?;
                }
                stream.verdict().await
            }
        };
        assert_eq!(
            scan(vec![common::exact_jpeg(5_000)]).await.unwrap(),
            Verdict::Clean
        );
        let infected = infected_jpeg(5_000, 1_000);
        let found = scan(vec![infected.clone()]).await.unwrap();
        assert!(
            matches!(&found, Verdict::Infected { signature } if signature.starts_with("Attachments.Test.Marker")),
            "{found:?}"
        );
        let cut = 1_010;
        let split = scan(vec![infected[..cut].to_vec(), infected[cut..].to_vec()])
            .await
            .unwrap();
        assert_eq!(split, found, "a signature cut across two feeds");
        let hashed = scan(vec![hash_file()]).await.unwrap();
        assert!(
            matches!(&hashed, Verdict::Infected { signature } if signature.starts_with("Attachments.Test.Hash")),
            "{hashed:?}"
        );
    }
    let small = scanner().with_stream_max(1_000);
    match small.open(1_001).await {
        Err(Error::ScanTooLarge {
            size: 1_001,
            limit: 1_000,
        }) => {}
        other => panic!("{:?}", other.map(|_| ())),
    }
    let mut stream = small.open(10).await.unwrap();
    assert!(matches!(
        stream.feed(&[0u8; 1_001]).await,
        Err(Error::ScanTooLarge { .. })
    ));

    let closed = Switch::new().down.clone();
    assert!(matches!(
        closed.ping().await,
        Err(Error::ScanUnavailable { .. })
    ));

    // A clamd that dies mid-stream: reads a little, then closes the connection.
    let dying = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = dying.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        while let Ok((mut socket, _)) = dying.accept().await {
            let mut first = [0u8; 1_000];
            let _ = socket.read_exact(&mut first).await;
        }
    });
    let dies = ClamdScanner::parse(&format!("clamd://{addr}")).unwrap();
    let data = vec![7u8; 8 << 20];
    let scanned = async {
        let mut stream = dies.open(data.len() as u64).await?;
        stream.feed(&data).await?;
        stream.verdict().await
    };
    let err = scanned.await.unwrap_err();
    assert!(matches!(err, Error::ScanUnavailable { .. }), "{err}");

    // A server that accepts and never answers.
    let addr = silent_clamd().await;
    // And one that reads the stream, then trickles a reply that never ends, a byte every
    // 100 ms: the scan's deadline holds for the whole reply, not for each byte.
    let trickle = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trickle_addr = trickle.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = trickle.accept().await {
            tokio::spawn(async move {
                let mut sink = [0u8; 4096];
                let mut seen = Vec::new();
                while !seen.ends_with(&[0, 0, 0, 0]) {
                    match socket.read(&mut sink).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&sink[..n]),
                    }
                }
                while socket.write_all(b"s").await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
    });
    let trickling = ClamdScanner::parse(&format!("clamd://{trickle_addr}"))
        .unwrap()
        .with_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let mut stream = trickling.open(3).await.unwrap();
    stream.feed(b"abc").await.unwrap();
    let err = stream.verdict().await.unwrap_err();
    assert!(matches!(err, Error::ScanUnavailable { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let slow = ClamdScanner::parse(&format!("clamd://{addr}"))
        .unwrap()
        .with_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let mut stream = slow.open(3).await.unwrap();
    stream.feed(b"abc").await.unwrap();
    let err = stream.verdict().await.unwrap_err();
    assert!(matches!(err, Error::ScanUnavailable { .. }), "{err}");
    assert!(err.to_string().contains("not done within 0.3 s"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// Every flavour over HTTP: a clean file is stored; an infected one is a 422 with the one
/// documented text in the flavour's error shape, and nothing of it is kept or listed.
#[tokio::test]
#[ignore = "needs clamd: scripts/clamd-test-server.sh start, then cargo test --all-features -- --include-ignored (bash .ci/test does both)"]
async fn every_flavour_refuses_an_infected_file_and_keeps_nothing_of_it() {
    let store = Arc::new(MemoryStore::new());
    let url = start(store.clone(), Arc::new(scanner()), false).await;

    // Connectivity, one request.
    let (status, _, answer) = post(
        &url,
        &conn("/attachments"),
        &single("ok.jpg", &common::exact_jpeg(4_000)),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, _, answer) = post(
        &url,
        &conn("/attachments"),
        &single("bad.jpg", &infected_jpeg(4_000, 500)),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["errors"][0]["message"], FAILED, "{answer}");
    assert!(
        !answer.to_string().contains("Attachments.Test"),
        "the signature leaked: {answer}"
    );

    // Demand.
    let body = json!({"accommodation": PROPERTY, "conversation": CONV, "reservation": "r1",
        "file_name": "bad.jpg", "file_type": "image/jpeg", "file_size": 4_000,
        "file_content": b64(&infected_jpeg(4_000, 3_000))});
    let (status, _, answer) = post(&url, "/3.1/messages/attachments/upload", &body).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(
        answer["errors"][0]["message"]["message"], FAILED,
        "{answer}"
    );
    assert!(
        !answer.to_string().contains("Attachments.Test"),
        "the signature leaked: {answer}"
    );

    // Chat: the hash signature's file, streamed.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(hash_file())
            .file_name("notes.txt")
            .mime_str("text/plain")
            .unwrap(),
    );
    let chat = reqwest::Client::new()
        .post(format!("{url}/v1/attachments"))
        .bearer_auth("chat-token")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status().as_u16(), 422);
    let answer: Value = serde_json::from_slice(&chat.bytes().await.unwrap()).unwrap();
    assert_eq!(answer["error"]["message"], FAILED, "{answer}");
    assert!(
        !answer.to_string().contains("Attachments.Test"),
        "the signature leaked: {answer}"
    );
    let listed = reqwest::Client::new()
        .get(format!("{url}/v1/attachments"))
        .bearer_auth("chat-token")
        .send()
        .await
        .unwrap();
    let listed: Value = serde_json::from_slice(&listed.bytes().await.unwrap()).unwrap();
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(0), "{listed}");

    // Connectivity, chunked by the client: the signature across the first chunk boundary.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.jpg");
    let boundary = attachments::upload::DEFAULT_CHUNK_SIZE as usize;
    std::fs::write(&path, infected_jpeg(1_500_000, boundary - 10)).unwrap();
    let client = ConnectivityClient::new(&url).unwrap();
    let err = client
        .upload_file(PROPERTY, CONV, &path, |_, _| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains(FAILED), "{err}");
    assert!(
        !err.to_string().contains("Attachments.Test"),
        "the signature leaked: {err}"
    );
    std::fs::write(&path, common::exact_jpeg(1_500_000)).unwrap();
    client
        .upload_file(PROPERTY, CONV, &path, |_, _| {})
        .await
        .unwrap();

    // Two clean files in all; no upload left staged.
    assert_eq!(store.attachment_count(), 2);
    assert_eq!(store.upload_count(), 0);

    // A file larger than the scanner takes: a chunked upload is refused at its start.
    let capped = start(
        store.clone(),
        Arc::new(scanner().with_stream_max(1 << 20)),
        false,
    )
    .await;
    let file = common::exact_jpeg(1_200_000);
    let (status, _, answer) = post(
        &capped,
        &conn("/attachment_chunks"),
        &chunk(&file, 0, 0..1_000_000, "start", None),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    let text = answer["errors"][0]["message"].as_str().unwrap();
    assert!(
        text.contains("1200000 bytes") && text.contains("1048576"),
        "{text}"
    );
    assert_eq!(store.upload_count(), 0);
}

/// Two server processes on one S3 bucket prefix: chunk 0 to one, the `finish` to the
/// other, the signature cut between them; the scan reads the file whole from the bucket
/// and finds it. The same file without the signature is committed.
#[tokio::test]
#[ignore = "needs clamd and the S3 test server: scripts/clamd-test-server.sh start and scripts/s3-test-server.sh start (bash .ci/test does both)"]
async fn a_signature_across_chunks_on_two_processes_sharing_a_bucket_is_found() {
    let s3 = common::s3::s3();
    let prefix = format!("scan-{}", std::process::id());
    let (a, b) = (
        start(Arc::new(s3.store_at(&prefix)), Arc::new(scanner()), false).await,
        start(Arc::new(s3.store_at(&prefix)), Arc::new(scanner()), false).await,
    );
    let first = 1_000_000;
    for (infected, want) in [(true, 422), (false, 200)] {
        let file = if infected {
            infected_jpeg(1_200_000, first - 15)
        } else {
            common::exact_jpeg(1_200_000)
        };
        let (status, _, started) = post(
            &a,
            &conn("/attachment_chunks"),
            &chunk(&file, 0, 0..first, "start", None),
        )
        .await;
        assert_eq!(status, 200, "{started}");
        let id = started["data"]["upload_id"].as_str().unwrap().to_owned();
        let finish = chunk(&file, 1, first..file.len(), "finish", Some(&id));
        let (status, _, answer) = post(&b, &conn("/attachment_chunks"), &finish).await;
        assert_eq!(status, want, "infected {infected}: {answer}");
        if infected {
            assert_eq!(answer["errors"][0]["message"], FAILED);
        } else {
            let att = answer["data"]["attachment_id"].as_str().unwrap();
            let info = reqwest::get(format!(
                "{a}{}",
                conn(&format!("/attachments/{att}/file_info"))
            ))
            .await
            .unwrap();
            assert_eq!(info.status().as_u16(), 200);
        }
    }
}

/// The scanner down: a single upload and a chunked `finish` are 503 with `Retry-After`,
/// nothing is committed; once it is back, the same requests succeed. A slow scanner hits
/// its timeout (503 in about the timeout). With fail-open, the file is committed
/// unscanned.
#[tokio::test]
#[ignore = "needs clamd: scripts/clamd-test-server.sh start, then cargo test --all-features -- --include-ignored (bash .ci/test does both)"]
async fn a_scanner_down_or_slow_refuses_for_now_and_a_later_retry_succeeds() {
    let store = Arc::new(MemoryStore::new());
    let switch = Switch::new();
    let url = start(store.clone(), switch.clone(), false).await;
    let file = common::exact_jpeg(1_200_000);
    let first = 1_000_000;
    let (_, _, started) = post(
        &url,
        &conn("/attachment_chunks"),
        &chunk(&file, 0, 0..first, "start", None),
    )
    .await;
    let id = started["data"]["upload_id"].as_str().unwrap().to_owned();
    let finish = chunk(&file, 1, first..file.len(), "finish", Some(&id));
    let small = single("ok.jpg", &common::exact_jpeg(4_000));

    switch.is_down.store(true, Ordering::SeqCst);
    for (path, body) in [
        (conn("/attachment_chunks"), &finish),
        (conn("/attachments"), &small),
    ] {
        let (status, headers, answer) = post(&url, &path, body).await;
        assert_eq!(status, 503, "{path}: {answer}");
        assert_eq!(headers["retry-after"], "30");
        assert!(
            answer.to_string().contains("virus scanner is unavailable"),
            "{answer}"
        );
        assert!(
            !answer.to_string().contains("127.0.0.1"),
            "the scanner's address leaked: {answer}"
        );
    }
    assert_eq!(store.attachment_count(), 0);

    switch.is_down.store(false, Ordering::SeqCst);
    for (path, body) in [
        (conn("/attachment_chunks"), &finish),
        (conn("/attachments"), &small),
    ] {
        let (status, _, answer) = post(&url, &path, body).await;
        assert_eq!(status, 200, "{path} after the scanner came back: {answer}");
    }
    assert_eq!(store.attachment_count(), 2);

    // Slow: accepts, then neither reads nor answers.
    let addr = silent_clamd().await;
    let slow = ClamdScanner::parse(&format!("clamd://{addr}"))
        .unwrap()
        .with_timeout(Duration::from_millis(500));
    let slow_url = start(store.clone(), Arc::new(slow), false).await;
    let started = Instant::now();
    let (status, _, answer) = post(&slow_url, &conn("/attachments"), &small).await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // Fail-open: committed unscanned.
    let open_url = start(store.clone(), Arc::new(switch.down.clone()), true).await;
    let (status, _, answer) = post(&open_url, &conn("/attachments"), &small).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(store.attachment_count(), 3);
}

/// The command line: `serve --scan` refuses an infected upload with 422 and stores a
/// clean one; `inspect --scan` reports the signature and exits 1, and 0 for a clean file.
#[tokio::test]
#[ignore = "needs clamd: scripts/clamd-test-server.sh start, then cargo test --all-features -- --include-ignored (bash .ci/test does both)"]
async fn serve_and_inspect_scan_with_clamd() {
    let clamd = env("ATTACHMENTS_CLAMD");
    let server = common::spawn_serve(&["--store", "memory", "--scan", &clamd], &[]);
    let (status, _, answer) = post(
        &server.url,
        &conn("/attachments"),
        &single("bad.jpg", &infected_jpeg(4_000, 700)),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["errors"][0]["message"], FAILED);
    let (status, _, answer) = post(
        &server.url,
        &conn("/attachments"),
        &single("ok.jpg", &common::exact_jpeg(4_000)),
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    let dir = tempfile::tempdir().unwrap();
    let (bad, good) = (dir.path().join("bad.jpg"), dir.path().join("good.jpg"));
    std::fs::write(&bad, infected_jpeg(4_000, 700)).unwrap();
    std::fs::write(&good, common::exact_jpeg(4_000)).unwrap();
    let inspect = |path: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_attachments"))
            .args(["inspect", "--scan", &clamd])
            .arg(path)
            .output()
            .unwrap()
    };
    let out = inspect(&bad);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("infected: Attachments.Test.Marker"), "{text}");
    let out = inspect(&good);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("scan clean"), "{text}");
}

proptest! {
    /// Any bytes: a reply or an error, never a panic; a reply names what it read.
    #[test]
    fn any_reply_is_read_or_refused(raw in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = clamd::parse_reply(&raw);
    }

    /// A signature name of printable characters reads back from `stream: <name> FOUND`.
    #[test]
    fn found_replies_name_their_signature(name in "[!-~][ -~]{0,60}[!-~]") {
        prop_assume!(!name.ends_with(" FOUND") && !name.ends_with(" ERROR") && name != "OK");
        let reply = format!("stream: {name} FOUND\0");
        prop_assert_eq!(clamd::parse_reply(reply.as_bytes()), Ok(Reply::Found(name)));
    }

    /// The frames of any data carry it whole, in order, each under its true length.
    #[test]
    fn frames_carry_the_data(len in 0usize..(3 * clamd::MAX_FRAME)) {
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let mut wire = Vec::new();
        for (header, piece) in clamd::frames(&data) {
            prop_assert_eq!(u32::from_be_bytes(header) as usize, piece.len());
            prop_assert!(!piece.is_empty() && piece.len() <= clamd::MAX_FRAME);
            wire.extend_from_slice(piece);
        }
        prop_assert_eq!(wire, data);
    }
}

/// A resumable upload (tus and the IETF draft) whose file carries the signature across
/// two appends is refused once its last byte is in: 422 in the protocol's shape, every
/// later request says why, and nothing of it is kept; the clean file is committed.
#[tokio::test]
#[ignore = "needs clamd: scripts/clamd-test-server.sh start, then cargo test --all-features -- --include-ignored (bash .ci/test does both)"]
async fn resumable_uploads_are_scanned_before_they_become_attachments() {
    let store = Arc::new(MemoryStore::new());
    let url = start(store.clone(), Arc::new(scanner()), false).await;
    let client = reqwest::Client::new();
    let marker_at = 1_048_576 - 10;
    for (file, infected) in [
        (infected_jpeg(1_500_000, marker_at), true),
        (common::exact_jpeg(1_500_000), false),
    ] {
        let created = client
            .post(format!("{url}/files"))
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", file.len().to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let at = created.headers()["location"].to_str().unwrap().to_owned();
        let mut last = None;
        for range in [0..1_048_580, 1_048_580..file.len()] {
            let response = client
                .patch(&at)
                .header("Tus-Resumable", "1.0.0")
                .header("Content-Type", "application/offset+octet-stream")
                .header("Upload-Offset", range.start.to_string())
                .body(file[range].to_vec())
                .send()
                .await
                .unwrap();
            last = Some((response.status().as_u16(), response.text().await.unwrap()));
        }
        let (status, text) = last.unwrap();
        let id = at.rsplit('/').next().unwrap();
        if infected {
            assert_eq!(status, 422, "{text}");
            assert!(text.contains(FAILED), "{text}");
            assert!(
                !text.contains("Attachments.Test"),
                "the signature leaked: {text}"
            );
            let head = client
                .head(&at)
                .header("Tus-Resumable", "1.0.0")
                .send()
                .await
                .unwrap();
            assert_eq!(head.status(), 422);
            assert!(store.metadata(id).await.is_err());
            assert!(store.read_staged(id, 0..1).await.is_err(), "bytes kept");
        } else {
            assert_eq!(status, 204, "{text}");
            assert_eq!(
                store.metadata(id).await.unwrap().file_size,
                file.len() as u64
            );
        }
    }
    // The IETF draft, the file in one request.
    let response = client
        .post(format!("{url}/uploads"))
        .header("Upload-Complete", "?1")
        .header("Content-Type", "image/jpeg")
        .body(infected_jpeg(3_000, 400))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
}
