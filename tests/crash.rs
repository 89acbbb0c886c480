//! Integrity under faults: an `attachments serve` process on a file-system store
//! (`crash_fs`) and on the S3 test server (`crash_s3`, Ceph RGW from
//! `scripts/s3-test-server.sh start`) is killed with SIGKILL at random points while workers
//! upload and read, and restarted on the same store each time.
//!
//! Workers, for the whole run: two upload chunked JPEGs with raw requests (every chunk's
//! answer seen; an interrupted chunk is sent again as an identical retry), two upload with
//! `ConnectivityClient` pipelining 2 to 4 chunks, two read random ranges of attachments
//! already confirmed (and now and then a whole verified download, or `file_info`).
//!
//! What must hold:
//! - every upload whose `finish` was answered 200 downloads byte-exact after the last
//!   restart;
//! - no read ever returns wrong bytes, and a confirmed attachment never goes missing;
//! - no attachment in the store is partial: after the final stop the store is opened
//!   directly and every attachment of every scope used is read whole and checked against
//!   its recorded size and SHA-256;
//! - nothing answers 5xx (seen by the workers, or in any incarnation's request log), and
//!   connections only drop around a kill; 4xx answers are counted, and allowed only for an
//!   upload a kill interrupted.
//!
//! The run is driven by a seed, printed at the start; `ATTACHMENTS_CRASH_SEED=N` replays
//! its choices (the timing of the kills against the requests varies from run to run).
//! Output: `cargo test --all-features --test crash -- --nocapture`.
#![cfg(all(feature = "cli", feature = "object-store"))]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use attachments::client::ConnectivityClient;
use attachments::digest::{Sha256Digest, sha256};
use attachments::download::DownloadOptions;
use attachments::retry::RetryPolicy;
use attachments::server::scope;
use attachments::store::{Expired, FsStore, ListQuery, ObjectStoreBackend, Store};
use attachments::upload::{RequestKind, Step, Target, UploadPlan};
use attachments::wire::connectivity::ChunkAction;
use attachments::{Error, Policy};
use base64::Engine as _;
use bytes::Bytes;
use object_store::{ObjectStore, ObjectStoreExt as _};
use serde_json::Value;

/// Kills per run (the issue asks for at least 5).
const KILLS: u32 = 8;
/// How long the server runs between two kills, in ms.
const UPTIME_MS: Range<u64> = 300..4_500;
/// How long it stays down after a kill, in ms.
const DOWNTIME_MS: Range<u64> = 0..300;
/// How long the workers go on after the last restart.
const AFTER_LAST_RESTART: Duration = Duration::from_secs(2);
/// File sizes: over the 1 MiB single-request limit, so every upload is chunked.
const FILE_SIZES: Range<u64> = 1_100_000..3_500_001;
const PROPERTIES: [u64; 2] = [8011855, 8011856];
const CONVERSATIONS: [&str; 2] = [
    "0c5e7d7a-5b8e-4c3f-9a21-6d2f4b8e1a01",
    "0c5e7d7a-5b8e-4c3f-9a21-6d2f4b8e1a02",
];

/// The two tests share the two cores: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- Seeded randomness and file contents ----

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// xorshift64*, seeded through splitmix.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(splitmix(seed) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn range(&mut self, r: Range<u64>) -> u64 {
        r.start + self.below(r.end - r.start)
    }

    /// True `percent` times in 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The start of every file: a baseline JPEG's SOI to SOS, from the shared fixtures.
static JPEG_HEAD: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut head = common::structural_jpeg(0);
    head.truncate(head.len() - 2);
    head
});

/// A generated JPEG: the head, entropy-coded bytes that are a function of the seed and the
/// position (even bytes, so no 0xFF and nothing stuffed; any range can be computed on its
/// own), EOI. Valid for the structural check, and different from every other file everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileSpec {
    seed: u64,
    len: u64,
}

impl FileSpec {
    fn bytes(&self, range: Range<u64>) -> Vec<u8> {
        let head = JPEG_HEAD.len() as u64;
        let body_end = self.len - 2;
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        if range.start < head {
            out.extend_from_slice(&JPEG_HEAD[range.start as usize..range.end.min(head) as usize]);
        }
        // The entropy-coded bytes, 8 at a time: word k holds bytes 8k..8k+8 after the head.
        let (from, to) = (range.start.max(head), range.end.min(body_end));
        if from < to {
            let (first, last) = ((from - head) / 8, (to - head).div_ceil(8));
            let skip = ((from - head) % 8) as usize;
            let take = (to - from) as usize;
            let start = out.len();
            for k in first..last {
                // The low bit of every byte cleared: never 0xFF.
                let word =
                    splitmix(self.seed ^ k.wrapping_mul(0x9e37_79b9)) & 0xFEFE_FEFE_FEFE_FEFE;
                out.extend_from_slice(&word.to_le_bytes());
            }
            out.drain(start..start + skip);
            out.truncate(start + take);
        }
        for i in range.start.max(body_end)..range.end {
            out.push([0xFF, 0xD9][(i - body_end) as usize]);
        }
        out
    }

    fn all(&self) -> Vec<u8> {
        self.bytes(0..self.len)
    }

    fn name(&self) -> String {
        format!("crash-{:016x}.jpg", self.seed)
    }
}

// ---- What the run saw ----

