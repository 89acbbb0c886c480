//! The store contract, each check of `store::conformance` and `store::conformance_messages`
//! run as its own test against every backend (the S3 store's on the real S3 test server
//! are ignored unless asked for: `cargo test -- --include-ignored`), and what only the
//! file-system store has: several handles on one directory, and what a crash leaves
//! behind.
#![cfg(feature = "async")]

mod common;

use std::time::{Duration, SystemTime};

use attachments::Error;
use attachments::digest::sha256;
use attachments::store::{
    AttachmentMeta, Expired, FsStore, MemoryStore, ObjectStoreBackend, Store, conformance,
    conformance_keys, conformance_messages,
};
use attachments::upload::{AttachmentInfo, RandomId};

fn id(n: u8) -> String {
    RandomId::from_bytes([n; 16]).to_string()
}

/// The names of the store checks and of the message checks, in the order
/// `conformance::CHECKS` and `conformance_messages::CHECKS` list them, passed to `$then!`
/// after its other arguments.
macro_rules! with_checks {
    ($then:ident!($($args:tt)*)) => {
        $then! {
            $($args)*
            [
                commit_and_read,
                invisible_until_commit,
                incomplete_commit_is_refused,
                exact_tiling,
                pipelined_commit_race,
                abort_releases,
                same_number_replaces,
                taken_id_is_refused,
                expiry_and_linking,
                a_link_wins_over_the_sweep,
                chunks_are_activity,
                records_read_back_or_are_refused,
                odd_ids_are_not_found,
                session_records,
                listing_and_updates,
                staged_reads
            ]
            [
                unknown_ids_and_conversations,
                post_latest_and_history,
                refusals,
                confirming,
                reservations
            ]
            [
                claim_replay_and_mismatch,
                given_up_keys_run_again,
                leases_and_ttl_expire,
                racing_claims
            ]
        }
    };
}

/// One test per check on a fresh store of one backend: `<backend>::store::<check>` and
/// `<backend>::messages::<check>`, so a failure names the capability and the backend.
/// `$attrs` (in brackets) go on every test; `$fixture` makes a fresh [`Fixture`].
macro_rules! backend {
    ($backend:ident, $attrs:tt, $fixture:expr, [$($store:ident),*] [$($message:ident),*] [$($key:ident),*]) => {
        mod $backend {
            use super::*;

            mod store {
                use super::*;
                $(check!($attrs, $fixture, conformance::$store);)*
            }

            mod messages {
                use super::*;
                $(check!($attrs, $fixture, conformance_messages::$message);)*
            }

            mod keys {
                use super::*;
                $(check!($attrs, $fixture, conformance_keys::$key);)*
            }
        }
    };
}

macro_rules! check {
    ([$($attr:tt)*], $fixture:expr, $module:ident::$check:ident) => {
        $($attr)*
        #[tokio::test]
        async fn $check() {
            let fixture = $fixture;
            $module::$check(&fixture.store).await;
            fixture.finish();
        }
    };
}

/// A fresh store for one check, and what to check once it ran.
struct Fixture<S> {
    store: S,
    /// The directory of an `FsStore`: nothing half-written may be left in it.
    dir: Option<tempfile::TempDir>,
}

impl<S> Fixture<S> {
    fn new(store: S) -> Self {
        Fixture { store, dir: None }
    }

