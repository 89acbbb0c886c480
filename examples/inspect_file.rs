//! Checks files against a policy and prints what the Inspector found.
//!
//! `cargo run --example inspect_file -- [--demand|--connectivity|--chat] TYPE FILE...`
//!
//! Reads each file in 64 KiB slices (memory stays bounded by one slice), feeds the
//! Inspector and the base64 encoder in one pass, and prints size, type, SHA-256 and the
//! length of the base64 text, or the error with its HTTP status.

use std::fs::File;
use std::io::Read;
use std::process::ExitCode;

use attachments::codec::base64::Encoder;
use attachments::{Inspector, Policy};

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let policy = match args.first().map(String::as_str) {
        Some("--demand") => Some(Policy::demand()),
        Some("--connectivity") => Some(Policy::connectivity()),
        Some("--chat") => Some(Policy::chat()),
        _ => None,
    };
    let policy = match policy {
        Some(p) => {
            args.remove(0);
            p
        }
        None => Policy::connectivity(),
    };
    if args.len() < 2 {
        eprintln!("usage: inspect_file [--demand|--connectivity|--chat] TYPE FILE...");
        return ExitCode::from(2);
    }
    let declared = args.remove(0);
    let mut failed = false;
    for path in &args {
        match inspect(&policy, &declared, path) {
            Ok(line) => println!("{path}: {line}"),
            Err(e) => {
                failed = true;
                println!("{path}: rejected: {e}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn inspect(policy: &Policy, declared: &str, path: &str) -> Result<String, String> {
    let mut file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let size = file
        .metadata()
        .map_err(|e| format!("cannot stat: {e}"))?
        .len();
    let describe = |e: attachments::Error| format!("{} ({}: {})", e, e.status(), e.wire_message());
    let mut inspector = Inspector::new(policy, declared, Some(size)).map_err(describe)?;
    let mut encoder = Encoder::new();
    let mut body = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut encoded = 0;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| format!("read error: {e}"))?;
        if n == 0 {
            break;
        }
        body.clear();
        inspector
            .update_encode(&buf[..n], &mut encoder, &mut body)
            .map_err(describe)?;
        encoded += body.len();
    }
    body.clear();
    encoder.finish(&mut body);
    encoded += body.len();
    let seen = inspector.finish().map_err(describe)?;
    Ok(format!(
        "ok: {} bytes, {}, sha256 {}, {} base64 characters",
        seen.size, seen.media_type, seen.sha256, encoded
    ))
}