/// An upload whose `finish` was answered 200.
#[derive(Debug, Clone)]
struct Confirmed {
    id: String,
    file: FileSpec,
    sha256: Sha256Digest,
    property: u64,
    conversation: &'static str,
    by: &'static str,
}

#[derive(Debug, Default)]
struct Tally {
    /// Statuses the workers saw, by request kind.
    statuses: BTreeMap<(&'static str, u16), u64>,
    /// 4xx answers to uploads a kill interrupted, by request, status and message.
    refusals: BTreeMap<String, u64>,
    /// Connection errors around a kill, by request kind.
    dropped: BTreeMap<&'static str, u64>,
    /// Uploads started, abandoned (after a refusal or a dropped connection), confirmed.
    uploads: BTreeMap<&'static str, u64>,
    /// Restarts the client made inside `upload` (it starts over once on a 400/404/409).
    client_restarts: u64,
    /// Identical retries of a chunk after a dropped connection.
    chunk_retries: u64,
    /// Range reads checked, and their bytes.
    reads: u64,
    bytes_checked: u64,
    failures: Vec<String>,
}

/// A request's view of the kills: the kill count and whether the server was down when it
/// was sent.
#[derive(Debug, Clone, Copy)]
struct Ticket {
    kills: u64,
    down: bool,
}

struct Shared {
    url: String,
    stop: AtomicBool,
    kills: AtomicU64,
    down: AtomicBool,
    confirmed: Mutex<Vec<Confirmed>>,
    /// Every file an upload was attempted of, by size.
    attempted: Mutex<HashMap<u64, Vec<FileSpec>>>,
    scopes: Mutex<BTreeSet<(u64, &'static str)>>,
    tally: Mutex<Tally>,
    started: Instant,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn ticket(&self) -> Ticket {
        Ticket {
            kills: self.kills.load(Ordering::SeqCst),
            down: self.down.load(Ordering::SeqCst),
        }
    }

    /// Whether a kill happened since `t` (or was under way then).
    fn killed_since(&self, t: &Ticket) -> bool {
        t.down || self.down.load(Ordering::SeqCst) || self.kills.load(Ordering::SeqCst) != t.kills
    }

    async fn wait_up(&self) {
        while self.down.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn fail(&self, what: String) {
        eprintln!(
            "[{:6.2}s] FAILURE: {what}",
            self.started.elapsed().as_secs_f64()
        );
        lock(&self.tally).failures.push(what);
    }

    fn status(&self, kind: &'static str, status: u16) {
        *lock(&self.tally)
            .statuses
            .entry((kind, status))
            .or_default() += 1;
    }

    fn count_upload(&self, what: &'static str) {
        *lock(&self.tally).uploads.entry(what).or_default() += 1;
    }

    /// A dropped connection: allowed around a kill, a failure otherwise.
    fn dropped(&self, kind: &'static str, t: &Ticket, what: &str, err: &str) {
        if self.killed_since(t) {
            *lock(&self.tally).dropped.entry(kind).or_default() += 1;
        } else {
            self.fail(format!(
                "{what}: connection error while the server was up and not killed: {err}"
            ));
        }
    }

    /// A 4xx to an upload: allowed (and counted) when a kill interrupted the upload.
    fn refused(&self, upload: &Ticket, what: &str, kind: &'static str, status: u16, body: &str) {
        if self.killed_since(upload) {
            let message = error_message(body);
            *lock(&self.tally)
                .refusals
                .entry(format!("{kind} {status} {message}"))
                .or_default() += 1;
        } else {
            self.fail(format!(
                "{what}: answered {status} though no kill interrupted the upload: {body}"
            ));
        }
    }

    /// A new file to upload, remembered.
    fn new_file(&self, rng: &mut Rng) -> (FileSpec, Vec<u8>) {
        let file = FileSpec {
            seed: rng.next(),
            len: rng.range(FILE_SIZES),
        };
        lock(&self.attempted)
            .entry(file.len)
            .or_default()
            .push(file);
        (file, file.all())
    }

    fn place(&self, rng: &mut Rng) -> (u64, &'static str) {
        let place = (
            PROPERTIES[rng.below(2) as usize],
            CONVERSATIONS[rng.below(2) as usize],
        );
        lock(&self.scopes).insert(place);
        place
    }

    fn confirm(&self, c: Confirmed) {
        lock(&self.confirmed).push(c);
    }

    fn pick_confirmed(&self, rng: &mut Rng) -> Option<Confirmed> {
        let all = lock(&self.confirmed);
        if all.is_empty() {
            return None;
        }
        // Recent ones more often: they are the ones a kill may just have hit.
        let n = all.len() as u64;
        let i = if rng.chance(50) {
            n - 1 - rng.below(n.min(4))
        } else {
            rng.below(n)
        };
        Some(all[i as usize].clone())
    }

    fn conversation_url(&self, property: u64, conversation: &str) -> String {
        format!(
            "{}/messaging/properties/{property}/conversations/{conversation}",
            self.url
        )
    }
}

/// The first error message of a Connectivity error envelope, else the start of the body.
fn error_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(200).collect())
}

/// An error and its causes, on one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

enum Outcome {
    Answer(u16, Bytes),
    Dropped(String),
}

async fn send(request: reqwest::RequestBuilder) -> Outcome {
    match request.send().await {
        Err(e) => Outcome::Dropped(chain(&e)),
        Ok(resp) => {
            let status = resp.status().as_u16();
            match resp.bytes().await {
                Ok(body) => Outcome::Answer(status, body),
                Err(e) => Outcome::Dropped(chain(&e)),
            }
        }
    }
}

/// A client for raw requests. No connection is kept between requests: one left from a
/// killed incarnation could be picked up after the restart, and its error would look like
/// the new one dropping a request.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .build()
        .expect("HTTP client")
}

