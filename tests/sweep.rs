//! The sandbox's sweep reads the store's expiry listing once per pass (it read it once per
//! API before, and again for the store sweep), whatever it then expires or removes; and
//! it removes idle uploads whose session record is damaged.
#![cfg(feature = "server")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use attachments::Policy;
use attachments::server::{Sandbox, ServerConfig};
use attachments::store::{FsStore, MemoryStore, Store};
use attachments::stream::UploadReceiver;
use base64::Engine;
use common::hooked::{Hooked, Op};

#[tokio::test]
async fn one_sweep_lists_the_store_once() {
    let store = Arc::new(Hooked::new(MemoryStore::new()));
    let sandbox = Sandbox::new(store.clone() as Arc<dyn Store>, ServerConfig::default());
    assert_eq!(sandbox.sweep().await.unwrap(), 0);
    assert_eq!(store.count(Op::ListExpired), 1);
    sandbox.sweep().await.unwrap();
    assert_eq!(store.count(Op::ListExpired), 2);
}

/// An idle upload whose session file is damaged (the store answers `CorruptState`), and one
/// whose record is another upload's, are removed by the sweep. (Before, the first was
/// skipped with a warning on every pass, for ever, and the second was expired as the
/// other upload, its own record rewritten with the other's.)
#[tokio::test]
async fn the_sweep_removes_idle_uploads_whose_session_record_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    // The directory store dates chunks by the system clock: this one starts there.
    let now = Arc::new(Mutex::new(SystemTime::now()));
    let clock = {
        let now = now.clone();
        move || *now.lock().unwrap()
    };
    let store = Arc::new(FsStore::open(dir.path()).unwrap());
    let ttl = Duration::from_secs(600);
    let receiver = UploadReceiver::new(Policy::connectivity(), store.clone())
        .with_ttl(ttl)
        .with_clock(clock);
    let file = common::exact_jpeg(2 * (1 << 20) + 1000);
    let content = base64::engine::general_purpose::STANDARD.encode(&file[..300_000]);
    let start = serde_json::json!({"attachment": {
        "action": "start",
        "chunk": {"chunk_number": 0, "chunk_size": 300_000, "chunk_content": content},
        "file_type": "image/jpeg", "file_size": file.len(), "file_name": "a.jpg",
    }});
    let start = serde_json::to_vec(&start).unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let data = receiver.chunk(&start, "scope").await.unwrap();
        ids.push(data.upload_id.unwrap());
    }
    let [garbled, borrowed, own] = [&ids[0], &ids[1], &ids[2]];
    std::fs::write(
        dir.path().join("uploads").join(garbled).join("session"),
        b"garbled\n{}",
    )
    .unwrap();
    let others = store.load_session(own).await.unwrap().unwrap();
    let version = store.load_session(borrowed).await.unwrap().unwrap().version;
    let saved = *now.lock().unwrap();
    store
        .save_session(borrowed, others.record, Some(&version), saved)
        .await
        .unwrap();

    *now.lock().unwrap() += ttl + Duration::from_secs(1);
    assert_eq!(receiver.sweep().await.unwrap(), 3);
    for gone in [garbled, borrowed] {
        assert!(
            !dir.path().join("uploads").join(gone).exists(),
            "{gone} is still on disk"
        );
    }
    // The upload whose record was borrowed expired as itself, its record its own.
    let record = store.load_session(own).await.unwrap().unwrap().record;
    let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
    assert!(record.to_string().contains(own.as_str()), "{record}");
    assert!(record.to_string().contains("xpired"), "{record}");
}

/// Resumable uploads are swept from their record alone, whatever the sweeping receiver's
/// policy: one idle past the TTL is removed (bytes and record: later requests find
/// nothing), a finished one's record two TTLs after it ended, its attachment kept.
#[tokio::test]
async fn the_sweep_removes_idle_resumable_uploads_and_keeps_their_attachments() {
    use attachments::stream::Append;
    use attachments::upload::Creation;
    let now = Arc::new(Mutex::new(SystemTime::now()));
    let clock = {
        let now = now.clone();
        move || *now.lock().unwrap()
    };
    let store = Arc::new(MemoryStore::new());
    let ttl = Duration::from_secs(600);
    let chat = UploadReceiver::new(Policy::chat(), store.clone())
        .with_ttl(ttl)
        .with_clock(clock.clone());
    // The sandbox sweeps with its Connectivity receiver, which would refuse a PDF.
    let sweeper = UploadReceiver::new(Policy::connectivity(), store.clone())
        .with_ttl(ttl)
        .with_clock(clock);
    let pdf = common::real_pdf("swept");
    let creation = |name| Creation {
        file_name: name,
        file_type: "application/pdf",
        length: Some(pdf.len() as u64),
        metadata: "",
    };
    let piece = |data: &[u8]| {
        futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(data))])
    };
    let idle = chat
        .create_resumable(creation("idle.pdf"), "o")
        .await
        .unwrap()
        .id;
    chat.append_resumable(&idle, "o", Append::at(0), piece(&pdf[..100]))
        .await
        .unwrap();
    let done = chat
        .create_resumable(creation("done.pdf"), "o")
        .await
        .unwrap()
        .id;
    let status = chat
        .append_resumable(&done, "o", Append::at(0), piece(&pdf))
        .await
        .unwrap();
    assert!(status.finished);

    *now.lock().unwrap() += ttl + Duration::from_secs(1);
    assert!(sweeper.sweep().await.unwrap() >= 1);
    let gone = chat.resumable_status(&idle, "o").await.unwrap_err();
    assert_eq!(gone.status(), 404, "{gone}");
    assert!(store.read_staged(&idle, 0..1).await.is_err(), "bytes kept");
    assert!(chat.resumable_status(&done, "o").await.unwrap().finished);

    *now.lock().unwrap() += ttl * 2;
    sweeper.sweep().await.unwrap();
    assert_eq!(
        chat.resumable_status(&done, "o")
            .await
            .unwrap_err()
            .status(),
        404
    );
    assert_eq!(
        store.metadata(&done).await.unwrap().file_size,
        pdf.len() as u64
    );
}
