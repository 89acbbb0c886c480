//! Two `attachments serve` processes sharing one S3 bucket (a real S3 server: Ceph RGW from
//! `scripts/s3-test-server.sh start`), as behind a load balancer: an upload whose requests
//! alternate between them, downloads from either, and the same chunk sent to both at once.
#![cfg(all(feature = "cli", feature = "object-store"))]

mod common;

use attachments::Policy;
use attachments::client::ConnectivityClient;
use attachments::digest::sha256;
use attachments::download::DownloadOptions;
use attachments::upload::{Step, Target, UploadPlan};
use serde_json::Value;

const PROPERTY: u64 = 8011855;
const CONV: &str = "f3a9c29d-0e4c-5a8e-9d7f-2b1c4e6a8d0f";

fn start(s3: &common::s3::S3, prefix: &str) -> common::ServeProcess {
    let env: Vec<(String, String)> = s3
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    common::spawn_serve(&["--store", &s3.url(prefix)], &env)
}

/// Every request body of a chunked upload of `file`, the first to be sent without an
/// upload id; later bodies are built once the id is known, by `next`.
struct Bodies {
    plan: UploadPlan,
    file: Vec<u8>,
    fed: usize,
}

impl Bodies {
    fn new(file: Vec<u8>) -> Self {
        let plan = UploadPlan::new(
            &Policy::connectivity(),
            Target::Connectivity,
            "photo.jpg",
            "image/jpeg",
            file.len() as u64,
        )
        .unwrap()
        .with_chunk_size(700_000)
        .unwrap();
        Bodies { plan, file, fed: 0 }
    }

    fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.plan.poll().unwrap() {
                Step::NeedData => self.fed += self.plan.write(&self.file[self.fed..]).unwrap(),
                Step::Send(request) => return Some(request.body.to_vec()),
                Step::Done => return None,
                Step::NeedUploadId => panic!("the id is set after start"),
            }
        }
    }
}

async fn post_chunk(url: &str, body: Vec<u8>) -> (u16, Value) {
    let answer = reqwest::Client::new()
        .post(format!(
            "{url}/messaging/properties/{PROPERTY}/conversations/{CONV}/attachment_chunks"
        ))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    (
        status,
        serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap(),
    )
}

/// Downloads `id` from `url` by ranges and checks it is `file`.
async fn download_matches(url: &str, id: &str, file: &[u8]) {
    let client = ConnectivityClient::new(url).unwrap();
    let mut copy = Vec::new();
    let verified = client
        .download_to(
            PROPERTY,
            CONV,
            id,
            Some(sha256(file)),
            DownloadOptions::default().with_range_size(300_000),
            &mut copy,
        )
        .await
        .unwrap();
    assert_eq!(verified.size, file.len() as u64);
    assert!(
        copy == file,
        "the download from {url} differs from the file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the S3 test server: scripts/s3-test-server.sh start, then cargo test --all-features -- --include-ignored (bash .ci/test does both)"]
async fn an_upload_alternates_between_two_servers_and_races_end_whole() {
    let s3 = common::s3::s3();
    let prefix = common::s3::unique_prefix("multi");
    let servers = [start(&s3, &prefix), start(&s3, &prefix)];
    let urls = [servers[0].url.as_str(), servers[1].url.as_str()];

    // 1. Requests alternate: start on A, chunk 1 on B, chunk 2 on A, ...
    let file = common::exact_jpeg(3_300_000);
    let mut bodies = Bodies::new(file.clone());
    let mut attachment = None;
    let mut n = 0;
    while let Some(body) = bodies.next() {
        let (status, json) = post_chunk(urls[n % 2], body).await;
        assert_eq!(status, 200, "chunk {n} on server {}: {json}", n % 2);
        if let Some(id) = json["data"]["upload_id"].as_str() {
            bodies.plan.set_upload_id(id.to_owned());
        }
        if let Some(id) = json["data"]["attachment_id"].as_str() {
            attachment = Some(id.to_owned());
        }
        n += 1;
    }
    assert_eq!(n, 5, "3,300,000 bytes in chunks of 700,000");
    let id = attachment.expect("finish answered an attachment id");
    for url in urls {
        download_matches(url, &id, &file).await;
    }

    // 2. Every chunk after start is sent to both servers at once.
    let file = common::exact_jpeg(2_500_000);
    let mut bodies = Bodies::new(file.clone());
    let (status, json) = post_chunk(urls[0], bodies.next().unwrap()).await;
    assert_eq!(status, 200, "{json}");
    bodies
        .plan
        .set_upload_id(json["data"]["upload_id"].as_str().unwrap().to_owned());
    let mut attachment_ids = Vec::new();
    let mut wins = 0;
    while let Some(body) = bodies.next() {
        let ((sa, ja), (sb, jb)) =
            tokio::join!(post_chunk(urls[0], body.clone()), post_chunk(urls[1], body));
        eprintln!("raced chunk answered {sa} and {sb}");
        for (status, json) in [(sa, &ja), (sb, &jb)] {
            match status {
                200 => {
                    wins += 1;
                    attachment_ids
                        .extend(json["data"]["attachment_id"].as_str().map(str::to_owned));
                }
                // The loser of a race for the finish sees the upload committing.
                409 => assert!(
                    json["errors"][0]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("is being committed by an earlier finish")),
                    "{json}"
                ),
                other => panic!("a raced chunk answered {other}: {json}"),
            }
        }
        assert!(
            sa == 200 || sb == 200,
            "one of the two copies is accepted: {ja} / {jb}"
        );
    }
    assert!(
        wins >= 3,
        "each of the 3 raced chunks was accepted at least once"
    );
    attachment_ids.dedup();
    assert_eq!(
        attachment_ids.len(),
        1,
        "both answers name one attachment: {attachment_ids:?}"
    );
    for url in urls {
        download_matches(url, &attachment_ids[0], &file).await;
    }
}

