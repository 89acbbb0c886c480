//! `attachments`: the command-line tool (feature `cli`).
//!
//! `attachments inspect FILE... [--type MIME] [--deep] [--allow-trailing] [--json]`
//! checks files as an API server would: type from the content against the declared type,
//! complete and well-formed PNG / JPEG within the limits, nothing before or after the
//! image. Exit code 0 when every file is accepted, 1 when any is rejected, 2 on a usage
//! error.

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect(args) => inspect_all(&args),
    }
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
    let mut all_ok = true;
    for path in &args.files {
        let report = inspect_file(&policy, args.mime.as_deref(), path);
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
    let verdict = if r.ok {
        "ok".to_owned()
    } else {
        format!("REJECTED: {}", or_dash(&r.error))
    };
    format!(
        "{}: declared {}, detected {}, {} bytes, {}, sha256 {}: {}",
        r.path,
        or_dash(&r.declared_type),
        or_dash(&r.detected_type),
        r.size,
        dims,
        or_dash(&r.sha256),
        verdict
    )
}
