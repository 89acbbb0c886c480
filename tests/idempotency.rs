//! `Idempotency-Key` (IETF httpapi draft) end to end: the sandbox on loopback replays a
//! key's first answer, refuses a key reused for another request (422) and one whose first
//! request still runs (409), on every route that creates something; the clients send one
//! key per operation and its retries, so an answer lost on the way back never becomes a
//! second message or attachment; without keys they do not retry a request that reached
//! the server. And the key stores themselves: any schedule of retries of one key takes
//! effect once, on every backend (proptest).
#![cfg(all(feature = "server", feature = "client", feature = "conformance"))]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use attachments::client::{ChatClient, ConnectivityClient, DemandClient, DemandConversation};
use attachments::retry::RetryPolicy;
use attachments::server::{Sandbox, ServerConfig};
use attachments::store::conformance_keys::{self, Step};
use attachments::store::{FsStore, KeyStore, MemoryStore, MessageStore, ObjectStoreBackend, Store};
use attachments::wire::Id;
use proptest::prelude::*;
use serde_json::{Value, json};

const PROPERTY: u64 = 2098153;
const CONV: &str = "f3a9c29d-0e4c-5a8e-9d7f-2b1c4e6a8d0f";

fn conn_path() -> String {
    format!("/messaging/properties/{PROPERTY}/conversations/{CONV}")
}

async fn start(store: Arc<dyn Store>) -> String {
    common::serve_local(Sandbox::new(store, ServerConfig::default()).router()).await
}

/// A POST of `body` to `path` with `headers`; the status, the headers and the JSON body.
async fn post(
    url: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let answer = req.send().await.unwrap();
    let status = answer.status().as_u16();
    let headers = answer.headers().clone();
    let json = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    (status, headers, json)
}

