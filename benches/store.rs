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

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

use attachments::Policy;
use attachments::store::{Expired, MemoryStore, Store};
use attachments::stream::UploadReceiver;
use attachments::upload::{Step, Target, UploadPlan};
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
                    rt.block_on(store.remove(&Expired::Attachment(att)))
                        .expect("remove");
                }
                spent
            })
        });
    }
    group.finish();
}

criterion_group!(benches, server_receive);
criterion_main!(benches);
