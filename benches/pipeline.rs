//! The upload pipeline against its baselines, in one criterion group so the ratios hold on
//! a noisy machine.
//!
//! - `memcpy`: copying the file once, the floor of any pass over it.
//! - `sha256_only`: SHA-256 of the file (`sha2`, SHA-NI where present), the ceiling of any
//!   path that hashes.
//! - `naive`: what a user writes by hand: `infer` on the whole buffer, SHA-256, and the
//!   `base64` crate's `encode` into a new `String`.
//! - `inspect_encode`: the crate's one pass: the `Inspector` (sniff, count, SHA-256,
//!   validator) and the streaming base64 `Encoder` writing into a reused body buffer, fed
//!   64 KiB slices as a file reader would deliver them.

use std::hint::black_box;

use attachments::codec::base64::Encoder;
use attachments::{Inspector, Policy};
use base64::Engine as _;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const SLICE: usize = 64 * 1024;

/// A PNG signature followed by pseudo-random bytes (xorshift), so sniffing succeeds and the
/// data does not compress into a special case.
fn input(len: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(len);
    data.extend_from_slice(b"\x89PNG\r\n\x1a\n");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    data
}

fn pipeline(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline");
    // Connectivity's chunked limit: 10 MiB files must be allowed through.
    let policy = Policy::connectivity();
    for (label, len) in [("1MiB", 1usize << 20), ("10MiB", 10 << 20)] {
        let data = input(len);
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
                    body.clear();
                    body.extend_from_slice(b"{\"file_content\":\"");
                    let mut inspector = Inspector::new(&policy, "image/png", Some(len as u64))
                        .expect("declared type and size are allowed");
                    let mut encoder = Encoder::new();
                    for slice in black_box(data).chunks(SLICE) {
                        inspector
                            .update_encode(slice, &mut encoder, &mut body)
                            .expect("valid input");
                    }
                    encoder.finish(&mut body);
                    body.extend_from_slice(b"\"}");
                    black_box(inspector.finish().expect("valid input"));
                    black_box(&body);
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
