//! The server's receiving side on each store, in one criterion group (`server_receive`) so
//! the ratios hold on a noisy machine: every chunk body of a chunked upload of a 10 MiB
//! JPEG through the stateless `UploadReceiver` (parse, load the session record, restore,
//! decode + validate + hash, save the record conditionally, store the chunk; at `finish`,
//! commit), over
//!
//! - `memory`: the `MemoryStore`;
//! - `s3`: the `ObjectStoreBackend` on a real S3 server on loopback (Ceph RGW from
//!   `scripts/s3-test-server.sh start`; the bench stops with how to start it if nothing
//!   answers);
//! - `memory_pipelined`, `s3_pipelined`: the same with two chunks in flight after
//!   `start`, as from a client with `with_pipeline(2)`: the later chunk waits for its
//!   turn, and its work overlaps the earlier chunk's store writes;
//! - `sha256_only`: SHA-256 of the same file, the ceiling of any path that hashes.
//!
//! The bodies are built once, outside the measurement. Each measured upload's attachment
//! is removed afterwards, outside the measurement, so the bucket does not grow.
//!
//! Group `fs_list`: one page of 10 of a scope of 20 attachments from an `FsStore`
//! (`list_attachments`, newest first), `alone` in its store and `among_10000` other
//! scopes' attachments (1,000 scopes of 10, their ids interleaved with the scope's). Both
//! stores are filled once, through the store, before the measurement.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

use attachments::Policy;
use attachments::store::{AttachmentMeta, FsStore, ListQuery, MemoryStore, Store};
use attachments::stream::UploadReceiver;
use attachments::upload::{RandomId, Step, Target, UploadPlan};
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;

/// Every request body of a chunked Connectivity upload of `file`, with `upload_id` left
/// to be filled in: the bodies after `start` are templates with a fixed placeholder id.
const PLACEHOLDER: &str = "00000000-0000-0000-0000-000000000000";

fn bodies(file: &[u8]) -> Vec<Bytes> {
    let mut plan = UploadPlan::new(
        &Policy::connectivity(),
        Target::Connectivity,
        "photo.jpg",
        "image/jpeg",
        file.len() as u64,
    )
    .expect("allowed");
    let (mut fed, mut out) = (0, Vec::new());
    loop {
        match plan.poll().expect("valid") {
            Step::NeedData => fed += plan.write(&file[fed..]).expect("valid"),
            Step::NeedUploadId => plan.set_upload_id(PLACEHOLDER),
            Step::Send(request) => out.push(request.body),
            Step::Done => return out,
        }
    }
}

/// Sends every body through `receiver`, up to `depth` chunks at once after `start` (as
/// a pipelining client's requests arrive); returns the attachment id.
async fn receive(receiver: &UploadReceiver, bodies: &[Bytes], depth: usize) -> String {
    let first = receiver.chunk(&bodies[0], "").await.expect("valid start");
    let id = first.upload_id.expect("an upload id");
    // Same length, so a byte-for-byte substitution of the placeholder.
    let with_id = |body: &Bytes| {
        let text = std::str::from_utf8(body).expect("JSON is UTF-8");
        Bytes::from(text.replacen(PLACEHOLDER, &id, 1))
    };
    let answers: Vec<_> = futures::stream::iter(&bodies[1..])
        .map(|body| {
            let body = with_id(body);
            async move { receiver.chunk(&body, "").await }
        })
        .buffered(depth)
        .collect()
        .await;
    answers
        .into_iter()
        .filter_map(|a| a.expect("valid chunk").attachment_id)
        .next()
        .expect("an attachment id after the last body")
}

