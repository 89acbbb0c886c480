//! The upload pipeline against its baselines, in one criterion group so the ratios hold on
//! a noisy machine.
//!
//! - `memcpy`: copying the file once, the floor of any pass over it.
//! - `sha256_only`: SHA-256 of the file (`sha2`, SHA-NI where present), the ceiling of any
//!   path that hashes.
//! - `naive`: what a user writes by hand: `infer` on the whole buffer, SHA-256, and the
//!   `base64` crate's `encode` into a new `String`.
//! - `inspect_encode`: the crate's one pass: the `Inspector` (sniff, count, SHA-256, PNG
//!   structure with every chunk's CRC) and the streaming base64 `Encoder` writing into a
//!   reused body buffer, fed 64 KiB slices as a file reader would deliver them.
//! - `inspect_encode_novalidate`: the same with a pass-through validator, to show what the
//!   structural check costs.
//! - `validate_png` / `validate_jpeg`: the structural validators alone, fed 64 KiB slices.
//! - `client_bodies` (10 MiB JPEG): an `UploadPlan` fed 64 KiB slices, producing every
//!   `start` / `resume` / `finish` body (base64 written straight into each body, the
//!   Inspector with the JPEG structure check and SHA-256 over the same slices).
//! - `sessions_receive` (10 MiB JPEG): every one of those bodies parsed with borrowed
//!   strings, its chunk decoded into its own buffer, validated and hashed by an
//!   `UploadSession` kept in `Sessions` (the in-process registry an embedder may use),
//!   and kept in a map as a memory store keeps it: the IO-free receiving side, with no
//!   store. The server's own path, the stateless `UploadReceiver` saving each session in
//!   its store, is `server_receive` in `benches/store.rs`.
//!   `sha256_only_jpeg` is the SHA-256 baseline on the same file.
//! - `download_reassemble` (10 MiB JPEG): the base64 `file_content` of every range of a
//!   `RangePlan`, arriving in shuffled order, each decoded into its own buffer, put in a
//!   `Reassembler`, taken out in order and hashed, then verified against the SHA-256.
//!
//! Inputs are structurally valid images (IDAT chunks / entropy-coded data of pseudo-random
//! bytes, built by `tests/common`), so every byte goes through the real checks.

use std::hint::black_box;

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::time::SystemTime;

use attachments::codec::base64::{Decoder, Encoder, encode_to};
use attachments::download::{RangePlan, Reassembler};
use attachments::image::{jpeg::JpegValidator, png::PngValidator};
use attachments::upload::{RandomId, Received, Sessions, Step, Target, UploadPlan, UploadSession};
use attachments::wire::{self, connectivity::ChunkRequest};
use attachments::{AcceptAll, Inspector, Policy, Validator};
use base64::Engine as _;
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const SLICE: usize = 64 * 1024;

/// One upload body: the Inspector and the encoder over 64 KiB slices, into a reused buffer.
fn inspect_encode(mut inspector: Inspector, data: &[u8], body: &mut Vec<u8>) {
    body.clear();
    body.extend_from_slice(b"{\"file_content\":\"");
    let mut encoder = Encoder::new();
    for slice in data.chunks(SLICE) {
        inspector
            .update_encode(slice, &mut encoder, body)
            .expect("valid input");
    }
    encoder.finish(body);
    body.extend_from_slice(b"\"}");
    black_box(inspector.finish().expect("valid input"));
    black_box(&body);
}

/// Every request body of a chunked upload of `data`, fed in 64 KiB slices.
fn client_bodies(policy: &Policy, data: &[u8], mut sink: impl FnMut(Bytes)) {
    let mut plan = UploadPlan::new(
        policy,
        Target::Connectivity,
        "photo.jpg",
        "image/jpeg",
        data.len() as u64,
    )
    .expect("declared type and size are allowed");
    let mut fed = 0;
    loop {
        match plan.poll().expect("valid input") {
            Step::NeedData => {
                let end = (fed + SLICE).min(data.len());
                fed += plan.write(&data[fed..end]).expect("valid input");
            }
            Step::NeedUploadId => plan.set_upload_id("ab88c360-0425-11eb-a250-9fc9f2abb407"),
            Step::Send(request) => sink(request.body),
            Step::Done => return,
        }
    }
}

