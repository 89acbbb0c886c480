//! Arbitrary requests to the sandbox server's routes, in-process (the axum Router as a
//! tower Service, memory store, rate limit on): never a panic and never a 5xx; every
//! refusal carries an error message in its API's shape.
//!
//! The same input also drives a `RateLimiter` as (key, milliseconds) steps: a client never
//! gets more than its burst plus the refill, and a refusal's wait always suffices.
//!
//! Input layout: byte 0 picks the route and method, byte 1 the query (downloads) or, for
//! the chat resource, which stored attachment to name; the rest is the body (for the chat
//! `/content` route, the `Range` header too). One sandbox lives across runs, so uploads
//! and sessions accumulate as on a long-running server; the ids of chat uploads are kept
//! so later inputs can reach real attachments.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use attachments::server::{Sandbox, ServerConfig};
use attachments::store::MemoryStore;
use axum::body::Body;
use axum::http::{Method, Request};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const CONV: &str = "/messaging/properties/7/conversations/c1";

fn sandbox() -> &'static (tokio::runtime::Runtime, Sandbox) {
    static CELL: OnceLock<(tokio::runtime::Runtime, Sandbox)> = OnceLock::new();
    CELL.get_or_init(|| {
        // With timers, as every server runtime has: request bodies run under the idle
        // timeout.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let sandbox = Sandbox::new(
            Arc::new(MemoryStore::new()),
            ServerConfig::default().with_rate(1_000_000),
        );
        (rt, sandbox)
    })
}

/// Ids of attachments chat uploads created (the last 16).
static CHAT_IDS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A stored chat attachment's id when byte `q` asks for one, else an id from the body.
fn chat_id(q: u8, body: &[u8]) -> String {
    let ids = CHAT_IDS.lock().unwrap();
    if q % 2 == 1 && !ids.is_empty() {
        ids[usize::from(q / 2) % ids.len()].clone()
    } else {
        id(body)
    }
}

fuzz_target!(|data: &[u8]| {
    let (Some(&pick), Some(&q)) = (data.first(), data.get(1)) else {
        return;
    };
    rate_limiter(pick, &data[2..]);
    let body = data[2..].to_vec();
    let queries = [
        "",
        "?from=0",
        "?from=1&to=3",
        "?from=9999999",
        "?to=1",
        "?from=x",
        "?from=0&from=1",
    ];
    let query = queries[usize::from(q) % queries.len()];
    let mut content_type = None;
    let mut range = None;
    let (method, path) = match pick % 19 {
        0 => (Method::POST, format!("{CONV}/attachments")),
        1 => (Method::POST, format!("{CONV}/attachment_chunks")),
        2 => (Method::POST, CONV.to_owned()),
        3 => (
            Method::GET,
            format!("{CONV}/attachments/{}{query}", id(&body)),
        ),
        4 => (
            Method::GET,
            format!("{CONV}/attachments/{}/file_info", id(&body)),
        ),
        5 => (Method::POST, "/3.1/messages/attachments/upload".to_owned()),
        6 => (
            Method::POST,
            "/3.1/messages/attachments/metadata".to_owned(),
        ),
        7 => (
            Method::POST,
            "/3.1/messages/attachments/download".to_owned(),
        ),
        8 => (Method::POST, "/3.1/messages/send".to_owned()),
        9 => (Method::GET, "/3.1/messages/latest".to_owned()),
        10 => (Method::POST, "/3.1/messages/latest/confirm".to_owned()),
        11 => (Method::POST, "/3.1/messages/conversations".to_owned()),
        12 => (
            Method::PUT,
            format!("/messaging/properties/{}/x", id(&body)),
        ),
        13 => {
            content_type = Some("multipart/form-data; boundary=B");
            (Method::POST, "/v1/attachments".to_owned())
        }
        14 => (
            Method::GET,
            format!(
                "/v1/attachments?{}",
                String::from_utf8_lossy(&body).replace(['#', ' '], "")
            ),
        ),
        15 => {
            range = Some(body.clone());
            (
                Method::GET,
                format!("/v1/attachments/{}/content", chat_id(q, &body)),
            )
        }
        16 => {
            content_type = Some("application/x-www-form-urlencoded");
            (
                Method::PUT,
                format!("/v1/attachments/{}", chat_id(q, &body)),
            )
        }
        17 => (
            Method::DELETE,
            format!("/v1/attachments/{}", chat_id(q, &body)),
        ),
        _ => (
            Method::GET,
            format!("/v1/attachments/{}", chat_id(q, &body)),
        ),
    };
    let chat = path.starts_with("/v1/");
    let (rt, sandbox) = sandbox();
    let mut request = Request::builder().method(method).uri(&path);
    if let Some(t) = content_type {
        request = request.header("content-type", t);
    }
    if let Some(r) = range.and_then(|r| axum::http::HeaderValue::from_bytes(&r).ok()) {
        request = request.header("range", r);
    }
    let Ok(request) = request.body(Body::from(body)) else {
        // The query made no valid URI: nothing to send.
        return;
    };
    let response = rt
        .block_on(sandbox.router().oneshot(request))
        .expect("infallible");
    let status = response.status();
    assert!(!status.is_server_error(), "{path} answered {status}");
    if chat && pick % 19 == 13 && status.is_success() {
        let bytes = rt
            .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
            .expect("a body");
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("an attachment");
        let mut ids = CHAT_IDS.lock().unwrap();
        ids.push(v["id"].as_str().expect("an id").to_owned());
        if ids.len() > 16 {
            ids.remove(0);
        }
        return;
    }
    if !status.is_success() {
        let bytes = rt
            .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
            .expect("a body");
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("an error body is JSON");
        let message = if chat {
            assert_eq!(v["error"]["status"], status.as_u16(), "{path}: {v}");
            v["error"]["message"].as_str()
        } else {
            v["errors"][0]["message"]
                .as_str()
                .or_else(|| v["errors"][0]["message"]["message"].as_str())
        };
        assert!(
            message.is_some_and(|m| !m.is_empty()),
            "{path} {status}: {v}"
        );
    }
});

/// A path segment from the body: URL-safe, so the request can be built.
fn id(body: &[u8]) -> String {
    let s: String = body
        .iter()
        .take(40)
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b == b'-' {
                b as char
            } else {
                'a'
            }
        })
        .collect();
    if s.is_empty() { "a".into() } else { s }
}

fn rate_limiter(per_minute: u8, steps: &[u8]) {
    use attachments::server::RateLimiter;
    use std::time::Duration;
    let per_minute = u32::from(per_minute).max(1);
    let mut limiter = RateLimiter::new(per_minute);
    let mut now = Duration::ZERO;
    let mut accepted = [0u64; 4];
    for step in steps.chunks_exact(2) {
        let key = usize::from(step[0] % 4);
        now += Duration::from_millis(u64::from(step[1]) * 40);
        let name = ["a", "b", "c", "d"][key];
        match limiter.check(name, now) {
            Ok(()) => accepted[key] += 1,
            Err(wait) => {
                assert!(wait >= Duration::from_secs(1));
                assert!(
                    limiter.clone().check(name, now + wait).is_ok(),
                    "the wait was too short"
                );
            }
        }
        let ceiling =
            u64::from(per_minute) + (now.as_secs_f64() * f64::from(per_minute) / 60.0) as u64;
        assert!(
            accepted[key] <= ceiling,
            "{} accepted, at most {ceiling}",
            accepted[key]
        );
    }
}
