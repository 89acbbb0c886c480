//! The async downloader: ranges in flight, retries with backoff, AsyncWrite and Stream
//! output, resume from a checkpoint or from the bytes already written.
//!
//! The sources here stand in for a server so that faults can be placed exactly (every
//! k-th request fails, answers short, answers one byte more); the HTTP client over a real
//! loopback server is tested in the end-to-end tests.
#![cfg(feature = "async")]

mod common;

use std::ops::Range;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use proptest::prelude::*;

use attachments::digest::sha256;
use attachments::download::{
    Checkpoint, DownloadOptions, Downloader, RangeSource, StoreSource, checkpoint_from_prefix,
    download_to_file,
};
use attachments::error::PieceProblem;
use attachments::retry::RetryPolicy;
use attachments::{Error, Result};

/// A server holding `file`, with faults placed by request number (1-based).
#[derive(Default)]
struct Faulty {
    file: Bytes,
    /// Reads `to` as inclusive: returns one byte more than asked, where there is one.
    inclusive: bool,
    /// Every k-th request fails with a 503 (0: never).
    fail_every: u32,
    /// Every k-th request returns only the first half of its bytes (0: never).
    short_every: u32,
    /// Every request fails with this status (0: never).
    always: u16,
    /// Seconds in the `Retry-After` of the failures.
    retry_after: Option<u64>,
    /// Flips the byte at this offset in every response that carries it.
    corrupt_at: Option<u64>,
    /// Flips the extra byte an inclusive reading adds.
    corrupt_extra: bool,
    /// Simulated latency per request, in ms, varied by request number to shuffle arrivals.
    latency_ms: u64,
    calls: AtomicU32,
    running: AtomicUsize,
    most_running: AtomicUsize,
    asked: Mutex<Vec<Range<u64>>>,
}

impl Faulty {
    fn new(file: Vec<u8>) -> Self {
        Faulty {
            file: Bytes::from(file),
            ..Faulty::default()
        }
    }

    fn size(&self) -> u64 {
        self.file.len() as u64
    }

    fn asked(&self) -> Vec<Range<u64>> {
        self.asked.lock().unwrap().clone()
    }
}

#[async_trait]
impl RangeSource for Faulty {
    async fn fetch(&self, range: Range<u64>) -> Result<Bytes> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.asked.lock().unwrap().push(range.clone());
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_running.fetch_max(now, Ordering::SeqCst);
        if self.latency_ms > 0 {
            let ms = (u64::from(n) * 7919) % (self.latency_ms + 1);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        let failing =
            self.always != 0 || (self.fail_every != 0 && n.is_multiple_of(self.fail_every));
        if failing {
            return Err(Error::Remote {
                status: if self.always != 0 { self.always } else { 503 },
                message: "Service Unavailable".into(),
                retry_after: self.retry_after.map(Duration::from_secs),
            });
        }
        let size = self.size();
        let mut end = if self.inclusive {
            (range.end + 1).min(size)
        } else {
            range.end.min(size)
        };
        if self.short_every != 0 && n.is_multiple_of(self.short_every) {
            end = range.start + (end - range.start) / 2;
        }
        let mut piece = self.file.slice(range.start as usize..end as usize);
        if self.corrupt_extra && end > range.end {
            let mut copy = piece.to_vec();
            *copy.last_mut().unwrap() ^= 0x01;
            piece = Bytes::from(copy);
        }
        if let Some(at) = self.corrupt_at.filter(|at| (range.start..end).contains(at)) {
            let mut copy = piece.to_vec();
            copy[(at - range.start) as usize] ^= 0x40;
            piece = Bytes::from(copy);
        }
        Ok(piece)
    }
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

fn quick_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy::new(attempts).with_delays(Duration::from_millis(100), Duration::from_secs(2))
}

