//! Stored state damaged (or tampered with) on disk or in a bucket is refused as
//! `CorruptState`, never served as wrong, short or long bytes, never a reason to reserve
//! what the record claims, and never a reason for one bad record to break a listing of
//! messages. Found by attacking a running server: a `file_size` of 2^40 in one record
//! aborted the process allocating it, and a manifest naming another upload's chunks served
//! that file's bytes under this attachment's metadata.
#![cfg(feature = "object-store")]

use std::sync::Arc;
use std::time::SystemTime;

use attachments::Error;
use attachments::digest::sha256;
use attachments::store::{
    AttachmentMeta, FsStore, Message, MessageStore, ObjectStoreBackend, Store,
};
use attachments::upload::{AttachmentInfo, RandomId};
use bytes::Bytes;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, memory::InMemory, path::Path};
use serde_json::{Value, json};

fn id(n: u8) -> String {
    RandomId::from_bytes([n; 16]).to_string()
}

/// Metadata of `data` as attachment `att`, as a single upload of it accepts it.
fn meta(att: &str, data: &[u8]) -> AttachmentMeta {
    let mut text = Vec::new();
    attachments::codec::base64::encode_to(data, &mut text);
    let policy = attachments::Policy::chat().with_max_size(1 << 20);
    let (_, info): (_, AttachmentInfo) = attachments::upload::receive_single(
        &policy,
        "a.bin",
        "application/octet-stream",
        data.len() as u64,
        &text,
        SystemTime::UNIX_EPOCH,
    )
    .unwrap();
    let meta = AttachmentMeta::new(att, &info, "scope");
    assert_eq!(meta.sha256, sha256(data));
    meta
}

/// Commits `data` as attachment `att`, in chunks of 1,000 bytes.
async fn commit(store: &dyn Store, up: &str, att: &str, data: &[u8]) {
    store
        .begin_upload(up, SystemTime::UNIX_EPOCH)
        .await
        .unwrap();
    for (n, piece) in data.chunks(1000).enumerate() {
        store
            .put_chunk(up, n as u64, n as u64 * 1000, Bytes::copy_from_slice(piece))
            .await
            .unwrap();
    }
    store.commit(up, &meta(att, data)).await.unwrap();
}

fn assert_corrupt<T: std::fmt::Debug>(got: attachments::Result<T>, what: &str) {
    match got {
        Err(Error::CorruptState { .. }) => {}
        other => panic!("{what}: expected CorruptState, got {other:?}"),
    }
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
}

/// Rewrites the JSON file at `path` with `edit`.
fn edit_json(path: &std::path::Path, edit: impl FnOnce(&mut Value)) {
    let mut value: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, serde_json::to_vec(&value).unwrap()).unwrap();
}

#[tokio::test]
async fn fs_metadata_that_disagrees_with_the_chunk_files_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let file = data(3500, 1);
    commit(&store, &id(1), &id(2), &file).await;
    let meta_path = dir.path().join("attachments").join(id(2)).join("meta.json");
    let original = std::fs::read(&meta_path).unwrap();

    // A size of 2^40: reading "to the end" must not reserve it.
    edit_json(&meta_path, |m| m["file_size"] = json!(1u64 << 40));
    assert_corrupt(store.read_range(&id(2), 0..1 << 40).await, "a size of 2^40");
    // Smaller and larger than the chunks hold.
    edit_json(&meta_path, |m| m["file_size"] = json!(1000));
    assert_corrupt(store.read_range(&id(2), 0..1000).await, "a smaller size");
    edit_json(&meta_path, |m| m["file_size"] = json!(3600));
    assert_corrupt(store.read_range(&id(2), 0..3600).await, "a larger size");
    // Another attachment's metadata moved under this one's name.
    std::fs::write(&meta_path, &original).unwrap();
    edit_json(&meta_path, |m| m["id"] = json!(id(9)));
    assert_corrupt(
        store.metadata(&id(2)).await,
        "metadata of another attachment",
    );

    // A chunk file cut short.
    std::fs::write(&meta_path, &original).unwrap();
    let chunk = dir
        .path()
        .join("attachments")
        .join(id(2))
        .join(format!("{:020}", 1000));
    let bytes = std::fs::read(&chunk).unwrap();
    std::fs::write(&chunk, &bytes[..500]).unwrap();
    assert_corrupt(store.read_range(&id(2), 0..3500).await, "a truncated chunk");
    // Put back, it reads whole again.
    std::fs::write(&chunk, &bytes).unwrap();
    assert_eq!(store.read_range(&id(2), 0..3500).await.unwrap(), file);
}

