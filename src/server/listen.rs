//! [`serve`]: the accept loop `attachments serve` runs, with the connection-level limits
//! `axum::serve` does not expose: a header read timeout, a cap on open connections,
//! `TCP_NODELAY`, and HTTP/2 flow-control windows.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;

/// How long a client may take to send a request's headers by default: 30 s.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How many connections are open at once by default: 1,024.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// The HTTP/2 flow-control windows the server announces: 1 MiB a stream, 4 MiB a
/// connection, so a chunk-sized body crosses in one window rather than sixteen.
pub const HTTP2_STREAM_WINDOW: u32 = 1 << 20;

/// See [`HTTP2_STREAM_WINDOW`].
pub const HTTP2_CONNECTION_WINDOW: u32 = 4 << 20;

/// The connection-level limits of [`serve`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ListenOptions {
    /// How long a client may take to send a request's headers (HTTP/1.1); past it the
    /// connection is closed (default [`DEFAULT_HEADER_READ_TIMEOUT`]).
    pub header_read_timeout: Duration,
    /// How many connections are open at once (default [`DEFAULT_MAX_CONNECTIONS`]); one
    /// more is closed as soon as it is accepted.
    pub max_connections: usize,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl ListenOptions {
    /// Sets the header read timeout.
    pub fn with_header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Sets how many connections are open at once (at least 1).
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting and lets
/// the requests in flight finish (for at most [`SHUTDOWN_DRAIN`]): HTTP/1.1 and HTTP/2 (by
/// prior knowledge), each request carrying the peer's address as
/// `ConnectInfo<SocketAddr>` (the rate limit is keyed on it), under `options`.
///
/// # Errors
///
/// None: a failed accept (too many open files, say) is logged and the loop goes on.
///
/// # Examples
///
/// ```no_run
/// # async fn run() {
/// use std::sync::Arc;
/// use attachments::server::{ListenOptions, Sandbox, ServerConfig, serve};
/// use attachments::store::MemoryStore;
///
/// let sandbox = Sandbox::new(Arc::new(MemoryStore::new()), ServerConfig::default());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.unwrap();
/// serve(listener, sandbox.router(), ListenOptions::default(), std::future::pending()).await;
/// # }
/// ```
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    options: ListenOptions,
    shutdown: impl Future<Output = ()>,
) {
    let open = Arc::new(tokio::sync::Semaphore::new(options.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    // Out of descriptors, say: give the open connections a moment.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(place) = Arc::clone(&open).try_acquire_owned() else {
            tracing::debug!(%peer, "connection refused: too many open");
            drop(tcp);
            continue;
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let router = router.clone();
        let header_read_timeout = options.header_read_timeout;
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let router = router.clone();
                async move {
                    let response = tower::ServiceExt::oneshot(router, req).await;
                    Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
                }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .max_buf_size(HTTP1_MAX_BUF);
            builder
                .http2()
                .timer(TokioTimer::new())
                .initial_stream_window_size(HTTP2_STREAM_WINDOW)
                .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
                // A peer that stops answering pings (gone without a FIN) is let go; an
                // idle one that answers is bounded by the connection cap.
                .keep_alive_interval(Some(HTTP2_KEEP_ALIVE))
                .keep_alive_timeout(HTTP2_KEEP_ALIVE);
            let connection = builder.serve_connection(TokioIo::new(tcp), service);
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            drop(place);
        });
    }
    // Stop accepting; let requests in flight finish (idle connections close at once, HTTP/2
    // ones after a GOAWAY), for at most the drain time.
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(SHUTDOWN_DRAIN) => {
            tracing::warn!(seconds = SHUTDOWN_DRAIN.as_secs(), "connections still open after the drain time; stopping");
        }
    }
}

/// The largest read buffer of an HTTP/1.1 connection: 64 KiB. Hyper's default (about
/// 400 KiB) is reached while a large body is read and then kept for as long as the
/// connection stays open, idle or not: with 1,000 keep-alive connections, most of the
/// server's memory.
pub const HTTP1_MAX_BUF: usize = 64 * 1024;

/// How often [`serve`] pings an HTTP/2 peer, and how long it waits for the answer before
/// closing the connection: 30 s.
pub const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// How long [`serve`] waits, once told to shut down, for requests in flight to finish.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);
