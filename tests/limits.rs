//! Every id and name a request carries is capped at the edge, and the same oversized input
//! gets the same 4xx (and, in a chunked upload, the same failed upload) on every store:
//! memory, a directory, and the S3 store on the real test server. Before these caps a
//! 12,000-byte conversation id or a 64 KB `file_name` on `finish` wrote records the
//! directory store could not read back (a 500, and a listing broken for good).
//!
//! Each case runs as one test per store, `<case>::memory`, `<case>::fs` and `<case>::s3`;
//! the S3 ones are ignored unless asked for (`cargo test -- --include-ignored`, which
//! `.ci/test` passes).
#![cfg(all(feature = "server", feature = "object-store"))]

mod common;

use std::sync::Arc;

use attachments::server::{Sandbox, ServerConfig};
use attachments::store::{FsStore, MemoryStore, Store};
use base64::Engine;
use serde_json::{Value, json};

const MB: usize = 1 << 20;
const PROPERTY: u64 = 2098153;
const CONV: &str = "cc872746-77f2-5886-ba7c-17e0497241b5";

/// The stores every case runs on.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Memory,
    Fs,
    S3,
}

/// A sandbox on loopback over a fresh store.
struct Server {
    name: &'static str,
    url: String,
    store: Arc<dyn Store>,
    /// The fs store's directory, removed when this is dropped: bind it for as long as the
    /// server runs.
    _dir: Option<tempfile::TempDir>,
}

async fn server(backend: Backend) -> Server {
    let (name, store, dir): (_, Arc<dyn Store>, _) = match backend {
        Backend::Memory => ("memory", Arc::new(MemoryStore::new()), None),
        Backend::Fs => {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(FsStore::open(dir.path()).unwrap());
            ("fs", store, Some(dir))
        }
        Backend::S3 => ("s3", Arc::new(common::s3::s3().store("limits")), None),
    };
    let sandbox = Sandbox::new(store.clone(), ServerConfig::default());
    let url = common::serve_local(sandbox.router()).await;
    Server {
        name,
        url,
        store,
        _dir: dir,
    }
}

/// Each case (an `async fn` taking a [`Backend`]) as three tests: `<case>::memory`,
/// `<case>::fs`, and `<case>::s3`, ignored unless asked for.
macro_rules! on_every_store {
    ($($case:ident),* $(,)?) => {
        $(
            mod $case {
                use super::Backend;

                #[tokio::test]
                async fn memory() {
                    super::$case(Backend::Memory).await;
                }

                #[tokio::test]
                async fn fs() {
                    super::$case(Backend::Fs).await;
                }

                #[tokio::test]
                #[ignore = "needs the S3 test server: scripts/s3-test-server.sh start, then cargo test --all-features -- --include-ignored (bash .ci/test does both)"]
                async fn s3() {
                    super::$case(Backend::S3).await;
                }
            }
        )*
    };
}

on_every_store!(
    a_connectivity_conversation_id_over_255_bytes_is_a_400_on_every_store,
    demand_conversation_and_reservation_ids_are_capped_on_every_store,
    a_64_kb_name_or_type_on_finish_fails_the_upload_alike_on_every_store,
    a_declared_type_over_255_bytes_is_refused_at_start,
    an_upper_cased_id_gets_the_same_answer_on_every_store,
);

