//! `attachments`: the command-line tool (feature `cli`).
//!
//! `attachments inspect FILE... [--type MIME] [--deep] [--allow-trailing] [--json]`
//! checks files as an API server would: type from the content against the declared type,
//! complete and well-formed PNG / JPEG within the limits, nothing before or after the
//! image. Exit code 0 when every file is accepted, 1 when any is rejected, 2 on a usage
//! error.
//!
//! `attachments serve --addr 127.0.0.1:PORT --store memory|fs:DIR|s3://BUCKET[/PREFIX]?endpoint=URL&region=R
//! [--token T --affiliate-id A] [--rate PER_MINUTE [--client-ip-header H]] [--unlinked-ttl SECONDS]` runs the sandbox
//! server; its first line on stdout is the base URL. With an `s3://` store (credentials from
//! `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`), several servers may share one bucket and
//! any of them may take any request of an upload.
//!
//! `attachments upload FILE --endpoint URL --property P --conversation C [--message TEXT]`
//! and `attachments download ATTACHMENT_ID --endpoint URL --property P --conversation C
//! --out PATH [--sha256 HEX]` talk to a Connectivity API (or the sandbox).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use attachments::digest::Sha256;
use attachments::sniff::{SNIFF_LEN, detect};
use attachments::{Depth, Error, Inspector, MediaType, Policy};
use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "attachments",
    version,
    about = "Check, encode and move file attachments"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check files the way an attachments API does, and report what each one is.
    Inspect(InspectArgs),
    /// Run the sandbox server (Connectivity and Demand APIs) until interrupted.
    Serve(ServeArgs),
    /// Upload a file to a Connectivity conversation (single or chunked by size).
    Upload(UploadArgs),
    /// Download an attachment by ranges into a file, verified.
    Download(DownloadArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: std::net::SocketAddr,
    /// Where attachments live: `memory`, `fs:DIR`, or
    /// `s3://BUCKET[/PREFIX]?endpoint=URL&region=R` (credentials from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY; several servers may share a bucket).
    #[arg(long, default_value = "memory")]
    store: String,
    /// Require this bearer token (with --affiliate-id).
    #[arg(long, requires = "affiliate_id")]
    token: Option<String>,
    /// Require this X-Affiliate-Id (with --token).
    #[arg(long, requires = "token")]
    affiliate_id: Option<String>,
    /// Requests a minute per client (its IP address), answered 429 beyond; counted
    /// before credentials are checked.
    #[arg(long, value_name = "PER_MINUTE")]
    rate: Option<u32>,
    /// Behind a trusted proxy: the header it sets to the client's address (for example
    /// X-Forwarded-For; its last entry keys the rate limit and the upload quotas). Any
    /// client can send it, so set it only behind such a proxy.
    #[arg(long, value_name = "HEADER")]
    client_ip_header: Option<axum::http::HeaderName>,
    /// Seconds a client may take to send a request's headers; the connection is closed past it.
    #[arg(long, value_name = "SECONDS", default_value_t = attachments::server::DEFAULT_HEADER_READ_TIMEOUT.as_secs())]
    header_timeout: u64,
    /// Connections open at once; one more is closed as soon as it is accepted.
    #[arg(long, value_name = "N", default_value_t = attachments::server::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Requests handled at once; one more is answered 503 with Retry-After: 1.
    #[arg(long, value_name = "N", default_value_t = attachments::server::DEFAULT_MAX_IN_FLIGHT)]
    max_in_flight: usize,
    /// Messages the memory store keeps (`--store memory`); past it, or past
    /// --max-message-mib, the oldest are forgotten.
    #[arg(long, value_name = "N", default_value_t = attachments::store::MAX_MESSAGES)]
    max_messages: usize,
    /// MiB of messages the memory store keeps (`--store memory`).
    #[arg(long, value_name = "MIB", default_value_t = attachments::store::MAX_MESSAGE_BYTES >> 20)]
    max_message_mib: usize,
    /// MiB of request bodies buffered at once over all requests; a body with no room is
    /// answered 503 with Retry-After: 1.
    #[arg(long, value_name = "MIB", default_value_t = attachments::server::DEFAULT_MAX_BUFFERED >> 20)]
    max_buffered_mib: usize,
    /// MiB of request bodies one client (address) may have buffered at once.
    #[arg(long, value_name = "MIB", default_value_t = attachments::server::DEFAULT_MAX_BUFFERED_PER_CLIENT >> 20)]
    max_buffered_per_client_mib: usize,
    /// Uploads each client (address) and each conversation may have open at once; one
    /// more is answered 429.
    #[arg(long, value_name = "N", default_value_t = attachments::server::DEFAULT_MAX_OPEN_UPLOADS)]
    max_open_uploads: usize,
    /// MiB each client and each conversation may have staged in open uploads; a chunk
    /// past it is answered 429.
    #[arg(long, value_name = "MIB", default_value_t = attachments::server::DEFAULT_MAX_STAGED >> 20)]
    max_staged_mib: u64,
    /// Seconds a request body read whole (all but chat multipart uploads) may take to
    /// arrive in all before the request is answered 408.
    #[arg(long, value_name = "SECONDS", default_value_t = attachments::server::DEFAULT_BODY_TIMEOUT.as_secs())]
    body_timeout: u64,
    /// Seconds a request body may pause before the request is answered 408.
    #[arg(long, value_name = "SECONDS", default_value_t = attachments::server::DEFAULT_BODY_IDLE_TIMEOUT.as_secs())]
    body_idle_timeout: u64,
    /// Seconds an attachment no message carries is kept.
    #[arg(long, value_name = "SECONDS", default_value_t = 24 * 60 * 60)]
    unlinked_ttl: u64,
    /// Largest file `/v1/attachments` accepts, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = attachments::policy::DEFAULT_CHAT_MAX_SIZE >> 20)]
    chat_max_mib: u64,
    /// The address `file_url` starts with (default: http:// and the request's host, when
    /// it is an allowed host).
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// A host (`name` for any port, or `name:port`) `file_url` may be built from, besides
    /// the loopback names and the listening address; repeat for more. A request naming
    /// another host is answered 421 where it needs a `file_url`.
    #[arg(long, value_name = "HOST")]
    allowed_host: Vec<String>,
    /// Where tus 1.0 uploads are created (`POST`) and live (`<path>/<id>`); they become
    /// chat attachments of the bearer token's owner.
    #[arg(long, value_name = "PATH", default_value = attachments::server::DEFAULT_TUS_PATH)]
    tus_path: String,
    /// Where IETF resumable uploads (draft -10, interop version 8) are created and live.
    #[arg(long, value_name = "PATH", default_value = attachments::server::DEFAULT_IETF_PATH)]
    ietf_path: String,
    #[command(flatten)]
    scan: ScanArgs,
    /// Commit uploads unscanned (a warning logged for each) while the scanner is
    /// unavailable, instead of answering 503.
    #[arg(long, requires = "scan")]
    scan_fail_open: bool,
}

