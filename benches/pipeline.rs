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
//!
//! Inputs are structurally valid images (IDAT chunks / entropy-coded data of pseudo-random
//! bytes, built by `tests/common`), so every byte goes through the real checks.

use std::hint::black_box;

#[path = "../tests/common/mod.rs"]
mod common;

use attachments::codec::base64::Encoder;
use attachments::image::{jpeg::JpegValidator, png::PngValidator};
use attachments::{AcceptAll, Inspector, Policy, Validator};
use base64::Engine as _;
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
                let mut v = PngValidator::new(&policy.limits, false);
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
                    let mut v = JpegValidator::new(&policy.limits, false);
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

criterion_group!(benches, pipeline);
criterion_main!(benches);