fn server_receive(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let file = common::exact_jpeg(10 << 20);
    let bodies = bodies(&file);
    let mut group = c.benchmark_group("server_receive");
    group.throughput(Throughput::Bytes(file.len() as u64));
    group.sample_size(20);

    group.bench_function("sha256_only", |b| {
        b.iter(|| black_box(attachments::digest::sha256(black_box(&file))))
    });

    let s3 = common::s3::s3();
    let stores: [(&str, Arc<dyn Store>); 2] = [
        ("memory", Arc::new(MemoryStore::new())),
        ("s3", Arc::new(s3.store("bench"))),
    ];
    let cases = stores
        .into_iter()
        .flat_map(|(name, store)| [(name, store.clone(), 1), (name, store, 2)]);
    for (name, store, depth) in cases {
        let receiver = UploadReceiver::new(Policy::connectivity(), Arc::clone(&store));
        let name = if depth == 1 {
            name.to_owned()
        } else {
            format!("{name}_pipelined")
        };
        group.bench_function(&name, |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let att = rt.block_on(receive(&receiver, black_box(&bodies), depth));
                    spent += started.elapsed();
                    rt.block_on(store.delete_attachment(&att)).expect("delete");
                }
                spent
            })
        });
    }
    group.finish();
}

/// An attachment of `scope` with a time-ordered id `n` milliseconds into the fill.
fn listed_meta(template: &AttachmentMeta, n: u64, scope: &str) -> AttachmentMeta {
    let mut random = [0u8; 16];
    random[..8].copy_from_slice(&n.to_be_bytes());
    let mut meta = template.clone();
    meta.id = RandomId::time_ordered(1_700_000_000_000 + n, random).to_string();
    meta.scope = scope.to_owned();
    meta
}

fn fs_list(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let data = Bytes::from_static(b"0123456789");
    let template = {
        let mut text = Vec::new();
        attachments::codec::base64::encode_to(&data, &mut text);
        let (_, info) = attachments::upload::receive_single(
            &Policy::chat(),
            "notes.txt",
            "text/plain",
            data.len() as u64,
            &text,
            std::time::SystemTime::now(),
        )
        .expect("a valid file");
        AttachmentMeta::new(RandomId::from_bytes([0; 16]).to_string(), &info, "")
    };
    // The scope's 20 attachments are every 501st of the 10,020.
    let fill = |store: Arc<FsStore>, others: bool| {
        let template = template.clone();
        let data = data.clone();
        async move {
            let metas: Vec<(String, AttachmentMeta)> = (0..10_020u64)
                .filter_map(|n| {
                    let scope = match (n % 501 == 0, others) {
                        (true, _) => "owner-0".to_owned(),
                        (false, true) => format!("owner-{}", 1 + n % 1000),
                        (false, false) => return None,
                    };
                    let upload = RandomId::from_bytes((u128::MAX - u128::from(n)).to_be_bytes());
                    Some((upload.to_string(), listed_meta(&template, n, &scope)))
                })
                .collect();
            futures::stream::iter(metas)
                .map(|(upload, meta)| {
                    let (store, data) = (Arc::clone(&store), data.clone());
                    async move {
                        store
                            .put_attachment(&upload, &meta, data)
                            .await
                            .expect("put_attachment")
                    }
                })
                .buffer_unordered(8)
                .collect::<Vec<()>>()
                .await;
        }
    };
    let (alone_dir, crowded_dir) = (
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
    );
    let alone = Arc::new(FsStore::open(alone_dir.path()).expect("store"));
    let crowded = Arc::new(FsStore::open(crowded_dir.path()).expect("store"));
    let started = Instant::now();
    rt.block_on(fill(Arc::clone(&alone), false));
    rt.block_on(fill(Arc::clone(&crowded), true));
    eprintln!("fs_list: stores filled in {:.1?}", started.elapsed());
    let query = ListQuery::new("owner-0", 10);
    let mut group = c.benchmark_group("fs_list");
    for (name, store) in [("alone", &alone), ("among_10000", &crowded)] {
        let page = rt
            .block_on(store.list_attachments(&query))
            .expect("list_attachments");
        assert_eq!(page.len(), 10, "a page of 10 of the 20");
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(store.list_attachments(black_box(&query)))
                    .expect("list_attachments")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, server_receive, fs_list);
criterion_main!(benches);
