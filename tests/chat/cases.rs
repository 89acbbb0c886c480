//! End to end over loopback for the chat-platform resource (seed 003): the real sandbox
//! server (axum on 127.0.0.1), the real `ChatClient`, and raw HTTP requests (reqwest,
//! written by hand here) for headers, status codes and malformed requests. Included by
//! `tests/chat.rs` (memory store) and `tests/chat_s3.rs` (the S3 store on a real S3
//! server), which set `super::S3` and define `case!`, which makes each case a test
//! (ignored unless asked for, on S3).

use super::common;
use std::collections::BTreeSet;
use std::sync::Arc;

use attachments::client::{ChatClient, ChatUpload};
use attachments::digest::sha256;
use attachments::download::DownloadOptions;
use attachments::server::{Sandbox, ServerConfig};
use attachments::store::{MemoryStore, Store};
use attachments::{Error, Policy};
use futures::TryStreamExt;
use serde_json::Value;

const TOKEN: &str = "chat-token-1";

struct Server {
    url: String,
    store: Arc<dyn Store>,
}

impl Server {
    fn client(&self, token: &str) -> ChatClient {
        ChatClient::new(&self.url)
            .unwrap()
            .with_token(token)
            .unwrap()
    }

    fn url(&self, rest: &str) -> String {
        format!("{}/v1/attachments{rest}", self.url)
    }
}

async fn serve(config: ServerConfig) -> Server {
    let store: Arc<dyn Store> = if super::S3 {
        Arc::new(common::s3::s3().store("chat"))
    } else {
        Arc::new(MemoryStore::new())
    };
    let url = common::serve_local(Sandbox::new(store.clone(), config).router()).await;
    Server { url, store }
}

fn write_temp(dir: &tempfile::TempDir, name: &str, data: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, data).unwrap();
    path
}

/// A raw request with the bearer token; returns the response.
fn raw(method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .request(method, url)
        .header("authorization", format!("Bearer {TOKEN}"))
}

/// Status and JSON body of a response.
async fn json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.bytes().await.unwrap();
    let v = serde_json::from_slice(&text)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&text)));
    (status, v)
}

/// The message of a chat error body, checking its shape.
fn error_message(status: u16, body: &Value) -> String {
    assert_eq!(body["error"]["status"], status, "{body}");
    let m = body["error"]["message"].as_str().unwrap();
    assert!(!m.is_empty());
    m.to_owned()
}

/// A form part sent by hand: name, filename, content type, bytes.
type FormPart<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Vec<u8>);