// ---- Workers ----

/// Uploads with raw requests, one chunk at a time: each answer is seen; a dropped chunk is
/// sent again, identical, once the server is back (now and then the upload is given up
/// instead); a refusal starts a new upload.
async fn raw_uploader(sh: Arc<Shared>, worker: usize, mut rng: Rng) {
    let http = http_client();
    'files: while !sh.stopped() {
        let (property, conversation) = sh.place(&mut rng);
        let (file, bytes) = sh.new_file(&mut rng);
        let chunk_size = if rng.chance(50) {
            1_048_575
        } else {
            rng.range(400_000..1_048_577)
        };
        let mut plan = UploadPlan::new(
            &Policy::connectivity(),
            Target::Connectivity,
            &file.name(),
            "image/jpeg",
            file.len,
        )
        .and_then(|p| p.with_chunk_size(chunk_size))
        .expect("a valid plan");
        let url = format!(
            "{}/attachment_chunks",
            sh.conversation_url(property, conversation)
        );
        sh.count_upload("raw started");
        let upload = sh.ticket();
        let mut fed = 0;
        let mut upload_id = String::from("(none yet)");
        loop {
            let request = loop {
                match plan.poll().expect("the plan takes its own file") {
                    Step::NeedData => fed += plan.write(&bytes[fed..]).expect("a valid file"),
                    Step::Send(request) => break Some(request),
                    Step::Done => break None,
                    Step::NeedUploadId => unreachable!("the id is set after start"),
                }
            };
            let Some(request) = request else {
                sh.fail(format!(
                    "worker {worker}: the plan of upload {upload_id} ended without finish"
                ));
                continue 'files;
            };
            let RequestKind::Chunk { action, number } = request.kind else {
                unreachable!("files over 1 MiB go in chunks")
            };
            let kind = match action {
                ChunkAction::Start => "start",
                ChunkAction::Resume => "resume",
                ChunkAction::Finish => "finish",
            };
            let mut tries = 0;
            loop {
                sh.wait_up().await;
                let t = sh.ticket();
                let what = format!(
                    "worker {worker} (raw): POST {url} {kind} chunk {number} (bytes {:?}) of \
                     upload {upload_id}, file seed {:#x}, {} bytes",
                    request.range, file.seed, file.len
                );
                let outcome = send(
                    http.post(&url)
                        .header("content-type", "application/json")
                        .body(request.body.clone()),
                )
                .await;
                match outcome {
                    Outcome::Answer(200, body) => {
                        sh.status(kind, 200);
                        let json: Value = match serde_json::from_slice(&body) {
                            Ok(json) => json,
                            Err(e) => {
                                sh.fail(format!("{what}: 200 with a body that is not JSON: {e}"));
                                continue 'files;
                            }
                        };
                        if action == ChunkAction::Start {
                            let Some(id) = json["data"]["upload_id"].as_str() else {
                                sh.fail(format!("{what}: 200 without upload_id: {json}"));
                                continue 'files;
                            };
                            upload_id = id.to_owned();
                            plan.set_upload_id(upload_id.clone());
                        }
                        if action == ChunkAction::Finish {
                            let Some(id) = json["data"]["attachment_id"].as_str() else {
                                sh.fail(format!("{what}: 200 without attachment_id: {json}"));
                                continue 'files;
                            };
                            let Some(inspection) = plan.inspection() else {
                                unreachable!("finish is sent once the file was checked")
                            };
                            sh.count_upload("raw confirmed");
                            sh.confirm(Confirmed {
                                id: id.to_owned(),
                                file,
                                sha256: inspection.sha256,
                                property,
                                conversation,
                                by: "raw",
                            });
                            continue 'files;
                        }
                        break;
                    }
                    Outcome::Answer(status, body) => {
                        sh.status(kind, status);
                        let body = String::from_utf8_lossy(&body);
                        if status >= 500 {
                            sh.fail(format!("{what}: answered {status}: {body}"));
                        } else {
                            sh.refused(&upload, &what, kind, status, &body);
                        }
                        sh.count_upload("raw given up after a refusal");
                        continue 'files;
                    }
                    Outcome::Dropped(err) => {
                        sh.dropped(kind, &t, &what, &err);
                        tries += 1;
                        if tries > 20 || rng.chance(15) || sh.stopped() {
                            sh.count_upload("raw given up after a dropped connection");
                            continue 'files;
                        }
                        lock(&sh.tally).chunk_retries += 1;
                    }
                }
            }
        }
    }
}