#[tokio::test]
async fn fs_a_damaged_session_file_is_corrupt_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    store
        .begin_upload(&id(3), SystemTime::UNIX_EPOCH)
        .await
        .unwrap();
    store
        .save_session(
            &id(3),
            Bytes::from_static(b"{}"),
            None,
            SystemTime::UNIX_EPOCH,
        )
        .await
        .unwrap();
    let path = dir.path().join("uploads").join(id(3)).join("session");
    // A header that is not JSON.
    std::fs::write(&path, b"garbled\n{}").unwrap();
    assert_corrupt(store.load_session(&id(3)).await, "a garbled header");
    // No header line at all, and over the size budget.
    std::fs::write(&path, b"{}").unwrap();
    assert_corrupt(store.load_session(&id(3)).await, "no header line");
    std::fs::write(&path, vec![b' '; 70_000]).unwrap();
    assert_corrupt(store.load_session(&id(3)).await, "over the budget");
    // A version that cannot advance stops conditional saves: damaged too.
    std::fs::write(
        &path,
        format!("{{\"version\": {}, \"saved\": 0}}\n{{}}", u64::MAX),
    )
    .unwrap();
    let version = store.load_session(&id(3)).await.unwrap().unwrap().version;
    assert_corrupt(
        store
            .save_session(
                &id(3),
                Bytes::from_static(b"{}"),
                Some(&version),
                SystemTime::UNIX_EPOCH,
            )
            .await,
        "a version at u64::MAX",
    );
}

fn s3() -> (Arc<InMemory>, ObjectStoreBackend) {
    let bucket = Arc::new(InMemory::new());
    let store = ObjectStoreBackend::new(bucket.clone() as Arc<dyn ObjectStore>).with_prefix("root");
    (bucket, store)
}

async fn edit_object(bucket: &InMemory, path: &str, edit: impl FnOnce(&mut Value)) {
    let path = Path::from(path);
    let bytes = bucket.get(&path).await.unwrap().bytes().await.unwrap();
    let mut value: Value = serde_json::from_slice(&bytes).unwrap();
    edit(&mut value);
    bucket
        .put(&path, PutPayload::from(serde_json::to_vec(&value).unwrap()))
        .await
        .unwrap();
}

#[tokio::test]
async fn s3_a_manifest_that_does_not_tile_its_own_uploads_chunks_is_refused() {
    let (bucket, store) = s3();
    let (mine, other) = (data(2500, 2), data(2500, 3));
    commit(&store, &id(4), &id(5), &mine).await;
    commit(&store, &id(6), &id(7), &other).await;
    let path = format!("root/attachments/{}", id(5));
    let other_path = format!("root/attachments/{}", id(7));
    let other_parts = {
        let bytes = bucket
            .get(&Path::from(other_path.as_str()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        serde_json::from_slice::<Value>(&bytes).unwrap()["parts"].clone()
    };
    // Another upload's chunks under this attachment's metadata.
    edit_object(&bucket, &path, |m| m["parts"] = other_parts).await;
    assert_corrupt(
        store.read_range(&id(5), 0..2500).await,
        "another upload's parts",
    );
    assert_corrupt(store.metadata(&id(5)).await, "metadata of that manifest");
    // A size of 2^40, and a manifest of another attachment.
    commit(&store, &id(8), &id(10), &mine).await;
    let path = format!("root/attachments/{}", id(10));
    edit_object(&bucket, &path, |m| {
        m["meta"]["file_size"] = json!(1u64 << 40)
    })
    .await;
    assert_corrupt(
        store.read_range(&id(10), 0..1 << 40).await,
        "a size of 2^40",
    );
    edit_object(&bucket, &path, |m| {
        m["meta"]["file_size"] = json!(2500);
        m["meta"]["id"] = json!(id(7));
    })
    .await;
    assert_corrupt(
        store.metadata(&id(10)).await,
        "a manifest of another attachment",
    );
}

/// A commit whose manifest landed although its request failed (an answer lost, then a
/// retry meeting its own object), or two commits of one upload racing (a takeover after
/// the commit lease): each is this upload's commit, done, never "taken" (which made the
/// receiver release the chunks the manifest names).
#[tokio::test]
async fn s3_a_commit_of_the_same_upload_again_is_done_not_taken() {
    let (_bucket, store) = s3();
    let file = data(2500, 4);
    store
        .begin_upload(&id(11), SystemTime::UNIX_EPOCH)
        .await
        .unwrap();
    for (n, piece) in file.chunks(1000).enumerate() {
        store
            .put_chunk(
                &id(11),
                n as u64,
                n as u64 * 1000,
                Bytes::copy_from_slice(piece),
            )
            .await
            .unwrap();
    }
    let (up, meta) = (id(11), meta(&id(12), &file));
    let (a, b) = tokio::join!(store.commit(&up, &meta), store.commit(&up, &meta));
    // Neither is "taken": the one that came second is done too, or, when the first had
    // already forgotten the upload, hears that the upload is gone.
    for result in [&a, &b] {
        assert!(
            matches!(result, Ok(()) | Err(Error::NotFound { what: "upload", .. })),
            "{result:?}"
        );
    }
    assert!(a.is_ok() || b.is_ok());
    // Done, the upload is forgotten (the receiver asks the store for the attachment first).
    assert!(matches!(
        store.commit(&up, &meta).await,
        Err(Error::NotFound { what: "upload", .. })
    ));
    // Releasing the upload afterwards leaves the attachment whole.
    store.abort(&id(11)).await.unwrap();
    assert_eq!(store.read_range(&id(12), 0..2500).await.unwrap(), file);
    // Another upload committing under that id is taken.
    store
        .begin_upload(&id(13), SystemTime::UNIX_EPOCH)
        .await
        .unwrap();
    store
        .put_chunk(&id(13), 0, 0, Bytes::copy_from_slice(&file))
        .await
        .unwrap();
    assert!(matches!(
        store.commit(&id(13), &meta).await,
        Err(Error::Taken { .. })
    ));
}

fn message(n: u8) -> Message {
    serde_json::from_value(json!({
        "message_id": format!("m{n:03}"), "conversation": "conv", "accommodation": 1,
        "content": format!("hello {n}"), "attachments": [], "created_at": "2026-11-29T00:00:00Z",
    }))
    .unwrap()
}

/// One damaged message record does not break `latest` for everyone: it is skipped, and
/// moved aside so it is read no more.
async fn a_damaged_message_is_skipped(store: &dyn MessageStore, damage: impl AsyncFnOnce()) {
    for n in 1..=3 {
        store.post_message(&message(n)).await.unwrap();
    }
    damage().await;
    let latest = store.latest_messages(100).await.unwrap();
    let ids: Vec<&str> = latest.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids, ["m001", "m003"]);
    let history = store
        .conversation_messages(1, "conv", None, 100)
        .await
        .unwrap();
    assert_eq!(history.len(), 2);
    // And again, without meeting it.
    assert_eq!(store.latest_messages(100).await.unwrap().len(), 2);
}

#[tokio::test]
async fn fs_a_damaged_message_record_is_skipped_and_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let root = dir.path().to_owned();
    a_damaged_message_is_skipped(&store, async || {
        std::fs::write(root.join("messages/records/m002.json"), b"{\"garbled").unwrap();
    })
    .await;
    assert!(dir.path().join("messages/quarantine/m002.json").exists());
}