/// Drives a download by hand, checking the memory bound after every step.
async fn drain(mut d: Downloader<Arc<Faulty>>, cap: u64) -> Result<(Vec<u8>, u64)> {
    let mut out = Vec::new();
    while let Some(bytes) = d.next().await {
        out.extend_from_slice(&bytes?);
        assert!(d.buffered() <= cap, "{} buffered, cap {cap}", d.buffered());
    }
    let verified = d.finish()?;
    assert_eq!(verified.sha256, sha256(&out));
    Ok((out, verified.size))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_fault_pattern_yields_the_file_in_order(
        size in 0usize..1_500_000,
        range_size in 1_000u64..300_000,
        in_flight in 1usize..8,
        inclusive in any::<bool>(),
        fail_every in prop_oneof![Just(0u32), 2u32..6],
        short_every in prop_oneof![Just(0u32), 2u32..6],
        cap in prop_oneof![Just(None), (0u64..600_000).prop_map(Some)],
        seed in any::<u32>(),
    ) {
        let file = common::noise(size, seed);
        let source = Arc::new(Faulty {
            inclusive,
            fail_every,
            short_every,
            latency_ms: 20,
            ..Faulty::new(file.clone())
        });
        let mut options = DownloadOptions::default()
            .with_range_size(range_size)
            .with_in_flight(in_flight)
            // Enough attempts that alternating faults cannot exhaust them.
            .with_retry(quick_retry(12));
        if let Some(cap) = cap {
            options = options.with_out_of_order_cap(cap);
        }
        let cap = options.out_of_order_cap();
        let d = Downloader::new(source.clone(), size as u64, Some(sha256(&file)), options);
        let (out, verified) = paused_runtime().block_on(drain(d, cap)).unwrap();
        prop_assert_eq!(verified, size as u64);
        prop_assert!(out == file, "reassembled bytes differ");
        prop_assert!(source.most_running.load(Ordering::SeqCst) <= in_flight);
    }
}

#[tokio::test(start_paused = true)]
async fn requests_run_in_parallel_up_to_the_limit() {
    let file = common::noise(5_000_000, 1);
    let source = Arc::new(Faulty {
        latency_ms: 50,
        ..Faulty::new(file.clone())
    });
    let options = DownloadOptions::default()
        .with_in_flight(3)
        .with_range_size(250_000);
    let d = Downloader::new(source.clone(), 5_000_000, Some(sha256(&file)), options);
    let mut out = Vec::new();
    let verified = d.write_to(&mut out).await.unwrap();
    assert_eq!(verified.size, 5_000_000);
    assert_eq!(out, file);
    assert_eq!(source.most_running.load(Ordering::SeqCst), 3);
    // Every range asked once, in order of the plan.
    let asked = source.asked();
    assert_eq!(asked.len(), 20);
    assert!(asked.windows(2).all(|w| w[0].end == w[1].start));
}

