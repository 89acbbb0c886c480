//! Load on the sandbox server: many concurrent chunked uploads, the server's memory while
//! they run, and how a flood of cheap requests delays another client's requests.
//!
//! ```text
//! cargo run --release --features cli --example load -- [--uploads N] [--size BYTES]
//!     [--no-flood] [--flood-secs S] [--max-in-flight N] [--max-connections N]
//! ```
//!
//! The server runs alone in a child process (this program started again with a hidden
//! `--serve-child DIR`), on a file-system store in a temporary directory and with
//! `server::serve`, the accept loop `attachments serve` runs, so that its resident set
//! size is its own. The parent:
//!
//! 1. encodes a noisy baseline JPEG of about `--size` bytes (default 3,000,000; it must
//!    take more than 1 MiB, so that it goes in chunks, and at most Connectivity's 10 MiB);
//! 2. starts `--uploads` uploads of it at once (default 1,000), each to a conversation
//!    of its own, with the crate's `ConnectivityClient` (one client, so one connection
//!    pool, and its default retry policy: 503 and 429 are sent again after `Retry-After`);
//! 3. samples the server's `VmRSS` every 50 ms while they run: the growth is the peak
//!    minus the value read just before the first upload started, and is also given per
//!    concurrent upload;
//! 4. checks every upload: `file_info` gives the size sent, and a ranged download of the
//!    whole attachment equals the original bytes (and their SHA-256);
//! 5. unless `--no-flood`, probes latency: a "victim" on a thread and runtime of its own
//!    sends `file_info` for one uploaded attachment, one request after the other (no
//!    retries), for `--flood-secs` (default 5) alone, then as long again while 32
//!    "attacker" tasks send Demand `latest`, `latest/confirm` and Connectivity `file_info`
//!    of a missing attachment as fast as the server answers. The issue's goal: the
//!    victim's p99 stays within 50 ms under the flood.
//!
//! It prints a summary (uploads, bytes, wall time, throughput, errors, client retries by
//! status, server RSS, the victim's latencies) and exits non-zero when an upload or a
//! check failed. Client and server share the machine's cores: the figures are those of
//! one host, not of a server alone.
//!
//! The server is configured for the run: `--max-in-flight` (default twice the uploads,
//! at least the server's default) so that the uploads are not answered 503 for the cap
//! alone, and `--max-connections` (default the uploads plus 256, at least the server's
//! default 1,024): one upload holds one HTTP/1.1 connection, and the pooled ones stay open
//! while the checks and the probe open more. Each open connection is a file descriptor
//! on both sides: raise `ulimit -n` when it is lower than the uploads plus a few hundred.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use attachments::client::{ConnectivityClient, Uploaded};
use attachments::digest::{Sha256Digest, sha256};
use attachments::download::DownloadOptions;
use attachments::policy::{BOOKING_SINGLE_MAX, CONNECTIVITY_CHUNKED_MAX};
use attachments::retry::RetryPolicy;
use attachments::server::{
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_IN_FLIGHT, ListenOptions, Sandbox, ServerConfig,
    UploadQuota,
};
use attachments::store::FsStore;
use bytes::Bytes;
use clap::Parser;
use futures::StreamExt;

/// The property every upload goes to; each upload has a conversation of its own.
const PROPERTY: u64 = 1;
/// Uploads checked at once after the run (each downloads with 4 ranges in flight).
const VERIFY_AT_ONCE: usize = 32;
/// Tasks flooding the server during the latency probe.
const ATTACKERS: usize = 32;
/// The victim's p99 under the flood the issue asks for.
const GOAL_P99: Duration = Duration::from_millis(50);
/// How often the server's RSS is read.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// An attachment id no upload has (well-formed, so it is looked up).
const MISSING_ID: &str = "00000000-0000-4000-8000-000000000000";

