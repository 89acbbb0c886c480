//! A 100 MiB upload to `/v1/attachments` of a real `attachments serve` process (file-system
//! store): the server's peak memory (VmHWM) must stay flat, bounded by a chunk and the
//! buffers around it, not by the file. The figure is printed (`--nocapture`).
#![cfg(all(feature = "server", feature = "client", target_os = "linux"))]

mod common;

use attachments::client::{ChatClient, ChatUpload};
use attachments::digest::Sha256;
use attachments::download::DownloadOptions;
use bytes::Bytes;

const BLOCK: usize = 64 * 1024;
const BLOCKS: usize = 1_600; // 100 MiB

/// Block `i` of the file: noise, so nothing compresses or is recognised as a type.
fn block(i: usize) -> Bytes {
    let mut state = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::with_capacity(BLOCK);
    while out.len() < BLOCK {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    Bytes::from(out)
}

/// The process's peak resident memory, KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_100_mib_upload_keeps_the_server_flat() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("fs:{}", dir.path().display());
    let server = common::spawn_serve(&["--chat-max-mib", "128", "--store", &store], &[]);
    let (url, pid) = (server.url.clone(), server.child.id());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = ChatClient::new(&url).unwrap().with_token("t").unwrap();
    // Warm up (a small upload and list), then measure from there.
    rt.block_on(async {
        client
            .upload(
                std::io::Cursor::new(block(0).to_vec()),
                ChatUpload::new("warm.bin"),
            )
            .await
            .unwrap();
        client.list(None, 10, None).await.unwrap();
    });
    let before = peak_kib(pid);
    let pieces = futures::stream::iter((0..BLOCKS).map(|i| Ok::<_, std::io::Error>(block(i))));
    let reader = tokio_util::io::StreamReader::new(pieces);
    let sent = rt
        .block_on(client.upload(reader, ChatUpload::new("big.bin").with_conversation("c")))
        .unwrap();
    let after = peak_kib(pid);
    let mut expected = Sha256::new();
    for i in 0..BLOCKS {
        expected.update(&block(i));
    }
    let expected = expected.finalize();
    assert_eq!(sent.file_size, (BLOCK * BLOCKS) as u64);
    assert_eq!(sent.file_type, "application/octet-stream");
    // Back by ranges, verified against the ETag's SHA-256, into a sink.
    let verified = rt
        .block_on(client.download_to(&sent.id, DownloadOptions::default(), &mut tokio::io::sink()))
        .unwrap();
    assert_eq!(verified.sha256, expected);
    let end = peak_kib(pid);
    drop(server);
    let grew = after.saturating_sub(before);
    eprintln!(
        "server peak memory: {} KiB before the 100 MiB upload, {after} KiB after it (+{grew} KiB), \
         {end} KiB after downloading it back",
        before
    );
    assert!(
        grew < 24 * 1024,
        "the server's peak grew by {grew} KiB during a 100 MiB upload: it should hold a chunk, not the file"
    );
    assert!(
        end < before + 32 * 1024,
        "peak after the download: {end} KiB"
    );
}