#[tokio::test]
async fn s3_a_damaged_message_record_is_skipped_and_moved_aside() {
    let (bucket, store) = s3();
    let in_bucket = bucket.clone();
    a_damaged_message_is_skipped(&store, async move || {
        in_bucket
            .put(
                &Path::from("root/messages/records/m002"),
                PutPayload::from_static(b"{\"garbled"),
            )
            .await
            .unwrap();
    })
    .await;
    assert!(
        bucket
            .head(&Path::from("root/messages/quarantine/m002"))
            .await
            .is_ok()
    );
}

/// A FIFO (or anything but a regular file) where a record should be is damaged state, not
/// a read that blocks a thread for good (it hung every request naming the attachment, and
/// the sweep with them).
#[cfg(unix)]
#[tokio::test]
async fn fs_a_record_that_is_not_a_regular_file_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    commit(&store, &id(1), &id(2), &data(1500, 3)).await;
    let meta_path = dir.path().join("attachments").join(id(2)).join("meta.json");
    std::fs::remove_file(&meta_path).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&meta_path)
        .status()
        .unwrap();
    assert!(made.success());
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), store.metadata(&id(2)))
        .await
        .expect("the read of a FIFO must not block");
    assert_corrupt(got, "a FIFO as metadata");
    // A symbolic link is not followed either.
    std::fs::remove_file(&meta_path).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &meta_path).unwrap();
    assert_corrupt(store.metadata(&id(2)).await, "a symbolic link as metadata");
}

/// The chat resource's `/content` of an attachment whose chunk file was cut short is a
/// 500 in the chat shape before any byte is sent; before, it answered 200 with the full
/// `Content-Length` and then broke the connection off, which clients retry for ever.
#[cfg(all(feature = "server", feature = "client"))]
#[tokio::test]
async fn chat_content_of_a_damaged_attachment_is_a_500_not_a_broken_200() {
    use attachments::client::{ChatClient, ChatUpload};
    use attachments::server::{Sandbox, ServerConfig};

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsStore::open(dir.path()).unwrap());
    let sandbox = Sandbox::new(store.clone(), ServerConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, sandbox.router()).await });
    let client = ChatClient::new(&url).unwrap().with_token("t").unwrap();
    let file = data(300_000, 5);
    let sent = client
        .upload(std::io::Cursor::new(file.clone()), ChatUpload::new("a.bin"))
        .await
        .unwrap();
    let content = format!("{url}/v1/attachments/{}/content", sent.id);
    let get = || {
        reqwest::Client::new()
            .get(&content)
            .header("authorization", "Bearer t")
            .send()
    };
    assert_eq!(get().await.unwrap().bytes().await.unwrap(), file);

    let attachment = dir.path().join("attachments").join(&sent.id);
    let mut chunks: Vec<_> = std::fs::read_dir(&attachment)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "meta.json")
        .collect();
    chunks.sort();
    let last = chunks.last().unwrap();
    let bytes = std::fs::read(last).unwrap();
    std::fs::write(last, &bytes[..bytes.len() - 10]).unwrap();

    let response = get().await.unwrap();
    assert_eq!(response.status().as_u16(), 500);
    let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"]["status"], 500, "{body}");
    assert_eq!(
        body["error"]["message"],
        "internal error: stored state is damaged; start the upload or request again"
    );
}