/// Ids are matched in their canonical form by every store: an upper-cased attachment id
/// finds the attachment (it was a 404 on the memory store and found on the others), and
/// an id that is not one is a 404 everywhere.
async fn an_upper_cased_id_gets_the_same_answer_on_every_store(backend: Backend) {
    let file = common::exact_jpeg(5_000);
    let Server {
        name, url, _dir, ..
    } = server(backend).await;
    let conv = format!("{url}/messaging/properties/{PROPERTY}/conversations/{CONV}");
    let body = json!({"attachment": {"file_name": "a.jpg", "file_type": "image/jpeg",
        "file_size": file.len(), "file_content": b64(&file)}});
    let (status, answer) = post(&format!("{conv}/attachments"), &body).await;
    assert_eq!(status, 200, "{name}: {answer}");
    let id = answer["data"]["attachment_id"].as_str().unwrap().to_owned();
    let get = |path: String| async move {
        let response = reqwest::get(path).await.unwrap();
        let status = response.status().as_u16();
        let value: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        (status, value)
    };
    for asked in [id.clone(), id.to_uppercase()] {
        let (status, answer) = get(format!("{conv}/attachments/{asked}/file_info")).await;
        assert_eq!(status, 200, "{name} {asked}: {answer}");
        assert_eq!(answer["data"]["file_size"], json!(file.len()), "{name}");
        let (status, answer) = get(format!("{conv}/attachments/{asked}?from=0&to=99")).await;
        assert_eq!(status, 200, "{name} {asked}: {answer}");
    }
    let (status, answer) = get(format!("{conv}/attachments/{}x/file_info", &id[..35])).await;
    assert_eq!(status, 404, "{name}: {answer}");
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

async fn post(url: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: {text}"));
    (status, value)
}

/// The first error message of a Connectivity envelope.
fn conn_message(body: &Value) -> &str {
    body["errors"][0]["message"].as_str().unwrap_or_default()
}

/// The first error message of a Demand error body.
fn demand_message(body: &Value) -> &str {
    body["errors"][0]["message"]["message"]
        .as_str()
        .unwrap_or_default()
}

fn chunk(
    action: &str,
    id: Option<&str>,
    n: u64,
    file: &[u8],
    range: std::ops::Range<usize>,
) -> Value {
    let mut att = json!({
        "action": action,
        "chunk": {"chunk_number": n, "chunk_size": range.len(), "chunk_content": b64(&file[range])},
        "file_type": "image/jpeg", "file_size": file.len(), "file_name": "photo.jpg",
    });
    if let Some(id) = id {
        att["upload_id"] = json!(id);
    }
    json!({ "attachment": att })
}

async fn a_connectivity_conversation_id_over_255_bytes_is_a_400_on_every_store(backend: Backend) {
    let file = common::exact_jpeg(5_000);
    let Server {
        name, url, _dir, ..
    } = server(backend).await;
    let long = "c".repeat(12_000);
    let body = json!({"attachment": {"file_name": "a.jpg", "file_type": "image/jpeg",
        "file_size": file.len(), "file_content": b64(&file)}});
    let (status, answer) = post(
        &format!("{url}/messaging/properties/{PROPERTY}/conversations/{long}/attachments"),
        &body,
    )
    .await;
    assert_eq!(status, 400, "{name}: {answer}");
    assert_eq!(
        conn_message(&answer),
        "conversation_id is 12000 bytes long, over the 255-byte limit",
        "{name}"
    );
    // At the limit it is taken.
    let at_limit = "c".repeat(255);
    let (status, answer) = post(
        &format!("{url}/messaging/properties/{PROPERTY}/conversations/{at_limit}/attachments"),
        &body,
    )
    .await;
    assert_eq!(status, 200, "{name}: {answer}");
}

async fn demand_conversation_and_reservation_ids_are_capped_on_every_store(backend: Backend) {
    let file = common::exact_jpeg(5_000);
    let Server {
        name, url, _dir, ..
    } = server(backend).await;
    let upload = |conversation: String, reservation: String| {
        json!({"accommodation": PROPERTY, "conversation": conversation,
               "reservation": reservation, "file_name": "a.jpg", "file_type": "image/jpeg",
               "file_size": file.len(), "file_content": b64(&file)})
    };
    let url = format!("{url}/3.1/messages/attachments/upload");
    let (status, answer) = post(&url, &upload("x".repeat(70_000), "438".into())).await;
    assert_eq!(status, 400, "{name}: {answer}");
    assert_eq!(
        demand_message(&answer),
        "conversation is 70000 bytes long, over the 255-byte limit",
        "{name}"
    );
    let (status, answer) = post(&url, &upload(CONV.into(), "4".repeat(300))).await;
    assert_eq!(status, 400, "{name}: {answer}");
    assert_eq!(
        demand_message(&answer),
        "reservation is 300 bytes long, over the 255-byte limit",
        "{name}"
    );
    let (status, answer) = post(&url, &upload(CONV.into(), "bad\u{7}id".into())).await;
    assert_eq!(status, 400, "{name}: {answer}");
    assert_eq!(
        demand_message(&answer),
        "reservation contains a control character",
        "{name}"
    );
    let (status, answer) = post(&url, &upload(CONV.into(), "4380765874".into())).await;
    assert_eq!(status, 200, "{name}: {answer}");
}

/// A `finish` (or `resume`) whose `file_name` or `file_type` is about 64 KB fails the
/// upload with the same 400 everywhere, and every later chunk hears that it failed.
async fn a_64_kb_name_or_type_on_finish_fails_the_upload_alike_on_every_store(backend: Backend) {
    let file = common::exact_jpeg(2 * MB + 1000);
    for field in ["file_name", "file_type"] {
        let Server {
            name,
            url,
            store,
            _dir,
        } = server(backend).await;
        let url =
            format!("{url}/messaging/properties/{PROPERTY}/conversations/{CONV}/attachment_chunks");
        // Small chunks leave room in the body for the long field.
        let (status, answer) = post(&url, &chunk("start", None, 0, &file, 0..1000)).await;
        assert_eq!(status, 200, "{name}: {answer}");
        let id = answer["data"]["upload_id"].as_str().unwrap().to_owned();
        let mut finish = chunk("finish", Some(&id), 1, &file, 1000..2000);
        finish["attachment"][field] = json!("n".repeat(64 * 1024));
        let (status, answer) = post(&url, &finish).await;
        assert_eq!(status, 400, "{name} {field}: {answer}");
        let first = conn_message(&answer).to_owned();
        assert!(
            first.starts_with(&format!("chunk rejected: {field} is \"nnnn"))
                && first.contains("... (65536 bytes)\" but was")
                && first.len() < 400,
            "{name} {field}: {first}"
        );
        // The upload failed for good, and says so, on every store.
        let (status, answer) = post(&url, &chunk("resume", Some(&id), 1, &file, 1000..2000)).await;
        assert_eq!(status, 400, "{name} {field}: {answer}");
        assert_eq!(
            conn_message(&answer),
            format!(
                "upload {id} failed earlier ({first}); start again with action start and chunk 0"
            ),
            "{name} {field}"
        );
        // Nothing became visible, and the store still lists.
        let future = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        store
            .list_expired(std::time::SystemTime::UNIX_EPOCH, future)
            .await
            .unwrap_or_else(|e| panic!("{name}: listing after the refusal: {e}"));
    }
}

async fn a_declared_type_over_255_bytes_is_refused_at_start(backend: Backend) {
    let file = common::exact_jpeg(2 * MB + 1000);
    let Server {
        name, url, _dir, ..
    } = server(backend).await;
    let url =
        format!("{url}/messaging/properties/{PROPERTY}/conversations/{CONV}/attachment_chunks");
    let mut start = chunk("start", None, 0, &file, 0..1000);
    start["attachment"]["file_type"] = json!(format!("image/jpeg;{}", "p".repeat(70_000)));
    let (status, answer) = post(&url, &start).await;
    assert_eq!(status, 400, "{name}: {answer}");
    let message = conn_message(&answer);
    assert!(
        message.starts_with("file type \"image/jpeg;ppp") && message.contains("(70011 bytes)"),
        "{name}: {message}"
    );
}

/// The ids of a Demand `latest/confirm` are looked up in the store: each is capped like
/// every other id (it was taken whole before).
#[tokio::test]
async fn confirm_ids_are_capped_like_every_other_id() {
    let Server {
        name, url, _dir, ..
    } = server(Backend::Memory).await;
    let url = format!("{url}/3.1/messages/latest/confirm");
    let (status, answer) = post(&url, &json!({"messages": ["m-1", "9".repeat(300)]})).await;
    assert_eq!(status, 400, "{name}: {answer}");
    assert_eq!(
        demand_message(&answer),
        "messages[1] is 300 bytes long, over the 255-byte limit"
    );
    let (status, answer) = post(&url, &json!({"messages": ["a/../b\u{0}"]})).await;
    assert_eq!(status, 400, "{name}: {answer}");
    assert_eq!(
        demand_message(&answer),
        "messages[0] contains a control character"
    );
    let (status, answer) = post(&url, &json!({"messages": ["m-1"]})).await;
    assert_eq!((status, &answer["data"]["confirmed"]), (200, &json!(0)));
}

/// A Connectivity path that is not UTF-8 once percent-decoded is a 400 in the Connectivity
/// envelope, as every other client mistake (it was axum's plain-text answer).
#[tokio::test]
async fn a_path_that_is_not_utf8_is_a_400_in_the_envelope() {
    let Server {
        name, url, _dir, ..
    } = server(Backend::Memory).await;
    let base = format!("{url}/messaging/properties/{PROPERTY}/conversations");
    for path in [
        format!("{base}/{CONV}/attachments/%FF"),
        format!("{base}/{CONV}/attachments/%FF/file_info"),
        format!("{base}/c%FF/attachments/x/file_info"),
    ] {
        let response = reqwest::get(&path).await.unwrap();
        assert_eq!(response.status().as_u16(), 400, "{name}: {path}");
        let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert!(
            conn_message(&body).starts_with("path cannot be read: "),
            "{path}: {body}"
        );
        assert_eq!(body["errors"][0]["code"], 400, "{body}");
    }
}

/// A request body in a malformed chunked transfer coding (a size that is not hex, one that
/// overflows) is a 400 in the flavour's envelope naming the problem; it was a 500
/// "internal storage error; try again later", which clients retry.
#[tokio::test]
async fn a_malformed_chunked_body_is_a_400_not_a_storage_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let Server { url, _dir, .. } = server(Backend::Memory).await;
    let addr = url.trim_start_matches("http://").to_owned();
    let path = format!("/messaging/properties/{PROPERTY}/conversations/{CONV}/attachments");
    for bad_size in ["ZZ", "FFFFFFFFFFFFFFFFFFFF"] {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\n{{\"a\":\r\n{bad_size}\r\nxx\r\n0\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{bad_size}: {answer}");
        let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
        let body: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{answer}"));
        let message = conn_message(&body);
        assert!(
            message.starts_with("request body could not be read ("),
            "{bad_size}: {message}"
        );
    }
}

/// A request body that stops arriving is answered 408 in the flavour's envelope once it
/// paused longer than the body idle timeout, and the connection is let go (before, a
/// client sending a byte now and then, or a chunk size it never filled, held the
/// connection and its buffer for ever).
#[tokio::test]
async fn a_body_that_stops_arriving_is_a_408_after_the_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let config = ServerConfig::default().with_body_idle_timeout(std::time::Duration::from_secs(1));
    let sandbox = Sandbox::new(Arc::new(MemoryStore::new()), config);
    let url = common::serve_local(sandbox.router()).await;
    let addr = url.trim_start_matches("http://").to_owned();
    let path = format!("/messaging/properties/{PROPERTY}/conversations/{CONV}/attachments");
    let heads = [
        "Content-Length: 100\r\n\r\n{\"attachment\"".to_owned(),
        "Transfer-Encoding: chunked\r\n\r\nffffffffffff\r\n{\"attachment\"".to_owned(),
    ];
    for head in heads {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{head}"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let started = std::time::Instant::now();
        let mut answer = vec![0; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read(&mut answer))
            .await
            .expect("answered within the timeout")
            .unwrap();
        let waited = started.elapsed();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 408"), "{head}: {answer}");
        assert!(
            waited >= std::time::Duration::from_millis(900)
                && waited < std::time::Duration::from_secs(5),
            "{waited:?}"
        );
        let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
        let body: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{answer}"));
        assert_eq!(
            conn_message(&body),
            "the request body stopped arriving: no byte for 1 s; send the body without pausing"
        );
    }
    // A chat upload's multipart body, stalled inside the file.
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "POST /v1/attachments HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer t\r\n\
         Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 5000\r\n\r\n\
         --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nhello"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = vec![0; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read(&mut answer))
        .await
        .expect("answered within the timeout")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"status\":408"), "{answer}");
}

