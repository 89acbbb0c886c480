//! Virus scanning's cost, group `scan`, all on the same 10 MiB JPEG over loopback and
//! counted in its bytes. Needs the test clamd (`scripts/clamd-test-server.sh start`, then
//! `eval "$(scripts/clamd-test-server.sh env)"`); without it the bench stops and says so.
//!
//! - `upload`: `ConnectivityClient::upload` (chunked, 10 requests) to the sandbox (memory
//!   store), no scanner: the `e2e` group's `upload`.
//! - `upload_scanned`: the same with the clamd scanner: at `finish` the staged file is
//!   read back from the store and streamed to clamd whole (scan at commit).
//! - `clamd_only`: the same bytes streamed to clamd by the client alone, from memory (what
//!   scanning during receive would add at best: clamd's own time plus the socket).
//! - `reread_only`: the staged file read back from an fs store (a temporary directory, in
//!   the page cache) in 1 MiB pieces: what scanning at commit adds beside clamd, on the
//!   store where a read is a real copy (the memory store's is a reference count).
//! - `sha256_only`: SHA-256 over the same bytes on one core (the ceiling of every path that
//!   hashes).

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::sync::Arc;

use attachments::client::ConnectivityClient;
use attachments::scan::{ClamdScanner, Scanner};
use attachments::server::{Sandbox, ServerConfig};
use attachments::store::{MemoryStore, Store};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn scanner() -> ClamdScanner {
    let spec = std::env::var("ATTACHMENTS_CLAMD").expect(
        "ATTACHMENTS_CLAMD is not set: scripts/clamd-test-server.sh start, then eval \"$(scripts/clamd-test-server.sh env)\"",
    );
    let max = std::env::var("ATTACHMENTS_CLAMD_STREAM_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64 << 20);
    ClamdScanner::parse(&spec)
        .expect("a clamd address")
        .with_stream_max(max)
}

fn scan(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let jpeg = common::exact_jpeg(10 << 20);
    let scanner = scanner();
    rt.block_on(scanner.ping()).expect("clamd answers PING");
    let store = Arc::new(MemoryStore::new());
    let serve = |config: ServerConfig| {
        let store = store.clone() as Arc<dyn Store>;
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let url = format!("http://{}", listener.local_addr().expect("addr"));
            let app = Sandbox::new(store, config).router();
            tokio::spawn(async move { axum::serve(listener, app).await });
            url
        })
    };
    let plain = serve(ServerConfig::default());
    let scanned = serve(ServerConfig::default().with_scanner(Arc::new(scanner.clone()), false));

    let mut group = c.benchmark_group("scan");
    group.throughput(Throughput::Bytes(jpeg.len() as u64));
    group.sample_size(20);
    for (name, url) in [
        ("upload/10MiB_jpeg", &plain),
        ("upload_scanned/10MiB_jpeg", &scanned),
    ] {
        let client = ConnectivityClient::new(url).expect("a client");
        group.bench_function(name, |b| {
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
                    store
                        .delete_attachment(&up.attachment_id)
                        .await
                        .expect("removed");
                    black_box(up)
                })
            })
        });
    }
    group.bench_function("clamd_only/10MiB_jpeg", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut stream = scanner.open(jpeg.len() as u64).await.expect("open");
                for piece in jpeg.chunks(1 << 20) {
                    stream.feed(piece).await.expect("feed");
                }
                black_box(stream.verdict().await.expect("verdict"))
            })
        })
    });
    // A staged upload of the same file, in 1 MiB chunks, read back as the scan reads it.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let staged = attachments::store::FsStore::open(dir.path()).expect("an fs store");
    let id = attachments::upload::RandomId::from_bytes([7; 16]).to_string();
    rt.block_on(async {
        staged
            .begin_upload(&id, std::time::SystemTime::now())
            .await
            .expect("begin");
        for (n, piece) in jpeg.chunks(1 << 20).enumerate() {
            let offset = (n << 20) as u64;
            staged
                .put_chunk(&id, n as u64, offset, bytes::Bytes::copy_from_slice(piece))
                .await
                .expect("chunk");
        }
    });
    group.bench_function("reread_only/10MiB_jpeg", |b| {
        b.iter(|| {
            rt.block_on(async {
                let size = jpeg.len() as u64;
                let mut at = 0;
                while at < size {
                    let end = (at + (1 << 20)).min(size);
                    black_box(staged.read_staged(&id, at..end).await.expect("read"));
                    at = end;
                }
            })
        })
    });
    group.bench_function("sha256_only/10MiB_jpeg", |b| {
        b.iter(|| black_box(attachments::digest::sha256(black_box(&jpeg))))
    });
    group.finish();
}

criterion_group!(benches, scan);
criterion_main!(benches);