/// The receiving side of those bodies without a store: parse, session, keep the chunks.
fn sessions_receive(policy: &Policy, bodies: &[Bytes]) -> usize {
    let now = SystemTime::UNIX_EPOCH;
    let mut sessions = Sessions::default();
    let mut store: HashMap<(RandomId, u64), Bytes> = HashMap::new();
    let mut id = RandomId::from_bytes([1; 16]);
    let mut committed = 0;
    for body in bodies {
        let req: ChunkRequest<'_> = wire::from_slice(body).expect("valid body");
        let received = match &req.attachment.upload_id {
            None => {
                let (session, received) =
                    UploadSession::start(policy, id, &req.attachment, now).expect("valid chunk");
                sessions.insert(session);
                received
            }
            Some(_) => {
                let mut session = sessions
                    .check_out(&id.to_string(), req.attachment.chunk.chunk_number, now)
                    .expect("known upload");
                let received = session.receive(&req.attachment, now).expect("valid chunk");
                if let Received::Last { .. } = received {
                    session.committed("done");
                }
                sessions.check_in(session);
                received
            }
        };
        if let Received::Chunk { number, data, .. } | Received::Last { number, data, .. } = received
        {
            committed += data.len();
            store.insert((id, number), data);
        }
    }
    id = RandomId::from_bytes([2; 16]);
    black_box((store, id));
    committed
}

/// The client's side of a ranged download: decode each range's text as it arrives, place it,
/// drain what is contiguous, verify at the end.
fn download_reassemble(
    size: u64,
    digest: attachments::digest::Sha256Digest,
    texts: &[(u64, Vec<u8>)],
) -> u64 {
    let mut r = Reassembler::new(size, Some(digest)).with_cap(u64::MAX);
    let mut delivered = 0;
    for (offset, text) in texts {
        let mut buf = bytes::BytesMut::with_capacity(text.len() / 4 * 3);
        let mut dec = Decoder::new();
        dec.decode(text, &mut buf).expect("valid base64");
        dec.finish(&mut buf).expect("valid base64");
        r.insert(*offset, buf.freeze()).expect("consistent pieces");
        while let Some(b) = r.next_ready() {
            delivered += b.len() as u64;
            black_box(&b);
        }
    }
    black_box(r.finish().expect("verified"));
    delivered
}

fn upload(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline");
    let policy = Policy::connectivity();
    // A complete JPEG just under Connectivity's 10 MiB limit.
    let jpeg = common::structural_jpeg((10 << 20) - 50_000);
    assert!(jpeg.len() <= 10 << 20);
    let label = "10MiB_jpeg";
    group.throughput(Throughput::Bytes(jpeg.len() as u64));
    group.bench_with_input(
        BenchmarkId::new("sha256_only_jpeg", label),
        &jpeg,
        |b, data| b.iter(|| black_box(attachments::digest::sha256(black_box(data)))),
    );
    group.bench_with_input(
        BenchmarkId::new("client_bodies", label),
        &jpeg,
        |b, data| b.iter(|| client_bodies(&policy, black_box(data), |body| drop(black_box(body)))),
    );
    let mut bodies = Vec::new();
    client_bodies(&policy, &jpeg, |body| bodies.push(body));
    assert_eq!(bodies.len() as u64, (jpeg.len() as u64).div_ceil(1_048_575));
    assert_eq!(sessions_receive(&policy, &bodies), jpeg.len());
    group.bench_with_input(
        BenchmarkId::new("sessions_receive", label),
        &bodies,
        |b, bodies| b.iter(|| sessions_receive(&policy, black_box(bodies))),
    );
    // Ranges in a fixed shuffled order (a multiplicative permutation of the indices).
    let plan = RangePlan::new(jpeg.len() as u64);
    let n = plan.len();
    let texts: Vec<(u64, Vec<u8>)> = (0..n)
        .map(|i| (i * 7 + 3) % n)
        .map(|i| {
            let r = plan.range(i).expect("in the plan");
            let mut text = Vec::new();
            encode_to(&jpeg[r.start as usize..r.end as usize], &mut text);
            (r.start, text)
        })
        .collect();
    let digest = attachments::digest::sha256(&jpeg);
    assert_eq!(
        download_reassemble(jpeg.len() as u64, digest, &texts),
        jpeg.len() as u64
    );
    group.bench_with_input(
        BenchmarkId::new("download_reassemble", label),
        &texts,
        |b, texts| b.iter(|| download_reassemble(jpeg.len() as u64, digest, black_box(texts))),
    );
    group.finish();
}