#[tokio::test(start_paused = true)]
async fn a_failing_range_is_retried_with_growing_waits_then_given_up() {
    let source = Arc::new(Faulty {
        always: 503,
        ..Faulty::new(vec![1; 1000])
    });
    let options = DownloadOptions::default().with_retry(quick_retry(4));
    let mut d = Downloader::new(source.clone(), 1000, None, options);
    let started = tokio::time::Instant::now();
    let err = d.next().await.unwrap().unwrap_err();
    let waited = started.elapsed();
    match &err {
        Error::RetriesExhausted {
            range,
            attempts,
            last,
        } => {
            assert_eq!((range.clone(), *attempts), (0..1000, 4));
            assert_eq!(last.status(), 502);
            assert!(matches!(**last, Error::Remote { status: 503, .. }));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "gave up on bytes 0..1000 after 4 attempts; the last error was: the server answered \
         503: Service Unavailable"
    );
    assert_eq!(source.calls.load(Ordering::SeqCst), 4);
    // Waits of [50, 100] + [100, 200] + [200, 400] ms.
    assert!(
        (Duration::from_millis(350)..=Duration::from_millis(700)).contains(&waited),
        "{waited:?}"
    );
    // The download is over: no more bytes, no more requests.
    assert!(d.next().await.is_none());
    assert_eq!(source.calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_waited_for() {
    let file = common::noise(10_000, 3);
    let source = Arc::new(Faulty {
        fail_every: 2,
        retry_after: Some(3),
        ..Faulty::new(file.clone())
    });
    let options = DownloadOptions::default()
        .with_in_flight(1)
        .with_range_size(5_000)
        .with_retry(quick_retry(3).with_delays(Duration::from_millis(1), Duration::from_secs(60)));
    let started = tokio::time::Instant::now();
    let mut out = Vec::new();
    let d = Downloader::new(source.clone(), 10_000, Some(sha256(&file)), options);
    d.write_to(&mut out).await.unwrap();
    assert_eq!(out, file);
    // Request 2 failed and asked for 3 s; request 3 got the second range.
    assert_eq!(source.calls.load(Ordering::SeqCst), 3);
    assert!(started.elapsed() >= Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_is_not_retried() {
    let source = Arc::new(Faulty {
        always: 404,
        ..Faulty::new(vec![1; 1000])
    });
    let d = Downloader::new(source.clone(), 1000, None, DownloadOptions::default());
    let items: Vec<_> = d.into_stream().collect().await;
    assert_eq!(items.len(), 1);
    assert!(matches!(items[0], Err(Error::Remote { status: 404, .. })));
    assert_eq!(source.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_stream_ends_with_an_error_when_the_digest_is_wrong() {
    let file = common::noise(2_000_000, 4);
    let source = Arc::new(Faulty {
        corrupt_at: Some(1_500_000),
        ..Faulty::new(file.clone())
    });
    let d = Downloader::new(
        source,
        2_000_000,
        Some(sha256(&file)),
        DownloadOptions::default(),
    );
    let items: Vec<_> = d.into_stream().collect().await;
    let (last, bytes) = items.split_last().unwrap();
    let delivered: usize = bytes.iter().map(|b| b.as_ref().unwrap().len()).sum();
    assert_eq!(delivered, 2_000_000);
    assert!(matches!(
        last,
        Err(Error::Piece(PieceProblem::DigestMismatch { .. }))
    ));

    // Without a corruption the stream is the file and ends cleanly.
    let source = Arc::new(Faulty::new(file.clone()));
    let d = Downloader::new(
        source,
        2_000_000,
        Some(sha256(&file)),
        DownloadOptions::default(),
    );
    let items: Vec<Bytes> = d.into_stream().map(|b| b.unwrap()).collect().await;
    assert_eq!(items.concat(), file);
}

#[tokio::test(start_paused = true)]
async fn an_inconsistent_extra_byte_is_a_conflict_naming_its_offset() {
    // An inclusive server whose extra byte (the first of the next range) is wrong.
    let file = common::noise(2_000, 5);
    let source = Arc::new(Faulty {
        inclusive: true,
        corrupt_extra: true,
        ..Faulty::new(file.clone())
    });
    let options = DownloadOptions::default()
        .with_in_flight(1)
        .with_range_size(1000);
    let mut d = Downloader::new(source.clone(), 2_000, Some(sha256(&file)), options);
    let mut items = Vec::new();
    while let Some(item) = d.next().await {
        items.push(item);
    }
    let err = items.pop().unwrap().unwrap_err();
    assert_eq!(err, Error::Piece(PieceProblem::Conflict { offset: 1000 }));
    assert_eq!(
        err.to_string(),
        "download piece rejected: the bytes at offset 1000 differ from those an earlier piece \
         brought; the server returned inconsistent content"
    );
    // Not retried: the server contradicts itself.
    assert_eq!(source.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn resume_from_a_saved_checkpoint_fetches_only_the_rest() {
    let file = common::noise(3_000_000, 6);
    let options = DownloadOptions::default().with_range_size(400_000);
    let source = Arc::new(Faulty::new(file.clone()));
    let mut d = Downloader::new(source, 3_000_000, Some(sha256(&file)), options);
    let mut written = Vec::new();
    while written.len() < 1_000_000 {
        written.extend_from_slice(&d.next().await.unwrap().unwrap());
    }
    // Saved as JSON after the bytes it covers, then the process "dies".
    let saved = serde_json::to_string(&d.checkpoint()).unwrap();
    drop(d);

    let checkpoint: Checkpoint = serde_json::from_str(&saved).unwrap();
    assert_eq!(checkpoint.offset, written.len() as u64);
    let source = Arc::new(Faulty::new(file.clone()));
    let d = Downloader::resume(
        source.clone(),
        &checkpoint,
        3_000_000,
        Some(sha256(&file)),
        options,
    )
    .unwrap();
    let verified = d.write_to(&mut written).await.unwrap();
    assert_eq!(written, file);
    assert_eq!(verified.sha256, sha256(&file));
    assert!(
        source.asked().iter().all(|r| r.start >= checkpoint.offset),
        "{:?}",
        source.asked()
    );

    // A checkpoint for another file is refused with the numbers.
    let err = Downloader::resume(source, &checkpoint, 2_999_999, None, options).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot resume the download: the checkpoint is for a file of 3000000 bytes, this one \
         has 2999999"
    );
}

#[tokio::test(start_paused = true)]
async fn a_damaged_checkpoint_is_refused() {
    let source = Arc::new(Faulty::new(vec![0; 10]));
    let mut checkpoint =
        Downloader::new(source.clone(), 10, None, DownloadOptions::default()).checkpoint();
    checkpoint.sha256_state.truncate(20);
    let err =
        Downloader::resume(source, &checkpoint, 10, None, DownloadOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Resume { .. }), "{err}");
    assert!(
        err.to_string().contains("not a saved SHA-256 state"),
        "{err}"
    );
}

#[tokio::test]
async fn a_file_download_resumes_after_the_bytes_on_disk() {
    let file = common::noise(2_500_000, 7);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("photo.jpg");
    std::fs::write(&path, &file[..1_234_567]).unwrap();

    let source = Arc::new(Faulty::new(file.clone()));
    let verified = download_to_file(
        source.clone(),
        &path,
        2_500_000,
        Some(sha256(&file)),
        DownloadOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(verified.size, 2_500_000);
    assert_eq!(std::fs::read(&path).unwrap(), file);
    assert_eq!(source.asked().first().map(|r| r.start), Some(1_234_567));

    // A prefix that is not the file's start is caught by the digest.
    let mut wrong = file[..1_000].to_vec();
    wrong[10] ^= 1;
    std::fs::write(&path, &wrong).unwrap();
    let err = download_to_file(
        Arc::new(Faulty::new(file.clone())),
        &path,
        2_500_000,
        Some(sha256(&file)),
        DownloadOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(
        err,
        Error::Piece(PieceProblem::DigestMismatch { .. })
    ));

    // A prefix longer than the attachment is refused before anything is fetched.
    std::fs::write(&path, vec![0; 2_500_001]).unwrap();
    let source = Arc::new(Faulty::new(file.clone()));
    let err = download_to_file(
        source.clone(),
        &path,
        2_500_000,
        None,
        DownloadOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Resume { .. }), "{err}");
    assert_eq!(source.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn checkpoint_from_prefix_hashes_what_is_there() {
    let file = common::noise(200_000, 8);
    let cp = checkpoint_from_prefix(&mut &file[..150_000], 200_000)
        .await
        .unwrap();
    assert_eq!(cp.offset, 150_000);
    let source = Arc::new(Faulty::new(file.clone()));
    let d = Downloader::resume(
        source,
        &cp,
        200_000,
        Some(sha256(&file)),
        DownloadOptions::default(),
    )
    .unwrap();
    let mut rest = Vec::new();
    d.write_to(&mut rest).await.unwrap();
    assert_eq!(rest, file[150_000..]);
}

#[tokio::test]
async fn a_store_is_a_range_source() {
    use attachments::store::{AttachmentMeta, MemoryStore, Store};
    use attachments::upload::AttachmentInfo;
    use std::time::SystemTime;

    let file = common::structural_jpeg(3_000_000);
    let mut text = Vec::new();
    attachments::codec::base64::encode_to(&file, &mut text);
    let (_, info): (_, AttachmentInfo) = attachments::upload::receive_single(
        &attachments::Policy::chat(),
        "photo.jpg",
        "image/jpeg",
        file.len() as u64,
        &text,
        SystemTime::UNIX_EPOCH,
    )
    .unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    store
        .put_attachment(
            "up-1",
            &AttachmentMeta::new("att-1", &info, ""),
            Bytes::from(file.clone()),
        )
        .await
        .unwrap();
    let d = Downloader::new(
        StoreSource::new(store, "att-1"),
        info.size,
        Some(info.sha256),
        DownloadOptions::default(),
    );
    let mut out = Vec::new();
    assert_eq!(d.write_to(&mut out).await.unwrap().sha256, info.sha256);
    assert_eq!(out, file);
}
