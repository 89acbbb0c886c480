//! The contract every [`Store`] backend keeps, one check per capability (feature
//! `conformance`).
//!
//! Each check is a `pub async fn` taking the store under test; it panics with a message
//! naming the broken rule, so a test that runs one check names the capability and the
//! backend when it fails. [`run_all`] runs every check of this module and then the
//! messages' checks ([`conformance_messages`](super::conformance_messages)) and the
//! idempotency keys' ([`conformance_keys`](super::conformance_keys)) on one store.
//!
//! Give the checks a store of their own: an empty one (a fresh directory, a fresh
//! bucket prefix). Each check uses ids no other check uses, depends on nothing another
//! check left, and removes the attachments and uploads it made, so a check passes on a
//! fresh store of its own, and the checks pass in turn on one store (as [`run_all`] runs
//! them).
//!
//! | check | the rule |
//! | --- | --- |
//! | [`commit_and_read`] | chunks of any lengths commit into one attachment that reads back byte for byte |
//! | [`invisible_until_commit`] | nothing of an upload is visible before its commit |
//! | [`incomplete_commit_is_refused`] | a commit of too few bytes is refused, and the upload can still be completed |
//! | [`exact_tiling`] | only chunks that tile the file exactly commit |
//! | [`pipelined_commit_race`] | a commit racing with chunks being stored commits all of them or nothing |
//! | [`abort_releases`] | an abort releases the upload, and is idempotent |
//! | [`same_number_replaces`] | a chunk stored again under its number replaces the first |
//! | [`taken_id_is_refused`] | a commit never replaces an attachment |
//! | [`expiry_and_linking`] | idle uploads and old unlinked attachments are listed for the sweep; linked ones are kept |
//! | [`a_link_wins_over_the_sweep`] | an attachment linked after the sweep listed it is not removed; [`Store::delete_attachment`] deletes linked ones too |
//! | [`chunks_are_activity`] | a stored chunk keeps its upload from being swept |
//! | [`records_read_back_or_are_refused`] | a record the store cannot read back is refused, not written |
//! | [`odd_ids_are_not_found`] | an id that is not one of the store's is not found, never a path |
//! | [`session_records`] | session records are versioned, and of racing saves exactly one wins |
//! | [`listing_and_updates`] | a scope lists newest first, pages exactly by cursor, and renames stick |
//!
//! # Checking a backend of your own
//!
//! With `attachments` as a dev-dependency with the feature:
//!
//! ```toml
//! [dev-dependencies]
//! attachments = { version = "0.1", features = ["conformance"] }
//! tokio = { version = "1", features = ["macros", "rt"] }
//! ```
//!
//! one test per capability (here `MemoryStore` stands in for your backend):
//!
//! ```no_run
//! use attachments::store::{conformance, conformance_messages, MemoryStore as MyStore};
//!
//! fn fresh() -> MyStore {
//!     MyStore::new()
//! }
//!
//! #[tokio::test]
//! async fn commit_and_read() {
//!     conformance::commit_and_read(&fresh()).await;
//! }
//!
//! #[tokio::test]
//! async fn pipelined_commit_race() {
//!     conformance::pipelined_commit_race(&fresh()).await;
//! }
//!
//! #[tokio::test]
//! async fn confirming() {
//!     conformance_messages::confirming(&fresh()).await;
//! }
//!
//! // ... or everything in one test:
//! #[tokio::test]
//! async fn keeps_the_whole_contract() {
//!     conformance::run_all(&fresh()).await;
//! }
//! # fn main() {}
//! ```
//!
//! [`CHECKS`] names the checks [`run_all`] runs, in order, so a test suite can make sure
//! it runs each of them.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! attachments::store::conformance::run_all(&attachments::store::MemoryStore::new()).await;
//! # });
//! ```

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::{AttachmentMeta, Expired, ListQuery, MetaChange, Store};
use crate::digest::sha256;
use crate::error::Error;
use crate::upload::RandomId;