fn replayed(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

fn small_jpeg_b64() -> (String, usize) {
    let file = common::exact_jpeg(3_000);
    let mut text = Vec::new();
    attachments::codec::base64::encode_to(&file, &mut text);
    (String::from_utf8(text).unwrap(), file.len())
}

/// Each route that creates something, with a body and a different body, and where the
/// created thing's id is in the answer.
fn creating_requests() -> Vec<(&'static str, String, Value, Value)> {
    let (content, size) = small_jpeg_b64();
    let single = |name: &str| {
        json!({"attachment": {"file_name": name, "file_type": "image/jpeg",
            "file_size": size, "file_content": content}})
    };
    // A chunked upload's start: the first 3,000 bytes of a 1.5 MB file.
    let big = common::exact_jpeg(1_500_000);
    let mut first = Vec::new();
    attachments::codec::base64::encode_to(&big[..3_000], &mut first);
    let first = String::from_utf8(first).unwrap();
    let chunk = |name: &str| {
        json!({"attachment": {"action": "start", "file_name": name, "file_type": "image/jpeg",
            "file_size": big.len(),
            "chunk": {"chunk_number": 0, "chunk_size": 3_000, "chunk_content": first}}})
    };
    let demand_upload = |name: &str| {
        json!({"accommodation": PROPERTY, "conversation": CONV, "reservation": "4011",
            "file_name": name, "file_type": "image/jpeg", "file_size": size,
            "file_content": content})
    };
    vec![
        (
            "connectivity message",
            conn_path(),
            json!({"message": {"content": "hello"}}),
            json!({"message": {"content": "hello again"}}),
        ),
        (
            "demand send",
            "/3.1/messages/send".into(),
            json!({"accommodation": PROPERTY, "reservation": "4011", "content": "hi"}),
            json!({"accommodation": PROPERTY, "reservation": "4011", "content": "hi!"}),
        ),
        (
            "connectivity single upload",
            format!("{}/attachments", conn_path()),
            single("a.jpg"),
            single("b.jpg"),
        ),
        (
            "connectivity chunk",
            format!("{}/attachment_chunks", conn_path()),
            chunk("a.jpg"),
            chunk("b.jpg"),
        ),
        (
            "demand upload",
            "/3.1/messages/attachments/upload".into(),
            demand_upload("a.jpg"),
            demand_upload("b.jpg"),
        ),
    ]
}

/// On every route that creates something: the same key and body twice is one effect,
/// the second answer the first's, marked replayed; the same key with another body is a
/// 422 in the flavour's envelope; a fresh key is a new effect; another client's
/// identical key is its own.
#[tokio::test]
async fn each_creating_route_replays_refuses_and_scopes_its_keys() {
    let store = Arc::new(MemoryStore::new());
    let url = start(store.clone()).await;
    for (what, path, body, other) in creating_requests() {
        // A key per route: one key on two routes is two requests (another test).
        let (k1, k2) = (
            format!("\"{what} 1\""),
            format!("{}-2", what.replace(' ', "-")),
        );
        let key = [("idempotency-key", k1.as_str())];
        let (s1, h1, first) = post(&url, &path, &key, &body).await;
        assert_eq!(s1, 200, "{what}: {first}");
        assert!(!replayed(&h1), "{what}: a first answer marked replayed");
        let (s2, h2, second) = post(&url, &path, &key, &body).await;
        assert_eq!((s2, &second), (200, &first), "{what}: the retry's answer");
        assert!(replayed(&h2), "{what}: the replay is not marked");

        let (s3, h3, refused) = post(&url, &path, &key, &other).await;
        assert_eq!(s3, 422, "{what}: {refused}");
        let text = refused.to_string();
        assert!(
            text.contains("Idempotency-Key was already used for a different request"),
            "{what}: {text}"
        );
        assert!(!replayed(&h3));
        // Connectivity answers in its envelope, Demand in its error body.
        assert!(
            refused["errors"].is_array() || refused["errors"].is_object(),
            "{what}: {refused}"
        );

        let (s4, _, fresh) = post(&url, &path, &[("idempotency-key", k2.as_str())], &body).await;
        assert_eq!(s4, 200, "{what}: {fresh}");
        assert_ne!(
            fresh["data"], first["data"],
            "{what}: a new key replayed the old answer"
        );

        let (s5, h5, theirs) = post(
            &url,
            &path,
            &[
                ("idempotency-key", k1.as_str()),
                ("authorization", "Bearer someone-else"),
            ],
            &body,
        )
        .await;
        assert_eq!(s5, 200, "{what}: {theirs}");
        assert!(
            !replayed(&h5),
            "{what}: one client's key replayed another's answer"
        );
    }
    // Two messages per route that posts one (k-1 and k-2, and the other client's k-1):
    // three each, never four.
    let messages = store.latest_messages(100).await.unwrap();
    assert_eq!(messages.len(), 6, "{messages:?}");
    // Uploads: three attachments each for single and demand (k-1, k-2, the other
    // client's), none for the chunk starts (they opened uploads).
    assert_eq!(store.attachment_count(), 6);
    assert_eq!(store.upload_count(), 3);
}

/// A key reused on another route is another request (422); malformed keys and two keys
/// are a 400 naming the header, and nothing is done.
#[tokio::test]
async fn keys_are_checked_and_bound_to_their_route() {
    let store = Arc::new(MemoryStore::new());
    let url = start(store.clone()).await;
    let body = json!({"message": {"content": "hello"}});
    let key = [("idempotency-key", "shared")];
    assert_eq!(post(&url, &conn_path(), &key, &body).await.0, 200);
    let other_conv = format!("/messaging/properties/{PROPERTY}/conversations/other-conv");
    let (status, _, answer) = post(&url, &other_conv, &key, &body).await;
    assert_eq!(status, 422, "{answer}");

    let long = "k".repeat(256);
    for bad in ["\"unterminated", "two words", "\"\"", long.as_str()] {
        let (status, _, answer) =
            post(&url, &conn_path(), &[("idempotency-key", bad)], &body).await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert!(answer.to_string().contains("Idempotency-Key"), "{answer}");
    }
    let (status, _, answer) = post(
        &url,
        &conn_path(),
        &[("idempotency-key", "a"), ("idempotency-key", "b")],
        &body,
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.to_string().contains("more than once"), "{answer}");
    assert_eq!(store.latest_messages(100).await.unwrap().len(), 1);

    // The client is its credentials as the server reads them: the scheme's case and
    // spacing do not make another client.
    let body = json!({"message": {"content": "credentials"}});
    for auth in ["Bearer T1", "bearer   T1 "] {
        let (status, headers, answer) = post(
            &url,
            &conn_path(),
            &[("idempotency-key", "auth-key"), ("authorization", auth)],
            &body,
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(replayed(&headers), auth != "Bearer T1", "{auth}");
    }
    assert_eq!(store.latest_messages(100).await.unwrap().len(), 2);
}

/// While the first request with a key runs (its store call held), a retry is answered
/// 409 with `Retry-After: 1`; once the first answers, the retry gets its answer.
#[tokio::test]
async fn a_retry_while_the_first_runs_is_told_to_come_back() {
    use common::hooked::{Hooked, Op, Then};
    let store = Arc::new(Hooked::new(MemoryStore::new()));
    store.set_hook(|op| match op {
        Op::Messages => Then::Hold {
            gate: 0,
            fail: false,
        },
        _ => Then::Go,
    });
    let url = start(store.clone()).await;
    let body = json!({"message": {"content": "slow"}});
    let key = [("idempotency-key", "slow-1")];
    let first = tokio::spawn({
        let (url, body) = (url.clone(), body.clone());
        async move { post(&url, &conn_path(), &key, &body).await }
    });
    // The first is in the store's hands once it reached the held call.
    for _ in 0..200 {
        if store.count(Op::Messages) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.count(Op::Messages), 1);
    let (status, headers, answer) = post(&url, &conn_path(), &key, &body).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    assert!(
        answer.to_string().contains("still being processed"),
        "{answer}"
    );
    store.release(0);
    let (status, _, first) = first.await.unwrap();
    assert_eq!(status, 200, "{first}");
    let (status, headers, again) = post(&url, &conn_path(), &key, &body).await;
    assert_eq!((status, &again), (200, &first));
    assert!(replayed(&headers));
    assert_eq!(
        store.count(Op::Messages),
        1,
        "the retries reached the store"
    );
}

/// A client that goes away mid-request (its connection closed a few milliseconds after
/// sending) and retries with the same key never creates a second message, on the fs store
/// whose writes outlive a dropped request: the claim, the effect and the answer run to
/// their end whatever becomes of the connection.
#[tokio::test]
async fn a_request_cut_off_mid_way_and_retried_takes_effect_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsStore::open(dir.path()).unwrap());
    let url = start(store.clone()).await;
    let trials = 40;
    for n in 0..trials {
        let key = format!("cut-{n}");
        let body = json!({"message": {"content": format!("message {n}")}});
        let cut = reqwest::Client::builder()
            .timeout(Duration::from_micros(500 + 250 * (n % 12)))
            .build()
            .unwrap();
        let _ = cut
            .post(format!("{url}{}", conn_path()))
            .header("idempotency-key", key.as_str())
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await;
        // The retry, until the first attempt's answer is there to replay (409 while it
        // still runs).
        let mut answered = None;
        for _ in 0..200 {
            let (status, _, answer) = post(
                &url,
                &conn_path(),
                &[("idempotency-key", key.as_str())],
                &body,
            )
            .await;
            if status == 200 {
                answered = Some(answer);
                break;
            }
            assert_eq!(status, 409, "trial {n}: {answer}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(answered.is_some(), "trial {n}: never answered");
    }
    let messages = store.latest_messages(1_000).await.unwrap();
    assert_eq!(
        messages.len(),
        trials as usize,
        "{} messages for {trials} posts",
        messages.len()
    );
}

/// A request that fails gives its key up: the retry runs (and can succeed).
#[tokio::test]
async fn a_failed_request_leaves_its_key_free() {
    let store = Arc::new(MemoryStore::new());
    let url = start(store.clone()).await;
    let key = [("idempotency-key", "retry-me")];
    // Too long a text: refused (400), nothing posted.
    let long = json!({"message": {"content": "x".repeat(9_000)}});
    assert_eq!(post(&url, &conn_path(), &key, &long).await.0, 400);
    // The refusal gave the key up, so the corrected request runs under it (while an
    // answered key would refuse another body with a 422).
    let ok = json!({"message": {"content": "fine"}});
    let (status, headers, answer) = post(&url, &conn_path(), &key, &ok).await;
    assert_eq!(status, 200, "{answer}");
    assert!(!replayed(&headers));
}

/// The chat upload keys on the file and its fields, not the multipart framing: a retry by
/// a client that picks a new boundary is the same request.
#[tokio::test]
async fn a_chat_upload_retried_with_another_boundary_is_replayed() {
    let store = Arc::new(MemoryStore::new());
    let url = start(store.clone()).await;
    let file = common::exact_jpeg(5_000);
    let send = |boundary: &'static str, name: &'static str| {
        let (url, file) = (url.clone(), file.clone());
        async move {
            let mut body = Vec::new();
            body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: image/jpeg\r\n\r\n").as_bytes());
            body.extend_from_slice(&file);
            body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
            let answer = reqwest::Client::new()
                .post(format!("{url}/v1/attachments"))
                .header("authorization", "Bearer chat-token")
                .header("idempotency-key", "\"chat-1\"")
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(body)
                .send()
                .await
                .unwrap();
            let status = answer.status().as_u16();
            let replay = replayed(answer.headers());
            let json: Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
            (status, replay, json)
        }
    };
    let (s1, r1, first) = send("first-boundary", "photo.jpg").await;
    assert_eq!((s1, r1), (200, false), "{first}");
    let (s2, r2, second) = send("another-boundary-42", "photo.jpg").await;
    assert_eq!((s2, r2, &second), (200, true, &first));
    let (s3, _, refused) = send("b3", "renamed.jpg").await;
    assert_eq!(s3, 422, "{refused}");
    assert_eq!(refused["error"]["status"], 422);
    assert_eq!(store.attachment_count(), 1);
    assert_eq!(
        store.upload_count(),
        0,
        "a replayed upload left its staging behind"
    );
}

/// A sandbox whose first answer to each path (POST) is lost on the way back: the request
/// runs, then the connection breaks in the middle of the answer. Counts POSTs.
async fn losing_first_answers(store: Arc<dyn Store>) -> (String, Arc<AtomicUsize>) {
    let sandbox = Sandbox::new(store, ServerConfig::default());
    let seen = Arc::new(Mutex::new(std::collections::HashSet::<String>::new()));
    let posts = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&posts);
    let router = sandbox.router().layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let seen = Arc::clone(&seen);
            let counted = Arc::clone(&counted);
            async move {
                let post = req.method() == axum::http::Method::POST;
                if post {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                let first = post && seen.lock().unwrap().insert(req.uri().path().to_owned());
                let answer = next.run(req).await;
                if !first {
                    return answer;
                }
                // The answer starts, then the connection fails: the client sent its body
                // and cannot know whether it took effect.
                let (parts, _) = answer.into_parts();
                let broken = futures::stream::iter([
                    Ok(bytes::Bytes::from_static(b"{\"da")),
                    Err(std::io::Error::other("connection lost")),
                ]);
                axum::response::Response::from_parts(parts, axum::body::Body::from_stream(broken))
            }
        },
    ));
    (common::serve_local(router).await, posts)
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy::new(4).with_delays(Duration::from_millis(5), Duration::from_millis(20))
}

