//! The house rule the layout rests on, checked on the sources: the IO-free core (sniffing,
//! base64, digests, images, the Inspector, policies, upload sessions and plans, ranges and
//! the reassembler, the wire types, the error kinds) imports no async runtime, server or
//! client, reads no clock, touches no file or socket, and raises none of the shells'
//! error kinds (IO, the other side's answers, retries). Comments are not code: lines that
//! start with `//` are skipped.

use std::path::{Path, PathBuf};

/// The core's files, from the crate root.
const CORE: &[&str] = &[
    "src/sniff.rs",
    "src/codec",
    "src/digest.rs",
    "src/image",
    "src/inspect.rs",
    "src/policy.rs",
    "src/upload",
    "src/download/range.rs",
    "src/download/reassemble.rs",
    "src/download/http_range.rs",
    "src/wire",
    "src/error/problems.rs",
];

/// What the core's code never says.
const FORBIDDEN: &[&str] = &[
    "tokio",
    "axum",
    "reqwest",
    "object_store",
    "SystemTime::now",
    "Instant::now",
    "std::fs",
    "std::net",
    "Error::Io(",
    "Error::io(",
    "Error::io_other(",
    "Error::Remote",
    "Error::UnexpectedAnswer",
    "Error::BodyTimeout",
    "Error::Overloaded",
    "Error::QuotaExceeded",
    "Error::BufferFull",
    "Error::RequestTimeout",
    "Error::MisdirectedRequest",
    "Error::PreconditionFailed",
    "Error::RetriesExhausted",
];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            rust_files(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_owned());
    }
}

#[test]
fn the_io_free_core_does_no_io_reads_no_clock_and_raises_no_shell_kinds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for part in CORE {
        let path = root.join(part);
        assert!(path.exists(), "{part} is listed as core but does not exist");
        rust_files(&path, &mut files);
    }
    assert!(files.len() >= 20, "only {} core files found", files.len());
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for word in FORBIDDEN {
                if code.contains(word) {
                    let shown = file.strip_prefix(root).unwrap_or(file).display();
                    found.push(format!("{shown}:{}: {word}: {}", n + 1, code));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the core reaches outside itself:\n{}",
        found.join("\n")
    );
}