/// Requests in flight are capped: one more is a 503 with `Retry-After: 1` at once, in the
/// flavour's shape, never a queue; places come back when requests end (here, two stalled
/// uploads let go by the body idle timeout).
#[tokio::test]
async fn requests_over_the_in_flight_cap_are_a_503_at_once() {
    use tokio::io::AsyncWriteExt;

    let config = ServerConfig::default()
        .with_max_in_flight(2)
        .with_body_idle_timeout(std::time::Duration::from_secs(2));
    let sandbox = Sandbox::new(Arc::new(MemoryStore::new()), config);
    let url = common::serve_local(sandbox.router()).await;
    let addr = url.trim_start_matches("http://").to_owned();
    let path = format!("/messaging/properties/{PROPERTY}/conversations/{CONV}/attachments");
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: 100\r\n\r\n{{"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        stalled.push(tcp);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let latest = format!("{url}/3.1/messages/latest");
    let started = std::time::Instant::now();
    let response = reqwest::get(&latest).await.unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "not queued"
    );
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(
        demand_message(&body),
        "the server is busy with 2 requests; send this one again in 1 s"
    );
    // The stalled ones end at their idle timeout; their places come back.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(reqwest::get(&latest).await.unwrap().status().as_u16(), 200);
    drop(stalled);
}

/// Seed 000 prints the Demand routes without a version (`/messages/attachments/upload`):
/// they are served there and under `/3.1/` alike, one store behind both, and an unknown
/// path under `/messages/` is answered in the Demand error shape (it was a 404 in the
/// Connectivity envelope).
#[tokio::test]
async fn the_demand_routes_answer_with_and_without_their_version() {
    let file = common::exact_jpeg(5_000);
    let Server { url, _dir, .. } = server(Backend::Memory).await;
    let upload = json!({"accommodation": PROPERTY, "conversation": CONV, "reservation": "4388", "file_name": "a.jpg",
        "file_type": "image/jpeg", "file_size": file.len(), "file_content": b64(&file)});
    let (status, answer) = post(&format!("{url}/messages/attachments/upload"), &upload).await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["data"]["attachment"].as_str().unwrap().to_owned();
    let named = json!({"accommodation": PROPERTY, "conversation": CONV, "attachment": id});
    for prefix in ["", "/3.1"] {
        let (status, answer) = post(
            &format!("{url}{prefix}/messages/attachments/metadata"),
            &named,
        )
        .await;
        assert_eq!(status, 200, "{prefix}: {answer}");
        let (status, answer) = post(
            &format!("{url}{prefix}/messages/attachments/download"),
            &named,
        )
        .await;
        assert_eq!(status, 200, "{prefix}: {answer}");
    }
    let (status, answer) = post(&format!("{url}/messages/nothing-here"), &named).await;
    assert_eq!(status, 404, "{answer}");
    assert!(
        demand_message(&answer).contains("/messages/nothing-here"),
        "in the Demand shape: {answer}"
    );
}

/// The size-limit texts do not depend on the size (SPEC, *Size-limit texts*): a single
/// upload of 1,060,000 bytes and one of 2,000,000 get seed 000's `File size exceeds the
/// 1MB limit` alike (the larger got `Request body size exceeds the 1414488 bytes limit`),
/// a chunk over its limit the chunk's text, and a chat file over 25 MB the file's text,
/// however far over.
#[tokio::test]
async fn size_limit_texts_do_not_depend_on_the_size() {
    let Server { url, _dir, .. } = server(Backend::Memory).await;
    let conv = format!("{url}/messaging/properties/{PROPERTY}/conversations/{CONV}");
    for size in [1_060_000, 2_000_000] {
        let file = common::exact_jpeg(size);
        let single = json!({"attachment": {"file_name": "a.jpg", "file_type": "image/jpeg",
            "file_size": file.len(), "file_content": b64(&file)}});
        let (status, answer) = post(&format!("{conv}/attachments"), &single).await;
        assert_eq!(status, 400, "{size}: {answer}");
        assert_eq!(
            conn_message(&answer),
            "File size exceeds the 1MB limit",
            "{size}"
        );
        let demand = json!({"accommodation": PROPERTY, "conversation": CONV, "reservation": "4388",
            "file_name": "a.jpg", "file_type": "image/jpeg", "file_size": file.len(),
            "file_content": b64(&file)});
        for prefix in ["/3.1", ""] {
            let (status, answer) = post(
                &format!("{url}{prefix}/messages/attachments/upload"),
                &demand,
            )
            .await;
            assert_eq!(status, 400, "{size}: {answer}");
            assert_eq!(
                demand_message(&answer),
                "File size exceeds the 1MB limit",
                "{size}"
            );
        }
    }
    // A chunk of 2,000,000 bytes in a chunked upload of 5 MB.
    let file = common::exact_jpeg(5_000_000);
    let (status, answer) = post(
        &format!("{conv}/attachment_chunks"),
        &chunk("start", None, 0, &file, 0..2_000_000),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(conn_message(&answer), "Chunk size exceeds the 1MB limit");
    // Chat: 25 MiB and one byte, and 30 MiB, announced.
    for size in [25 * 1024 * 1024 + 1, 30 * 1024 * 1024] {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(vec![b'x'; size])
                .file_name("a.bin")
                .mime_str("application/octet-stream")
                .unwrap(),
        );
        let response = reqwest::Client::new()
            .post(format!("{url}/v1/attachments"))
            .bearer_auth("t")
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 413, "{size}");
        let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert_eq!(
            body["error"]["message"], "File size exceeds the 25MB limit",
            "{size}: {body}"
        );
    }
}
