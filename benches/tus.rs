//! tus 1.0 over loopback, group `tus`, all on the same 10 MiB JPEG and counted in its
//! bytes, against the server `attachments serve` runs (`attachments::server::serve`, its
//! accept loop and socket wrapper) with the memory store:
//!
//! - `one_patch`: `POST` (creation), then the whole file in one `PATCH`: the server cuts
//!   it into 1 MiB pieces, checks (type, JPEG structure), hashes and stores each, saving
//!   the upload's record after each, then commits the attachment.
//! - `patches_1MiB`: the same with ten 1 MiB `PATCH`es, one after the other (what a tus
//!   client with `chunkSize: 1 MiB` sends).
//! - `one_patch_fs`: `one_patch` with the file-system store in a temporary directory (the
//!   storage a tus server such as rustus uses by default).
//! - `sha256_only`: SHA-256 over the same bytes on one core: the ceiling of every path that
//!   hashes.
//! - `drain_only`: the same bytes sent raw in one request to a route that only reads the
//!   body: what HTTP over loopback costs by itself.
//!
//! Each upload is terminated (`DELETE`) once done, inside the timing, so the store does not
//! grow over the run. `scripts/bench-rustus.sh` compares with rustus side by side.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::sync::Arc;

use attachments::server::{ListenOptions, Sandbox, ServerConfig, serve};
use attachments::store::{FsStore, MemoryStore, Store};
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;

const MIB: usize = 1 << 20;

/// Starts the sandbox on `store` with a `/drain` route; returns its base URL.
async fn start(store: Arc<dyn Store>) -> String {
    let sandbox = Sandbox::new(store, ServerConfig::default());
    let app = sandbox.router().route(
        "/drain",
        axum::routing::post(|body: axum::body::Body| async move {
            let mut stream = body.into_data_stream();
            let mut n = 0;
            while let Some(piece) = stream.next().await {
                n += piece.map(|p| p.len()).unwrap_or(0);
            }
            n.to_string()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(serve(
        listener,
        app,
        ListenOptions::default(),
        std::future::pending(),
    ));
    url
}

/// One tus upload of `file` to `url` in PATCHes of `piece` bytes, then its termination.
async fn upload(http: &reqwest::Client, url: &str, file: &Bytes, piece: usize) {
    let created = http
        .post(format!("{url}/files"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", file.len().to_string())
        .header("Upload-Metadata", "filetype aW1hZ2UvanBlZw==")
        .send()
        .await
        .expect("POST");
    assert_eq!(created.status(), 201);
    let at = created.headers()["location"]
        .to_str()
        .expect("Location")
        .to_owned();
    let mut offset = 0;
    while offset < file.len() {
        let end = (offset + piece).min(file.len());
        let response = http
            .patch(&at)
            .header("Tus-Resumable", "1.0.0")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", offset.to_string())
            .body(file.slice(offset..end))
            .send()
            .await
            .expect("PATCH");
        assert_eq!(response.status(), 204);
        offset = end;
    }
    let deleted = http
        .delete(&at)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status(), 204);
}

fn tus(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let jpeg = Bytes::from(common::exact_jpeg(10 * MIB));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (memory, fs) = rt.block_on(async {
        let fs_store = Arc::new(FsStore::open(dir.path()).expect("the directory store"));
        (
            start(Arc::new(MemoryStore::new())).await,
            start(fs_store).await,
        )
    });
    let http = reqwest::Client::new();

    let mut group = c.benchmark_group("tus");
    group.throughput(Throughput::Bytes(jpeg.len() as u64));
    group.sample_size(20);
    for (name, url, piece) in [
        ("one_patch/10MiB_jpeg", &memory, jpeg.len()),
        ("patches_1MiB/10MiB_jpeg", &memory, MIB),
        ("one_patch_fs/10MiB_jpeg", &fs, jpeg.len()),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| rt.block_on(upload(&http, url, &jpeg, piece)));
        });
    }
    group.bench_function("sha256_only/10MiB_jpeg", |b| {
        b.iter(|| black_box(attachments::digest::sha256(black_box(&jpeg))));
    });
    let drain = format!("{memory}/drain");
    group.bench_function("drain_only/10MiB_jpeg", |b| {
        b.iter(|| {
            rt.block_on(async {
                let response = http
                    .post(&drain)
                    .body(jpeg.clone())
                    .send()
                    .await
                    .expect("POST");
                assert_eq!(response.text().await.expect("body"), jpeg.len().to_string());
            });
        });
    });
    group.finish();
}

criterion_group!(benches, tus);
criterion_main!(benches);