/// The virus scanner.
#[derive(clap::Args)]
struct ScanArgs {
    /// Scan every file with this clamd: clamd://HOST:PORT or clamd:unix:PATH.
    #[arg(long, value_name = "CLAMD")]
    scan: Option<String>,
    /// How long a whole scan may take (connect, send the file, the verdict), in seconds;
    /// keep it under a chunked upload's 30 s commit lease.
    #[arg(long, value_name = "SECONDS", default_value_t = 20, requires = "scan")]
    scan_timeout: u64,
    /// The longest file sent to clamd, in MiB: its StreamMaxLength (clamd's default is 25).
    /// clamd's MaxFileSize and MaxScanSize must be at least as large (or set
    /// AlertExceedsMax yes), else clamd passes what lies past them unscanned.
    #[arg(long, value_name = "MIB", default_value_t = 25, requires = "scan")]
    scan_max_mib: u64,
}

impl ScanArgs {
    fn scanner(&self) -> Result<Option<attachments::scan::ClamdScanner>, Error> {
        self.scan
            .as_deref()
            .map(|spec| {
                Ok(attachments::scan::ClamdScanner::parse(spec)?
                    .with_timeout(std::time::Duration::from_secs(self.scan_timeout.max(1)))
                    .with_stream_max(self.scan_max_mib.saturating_mul(1 << 20)))
            })
            .transpose()
    }
}

