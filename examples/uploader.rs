//! The whole flow over HTTP: upload a file to a Connectivity conversation (one request or
//! chunks, by size), post a message carrying it, download it back by ranges, and verify
//! size and SHA-256 against the file on disk.
//!
//! ```text
//! cargo run --release --example uploader -- [FILE] [--endpoint URL --token T
//!     --affiliate-id A --property P --conversation C]
//! ```
//!
//! Without `--endpoint` it starts the sandbox server in-process on 127.0.0.1 with a
//! temporary store; without FILE it sends `examples/sample.jpg` (1,090,179 bytes, so the
//! chunked path runs). Exits non-zero on any error or mismatch.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use attachments::client::ConnectivityClient;
use attachments::digest::sha256;
use attachments::download::DownloadOptions;
use attachments::server::{Sandbox, ServerConfig};
use attachments::store::FsStore;
use attachments::{Error, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(about = "Upload a file, send it in a message, download it back, verify")]
struct Args {
    /// The file to send (default: the sample photo shipped in examples/).
    file: Option<PathBuf>,
    /// The API's base URL (default: a sandbox started in-process).
    #[arg(long)]
    endpoint: Option<String>,
    /// Bearer token.
    #[arg(long, requires = "affiliate_id")]
    token: Option<String>,
    /// X-Affiliate-Id.
    #[arg(long, requires = "token")]
    affiliate_id: Option<String>,
    /// Property id.
    #[arg(long, default_value_t = 13921698)]
    property: u64,
    /// Conversation id.
    #[arg(long, default_value = "cc872746-77f2-5886-ba7c-17e0497241b5")]
    conversation: String,
    /// Ranges in flight while downloading.
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let path = args
        .file
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/sample.jpg"));
    let original =
        std::fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;

    // The endpoint: the one given, or a sandbox on loopback over a temporary directory.
    let _dir;
    let ours = args.endpoint.is_none();
    let endpoint = match args.endpoint {
        Some(url) => url,
        None => {
            _dir = tempfile::tempdir().map_err(|e| Error::io("creating a temp dir", e))?;
            let sandbox = Sandbox::new(
                Arc::new(FsStore::open(_dir.path())?),
                ServerConfig::default(),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| Error::io("binding 127.0.0.1", e))?;
            let url = format!(
                "http://{}",
                listener.local_addr().map_err(|e| Error::io("addr", e))?
            );
            let app = sandbox
                .router()
                .into_make_service_with_connect_info::<std::net::SocketAddr>();
            tokio::spawn(async move { axum::serve(listener, app).await });
            println!("sandbox server at {url}");
            url
        }
    };
    let mut client = ConnectivityClient::new(&endpoint)?;
    if ours {
        // Our own server lets a chunk sent early wait for its turn: keep two in flight.
        client = client.with_pipeline(2);
    }
    if let (Some(token), Some(affiliate)) = (&args.token, &args.affiliate_id) {
        client = client.with_credentials(token, affiliate)?;
    }
    let (property, conversation) = (args.property, args.conversation.as_str());

    // Upload, with a progress bar of the bytes the server acknowledged.
    let bar = ProgressBar::new(original.len() as u64).with_style(
        ProgressStyle::with_template("upload   {bar:40} {bytes}/{total_bytes}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let progress = {
        let bar = bar.clone();
        move |done: u64, _total: u64| bar.set_position(done)
    };
    let uploaded = client
        .upload_file(property, conversation, &path, progress)
        .await?;
    let up_secs = started.elapsed().as_secs_f64();
    bar.finish();
    println!(
        "uploaded {} ({} bytes, {}, {}) as attachment_id {}",
        path.display(),
        uploaded.size,
        uploaded.file_type,
        if uploaded.chunked {
            "chunked"
        } else {
            "one request"
        },
        uploaded.attachment_id
    );

    let message_id = client
        .post_message(
            property,
            conversation,
            "Here is the photo you asked for.",
            std::slice::from_ref(&uploaded.attachment_id),
        )
        .await?;
    println!("posted message {message_id} carrying it");

    // Download it back by ranges, verified against the SHA-256 the upload computed.
    let started = Instant::now();
    let mut copy = Vec::with_capacity(original.len());
    let options = DownloadOptions::default().with_in_flight(args.in_flight);
    let verified = client
        .download_to(
            property,
            conversation,
            &uploaded.attachment_id,
            Some(uploaded.sha256),
            options,
            &mut copy,
        )
        .await?;
    let down_secs = started.elapsed().as_secs_f64();

    // And against the file on disk, hashed on its own.
    let expected = sha256(&original);
    if copy != original || verified.sha256 != expected || verified.size != original.len() as u64 {
        return Err(Error::Piece(
            attachments::error::PieceProblem::DigestMismatch {
                expected: expected.to_hex(),
                actual: verified.sha256.to_hex(),
            },
        ));
    }
    let mib = original.len() as f64 / (1024.0 * 1024.0);
    println!(
        "downloaded {} bytes by ranges, sha256 {} verified",
        verified.size, verified.sha256
    );
    println!(
        "throughput: upload {:.1} MiB/s, download {:.1} MiB/s",
        mib / up_secs,
        mib / down_secs
    );
    Ok(())
}
