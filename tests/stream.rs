//! The async adapters: files, readers and streams of buffers in, request bodies out.
#![cfg(feature = "async")]

mod common;

use std::sync::{Arc, Mutex};

use attachments::store::{MemoryStore, Store};
use attachments::stream::{BodyStream, UploadReceiver, max_body_len, read_body};
use attachments::upload::{RequestKind, Target, UploadPlan};
use attachments::wire::connectivity::ChunkAction;
use attachments::{Error, Policy};
use bytes::Bytes;
use futures::StreamExt;

fn plan(len: usize) -> UploadPlan {
    UploadPlan::new(
        &Policy::connectivity(),
        Target::Connectivity,
        "photo.jpg",
        "image/jpeg",
        len as u64,
    )
    .unwrap()
}

/// Sends every body of `bodies` to `receiver`; returns the attachment id.
async fn drive<R: tokio::io::AsyncRead + Unpin>(
    bodies: &mut BodyStream<R>,
    receiver: &UploadReceiver,
) -> attachments::Result<String> {
    while let Some(request) = bodies.next().await {
        let request = request?;
        let data = receiver.chunk(&request.body, "").await?;
        if let Some(id) = data.upload_id {
            bodies.set_upload_id(id);
        }
        if let Some(att) = data.attachment_id {
            assert!(bodies.next().await.is_none(), "nothing after finish");
            return Ok(att);
        }
    }
    panic!("the bodies ended without a finish");
}

#[tokio::test]
async fn a_file_on_disk_uploads_with_progress_and_restarts_from_chunk_0() {
    let file = common::structural_jpeg(5_000_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("photo.jpg");
    std::fs::write(&path, &file).unwrap();
    let store = Arc::new(MemoryStore::new());
    let receiver = UploadReceiver::new(Policy::connectivity(), store.clone());

    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let mut bodies = BodyStream::new(
        plan(file.len()),
        tokio::fs::File::open(&path).await.unwrap(),
    )
    .with_progress(move |done, total| log.lock().unwrap().push((done, total)));
    // Send start and one resume, then "lose" the connection and start over (seed 001).
    let first = bodies.next().await.unwrap().unwrap();
    assert_eq!(
        first.kind,
        RequestKind::Chunk {
            action: ChunkAction::Start,
            number: 0
        }
    );
    let data = receiver.chunk(&first.body, "").await.unwrap();
    bodies.set_upload_id(data.upload_id.unwrap());
    let second = bodies.next().await.unwrap().unwrap();
    assert_eq!(second.range, 1_048_575..2_097_150);
    bodies.restart().await.unwrap();
    assert_eq!(bodies.plan().upload_id(), None);
    let att = drive(&mut bodies, &receiver).await.unwrap();
    assert_eq!(
        store.read_range(&att, 0..file.len() as u64).await.unwrap(),
        &file[..]
    );

    let seen = seen.lock().unwrap();
    assert_eq!(seen.last(), Some(&(file.len() as u64, file.len() as u64)));
    assert!(
        seen.windows(2).filter(|w| w[1].0 < w[0].0).count() == 1,
        "progress goes back once, at the restart"
    );
    // Bodies are built one ahead at most: progress never runs more than one chunk past
    // what was sent. (64 KiB reads: the first report is one read.)
    assert_eq!(seen[0].0, 65_536);
}

#[tokio::test]
async fn a_stream_of_buffers_uploads_too() {
    let file = common::structural_jpeg(2_500_000);
    let parts: Vec<std::io::Result<Bytes>> = file
        .chunks(10_007)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let receiver = UploadReceiver::new(Policy::connectivity(), Arc::new(MemoryStore::new()));
    let mut bodies = BodyStream::from_stream(plan(file.len()), futures::stream::iter(parts));
    let att = drive(&mut bodies, &receiver).await.unwrap();
    let meta = receiver.store().metadata(&att).await.unwrap();
    assert_eq!(meta.sha256, attachments::digest::sha256(&file));
    assert_eq!(bodies.plan().inspection().unwrap().sha256, meta.sha256);
}

#[tokio::test]
async fn a_source_longer_than_declared_never_yields_finish() {
    let file = common::structural_jpeg(2_500_000);
    let store = Arc::new(MemoryStore::new());
    let receiver = UploadReceiver::new(Policy::connectivity(), store.clone());
    let mut bodies = BodyStream::new(plan(file.len() - 1), &file[..]);
    let err = drive(&mut bodies, &receiver).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "Content length is {} but metadata size is {}",
            file.len(),
            file.len() - 1
        )
    );
    assert!(
        bodies.next().await.is_none(),
        "the stream ends after its error"
    );
    assert_eq!(store.attachment_count(), 0);
}

#[tokio::test]
async fn a_source_shorter_than_declared_fails() {
    let file = common::structural_jpeg(2_500_000);
    let mut bodies = BodyStream::new(plan(file.len() + 1), &file[..]);
    let mut last = None;
    while let Some(item) = bodies.next().await {
        bodies.set_upload_id("u");
        last = Some(item);
    }
    assert_eq!(
        last.unwrap().unwrap_err().to_string(),
        format!(
            "Content length is {} but metadata size is {}",
            file.len(),
            file.len() + 1
        )
    );
}

#[tokio::test]
async fn asking_for_resume_before_the_upload_id_changes_nothing() {
    let file = common::structural_jpeg(2_500_000);
    let mut bodies = BodyStream::new(plan(file.len()), &file[..]);
    bodies.next().await.unwrap().unwrap();
    let early = bodies.next().await.unwrap().unwrap_err();
    assert_eq!(
        early.to_string(),
        "chunk rejected: action resume needs the upload_id that the start response returned"
    );
    bodies.set_upload_id("u");
    let next = bodies.next().await.unwrap().unwrap();
    assert_eq!(
        next.kind,
        RequestKind::Chunk {
            action: ChunkAction::Resume,
            number: 1
        }
    );
}

#[tokio::test]
async fn a_failing_reader_is_an_io_error() {
    struct Broken;
    impl tokio::io::AsyncRead for Broken {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Err(std::io::Error::other("disk on fire")))
        }
    }
    let mut bodies = BodyStream::new(plan(2_000_000), Broken);
    let err = bodies.next().await.unwrap().unwrap_err();
    assert!(
        matches!(&err, Error::Io(io) if io.kind() == std::io::ErrorKind::Other),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "reading the file failed: disk on fire");
    assert_eq!(
        err.wire_message(),
        "internal storage error; try again later"
    );
}

#[tokio::test]
async fn request_bodies_are_read_under_a_limit() {
    let limit = max_body_len(&Policy::connectivity());
    assert_eq!(limit, 1_398_104 + 16 * 1024);
    let parts = |n: usize| {
        futures::stream::iter(
            (0..n).map(|_| Ok::<_, std::io::Error>(Bytes::from_static(&[b'a'; 1000]))),
        )
    };
    assert_eq!(read_body(parts(3), 3000).await.unwrap().len(), 3000);
    let err = read_body(parts(4), 3000).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the request body of at least 4000 bytes exceeds the limit of 3000 bytes; send a smaller file or chunk"
    );
    assert_eq!(
        err.wire_message(),
        "Request body size exceeds the 3000 bytes limit"
    );
}
