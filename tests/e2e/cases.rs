//! End to end over loopback: the real sandbox server (axum on 127.0.0.1) and the real
//! clients, plus raw HTTP requests (reqwest, written by hand here) for the exact wire
//! texts and the malformed-request cases. Included by `tests/e2e.rs` (memory store) and
//! `tests/e2e_s3.rs` (the S3 store on a real S3 server), which set `super::S3` and define
//! `case!`, which makes each case a test (ignored unless asked for, on S3).

use super::common;
use std::sync::Arc;
use std::time::Duration;

use attachments::Error;
use attachments::client::{ConnectivityClient, DemandClient, DemandConversation};
use attachments::digest::sha256;
use attachments::download::DownloadOptions;
use attachments::retry::RetryPolicy;
use attachments::server::{Sandbox, ServerConfig};
use attachments::store::{Expired, MemoryStore, Store};
use attachments::wire::Id;
use serde_json::{Value, json};
use std::time::SystemTime;

const PROPERTY: u64 = 2098153;
const CONV: &str = "cc872746-77f2-5886-ba7c-17e0497241b5";

struct Server {
    url: String,
    store: Arc<dyn Store>,
    sandbox: Sandbox,
}

impl Server {
    /// Attachments no message carries yet (what the tests count: none is linked when
    /// they do), found through the store's own expiry listing so every backend answers.
    async fn unlinked_attachments(&self) -> usize {
        let future = SystemTime::now() + Duration::from_secs(3600);
        let listed = self
            .store
            .list_expired(SystemTime::UNIX_EPOCH, future)
            .await;
        listed
            .unwrap()
            .iter()
            .filter(|e| matches!(e, Expired::Attachment(_)))
            .count()
    }
}

async fn serve(config: ServerConfig) -> Server {
    let store: Arc<dyn Store> = if super::S3 {
        Arc::new(common::s3::s3().store("e2e"))
    } else {
        Arc::new(MemoryStore::new())
    };
    let sandbox = Sandbox::new(store.clone(), config);
    let url = common::serve_local(sandbox.router()).await;
    Server {
        url,
        store,
        sandbox,
    }
}

fn write_temp(dir: &tempfile::TempDir, name: &str, data: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, data).unwrap();
    path
}

fn conn_path(rest: &str) -> String {
    format!("/messaging/properties/{PROPERTY}/conversations/{CONV}{rest}")
}

/// A raw request; returns status, Retry-After and the JSON body.
async fn raw(
    method: reqwest::Method,
    url: String,
    body: Option<Vec<u8>>,
    auth: Option<(&str, &str)>,
) -> (u16, Option<String>, Value) {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        req = req.header("content-type", "application/json").body(body);
    }
    if let Some((token, affiliate)) = auth {
        req = req
            .header("authorization", format!("Bearer {token}"))
            .header("x-affiliate-id", affiliate);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = resp.bytes().await.unwrap();
    let json = serde_json::from_slice(&text)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&text)));
    (status, retry, json)
}

/// A raw JSON POST without credentials.
async fn post_json(server: &Server, path: &str, body: &Value) -> (u16, Option<String>, Value) {
    let url = format!("{}{path}", server.url);
    raw(
        reqwest::Method::POST,
        url,
        Some(body.to_string().into_bytes()),
        None,
    )
    .await
}

fn conn_error(body: &Value) -> &str {
    assert_eq!(body["warnings"], json!([]), "{body}");
    assert!(body["meta"]["ruid"].is_string(), "{body}");
    body["errors"][0]["message"].as_str().unwrap()
}

fn demand_error(body: &Value) -> &str {
    assert!(body["request_id"].is_string(), "{body}");
    body["errors"][0]["message"]["message"].as_str().unwrap()
}

async fn round_trip(server: &Server, size: usize, expect_chunked: bool) {
    let dir = tempfile::tempdir().unwrap();
    let file = common::exact_jpeg(size);
    let path = write_temp(&dir, "photo.jpg", &file);
    let client = ConnectivityClient::new(&server.url).unwrap();
    let mut seen = Vec::new();
    let up = client
        .upload_file(PROPERTY, CONV, &path, |done, total| {
            seen.push((done, total))
        })
        .await
        .unwrap();
    assert_eq!(up.chunked, expect_chunked, "size {size}");
    assert_eq!((up.size, up.sha256), (size as u64, sha256(&file)));
    assert_eq!(seen.last(), Some(&(size as u64, size as u64)));
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{seen:?}");
    let info = client
        .file_info(PROPERTY, CONV, &up.attachment_id)
        .await
        .unwrap();
    assert_eq!(
        (info.file_size, info.file_type.as_str()),
        (size as u64, "image/jpeg")
    );
    let mut copy = Vec::new();
    let options = DownloadOptions::default().with_in_flight(3);
    let verified = client
        .download_to(
            PROPERTY,
            CONV,
            &up.attachment_id,
            Some(up.sha256),
            options,
            &mut copy,
        )
        .await
        .unwrap();
    assert_eq!(verified.size, size as u64);
    assert!(copy == file, "downloaded bytes differ for size {size}");
}