    fn finish(self) {
        let Some(dir) = self.dir else { return };
        // Nothing half-written is left behind, and nothing of a commit being assembled.
        let leftovers: Vec<_> = files_under(dir.path())
            .into_iter()
            .filter(|p| {
                p.components().any(|c| {
                    let name = c.as_os_str().to_string_lossy();
                    name.starts_with(".tmp-") || name.starts_with("commit-")
                })
            })
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

impl Fixture<FsStore> {
    fn fs() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        Fixture {
            store,
            dir: Some(dir),
        }
    }
}

fn object_store_backend(inner: impl object_store::ObjectStore + 'static) -> ObjectStoreBackend {
    ObjectStoreBackend::new(std::sync::Arc::new(inner))
}

with_checks!(backend!(memory, [], Fixture::new(MemoryStore::new()),));
with_checks!(backend!(fs, [], Fixture::fs(),));
with_checks!(backend!(
    object_store_in_memory,
    [],
    Fixture::new(object_store_backend(object_store::memory::InMemory::new())),
));
with_checks!(backend!(
    object_store_unordered_listings,
    [],
    Fixture::new(object_store_backend(ReverseListing::default())),
));
with_checks!(backend!(
    s3,
    [#[ignore = "needs the S3 test server: scripts/s3-test-server.sh start, then cargo test --all-features -- --include-ignored (bash .ci/test does both)"]],
    Fixture::new(common::s3::s3().store("conformance")),
));

/// The suite above runs every check the crate has, under the names the crate gives them.
#[test]
fn every_check_runs_on_every_backend() {
    macro_rules! names {
        ([$($store:ident),*] [$($message:ident),*] [$($key:ident),*]) => {
            (
                [$(stringify!($store)),*].as_slice(),
                [$(stringify!($message)),*].as_slice(),
                [$(stringify!($key)),*].as_slice(),
            )
        };
    }
    let (store, messages, keys) = with_checks!(names!());
    assert_eq!(store, conformance::CHECKS);
    assert_eq!(messages, conformance_messages::CHECKS);
    assert_eq!(keys, conformance_keys::CHECKS);
}

/// `run_all` runs every check in turn on one store: the checks depend on nothing another
/// left, and leave nothing in the way of the next.
#[tokio::test]
async fn run_all_passes_on_one_store_of_each_local_backend() {
    conformance::run_all(&MemoryStore::new()).await;
    let fixture = Fixture::fs();
    conformance::run_all(&fixture.store).await;
    fixture.finish();
    conformance::run_all(&object_store_backend(ReverseListing::default())).await;
}

/// `object_store`'s in-memory store, listing newest key first: a backend whose listings
/// are not in key order (the S3 backend then reads and sorts every name of a page's scope).
#[derive(Debug, Default)]
struct ReverseListing(object_store::memory::InMemory);

impl std::fmt::Display for ReverseListing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReverseListing")
    }
}

#[async_trait::async_trait]
impl object_store::ObjectStore for ReverseListing {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.0.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.0.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.0.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        use futures::StreamExt;
        let all = self.0.list(prefix);
        futures::stream::once(async move {
            let mut items: Vec<_> = all.collect().await;
            items.reverse();
            futures::stream::iter(items)
        })
        .flatten()
        .boxed()
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.0.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.0.copy_opts(from, to, options).await
    }
}

/// Every file and directory under `dir`.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        }
        out.push(path);
    }
    out
}

#[tokio::test]
async fn fs_commit_refuses_a_hole() {
    // The chunk at offset 100 with none at 0: the upload's bytes are as long as the file,
    // but its first 100 bytes were never stored.
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let data: Vec<u8> = (0..200u8).collect();
    let up = id(6);
    store.begin_upload(&up, SystemTime::now()).await.unwrap();
    store
        .put_chunk(&up, 1, 100, data[100..].to_vec().into())
        .await
        .unwrap();
    let meta = meta_for(&id(7), &data);
    match store.commit(&up, &meta).await {
        Err(Error::Incomplete {
            stored: 0,
            expected: 200,
            ..
        }) => {}
        other => panic!("expected Incomplete {{ stored: 0, expected: 200 }}, got {other:?}"),
    }
    assert!(matches!(
        store.metadata(&id(7)).await,
        Err(Error::NotFound { .. })
    ));
    // The upload is as it was: the missing chunk completes it.
    store
        .put_chunk(&up, 0, 0, data[..100].to_vec().into())
        .await
        .unwrap();
    store.commit(&up, &meta).await.unwrap();
    assert_eq!(store.read_range(&id(7), 0..200).await.unwrap(), &data[..]);
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
    // A removal interrupted after the metadata went: chunks without metadata.
    let orphan = dir.path().join("attachments").join(id(3));
    std::fs::create_dir(&orphan).unwrap();
    std::fs::write(orphan.join("00000000000000000000"), b"half").unwrap();
    // An upload whose record was never written, with a commit stopped half-way.
    let upload = dir.path().join("uploads").join(id(4));
    std::fs::create_dir_all(upload.join("commit-0123456789abcdef")).unwrap();
    std::fs::write(
        upload
            .join("commit-0123456789abcdef")
            .join("00000000000000000000"),
        b"x",
    )
    .unwrap();
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
    assert!(!orphan.exists() && !upload.exists());
    // Files that are not the store's are left alone.
    std::fs::write(dir.path().join("attachments").join("README"), b"mine").unwrap();
    assert!(store.list_expired(later, later).await.unwrap().is_empty());
}

