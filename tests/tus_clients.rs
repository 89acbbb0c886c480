//! Stock tus clients nobody here wrote, against `attachments serve`: tus-js-client (npm,
//! under Node) and tuspy (PyPI), driven by the scripts in `tests/clients/`. `.ci/test`
//! installs both into the build directory and names it in `TUS_CLIENTS_DIR`; each test is
//! ignored unless asked for (`--include-ignored`, which `.ci/test` passes), and fails,
//! not skips, when the clients are missing. The S3 case also needs the S3 test server.
#![cfg(all(feature = "cli", feature = "object-store"))]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use attachments::digest::sha256;

const TOKEN: &str = "stock-client-token";
const MIB: u64 = 1 << 20;

/// Where `.ci/test` installed the clients.
fn clients_dir() -> PathBuf {
    let dir = std::env::var("TUS_CLIENTS_DIR").unwrap_or_else(|_| {
        panic!(
            "TUS_CLIENTS_DIR is not set: these tests drive tus-js-client and tuspy, which \
             `bash .ci/test` installs (npm and pip) and names there"
        )
    });
    let dir = PathBuf::from(dir);
    assert!(
        dir.join("node/node_modules/tus-js-client").is_dir()
            && dir.join("venv/bin/python").is_file(),
        "{} lacks node/node_modules/tus-js-client or venv/bin/python: run `bash .ci/test`",
        dir.display()
    );
    dir
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

/// tus-js-client with `args`, its output piped.
fn tus_js(args: &[&str]) -> Child {
    let dir = clients_dir();
    Command::new("node")
        .arg(script("tus_js.js"))
        .args(args)
        .env("NODE_PATH", dir.join("node/node_modules"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node (installed by .ci/test)")
}

/// tuspy with `args`, its output piped.
fn tuspy(args: &[&str]) -> Child {
    let dir = clients_dir();
    Command::new(dir.join("venv/bin/python"))
        .arg(script("tuspy_client.py"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("tuspy's python (installed by .ci/test)")
}

/// Reads a client's lines until one says its offset reached `at` bytes, then kills it
/// (SIGKILL: no goodbye to the server). Returns the upload URL it printed.
fn kill_after(mut child: Child, at: u64) -> String {
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut url = None;
    for line in out.lines() {
        let line = line.unwrap();
        if let Some(u) = line.strip_prefix("URL ") {
            url = Some(u.to_owned());
        }
        if let Some(offset) = line.strip_prefix("CHUNK ")
            && offset.parse::<u64>().unwrap() >= at
        {
            child.kill().unwrap();
            child.wait().unwrap();
            return url.expect("a URL before the chunks");
        }
        assert!(!line.starts_with("FAILED"), "{line}");
    }
    panic!("the client ended before {at} bytes: {:?}", child.wait());
}

/// Waits for a client to end; returns its last line.
fn finish(mut child: Child) -> String {
    let out = BufReader::new(child.stdout.take().unwrap());
    let last = out.lines().map(Result::unwrap).last().unwrap_or_default();
    let status = child.wait().unwrap();
    assert!(
        status.success() || last.starts_with("FAILED"),
        "{status}: {last}"
    );
    last
}

fn write_file(dir: &tempfile::TempDir, name: &str, data: &[u8]) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, data).unwrap();
    path.to_str().unwrap().to_owned()
}

/// The upload's offset as the server at `url` answers HEAD.
async fn offset(url: &str) -> u64 {
    let response = reqwest::Client::new()
        .head(url)
        .bearer_auth(TOKEN)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "HEAD {url}");
    response.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The attachment `id` read from `server` by ranges of 3 MiB, put back together.
async fn download_by_ranges(server: &str, id: &str, len: u64) -> Vec<u8> {
    let client = reqwest::Client::new();
    let mut out = Vec::with_capacity(len as usize);
    let mut from = 0;
    while from < len {
        let to = (from + 3 * MIB).min(len) - 1;
        let response = client
            .get(format!("{server}/v1/attachments/{id}/content"))
            .bearer_auth(TOKEN)
            .header("Range", format!("bytes={from}-{to}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 206);
        let piece = response.bytes().await.unwrap();
        assert_eq!(piece.len() as u64, to - from + 1);
        out.extend_from_slice(&piece);
        from = to + 1;
    }
    out
}

fn id_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

#[tokio::test]
#[ignore = "needs tus-js-client and Node: bash .ci/test installs them and passes --include-ignored"]
async fn tus_js_client_is_killed_midway_through_a_25_mb_jpeg_and_resumes() {
    let server = common::spawn_serve(&[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let jpeg = common::exact_jpeg(25_000_000);
    let path = write_file(&dir, "photo.jpg", &jpeg);
    let first = tus_js(&["upload", &path, TOKEN, &server.url, "image/jpeg"]);
    let url = kill_after(first, 5 * MIB);
    let kept = offset(&url).await;
    assert!(
        (5 * MIB..jpeg.len() as u64).contains(&kept),
        "kept {kept} bytes"
    );
    let resumed = tus_js(&["resume", &path, TOKEN, &server.url, &url]);
    assert_eq!(finish(resumed), format!("DONE {url}"));
    let back = download_by_ranges(&server.url, id_of(&url), jpeg.len() as u64).await;
    assert!(
        sha256(&back) == sha256(&jpeg),
        "the downloaded file differs"
    );
}

#[tokio::test]
#[ignore = "needs tuspy: bash .ci/test installs it and passes --include-ignored"]
async fn tuspy_with_checksums_is_killed_midway_resumes_and_a_wrong_checksum_is_460() {
    let server = common::spawn_serve(&[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let jpeg = common::exact_jpeg(25_000_000);
    let path = write_file(&dir, "photo.jpg", &jpeg);
    let first = tuspy(&[
        "upload",
        &path,
        TOKEN,
        &server.url,
        "--sha256",
        "--type",
        "image/jpeg",
    ]);
    let url = kill_after(first, 3 * MIB);
    let kept = offset(&url).await;
    assert!((3 * MIB..jpeg.len() as u64).contains(&kept), "kept {kept}");
    let resumed = tuspy(&["resume", &path, TOKEN, &server.url, &url, "--checksum"]);
    assert_eq!(finish(resumed), format!("DONE {url}"));
    let back = download_by_ranges(&server.url, id_of(&url), jpeg.len() as u64).await;
    assert!(
        sha256(&back) == sha256(&jpeg),
        "the downloaded file differs"
    );
    // The checksum extension with a wrong digest: 460, and nothing of the chunk kept.
    let wrong = tuspy(&["upload", &path, TOKEN, &server.url, "--wrong-checksum"]);
    let last = finish(wrong);
    assert!(last.starts_with("FAILED 460 "), "{last}");
}

#[tokio::test]
#[ignore = "needs tus-js-client, tuspy and the S3 test server: bash .ci/test starts and installs them and passes --include-ignored"]
async fn both_clients_alternate_between_two_servers_sharing_the_bucket() {
    let s3 = common::s3::s3();
    let prefix = common::s3::unique_prefix("tus-clients");
    let env: Vec<(String, String)> = s3
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let a = common::spawn_serve(&["--store", &s3.url(&prefix)], &env);
    let b = common::spawn_serve(&["--store", &s3.url(&prefix)], &env);
    let both = format!("{},{}", a.url, b.url);
    let dir = tempfile::tempdir().unwrap();
    let jpeg = common::exact_jpeg(12_000_000);
    let path = write_file(&dir, "photo.jpg", &jpeg);

    // tus-js-client: requests alternate; killed midway, resumed through the other server.
    let first = tus_js(&["upload", &path, TOKEN, &both, "image/jpeg"]);
    let url = kill_after(first, 4 * MIB);
    let reversed = format!("{},{}", b.url, a.url);
    let resumed = tus_js(&["resume", &path, TOKEN, &reversed, &url]);
    assert_eq!(finish(resumed), format!("DONE {url}"));
    for server in [&a.url, &b.url] {
        let back = download_by_ranges(server, id_of(&url), jpeg.len() as u64).await;
        assert!(
            sha256(&back) == sha256(&jpeg),
            "the file read from {server} differs"
        );
    }

    // tuspy with checksums: each chunk to the other server.
    let up = tuspy(&[
        "upload",
        &path,
        TOKEN,
        &both,
        "--checksum",
        "--type",
        "image/jpeg",
    ]);
    let done = finish(up);
    let url = done
        .strip_prefix("DONE ")
        .unwrap_or_else(|| panic!("{done}"));
    for server in [&a.url, &b.url] {
        let back = download_by_ranges(server, id_of(url), jpeg.len() as u64).await;
        assert!(
            sha256(&back) == sha256(&jpeg),
            "the file read from {server} differs"
        );
    }
    let wrong = tuspy(&["upload", &path, TOKEN, &both, "--wrong-checksum"]);
    assert!(finish(wrong).starts_with("FAILED 460 "));
}

#[tokio::test]
#[ignore = "needs curl: bash .ci/test installs it and passes --include-ignored"]
async fn the_ietf_flow_with_curl_sees_104_resumes_after_a_cut_and_completes() {
    let server = common::spawn_serve(&[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let jpeg = common::exact_jpeg(6_000_000);
    let path = write_file(&dir, "curl.jpg", &jpeg);
    let out = Command::new("bash")
        .arg(script("ietf_curl.sh"))
        .args([&server.url, &path, TOKEN])
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("DONE "),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