fn id(n: u8) -> String {
    RandomId::from_bytes([n; 16]).to_string()
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

/// Test bytes: `len` bytes that differ from chunk to chunk.
fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

fn meta(att: &str, data: &[u8], created: SystemTime) -> AttachmentMeta {
    AttachmentMeta {
        id: att.to_owned(),
        file_name: "photo \"1\".jpg".into(),
        file_type: "image/jpeg".into(),
        file_size: data.len() as u64,
        sha256: sha256(data),
        dimensions: Some((640, 480)),
        created,
        linked: false,
        scope: "8011855/f3a9c29d".into(),
        conversation_id: None,
        message_id: None,
    }
}

/// Removes attachments a check made, and checks that they are gone.
async fn remove_attachments(store: &dyn Store, ids: &[String]) {
    for att in ids {
        store
            .delete_attachment(att)
            .await
            .expect("delete_attachment");
        assert_not_found(store.metadata(att).await, "an attachment after its removal");
    }
}

fn assert_not_found<T: std::fmt::Debug>(result: crate::Result<T>, what: &str) {
    match result {
        Err(Error::NotFound { .. }) => {}
        other => panic!("{what}: expected Error::NotFound, got {other:?}"),
    }
}

/// The names of the checks [`run_all`] runs, in the order it runs them (each is a function
/// of this module).
pub const CHECKS: &[&str] = &[
    "commit_and_read",
    "invisible_until_commit",
    "incomplete_commit_is_refused",
    "exact_tiling",
    "pipelined_commit_race",
    "abort_releases",
    "same_number_replaces",
    "taken_id_is_refused",
    "expiry_and_linking",
    "a_link_wins_over_the_sweep",
    "chunks_are_activity",
    "records_read_back_or_are_refused",
    "odd_ids_are_not_found",
    "session_records",
    "listing_and_updates",
    "staged_reads",
];

/// Runs every check of this module against `store`, in the order of [`CHECKS`], then
/// every check of [`conformance_messages`](super::conformance_messages) and of
/// [`conformance_keys`](super::conformance_keys). `store` must start empty.
///
/// # Panics
///
/// On the first broken rule, with a message naming it.
pub async fn run_all(store: &dyn Store) {
    run(store).await;
    super::conformance_messages::run_all(store).await;
    super::conformance_keys::run_all(store).await;
}

/// Runs the checks of this module only (not the messages'), in the order of [`CHECKS`]:
/// what `run` did before the checks were public one by one.
///
/// # Panics
///
/// As [`run_all`].
pub async fn run(store: &dyn Store) {
    commit_and_read(store).await;
    invisible_until_commit(store).await;
    incomplete_commit_is_refused(store).await;
    exact_tiling(store).await;
    pipelined_commit_race(store).await;
    abort_releases(store).await;
    same_number_replaces(store).await;
    taken_id_is_refused(store).await;
    expiry_and_linking(store).await;
    a_link_wins_over_the_sweep(store).await;
    chunks_are_activity(store).await;
    records_read_back_or_are_refused(store).await;
    odd_ids_are_not_found(store).await;
    session_records(store).await;
    listing_and_updates(store).await;
    staged_reads(store).await;
}

/// Chunks of different lengths (1000, 777 and 1 bytes), stored in order, commit into one
/// attachment whose metadata reads back as given and whose bytes read back exactly in any
/// range: whole, across a chunk boundary, the last byte, an empty range. A range past the
/// end is [`Error::RangeOutside`]. After the commit the upload is gone: storing a chunk or
/// committing again is [`Error::NotFound`], and the sweep no longer lists it.
///
/// # Panics
///
/// When a rule is broken, naming it.
pub async fn commit_and_read(store: &dyn Store) {
    let (up, att) = (id(1), id(2));
    let parts = [pattern(1000, 1), pattern(777, 2), pattern(1, 3)];
    let whole: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    store.begin_upload(&up, at(0)).await.expect("begin_upload");
    let mut offset = 0;
    for (n, part) in parts.iter().enumerate() {
        store
            .put_chunk(&up, n as u64, offset, part.clone())
            .await
            .expect("put_chunk");
        offset += part.len() as u64;
    }
    let m = meta(&att, &whole, at(1));
    store.commit(&up, &m).await.expect("commit");
    assert_eq!(
        store.metadata(&att).await.expect("metadata"),
        m,
        "metadata round trip"
    );

    let read = |r: std::ops::Range<u64>| store.read_range(&att, r);
    assert_eq!(
        read(0..1778).await.expect("whole"),
        &whole[..],
        "whole file"
    );
    assert_eq!(
        read(990..1010).await.expect("across"),
        &whole[990..1010],
        "across chunks"
    );
    assert_eq!(
        read(1777..1778).await.expect("last"),
        &whole[1777..],
        "last byte"
    );
    assert_eq!(read(5..5).await.expect("empty").len(), 0, "empty range");
    match read(1000..1779).await {
        Err(Error::RangeOutside { size: 1778, .. }) => {}
        other => panic!("range past the end: expected RangeOutside, got {other:?}"),
    }
    assert_not_found(
        store.put_chunk(&up, 3, 1778, pattern(1, 4)).await,
        "put after commit",
    );
    assert_not_found(store.commit(&up, &m).await.map(|_| ()), "second commit");
    assert!(
        !store
            .list_expired(at(100), at(0))
            .await
            .expect("list_expired")
            .contains(&Expired::Upload(up.clone())),
        "a committed upload is no longer listed"
    );
    remove_attachments(store, &[att]).await;
}

/// An upload's chunks are not an attachment: before the commit, the attachment's id has
/// no metadata and no bytes ([`Error::NotFound`]).
///
/// # Panics
///
/// When a rule is broken, naming it.
pub async fn invisible_until_commit(store: &dyn Store) {
    let (up, att) = (id(3), id(4));
    store.begin_upload(&up, at(0)).await.expect("begin_upload");
    store
        .put_chunk(&up, 0, 0, pattern(10, 5))
        .await
        .expect("put_chunk");
    assert_not_found(store.metadata(&att).await, "metadata before commit");
    assert_not_found(store.read_range(&att, 0..1).await, "read before commit");
    store.abort(&up).await.expect("abort");
}

/// A commit of an upload whose chunks hold 100 of the file's 150 bytes is refused with
/// [`Error::Incomplete`] `{ stored: 100, expected: 150 }`, shows nothing, and leaves the
/// upload as it was: the missing chunk completes it, and the commit then succeeds.
///
/// # Panics
///
/// When a rule is broken, naming it.
pub async fn incomplete_commit_is_refused(store: &dyn Store) {
    let (up, att) = (id(5), id(6));
    store.begin_upload(&up, at(0)).await.expect("begin_upload");
    store
        .put_chunk(&up, 0, 0, pattern(100, 6))
        .await
        .expect("put_chunk");
    let whole = pattern(150, 6);
    match store.commit(&up, &meta(&att, &whole, at(1))).await {
        Err(Error::Incomplete {
            stored: 100,
            expected: 150,
            ..
        }) => {}
        other => panic!(
            "commit of 100 of 150 bytes: expected Error::Incomplete {{ stored: 100, expected: 150 }}, got {other:?}"
        ),
    }
    assert_not_found(
        store.metadata(&att).await,
        "attachment after a refused commit",
    );
    // The upload is still there and can be completed.
    store
        .put_chunk(&up, 1, 100, whole.slice(100..))
        .await
        .expect("put_chunk after refusal");
    let mut full = pattern(100, 6).to_vec();
    full.extend_from_slice(&whole[100..]);
    store
        .commit(&up, &meta(&att, &full, at(1)))
        .await
        .expect("commit once complete");
    assert_eq!(
        store.read_range(&att, 0..150).await.expect("read"),
        &full[..]
    );
    remove_attachments(store, &[att]).await;
}

/// Exact tiling: chunks that do not tile `0..file_size` exactly (no chunk at 0, a gap, an
/// overlap, bytes past the end) are refused with [`Error::Incomplete`] whatever their
/// lengths add up to, with `stored` the bytes they tile from offset 0, and nothing
/// becomes visible.
///
/// # Panics
///
/// When a rule is broken, naming it.
pub async fn exact_tiling(store: &dyn Store) {
    let att = id(41);
    let data = pattern(200, 41);
    // (what, chunks as (number, offset, length), file size, stored)
    type Case<'a> = (&'a str, &'a [(u64, u64, u64)], u64, u64);
    let cases: [Case; 5] = [
        (
            "a chunk at offset 100 and none at 0",
            &[(1, 100, 100)],
            200,
            0,
        ),
        (
            "a gap in the middle",
            &[(0, 0, 100), (2, 150, 50)],
            200,
            100,
        ),
        (
            "overlapping chunks that cover the file",
            &[(0, 0, 100), (1, 60, 100), (2, 100, 60)],
            160,
            100,
        ),
        (
            "overlapping chunks whose lengths add up to the file's",
            &[(0, 0, 100), (1, 50, 100)],
            200,
            100,
        ),
        (
            "bytes past the end",
            &[(0, 0, 100), (1, 100, 100)],
            150,
            200,
        ),
    ];
    for (n, (what, chunks, size, stored)) in cases.into_iter().enumerate() {
        let up = id(42 + n as u8);
        store.begin_upload(&up, at(0)).await.expect("begin_upload");
        for &(number, offset, len) in chunks {
            let bytes = data.slice(offset as usize..(offset + len) as usize);
            store
                .put_chunk(&up, number, offset, bytes)
                .await
                .expect("put_chunk");
        }
        match store
            .commit(&up, &meta(&att, &data[..size as usize], at(1)))
            .await
        {
            Err(Error::Incomplete {
                stored: s,
                expected: e,
                ..
            }) if (s, e) == (stored, size) => {}
            other => panic!(
                "commit of {what}: expected Error::Incomplete {{ stored: {stored}, expected: {size} }}, got {other:?}"
            ),
        }
        assert_not_found(store.metadata(&att).await, what);
        assert_not_found(store.read_range(&att, 0..1).await, what);
        store.abort(&up).await.expect("abort");
    }
}

/// Chunks stored concurrently in random order (the last one first) while another task
/// keeps trying to commit, as a pipelining client's chunks and its `finish` reach a
/// server: each attempt is refused as [`Error::Incomplete`] (and shows nothing) or
/// commits, and what it commits reads back byte-exact.
///
/// # Panics
///
/// When a rule is broken, naming it.
pub async fn pipelined_commit_race(store: &dyn Store) {
    const CHUNKS: usize = 24;
    const TASKS: usize = 4;
    let (up, att) = (id(50), id(51));
    let sizes: Vec<usize> = (0..CHUNKS).map(|i| 100 + (i * 37) % 90).collect();
    let offsets: Vec<usize> = sizes
        .iter()
        .scan(0, |end, size| {
            let offset = *end;
            *end += size;
            Some(offset)
        })
        .collect();
    let whole = pattern(sizes.iter().sum(), 50);
    // The last chunk first, alone (the worst case for a check of the total length), then
    // the others in a fixed shuffle (a linear congruential generator), dealt to the tasks
    // in turn.
    let mut order: Vec<usize> = (0..CHUNKS - 1).collect();
    let mut state = 0x2545_f491_u64;
    for i in (1..order.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        order.swap(i, (state >> 33) as usize % (i + 1));
    }
    store.begin_upload(&up, at(0)).await.expect("begin_upload");
    let m = meta(&att, &whole, at(1));
    let last = CHUNKS - 1;
    store
        .put_chunk(
            &up,
            last as u64,
            offsets[last] as u64,
            whole.slice(offsets[last]..),
        )
        .await
        .expect("put_chunk");
    match store.commit(&up, &m).await {
        Err(Error::Incomplete { stored: 0, .. }) => {}
        other => panic!(
            "commit of the last chunk alone: expected Incomplete {{ stored: 0 }}, got {other:?}"
        ),
    }
    let (up, order, whole, sizes, offsets) = (&up, &order, &whole, &sizes, &offsets);
    let putters = (0..TASKS).map(|task| async move {
        for &n in order.iter().skip(task).step_by(TASKS) {
            for _ in 0..n % 3 {
                tokio::task::yield_now().await;
            }
            let chunk = whole.slice(offsets[n]..offsets[n] + sizes[n]);
            store
                .put_chunk(up, n as u64, offsets[n] as u64, chunk)
                .await
                .expect("put_chunk while commits are tried");
        }
    });
    let committer = async {
        loop {
            match store.commit(up, &m).await {
                Ok(()) => break,
                Err(Error::Incomplete {
                    stored, expected, ..
                }) => {
                    assert!(
                        expected == whole.len() as u64 && stored < expected,
                        "a refused commit names what is missing: {stored} of {expected}"
                    );
                    assert_not_found(
                        store.metadata(&att).await,
                        "the attachment after a refused commit",
                    );
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    panic!("a commit racing with chunks: expected Ok or Incomplete, got {e:?}")
                }
            }
        }
    };
    futures::join!(futures::future::join_all(putters), committer);
    assert_eq!(store.metadata(&att).await.expect("metadata"), m);
    assert_eq!(
        store
            .read_range(&att, 0..whole.len() as u64)
            .await
            .expect("read"),
        whole,
        "what a racing commit committed reads back byte-exact"
    );
    let (from, to) = (offsets[5] as u64 + 3, offsets[9] as u64 + 1);
    assert_eq!(
        store.read_range(&att, from..to).await.expect("read"),
        &whole[from as usize..to as usize],
        "a range across several chunks"
    );
    store
        .delete_attachment(&att)
        .await
        .expect("delete_attachment");
}

/// A stored chunk is activity: an upload begun long ago, with a chunk stored just now, is
/// not idle, so the sweep does not take a streamed upload (which saves no session record)
/// while its chunks arrive. (The chunk's time is the backend's own, so the cutoffs keep
/// ten minutes from the system clock.)
///
/// # Panics
///
/// When a rule is broken, naming it.
pub async fn chunks_are_activity(store: &dyn Store) {
    let up = id(60);
    let listed = |before: SystemTime| async move {
        store
            .list_expired(before, at(0))
            .await
            .expect("list_expired")
            .contains(&Expired::Upload(id(60)))
    };
    store.begin_upload(&up, at(0)).await.expect("begin_upload");
    assert!(
        listed(at(1000)).await,
        "an upload idle since its begin is listed"
    );
    store
        .put_chunk(&up, 0, 0, pattern(10, 60))
        .await
        .expect("put_chunk");
    let ten_minutes = Duration::from_secs(600);
    assert!(
        !listed(SystemTime::now() - ten_minutes).await,
        "an upload begun long ago with a chunk stored now is active"
    );
    assert!(
        listed(SystemTime::now() + ten_minutes).await,
        "and idle once its last chunk is older than the cutoff"
    );
    store.abort(&up).await.expect("abort");
}

/// Nothing a store writes is unreadable: a record over what the backend reads back (a
/// 2 MiB file name at commit and in an update, a 2 MiB session record: over every budget
/// in this crate) is refused with [`Error::NotSaveable`] and changes nothing, or is stored
/// and reads back whole.
///
/// # Panics
///
/// When a rule is broken, naming it.
pub async fn records_read_back_or_are_refused(store: &dyn Store) {
    let huge = "n".repeat(2 << 20);
    let (up, att) = (id(70), id(71));
    let data = pattern(10, 70);
    store.begin_upload(&up, at(0)).await.expect("begin_upload");
    store
        .put_chunk(&up, 0, 0, data.clone())
        .await
        .expect("put_chunk");
    let mut m = meta(&att, &data, at(1));
    m.file_name.clone_from(&huge);
    match store.commit(&up, &m).await {
        Ok(()) => assert_eq!(store.metadata(&att).await.expect("metadata"), m),
        Err(Error::NotSaveable { .. }) => {
            assert_not_found(store.metadata(&att).await, "a refused commit");
            m = meta(&att, &data, at(1));
            store
                .commit(&up, &m)
                .await
                .expect("the upload is intact after a refused commit");
        }
        other => panic!("commit of a 2 MiB file name: expected Ok or NotSaveable, got {other:?}"),
    }
    match store
        .update(&att, &MetaChange::FileName(huge.clone()))
        .await
    {
        Ok(changed) => assert_eq!(store.metadata(&att).await.expect("metadata"), changed),
        Err(Error::NotSaveable { .. }) => assert_eq!(
            store.metadata(&att).await.expect("metadata"),
            m,
            "a refused update changes nothing"
        ),
        other => panic!("a rename to 2 MiB: expected Ok or NotSaveable, got {other:?}"),
    }
    let session = id(72);
    let record = Bytes::from(vec![b'x'; 2 << 20]);
    match store
        .save_session(&session, record.clone(), None, at(0))
        .await
    {
        Ok(version) => {
            let loaded = store
                .load_session(&session)
                .await
                .expect("load")
                .expect("saved");
            assert_eq!((loaded.record, loaded.version), (record, version));
        }
        Err(Error::NotSaveable { .. }) => assert_eq!(
            store.load_session(&session).await.expect("load"),
            None,
            "a refused save stores nothing"
        ),
        other => panic!("a 2 MiB session record: expected Ok or NotSaveable, got {other:?}"),
    }
    store
        .remove(&Expired::Upload(session))
        .await
        .expect("remove");
    store
        .delete_attachment(&att)
        .await
        .expect("delete_attachment");
}

/// An abort releases an upload: later chunks are [`Error::NotFound`] and the sweep no
/// longer lists it. Aborting twice, or aborting an unknown upload, is not an error.
///
/// # Panics
///
/// When a rule is broken, naming it.
pub async fn abort_releases(store: &dyn Store) {
    let up = id(7);
    store.begin_upload(&up, at(0)).await.expect("begin_upload");
    store
        .put_chunk(&up, 0, 0, pattern(64, 7))
        .await
        .expect("put_chunk");
    store.abort(&up).await.expect("abort");
    store.abort(&up).await.expect("abort twice");
    store
        .abort(&id(99))
        .await
        .expect("abort of an unknown upload");
    assert_not_found(
        store.put_chunk(&up, 1, 64, pattern(1, 7)).await,
        "put after abort",
    );
    assert!(
        !store
            .list_expired(at(1000), at(0))
            .await
            .expect("list_expired")
            .contains(&Expired::Upload(up)),
        "an aborted upload is gone"
    );
}

/// A chunk stored again under the same number replaces the first: the commit takes the
/// last bytes stored (a retried chunk is stored twice).
///
/// # Panics
///
/// When a rule is broken, naming it.
pub async fn same_number_replaces(store: &dyn Store) {
    let (up, att) = (id(8), id(9));
    store.begin_upload(&up, at(0)).await.expect("begin_upload");
    store
        .put_chunk(&up, 0, 0, pattern(50, 1))
        .await
        .expect("put_chunk");
    let second = pattern(50, 2);
    store
        .put_chunk(&up, 0, 0, second.clone())
        .await
        .expect("put_chunk again");
    store
        .commit(&up, &meta(&att, &second, at(1)))
        .await
        .expect("commit");
    assert_eq!(
        store.read_range(&att, 0..50).await.expect("read"),
        second,
        "the last put wins"
    );
    remove_attachments(store, &[att]).await;
}

/// A commit never replaces an attachment: a second upload committed under an id in use is
/// refused with [`Error::Taken`] `{ what: "attachment" }`, and the attachment keeps its
/// bytes and metadata.
///
/// # Panics
///
/// When a rule is broken, naming it.
pub async fn taken_id_is_refused(store: &dyn Store) {
    let (first, up, att) = (id(21), id(10), id(22));
    let before = pattern(300, 21);
    let existing = meta(&att, &before, at(1));
    store
        .put_attachment(&first, &existing, before.clone())
        .await
        .expect("put_attachment");
    store.begin_upload(&up, at(0)).await.expect("begin_upload");
    store
        .put_chunk(&up, 0, 0, pattern(3, 3))
        .await
        .expect("put_chunk");
    match store.commit(&up, &meta(&att, &pattern(3, 3), at(1))).await {
        Err(Error::Taken {
            what: "attachment",
            id,
        }) if id == att => {}
        other => panic!(
            "commit under an attachment id in use: expected Error::Taken {{ what: \"attachment\" }}, got {other:?}"
        ),
    }
    assert_eq!(
        store.read_range(&att, 0..300).await.expect("read existing"),
        before,
        "the existing attachment keeps its bytes"
    );
    assert_eq!(
        store.metadata(&att).await.expect("metadata"),
        existing,
        "and its metadata"
    );
    store.abort(&up).await.expect("abort");
    remove_attachments(store, &[att]).await;
}

/// A message may link an attachment after the sweep listed it as unlinked and before the
/// sweep removes it: [`Store::remove`] of that [`Expired::Attachment`] then leaves it
/// (whole and readable), while [`Store::delete_attachment`] deletes it, linked or not.
///
/// # Panics
///
/// When a rule is broken, naming it.
pub async fn a_link_wins_over_the_sweep(store: &dyn Store) {
    let att = id(16);
    let data = pattern(40, 16);
    store
        .put_attachment(&id(17), &meta(&att, &data, at(10)), data.clone())
        .await
        .expect("put_attachment");
    let found = store
        .list_expired(at(0), at(100))
        .await
        .expect("list_expired");
    assert!(
        found.contains(&Expired::Attachment(att.clone())),
        "an old unlinked attachment is listed: {found:?}"
    );
    // A message links it now, then the sweep removes what it listed.
    store.set_linked(&att, true).await.expect("set_linked");
    store
        .remove(&Expired::Attachment(att.clone()))
        .await
        .expect("remove");
    assert!(
        store
            .metadata(&att)
            .await
            .expect("metadata after the sweep")
            .linked,
        "an attachment linked after the listing stays"
    );
    assert_eq!(
        store
            .read_range(&att, 0..40)
            .await
            .expect("read after the sweep"),
        data,
        "and stays whole"
    );
    store
        .delete_attachment(&att)
        .await
        .expect("delete_attachment");
    assert_not_found(store.metadata(&att).await, "a deleted linked attachment");
    store
        .delete_attachment(&att)
        .await
        .expect("deleting twice is not an error");
}

/// What the sweep finds: [`Store::list_expired`] lists an upload idle since before its
/// cutoff and an unlinked attachment created before its own, but not an upload begun
/// after the cutoff, a linked attachment, or a recent one. [`Store::set_linked`] sticks,
/// and is [`Error::NotFound`] for an unknown id. [`Store::remove`] deletes what was listed
/// (twice is not an error), and a removed attachment does not come back when linked.
///
/// # Panics
///
/// When a rule is broken, naming it.
pub async fn expiry_and_linking(store: &dyn Store) {
    let (old_up, new_up) = (id(11), id(12));
    store
        .begin_upload(&old_up, at(10))
        .await
        .expect("begin_upload");
    store
        .begin_upload(&new_up, at(500))
        .await
        .expect("begin_upload");
    let (linked, unlinked, fresh) = (id(13), id(14), id(15));
    for (att, created) in [(&linked, at(10)), (&unlinked, at(10)), (&fresh, at(500))] {
        let data = pattern(20, 9);
        store
            .put_attachment(&id(20), &meta(att, &data, created), data)
            .await
            .expect("put_attachment");
    }
    store.set_linked(&linked, true).await.expect("set_linked");
    assert!(
        store.metadata(&linked).await.expect("metadata").linked,
        "linked flag kept"
    );
    assert_not_found(
        store.set_linked(&id(98), true).await,
        "set_linked of an unknown id",
    );

    let found = store
        .list_expired(at(100), at(100))
        .await
        .expect("list_expired");
    for expected in [
        Expired::Upload(old_up.clone()),
        Expired::Attachment(unlinked.clone()),
    ] {
        assert!(
            found.contains(&expected),
            "{expected:?} should be listed in {found:?}"
        );
    }
    for not_expected in [
        Expired::Upload(new_up.clone()),
        Expired::Attachment(linked.clone()),
        Expired::Attachment(fresh.clone()),
    ] {
        assert!(
            !found.contains(&not_expected),
            "{not_expected:?} must not be listed in {found:?}"
        );
    }
    for item in [
        Expired::Upload(old_up.clone()),
        Expired::Attachment(unlinked.clone()),
    ] {
        store.remove(&item).await.expect("remove");
        store.remove(&item).await.expect("remove twice");
    }
    assert_not_found(store.metadata(&unlinked).await, "metadata after remove");
    assert_not_found(
        store.set_linked(&unlinked, true).await,
        "linking a removed attachment",
    );
    assert_not_found(
        store.metadata(&unlinked).await,
        "metadata after linking a removed attachment (it must not come back)",
    );
    assert_not_found(
        store.put_chunk(&old_up, 0, 0, pattern(1, 1)).await,
        "put after remove",
    );
    assert!(
        store.metadata(&linked).await.is_ok(),
        "linked attachment kept"
    );
    assert!(
        store.metadata(&fresh).await.is_ok(),
        "fresh attachment kept"
    );
    store.abort(&new_up).await.expect("abort");
    remove_attachments(store, &[linked, fresh]).await;
}

/// Ids are the store's own: an empty id, a path (`../attachments`), a short text and a
/// malformed UUID are [`Error::NotFound`] for metadata, reads and chunks, never a file or
/// object name.
///
/// # Panics
///
/// When a rule is broken, naming it.
pub async fn odd_ids_are_not_found(store: &dyn Store) {
    for odd in [
        "",
        "../attachments",
        "x",
        "00000000-0000-0000-0000-00000000000g",
    ] {
        assert_not_found(store.metadata(odd).await, "metadata of a malformed id");
        assert_not_found(store.read_range(odd, 0..1).await, "read of a malformed id");
        assert_not_found(
            store.put_chunk(odd, 0, 0, pattern(1, 0)).await,
            "put of a malformed id",
        );
    }
}

/// Session records are versioned: a first save with no expected version succeeds once
/// (a second is [`Error::Contended`]), a load gives the record and its version, a save at
/// the current version gives a new version, a save at a stale one is
/// [`Error::Contended`], and of eight saves racing from one version exactly one wins.
/// A save is activity for the sweep; [`Store::abort`] keeps the record (it answers later
/// chunks), an idle record is listed, and [`Store::remove`] drops it.
///
/// # Panics
///
/// When a rule is broken, naming it.
pub async fn session_records(store: &dyn Store) {
    let up = id(30);
    assert_eq!(
        store.load_session(&up).await.expect("load_session"),
        None,
        "no record before the first save"
    );
    store.begin_upload(&up, at(0)).await.expect("begin_upload");
    let v1 = store
        .save_session(&up, Bytes::from_static(b"one"), None, at(1000))
        .await
        .expect("first save");
    match store
        .save_session(&up, Bytes::from_static(b"again"), None, at(1000))
        .await
    {
        Err(Error::Contended { .. }) => {}
        other => panic!("a second first save must be Contended, got {other:?}"),
    }
    let loaded = store.load_session(&up).await.expect("load").expect("saved");
    assert_eq!(
        (&loaded.record[..], &loaded.version),
        (&b"one"[..], &v1),
        "load gives the saved record and its version"
    );
    let v2 = store
        .save_session(&up, Bytes::from_static(b"two"), Some(&v1), at(1001))
        .await
        .expect("save at the current version");
    assert_ne!(v1, v2, "a save gives a new version");
    match store
        .save_session(&up, Bytes::from_static(b"stale"), Some(&v1), at(1001))
        .await
    {
        Err(Error::Contended { .. }) => {}
        other => panic!("a save at a stale version must be Contended, got {other:?}"),
    }
    // Eight saves race from the same version: exactly one wins.
    let up_ref = up.as_str();
    let racers = (0..8u8).map(|i| {
        let v2 = v2.clone();
        let up = up_ref;
        async move {
            store
                .save_session(up, Bytes::from(vec![i; 3]), Some(&v2), at(1002))
                .await
        }
    });
    let results = futures::future::join_all(racers).await;
    let winners: Vec<usize> = (0..8).filter(|&i| results[i].is_ok()).collect();
    assert_eq!(winners.len(), 1, "one racing save wins: {results:?}");
    for r in &results {
        if let Err(e) = r {
            assert!(
                matches!(e, Error::Contended { .. }),
                "a loser is Contended: {e:?}"
            );
        }
    }
    let loaded = store.load_session(&up).await.expect("load").expect("saved");
    assert_eq!(
        &loaded.record[..],
        &[winners[0] as u8; 3][..],
        "the winner's record is stored"
    );

    // Activity is the latest of begin and save: begun at 0 but saved at 1002.
    let found = store
        .list_expired(at(1001), at(0))
        .await
        .expect("list_expired");
    assert!(
        !found.contains(&Expired::Upload(up.clone())),
        "an upload saved after the cutoff is active: {found:?}"
    );
    store.abort(&up).await.expect("abort");
    assert!(
        store.load_session(&up).await.expect("load").is_some(),
        "abort keeps the session record (it answers later chunks)"
    );
    let found = store
        .list_expired(at(2000), at(0))
        .await
        .expect("list_expired");
    assert!(
        found.contains(&Expired::Upload(up.clone())),
        "an idle record is listed: {found:?}"
    );
    store
        .remove(&Expired::Upload(up.clone()))
        .await
        .expect("remove");
    assert_eq!(
        store.load_session(&up).await.expect("load"),
        None,
        "remove drops the record"
    );
}

/// [`Store::list_attachments`] lists a scope newest first by time-ordered id, pages by
/// cursor exactly past a deleted cursor and past new attachments, filters by
/// conversation, and keeps scopes apart; [`Store::update`] renames an attachment and
/// changes nothing else, and is [`Error::NotFound`] for an unknown id.
///
/// # Panics
///
/// When a rule is broken, naming it.
pub async fn listing_and_updates(store: &dyn Store) {
    let scope = "chat/owner-a";
    let mut ids = Vec::new();
    for n in 0..12u8 {
        let att = RandomId::time_ordered(1_700_000_000_000 + u64::from(n), [n; 16]).to_string();
        let data = pattern(10 + usize::from(n), n);
        let mut m = meta(&att, &data, at(600 + u64::from(n)));
        m.scope = scope.into();
        m.conversation_id = Some(if n % 3 == 0 { "c1" } else { "c2" }.into());
        m.linked = true;
        store
            .put_attachment(&RandomId::from_bytes([200 + n; 16]).to_string(), &m, data)
            .await
            .expect("put_attachment");
        ids.push(att);
    }
    // Another owner's attachment in a conversation of the same name.
    let other = RandomId::time_ordered(1_700_000_000_005, [99; 16]).to_string();
    let data = pattern(5, 1);
    let mut m = meta(&other, &data, at(605));
    m.scope = "chat/owner-b".into();
    m.conversation_id = Some("c1".into());
    store
        .put_attachment(&id(199), &m, data)
        .await
        .expect("put_attachment");

    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    let list = |q: ListQuery| async move {
        store
            .list_attachments(&q)
            .await
            .expect("list_attachments")
            .into_iter()
            .map(|m| m.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        list(ListQuery::new(scope, 100)).await,
        newest_first,
        "the whole scope, newest first"
    );
    // Pages of 5, removing the cursor's attachment before the next page and adding a
    // newer one: the pages still give every other attachment once, in order.
    let mut paged = Vec::new();
    let mut query = ListQuery::new(scope, 5);
    loop {
        let page = list(query.clone()).await;
        assert!(page.len() <= 5, "a page holds at most its limit");
        let Some(last) = page.last().cloned() else {
            break;
        };
        paged.extend(page);
        if paged.len() == 5 {
            store
                .delete_attachment(&last)
                .await
                .expect("delete_attachment");
            let newer = RandomId::time_ordered(1_700_000_001_000, [77; 16]).to_string();
            let data = pattern(3, 3);
            let mut m = meta(&newer, &data, at(700));
            m.scope = scope.into();
            store
                .put_attachment(&id(198), &m, data)
                .await
                .expect("put_attachment");
        }
        query = query.before(last);
    }
    assert_eq!(
        paged, newest_first,
        "paging past a deleted cursor and an insert"
    );
    let c1: Vec<String> = newest_first
        .iter()
        .filter(|id| {
            ids.iter()
                .position(|x| x == *id)
                .is_some_and(|n| n % 3 == 0)
        })
        .cloned()
        .collect();
    assert_eq!(
        list(ListQuery::new(scope, 100).with_conversation("c1")).await,
        c1,
        "filtered by conversation"
    );
    assert_eq!(
        list(ListQuery::new("chat/owner-b", 100).with_conversation("c1")).await,
        vec![other.clone()],
        "scopes do not mix"
    );
    assert!(
        list(ListQuery::new("chat/nobody", 10)).await.is_empty(),
        "an unknown scope is empty"
    );

    let renamed = store
        .update(&ids[3], &MetaChange::FileName("invoice (final).pdf".into()))
        .await
        .expect("rename");
    assert_eq!(renamed.file_name, "invoice (final).pdf");
    let meta = store.metadata(&ids[3]).await.expect("metadata");
    assert_eq!(meta.file_name, "invoice (final).pdf", "the rename is kept");
    assert!(meta.linked, "a rename changes nothing else");
    assert_not_found(
        store
            .update(&id(97), &MetaChange::FileName("x".into()))
            .await,
        "renaming an unknown attachment",
    );
    // Clean up, so the store is as other checks expect.
    for att in ids.iter().chain([&other]) {
        store
            .delete_attachment(att)
            .await
            .expect("delete_attachment");
    }
    let leftover = list(ListQuery::new(scope, 100)).await;
    for att in leftover {
        store
            .delete_attachment(&att)
            .await
            .expect("delete_attachment");
    }
    assert!(
        list(ListQuery::new(scope, 100)).await.is_empty(),
        "all removed"
    );
}

/// An upload's staged bytes read back before its commit ([`Store::read_staged`], what the
/// virus scan reads): any range across chunk boundaries reads back exactly; a range past
/// what is stored, or across a gap, is [`Error::Incomplete`]; of two chunks of one number
/// the later one counts; an unknown upload is [`Error::NotFound`]; the commit still
/// succeeds afterwards.
///
/// # Panics
///
/// When a rule is broken, naming it.
pub async fn staged_reads(store: &dyn Store) {
    let (up, att) = (id(80), id(81));
    store.begin_upload(&up, at(0)).await.unwrap();
    let parts = [pattern(700, 4), pattern(300, 5), pattern(500, 6)];
    let whole: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    // Chunk 1 first at another length, then replaced: the replacement counts.
    store.put_chunk(&up, 1, 700, pattern(10, 9)).await.unwrap();
    store.put_chunk(&up, 0, 0, parts[0].clone()).await.unwrap();
    let gap = store.read_staged(&up, 0..1_000).await;
    assert!(
        matches!(gap, Err(Error::Incomplete { .. })),
        "a range across a gap: {gap:?}"
    );
    store
        .put_chunk(&up, 1, 700, parts[1].clone())
        .await
        .unwrap();
    store
        .put_chunk(&up, 2, 1_000, parts[2].clone())
        .await
        .unwrap();
    for range in [
        0..1_500u64,
        0..1,
        699..701,
        650..1_200,
        1_000..1_500,
        1_499..1_500,
        3..3,
    ] {
        let got = store.read_staged(&up, range.clone()).await.unwrap();
        assert_eq!(
            &got[..],
            &whole[range.start as usize..range.end as usize],
            "staged bytes {range:?}"
        );
    }
    let past = store.read_staged(&up, 1_400..1_600).await;
    assert!(
        matches!(past, Err(Error::Incomplete { .. })),
        "a range past the staged bytes: {past:?}"
    );
    let unknown = store.read_staged(&id(82), 0..1).await;
    assert!(
        matches!(unknown, Err(Error::NotFound { .. })),
        "an unknown upload: {unknown:?}"
    );
    store.commit(&up, &meta(&att, &whole, at(0))).await.unwrap();
    let read = store.read_range(&att, 0..1_500).await.unwrap();
    assert_eq!(&read[..], &whole[..], "the commit after the staged reads");
    let after = store.read_staged(&up, 0..1).await;
    assert!(
        matches!(after, Err(Error::NotFound { .. })),
        "a committed upload's staged bytes: {after:?}"
    );
    remove_attachments(store, &[att]).await;
}