/// Where a Connectivity conversation is.
#[derive(clap::Args)]
struct Remote {
    /// The API's base URL (for instance the sandbox's printed URL).
    #[arg(long)]
    endpoint: String,
    /// Bearer token.
    #[arg(long, requires = "affiliate_id")]
    token: Option<String>,
    /// X-Affiliate-Id.
    #[arg(long, requires = "token")]
    affiliate_id: Option<String>,
    /// Property id.
    #[arg(long)]
    property: u64,
    /// Conversation id.
    #[arg(long)]
    conversation: String,
}

impl Remote {
    fn client(&self) -> Result<attachments::client::ConnectivityClient, Error> {
        let client = attachments::client::ConnectivityClient::new(&self.endpoint)?;
        match (&self.token, &self.affiliate_id) {
            (Some(t), Some(a)) => client.with_credentials(t, a),
            _ => Ok(client),
        }
    }
}

#[derive(clap::Args)]
struct UploadArgs {
    /// The file to send.
    file: PathBuf,
    #[command(flatten)]
    remote: Remote,
    /// Also post a message with this text carrying the attachment.
    #[arg(long)]
    message: Option<String>,
}

#[derive(clap::Args)]
struct DownloadArgs {
    /// The attachment's id.
    attachment_id: String,
    #[command(flatten)]
    remote: Remote,
    /// Where to write it (a partial file there is resumed).
    #[arg(long)]
    out: PathBuf,
    /// The SHA-256 it must have (hex).
    #[arg(long)]
    sha256: Option<attachments::digest::Sha256Digest>,
    /// Ranges in flight.
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
}

#[derive(clap::Args)]
struct InspectArgs {
    /// Files to check.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Declared MIME type for every file (default: implied by the extension: .png is
    /// image/png, .jpg and .jpeg are image/jpeg).
    #[arg(long = "type", value_name = "MIME")]
    mime: Option<String>,
    /// Also decode every pixel, which catches corrupt compressed data.
    #[arg(long)]
    deep: bool,
    /// Accept bytes after the end of the image.
    #[arg(long)]
    allow_trailing: bool,
    /// Print one JSON object per file and line.
    #[arg(long)]
    json: bool,
    /// Whose rules to apply.
    #[arg(long, value_enum, default_value_t = Preset::Connectivity)]
    policy: Preset,
    #[command(flatten)]
    scan: ScanArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum Preset {
    /// Booking.com Connectivity: PNG and JPEG up to 10 MiB.
    Connectivity,
    /// Booking.com Demand API: PNG and JPEG up to 1 MiB.
    Demand,
    /// A chat platform: any type up to 25 MiB; images still checked.
    Chat,
}

/// One file's report; also the `--json` line.
#[derive(Serialize)]
struct Report {
    path: String,
    declared_type: Option<String>,
    detected_type: Option<String>,
    size: u64,
    sha256: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    ok: bool,
    error: Option<String>,
    /// The virus scan's verdict (`clean`, `infected: <signature>`), with `--scan`.
    #[serde(skip_serializing_if = "Option::is_none")]
    scan: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect(args) => inspect_all(&args),
        Command::Serve(args) => run_async(serve(args)),
        Command::Upload(args) => run_async(upload(args)),
        Command::Download(args) => run_async(download(args)),
    }
}

