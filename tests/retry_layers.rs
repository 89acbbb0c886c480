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