/// Uploads with `ConnectivityClient`, 2 to 4 chunks in flight; most uploads with the
/// client's default retries (which carry it across a restart), some with none.
async fn client_uploader(sh: Arc<Shared>, worker: usize, mut rng: Rng) {
    while !sh.stopped() {
        let (property, conversation) = sh.place(&mut rng);
        let (file, bytes) = sh.new_file(&mut rng);
        let depth = rng.range(2..5) as usize;
        let retries = rng.chance(75);
        // A client (and connection pool) per upload, for the reason `http_client` gives.
        let client = ConnectivityClient::new(&sh.url)
            .expect("client")
            .with_pipeline(depth)
            .with_retry(if retries {
                RetryPolicy::default()
            } else {
                RetryPolicy::none()
            });
        sh.count_upload("client started");
        sh.wait_up().await;
        let t = sh.ticket();
        let what = format!(
            "worker {worker} (client, pipeline {depth}, retries {retries}): upload to \
             property {property} conversation {conversation}, file seed {:#x}, {} bytes",
            file.seed, file.len
        );
        let result = client
            .upload(
                property,
                conversation,
                &file.name(),
                "image/jpeg",
                file.len,
                std::io::Cursor::new(bytes),
                |_, _| {},
            )
            .await;
        match result {
            Ok(up) => {
                sh.status("client upload", 200);
                if up.restarts > 0 {
                    lock(&sh.tally).client_restarts += u64::from(up.restarts);
                    if !sh.killed_since(&t) {
                        sh.fail(format!(
                            "{what}: the client started over {} times (a 400/404/409 to a \
                             chunk) though no kill interrupted it",
                            up.restarts
                        ));
                    }
                }
                if up.size != file.len || !up.chunked {
                    sh.fail(format!("{what}: the client reports {up:?}"));
                }
                sh.count_upload("client confirmed");
                sh.confirm(Confirmed {
                    id: up.attachment_id,
                    file,
                    sha256: up.sha256,
                    property,
                    conversation,
                    by: "client",
                });
            }
            Err(Error::Remote {
                status, message, ..
            }) => {
                sh.status("client upload", status);
                if status >= 500 {
                    sh.fail(format!("{what}: answered {status}: {message}"));
                } else {
                    sh.refused(&t, &what, "client upload", status, &message);
                }
                sh.count_upload("client failed (refused)");
            }
            Err(e @ Error::Io(_)) => {
                sh.dropped("client upload", &t, &what, &e.to_string());
                sh.count_upload("client failed (connection)");
            }
            Err(e) => sh.fail(format!("{what}: unexpected error: {e}")),
        }
    }
}

/// Reads confirmed attachments: random ranges with raw requests (every byte compared),
/// now and then `file_info` or a whole download through the client.
async fn reader(sh: Arc<Shared>, worker: usize, mut rng: Rng) {
    let http = http_client();
    while !sh.stopped() {
        let Some(c) = sh.pick_confirmed(&mut rng) else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        sh.wait_up().await;
        let base = format!(
            "{}/attachments/{}",
            sh.conversation_url(c.property, c.conversation),
            c.id
        );
        let len = c.file.len;
        let t = sh.ticket();
        match rng.below(20) {
            0 => {
                let what = format!(
                    "worker {worker}: whole download of {} (by {}, {len} bytes)",
                    c.id, c.by
                );
                let range_size = rng.range(100_000..1_048_576);
                let mut copy = Vec::new();
                let client = ConnectivityClient::new(&sh.url).expect("client");
                let got = client
                    .download_to(
                        c.property,
                        c.conversation,
                        &c.id,
                        Some(c.sha256),
                        DownloadOptions::default().with_range_size(range_size),
                        &mut copy,
                    )
                    .await;
                match got {
                    Ok(_) if copy == c.file.all() => {
                        sh.status("download", 200);
                        let mut tally = lock(&sh.tally);
                        tally.reads += 1;
                        tally.bytes_checked += len;
                    }
                    Ok(v) => sh.fail(format!("{what}: wrong bytes though verified as {v:?}")),
                    Err(e @ Error::Io(_)) => sh.dropped("download", &t, &what, &e.to_string()),
                    Err(e) => sh.fail(format!("{what}: {e}")),
                }
            }
            1 => {
                let what = format!("worker {worker}: GET {base}/file_info (by {})", c.by);
                match send(http.get(format!("{base}/file_info"))).await {
                    Outcome::Answer(200, body) => {
                        sh.status("file_info", 200);
                        let json: Value = serde_json::from_slice(&body).unwrap_or_default();
                        let data = &json["data"];
                        let size_ok = data["file_size"].as_u64() == Some(len)
                            || data["file_size"].as_str() == Some(&len.to_string());
                        if !size_ok
                            || data["file_name"] != c.file.name().as_str()
                            || data["file_type"] != "image/jpeg"
                        {
                            sh.fail(format!("{what}: wrong answer: {json}"));
                        }
                    }
                    Outcome::Answer(status, body) => {
                        sh.status("file_info", status);
                        sh.fail(format!(
                            "{what}: answered {status}: {}",
                            String::from_utf8_lossy(&body)
                        ));
                    }
                    Outcome::Dropped(err) => sh.dropped("file_info", &t, &what, &err),
                }
            }
            pick => {
                let from = if rng.chance(20) {
                    len - 1 - rng.below(len.min(5_000))
                } else {
                    rng.below(len)
                };
                let (query, end) = if pick < 5 {
                    (format!("from={from}"), len)
                } else {
                    let n = if rng.chance(30) {
                        rng.range(1..65)
                    } else {
                        rng.range(1..1_100_000)
                    };
                    // `to` is inclusive and clamped to the last byte.
                    (
                        format!("from={from}&to={}", from + n - 1),
                        (from + n).min(len),
                    )
                };
                let what = format!(
                    "worker {worker}: GET {base}?{query} (by {}, {len} bytes)",
                    c.by
                );
                match send(http.get(format!("{base}?{query}"))).await {
                    Outcome::Answer(200, body) => {
                        sh.status("range", 200);
                        check_range(&sh, &what, &c, from..end, &body);
                    }
                    Outcome::Answer(status, body) => {
                        sh.status("range", status);
                        sh.fail(format!(
                            "{what}: answered {status}: {}",
                            String::from_utf8_lossy(&body)
                        ));
                    }
                    Outcome::Dropped(err) => sh.dropped("range", &t, &what, &err),
                }
            }
        }
    }
}