fn run_async(job: impl std::future::Future<Output = Result<(), Error>>) -> ExitCode {
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
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(job) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), Error> {
    use attachments::server::{Sandbox, ServerConfig};
    use attachments::store::{FsStore, MemoryStore, ObjectStoreBackend, Store};
    use std::sync::Arc;

    let store: Arc<dyn Store> = match args.store.as_str() {
        "memory" => Arc::new(MemoryStore::new().with_board_limits(
            args.max_messages,
            args.max_message_mib.saturating_mul(1 << 20),
        )),
        s3 if s3.starts_with("s3://") => Arc::new(ObjectStoreBackend::from_s3_url(s3)?),
        other => match other.strip_prefix("fs:") {
            Some(dir) => Arc::new(FsStore::open(dir)?),
            None => {
                return Err(Error::InvalidField {
                    field: "--store".into(),
                    problem: format!(
                        "must be memory, fs:DIR or s3://BUCKET?endpoint=URL&region=R, got {other:?}"
                    ),
                });
            }
        },
    };
    let mut config = ServerConfig::default()
        .with_unlinked_ttl(std::time::Duration::from_secs(args.unlinked_ttl))
        .with_chat_policy(
            attachments::Policy::chat()
                .with_max_size(args.chat_max_mib.saturating_mul(attachments::policy::MIB)),
        );
    if let Some(scanner) = args.scan.scanner()? {
        match scanner.version().await {
            Ok(version) => tracing::info!(%version, "scanning every upload"),
            Err(e) => {
                tracing::warn!(error = %e, "the scanner does not answer now; uploads are refused (503) until it does{}", if args.scan_fail_open { " (fail-open: committed unscanned)" } else { "" })
            }
        }
        config = config.with_scanner(Arc::new(scanner), args.scan_fail_open);
    }
    for host in &args.allowed_host {
        config = config.with_allowed_host(host);
    }
    for (flag, path) in [
        ("--tus-path", &args.tus_path),
        ("--ietf-path", &args.ietf_path),
    ] {
        attachments::server::check_mount_path(path).map_err(|problem| Error::InvalidField {
            field: flag.into(),
            problem,
        })?;
    }
    if args.tus_path == args.ietf_path {
        return Err(Error::InvalidField {
            field: "--ietf-path".into(),
            problem: "must differ from --tus-path".into(),
        });
    }
    config = config
        .with_tus_path(&args.tus_path)
        .with_ietf_path(&args.ietf_path);
    if let Some(url) = &args.public_url {
        config = config.with_public_url(url);
    }
    if let (Some(t), Some(a)) = (&args.token, &args.affiliate_id) {
        config = config.with_credentials(t, a);
    }
    config = config.with_max_in_flight(args.max_in_flight);
    config = config.with_max_buffered(args.max_buffered_mib.saturating_mul(1 << 20));
    config = config
        .with_max_buffered_per_client(args.max_buffered_per_client_mib.saturating_mul(1 << 20));
    config = config.with_upload_quota(attachments::server::UploadQuota {
        max_open: args.max_open_uploads,
        max_staged: args.max_staged_mib.saturating_mul(1 << 20),
    });
    config = config.with_body_timeout(std::time::Duration::from_secs(args.body_timeout.max(1)));
    config = config.with_body_idle_timeout(std::time::Duration::from_secs(
        args.body_idle_timeout.max(1),
    ));
    if let Some(header) = args.client_ip_header.clone() {
        config = config.with_client_ip_header(header);
    }
    if let Some(rate) = args.rate {
        config = config.with_rate(rate);
    }
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| Error::io(format!("listening on {}", args.addr), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the listening address", e))?;
    // The address it listens on is a host `file_url` may name (not 0.0.0.0 or [::]:
    // clients reach those by names only --allowed-host or --public-url can give).
    if !addr.ip().is_unspecified() {
        config = config.with_allowed_host(addr.to_string());
    }
    let sandbox = Sandbox::new(store, config);
    println!("http://{addr}");
    tokio::spawn(
        sandbox
            .clone()
            .sweep_every(std::time::Duration::from_secs(60)),
    );
    // The library's accept loop: TCP_NODELAY, the peer's address with every request (the
    // rate limit is keyed on it), a header read timeout and a cap on open connections.
    let options = attachments::server::ListenOptions::default()
        .with_header_read_timeout(std::time::Duration::from_secs(args.header_timeout.max(1)))
        .with_max_connections(args.max_connections);
    attachments::server::serve(listener, sandbox.router(), options, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}

async fn upload(args: UploadArgs) -> Result<(), Error> {
    let client = args.remote.client()?;
    let started = std::time::Instant::now();
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let progress = {
        let bar = bar.clone();
        move |done: u64, total: u64| {
            bar.set_length(total);
            bar.set_position(done);
        }
    };
    let up = client
        .upload_file(
            args.remote.property,
            &args.remote.conversation,
            &args.file,
            progress,
        )
        .await?;
    bar.finish_and_clear();
    println!("attachment_id {}", up.attachment_id);
    println!("size {} sha256 {}", up.size, up.sha256);
    println!(
        "{} in {:.2?}",
        if up.chunked {
            "chunked"
        } else {
            "single request"
        },
        started.elapsed()
    );
    if let Some(text) = &args.message {
        let id = client
            .post_message(
                args.remote.property,
                &args.remote.conversation,
                text,
                std::slice::from_ref(&up.attachment_id),
            )
            .await?;
        println!("message_id {id}");
    }
    Ok(())
}

async fn download(args: DownloadArgs) -> Result<(), Error> {
    let client = args.remote.client()?;
    let (property, conversation) = (args.remote.property, &args.remote.conversation);
    let info = client
        .file_info(property, conversation, &args.attachment_id)
        .await?;
    let options = attachments::download::DownloadOptions::default().with_in_flight(args.in_flight);
    let verified = attachments::download::download_to_file(
        client.ranges(property, conversation, &args.attachment_id),
        &args.out,
        info.file_size,
        args.sha256,
        options,
    )
    .await?;
    println!(
        "{} ({}, {} bytes) sha256 {}",
        args.out.display(),
        info.file_type,
        verified.size,
        verified.sha256
    );
    Ok(())
}

fn inspect_all(args: &InspectArgs) -> ExitCode {
    let mut policy = match args.policy {
        Preset::Connectivity => Policy::connectivity(),
        Preset::Demand => Policy::demand(),
        Preset::Chat => Policy::chat(),
    }
    .with_allow_trailing(args.allow_trailing);
    if args.deep {
        policy = policy.with_depth(Depth::Decode);
    }
    let scanner = match args.scan.scanner() {
        Ok(scanner) => scanner,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match scanner.as_ref().map(|_| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }) {
        Some(Err(e)) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
        Some(Ok(rt)) => Some(rt),
        None => None,
    };
    let mut all_ok = true;
    for path in &args.files {
        let mut report = inspect_file(&policy, args.mime.as_deref(), path);
        if let (Some(scanner), Some(rt)) = (&scanner, &runtime) {
            match rt.block_on(scan_file(scanner, path)) {
                Ok(attachments::scan::Verdict::Clean) => report.scan = Some("clean".into()),
                Ok(attachments::scan::Verdict::Infected { signature }) => {
                    report.scan = Some(format!("infected: {signature}"));
                    report.ok = false;
                }
                Err(e) => {
                    report.scan = Some(format!("not scanned: {e}"));
                    report.ok = false;
                }
            }
        }
        all_ok &= report.ok;
        if args.json {
            println!(
                "{}",
                serde_json::to_string(&report).expect("a report serialises")
            );
        } else {
            println!("{}", human(&report));
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Sends the file at `path` through `scanner`, 1 MiB at a time.
async fn scan_file(
    scanner: &attachments::scan::ClamdScanner,
    path: &Path,
) -> Result<attachments::scan::Verdict, Error> {
    use attachments::scan::Scanner;
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
        .len();
    let mut stream = scanner.open(size).await?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .await
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        stream.feed(&buf[..n]).await?;
    }
    stream.verdict().await
}

/// The type a file's extension implies.
fn type_from_extension(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "png" => Some("image/png"),
        "jpg" | "jpeg" => Some("image/jpeg"),
        _ => None,
    }
}

fn inspect_file(policy: &Policy, mime: Option<&str>, path: &Path) -> Report {
    let mut report = Report {
        path: path.display().to_string(),
        declared_type: mime
            .or_else(|| type_from_extension(path))
            .map(str::to_owned),
        detected_type: None,
        size: 0,
        sha256: None,
        width: None,
        height: None,
        ok: false,
        error: None,
        scan: None,
    };
    match run(policy, &mut report) {
        Ok(()) => report.ok = true,
        Err(message) => report.error = Some(message),
    }
    report
}

/// Reads the file in 64 KiB slices through the Inspector. The file's own size, type and
/// digest are reported even when the Inspector rejects it.
fn run(policy: &Policy, report: &mut Report) -> Result<(), String> {
    let mut file = File::open(&report.path).map_err(|e| format!("cannot open the file: {e}"))?;
    let declared = report.declared_type.clone().ok_or_else(|| {
        "cannot tell the declared type from the file name (expected .png, .jpg or .jpeg); pass --type"
            .to_owned()
    })?;
    let size = file
        .metadata()
        .map_err(|e| format!("cannot read the file: {e}"))?
        .len();
    let mut inspector = Inspector::new(policy, &declared, Some(size));
    if let Ok(insp) = &inspector {
        report.declared_type = Some(insp.declared_type().to_string());
    }
    let mut hasher = Sha256::new();
    let mut head = Vec::with_capacity(SNIFF_LEN);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| format!("read error: {e}"))?;
        if n == 0 {
            break;
        }
        let slice = &buf[..n];
        report.size += n as u64;
        hasher.update(slice);
        let room = SNIFF_LEN - head.len();
        head.extend_from_slice(&slice[..room.min(n)]);
        if let Ok(insp) = &mut inspector
            && let Err(e) = insp.update(slice)
        {
            report.dimensions(insp.dimensions());
            inspector = Err(e);
        }
    }
    report.sha256 = Some(hasher.finalize().to_string());
    report.detected_type = detect(&head).map(|t: MediaType| t.to_string());
    let mut insp = inspector.map_err(|e| describe(&e))?;
    let verdict = insp.finish();
    // What the header claimed, whether or not the file passed.
    report.dimensions(insp.dimensions());
    verdict.map(drop).map_err(|e| describe(&e))
}

impl Report {
    fn dimensions(&mut self, dims: Option<(u32, u32)>) {
        if let Some((w, h)) = dims {
            self.width = Some(w);
            self.height = Some(h);
        }
    }
}

fn describe(err: &Error) -> String {
    match err {
        Error::AlreadyFailed { first } => describe(first),
        other => other.to_string(),
    }
}

fn human(r: &Report) -> String {
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let dims = match (r.width, r.height) {
        (Some(w), Some(h)) => format!("{w}x{h}"),
        _ => "-".into(),
    };
    let verdict = match (&r.error, &r.scan) {
        _ if r.ok => "ok".to_owned(),
        (Some(e), _) => format!("REJECTED: {e}"),
        (None, Some(scan)) => format!("REJECTED by the virus scan: {scan}"),
        (None, None) => "REJECTED".to_owned(),
    };
    let scan = r
        .scan
        .as_ref()
        .map_or(String::new(), |s| format!(", scan {s}"));
    format!(
        "{}: declared {}, detected {}, {} bytes, {}, sha256 {}{scan}: {}",
        r.path,
        or_dash(&r.declared_type),
        or_dash(&r.detected_type),
        r.size,
        dims,
        or_dash(&r.sha256),
        verdict
    )
}
