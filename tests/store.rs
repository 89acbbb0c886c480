//! The store contract, run against every backend, and what only the file-system store has:
//! several handles on one directory, and what a crash leaves behind.
#![cfg(feature = "async")]

mod common;

use std::time::{Duration, SystemTime};

use attachments::Error;
use attachments::digest::sha256;
use attachments::store::{AttachmentMeta, Expired, FsStore, MemoryStore, Store, conformance};
use attachments::upload::{AttachmentInfo, RandomId};

fn id(n: u8) -> String {
    RandomId::from_bytes([n; 16]).to_string()
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    conformance::run(&MemoryStore::new()).await;
}

#[tokio::test]
async fn object_store_backend_keeps_the_contract_in_memory() {
    let inner = std::sync::Arc::new(object_store::memory::InMemory::new());
    conformance::run(&attachments::store::ObjectStoreBackend::new(inner)).await;
}

#[tokio::test]
async fn s3_store_keeps_the_contract_on_a_real_s3_server() {
    let store = common::s3::s3().store("conformance");
    conformance::run(&store).await;
}

#[tokio::test]
async fn fs_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run(&FsStore::open(dir.path()).unwrap()).await;
    // Nothing half-written is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("attachments"))
        .unwrap()
        .chain(std::fs::read_dir(dir.path().join("uploads")).unwrap())
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn meta_for(att: &str, data: &[u8]) -> AttachmentMeta {
    let mut text = Vec::new();
    attachments::codec::base64::encode_to(data, &mut text);
    let info = attachments::upload::receive_single(
        &attachments::Policy::chat(),
        "notes.txt",
        "text/plain",
        data.len() as u64,
        &text,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    )
    .map(|(_, info): (_, AttachmentInfo)| info)
    .unwrap();
    AttachmentMeta::new(att, &info, "")
}

#[tokio::test]
async fn fs_chunks_may_arrive_through_different_handles() {
    // Two handles on one directory stand for two processes behind a load balancer.
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        FsStore::open(dir.path()).unwrap(),
        FsStore::open(dir.path()).unwrap(),
    );
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let up = id(1);
    a.begin_upload(&up, SystemTime::now()).await.unwrap();
    for (n, part) in data.chunks(100_000).enumerate() {
        let handle = if n % 2 == 0 { &a } else { &b };
        handle
            .put_chunk(&up, n as u64, n as u64 * 100_000, part.to_vec().into())
            .await
            .unwrap();
    }
    let meta = meta_for(&id(2), &data);
    assert_eq!(meta.sha256, sha256(&data));
    b.commit(&up, &meta).await.unwrap();
    assert_eq!(a.read_range(&id(2), 0..300_000).await.unwrap(), &data[..]);
    assert_eq!(a.metadata(&id(2)).await.unwrap(), meta);
}

#[tokio::test]
async fn fs_crash_leftovers_are_listed_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    // A commit interrupted between its two renames: data without metadata.
    let orphan = dir
        .path()
        .join("attachments")
        .join(format!("{}.bin", id(3)));
    std::fs::write(&orphan, b"half").unwrap();
    // An upload whose record was never written.
    let part = dir.path().join("uploads").join(format!("{}.part", id(4)));
    std::fs::write(&part, b"x").unwrap();
    // Neither is visible as an attachment.
    assert!(matches!(
        store.metadata(&id(3)).await,
        Err(Error::NotFound { .. })
    ));
    let later = SystemTime::now() + Duration::from_secs(60);
    let found = store.list_expired(later, later).await.unwrap();
    assert_eq!(found, [Expired::Upload(id(4)), Expired::Attachment(id(3))]);
    for item in &found {
        store.remove(item).await.unwrap();
    }
    assert!(!orphan.exists() && !part.exists());
    // Files that are not the store's are left alone.
    std::fs::write(dir.path().join("attachments").join("README"), b"mine").unwrap();
    assert!(store.list_expired(later, later).await.unwrap().is_empty());
}

#[tokio::test]
async fn fs_refuses_oversized_metadata_before_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let path = dir
        .path()
        .join("attachments")
        .join(format!("{}.json", id(5)));
    std::fs::write(&path, vec![b' '; 64 * 1024 + 1]).unwrap();
    match store.metadata(&id(5)).await {
        Err(Error::Io { message, .. }) => {
            assert!(
                message.contains("65537 bytes, over the 65536-byte limit"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
}