#[tokio::test]
async fn fs_refuses_oversized_metadata_before_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let att = dir.path().join("attachments").join(id(5));
    std::fs::create_dir(&att).unwrap();
    std::fs::write(att.join("meta.json"), vec![b' '; 64 * 1024 + 1]).unwrap();
    match store.metadata(&id(5)).await {
        Err(Error::CorruptState { problem, .. }) => {
            assert!(
                problem.contains("65537 bytes, over the 65536-byte limit"),
                "{problem}"
            )
        }
        other => panic!("{other:?}"),
    }
}

/// A chat-like attachment of `scope`, with a time-ordered id (so listings are ordered).
fn scoped(n: u8, scope: &str, created: SystemTime) -> (AttachmentMeta, Vec<u8>) {
    let data = vec![n; 10 + usize::from(n)];
    let mut meta = meta_for(
        &RandomId::time_ordered(1_700_000_000_000 + u64::from(n), [n; 16]).to_string(),
        &data,
    );
    meta.scope = scope.into();
    meta.created = created;
    (meta, data)
}

async fn put_scoped(store: &dyn Store, n: u8, scope: &str) -> AttachmentMeta {
    let (meta, data) = scoped(n, scope, SystemTime::now());
    store
        .put_attachment(&id(100 + n), &meta, data.into())
        .await
        .unwrap();
    meta
}

async fn listed(store: &dyn Store, scope: &str) -> Vec<String> {
    store
        .list_attachments(&attachments::store::ListQuery::new(scope, 100))
        .await
        .expect("listing succeeds")
        .into_iter()
        .map(|m| m.id)
        .collect()
}

#[tokio::test]
async fn fs_a_damaged_record_breaks_neither_listing_nor_the_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(FsStore::open(dir.path()).unwrap());
    let mut a = Vec::new();
    for n in 0..3 {
        a.push(put_scoped(&*store, n, "owner-a").await);
    }
    let b = [
        put_scoped(&*store, 3, "owner-b").await,
        put_scoped(&*store, 4, "owner-b").await,
    ];
    for m in a.iter().chain(&b) {
        store.set_linked(&m.id, true).await.unwrap();
    }
    let meta_file = |id: &str| dir.path().join("attachments").join(id).join("meta.json");
    // Not JSON in one scope; over the read budget in the other.
    std::fs::write(meta_file(&a[1].id), b"{\"id\": tru").unwrap();
    std::fs::write(meta_file(&b[0].id), vec![b' '; 70_000]).unwrap();
    assert_eq!(
        listed(&*store, "owner-a").await,
        [a[2].id.clone(), a[0].id.clone()]
    );
    assert_eq!(listed(&*store, "owner-b").await, [b[1].id.clone()]);

    // The sweep lists them whatever the cutoffs (their age cannot be read), and moves
    // them aside, bytes and all.
    let found = store
        .list_expired(SystemTime::UNIX_EPOCH, SystemTime::UNIX_EPOCH)
        .await
        .unwrap();
    let mut damaged = vec![
        Expired::Damaged(a[1].id.clone()),
        Expired::Damaged(b[0].id.clone()),
    ];
    damaged.sort();
    assert_eq!(found, damaged);
    let receiver =
        attachments::stream::UploadReceiver::new(attachments::Policy::chat(), store.clone());
    assert_eq!(receiver.sweep().await.unwrap(), 2);
    for gone in [&a[1].id, &b[0].id] {
        assert!(!dir.path().join("attachments").join(gone).exists());
        let kept = dir.path().join("quarantine").join(gone);
        assert!(
            kept.join("meta.json").is_file(),
            "{kept:?} keeps the record"
        );
        assert!(kept.join("00000000000000000000").is_file(), "and the bytes");
    }
    assert!(
        store
            .list_expired(SystemTime::UNIX_EPOCH, SystemTime::UNIX_EPOCH)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        listed(&*store, "owner-a").await,
        [a[2].id.clone(), a[0].id.clone()]
    );
    assert_eq!(
        store.read_range(&a[2].id, 0..12).await.unwrap(),
        vec![2u8; 12]
    );
}