/// Every client call that creates something, with its answer lost once: the retry (same
/// key) gets the first answer, and the store holds one message or attachment.
#[tokio::test]
async fn a_lost_answer_is_replayed_by_every_client_not_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let jpeg = dir.path().join("photo.jpg");
    std::fs::write(&jpeg, common::exact_jpeg(4_000)).unwrap();

    let store = Arc::new(MemoryStore::new());
    let (url, posts) = losing_first_answers(store.clone()).await;
    let conn = ConnectivityClient::new(&url)
        .unwrap()
        .with_retry(quick_retries());
    let message = conn
        .post_message(PROPERTY, CONV, "once", &[])
        .await
        .unwrap();
    assert_eq!(
        posts.swap(0, Ordering::SeqCst),
        2,
        "one lost answer, one replay"
    );
    conn.upload_file(PROPERTY, CONV, &jpeg, |_, _| {})
        .await
        .unwrap();
    assert_eq!(posts.swap(0, Ordering::SeqCst), 2);
    assert_eq!(store.attachment_count(), 1);

    let demand = DemandClient::new(&url).unwrap().with_retry(quick_retries());
    let to = DemandConversation {
        accommodation: PROPERTY,
        conversation: CONV.into(),
        reservation: Id::from("4011"),
    };
    let sent = demand
        .send(PROPERTY, &Id::from("4011"), "once too", &[])
        .await
        .unwrap();
    let demand_upload = demand.upload_file(&to, &jpeg).await.unwrap();
    assert_eq!(store.attachment_count(), 2);

    let chat = ChatClient::new(&url)
        .unwrap()
        .with_token("t")
        .unwrap()
        .with_retry(quick_retries());
    let chat_upload = chat.upload_file(&jpeg, None, None).await.unwrap();
    assert_eq!(store.attachment_count(), 3);
    assert_ne!(chat_upload.id, demand_upload.attachment_id);

    let messages = store.latest_messages(100).await.unwrap();
    let ids: Vec<&str> = messages.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&message.as_str()) && ids.contains(&sent.message_id.as_str()));
}

