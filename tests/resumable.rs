//! Resumable uploads end to end over loopback: tus 1.0 at `/files` and the IETF draft at
//! `/uploads` on the real server (`attachments::server::serve`, the accept loop
//! `attachments serve` runs, so the IETF `104` is sent), with requests written by hand
//! (reqwest, and raw TCP where a request must be cut off or an interim response read).
//! The stock clients (tus-js-client, tuspy) are in `tests/tus_clients.rs`.
#![cfg(all(feature = "server", feature = "client"))]

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use attachments::digest::sha256;
use attachments::server::{ListenOptions, Sandbox, ServerConfig, serve};
use attachments::store::{MemoryStore, Store};
use base64::Engine;
use reqwest::{Method, StatusCode};

const TOKEN: &str = "resumable-token";

struct Server {
    url: String,
    store: Arc<dyn Store>,
}

async fn start(config: ServerConfig) -> Server {
    start_on(Arc::new(MemoryStore::new()), config).await
}

async fn start_on(store: Arc<dyn Store>, config: ServerConfig) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = Sandbox::new(store.clone(), config).router();
    tokio::spawn(serve(
        listener,
        router,
        ListenOptions::default(),
        std::future::pending(),
    ));
    Server { url, store }
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A tus request with the token and `Tus-Resumable`.
fn tus(method: Method, url: &str, token: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token)
        .header("Tus-Resumable", "1.0.0")
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// Creates a tus upload of `len` bytes named `name`; returns its address.
async fn create(s: &Server, len: usize, name: &str, filetype: &str) -> String {
    let response = tus(Method::POST, &format!("{}/files", s.url), TOKEN)
        .header("Upload-Length", len.to_string())
        .header(
            "Upload-Metadata",
            format!("filename {},filetype {}", b64(name), b64(filetype)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    header(&response, "location").expect("Location")
}

async fn patch(at: &str, offset: usize, body: Vec<u8>) -> reqwest::Response {
    tus(Method::PATCH, at, TOKEN)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", offset.to_string())
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn offset_of(at: &str) -> (StatusCode, Option<u64>) {
    let response = tus(Method::HEAD, at, TOKEN).send().await.unwrap();
    let offset = header(&response, "upload-offset").map(|v| v.parse().unwrap());
    (response.status(), offset)
}

/// The attachment `id` as the chat resource serves it to `token`: status and bytes.
async fn content(s: &Server, id: &str, token: &str) -> (StatusCode, Vec<u8>) {
    let response = reqwest::Client::new()
        .get(format!("{}/v1/attachments/{id}/content", s.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (response.status(), response.bytes().await.unwrap().to_vec())
}

async fn json_of(response: reqwest::Response) -> serde_json::Value {
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

fn id_of(location: &str) -> &str {
    location.rsplit('/').next().unwrap()
}

/// Sends `head` and then `body` on a fresh connection to `url`'s host, then closes it
/// without reading (a client that goes away mid-body).
fn cut_off(url: &str, head: &str, body: &[u8]) {
    let host = url.trim_start_matches("http://").split('/').next().unwrap();
    let mut tcp = std::net::TcpStream::connect(host).unwrap();
    tcp.write_all(head.as_bytes()).unwrap();
    tcp.write_all(body).unwrap();
    tcp.flush().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(tcp);
}

/// Polls `HEAD` until the upload stands at `want` (an interrupted append is saved as
/// soon as the server sees the connection end).
async fn wait_for_offset(at: &str, want: u64) -> u64 {
    let mut last = None;
    for _ in 0..100 {
        last = offset_of(at).await.1;
        if last == Some(want) {
            return want;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last.unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tus_upload_in_uneven_appends_becomes_the_owners_attachment() {
    let s = start(ServerConfig::default()).await;
    let options = tus(Method::OPTIONS, &format!("{}/files", s.url), TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(options.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&options, "tus-version").as_deref(), Some("1.0.0"));
    let extensions = header(&options, "tus-extension").unwrap();
    for ext in [
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "termination",
        "checksum",
        "expiration",
    ] {
        assert!(extensions.split(',').any(|e| e == ext), "{extensions}");
    }
    assert_eq!(
        header(&options, "tus-max-size").as_deref(),
        Some("26214400")
    );

    let file = common::exact_jpeg(2_600_000);
    let at = create(&s, file.len(), "photo.jpg", "image/jpeg").await;
    assert!(at.starts_with(&format!("{}/files/", s.url)), "{at}");
    // Cut points that fall inside, on and across the 1 MiB pieces the server stores.
    let cuts = [0, 700_000, 1_048_576, 1_048_577, 2_200_000, file.len()];
    for pair in cuts.windows(2) {
        let response = patch(&at, pair[0], file[pair[0]..pair[1]].to_vec()).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            header(&response, "upload-offset"),
            Some(pair[1].to_string())
        );
        assert_eq!(header(&response, "tus-resumable").as_deref(), Some("1.0.0"));
        let (status, offset) = offset_of(&at).await;
        assert_eq!((status, offset), (StatusCode::OK, Some(pair[1] as u64)));
    }
    let id = id_of(&at);
    let (status, bytes) = content(&s, id, TOKEN).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sha256(&bytes), sha256(&file));
    let meta = s.store.metadata(id).await.unwrap();
    assert_eq!(
        (meta.file_name.as_str(), meta.file_type.as_str()),
        ("photo.jpg", "image/jpeg")
    );
    // Another token's owner sees nothing of it, neither the upload nor the attachment.
    assert_eq!(
        content(&s, id, "someone-else").await.0,
        StatusCode::NOT_FOUND
    );
    let other = tus(Method::HEAD, &at, "someone-else").send().await.unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    // Listed for its owner, newest first, like any chat upload.
    let list = json_of(
        reqwest::Client::new()
            .get(format!("{}/v1/attachments", s.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(list["data"][0]["id"], id);
    // Complete: the offset is the length, and more bytes are refused.
    let more = patch(&at, file.len(), b"x".to_vec()).await;
    assert_eq!(more.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_cut_off_midway_resumes_at_the_last_byte_kept() {
    let s = start(ServerConfig::default()).await;
    let file = common::exact_jpeg(3_000_000);
    let at = create(&s, file.len(), "cut.jpg", "image/jpeg").await;
    let path = at.trim_start_matches(&s.url);
    let host = s.url.trim_start_matches("http://");
    let sent = 1_600_000;
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n\
         Upload-Offset: 0\r\nContent-Length: {}\r\n\r\n",
        file.len()
    );
    cut_off(&s.url, &head, &file[..sent]);
    // Every byte that came is kept: the whole first piece and the part of the second.
    let kept = wait_for_offset(&at, sent as u64).await;
    assert_eq!(kept, sent as u64);
    // A resume from anywhere else is refused with the offset to send from.
    let wrong = patch(&at, 1_048_576, file[1_048_576..].to_vec()).await;
    assert_eq!(wrong.status(), StatusCode::CONFLICT);
    let text = wrong.text().await.unwrap();
    assert!(text.contains(&format!("send from byte {sent}")), "{text}");
    let rest = patch(&at, sent, file[sent..].to_vec()).await;
    assert_eq!(rest.status(), StatusCode::NO_CONTENT);
    let (status, bytes) = content(&s, id_of(&at), TOKEN).await;
    assert_eq!(status, StatusCode::OK);
    assert!(bytes == file, "the stored file differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_checksum_is_460_and_keeps_nothing_of_the_body() {
    let s = start(ServerConfig::default()).await;
    let file = common::real_pdf("checksums");
    let at = create(&s, file.len(), "c.pdf", "application/pdf").await;
    let half = file.len() / 2;
    let sum = |alg: &str, data: &[u8]| -> String {
        let digest = match alg {
            "sha1" => {
                use sha1_smol_free::digest;
                digest(data)
            }
            _ => sha256(data).0.to_vec(),
        };
        format!(
            "{alg} {}",
            base64::engine::general_purpose::STANDARD.encode(digest)
        )
    };
    let wrong = tus(Method::PATCH, &at, TOKEN)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .header("Upload-Checksum", sum("sha256", &file[1..=half]))
        .body(file[..half].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 460);
    assert_eq!(offset_of(&at).await.1, Some(0));
    let unknown = tus(Method::PATCH, &at, TOKEN)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .header("Upload-Checksum", "md5 1B2M2Y8AsgTpgAmY7PhCfg==")
        .body(file[..half].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    for (alg, range) in [("sha256", 0..half), ("sha1", half..file.len())] {
        let right = tus(Method::PATCH, &at, TOKEN)
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", range.start.to_string())
            .header("Upload-Checksum", sum(alg, &file[range.clone()]))
            .body(file[range.clone()].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), StatusCode::NO_CONTENT, "{alg}");
    }
    assert_eq!(content(&s, id_of(&at), TOKEN).await.1, file);
}

/// SHA-1 for the test's own checksums, from the `sha1` crate the server uses is not a
/// dependency of the tests: a small independent implementation (FIPS 180-4), so the
/// server's digest is checked against another one.
mod sha1_smol_free {
    pub fn digest(data: &[u8]) -> Vec<u8> {
        let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
        let mut msg = data.to_vec();
        let bits = (data.len() as u64) * 8;
        msg.push(0x80);
        while msg.len() % 64 != 56 {
            msg.push(0);
        }
        msg.extend_from_slice(&bits.to_be_bytes());
        for block in msg.chunks(64) {
            let mut w = [0u32; 80];
            for i in 0..16 {
                w[i] = u32::from_be_bytes(block[i * 4..i * 4 + 4].try_into().unwrap());
            }
            for i in 16..80 {
                w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
            }
            let [mut a, mut b, mut c, mut d, mut e] = h;
            for (i, wi) in w.iter().enumerate() {
                let (f, k) = match i {
                    0..=19 => ((b & c) | (!b & d), 0x5A827999),
                    20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                    40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                    _ => (b ^ c ^ d, 0xCA62C1D6),
                };
                let t = a
                    .rotate_left(5)
                    .wrapping_add(f)
                    .wrapping_add(e)
                    .wrapping_add(k)
                    .wrapping_add(*wi);
                e = d;
                d = c;
                c = b.rotate_left(30);
                b = a;
                a = t;
            }
            for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
                *x = x.wrapping_add(y);
            }
        }
        h.iter().flat_map(|x| x.to_be_bytes()).collect()
    }

    #[test]
    fn known_answer() {
        assert_eq!(
            hex::encode(digest(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_out_of_protocol_are_refused_in_its_shape() {
    let s = start(ServerConfig::default()).await;
    let files = format!("{}/files", s.url);
    // No Tus-Resumable: 412 with the version spoken.
    let response = reqwest::Client::new()
        .post(&files)
        .bearer_auth(TOKEN)
        .header("Upload-Length", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(header(&response, "tus-version").as_deref(), Some("1.0.0"));
    assert_eq!(header(&response, "tus-resumable").as_deref(), Some("1.0.0"));
    assert!(response.text().await.unwrap().contains("tus 1.0.0"));
    // Neither a length nor its deferral.
    let response = tus(Method::POST, &files, TOKEN).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // Over the largest file.
    let response = tus(Method::POST, &files, TOKEN)
        .header("Upload-Length", (26_214_400 + 1).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Metadata that is not base64.
    let response = tus(Method::POST, &files, TOKEN)
        .header("Upload-Length", "10")
        .header("Upload-Metadata", "filename !!!")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("not base64"));
    // An append of another type.
    let at = create(&s, 100, "a.txt", "text/plain").await;
    let response = tus(Method::PATCH, &at, TOKEN)
        .header("Content-Type", "application/octet-stream")
        .header("Upload-Offset", "0")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // An unknown upload, and one of another id shape.
    for id in [
        "01a228df-6313-7ef9-9ac4-43ed35270aff",
        "../../etc/passwd",
        "x",
    ] {
        let response = tus(Method::HEAD, &format!("{files}/{id}"), TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{id}");
    }
    // Without the token, when one is required: 401 with its challenge.
    let locked = start(ServerConfig::default().with_credentials("secret", "1")).await;
    let response = tus(Method::POST, &format!("{}/files", locked.url), "wrong")
        .header("Upload-Length", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&response, "www-authenticate").is_some());
    // The chat resource needs no affiliate id; neither do resumable uploads.
    let response = tus(Method::POST, &format!("{}/files", locked.url), "secret")
        .header("Upload-Length", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_stops_being_acceptable_ends_the_upload_and_keeps_nothing() {
    let s = start(ServerConfig::default()).await;
    let pdf = common::real_pdf("not an image");
    let at = create(&s, pdf.len(), "a.png", "image/png").await;
    let response = patch(&at, 0, pdf.clone()).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let reason = response.text().await.unwrap();
    assert!(
        reason.contains("the content is application/pdf but the declared file type is image/png"),
        "{reason}"
    );
    // Every later request says why, and no byte is kept.
    let (status, _) = offset_of(&at).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let again = patch(&at, 0, pdf.clone()).await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    let text = again.text().await.unwrap();
    assert!(
        text.contains("refused earlier") && text.contains("application/pdf"),
        "{text}"
    );
    let id = id_of(&at);
    assert!(matches!(
        s.store.read_staged(id, 0..1).await,
        Err(attachments::Error::NotFound { .. } | attachments::Error::Incomplete { .. })
    ));
    // A truncated image is refused once its last byte is in.
    let jpeg = common::exact_jpeg(5000);
    let cut = &jpeg[..jpeg.len() - 2];
    let at = create(&s, cut.len(), "t.jpg", "image/jpeg").await;
    let response = patch(&at, 0, cut.to_vec()).await;
    assert!(response.status().is_client_error(), "{}", response.status());
    assert_eq!(
        content(&s, id_of(&at), TOKEN).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_length_creation_with_upload_and_termination() {
    let s = start(ServerConfig::default()).await;
    let file = common::real_pdf("deferred");
    let half = file.len() / 2;
    let response = tus(Method::POST, &format!("{}/files", s.url), TOKEN)
        .header("Upload-Defer-Length", "1")
        .header("Upload-Metadata", format!("filename {}", b64("d.pdf")))
        .header("Content-Type", "application/offset+octet-stream")
        .body(file[..half].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(header(&response, "upload-offset"), Some(half.to_string()));
    assert!(header(&response, "upload-expires").is_some());
    let at = header(&response, "location").unwrap();
    let head = tus(Method::HEAD, &at, TOKEN).send().await.unwrap();
    assert_eq!(header(&head, "upload-defer-length").as_deref(), Some("1"));
    assert_eq!(header(&head, "cache-control").as_deref(), Some("no-store"));
    assert_eq!(
        header(&head, "upload-metadata"),
        Some(format!("filename {}", b64("d.pdf")))
    );
    let response = tus(Method::PATCH, &at, TOKEN)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", half.to_string())
        .header("Upload-Length", file.len().to_string())
        .body(file[half..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let id = id_of(&at).to_owned();
    assert_eq!(content(&s, &id, TOKEN).await.1, file);
    assert_eq!(
        s.store.metadata(&id).await.unwrap().file_type,
        "application/pdf"
    );
    // Termination of a finished upload deletes its attachment; later requests find nothing.
    let response = tus(Method::DELETE, &at, TOKEN).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(content(&s, &id, TOKEN).await.0, StatusCode::NOT_FOUND);
    assert_eq!(offset_of(&at).await.0, StatusCode::NOT_FOUND);
    // And of an unfinished one, its bytes.
    let at = create(&s, file.len(), "e.pdf", "application/pdf").await;
    assert_eq!(
        patch(&at, 0, file[..half].to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );
    let response = tus(Method::DELETE, &at, TOKEN).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(offset_of(&at).await.0, StatusCode::NOT_FOUND);
    assert!(s.store.read_staged(id_of(&at), 0..1).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_append_waits_for_the_first_then_is_refused_as_locked() {
    let s = start(ServerConfig::default()).await;
    let file = common::exact_jpeg(2_000_000);
    let at = create(&s, file.len(), "l.jpg", "image/jpeg").await;
    let path = at.trim_start_matches(&s.url).to_owned();
    // An append that sends its first bytes and then stalls, holding its lease.
    let host = s.url.trim_start_matches("http://").to_owned();
    let mut stalled = std::net::TcpStream::connect(&host).unwrap();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n\
         Upload-Offset: 0\r\nContent-Length: {}\r\n\r\n",
        file.len()
    );
    stalled.write_all(head.as_bytes()).unwrap();
    stalled.write_all(&file[..1_100_000]).unwrap();
    wait_for_offset(&at, 1_048_576).await;
    let started = std::time::Instant::now();
    let second = patch(&at, 1_048_576, file[1_048_576..].to_vec()).await;
    assert_eq!(second.status().as_u16(), 423);
    assert_eq!(header(&second, "retry-after").as_deref(), Some("1"));
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "it waited for the lease"
    );
    // The first one finishes; the second's bytes were never taken.
    stalled.write_all(&file[1_100_000..]).unwrap();
    let mut answer = [0u8; 12];
    stalled.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 204");
    assert_eq!(content(&s, id_of(&at), TOKEN).await.1, file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ietf_flow_announces_the_upload_with_104_and_resumes_after_a_cut() {
    let s = start(ServerConfig::default()).await;
    let file = common::exact_jpeg(2_500_000);
    let host = s.url.trim_start_matches("http://").to_owned();
    // Creation whose connection is cut after 1.2 MB: the 104 has given the address.
    let mut tcp = std::net::TcpStream::connect(&host).unwrap();
    let head = format!(
        "POST /uploads HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Upload-Draft-Interop-Version: 8\r\nUpload-Complete: ?1\r\nContent-Type: image/jpeg\r\n\
         Content-Disposition: attachment; filename=\"ietf.jpg\"\r\nContent-Length: {}\r\n\r\n",
        file.len()
    );
    tcp.write_all(head.as_bytes()).unwrap();
    let mut interim = Vec::new();
    let mut byte = [0u8; 1];
    while !interim.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).unwrap();
        interim.push(byte[0]);
    }
    let interim = String::from_utf8(interim).unwrap();
    assert!(
        interim.starts_with("HTTP/1.1 104 Upload Resumption Supported\r\n"),
        "{interim}"
    );
    assert!(
        interim.contains("upload-draft-interop-version: 8\r\n"),
        "{interim}"
    );
    assert!(
        interim.contains("upload-limit: max-size=26214400"),
        "{interim}"
    );
    let at = interim
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .unwrap()
        .to_owned();
    tcp.write_all(&file[..1_200_000]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(tcp);
    let client = reqwest::Client::new();
    let mut offset = 0;
    for _ in 0..100 {
        let head = client.head(&at).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::NO_CONTENT);
        assert_eq!(header(&head, "upload-complete").as_deref(), Some("?0"));
        assert_eq!(header(&head, "cache-control").as_deref(), Some("no-store"));
        offset = header(&head, "upload-offset").unwrap().parse().unwrap();
        if offset == 1_200_000 {
            // The length given by Upload-Complete: ?1 and Content-Length is kept.
            assert_eq!(header(&head, "upload-length"), Some(file.len().to_string()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(offset, 1_200_000);
    // A wrong offset: 409, problem+json with both offsets, and the right one.
    let wrong = client
        .patch(&at)
        .bearer_auth(TOKEN)
        .header("Content-Type", "application/partial-upload")
        .header("Upload-Offset", "5")
        .header("Upload-Complete", "?1")
        .body(file[5..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::CONFLICT);
    assert_eq!(header(&wrong, "upload-offset").as_deref(), Some("1200000"));
    assert_eq!(
        header(&wrong, "content-type").as_deref(),
        Some("application/problem+json")
    );
    let problem: serde_json::Value = json_of(wrong).await;
    assert_eq!(
        problem["type"],
        "https://iana.org/assignments/http-problem-types#mismatching-upload-offset"
    );
    assert_eq!(
        (
            problem["expected-offset"].as_u64(),
            problem["provided-offset"].as_u64()
        ),
        (Some(1_200_000), Some(5))
    );
    // Resume and complete.
    let done = client
        .patch(&at)
        .bearer_auth(TOKEN)
        .header("Content-Type", "application/partial-upload")
        .header("Upload-Offset", "1200000")
        .header("Upload-Complete", "?1")
        .body(file[1_200_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    assert_eq!(header(&done, "upload-complete").as_deref(), Some("?1"));
    let json: serde_json::Value = json_of(done).await;
    assert_eq!(json["filename"], "ietf.jpg");
    assert_eq!(json["file_type"], "image/jpeg");
    let id = json["id"].as_str().unwrap().to_owned();
    assert_eq!(id, id_of(&at));
    assert_eq!(content(&s, &id, TOKEN).await.1, file);
    // Complete: another append is the draft's completed-upload problem.
    let after = client
        .patch(&at)
        .bearer_auth(TOKEN)
        .header("Content-Type", "application/partial-upload")
        .header("Upload-Offset", file.len().to_string())
        .header("Upload-Complete", "?1")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::BAD_REQUEST);
    let problem: serde_json::Value = json_of(after).await;
    assert_eq!(
        problem["type"],
        "https://iana.org/assignments/http-problem-types#completed-upload"
    );
    let head = client.head(&at).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(header(&head, "upload-complete").as_deref(), Some("?1"));
    // OPTIONS names the append type; DELETE cancels.
    let options = client
        .request(Method::OPTIONS, format!("{}/uploads", s.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&options, "accept-patch").as_deref(),
        Some("application/partial-upload")
    );
    let deleted = client.delete(&at).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(content(&s, &id, TOKEN).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ietf_upload_in_one_request_without_interop_version_gets_no_104() {
    let s = start(ServerConfig::default()).await;
    let file = common::real_pdf("one go");
    let host = s.url.trim_start_matches("http://").to_owned();
    let mut tcp = std::net::TcpStream::connect(&host).unwrap();
    let head = format!(
        "POST /uploads HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Upload-Complete: ?1\r\nContent-Type: application/pdf\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n",
        file.len()
    );
    tcp.write_all(head.as_bytes()).unwrap();
    tcp.write_all(&file).unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201 Created\r\n"), "{answer}");
    assert!(answer.contains("upload-complete: ?1\r\n"), "{answer}");
    // A request without Upload-Complete is no resumable upload.
    let response = reqwest::Client::new()
        .post(format!("{}/uploads", s.url))
        .bearer_auth(TOKEN)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let problem: serde_json::Value = json_of(response).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("Upload-Complete"),
        "{problem}"
    );
}

mod cut_points {
    //! The receiver alone (no HTTP), over the memory and file-system stores: any cut points,
    //! cut-off appends, stale retries and bad checksums give the same stored file and
    //! verdict as one append.
    use super::common;
    use std::sync::Arc;

    use attachments::store::{FsStore, MemoryStore, Store};
    use attachments::stream::{Append, UploadReceiver};
    use attachments::upload::Creation;
    use attachments::wire::resumable::{Checksum, ChecksumAlgorithm};
    use attachments::{Error, Policy};
    use bytes::Bytes;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// An append of this share of what remains.
        Append(f64),
        /// The same, cut off after this share of it (the client went away).
        Cut(f64, f64),
        /// An append sent again from an earlier offset (a stale retry).
        Stale(f64),
        /// An append whose checksum is of other bytes.
        BadChecksum(f64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0.0f64..1.0).prop_map(Op::Append),
            (0.0f64..1.0, 0.0f64..1.0).prop_map(|(a, b)| Op::Cut(a, b)),
            (0.0f64..1.0).prop_map(Op::Stale),
            (0.0f64..1.0).prop_map(Op::BadChecksum),
        ]
    }

    fn pieces(data: &[u8], piece: usize) -> Vec<Result<Bytes, Error>> {
        data.chunks(piece.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect()
    }

    async fn run(
        store: Arc<dyn Store>,
        file: &[u8],
        ops: &[Op],
        piece: usize,
    ) -> (Vec<u8>, String) {
        let receiver = UploadReceiver::new(Policy::chat(), store.clone());
        let creation = Creation {
            file_name: "cut.jpg",
            file_type: "image/jpeg",
            length: Some(file.len() as u64),
            metadata: "",
        };
        let id = receiver
            .create_resumable(creation, "owner")
            .await
            .unwrap()
            .id;
        let mut at = 0usize;
        for op in ops {
            let left = file.len() - at;
            let len = |share: f64| {
                ((share * left as f64) as usize).clamp(1, left.saturating_sub(1).max(1))
            };
            if left <= 1 {
                break;
            }
            match op {
                Op::Append(share) => {
                    let end = at + len(*share);
                    let status = receiver
                        .append_resumable(
                            &id,
                            "owner",
                            Append::at(at as u64),
                            futures::stream::iter(pieces(&file[at..end], piece)),
                        )
                        .await
                        .unwrap();
                    assert_eq!(status.offset, end as u64);
                    at = end;
                }
                Op::Cut(share, kept) => {
                    let end = at + len(*share);
                    let sent = at + ((end - at) as f64 * kept) as usize;
                    let mut body = pieces(&file[at..sent], piece);
                    body.push(Err(Error::InvalidField {
                        field: "request body".into(),
                        problem: "cut".into(),
                    }));
                    let err = receiver
                        .append_resumable(
                            &id,
                            "owner",
                            Append::at(at as u64),
                            futures::stream::iter(body),
                        )
                        .await
                        .unwrap_err();
                    assert!(err.to_string().contains("cut"), "{err}");
                    let status = receiver.resumable_status(&id, "owner").await.unwrap();
                    // Every byte that came is kept, none past it.
                    assert_eq!(status.offset, sent as u64);
                    at = sent;
                }
                Op::Stale(share) => {
                    let from = ((at as f64) * share) as usize;
                    if from == at {
                        continue;
                    }
                    let err = receiver
                        .append_resumable(
                            &id,
                            "owner",
                            Append::at(from as u64),
                            futures::stream::iter(pieces(&file[from..at], piece)),
                        )
                        .await
                        .unwrap_err();
                    assert_eq!(err.status(), 409, "{err}");
                }
                Op::BadChecksum(share) => {
                    let end = at + len(*share);
                    let sum = Checksum {
                        algorithm: ChecksumAlgorithm::Sha256,
                        digest: attachments::digest::sha256(&file[at + 1..=end]).0.to_vec(),
                    };
                    let append = Append::at(at as u64).with_checksum(Some(sum));
                    let err = receiver
                        .append_resumable(
                            &id,
                            "owner",
                            append,
                            futures::stream::iter(pieces(&file[at..end], piece)),
                        )
                        .await
                        .unwrap_err();
                    assert_eq!(err.status(), 460, "{err}");
                    let status = receiver.resumable_status(&id, "owner").await.unwrap();
                    assert_eq!(status.offset, at as u64, "nothing of it kept");
                }
            }
        }
        let status = receiver
            .append_resumable(
                &id,
                "owner",
                Append::at(at as u64),
                futures::stream::iter(pieces(&file[at..], piece)),
            )
            .await
            .unwrap();
        assert!(status.finished);
        let meta = store.metadata(&id).await.unwrap();
        let bytes = store.read_range(&id, 0..file.len() as u64).await.unwrap();
        (
            bytes.to_vec(),
            format!("{} {} {}", meta.file_type, meta.sha256, meta.file_size),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn any_cuts_retries_and_checksums_store_the_same_file(
            len in 2_000usize..2_400_000,
            ops in proptest::collection::vec(op(), 0..8),
            piece in prop_oneof![Just(1usize << 20), 1usize..200_000],
        ) {
            let file = common::exact_jpeg(len.max(200));
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let (once, verdict) = runtime.block_on(run(Arc::new(MemoryStore::new()), &file, &[], 1 << 20));
            prop_assert!(once == file);
            for store in [
                Arc::new(MemoryStore::new()) as Arc<dyn Store>,
                Arc::new(FsStore::open(dir.path()).unwrap()),
            ] {
                let (bytes, got) = runtime.block_on(run(store, &file, &ops, piece));
                prop_assert!(bytes == file);
                prop_assert_eq!(&got, &verdict);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_http_method_override_carries_patch_head_and_delete_over_post() {
    let s = start(ServerConfig::default()).await;
    let file = common::real_pdf("override");
    let at = create(&s, file.len(), "o.pdf", "application/pdf").await;
    let post = |method: &str| {
        tus(Method::POST, &at, TOKEN).header("X-HTTP-Method-Override", method.to_owned())
    };
    let response = post("PATCH")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .body(file[..10].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = post("HEAD").send().await.unwrap();
    assert_eq!(header(&response, "upload-offset").as_deref(), Some("10"));
    let response = post("PUT").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let response = post("DELETE").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(offset_of(&at).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_bytes_of_a_client_that_hangs_up_at_once_are_committed() {
    let s = start(ServerConfig::default()).await;
    let host = s.url.trim_start_matches("http://").to_owned();
    for round in 0..8 {
        let file = common::real_pdf(&format!("hang up {round}"));
        let at = create(&s, file.len(), "h.pdf", "application/pdf").await;
        let half = file.len() / 2;
        assert_eq!(
            patch(&at, 0, file[..half].to_vec()).await.status(),
            StatusCode::NO_CONTENT
        );
        let path = at.trim_start_matches(&s.url);
        let head = format!(
            "PATCH {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n\
             Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n\
             Upload-Offset: {half}\r\nContent-Length: {}\r\n\r\n",
            file.len() - half
        );
        // The whole body, then the connection closed without waiting for the answer.
        let mut tcp = std::net::TcpStream::connect(&host).unwrap();
        tcp.write_all(head.as_bytes()).unwrap();
        tcp.write_all(&file[half..]).unwrap();
        drop(tcp);
        let mut got = StatusCode::NOT_FOUND;
        for _ in 0..100 {
            got = content(&s, id_of(&at), TOKEN).await.0;
            if got == StatusCode::OK {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(got, StatusCode::OK, "round {round}");
        assert_eq!(content(&s, id_of(&at), TOKEN).await.1, file);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checksummed_body_damaged_on_the_way_is_460_and_the_upload_lives_on() {
    let s = start(ServerConfig::default()).await;
    let jpeg = common::exact_jpeg(300_000);
    let at = create(&s, jpeg.len(), "d.jpg", "image/jpeg").await;
    let sum = format!(
        "sha256 {}",
        base64::engine::general_purpose::STANDARD.encode(sha256(&jpeg[..200_000]).0)
    );
    let mut damaged = jpeg[..200_000].to_vec();
    damaged[0] ^= 0xFF; // no longer a JPEG: the Inspector refuses it, the checksum wins
    let send = |body: Vec<u8>| {
        tus(Method::PATCH, &at, TOKEN)
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", "0")
            .header("Upload-Checksum", sum.clone())
            .body(body)
            .send()
    };
    assert_eq!(send(damaged).await.unwrap().status().as_u16(), 460);
    assert_eq!(offset_of(&at).await, (StatusCode::OK, Some(0)));
    assert_eq!(
        send(jpeg[..200_000].to_vec()).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let rest = patch(&at, 200_000, jpeg[200_000..].to_vec()).await;
    assert_eq!(rest.status(), StatusCode::NO_CONTENT);
    assert_eq!(content(&s, id_of(&at), TOKEN).await.1, jpeg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_a_refused_checksum_left_bound_a_deferred_length() {
    let s = start(ServerConfig::default()).await;
    let file = common::exact_jpeg(3_000_000);
    let response = tus(Method::POST, &format!("{}/files", s.url), TOKEN)
        .header("Upload-Defer-Length", "1")
        .send()
        .await
        .unwrap();
    let at = header(&response, "location").unwrap();
    let wrong = tus(Method::PATCH, &at, TOKEN)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .header(
            "Upload-Checksum",
            format!(
                "sha256 {}",
                base64::engine::general_purpose::STANDARD.encode([0u8; 32])
            ),
        )
        .body(file.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 460);
    // A shorter file than the refused body: a 400 that says why, never a failed commit.
    let short = common::exact_jpeg(1_500_000);
    let response = tus(Method::PATCH, &at, TOKEN)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .header("Upload-Length", short.len().to_string())
        .body(short)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let text = response.text().await.unwrap();
    assert!(text.contains("3000000"), "{text}");
    // The same file again is taken, and the attachment is exactly it.
    let response = tus(Method::PATCH, &at, TOKEN)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .header("Upload-Length", file.len().to_string())
        .body(file.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(content(&s, id_of(&at), TOKEN).await.1, file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumable_uploads_hold_their_place_in_the_quota_until_they_end() {
    let quota = attachments::server::UploadQuota {
        max_open: 2,
        max_staged: 4 << 20,
    };
    let s = start(ServerConfig::default().with_upload_quota(quota)).await;
    let file = common::real_pdf("quota");
    let a = create(&s, file.len(), "a.pdf", "application/pdf").await;
    let _b = create(&s, file.len(), "b.pdf", "application/pdf").await;
    let third = tus(Method::POST, &format!("{}/files", s.url), TOKEN)
        .header("Upload-Length", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    // Finishing one gives its place back.
    assert_eq!(
        patch(&a, 0, file.clone()).await.status(),
        StatusCode::NO_CONTENT
    );
    let c = create(&s, file.len(), "c.pdf", "application/pdf").await;
    // A body cut off does not end its upload: it keeps its place.
    let host = s.url.trim_start_matches("http://").to_owned();
    let head = format!(
        "PATCH {} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n\
         Upload-Offset: 0\r\nContent-Length: {}\r\n\r\n",
        c.trim_start_matches(&s.url),
        file.len()
    );
    cut_off(&s.url, &head, &file[..10]);
    wait_for_offset(&c, 10).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fourth = tus(Method::POST, &format!("{}/files", s.url), TOKEN)
        .header("Upload-Length", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(fourth.status(), StatusCode::TOO_MANY_REQUESTS);
    // Deleting one gives its place back.
    let deleted = tus(Method::DELETE, &c, TOKEN).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let _d = create(&s, file.len(), "d.pdf", "application/pdf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chunked_api_does_not_find_a_resumable_upload() {
    let s = start(ServerConfig::default()).await;
    let at = create(&s, 100, "x.txt", "text/plain").await;
    let body = serde_json::json!({"attachment": {
        "action": "resume", "upload_id": id_of(&at),
        "chunk": {"chunk_number": 1, "chunk_size": 3, "chunk_content": "QUJD"},
        "file_type": "text/plain", "file_size": 2_000_000, "file_name": "x.txt",
    }});
    let response = reqwest::Client::new()
        .post(format!(
            "{}/messaging/properties/1/conversations/c1/attachment_chunks",
            s.url
        ))
        .bearer_auth(TOKEN)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}