async fn post_json(url: &str, path: &str, body: Value) -> Value {
    let answer = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let json: Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    assert_eq!(status, 200, "{path} on {url}: {json}");
    json
}

async fn latest_ids(url: &str) -> Vec<String> {
    let answer = reqwest::get(format!("{url}/3.1/messages/latest"))
        .await
        .unwrap();
    let json: Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    json["data"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the S3 test server: scripts/s3-test-server.sh start, then cargo test --all-features -- --include-ignored (bash .ci/test does both)"]
async fn messages_are_shared_by_two_servers_and_outlive_both() {
    let s3 = common::s3::s3();
    let prefix = common::s3::unique_prefix("multi-messages");
    let servers = [start(&s3, &prefix), start(&s3, &prefix)];
    let (a, b) = (servers[0].url.clone(), servers[1].url.clone());

    let path = format!("/messaging/properties/{PROPERTY}/conversations/{CONV}");
    let posted = post_json(
        &a,
        &path,
        serde_json::json!({"message": {"content": "one"}}),
    )
    .await;
    let first = posted["data"]["message_id"].as_str().unwrap().to_owned();
    let body = serde_json::json!({"reservation": "r", "accommodation": PROPERTY, "content": "two"});
    let sent = post_json(&b, "/3.1/messages/send", body).await;
    let second = sent["data"]["message_id"].as_str().unwrap().to_owned();
    assert_eq!(latest_ids(&a).await, [first.clone(), second.clone()]);
    assert_eq!(latest_ids(&b).await, [first.clone(), second.clone()]);

    let confirm = serde_json::json!({"messages": [first]});
    let confirmed = post_json(&a, "/3.1/messages/latest/confirm", confirm).await;
    assert_eq!(confirmed["data"]["confirmed"], 1);
    assert_eq!(latest_ids(&b).await, std::slice::from_ref(&second));

    // Both stop; a new server on the bucket has everything.
    drop(servers);
    let c = start(&s3, &prefix);
    assert_eq!(latest_ids(&c.url).await, [second]);
    let body =
        serde_json::json!({"conversation": CONV, "accommodation": PROPERTY, "reservation": "r"});
    let history = post_json(&c.url, "/3.1/messages/conversations", body).await;
    assert_eq!(history["data"]["messages"][0]["content"], "one");
}