/// Without keys, a client does not send again a request whose body reached the server
/// (the answer was lost): the error comes back, and the effect happened once. A request
/// refused unread (503) is still retried.
#[tokio::test]
async fn without_keys_a_request_that_reached_the_server_is_not_retried() {
    let store = Arc::new(MemoryStore::new());
    let (url, posts) = losing_first_answers(store.clone()).await;
    let conn = ConnectivityClient::new(&url)
        .unwrap()
        .with_retry(quick_retries())
        .with_idempotency_keys(false);
    let err = conn
        .post_message(PROPERTY, CONV, "once", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, attachments::Error::Io(_)), "{err}");
    assert_eq!(
        posts.load(Ordering::SeqCst),
        1,
        "a request that reached the server was sent again"
    );
    assert_eq!(store.latest_messages(100).await.unwrap().len(), 1);

    // A 503 before the handler: not processed, so retried even without a key.
    let sandbox = Sandbox::new(Arc::new(MemoryStore::new()), ServerConfig::default());
    let refused = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&refused);
    let router = sandbox.router().layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let count = Arc::clone(&count);
            async move {
                if count.fetch_add(1, Ordering::SeqCst) == 0 {
                    return axum::response::IntoResponse::into_response((
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        [("retry-after", "0")],
                        "{}",
                    ));
                }
                next.run(req).await
            }
        },
    ));
    let url = common::serve_local(router).await;
    let conn = ConnectivityClient::new(&url)
        .unwrap()
        .with_retry(quick_retries())
        .with_idempotency_keys(false);
    conn.post_message(PROPERTY, CONV, "after a 503", &[])
        .await
        .unwrap();
    assert_eq!(refused.load(Ordering::SeqCst), 2);
}