/// Checks a 200 answer to a range read: the envelope names the attachment, and the content
/// is exactly the file's bytes `range`.
fn check_range(sh: &Shared, what: &str, c: &Confirmed, range: Range<u64>, body: &[u8]) {
    let json: Value = match serde_json::from_slice(body) {
        Ok(json) => json,
        Err(e) => return sh.fail(format!("{what}: 200 with a body that is not JSON: {e}")),
    };
    let data = &json["data"];
    if data["attachment_id"] != c.id.as_str() || data["conversation_id"] != c.conversation {
        return sh.fail(format!(
            "{what}: the answer names another attachment: {data}"
        ));
    }
    let content = data["file_content"].as_str().unwrap_or_default();
    let got = match base64::engine::general_purpose::STANDARD.decode(content) {
        Ok(got) => got,
        Err(e) => return sh.fail(format!("{what}: file_content is not base64: {e}")),
    };
    let expected = c.file.bytes(range.clone());
    if got != expected {
        let first = got.iter().zip(&expected).position(|(a, b)| a != b);
        return sh.fail(format!(
            "{what}: WRONG BYTES: got {} bytes, expected {} (range {range:?}), first \
             difference at {first:?} of the range",
            got.len(),
            expected.len()
        ));
    }
    let mut tally = lock(&sh.tally);
    tally.reads += 1;
    tally.bytes_checked += got.len() as u64;
}

// ---- The server process ----

/// `attachments serve` on a fixed port over one store, restartable; each incarnation logs
/// its requests (`RUST_LOG=attachments=debug`) to a file of its own.
struct Server {
    port: u16,
    store: String,
    env: Vec<(String, String)>,
    logs: PathBuf,
    incarnations: u32,
    child: Option<(Child, BufReader<ChildStdout>)>,
}

impl Server {
    fn new(store: String, env: Vec<(String, String)>, logs: PathBuf) -> Self {
        // A free port, kept for every incarnation so clients keep their base URL.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Server {
            port,
            store,
            env,
            logs,
            incarnations: 0,
            child: None,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts an incarnation; returns once it listens (it prints its URL after binding).
    fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        for _ in 0..50 {
            self.incarnations += 1;
            let log = self
                .logs
                .join(format!("serve-{:02}.log", self.incarnations));
            let mut child = Command::new(env!("CARGO_BIN_EXE_attachments"))
                .args(["serve", "--addr", &format!("127.0.0.1:{}", self.port)])
                .args(["--store", &self.store])
                .envs(self.env.iter().cloned())
                .env("RUST_LOG", "warn,attachments=debug")
                .env("NO_COLOR", "1")
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(&log).expect("log file"))
                .spawn()
                .expect("attachments serve");
            let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
            let mut line = String::new();
            let _ = stdout.read_line(&mut line);
            if line.trim() == self.url() {
                self.child = Some((child, stdout));
                return;
            }
            // The port may still be held for a moment: try again.
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "attachments serve did not start on port {}: see {}",
            self.port,
            self.logs.display()
        );
    }

    /// SIGKILL (what `Child::kill` sends on Unix), and reaps the process.
    fn kill(&mut self) {
        if let Some((mut child, _)) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kills the server `KILLS` times at random moments, restarting it each time; returns how
/// long each restart took.
fn killer(sh: &Shared, server: &mut Server, mut rng: Rng) -> Vec<Duration> {
    let mut restarts = Vec::new();
    for k in 1..=KILLS {
        std::thread::sleep(Duration::from_millis(rng.range(UPTIME_MS)));
        // Marked before the signal, so every request it breaks sees a kill.
        sh.down.store(true, Ordering::SeqCst);
        sh.kills.fetch_add(1, Ordering::SeqCst);
        server.kill();
        let at = sh.started.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(rng.range(DOWNTIME_MS)));
        let started = Instant::now();
        server.start();
        restarts.push(started.elapsed());
        sh.down.store(false, Ordering::SeqCst);
        eprintln!(
            "[{at:6.2}s] kill {k}: SIGKILL; restarted in {:?}; {} uploads confirmed so far",
            started.elapsed(),
            lock(&sh.confirmed).len()
        );
    }
    std::thread::sleep(AFTER_LAST_RESTART);
    restarts
}

// ---- After the run ----