#[derive(Parser)]
#[command(about = "Concurrent chunked uploads against a sandbox server in a child process")]
struct Args {
    /// Uploads started at once.
    #[arg(long, default_value_t = 1000)]
    uploads: usize,
    /// Size the generated JPEG aims at, in bytes (its actual size is printed).
    #[arg(long, default_value_t = 3_000_000)]
    size: u64,
    /// Run the latency probe after the uploads (the default).
    #[arg(long, overrides_with = "no_flood")]
    flood: bool,
    /// Skip the latency probe.
    #[arg(long, overrides_with = "flood")]
    no_flood: bool,
    /// Seconds the victim is timed, without and then with the flood.
    #[arg(long, default_value_t = 5)]
    flood_secs: u64,
    /// The server's cap on requests in flight (default: twice the uploads).
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// The server's cap on open connections (default: twice the uploads plus 256).
    #[arg(long)]
    max_connections: Option<usize>,
    /// Internal: serve on a store in DIR, print the port, serve until stdin closes.
    #[arg(long, hide = true, value_name = "DIR")]
    serve_child: Option<PathBuf>,
}

impl Args {
    /// Whether the latency probe runs: unless `--no-flood` came last.
    fn flood(&self) -> bool {
        self.flood || !self.no_flood
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(dir) = &args.serve_child {
        return serve_child(
            dir,
            args.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT),
            args.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
        );
    }
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------------------------------
// The child: the server alone.

fn serve_child(dir: &Path, max_in_flight: usize, max_connections: usize) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(async {
        let store = FsStore::open(dir).map_err(|e| e.to_string())?;
        // All uploads come from one client (one address) and each goes to a conversation
        // of its own: that client's upload quota and its share of the buffered-bytes
        // budget are lifted (the run
        // measures memory and latency, and the quota would turn it into 429s). Every other
        // limit keeps its default, the buffered-bytes budget among them.
        let config = ServerConfig::default()
            .with_max_in_flight(max_in_flight)
            .with_max_buffered_per_client(attachments::server::DEFAULT_MAX_BUFFERED)
            .with_upload_quota(UploadQuota {
                max_open: usize::MAX,
                max_staged: u64::MAX,
            });
        let sandbox = Sandbox::new(Arc::new(store), config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("binding 127.0.0.1:0: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        println!("{port}");
        tokio::spawn(sandbox.clone().sweep_every(Duration::from_secs(60)));
        let options = ListenOptions::default().with_max_connections(max_connections);
        attachments::server::serve(listener, sandbox.router(), options, stdin_closed()).await;
        Ok::<_, String>(())
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes when the parent closes the child's stdin (or exits).
async fn stdin_closed() {
    let _ = tokio::task::spawn_blocking(|| {
        use std::io::Read;
        let mut buf = [0u8; 64];
        while let Ok(n) = std::io::stdin().read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// The parent: the load, the measures, the summary.

fn run(args: &Args) -> Result<bool, String> {
    if args.uploads == 0 {
        return Err("--uploads must be at least 1".into());
    }
    if args.size <= BOOKING_SINGLE_MAX || args.size > CONNECTIVITY_CHUNKED_MAX {
        return Err(format!(
            "--size must be more than {BOOKING_SINGLE_MAX} bytes (so the upload goes in \
             chunks) and at most {CONNECTIVITY_CHUNKED_MAX} (Connectivity's largest file)"
        ));
    }
    let started = Instant::now();
    let image = noisy_jpeg(args.size)?;
    println!(
        "file: baseline JPEG {}x{}, {} bytes ({:.2} MiB), SHA-256 {}, encoded in {:.2} s",
        image.side,
        image.side,
        image.bytes.len(),
        mib(image.bytes.len() as u64),
        image.sha256,
        started.elapsed().as_secs_f64()
    );

    let max_in_flight = args
        .max_in_flight
        .unwrap_or((args.uploads * 2).max(DEFAULT_MAX_IN_FLIGHT));
    let max_connections = args
        .max_connections
        .unwrap_or((args.uploads * 2 + 256).max(DEFAULT_MAX_CONNECTIONS));
    let open_files = open_files_limit();
    println!(
        "server: child process, fs store, max in flight {max_in_flight}, max connections \
         {max_connections}; open files limit {}",
        open_files.map_or_else(|| "unknown".to_owned(), |n| n.to_string())
    );
    if let Some(limit) = open_files
        && limit < (args.uploads as u64) + 512
    {
        eprintln!(
            "warning: {limit} open files may be too few for {} connections; raise `ulimit -n`",
            args.uploads
        );
    }

    let dir = TempDir::new()?;
    let mut server = Server::start(&dir.0, max_in_flight, max_connections)?;
    let retries = Arc::new(Retries::default());
    {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(CountRetries(Arc::clone(&retries)));
        tracing::subscriber::set_global_default(subscriber).map_err(|e| e.to_string())?;
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let base = format!("http://127.0.0.1:{}", server.port);
    let report = runtime.block_on(drive(args, server.pid, &base, &image))?;
    let hwm = proc_status_kib(server.pid, "VmHWM:");
    let rss_end = proc_status_kib(server.pid, "VmRSS:");
    server.stop();
    drop(runtime);
    drop(dir);

    print_summary(args, &image, &report, &retries, hwm, rss_end);
    Ok(report.failures.is_empty() && report.verify_failures.is_empty())
}

/// What the run measured.
struct Report {
    ok: usize,
    chunked: usize,
    restarts: u32,
    failures: Vec<String>,
    wall: Duration,
    upload_times: Vec<Duration>,
    verified: usize,
    verify_failures: Vec<String>,
    verify_time: Duration,
    baseline_kib: u64,
    peaks: Peaks,
    after_kib: Option<u64>,
    /// The server's open files before the uploads, after the checks, and once the
    /// uploading client's connections closed.
    fds: [Option<usize>; 3],
    /// How long those took to close.
    closed_in: Duration,
    quiet: Option<Probe>,
    flooded: Option<(Probe, Attack)>,
}

async fn drive(args: &Args, pid: u32, base: &str, image: &Jpeg) -> Result<Report, String> {
    let client = ConnectivityClient::new(base).map_err(|e| e.to_string())?;
    let size = image.bytes.len() as u64;
    // Let the child finish starting before its baseline is read.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline_kib =
        proc_status_kib(pid, "VmRSS:").ok_or("cannot read the server's VmRSS in /proc")?;
    let baseline_fds = open_fds(pid);
    let sampler = Sampler::start(pid);
    println!("uploading: {} uploads at once ...", args.uploads);

    let started = Instant::now();
    let tasks: Vec<_> = (0..args.uploads)
        .map(|i| {
            let client = client.clone();
            let bytes = image.bytes.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                let reader = std::io::Cursor::new(bytes);
                let conversation = conversation(i);
                let uploaded = client
                    .upload(
                        PROPERTY,
                        &conversation,
                        "load.jpg",
                        "image/jpeg",
                        size,
                        reader,
                        |_, _| {},
                    )
                    .await;
                (uploaded.map_err(|e| describe(&e)), t.elapsed())
            })
        })
        .collect();
    let mut uploads = Vec::with_capacity(tasks.len());
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await {
            Ok((result, took)) => uploads.push((i, result, took)),
            Err(e) => uploads.push((i, Err(format!("the task failed: {e}")), Duration::ZERO)),
        }
    }
    let wall = started.elapsed();
    let peaks = sampler.stop();
    let after_kib = proc_status_kib(pid, "VmRSS:");

    let mut failures = Vec::new();
    let mut done: Vec<(usize, Uploaded)> = Vec::new();
    let mut upload_times = Vec::new();
    for (i, result, took) in uploads {
        match result {
            Ok(up) => {
                upload_times.push(took);
                done.push((i, up));
            }
            Err(e) => failures.push(format!("upload {i}: {e}")),
        }
    }
    upload_times.sort();
    let chunked = done.iter().filter(|(_, up)| up.chunked).count();
    let restarts = done.iter().map(|(_, up)| up.restarts).sum();
    println!(
        "uploaded: {} ok, {} failed in {:.2} s; checking each ...",
        done.len(),
        failures.len(),
        wall.as_secs_f64()
    );

    let verify_started = Instant::now();
    let verify_failures: Vec<String> = futures::stream::iter(done.iter())
        .map(|(i, up)| {
            let client = &client;
            async move {
                verify(client, *i, up, image)
                    .await
                    .err()
                    .map(|e| format!("upload {i}: {e}"))
            }
        })
        .buffer_unordered(VERIFY_AT_ONCE)
        .filter_map(|failed| async move { failed })
        .collect()
        .await;
    let verify_time = verify_started.elapsed();
    let checked_fds = open_fds(pid);
    // Its pooled connections close with it. The server holds a place under its cap for
    // each until it sees the close: wait for that (as long as 10 s) before the probe opens
    // connections of its own.
    drop(client);
    let closing = Instant::now();
    let settle_to = baseline_fds.unwrap_or(0) + 8;
    let mut settled_fds = open_fds(pid);
    while settled_fds.is_some_and(|n| n > settle_to) && closing.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        settled_fds = open_fds(pid);
    }
    let closed_in = closing.elapsed();

    let (mut quiet, mut flooded) = (None, None);
    if args.flood()
        && let Some((i, up)) = done.first()
    {
        let target = Target {
            base: base.to_owned(),
            conversation: conversation(*i),
            attachment_id: up.attachment_id.clone(),
            size,
        };
        let secs = Duration::from_secs(args.flood_secs.max(1));
        println!("probing: victim alone for {} s ...", secs.as_secs());
        quiet = Some(victim(target.clone(), secs).await);
        println!(
            "probing: victim under a flood of {ATTACKERS} tasks for {} s ...",
            secs.as_secs()
        );
        let attack = Attack::start(base);
        // The flood is under way before the victim is timed.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let probe = victim(target, secs).await;
        let attack = attack.stop().await;
        flooded = Some((probe, attack));
    }

    Ok(Report {
        ok: done.len(),
        chunked,
        restarts,
        failures,
        wall,
        upload_times,
        verified: done.len() - verify_failures.len(),
        verify_failures,
        verify_time,
        baseline_kib,
        peaks,
        after_kib,
        fds: [baseline_fds, checked_fds, settled_fds],
        closed_in,
        quiet,
        flooded,
    })
}

/// An error with its sources (a transport error says what happened only there).
fn describe(err: &attachments::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = e.source();
    }
    text
}

fn conversation(i: usize) -> String {
    format!("load-{i}")
}

/// `file_info` gives the size sent; a ranged download of the whole attachment gives the
/// bytes sent, with their SHA-256.
async fn verify(
    client: &ConnectivityClient,
    i: usize,
    up: &Uploaded,
    image: &Jpeg,
) -> Result<(), String> {
    let conversation = conversation(i);
    let size = image.bytes.len() as u64;
    if up.size != size || up.sha256 != image.sha256 {
        return Err(format!(
            "the client reports {} bytes with SHA-256 {}, not {size} with {}",
            up.size, up.sha256, image.sha256
        ));
    }
    let info = client
        .file_info(PROPERTY, &conversation, &up.attachment_id)
        .await
        .map_err(|e| format!("file_info: {}", describe(&e)))?;
    if info.file_size != size {
        return Err(format!(
            "file_info says {} bytes, {size} were sent",
            info.file_size
        ));
    }
    let mut copy = Vec::with_capacity(image.bytes.len());
    let verified = client
        .download_to(
            PROPERTY,
            &conversation,
            &up.attachment_id,
            Some(image.sha256),
            DownloadOptions::default(),
            &mut copy,
        )
        .await
        .map_err(|e| format!("download: {}", describe(&e)))?;
    if copy != image.bytes || verified.size != size || verified.sha256 != image.sha256 {
        return Err(format!(
            "the download ({} bytes, SHA-256 {}) differs from what was sent",
            copy.len(),
            sha256(&copy)
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The latency probe.

#[derive(Clone)]
struct Target {
    base: String,
    conversation: String,
    attachment_id: String,
    size: u64,
}

/// The victim's requests: the latencies of those answered right, and the others.
struct Probe {
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
}

/// Sequential `file_info` requests for `for_` on a thread and runtime of their own, so
/// that the flood's tasks in this process do not delay them here; no retries, so every
/// answer counts as it came. A failure is counted in the probe, not returned, so that
/// the summary is printed all the same.
async fn victim(target: Target, for_: Duration) -> Probe {
    let mut probe = Probe {
        latencies: Vec::new(),
        errors: 0,
        first_error: None,
    };
    let timed = tokio::task::spawn_blocking(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                probe.errors += 1;
                probe.first_error = Some(format!("the victim's runtime: {e}"));
                return probe;
            }
        };
        runtime.block_on(async move {
            let client = match ConnectivityClient::new(&target.base) {
                Ok(client) => client.with_retry(RetryPolicy::none()),
                Err(e) => {
                    probe.errors += 1;
                    probe.first_error = Some(describe(&e));
                    return probe;
                }
            };
            let ask = || client.file_info(PROPERTY, &target.conversation, &target.attachment_id);
            // Untimed, as it opens the connection; a failure counts all the same.
            if let Err(e) = ask().await {
                probe.errors += 1;
                probe.first_error = Some(format!("first (untimed) request: {}", describe(&e)));
            }
            let started = Instant::now();
            while started.elapsed() < for_ {
                let t = Instant::now();
                let answer = ask().await;
                let took = t.elapsed();
                let problem = match answer {
                    Ok(info) if info.file_size == target.size => {
                        probe.latencies.push(took);
                        continue;
                    }
                    Ok(info) => format!("file_info says {} bytes", info.file_size),
                    Err(e) => describe(&e),
                };
                probe.errors += 1;
                probe.first_error.get_or_insert(problem);
            }
            probe.latencies.sort();
            probe
        })
    });
    timed.await.unwrap_or_else(|e| Probe {
        latencies: Vec::new(),
        errors: 1,
        first_error: Some(format!("the victim's thread failed: {e}")),
    })
}

/// The flood: cheap requests from [`ATTACKERS`] tasks, each sending its next as soon as
/// the last is answered.
struct Attack {
    stop: Arc<AtomicBool>,
    started: Instant,
    tasks: Vec<tokio::task::JoinHandle<BTreeMap<String, u64>>>,
    /// Answers by status, once stopped.
    answers: BTreeMap<String, u64>,
    took: Duration,
}

impl Attack {
    fn start(base: &str) -> Attack {
        let stop = Arc::new(AtomicBool::new(false));
        let http = reqwest::Client::new();
        let tasks = (0..ATTACKERS)
            .map(|t| {
                let (http, stop, base) = (http.clone(), Arc::clone(&stop), base.to_owned());
                tokio::spawn(async move {
                    let mut answers = BTreeMap::new();
                    let mut k = t;
                    while !stop.load(Ordering::Relaxed) {
                        let request = match k % 3 {
                            0 => http.get(format!("{base}/3.1/messages/latest")),
                            1 => http
                                .post(format!("{base}/3.1/messages/latest/confirm"))
                                .header("content-type", "application/json")
                                .body(r#"{"messages": ["no-such-message"]}"#),
                            _ => http.get(format!(
                                "{base}/messaging/properties/{PROPERTY}/conversations/flood/\
                                 attachments/{MISSING_ID}/file_info"
                            )),
                        };
                        k += 1;
                        let label = match request.send().await {
                            Ok(resp) => {
                                let status = resp.status().as_u16();
                                match resp.bytes().await {
                                    Ok(_) => status.to_string(),
                                    Err(_) => format!("{status}, body cut"),
                                }
                            }
                            Err(_) => "transport error".to_owned(),
                        };
                        *answers.entry(label).or_insert(0) += 1;
                    }
                    answers
                })
            })
            .collect();
        Attack {
            stop,
            started: Instant::now(),
            tasks,
            answers: BTreeMap::new(),
            took: Duration::ZERO,
        }
    }

    async fn stop(mut self) -> Attack {
        self.stop.store(true, Ordering::Relaxed);
        for task in std::mem::take(&mut self.tasks) {
            match task.await {
                Ok(answers) => {
                    for (label, n) in answers {
                        *self.answers.entry(label).or_insert(0) += n;
                    }
                }
                Err(_) => *self.answers.entry("task failed".into()).or_insert(0) += 1,
            }
        }
        self.took = self.started.elapsed();
        self
    }

    fn requests(&self) -> u64 {
        self.answers.values().sum()
    }
}

// ---------------------------------------------------------------------------------------
// The server process and what is read of it.

/// The server in its child process; stopped (stdin closed, then killed if need be) when
/// dropped.
struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
    port: u16,
}

impl Server {
    fn start(dir: &Path, max_in_flight: usize, max_connections: usize) -> Result<Server, String> {
        let me = std::env::current_exe().map_err(|e| format!("finding this program: {e}"))?;
        let mut child = Command::new(me)
            .arg("--serve-child")
            .arg(dir)
            .args(["--max-in-flight", &max_in_flight.to_string()])
            .args(["--max-connections", &max_connections.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting the server: {e}"))?;
        let stdin = child.stdin.take();
        let pid = child.id();
        let mut line = String::new();
        let read = match child.stdout.take() {
            Some(out) => BufReader::new(out).read_line(&mut line),
            None => Ok(0),
        };
        let mut server = Server {
            child,
            stdin,
            pid,
            port: 0,
        };
        match (read, line.trim().parse()) {
            (Ok(n), Ok(port)) if n > 0 => {
                server.port = port;
                Ok(server)
            }
            _ => Err(format!("the server did not start (it said {line:?})")),
        }
    }

    fn stop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A directory under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, String> {
        let dir = std::env::temp_dir().join(format!("attachments-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `/proc/<pid>/status` figure in KiB (`VmRSS:`, `VmHWM:`).
fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The soft limit on open files of this process (and of the child, which inherits it).
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// How many files (sockets among them) a process has open.
fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// The highest figures [`Sampler`] read.
#[derive(Default)]
struct Peaks {
    rss_kib: u64,
    fds: usize,
    /// This process's own open files (the client's connections).
    client_fds: usize,
    samples: usize,
}

/// Reads the server's `VmRSS` and open files every [`SAMPLE_EVERY`] on a thread of its
/// own, keeping the highest.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Peaks>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peaks = Peaks::default();
            loop {
                let last = flag.load(Ordering::Relaxed);
                if let Some(kib) = proc_status_kib(pid, "VmRSS:") {
                    peaks.rss_kib = peaks.rss_kib.max(kib);
                    peaks.samples += 1;
                }
                peaks.fds = peaks.fds.max(open_fds(pid).unwrap_or(0));
                let own = open_fds(std::process::id()).unwrap_or(0);
                peaks.client_fds = peaks.client_fds.max(own);
                if last {
                    return peaks;
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
        });
        Sampler { stop, thread }
    }

    fn stop(self) -> Peaks {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------
// The client's retries, counted from its log events ("retrying", with the error).

#[derive(Default)]
struct Retries {
    total: AtomicU64,
    by_cause: Mutex<BTreeMap<String, u64>>,
    first: Mutex<Option<String>>,
}

struct CountRetries(Arc<Retries>);

#[derive(Default)]
struct Fields {
    message: String,
    error: String,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "error" => self.error = format!("{value:?}"),
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountRetries {
    fn register_callsite(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if meta.is_event() && meta.target().starts_with("attachments::client") {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.message != "retrying" {
            return;
        }
        self.0.total.fetch_add(1, Ordering::Relaxed);
        // "the server answered 503: ..." names the status; anything else is a transport
        // error.
        let cause = fields
            .error
            .strip_prefix("the server answered ")
            .and_then(|rest| rest.get(..3))
            .map_or_else(|| "transport".to_owned(), str::to_owned);
        *self
            .0
            .by_cause
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(cause)
            .or_insert(0) += 1;
        self.0
            .first
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(fields.error);
    }
}

// ---------------------------------------------------------------------------------------
// The file.

struct Jpeg {
    bytes: Bytes,
    side: u32,
    sha256: Sha256Digest,
}

/// A square baseline JPEG (quality 95) of noise over a gradient, resized until it comes
/// within 5% of `target` bytes.
fn noisy_jpeg(target: u64) -> Result<Jpeg, String> {
    let mut side = 1500u32;
    let mut bytes = encode(side)?;
    for _ in 0..4 {
        let ratio = target as f64 / bytes.len() as f64;
        if (0.95..=1.05).contains(&ratio) {
            break;
        }
        side = ((f64::from(side) * ratio.sqrt()).round() as u32).max(16);
        bytes = encode(side)?;
    }
    let size = bytes.len() as u64;
    if size <= BOOKING_SINGLE_MAX || size > CONNECTIVITY_CHUNKED_MAX {
        return Err(format!(
            "the JPEG came out at {size} bytes, outside the chunked range; try another --size"
        ));
    }
    Ok(Jpeg {
        sha256: sha256(&bytes),
        bytes: Bytes::from(bytes),
        side,
    })
}

fn encode(side: u32) -> Result<Vec<u8>, String> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut pixels = Vec::with_capacity(side as usize * side as usize * 3);
    for y in 0..side {
        for x in 0..side {
            for c in 0..3u32 {
                // xorshift64: deterministic noise, no dependency.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let gradient = (x * (c + 1) + y * (3 - c)) / 4 % 160;
                let noise = (state >> 56) as u32 % 96;
                pixels.push((gradient + noise) as u8);
            }
        }
    }
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
        .encode(&pixels, side, side, image::ExtendedColorType::Rgb8)
        .map_err(|e| format!("encoding the JPEG: {e}"))?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The summary.

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p`th percentile (nearest rank) of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn latency_line(probe: &Probe) -> String {
    let l = &probe.latencies;
    let mut line = format!(
        "{} requests, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, errors {}",
        l.len(),
        ms(percentile(l, 50.0)),
        ms(percentile(l, 99.0)),
        ms(l.last().copied().unwrap_or_default()),
        probe.errors
    );
    if let Some(e) = &probe.first_error {
        line.push_str(&format!(" (first: {e})"));
    }
    line
}

fn print_summary(
    args: &Args,
    image: &Jpeg,
    r: &Report,
    retries: &Retries,
    hwm: Option<u64>,
    rss_end: Option<u64>,
) {
    let size = image.bytes.len() as u64;
    let sent = size * r.ok as u64;
    let wall = r.wall.as_secs_f64();
    println!();
    println!("== summary ==");
    println!(
        "uploads          {} at once: {} ok ({} chunked), {} failed, {} restarts",
        args.uploads,
        r.ok,
        r.chunked,
        r.failures.len(),
        r.restarts
    );
    println!(
        "bytes            {} per upload, {} uploaded ({:.1} MiB)",
        size,
        sent,
        mib(sent)
    );
    println!(
        "wall time        {wall:.2} s (one upload: p50 {:.2} s, p99 {:.2} s, max {:.2} s)",
        percentile(&r.upload_times, 50.0).as_secs_f64(),
        percentile(&r.upload_times, 99.0).as_secs_f64(),
        r.upload_times
            .last()
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
    );
    println!(
        "throughput       {:.1} MB/s ({:.1} MiB/s) of file bytes",
        sent as f64 / 1e6 / wall,
        mib(sent) / wall
    );
    let by_cause = retries
        .by_cause
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(cause, n)| format!("{cause}: {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "client retries   {}{}",
        retries.total.load(Ordering::Relaxed),
        if by_cause.is_empty() {
            String::new()
        } else {
            format!(" ({by_cause})")
        }
    );
    if let Some(first) = &*retries.first.lock().unwrap_or_else(|e| e.into_inner()) {
        println!("                 first: {first}");
    }
    println!(
        "verification     {} of {} uploads match (file_info size, ranged download = original), \
         {} failed, {:.2} s",
        r.verified,
        r.ok,
        r.verify_failures.len(),
        r.verify_time.as_secs_f64()
    );
    let growth = r.peaks.rss_kib.saturating_sub(r.baseline_kib);
    println!(
        "server RSS       baseline {:.1} MiB, peak {:.1} MiB during the uploads ({} samples, \
         every {} ms), {} after them, {} at the end",
        r.baseline_kib as f64 / 1024.0,
        r.peaks.rss_kib as f64 / 1024.0,
        r.peaks.samples,
        SAMPLE_EVERY.as_millis(),
        r.after_kib
            .map_or_else(|| "?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
        rss_end.map_or_else(|| "?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
    );
    println!(
        "peak RSS growth  {:.1} MiB, {:.3} MiB per concurrent upload",
        growth as f64 / 1024.0,
        growth as f64 / 1024.0 / args.uploads as f64
    );
    let fds = |n: Option<usize>| n.map_or_else(|| "?".into(), |n| n.to_string());
    println!(
        "server files     {} open before the uploads, {} at most during them, {} after the \
         checks, {} {:.2} s after the client closed (the client: {} at most during the \
         uploads)",
        fds(r.fds[0]),
        r.peaks.fds,
        fds(r.fds[1]),
        fds(r.fds[2]),
        r.closed_in.as_secs_f64(),
        r.peaks.client_fds
    );
    println!(
        "server VmHWM     {}",
        hwm.map_or_else(|| "?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
    );
    match (&r.quiet, &r.flooded) {
        (Some(quiet), Some((flooded, attack))) => {
            println!("victim alone     {}", latency_line(quiet));
            println!("victim flooded   {}", latency_line(flooded));
            let answers = attack
                .answers
                .iter()
                .map(|(label, n)| format!("{label}: {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            println!(
                "flood            {ATTACKERS} tasks, {} requests in {:.1} s ({:.0}/s; {answers})",
                attack.requests(),
                attack.took.as_secs_f64(),
                attack.requests() as f64 / attack.took.as_secs_f64()
            );
            let p99 = percentile(&flooded.latencies, 99.0);
            println!(
                "goal             victim p99 under the flood {:.2} ms, goal <= {} ms: {}",
                ms(p99),
                GOAL_P99.as_millis(),
                if p99 <= GOAL_P99 && flooded.errors == 0 && !flooded.latencies.is_empty() {
                    "met"
                } else {
                    "NOT met"
                }
            );
        }
        _ if !args.flood() => println!("latency probe    skipped (--no-flood)"),
        _ => println!("latency probe    skipped: no upload succeeded"),
    }
    for e in r.failures.iter().take(5) {
        println!("upload error     {e}");
    }
    for e in r.verify_failures.iter().take(5) {
        println!("check error      {e}");
    }
}