proptest! {
    /// Any printable key of 1 to 255 characters survives the header value the clients
    /// write; any bytes at all give a key within the rules or an error naming the header.
    #[test]
    fn keys_round_trip_and_any_header_value_is_judged(
        key in "[ -~]{1,255}",
        raw in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        use attachments::idempotency::{IdempotencyKey, MAX_KEY_LEN};
        let quoted = format!("\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""));
        let parsed = IdempotencyKey::parse(quoted.as_bytes()).unwrap();
        prop_assert_eq!(parsed.as_str(), key.as_str());
        prop_assert_eq!(parsed.to_header_value(), quoted);
        match IdempotencyKey::parse(&raw) {
            Ok(k) => {
                prop_assert!(!k.as_str().is_empty() && k.as_str().len() <= MAX_KEY_LEN);
                prop_assert!(k.as_str().bytes().all(|b| (0x20..0x7f).contains(&b)));
            }
            Err(e) => prop_assert!(e.to_string().starts_with("Idempotency-Key "), "{}", e),
        }
    }
}

fn schedules() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        (0usize..4, any::<bool>()).prop_map(|(request, fails)| Step { request, fails }),
        1..40,
    )
}

fn run_schedule(store: &dyn KeyStore, schedule: &[Step]) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(conformance_keys::interleaving(store, schedule));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any interleaving of retries of one key (up to four requests, each failing or
    /// succeeding when it holds the key) takes effect at most once, exactly once if any
    /// succeeded, and every answer is that effect's: on each local backend.
    #[test]
    fn any_interleaving_of_retries_takes_effect_once(schedule in schedules()) {
        run_schedule(&MemoryStore::new(), &schedule);
        let dir = tempfile::tempdir().unwrap();
        run_schedule(&FsStore::open(dir.path()).unwrap(), &schedule);
        let object = ObjectStoreBackend::new(Arc::new(object_store::memory::InMemory::new()));
        run_schedule(&object, &schedule);
    }
}

/// The same on the real S3 server (fewer cases: each step is a round trip).
#[test]
#[ignore = "needs the S3 test server: scripts/s3-test-server.sh start, then cargo test --all-features -- --include-ignored (bash .ci/test does both)"]
fn any_interleaving_of_retries_takes_effect_once_on_s3() {
    let store = common::s3::s3().store("idempotency");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(16));
    runner
        .run(&schedules(), |schedule| {
            run_schedule(&store, &schedule);
            Ok(())
        })
        .unwrap();
}