/// What the request logs of every incarnation show.
#[derive(Debug, Default)]
struct ServerLog {
    /// Answers by request kind and status.
    statuses: BTreeMap<(&'static str, u16), u64>,
    /// The errors behind 4xx answers (ids and long numbers masked), and behind 5xx ones.
    refused: BTreeMap<String, u64>,
    failed: BTreeMap<String, u64>,
}

/// Reads the logs (`RUST_LOG=attachments=debug`: a line per request with its status, and
/// the error behind each refusal or failure); a 5xx, or a panic, is a failure.
fn scan_logs(logs: &Path, sh: &Shared) -> ServerLog {
    let mut seen = ServerLog::default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(logs)
        .expect("log directory")
        .map(|e| e.expect("log entry").path())
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("log");
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.contains("panicked") {
                sh.fail(format!("{name}: the server panicked: {line}"));
            }
            let error = |after: &str| {
                let (_, rest) = line.split_once(after)?;
                let text = rest.split(" status=").next().unwrap_or(rest);
                Some(mask(text))
            };
            if let Some(e) = error("request refused error=") {
                *seen.refused.entry(e).or_default() += 1;
                continue;
            }
            if let Some(e) = error("request failed error=") {
                *seen.failed.entry(e).or_default() += 1;
                continue;
            }
            if !line.contains(" request method=") {
                continue;
            }
            let field = |key: &str| line.split_whitespace().find_map(|w| w.strip_prefix(key));
            let Some(status) = field("status=").and_then(|s| s.parse::<u16>().ok()) else {
                continue;
            };
            let path = field("path=").unwrap_or_default();
            let kind = if path.ends_with("/attachment_chunks") {
                "POST attachment_chunks"
            } else if path.ends_with("/file_info") {
                "GET file_info"
            } else if path.contains("/attachments/") {
                "GET attachment (range)"
            } else {
                "other"
            };
            *seen.statuses.entry((kind, status)).or_default() += 1;
            if status >= 500 {
                // The error behind it is logged just before (other requests may come between).
                let context = lines[i.saturating_sub(3)..=i].join("\n    ");
                sh.fail(format!(
                    "{name}: the server answered {status}:\n    {context}"
                ));
            }
        }
    }
    seen
}