fn pipeline(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline");
    // Connectivity's chunked limit: 10 MiB files must be allowed through.
    let policy = Policy::connectivity();
    for (label, len) in [("1MiB", 1usize << 20), ("10MiB", 10 << 20)] {
        // Exactly `len` bytes: a complete PNG whose IDAT data fills the rest.
        let data = common::structural_png(len);
        assert_eq!(data.len(), len);
        group.throughput(Throughput::Bytes(len as u64));

        let mut copy = vec![0u8; len];
        group.bench_with_input(BenchmarkId::new("memcpy", label), &data, |b, data| {
            b.iter(|| {
                copy.copy_from_slice(black_box(data));
                black_box(&copy);
            })
        });

        group.bench_with_input(BenchmarkId::new("sha256_only", label), &data, |b, data| {
            b.iter(|| black_box(attachments::digest::sha256(black_box(data))))
        });

        group.bench_with_input(BenchmarkId::new("naive", label), &data, |b, data| {
            b.iter(|| {
                let data = black_box(data);
                let kind = infer::get(data).map(|t| t.mime_type());
                let digest = attachments::digest::sha256(data);
                let text = base64::engine::general_purpose::STANDARD.encode(data);
                black_box((kind, digest, text))
            })
        });

        let mut body = Vec::with_capacity(attachments::codec::base64::encoded_len(len) + 256);
        group.bench_with_input(
            BenchmarkId::new("inspect_encode", label),
            &data,
            |b, data| {
                b.iter(|| {
                    let inspector = Inspector::new(&policy, "image/png", Some(len as u64))
                        .expect("declared type and size are allowed");
                    inspect_encode(inspector, black_box(data), &mut body)
                })
            },
        );

        group.bench_with_input(
            BenchmarkId::new("inspect_encode_novalidate", label),
            &data,
            |b, data| {
                b.iter(|| {
                    let validator = Box::new(AcceptAll);
                    let inspector = Inspector::with_validator(
                        &policy,
                        "image/png",
                        Some(len as u64),
                        validator,
                    )
                    .expect("declared type and size are allowed");
                    inspect_encode(inspector, black_box(data), &mut body)
                })
            },
        );

        group.bench_with_input(BenchmarkId::new("validate_png", label), &data, |b, data| {
            b.iter(|| {
                let mut v = PngValidator::new(&policy.limits.image, false);
                for slice in black_box(data).chunks(SLICE) {
                    v.update(slice).expect("valid input");
                }
                black_box(v.finish().expect("valid input"))
            })
        });

        let jpeg = common::structural_jpeg(len);
        group.throughput(Throughput::Bytes(jpeg.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("validate_jpeg", label),
            &jpeg,
            |b, data| {
                b.iter(|| {
                    let mut v = JpegValidator::new(&policy.limits.image, false);
                    for slice in black_box(data).chunks(SLICE) {
                        v.update(slice).expect("valid input");
                    }
                    black_box(v.finish().expect("valid input"))
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, pipeline, upload);
criterion_main!(benches);
