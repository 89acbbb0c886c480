//! End to end over loopback, group `e2e`, all on the same 10 MiB JPEG and counted in its
//! bytes:
//!
//! - `upload`: `ConnectivityClient::upload` (chunked, 10 requests) against the sandbox
//!   server (axum, memory store) on 127.0.0.1: the client checks, hashes and encodes every
//!   byte, the server parses, decodes, checks, hashes and stores it. Each chunk waits for
//!   the answer to the one before (the flow the Connectivity API's documentation
//!   describes; `docs/protocol.md`, *Pipelined chunks*).
//! - `upload_pipelined`: the same with `with_pipeline(2)`: the next chunk is sent while the
//!   one before is being checked, and waits on the server for its turn.
//! - `sha256_only`: SHA-256 over the same bytes on one core: the ceiling of either side.
//! - `drain_only`: the same bytes posted raw in one request to an axum route that only
//!   reads the body: what HTTP over loopback costs by itself.
//!
//! The runtime has two worker threads, so client and server can overlap their work.
//!
//! Group `chat_upload`, the chat-platform resource (`docs/protocol.md`, *Chat attachments
//! resource*), on the same JPEG:
//!
//! - `multipart`: `ChatClient::upload` streams the file as `multipart/form-data` to
//!   `POST /v1/attachments`; the server parses the form, checks the type and the JPEG's
//!   structure, hashes every byte and stores 1 MiB chunks (memory store).
//! - `sha256_only`: SHA-256 over the same bytes on one core (the ceiling).
//! - `drain_only`: the same bytes posted raw to a route that only reads the body.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::sync::Arc;

use attachments::client::{ChatClient, ChatUpload, ConnectivityClient};
use attachments::server::{Sandbox, ServerConfig};
use attachments::store::{MemoryStore, Store};
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn e2e(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let jpeg = common::exact_jpeg(10 << 20);
    let store = Arc::new(MemoryStore::new());
    let (url, drain_url) = rt.block_on(async {
        let sandbox = Sandbox::new(store.clone() as Arc<dyn Store>, ServerConfig::default());
        let app = sandbox.router().route(
            "/drain",
            axum::routing::post(|body: Bytes| async move { body.len().to_string() })
                .layer(axum::extract::DefaultBodyLimit::max(64 << 20)),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url.clone(), format!("{url}/drain"))
    });
    let clients = [
        (
            "upload/10MiB_jpeg",
            ConnectivityClient::new(&url).expect("a client"),
        ),
        (
            "upload_pipelined/10MiB_jpeg",
            ConnectivityClient::new(&url)
                .expect("a client")
                .with_pipeline(2),
        ),
    ];
    let http = reqwest::Client::new();

    let mut group = c.benchmark_group("e2e");
    group.throughput(Throughput::Bytes(jpeg.len() as u64));
    group.sample_size(20);
    for (name, client) in &clients {
        group.bench_function(*name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let reader = std::io::Cursor::new(&jpeg[..]);
                    let up = client
                        .upload(
                            1,
                            "c",
                            "photo.jpg",
                            "image/jpeg",
                            jpeg.len() as u64,
                            reader,
                            |_, _| {},
                        )
                        .await
                        .expect("uploaded");
                    // Deleted for good, so the store does not grow between iterations.
                    store
                        .delete_attachment(&up.attachment_id)
                        .await
                        .expect("removed");
                    black_box(up)
                })
            })
        });
    }
    group.bench_function("sha256_only/10MiB_jpeg", |b| {
        b.iter(|| black_box(attachments::digest::sha256(black_box(&jpeg))))
    });
    let body = Bytes::from(jpeg.clone());
    let drain = || {
        rt.block_on(async {
            let resp = http
                .post(&drain_url)
                .body(body.clone())
                .send()
                .await
                .expect("sent");
            black_box(resp.bytes().await.expect("answered"))
        })
    };
    group.bench_function("drain_only/10MiB_jpeg", |b| b.iter(drain));
    group.finish();

    let chat = ChatClient::new(&url)
        .expect("a client")
        .with_token("bench")
        .expect("a token");
    let mut group = c.benchmark_group("chat_upload");
    group.throughput(Throughput::Bytes(jpeg.len() as u64));
    group.sample_size(20);
    group.bench_function("multipart/10MiB_jpeg", |b| {
        b.iter(|| {
            rt.block_on(async {
                let reader = std::io::Cursor::new(body.clone());
                let upload = ChatUpload::new("photo.jpg").with_content_type("image/jpeg");
                let up = chat.upload(reader, upload).await.expect("uploaded");
                // Deleted for good: `remove` of an expired attachment now spares a
                // kept one, as chat attachments are, and the store grew 10 MiB an
                // iteration (the bench measured that, not the upload).
                store.delete_attachment(&up.id).await.expect("removed");
                black_box(up)
            })
        })
    });
    group.bench_function("sha256_only/10MiB_jpeg", |b| {
        b.iter(|| black_box(attachments::digest::sha256(black_box(&jpeg))))
    });
    group.bench_function("drain_only/10MiB_jpeg", |b| b.iter(drain));
    group.finish();
}

criterion_group!(benches, e2e);
criterion_main!(benches);