/// A multipart upload sent by hand.
async fn post_form(server: &Server, parts: Vec<FormPart<'_>>) -> (u16, Value) {
    let mut form = reqwest::multipart::Form::new();
    for (name, filename, ty, data) in parts {
        let mut part = reqwest::multipart::Part::bytes(data);
        if let Some(f) = filename {
            part = part.file_name(f.to_owned());
        }
        if let Some(t) = ty {
            part = part.mime_str(t).unwrap();
        }
        form = form.part(name.to_owned(), part);
    }
    json(
        raw(reqwest::Method::POST, server.url(""))
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn sample_jpeg() -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sample.jpg")).unwrap()
}

fn sample_png() -> Vec<u8> {
    common::real_png(640, 480, png::ColorType::Rgb, png::BitDepth::Eight)
}

case!(png_jpeg_and_pdf_go_up_and_come_back_whole);
async fn png_jpeg_and_pdf_go_up_and_come_back_whole() {
    let server = serve(ServerConfig::default()).await;
    let client = server.client(TOKEN);
    let dir = tempfile::tempdir().unwrap();
    let files = [
        ("photo.png", sample_png(), "image/png"),
        ("photo.jpg", sample_jpeg(), "image/jpeg"),
        (
            "Invoice_room_service__Plaza_Hotel.pdf",
            common::real_pdf("Room service: 42.00"),
            "application/pdf",
        ),
    ];
    for (name, data, ty) in files {
        let path = write_temp(&dir, name, &data);
        let sent = client
            .upload_file(&path, Some("xgQQXg3hrtjh7AvZ"), Some("LoPsJaMcPBuFNjg1"))
            .await
            .unwrap();
        assert_eq!(sent.filename, name);
        assert_eq!(sent.file_type, ty, "the sniffed type is stored");
        assert_eq!(sent.file_size, data.len() as u64);
        assert_eq!(sent.message_id.as_deref(), Some("LoPsJaMcPBuFNjg1"));
        assert_eq!(sent.file_url, server.url(&format!("/{}/content", sent.id)));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            sent.created_at.abs_diff(now) < 60,
            "created_at is Unix seconds"
        );
        assert_eq!(client.get(&sent.id).await.unwrap(), sent);

        // The whole file, streamed, with its headers.
        let resp = raw(reqwest::Method::GET, sent.file_url.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let h = resp.headers().clone();
        assert_eq!(h["content-type"], ty);
        assert_eq!(h["accept-ranges"], "bytes");
        assert_eq!(
            h["etag"].to_str().unwrap(),
            format!("\"{}\"", sha256(&data).to_hex())
        );
        assert_eq!(
            h["content-disposition"].to_str().unwrap(),
            format!("attachment; filename=\"{name}\"; filename*=UTF-8''{name}")
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(resp.bytes().await.unwrap(), data);

        // By ranges, several in flight, verified against the ETag's SHA-256.
        let mut copy = Vec::new();
        let options = DownloadOptions::default().with_range_size(100_000);
        let verified = client
            .download_to(&sent.id, options, &mut copy)
            .await
            .unwrap();
        assert_eq!(copy, data);
        assert_eq!(verified.sha256, sha256(&data));
    }
}

case!(an_image_sent_as_octet_stream_is_checked_as_the_image_it_is);
async fn an_image_sent_as_octet_stream_is_checked_as_the_image_it_is() {
    let server = serve(ServerConfig::default()).await;
    let png = sample_png();
    let (status, body) = post_form(
        &server,
        vec![(
            "file",
            Some("x.bin"),
            Some("application/octet-stream"),
            png.clone(),
        )],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["file_type"], "image/png");
    // Cut short: a PNG without its end is refused, whatever it was declared as.
    let short = png[..png.len() - 12].to_vec();
    let (status, body) = post_form(&server, vec![("file", Some("x.bin"), None, short)]).await;
    assert_eq!(status, 400, "{body}");
    assert!(error_message(400, &body).contains("IEND"), "{body}");
}

case!(pages_stay_exact_while_attachments_are_added_and_deleted);
async fn pages_stay_exact_while_attachments_are_added_and_deleted() {
    let server = serve(ServerConfig::default()).await;
    let client = server.client(TOKEN);
    let upload = |n: usize, conversation: &'static str| {
        let client = client.clone();
        async move {
            let text = format!("note {n}\n");
            client
                .upload(
                    std::io::Cursor::new(text.into_bytes()),
                    ChatUpload::new(format!("note-{n}.txt"))
                        .with_content_type("text/plain")
                        .with_conversation(conversation),
                )
                .await
                .unwrap()
        }
    };
    let mut first = Vec::new();
    for n in 0..23 {
        first.push(upload(n, if n % 2 == 0 { "even" } else { "odd" }).await);
    }
    // Default page: 10, newest first.
    let (status, page) = json(
        raw(reqwest::Method::GET, server.url(""))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(page["data"].as_array().unwrap().len(), 10);
    assert_eq!(page["has_more"], true);
    assert_eq!(page["data"][0]["id"], first[22].id.as_str(), "newest first");

    // Page by 7; after each page add two and delete one not yet seen.
    let mut seen = Vec::new();
    let mut deleted = BTreeSet::new();
    let mut added = 100;
    let mut after: Option<String> = None;
    loop {
        let page = client.list(None, 7, after.as_deref()).await.unwrap();
        assert!(page.data.len() <= 7);
        seen.extend(page.data.iter().map(|a| a.id.clone()));
        if !page.has_more {
            break;
        }
        after = page.data.last().map(|a| a.id.clone());
        for _ in 0..2 {
            upload(added, "even").await;
            added += 1;
        }
        // The oldest still unseen goes (or, once near the end, the cursor itself).
        let victim = first
            .iter()
            .find(|a| !seen.contains(&a.id) && !deleted.contains(&a.id))
            .map_or(after.clone().unwrap(), |a| a.id.clone());
        client.delete(&victim).await.unwrap();
        deleted.insert(victim);
    }
    let expected: Vec<String> = first
        .iter()
        .rev()
        .map(|a| a.id.clone())
        .filter(|id| !deleted.contains(id) || seen.contains(id))
        .collect();
    assert_eq!(
        seen, expected,
        "every original once, newest first, none added later"
    );

    // A conversation's list, through the paging stream.
    let odd: Vec<String> = client
        .list_all(Some("odd"), 3)
        .map_ok(|a| a.id)
        .try_collect()
        .await
        .unwrap();
    let want: Vec<String> = first
        .iter()
        .rev()
        .filter(|a| a.conversation_id.as_deref() == Some("odd") && !deleted.contains(&a.id))
        .map(|a| a.id.clone())
        .collect();
    assert_eq!(odd, want);

    // Bad parameters name the problem.
    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=ten", "limit"),
        ("?starting_after=../../x", "starting_after"),
        ("?limit=5&limit=6", "limit"),
    ] {
        let (status, body) = json(
            raw(reqwest::Method::GET, server.url(query))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            error_message(400, &body).starts_with(field),
            "{query}: {body}"
        );
    }
    let (status, page) = json(
        raw(reqwest::Method::GET, server.url("?limit=100"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(page["data"].as_array().unwrap().len() <= 100);
}

case!(rename_changes_the_name_only);
async fn rename_changes_the_name_only() {
    let server = serve(ServerConfig::default()).await;
    let client = server.client(TOKEN);
    let pdf = common::real_pdf("invoice");
    let sent = client
        .upload(
            std::io::Cursor::new(pdf.clone()),
            ChatUpload::new("Invoice.pdf"),
        )
        .await
        .unwrap();
    assert_eq!(
        sent.file_type, "application/pdf",
        "octet-stream takes the sniffed type"
    );
    // The seed's form body.
    let renamed = client
        .rename(&sent.id, "Invoice_updated.pdf")
        .await
        .unwrap();
    assert_eq!(renamed.filename, "Invoice_updated.pdf");
    assert_eq!(
        (renamed.id.as_str(), renamed.file_size, renamed.created_at),
        (sent.id.as_str(), sent.file_size, sent.created_at)
    );
    // JSON works too, and the name is kept as given (served with RFC 6266 encoding).
    let resp = raw(reqwest::Method::PUT, server.url(&format!("/{}", sent.id)))
        .header("content-type", "application/json")
        .body(serde_json::json!({"filename": "Facture réglée \"n°7\".pdf"}).to_string())
        .send()
        .await
        .unwrap();
    let (status, body) = json(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["filename"], "Facture réglée \"n°7\".pdf");
    let resp = raw(reqwest::Method::GET, sent.file_url.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-disposition"].to_str().unwrap(),
        "attachment; filename=\"Facture r_gl_e _n_7_.pdf\"; \
         filename*=UTF-8''Facture%20r%C3%A9gl%C3%A9e%20%22n%C2%B07%22.pdf"
    );
    assert_eq!(resp.bytes().await.unwrap(), pdf, "the bytes did not change");
    // Names SPEC.md refuses.
    for bad in ["../etc/passwd", "a\u{7}b.pdf", &"x".repeat(256)] {
        let err = client.rename(&sent.id, bad).await.unwrap_err();
        assert!(
            matches!(err, Error::Remote { status: 400, .. }),
            "{bad}: {err}"
        );
    }
    assert_eq!(
        client.get(&sent.id).await.unwrap().filename,
        "Facture réglée \"n°7\".pdf"
    );
}

case!(delete_is_permanent_and_the_bytes_go);
async fn delete_is_permanent_and_the_bytes_go() {
    let server = serve(ServerConfig::default()).await;
    let client = server.client(TOKEN);
    let jpeg = sample_jpeg();
    let sent = client
        .upload(
            std::io::Cursor::new(jpeg.clone()),
            ChatUpload::new("p.jpg").with_content_type("image/jpeg"),
        )
        .await
        .unwrap();
    assert_eq!(
        server.store.read_range(&sent.id, 0..4).await.unwrap()[..],
        jpeg[..4]
    );
    let resp = raw(
        reqwest::Method::DELETE,
        server.url(&format!("/{}", sent.id)),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    for path in [format!("/{}", sent.id), format!("/{}/content", sent.id)] {
        let (status, body) = json(
            raw(reqwest::Method::GET, server.url(&path))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 404, "{path}");
        error_message(404, &body);
    }
    assert!(
        matches!(
            server.store.read_range(&sent.id, 0..4).await,
            Err(Error::NotFound { .. })
        ),
        "bytes gone from the store"
    );
    assert!(matches!(
        server.store.metadata(&sent.id).await,
        Err(Error::NotFound { .. })
    ));
    let err = client.delete(&sent.id).await.unwrap_err();
    assert!(matches!(err, Error::Remote { status: 404, .. }), "{err}");
    assert!(client.list(None, 100, None).await.unwrap().data.is_empty());
}

case!(ranges_follow_rfc_9110);
async fn ranges_follow_rfc_9110() {
    let server = serve(ServerConfig::default()).await;
    let client = server.client(TOKEN);
    let data = sample_jpeg();
    let size = data.len() as u64;
    let sent = client
        .upload(std::io::Cursor::new(data.clone()), ChatUpload::new("p.jpg"))
        .await
        .unwrap();
    let get = |range: Option<&str>| {
        let mut req = raw(reqwest::Method::GET, sent.file_url.clone());
        if let Some(r) = range {
            req = req.header("range", r);
        }
        async move { req.send().await.unwrap() }
    };
    let cases: [(&str, u16, std::ops::Range<u64>); 6] = [
        ("bytes=0-99", 206, 0..100),
        ("bytes=1000-", 206, 1000..size),
        ("bytes=-500", 206, size - 500..size),
        ("bytes=-99999999", 206, 0..size),
        (&format!("bytes=10-{}", size + 1000), 206, 10..size),
        ("bytes=0-1,5-9", 200, 0..size),
    ];
    for (header, status, range) in cases {
        let resp = get(Some(header)).await;
        assert_eq!(resp.status().as_u16(), status, "{header}");
        if status == 206 {
            assert_eq!(
                resp.headers()["content-range"].to_str().unwrap(),
                format!("bytes {}-{}/{size}", range.start, range.end - 1),
                "{header}"
            );
        }
        let len = (range.end - range.start).to_string();
        assert_eq!(resp.headers()["content-length"].to_str().unwrap(), len);
        let body = resp.bytes().await.unwrap();
        assert_eq!(
            body[..],
            data[range.start as usize..range.end as usize],
            "{header}"
        );
    }
    for header in [
        format!("bytes={size}-"),
        "bytes=-0".to_owned(),
        format!("bytes={}-{}", size + 5, size + 9),
    ] {
        let resp = get(Some(&header)).await;
        assert_eq!(resp.status().as_u16(), 416, "{header}");
        assert_eq!(
            resp.headers()["content-range"].to_str().unwrap(),
            format!("bytes */{size}")
        );
        let (_, body) = json(resp).await;
        error_message(416, &body);
    }
    // If-Range with another validator: the whole file; with ours: the range.
    let etag = format!("\"{}\"", sha256(&data).to_hex());
    let resp = raw(reqwest::Method::GET, sent.file_url.clone())
        .header("range", "bytes=0-9")
        .header("if-range", "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let resp = raw(reqwest::Method::GET, sent.file_url.clone())
        .header("range", "bytes=0-9")
        .header("if-range", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 206);
    let resp = raw(reqwest::Method::GET, sent.file_url.clone())
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 304);
    // The client's streamed range.
    let content = client.content(&sent.id, Some(500..1500)).await.unwrap();
    assert_eq!(
        (content.range.clone(), content.file_size),
        (500..1500, size)
    );
    let got: Vec<bytes::Bytes> = content.body.try_collect().await.unwrap();
    assert_eq!(got.concat(), data[500..1500]);
    let err = client
        .content(&sent.id, Some(size..size + 1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Remote { status: 416, .. }), "{err}");
}

case!(spoofed_and_active_content_is_refused_and_nothing_is_kept);
async fn spoofed_and_active_content_is_refused_and_nothing_is_kept() {
    let server = serve(ServerConfig::default()).await;
    let pdf = common::real_pdf("not an image");
    let html = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"
        .to_vec();
    let svg =
        br#"<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>"#
            .to_vec();
    let cases: Vec<(Vec<u8>, Option<&str>, u16, &str)> = vec![
        (
            pdf.clone(),
            Some("image/png"),
            400,
            "the content is application/pdf but the declared file type is image/png",
        ),
        (
            sample_jpeg(),
            Some("application/pdf"),
            400,
            "the content is image/jpeg",
        ),
        (
            html.clone(),
            Some("text/plain"),
            400,
            "the content is text/html",
        ),
        (
            html.clone(),
            Some("text/html"),
            415,
            "text/html files can carry scripts",
        ),
        (html, None, 415, "text/html files can carry scripts"),
        (
            svg,
            Some("image/svg+xml"),
            415,
            "image/svg+xml files can carry scripts",
        ),
    ];
    for (data, ty, status, text) in cases {
        let (got, body) = post_form(&server, vec![("file", Some("f"), ty, data)]).await;
        assert_eq!(got, status, "{ty:?}: {body}");
        let m = error_message(status, &body);
        assert!(m.contains(text), "{ty:?}: {m}");
    }
    let page = server.client(TOKEN).list(None, 100, None).await.unwrap();
    assert!(page.data.is_empty(), "nothing was stored");
}

case!(another_owner_or_conversation_sees_nothing);
async fn another_owner_or_conversation_sees_nothing() {
    let server = serve(ServerConfig::default()).await;
    let mine = server.client(TOKEN);
    let theirs = server.client("someone-else");
    let sent = mine
        .upload(
            std::io::Cursor::new(sample_png()),
            ChatUpload::new("p.png").with_conversation("c1"),
        )
        .await
        .unwrap();
    let not_found = |r: Result<_, Error>| matches!(r, Err(Error::Remote { status: 404, .. }));
    assert!(not_found(theirs.get(&sent.id).await.map(drop)));
    assert!(not_found(theirs.rename(&sent.id, "x.png").await.map(drop)));
    assert!(not_found(theirs.delete(&sent.id).await));
    assert!(not_found(theirs.content(&sent.id, None).await.map(drop)));
    assert!(theirs.list(None, 100, None).await.unwrap().data.is_empty());
    // Missing and forbidden answer alike.
    let missing = "018bcfe5-6800-7fff-bfff-ffffffffffff";
    let a = json(
        raw(reqwest::Method::GET, server.url(&format!("/{missing}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let b = json(
        reqwest::Client::new()
            .get(server.url(&format!("/{}", sent.id)))
            .header("authorization", "Bearer someone-else")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((a.0, b.0), (404, 404));
    assert_eq!(
        a.1["error"]["message"]
            .as_str()
            .unwrap()
            .replace(missing, "ID"),
        b.1["error"]["message"]
            .as_str()
            .unwrap()
            .replace(&sent.id, "ID")
    );
    // Another conversation named in the request: not found either.
    let other = json(
        raw(
            reqwest::Method::GET,
            server.url(&format!("/{}?conversation_id=c2", sent.id)),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(other.0, 404);
    let same = json(
        raw(
            reqwest::Method::GET,
            server.url(&format!("/{}?conversation_id=c1", sent.id)),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(same.0, 200);
    assert!(mine.get(&sent.id).await.is_ok(), "the owner still sees it");
}

case!(configured_credentials_need_only_the_bearer_token);
async fn configured_credentials_need_only_the_bearer_token() {
    let server = serve(ServerConfig::default().with_credentials(TOKEN, "affiliate-1")).await;
    let (status, body) = json(
        reqwest::Client::new()
            .get(server.url(""))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        error_message(401, &body),
        "missing or wrong credentials: send Authorization: Bearer <token>"
    );
    let wrong = server.client("wrong");
    assert!(matches!(
        wrong.list(None, 10, None).await,
        Err(Error::Remote { status: 401, .. })
    ));
    // No X-Affiliate-Id needed here (seed 003 has bearer tokens only).
    assert!(server.client(TOKEN).list(None, 10, None).await.is_ok());
}

case!(malformed_uploads_answer_4xx_naming_the_problem);
async fn malformed_uploads_answer_4xx_naming_the_problem() {
    let max = 1 << 20;
    let server =
        serve(ServerConfig::default().with_chat_policy(Policy::chat().with_max_size(max))).await;
    // Not multipart at all.
    let (status, body) = json(
        raw(reqwest::Method::POST, server.url(""))
            .header("content-type", "application/json")
            .body(r#"{"file": "x"}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        error_message(400, &body).contains("multipart/form-data"),
        "{body}"
    );
    // No file part; two file parts; a file part without a name; an over-long id field.
    let png = sample_png();
    let cases: Vec<(Vec<FormPart<'_>>, &str)> = vec![
        (
            vec![("conversation_id", None, None, b"c1".to_vec())],
            "file is missing",
        ),
        (
            vec![
                ("file", Some("a.png"), None, png.clone()),
                ("file", Some("b.png"), None, png.clone()),
            ],
            "file appears twice",
        ),
        (
            vec![("file", None, None, png.clone())],
            "file has no filename",
        ),
        (
            vec![
                ("conversation_id", None, None, vec![b'c'; 300]),
                ("file", Some("a.png"), None, png.clone()),
            ],
            "conversation_id is over the 255-byte limit",
        ),
        (
            vec![("file", Some("../a.png"), None, png)],
            "file name rejected",
        ),
        (
            vec![("file", Some("empty.txt"), Some("text/plain"), Vec::new())],
            "file is empty",
        ),
    ];
    for (parts, text) in cases {
        let (status, body) = post_form(&server, parts).await;
        assert_eq!(status, 400, "{text}: {body}");
        let m = error_message(400, &body);
        assert!(m.contains(text), "wanted {text:?} in {m:?}");
    }
    // Over the limit: 413, as soon as the limit is passed, whether or not the length was announced.
    let big = common::noise(max as usize + 1, 3);
    let (status, body) =
        post_form(&server, vec![("file", Some("big.bin"), None, big.clone())]).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        error_message(413, &body).contains("File size exceeds the 1MB limit"),
        "{body}"
    );
    let client = server.client(TOKEN);
    let err = client
        .upload(std::io::Cursor::new(big), ChatUpload::new("big.bin"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Remote { status: 413, .. }), "{err}");
    // A part type that is no MIME type (sent by hand: reqwest refuses to write one).
    let resp = raw(reqwest::Method::POST, server.url(""))
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .body(
            "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\
               Content-Type: not a type\r\n\r\nhello\r\n--XyZ--\r\n",
        )
        .send()
        .await
        .unwrap();
    let (status, body) = json(resp).await;
    assert_eq!(status, 400, "{body}");
    assert!(error_message(400, &body).contains("not a type"), "{body}");
    // A body cut off mid-file.
    let resp = raw(reqwest::Method::POST, server.url(""))
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .body("--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nhello")
        .send()
        .await
        .unwrap();
    let (status, body) = json(resp).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        client.list(None, 100, None).await.unwrap().data.is_empty(),
        "nothing kept"
    );
    // Unknown methods get JSON too.
    let (status, body) = json(
        raw(reqwest::Method::PATCH, server.url(""))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 405);
    error_message(405, &body);
}