case!(connectivity_sizes_take_the_right_route_and_come_back_whole);
async fn connectivity_sizes_take_the_right_route_and_come_back_whole() {
    let server = serve(ServerConfig::default()).await;
    round_trip(&server, 512 * 1024, false).await;
    round_trip(&server, 1_048_576, false).await;
    round_trip(&server, 1_048_577, true).await;
    round_trip(&server, 10 << 20, true).await;
    assert_eq!(server.unlinked_attachments().await, 4);
}

case!(
    a_pipelining_client_uploads_ten_mib_with_chunks_waiting_their_turn,
    flavor = "multi_thread",
    worker_threads = 2
);
async fn a_pipelining_client_uploads_ten_mib_with_chunks_waiting_their_turn() {
    let server = serve(ServerConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = common::exact_jpeg(10 << 20);
    let path = write_temp(&dir, "big.jpg", &file);
    for depth in [2, 4] {
        let client = ConnectivityClient::new(&server.url)
            .unwrap()
            .with_pipeline(depth);
        let mut seen = Vec::new();
        let up = client
            .upload_file(PROPERTY, CONV, &path, |done, _| seen.push(done))
            .await
            .unwrap();
        assert_eq!(
            (up.size, up.sha256, up.restarts),
            (file.len() as u64, sha256(&file), 0)
        );
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        let mut copy = Vec::new();
        client
            .download_to(
                PROPERTY,
                CONV,
                &up.attachment_id,
                Some(sha256(&file)),
                DownloadOptions::default(),
                &mut copy,
            )
            .await
            .unwrap();
        assert!(copy == file, "depth {depth}: the download differs");
    }
}

case!(ten_mib_and_one_byte_is_refused_before_sending_and_by_the_server);
async fn ten_mib_and_one_byte_is_refused_before_sending_and_by_the_server() {
    let server = serve(ServerConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(&dir, "big.jpg", &common::exact_jpeg((10 << 20) + 1));
    let err = ConnectivityClient::new(&server.url)
        .unwrap()
        .upload_file(PROPERTY, CONV, &path, |_, _| {})
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");

    // A hand-written start declaring 10 MiB + 1.
    let body = json!({"attachment": {"action": "start", "file_name": "big.jpg",
        "file_type": "image/jpeg", "file_size": (10 << 20) + 1,
        "chunk": {"chunk_number": 0, "chunk_size": 3, "chunk_content": "/9j/"}}});
    let (status, _, resp) = post_json(&server, &conn_path("/attachment_chunks"), &body).await;
    assert_eq!(status, 400);
    assert_eq!(conn_error(&resp), "File size exceeds the 10MB limit");
    assert_eq!(server.unlinked_attachments().await, 0);
}

case!(a_corrupt_image_is_refused_at_finish_and_creates_nothing);
async fn a_corrupt_image_is_refused_at_finish_and_creates_nothing() {
    let server = serve(ServerConfig::default()).await;
    let mut file = common::exact_jpeg(2_000_000);
    let n = file.len();
    file[n - 2..].copy_from_slice(b"\0\0"); // no EOI
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(&dir, "broken.jpg", &file);
    let err = ConnectivityClient::new(&server.url)
        .unwrap()
        .upload_file(PROPERTY, CONV, &path, |_, _| {})
        .await
        .unwrap_err();
    // The client's own Inspector refuses the last body before it is sent.
    assert!(matches!(err, Error::InvalidContent { .. }), "{err}");
    assert_eq!(server.unlinked_attachments().await, 0);

    // Sent by hand, the server refuses it at finish.
    let client = reqwest::Client::new();
    let chunks_url = format!("{}{}", server.url, conn_path("/attachment_chunks"));
    let b64 = |d: &[u8]| {
        let mut t = Vec::new();
        attachments::codec::base64::encode_to(d, &mut t);
        String::from_utf8(t).unwrap()
    };
    let start = json!({"attachment": {"action": "start", "file_name": "broken.jpg",
        "file_type": "image/jpeg", "file_size": n,
        "chunk": {"chunk_number": 0, "chunk_size": 1_000_002, "chunk_content": b64(&file[..1_000_002])}}});
    let answer = client
        .post(&chunks_url)
        .body(start.to_string())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let resp: Value = serde_json::from_slice(&answer).unwrap();
    let upload_id = resp["data"]["upload_id"].as_str().unwrap().to_owned();
    let finish = json!({"attachment": {"action": "finish", "upload_id": upload_id,
        "file_name": "broken.jpg", "file_type": "image/jpeg", "file_size": n,
        "chunk": {"chunk_number": 1, "chunk_size": n - 1_000_002, "chunk_content": b64(&file[1_000_002..])}}});
    let (status, _, resp) = raw(
        reqwest::Method::POST,
        chunks_url,
        Some(finish.to_string().into_bytes()),
        None,
    )
    .await;
    assert_eq!(status, 400, "{resp}");
    assert!(
        conn_error(&resp).contains("not a valid image/jpeg file"),
        "{resp}"
    );
    assert_eq!(server.unlinked_attachments().await, 0);
}

case!(seed_error_texts_are_exact);
async fn seed_error_texts_are_exact() {
    let server = serve(ServerConfig::default()).await;
    // Seed 000: 35 bytes declared as 350, through both APIs.
    let content = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAA";
    let expected =
        "Request failed with code: 400, message: Content length is 35 but metadata size is 350";
    let body = json!({"accommodation": PROPERTY, "conversation": CONV, "reservation": "4380765874",
        "file_content": content, "file_name": "a.png", "file_type": "image/png", "file_size": 350});
    let (status, _, resp) = post_json(&server, "/3.1/messages/attachments/upload", &body).await;
    assert_eq!(status, 400);
    assert_eq!(demand_error(&resp), expected);
    assert_eq!(resp["errors"][0]["id"], 400);
    assert_eq!(resp["errors"][0]["message"]["error"], "bad request");
    let body = json!({"attachment": {"file_content": content, "file_name": "a.png",
        "file_type": "image/png", "file_size": 350}});
    let (status, _, resp) = post_json(&server, &conn_path("/attachments"), &body).await;
    assert_eq!(status, 400);
    assert_eq!(conn_error(&resp), expected);
    assert_eq!(resp["errors"][0]["code"], 400);

    // Seed 000: over 1 MB.
    let body = json!({"accommodation": PROPERTY, "conversation": CONV, "reservation": 4380765874u64,
        "file_content": content, "file_name": "a.png", "file_type": "image/png", "file_size": 1_048_577});
    let (status, _, resp) = post_json(&server, "/3.1/messages/attachments/upload", &body).await;
    assert_eq!(
        (status, demand_error(&resp)),
        (400, "File size exceeds the 1MB limit")
    );

    // Seed 001's rule: a download over 1 MiB without from.
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(&dir, "p.jpg", &common::exact_jpeg(1_500_000));
    let up = ConnectivityClient::new(&server.url)
        .unwrap()
        .upload_file(PROPERTY, CONV, &path, |_, _| {})
        .await
        .unwrap();
    let (status, _, resp) = raw(
        reqwest::Method::GET,
        format!(
            "{}{}",
            server.url,
            conn_path(&format!("/attachments/{}", up.attachment_id))
        ),
        None,
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert!(conn_error(&resp).contains("from"), "{resp}");
}

case!(download_edge_cases);
async fn download_edge_cases() {
    let server = serve(ServerConfig::default()).await;
    let file = common::exact_jpeg(300_000);
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(&dir, "p.jpg", &file);
    let up = ConnectivityClient::new(&server.url)
        .unwrap()
        .upload_file(PROPERTY, CONV, &path, |_, _| {})
        .await
        .unwrap();
    let get = |query: &str| {
        let url = format!(
            "{}{}{query}",
            server.url,
            conn_path(&format!("/attachments/{}", up.attachment_id))
        );
        raw(reqwest::Method::GET, url, None, None)
    };
    let decode = |v: &Value| {
        let mut out = Vec::new();
        let text = v["data"]["file_content"].as_str().unwrap().as_bytes();
        let mut d = attachments::codec::base64::Decoder::new();
        d.decode(text, &mut out).unwrap();
        d.finish(&mut out).unwrap();
        out
    };
    // `to` is inclusive, and clamped to the last byte.
    let (status, _, v) = get("?from=10&to=19").await;
    assert_eq!(status, 200);
    assert_eq!(decode(&v), file[10..20]);
    assert_eq!(v["data"]["ok"], "true");
    assert_eq!(v["data"]["attachment_id"], up.attachment_id.as_str());
    assert_eq!(v["data"]["conversation_id"], CONV);
    let (_, _, v) = get("?from=299990&to=999999999").await;
    assert_eq!(decode(&v), file[299_990..]);
    // No range on a small file: all of it.
    let (_, _, v) = get("").await;
    assert_eq!(decode(&v), file);
    for (query, needle) in [
        ("?from=300000", "300000"),
        ("?from=20&to=10", "10"),
        ("?from=-1", "-1"),
        ("?from=abc", "abc"),
        ("?to=5", "from"),
    ] {
        let (status, _, v) = get(query).await;
        assert_eq!(status, 400, "{query}: {v}");
        assert!(conn_error(&v).contains(needle), "{query}: {v}");
    }
}

case!(access_matrix_leaks_nothing);
async fn access_matrix_leaks_nothing() {
    let server = serve(ServerConfig::default().with_credentials("good", "aff-1")).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(&dir, "p.jpg", &common::exact_jpeg(5_000));
    let up = ConnectivityClient::new(&server.url)
        .unwrap()
        .with_credentials("good", "aff-1")
        .unwrap()
        .upload_file(PROPERTY, CONV, &path, |_, _| {})
        .await
        .unwrap();
    let att = &up.attachment_id;
    let url = |property: u64, conv: &str, id: &str| {
        format!(
            "{}/messaging/properties/{property}/conversations/{conv}/attachments/{id}/file_info",
            server.url
        )
    };
    let get = |u: String, auth| raw(reqwest::Method::GET, u, None, auth);
    let good = Some(("good", "aff-1"));
    assert_eq!(get(url(PROPERTY, CONV, att), good).await.0, 200);
    for auth in [None, Some(("bad", "aff-1")), Some(("good", "aff-2"))] {
        let (status, _, v) = get(url(PROPERTY, CONV, att), auth).await;
        assert_eq!(status, 401, "{auth:?}");
        assert!(conn_error(&v).contains("credentials"), "{v}");
    }
    // Wrong property, wrong conversation, unknown id: one and the same answer.
    let missing = "00000000-0000-0000-0000-000000000000";
    let mut answers = Vec::new();
    for (property, conv, id) in [
        (PROPERTY + 1, CONV, att.as_str()),
        (PROPERTY, "other", att),
        (PROPERTY, CONV, missing),
    ] {
        let (status, _, v) = get(url(property, conv, id), good).await;
        let text = conn_error(&v).replace(id, "ID");
        answers.push((status, text));
    }
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(answers[0].0, 404);
    // Demand, same rule.
    let body = json!({"conversation": "other", "accommodation": PROPERTY, "attachment": att});
    let (status, _, v) = raw(
        reqwest::Method::POST,
        format!("{}/3.1/messages/attachments/metadata", server.url),
        Some(body.to_string().into_bytes()),
        good,
    )
    .await;
    assert_eq!(status, 404, "{v}");
}

case!(rate_limit_answers_429_with_retry_after_and_the_client_waits);
async fn rate_limit_answers_429_with_retry_after_and_the_client_waits() {
    let server = serve(ServerConfig::default().with_rate(2)).await;
    let url = format!("{}/3.1/messages/latest", server.url);
    assert_eq!(
        raw(reqwest::Method::GET, url.clone(), None, None).await.0,
        200
    );
    assert_eq!(
        raw(reqwest::Method::GET, url.clone(), None, None).await.0,
        200
    );
    let (status, retry, v) = raw(reqwest::Method::GET, url, None, None).await;
    assert_eq!(status, 429);
    assert_eq!(retry.as_deref(), Some("30"));
    assert_eq!(demand_error(&v), "too many requests: retry after 30 s");

    // A client that may not wait that long gives up with the server's answer.
    let client = DemandClient::new(&server.url).unwrap().with_retry(
        RetryPolicy::new(2).with_delays(Duration::from_millis(1), Duration::from_millis(5)),
    );
    let to = DemandConversation {
        accommodation: PROPERTY,
        conversation: CONV.into(),
        reservation: Id::text("4380765874"),
    };
    let err = client.metadata(&to, "x").await.unwrap_err();
    assert!(matches!(err, Error::Remote { status: 429, .. }), "{err}");
}

case!(the_rate_limit_comes_before_credentials_and_is_keyed_on_the_client);
/// The limit is taken before credentials are checked, so refused requests count (6,000
/// wrong tokens at a rate of 60 never met a 429 before), and it is keyed on the client's
/// address, so a fresh token per request does not escape it; behind a trusted proxy its
/// header names the client.
async fn the_rate_limit_comes_before_credentials_and_is_keyed_on_the_client() {
    let server = serve(
        ServerConfig::default()
            .with_rate(3)
            .with_credentials("t", "a"),
    )
    .await;
    let url = format!("{}/3.1/messages/latest", server.url);
    let mut statuses = Vec::new();
    for n in 0..6 {
        let token = format!("guess-{n}");
        let auth = Some((token.as_str(), "a"));
        statuses.push(raw(reqwest::Method::GET, url.clone(), None, auth).await.0);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429]);
    // The right credentials from the same address wait like everyone there.
    let (status, retry, _) = raw(reqwest::Method::GET, url, None, Some(("t", "a"))).await;
    assert_eq!((status, retry.is_some()), (429, true));

    // Behind a proxy: the last entry of its header is the client.
    let header = axum::http::HeaderName::from_static("x-forwarded-for");
    let config = ServerConfig::default()
        .with_rate(2)
        .with_client_ip_header(header);
    let server = serve(config).await;
    let url = format!("{}/3.1/messages/latest", server.url);
    let from = |chain: &'static str| {
        reqwest::Client::new()
            .get(&url)
            .header("x-forwarded-for", chain)
            .send()
    };
    let mut statuses = Vec::new();
    for chain in [
        "1.1.1.1",
        "9.9.9.9, 1.1.1.1",
        "1.1.1.1",
        "2.2.2.2",
        "1.1.1.1, 2.2.2.2",
    ] {
        statuses.push(from(chain).await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 200, 200]);
    // A proxy that adds a line of its own rather than extending the client's: its line,
    // the last, names the client, whatever the client's line says.
    let mut statuses = Vec::new();
    for n in 0..3 {
        let response = reqwest::Client::new()
            .get(&url)
            .header("x-forwarded-for", format!("spoofed-{n}"))
            .header("x-forwarded-for", "5.5.5.5")
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
}

case!(malformed_requests_get_a_4xx_naming_the_problem);
async fn malformed_requests_get_a_4xx_naming_the_problem() {
    let server = serve(ServerConfig::default()).await;
    let post = |path: String, body: Vec<u8>| {
        raw(
            reqwest::Method::POST,
            format!("{}{path}", server.url),
            Some(body),
            None,
        )
    };
    let up = conn_path("/attachments");
    let chunks = conn_path("/attachment_chunks");
    let demand = "/3.1/messages/attachments/upload".to_owned();
    let cases: Vec<(String, Vec<u8>, &str)> = vec![
        (up.clone(), b"{not json".to_vec(), "JSON"),
        (up.clone(), b"{}".to_vec(), "attachment"),
        (up.clone(), br#"{"attachment": {"file_name": "a.png", "file_type": "image/png", "file_size": "x", "file_content": ""}}"#.to_vec(), "file_size"),
        (up.clone(), br#"{"attachment": {"file_name": "a.png", "file_type": "image/png", "file_size": 3, "file_content": "A-B_"}}"#.to_vec(), "base64"),
        (chunks.clone(), br#"{"attachment": {"action": "pause"}}"#.to_vec(), "action"),
        (demand.clone(), br#"{"accommodation": 1}"#.to_vec(), "conversation"),
        (up.clone(), vec![b'{'; 2 << 20], "limit"),
        (conn_path(""), br#"{"message": {"attachment_ids": []}}"#.to_vec(), "content"),
        (conn_path(""), br#"{"message": {"content": " "}}"#.to_vec(), "content"),
        ("/messaging/properties/abc/conversations/c/attachments".into(), b"{}".to_vec(), "property_id"),
    ];
    for (path, body, needle) in cases {
        let (status, _, v) = post(path.clone(), body).await;
        assert!((400..500).contains(&status), "{path}: {status} {v}");
        let message = v["errors"][0]["message"]
            .as_str()
            .or_else(|| v["errors"][0]["message"]["message"].as_str())
            .unwrap_or_default();
        assert!(
            message.contains(needle),
            "{path}: {needle:?} not in {message:?}"
        );
    }
    assert_eq!(server.unlinked_attachments().await, 0);
}

case!(demand_flow_runs_the_seed_004_use_cases);
async fn demand_flow_runs_the_seed_004_use_cases() {
    let server = serve(ServerConfig::default()).await;
    let client = DemandClient::new(&server.url).unwrap();
    let reservation = Id::text("4380765874");
    // Welcome message: starts the conversation.
    let welcome = client
        .send(
            PROPERTY,
            &reservation,
            "Thank you for booking with us!",
            &[],
        )
        .await
        .unwrap();
    let to = DemandConversation {
        accommodation: PROPERTY,
        conversation: welcome.conversation.clone(),
        reservation: reservation.clone(),
    };
    let dir = tempfile::tempdir().unwrap();
    for size in [512 * 1024, 1_048_576] {
        let file = common::exact_jpeg(size);
        let path = write_temp(&dir, "p.jpg", &file);
        let up = client.upload_file(&to, &path).await.unwrap();
        let meta = client.metadata(&to, &up.attachment_id).await.unwrap();
        assert_eq!(
            (meta.file_size, meta.file_type.as_str()),
            (size as u64, "image/jpeg")
        );
        let (bytes, verified) = client
            .download(&to, &up.attachment_id, Some(sha256(&file)))
            .await
            .unwrap();
        assert_eq!((bytes.as_ref(), verified.size), (&file[..], size as u64));
        let sent = client
            .send(
                PROPERTY,
                &reservation,
                "The photo",
                std::slice::from_ref(&up.attachment_id),
            )
            .await
            .unwrap();
        assert_eq!(sent.conversation, welcome.conversation);
        assert!(
            server
                .store
                .metadata(&up.attachment_id)
                .await
                .unwrap()
                .linked
        );
    }
    let path = write_temp(&dir, "p.jpg", &common::exact_jpeg(1_048_577));
    let err = client.upload_file(&to, &path).await.unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");

    // Poll latest, confirm, then read the history.
    let latest = |srv: &Server| {
        raw(
            reqwest::Method::GET,
            format!("{}/3.1/messages/latest", srv.url),
            None,
            None,
        )
    };
    let (_, _, v) = latest(&server).await;
    let ids: Vec<String> = v["data"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    let body = json!({"messages": ids});
    let (_, _, v) = post_json(&server, "/3.1/messages/latest/confirm", &body).await;
    assert_eq!(v["data"]["confirmed"], 3);
    assert_eq!(latest(&server).await.2["data"]["messages"], json!([]));
    let body = json!({"conversation": welcome.conversation, "accommodation": PROPERTY, "reservation": 4380765874u64});
    let (_, _, v) = post_json(&server, "/3.1/messages/conversations", &body).await;
    assert_eq!(v["data"]["messages"].as_array().unwrap().len(), 3);
}

case!(unlinked_attachments_expire_and_linked_ones_stay);
async fn unlinked_attachments_expire_and_linked_ones_stay() {
    let server = serve(ServerConfig::default().with_unlinked_ttl(Duration::ZERO)).await;
    let client = ConnectivityClient::new(&server.url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(&dir, "p.jpg", &common::exact_jpeg(10_000));
    let kept = client
        .upload_file(PROPERTY, CONV, &path, |_, _| {})
        .await
        .unwrap();
    let dropped = client
        .upload_file(PROPERTY, CONV, &path, |_, _| {})
        .await
        .unwrap();
    client
        .post_message(
            PROPERTY,
            CONV,
            "kept",
            std::slice::from_ref(&kept.attachment_id),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(server.sandbox.sweep().await.unwrap(), 1);
    assert!(
        client
            .file_info(PROPERTY, CONV, &kept.attachment_id)
            .await
            .is_ok()
    );
    let err = client
        .file_info(PROPERTY, CONV, &dropped.attachment_id)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Remote { status: 404, .. }), "{err}");
}

use proptest::prelude::*;

case!(arbitrary_bodies_never_get_a_5xx, sync);
/// Any body to any route: a 4xx with a message, or a success; never a 5xx.
fn arbitrary_bodies_never_get_a_5xx() {
    let config = ProptestConfig::with_cases(64);
    proptest!(config, |(
        route in 0usize..9,
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            // Near-valid JSON: a valid shape with one field's value replaced.
            (0usize..6, any::<i64>()).prop_map(|(field, n)| {
                let mut v = json!({"attachment": {"action": "start", "file_name": "a.jpg",
                    "file_type": "image/jpeg", "file_size": 2_000_000, "file_content": "/9j/",
                    "chunk": {"chunk_number": 0, "chunk_size": 3, "chunk_content": "/9j/"}},
                    "accommodation": 1, "conversation": "c", "reservation": "r",
                    "attachment_id": "x", "content": "hi", "messages": ["m"]});
                let keys = ["file_size", "chunk", "file_type", "action", "file_name", "file_content"];
                v["attachment"][keys[field]] = json!(n);
                v.to_string().into_bytes()
            }),
        ],
    )| {
        let routes = [
            conn_path("/attachments"),
            conn_path("/attachment_chunks"),
            conn_path(""),
            "/3.1/messages/attachments/upload".to_owned(),
            "/3.1/messages/attachments/metadata".to_owned(),
            "/3.1/messages/attachments/download".to_owned(),
            "/3.1/messages/send".to_owned(),
            "/3.1/messages/latest/confirm".to_owned(),
            "/3.1/messages/conversations".to_owned(),
        ];
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (status, message) = rt.block_on(async {
            let server = serve(ServerConfig::default()).await;
            let (status, _, v) = raw(
                reqwest::Method::POST,
                format!("{}{}", server.url, routes[route]),
                Some(body),
                None,
            )
            .await;
            let message = v["errors"][0]["message"]
                .as_str()
                .or_else(|| v["errors"][0]["message"]["message"].as_str())
                .unwrap_or_default()
                .to_owned();
            (status, message)
        });
        prop_assert!(status < 500, "{} answered {}: {}", routes[route], status, message);
        if status >= 400 {
            prop_assert!(!message.is_empty());
        }
    });
}

case!(a_size_refusal_falls_back_once_to_the_other_endpoint);
async fn a_size_refusal_falls_back_once_to_the_other_endpoint() {
    // A server whose single-request limit is 500,000 bytes, below the client's 1 MiB.
    let mut config = ServerConfig::default();
    let mut limits = attachments::Limits::connectivity();
    limits.max_single_size = 500_000;
    config.connectivity = attachments::Policy::connectivity().with_limits(limits);
    let server = serve(config).await;
    let file = common::exact_jpeg(700_000);
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(&dir, "p.jpg", &file);
    let client = ConnectivityClient::new(&server.url).unwrap();
    let up = client
        .upload_file(PROPERTY, CONV, &path, |_, _| {})
        .await
        .unwrap();
    assert!(up.chunked);
    assert_eq!(up.restarts, 1);
    let mut copy = Vec::new();
    client
        .download_to(
            PROPERTY,
            CONV,
            &up.attachment_id,
            Some(up.sha256),
            DownloadOptions::default(),
            &mut copy,
        )
        .await
        .unwrap();
    assert!(copy == file);
}

case!(an_expired_upload_makes_the_client_start_over_once);
async fn an_expired_upload_makes_the_client_start_over_once() {
    // Sessions expire at once: `resume` finds the upload gone (404), the client starts
    // over from `start` once, and then reports the server's answer.
    let server = serve(ServerConfig::default().with_session_ttl(Duration::ZERO)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(&dir, "p.jpg", &common::exact_jpeg(3_000_000));
    tokio::time::sleep(Duration::from_millis(2)).await;
    let err = ConnectivityClient::new(&server.url)
        .unwrap()
        .upload_file(PROPERTY, CONV, &path, |_, _| {})
        .await
        .unwrap_err();
    match &err {
        Error::Remote {
            status: 404,
            message,
            ..
        } => {
            assert!(message.contains("expired"), "{message}")
        }
        other => panic!("{other}"),
    }
    assert_eq!(server.unlinked_attachments().await, 0);
}

/// A Demand upload as seed 004's flow makes it: accommodation, conversation, reservation.
async fn demand_upload(server: &Server, conversation: &str, reservation: &str) -> String {
    let file = common::exact_jpeg(2_000);
    let mut content = Vec::new();
    attachments::codec::base64::encode_to(&file, &mut content);
    let body = json!({"accommodation": PROPERTY, "conversation": conversation,
        "reservation": reservation, "file_content": String::from_utf8(content).unwrap(),
        "file_name": "p.jpg", "file_type": "image/jpeg", "file_size": file.len()});
    let (status, _, v) = post_json(server, "/3.1/messages/attachments/upload", &body).await;
    assert_eq!(status, 200, "{v}");
    v["data"]["attachment"].as_str().unwrap().to_owned()
}

case!(seed_004_a_send_links_what_was_uploaded_for_the_reservation);
/// SPEC.md, "A reservation's conversation": an upload naming conversation C and
/// reservation R makes C the conversation of R, and a send for R links the attachment
/// (it answered 404 when the send started a conversation of its own).
async fn seed_004_a_send_links_what_was_uploaded_for_the_reservation() {
    let server = serve(ServerConfig::default()).await;
    let attachment = demand_upload(&server, CONV, "4380765874").await;
    let body = json!({"reservation": "4380765874", "accommodation": PROPERTY,
        "content": "The photo of the parking", "attachments": [attachment]});
    let (status, _, v) = post_json(&server, "/3.1/messages/send", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["conversation"], CONV, "{v}");
    let message_id = v["data"]["message_id"].as_str().unwrap().to_owned();
    assert!(server.store.metadata(&attachment).await.unwrap().linked);

    // The reservation (sent as a number this time) keeps its conversation.
    let body = json!({"reservation": 4380765874u64, "accommodation": PROPERTY,
        "content": "And the key box"});
    let (status, _, v) = post_json(&server, "/3.1/messages/send", &body).await;
    assert_eq!(
        (status, v["data"]["conversation"].as_str()),
        (200, Some(CONV))
    );

    // A later upload naming another conversation does not move the reservation.
    let other = demand_upload(&server, "another-conversation", "4380765874").await;
    let body = json!({"reservation": "4380765874", "accommodation": PROPERTY,
        "content": "x", "attachments": [other]});
    let (status, _, v) = post_json(&server, "/3.1/messages/send", &body).await;
    assert_eq!(status, 404, "{v}");

    let body =
        json!({"conversation": CONV, "accommodation": PROPERTY, "reservation": 4380765874u64});
    let (status, _, v) = post_json(&server, "/3.1/messages/conversations", &body).await;
    assert_eq!(status, 200, "{v}");
    let history = v["data"]["messages"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["message_id"], message_id.as_str());
    assert_eq!(history[0]["attachments"], json!([attachment]));
    assert_eq!(history[0]["reservation"], "4380765874");
}

case!(confirm_takes_at_most_1000_ids_and_names_the_cap);
/// The reported slowdown came from confirming 13,000 ids a request against every message:
/// a request names at most 1,000 ids, each looked up, and more is a 400 naming the cap.
async fn confirm_takes_at_most_1000_ids_and_names_the_cap() {
    let server = serve(ServerConfig::default()).await;
    let client = DemandClient::new(&server.url).unwrap();
    let sent = client
        .send(PROPERTY, &Id::text("r-1"), "hello", &[])
        .await
        .unwrap();
    let mut ids: Vec<String> = (0..13_000)
        .map(|n| format!("0190c1a2-{n:04x}-7000-8000-000000000000"))
        .collect();
    let (status, _, v) = post_json(
        &server,
        "/3.1/messages/latest/confirm",
        &json!({ "messages": ids }),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let message = demand_error(&v);
    assert!(
        message.contains("13000 ids, more than the 1000 one request may confirm"),
        "{message}"
    );
    // A full batch of 1,000, one of them known, confirms that one.
    ids.truncate(999);
    ids.push(sent.message_id.clone());
    let (status, _, v) = post_json(
        &server,
        "/3.1/messages/latest/confirm",
        &json!({ "messages": ids }),
    )
    .await;
    assert_eq!((status, &v["data"]["confirmed"]), (200, &json!(1)), "{v}");
    let (_, _, v) = raw(
        reqwest::Method::GET,
        format!("{}/3.1/messages/latest", server.url),
        None,
        None,
    )
    .await;
    assert_eq!(v["data"]["messages"], json!([]));
}

case!(message_ids_are_bounded);
/// Ids stored with a message are bounded (a 63 KB reservation id cost 117 KB of memory).
async fn message_ids_are_bounded() {
    let server = serve(ServerConfig::default()).await;
    let long = "9".repeat(256);
    let body = json!({"reservation": long, "accommodation": PROPERTY, "content": "hi"});
    let (status, _, v) = post_json(&server, "/3.1/messages/send", &body).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        demand_error(&v),
        "reservation is 256 bytes long, over the 255-byte limit"
    );
    let body = json!({"message": {"content": "hi"}});
    let path = format!(
        "/messaging/properties/{PROPERTY}/conversations/{}",
        "c".repeat(300)
    );
    let (status, _, v) = post_json(&server, &path, &body).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        conn_error(&v),
        "conversation_id is 300 bytes long, over the 255-byte limit"
    );
    let ids: Vec<String> = (0..21).map(|n| format!("a{n}")).collect();
    let body = json!({"reservation": "r", "accommodation": PROPERTY, "content": "hi",
        "attachments": ids});
    let (status, _, v) = post_json(&server, "/3.1/messages/send", &body).await;
    assert_eq!(status, 400, "{v}");
    assert!(demand_error(&v).contains("more than the 20 a message may carry"));
    assert_eq!(
        raw(
            reqwest::Method::GET,
            format!("{}/3.1/messages/latest", server.url),
            None,
            None
        )
        .await
        .2["data"]["messages"],
        json!([])
    );
}