#[tokio::test]
async fn fs_refuses_to_write_metadata_it_could_not_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let data = b"hello".to_vec();
    let mut meta = meta_for(&id(8), &data);
    meta.file_name = "a".repeat(70_000);
    match store.put_attachment(&id(9), &meta, data.into()).await {
        Err(Error::NotSaveable { what, reason }) => {
            assert!(what.contains(&id(8)), "{what}");
            assert!(reason.contains("over the 65536-byte limit"), "{reason}");
            assert!(reason.contains("70"), "the size is named: {reason}");
        }
        other => panic!("expected NotSaveable, got {other:?}"),
    }
    assert!(matches!(
        store.metadata(&id(8)).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn s3_a_damaged_manifest_is_skipped_and_moved_aside() {
    use object_store::{ObjectStoreExt, path::Path};
    let inner = std::sync::Arc::new(object_store::memory::InMemory::new());
    let store = attachments::store::ObjectStoreBackend::new(inner.clone());
    let long_ago = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    let mut made = Vec::new();
    for n in 0..3 {
        let (meta, data) = scoped(n, "owner-a", long_ago);
        store
            .put_attachment(&id(100 + n), &meta, data.into())
            .await
            .unwrap();
        made.push(meta);
    }
    let manifest = Path::from(format!("attachments/{}", made[1].id));
    inner
        .put(&manifest, b"{\"meta\": nul".to_vec().into())
        .await
        .unwrap();
    assert_eq!(
        listed(&store, "owner-a").await,
        [made[2].id.clone(), made[0].id.clone()]
    );
    // Unlinked and old: the sweep meets it through the expiry index, and its removal
    // moves the record aside instead of failing.
    let found = store
        .list_expired(SystemTime::UNIX_EPOCH, SystemTime::now())
        .await
        .unwrap();
    assert!(found.contains(&Expired::Attachment(made[1].id.clone())));
    store
        .remove(&Expired::Attachment(made[1].id.clone()))
        .await
        .unwrap();
    assert!(matches!(
        inner.head(&manifest).await,
        Err(object_store::Error::NotFound { .. })
    ));
    let kept = inner
        .get(&Path::from(format!("quarantine/{}", made[1].id)))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&kept[..], b"{\"meta\": nul");
    let found = store
        .list_expired(SystemTime::UNIX_EPOCH, SystemTime::now())
        .await
        .unwrap();
    assert!(
        !found.contains(&Expired::Attachment(made[1].id.clone())),
        "{found:?}"
    );
    assert_eq!(
        listed(&store, "owner-a").await,
        [made[2].id.clone(), made[0].id.clone()]
    );
    // A record that reads back is not "damaged": removing it as such leaves it.
    store
        .remove(&Expired::Damaged(made[0].id.clone()))
        .await
        .unwrap();
    assert!(store.metadata(&made[0].id).await.is_ok());
}

#[tokio::test]
async fn fs_a_page_reads_only_its_own_scope() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    // Ids interleaved across scopes, so that any walk through the store's ids in order
    // meets the other scopes' attachments between this one's.
    let mut mine = Vec::new();
    let mut others = Vec::new();
    for n in 0..40u8 {
        let scope = match n % 4 {
            0 => "owner-a",
            1 => "owner-b",
            2 => "owner-a/other",
            _ => "owner-c",
        };
        let (mut meta, data) = scoped(n, scope, SystemTime::now());
        if scope == "owner-a" {
            meta.conversation_id = Some(if n % 8 == 0 { "c1" } else { "c2" }.into());
        }
        store
            .put_attachment(&id(100 + n), &meta, data.into())
            .await
            .unwrap();
        if scope == "owner-a" {
            mine.push(meta);
        } else {
            others.push(meta);
        }
    }
    // Every other scope's metadata made unreadable in a way that fails a read outright
    // (a file where the attachment's directory was: an IO error, which listing does not
    // skip, where a damaged record would be skipped).
    for m in &others {
        let path = dir.path().join("attachments").join(&m.id);
        std::fs::remove_dir_all(&path).unwrap();
        std::fs::write(&path, b"not a directory").unwrap();
    }
    assert!(matches!(
        store.metadata(&others[0].id).await,
        Err(Error::Io(_))
    ));
    mine.reverse();
    let ids = |metas: &[&AttachmentMeta]| metas.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
    let all: Vec<&AttachmentMeta> = mine.iter().collect();
    let query = attachments::store::ListQuery::new("owner-a", 4);
    let page = store.list_attachments(&query).await.unwrap();
    assert_eq!(
        page.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
        ids(&all[..4])
    );
    let next = store
        .list_attachments(&query.clone().before(page[3].id.clone()))
        .await
        .unwrap();
    assert_eq!(
        next.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
        ids(&all[4..8])
    );
    let c1: Vec<&AttachmentMeta> = mine
        .iter()
        .filter(|m| m.conversation_id.as_deref() == Some("c1"))
        .collect();
    let listed_c1 = store
        .list_attachments(
            &attachments::store::ListQuery::new("owner-a", 100).with_conversation("c1"),
        )
        .await
        .unwrap();
    assert_eq!(
        listed_c1.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
        ids(&c1)
    );
    // A removed attachment leaves its scope's index.
    store
        .remove(&Expired::Attachment(mine[0].id.clone()))
        .await
        .unwrap();
    assert_eq!(listed(&store, "owner-a").await, ids(&all[1..]));
    let index_entries = files_under(&dir.path().join("index"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == mine[0].id.as_str()))
        .count();
    assert_eq!(index_entries, 0);
}

