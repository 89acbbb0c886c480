//! One layer retries (issue: a chat range was retried by `content()` inside the
//! downloader, which retried it again: up to 25 attempts for one range).
#![cfg(feature = "client")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use attachments::client::ChatClient;
use attachments::download::RangeSource;
use attachments::retry::RetryPolicy;
use axum::http::StatusCode;
use axum::routing::get;

/// A server whose `/content` is always busy (503, `Retry-After: 0`), counting requests.
async fn busy_server() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&hits);
    let router = axum::Router::new().route(
        "/v1/attachments/{id}/content",
        get(move || {
            let counted = Arc::clone(&counted);
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("retry-after", "0")],
                    r#"{"error":{"status":503,"message":"busy"}}"#,
                )
            }
        }),
    );
    (common::serve_local(router).await, hits)
}

#[tokio::test]
async fn a_range_for_the_downloader_is_sent_once_and_content_retries_alone() {
    let (url, hits) = busy_server().await;
    let policy = RetryPolicy::new(3).with_delays(
        std::time::Duration::from_millis(1),
        std::time::Duration::from_millis(2),
    );
    let client = ChatClient::new(&url)
        .unwrap()
        .with_token("t")
        .unwrap()
        .with_retry(policy);
    // The range source the Downloader drives: one request per fetch (the Downloader
    // retries).
    let err = client.ranges("some-id").fetch(0..10).await.unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(hits.swap(0, Ordering::SeqCst), 1);
    // content() on its own retries under the client's policy: 3 attempts.
    assert!(client.content("some-id", Some(0..10)).await.is_err());
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

/// A server that answers each path's first request `status` with `Retry-After: after`
/// (`date`: an HTTP-date two seconds ahead), then hands it to the sandbox behind it.
async fn refusing_once(status: u16, after: String) -> String {
    use attachments::server::{Sandbox, ServerConfig};
    use attachments::store::MemoryStore;

    let sandbox = Sandbox::new(Arc::new(MemoryStore::new()), ServerConfig::default());
    let seen = Arc::new(std::sync::Mutex::new(
        std::collections::HashSet::<String>::new(),
    ));
    let router = sandbox.router().layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let seen = Arc::clone(&seen);
            let after = match after.as_str() {
                "date" => httpdate::fmt_http_date(
                    std::time::SystemTime::now() + std::time::Duration::from_secs(2),
                ),
                seconds => seconds.to_owned(),
            };
            async move {
                let first = seen.lock().unwrap().insert(req.uri().path().to_owned());
                if first {
                    let status = StatusCode::from_u16(status).unwrap();
                    return axum::response::IntoResponse::into_response((
                        status,
                        [("retry-after", after)],
                        r#"{"error":{"status":0,"message":"later"}}"#,
                    ));
                }
                next.run(req).await
            }
        },
    ));
    common::serve_local(router).await
}

/// Every client waits what a 429 or 503 asks (`Retry-After`, seconds or an HTTP-date)
/// before its retry, within the policy's cap.
#[tokio::test]
async fn every_client_waits_the_retry_after_it_is_given() {
    use attachments::client::{ConnectivityClient, DemandClient, DemandConversation};
    use std::time::{Duration, Instant};

    // Seconds, or an HTTP-date two seconds ahead of each request (written when the
    // answer is: whole seconds, so at least one of them remains).
    for (status, date, least) in [
        (429, false, Duration::from_millis(1000)),
        (503, false, Duration::from_millis(1000)),
        (503, true, Duration::from_millis(900)),
    ] {
        let after = if date { "date" } else { "1" }.to_owned();
        let url = refusing_once(status, after.clone()).await;
        // Connectivity: a file_info of a missing attachment, answered 404 after the wait.
        let conn = ConnectivityClient::new(&url).unwrap();
        let started = Instant::now();
        let err = conn
            .file_info(1, "c", "00000000-0000-4000-8000-000000000000")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("404"), "{err}");
        assert!(
            started.elapsed() >= least,
            "Connectivity {status} {after}: {:?}",
            started.elapsed()
        );
        // Demand: metadata of a missing attachment.
        let demand = DemandClient::new(&url).unwrap();
        let to = DemandConversation {
            accommodation: 1,
            conversation: "c".into(),
            reservation: 1u64.into(),
        };
        let started = Instant::now();
        let err = demand
            .metadata(&to, "00000000-0000-4000-8000-000000000000")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("404"), "{err}");
        assert!(
            started.elapsed() >= least,
            "Demand {status} {after}: {:?}",
            started.elapsed()
        );
        // Chat: a missing attachment.
        let chat = ChatClient::new(&url).unwrap().with_token("t").unwrap();
        let started = Instant::now();
        let err = chat
            .get("00000000-0000-4000-8000-000000000000")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("404"), "{err}");
        assert!(
            started.elapsed() >= least,
            "Chat {status} {after}: {:?}",
            started.elapsed()
        );
    }
}
