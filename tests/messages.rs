//! Messages live in the store: two sandboxes on one store (two server processes behind a
//! load balancer) share them, and a sandbox started later on the same store (a restart)
//! finds every one. On the file-system store and on the S3 store (a real S3 server: Ceph
//! RGW from `scripts/s3-test-server.sh start`).
#![cfg(all(feature = "server", feature = "client", feature = "object-store"))]

mod common;

use std::sync::Arc;

use attachments::server::{Sandbox, ServerConfig};
use attachments::store::{FsStore, Store};
use serde_json::{Value, json};

const PROPERTY: u64 = 2098153;
const CONV: &str = "f3a9c29d-0e4c-5a8e-9d7f-2b1c4e6a8d0f";

async fn start(store: Arc<dyn Store>) -> String {
    // The server's log (a 5xx names its cause there) goes with a failing test's output.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("attachments=debug")
        .try_init();
    common::serve_local(Sandbox::new(store, ServerConfig::default()).router()).await
}

async fn post(url: &str, path: &str, body: &Value) -> Value {
    let answer = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let json: Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    assert_eq!(status, 200, "{path}: {json}");
    json
}

async fn latest(url: &str) -> Vec<Value> {
    let answer = reqwest::get(format!("{url}/3.1/messages/latest"))
        .await
        .unwrap();
    let json: Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    json["data"]["messages"].as_array().unwrap().clone()
}

async fn history(url: &str, conversation: &str) -> Vec<Value> {
    let body = json!({"conversation": conversation, "accommodation": PROPERTY, "reservation": 1});
    post(url, "/3.1/messages/conversations", &body).await["data"]["messages"]
        .as_array()
        .unwrap()
        .clone()
}

fn ids(messages: &[Value]) -> Vec<&str> {
    messages
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect()
}

/// `a` and `b` are two handles on one store; `restart` opens a third once they are done.
async fn two_servers_share_messages_and_a_restart_keeps_them(
    a: Arc<dyn Store>,
    b: Arc<dyn Store>,
    restart: impl FnOnce() -> Arc<dyn Store>,
) {
    let (a, b) = (start(a).await, start(b).await);

    // A Connectivity post on A.
    let body = json!({"message": {"content": "Welcome!"}});
    let path = format!("/messaging/properties/{PROPERTY}/conversations/{CONV}");
    let posted = post(&a, &path, &body).await;
    let first = posted["data"]["message_id"].as_str().unwrap().to_owned();

    // A Demand upload on B names the reservation's conversation; a send on A uses it.
    let file = common::exact_jpeg(3_000);
    let mut content = Vec::new();
    attachments::codec::base64::encode_to(&file, &mut content);
    let body = json!({"accommodation": PROPERTY, "conversation": "conv-r1", "reservation": "r1",
        "file_content": String::from_utf8(content).unwrap(), "file_name": "p.jpg",
        "file_type": "image/jpeg", "file_size": file.len()});
    let up = post(&b, "/3.1/messages/attachments/upload", &body).await;
    let attachment = up["data"]["attachment"].as_str().unwrap().to_owned();
    let body = json!({"reservation": "r1", "accommodation": PROPERTY, "content": "The photo",
        "attachments": [attachment]});
    let sent = post(&a, "/3.1/messages/send", &body).await;
    assert_eq!(sent["data"]["conversation"], "conv-r1");
    let second = sent["data"]["message_id"].as_str().unwrap().to_owned();

    // B sees both, in the order they were posted.
    let seen = latest(&b).await;
    assert_eq!(ids(&seen), [first.as_str(), second.as_str()]);
    assert_eq!(seen[0]["conversation"], CONV);
    assert_eq!(seen[1]["attachments"], json!([attachment]));

    // A confirm on B is seen by A, and counts once.
    let body = json!({"messages": [first]});
    let confirmed = post(&b, "/3.1/messages/latest/confirm", &body).await;
    assert_eq!(confirmed["data"]["confirmed"], 1);
    let again = post(&a, "/3.1/messages/latest/confirm", &body).await;
    assert_eq!(again["data"]["confirmed"], 0);
    assert_eq!(ids(&latest(&a).await), [second.as_str()]);

    // Two sends for a new reservation, at once on A and B: one conversation.
    let body = json!({"reservation": "r2", "accommodation": PROPERTY, "content": "hi"});
    let (x, y) = tokio::join!(
        post(&a, "/3.1/messages/send", &body),
        post(&b, "/3.1/messages/send", &body)
    );
    assert_eq!(x["data"]["conversation"], y["data"]["conversation"]);

    // A restart: a new server on the store finds everything.
    let c = start(restart()).await;
    assert_eq!(latest(&c).await.len(), 3);
    assert_eq!(ids(&latest(&c).await)[0], second);
    assert_eq!(ids(&history(&c, CONV).await), [first.as_str()]);
    assert_eq!(ids(&history(&c, "conv-r1").await), [second.as_str()]);
    let conversation = x["data"]["conversation"].as_str().unwrap();
    assert_eq!(history(&c, conversation).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_servers_on_one_directory_share_messages_and_a_restart_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let open = || Arc::new(FsStore::open(dir.path()).unwrap()) as Arc<dyn Store>;
    two_servers_share_messages_and_a_restart_keeps_them(open(), open(), open).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the S3 test server: scripts/s3-test-server.sh start, then cargo test --all-features -- --include-ignored (bash .ci/test does both)"]
async fn s3_servers_on_one_prefix_share_messages_and_a_restart_keeps_them() {
    let s3 = common::s3::s3();
    let prefix = common::s3::unique_prefix("messages");
    let open = || Arc::new(s3.store_at(&prefix)) as Arc<dyn Store>;
    two_servers_share_messages_and_a_restart_keeps_them(open(), open(), open).await;
}