#[tokio::test]
async fn fs_an_earlier_layout_is_moved_into_this_one() {
    let dir = tempfile::tempdir().unwrap();
    let (atts, uploads) = (dir.path().join("attachments"), dir.path().join("uploads"));
    std::fs::create_dir_all(&atts).unwrap();
    std::fs::create_dir_all(&uploads).unwrap();
    let data = b"the bytes of an attachment".to_vec();
    let mut kept = meta_for(&id(11), &data);
    kept.scope = "owner-a".into();
    let file = |dir: &std::path::Path, name: String, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes).unwrap()
    };
    file(
        &atts,
        format!("{}.json", id(11)),
        &serde_json::to_vec(&kept).unwrap(),
    );
    file(&atts, format!("{}.bin", id(11)), &data);
    file(&atts, format!("{}.json", id(12)), b"{\"id\": ");
    file(&atts, format!("{}.bin", id(12)), b"damaged");
    file(
        &atts,
        format!("{}.bin", id(13)),
        b"a commit a crash stopped",
    );
    file(
        &uploads,
        format!("{}.json", id(14)),
        b"{\"started\": 1700000000000}",
    );
    file(&uploads, format!("{}.part", id(14)), b"part");
    file(&uploads, format!("{}.lock", id(14)), b"");
    file(
        &uploads,
        format!("{}.session", id(14)),
        b"{\"version\": 3, \"saved\": 1700000000000}\nthe record",
    );

    let store = FsStore::open(dir.path()).unwrap();
    assert_eq!(store.metadata(&id(11)).await.unwrap(), kept);
    assert_eq!(store.read_range(&id(11), 4..9).await.unwrap(), &data[4..9]);
    assert_eq!(listed(&store, "owner-a").await, [id(11)]);
    assert!(
        dir.path()
            .join("quarantine")
            .join(format!("{}.json", id(12)))
            .is_file()
    );
    assert!(
        dir.path()
            .join("quarantine")
            .join(format!("{}.bin", id(12)))
            .is_file()
    );
    let session = store.load_session(&id(14)).await.unwrap().unwrap();
    assert_eq!(
        (&session.record[..], session.version.as_str()),
        (&b"the record"[..], "3")
    );
    assert!(matches!(
        store.put_chunk(&id(14), 1, 0, b"x".to_vec().into()).await,
        Err(Error::NotFound { .. })
    ));
    // Nothing of the earlier layout is left, and opening again changes nothing.
    let flat: Vec<_> = std::fs::read_dir(&atts)
        .unwrap()
        .chain(std::fs::read_dir(&uploads).unwrap())
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains('.') && n != ".lock")
        .collect();
    assert!(flat.is_empty(), "{flat:?}");
    let before = files_under(dir.path());
    let again = FsStore::open(dir.path()).unwrap();
    assert_eq!(files_under(dir.path()), before);
    assert_eq!(again.metadata(&id(11)).await.unwrap(), kept);
}