/// `text` with ids and long numbers masked, so that messages can be counted.
fn mask(text: &str) -> String {
    text.split(' ')
        .map(|w| {
            let hexish = w
                .chars()
                .filter(|c| c.is_ascii_hexdigit() || *c == '-')
                .count();
            let digits = w.chars().filter(char::is_ascii_digit).count();
            if w.len() >= 32 && hexish + 2 >= w.len() {
                "<id>".to_owned()
            } else if digits >= 4 {
                w.chars()
                    .map(|c| if c.is_ascii_digit() { 'N' } else { c })
                    .collect()
            } else {
                w.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Opens the store directly and checks every attachment of every scope the run used: it
/// reads whole and hashes to its recorded size and SHA-256, and is one of the files
/// uploaded; every confirmed attachment is there. Returns how many attachments were read.
async fn check_store(store: &dyn Store, sh: &Shared) -> usize {
    let attempted = lock(&sh.attempted).clone();
    let scopes = lock(&sh.scopes).clone();
    let mut listed = HashMap::new();
    for (property, conversation) in scopes {
        let scope = scope(property, conversation);
        let mut before: Option<String> = None;
        loop {
            let mut query = ListQuery::new(&scope, 100);
            if let Some(b) = &before {
                query = query.before(b);
            }
            let page = store.list_attachments(&query).await.unwrap_or_else(|e| {
                panic!("listing {scope}: {e}");
            });
            for meta in &page {
                let what = format!("store: attachment {} in {scope}", meta.id);
                let mut content = Vec::with_capacity(meta.file_size as usize);
                while (content.len() as u64) < meta.file_size {
                    let at = content.len() as u64;
                    let end = (at + (1 << 20)).min(meta.file_size);
                    match store.read_range(&meta.id, at..end).await {
                        Ok(piece) if piece.len() as u64 == end - at => {
                            content.extend_from_slice(&piece);
                        }
                        Ok(piece) => {
                            sh.fail(format!(
                                "{what}: PARTIAL: bytes {at}..{end} read as {} bytes",
                                piece.len()
                            ));
                            break;
                        }
                        Err(e) => {
                            sh.fail(format!("{what}: PARTIAL: bytes {at}..{end}: {e}"));
                            break;
                        }
                    }
                }
                if content.len() as u64 == meta.file_size {
                    if sha256(&content) != meta.sha256 {
                        sh.fail(format!(
                            "{what}: its {} bytes do not hash to the recorded {}",
                            meta.file_size, meta.sha256
                        ));
                    }
                    let known = attempted
                        .get(&meta.file_size)
                        .is_some_and(|files| files.iter().any(|f| f.all() == content));
                    if !known {
                        sh.fail(format!(
                            "{what}: its {} bytes are none of the files uploaded",
                            meta.file_size
                        ));
                    }
                }
                listed.insert(meta.id.clone(), meta.clone());
            }
            match page.last() {
                Some(last) if page.len() == 100 => before = Some(last.id.clone()),
                _ => break,
            }
        }
    }
    for c in lock(&sh.confirmed).iter() {
        match listed.get(&c.id) {
            Some(meta) if meta.sha256 == c.sha256 && meta.file_size == c.file.len => {}
            Some(meta) => sh.fail(format!(
                "store: confirmed attachment {} has size {} and SHA-256 {}, expected {} and {}",
                c.id, meta.file_size, meta.sha256, c.file.len, c.sha256
            )),
            None => sh.fail(format!(
                "store: confirmed attachment {} (by {}) is not listed in its scope",
                c.id, c.by
            )),
        }
    }
    listed.len()
}

/// Downloads every confirmed attachment by ranges through the client, verified (two at a
/// time).
async fn check_confirmed(sh: &Shared) {
    use futures::StreamExt as _;
    let client = ConnectivityClient::new(&sh.url).expect("client");
    let confirmed = lock(&sh.confirmed).clone();
    let check = |c: Confirmed| {
        let client = client.clone();
        async move {
            let mut copy = Vec::new();
            let got = client
                .download_to(
                    c.property,
                    c.conversation,
                    &c.id,
                    Some(c.sha256),
                    DownloadOptions::default().with_range_size(700_000),
                    &mut copy,
                )
                .await;
            match got {
                Ok(v) if v.size == c.file.len && copy == c.file.all() => {}
                Ok(v) => sh.fail(format!(
                    "final download of {} (by {}): wrong bytes though verified as {v:?}",
                    c.id, c.by
                )),
                Err(e) => sh.fail(format!(
                    "final download of {} (by {}, {} bytes): {e}",
                    c.id, c.by, c.file.len
                )),
            }
        }
    };
    futures::stream::iter(confirmed)
        .map(check)
        .buffer_unordered(2)
        .collect::<()>()
        .await;
}

/// Removes what the run left in the store as the library's sweep would (every upload and
/// attachment, as if all had expired).
async fn clear(store: &dyn Store) {
    let far = SystemTime::now() + Duration::from_secs(365 * 24 * 60 * 60);
    let left: Vec<Expired> = store.list_expired(far, far).await.unwrap_or_default();
    for item in &left {
        let _ = store.remove(item).await;
    }
    // The idempotency keys of the clients' requests, expired by then.
    let _ = store.sweep_keys(far, usize::MAX).await;
}

/// Every file under `dir` (none when it does not exist).
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in listing.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Deletes every object under `prefix` of the bucket; returns their names.
async fn purge(bucket: &dyn ObjectStore, prefix: &str) -> Vec<String> {
    use futures::StreamExt as _;
    let prefix = object_store::path::Path::from(prefix);
    let objects: Vec<_> = bucket.list(Some(&prefix)).collect().await;
    let mut names = Vec::new();
    for meta in objects.into_iter().flatten() {
        let _ = bucket.delete(&meta.location).await;
        names.push(meta.location.to_string());
    }
    names
}

fn seed() -> u64 {
    match std::env::var("ATTACHMENTS_CRASH_SEED") {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.expect("ATTACHMENTS_CRASH_SEED is a number")
        }
        Err(_) => {
            let mut bytes = [0u8; 8];
            getrandom::fill(&mut bytes).expect("random");
            u64::from_le_bytes(bytes)
        }
    }
}

/// The crash run over one store: `server` (not started yet) serves it, and `store` is the
/// same store opened directly, for the checks after the final stop.
async fn run(name: &str, mut server: Server, store: &dyn Store) {
    let seed = seed();
    eprintln!("crash_{name}: seed {seed:#x} (replay with ATTACHMENTS_CRASH_SEED={seed:#x})");
    let mut rng = Rng::new(seed);
    // The generator: any range is the same bytes as the whole file's.
    let file = FileSpec { seed, len: 100_000 };
    let all = file.all();
    for _ in 0..200 {
        let from = rng.below(file.len);
        let to = rng.range(from..file.len + 1);
        assert_eq!(file.bytes(from..to), all[from as usize..to as usize]);
    }
    server.start();
    let sh = Arc::new(Shared {
        url: server.url(),
        stop: AtomicBool::new(false),
        kills: AtomicU64::new(0),
        down: AtomicBool::new(false),
        confirmed: Mutex::new(Vec::new()),
        attempted: Mutex::new(HashMap::new()),
        scopes: Mutex::new(BTreeSet::new()),
        tally: Mutex::new(Tally::default()),
        started: Instant::now(),
    });

    let mut workers = Vec::new();
    for w in 0..6 {
        let worker_rng = Rng::new(rng.next());
        let sh = Arc::clone(&sh);
        workers.push(match w {
            0 | 1 => tokio::spawn(raw_uploader(sh, w, worker_rng)),
            2 | 3 => tokio::spawn(client_uploader(sh, w, worker_rng)),
            _ => tokio::spawn(reader(sh, w, worker_rng)),
        });
    }
    let killer_rng = Rng::new(rng.next());
    let (restarts, mut server) = {
        let sh = Arc::clone(&sh);
        tokio::task::spawn_blocking(move || {
            let restarts = killer(&sh, &mut server, killer_rng);
            (restarts, server)
        })
        .await
        .expect("the killer")
    };
    sh.stop.store(true, Ordering::SeqCst);
    for w in workers {
        tokio::time::timeout(Duration::from_secs(120), w)
            .await
            .expect("workers stop")
            .expect("a worker panicked");
    }
    let ran = sh.started.elapsed();

    // After the last restart: every confirmed upload downloads byte-exact.
    check_confirmed(&sh).await;
    let downloaded = sh.started.elapsed();
    // The final stop, then the store itself.
    server.kill();
    let in_store = check_store(store, &sh).await;
    let server_log = scan_logs(&server.logs, &sh);
    let total = sh.started.elapsed();

    let tally = lock(&sh.tally);
    let confirmed = lock(&sh.confirmed).len();
    eprintln!("crash_{name}: seed {seed:#x}");
    eprintln!(
        "  {} kills in {ran:.1?} of load; final downloads {:.1?}, store check {:.1?}; \
         restarts took {restarts:?}",
        restarts.len(),
        downloaded - ran,
        total - downloaded
    );
    eprintln!(
        "  uploads: {:?}; {confirmed} confirmed, {in_store} attachments in the store ({} \
         committed without a 200 to their finish)",
        tally.uploads,
        in_store - confirmed
    );
    eprintln!(
        "  reads checked: {} ({} MB); identical chunk retries: {}; client restarts: {}",
        tally.reads,
        tally.bytes_checked / 1_000_000,
        tally.chunk_retries,
        tally.client_restarts
    );
    eprintln!("  statuses the workers saw: {:?}", tally.statuses);
    eprintln!("  statuses the server logged: {:?}", server_log.statuses);
    for (what, counts) in [
        ("refused (4xx)", &server_log.refused),
        ("failed (5xx)", &server_log.failed),
    ] {
        eprintln!("  the server {what}:");
        for (error, n) in counts {
            eprintln!("    {n:4} x {error}");
        }
    }
    eprintln!("  connections dropped around a kill: {:?}", tally.dropped);
    eprintln!("  4xx to uploads a kill interrupted:");
    for (what, n) in &tally.refusals {
        eprintln!("    {n:4} x {what}");
    }
    let failures = tally.failures.clone();
    drop(tally);
    assert!(KILLS >= 5 && restarts.len() as u32 == KILLS);
    assert!(
        confirmed > 0,
        "no upload was confirmed: the run checked nothing"
    );
    assert!(
        failures.is_empty(),
        "crash_{name} (seed {seed:#x}, logs in {}): {} failures:\n{}",
        server.logs.display(),
        failures.len(),
        failures.join("\n")
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn crash_fs() {
    let _one = lock(&ONE_AT_A_TIME);
    let dir = tempfile::Builder::new()
        .prefix("attachments-crash-fs-")
        .tempdir()
        .expect("temp dir");
    let (data, logs) = (dir.path().join("store"), dir.path().join("logs"));
    std::fs::create_dir_all(&logs).expect("log dir");
    let server = Server::new(format!("fs:{}", data.display()), Vec::new(), logs);
    let store = FsStore::open(&data).expect("the fs store");
    let rt = runtime();
    let result = catch_unwind(AssertUnwindSafe(|| {
        rt.block_on(run("fs", server, &store));
        // Swept as if everything had expired, the store holds nothing: no index entry,
        // chunk or stage directory that a commit cut short left without an owner.
        rt.block_on(clear(&store));
        let left: Vec<_> = ["index", "attachments", "uploads"]
            .iter()
            .flat_map(|top| files_under(&data.join(top)))
            // The lock metadata updates take: the store's own, always there.
            .filter(|p| !p.ends_with("attachments/.lock"))
            .collect();
        assert!(left.is_empty(), "crash_fs: the sweep left {left:?}");
    }));
    if let Err(panic) = result {
        // Keep the store and the server logs for a look.
        eprintln!(
            "crash_fs: the store and the logs are kept in {}",
            dir.keep().display()
        );
        resume_unwind(panic);
    }
}

#[test]
#[ignore = "needs the S3 test server: scripts/s3-test-server.sh start, then cargo test --all-features -- --include-ignored (bash .ci/test does both)"]
fn crash_s3() {
    let s3 = common::s3::s3();
    let _one = lock(&ONE_AT_A_TIME);
    let prefix = common::s3::unique_prefix("crash");
    let dir = tempfile::Builder::new()
        .prefix("attachments-crash-s3-")
        .tempdir()
        .expect("temp dir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("log dir");
    let env = s3
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let server = Server::new(s3.url(&prefix), env, logs);
    let inner = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&s3.endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name(&s3.bucket)
        .with_access_key_id(&s3.access_key)
        .with_secret_access_key(&s3.secret_key)
        .build()
        .expect("S3 client");
    let bucket: Arc<dyn ObjectStore> = Arc::new(inner);
    let store = ObjectStoreBackend::new(Arc::clone(&bucket)).with_prefix(&prefix);
    eprintln!("crash_s3: prefix {prefix} of bucket {}", s3.bucket);
    let rt = runtime();
    let result = catch_unwind(AssertUnwindSafe(|| rt.block_on(run("s3", server, &store))));
    // The bucket's server keeps everything in memory: leave nothing behind, even on a
    // failure (whose details are printed); the server logs are kept then. First as the
    // sweep would, then whatever the sweep does not know of.
    rt.block_on(clear(&store));
    let missed = rt.block_on(purge(bucket.as_ref(), &prefix));
    // Nothing may outlive the sweep: an index entry of a commit a kill cut short, say.
    let result = result.and_then(|()| {
        catch_unwind(|| {
            assert!(
                missed.is_empty(),
                "crash_s3: {} objects the sweep would not remove (deleted now): {missed:?}",
                missed.len()
            )
        })
    });
    if let Err(panic) = result {
        eprintln!(
            "crash_s3: the server logs are kept in {}",
            dir.keep().display()
        );
        resume_unwind(panic);
    }
}
