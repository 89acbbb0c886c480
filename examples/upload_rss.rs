//! Peak memory of the client side of a chunked upload: the upload plan and the stream
//! adapter run over a 10 MiB file and over a 1 GiB generated stream, each in its own child
//! process, and each child reports its peak resident set size (VmHWM). Memory is bounded
//! by one chunk, so the two figures differ by well under 1 MiB.
//!
//! ```text
//! cargo run --release --features async --example upload_rss
//! ```
//!
//! Both use the chat preset (any type) with the size limit lifted and Connectivity's chunk
//! size; bodies are dropped as soon as they are produced, as a client drops each one once
//! sent.

use std::io::Write;
use std::time::Instant;

use attachments::stream::BodyStream;
use attachments::upload::{Target, UploadPlan};
use attachments::{Limits, Policy};
use bytes::Bytes;
use futures::StreamExt;

const PIECE: usize = 64 * 1024;

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn policy() -> Policy {
    let mut limits = Limits::connectivity();
    limits.max_chunked_size = Some(u64::MAX);
    Policy::chat().with_limits(limits)
}

fn plan(size: u64) -> UploadPlan {
    UploadPlan::new(
        &policy(),
        Target::Connectivity,
        "big.bin",
        "application/octet-stream",
        size,
    )
    .expect("the lifted limit takes any size")
}

/// Drains the bodies; returns (bodies, body bytes).
async fn drain<R: tokio::io::AsyncRead + Unpin>(mut bodies: BodyStream<R>) -> (u64, u64) {
    let (mut count, mut bytes) = (0, 0);
    while let Some(request) = bodies.next().await {
        let request = request.expect("the upload goes through");
        count += 1;
        bytes += request.body.len() as u64;
        bodies.set_upload_id("ab88c360-0425-11eb-a250-9fc9f2abb407");
    }
    (count, bytes)
}

fn child(mode: &str, arg: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let (count, bytes, size) = rt.block_on(async {
        match mode {
            "file" => {
                let file = tokio::fs::File::open(arg).await.expect("the file exists");
                let size = file.metadata().await.expect("metadata").len();
                let (c, b) = drain(BodyStream::new(plan(size), file)).await;
                (c, b, size)
            }
            _ => {
                let size: u64 = arg.parse().expect("a size");
                let pieces =
                    futures::stream::iter((0..size.div_ceil(PIECE as u64)).map(move |i| {
                        let len = (size - i * PIECE as u64).min(PIECE as u64) as usize;
                        Ok::<_, std::io::Error>(Bytes::from(vec![(i % 251) as u8; len]))
                    }));
                let (c, b) = drain(BodyStream::from_stream(plan(size), pieces)).await;
                (c, b, size)
            }
        }
    });
    println!(
        "{mode}: {size} bytes -> {count} bodies, {bytes} body bytes in {:.2} s; peak RSS {} KiB",
        started.elapsed().as_secs_f64(),
        peak_rss_kib()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 {
        return child(&args[1], &args[2]);
    }
    let dir = std::env::temp_dir().join(format!("upload_rss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("ten.bin");
    let mut f = std::fs::File::create(&path).expect("temp file");
    for i in 0..160u32 {
        f.write_all(&[(i % 251) as u8; PIECE]).expect("write");
    }
    drop(f);
    let me = std::env::current_exe().expect("own path");
    let mut peaks = Vec::new();
    for (mode, arg) in [
        ("file", path.display().to_string()),
        ("stream", (1u64 << 30).to_string()),
    ] {
        let out = std::process::Command::new(&me)
            .args([mode, &arg])
            .output()
            .expect("child runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        println!("{line}");
        let kib: u64 = line
            .rsplit("peak RSS ")
            .next()
            .and_then(|s| s.trim_end_matches(" KiB").parse().ok())
            .expect("a figure");
        peaks.push(kib);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let diff = peaks[1].abs_diff(peaks[0]);
    println!("difference: {diff} KiB (10 MiB file vs 1 GiB stream)");
    assert!(
        diff < 1024,
        "memory must be bounded by one chunk, not by the file"
    );
}
