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
        let tcp = Arc::new(tcp);
        let interim = Interim(Arc::clone(&tcp));
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                if req.version() == hyper::Version::HTTP_11 {
                    req.extensions_mut().insert(interim.clone());
                }
                let router = router.clone();
                async move {
                    let response = tower::ServiceExt::oneshot(router, req).await;
                    Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
                }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                // A client that closes its side as soon as it has sent a request (a
                // resumable upload's last bytes) has the request served all the same,
                // not dropped unread at the end of file.
                .half_close(true)
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
            let connection = builder.serve_connection(TokioIo::new(SharedTcp(tcp)), service);
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

/// An HTTP/1.1 connection's socket, as a request's handler sees it: to write an interim
/// (1xx) response before the final one, which hyper has no way to send. The IETF
/// resumable uploads announce their address so (`104 Upload Resumption Supported`).
///
/// Safe on HTTP/1.1 only, and only before the handler's response: hyper writes nothing
/// on the connection from the moment it reads a request's head until the handler
/// answers (the previous response is written whole before the next head is read).
#[derive(Clone)]
pub(super) struct Interim(Arc<tokio::net::TcpStream>);

impl Interim {
    /// Writes `head` (a whole 1xx status line and header fields) on the connection.
    pub(super) async fn send(&self, head: &[u8]) -> std::io::Result<()> {
        let mut rest = head;
        while !rest.is_empty() {
            self.0.writable().await?;
            match self.0.try_write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The socket of a connection, shared with its [`Interim`] handle: reads and writes go
/// through tokio's readiness calls, which take `&TcpStream`. Shut down by dropping (the
/// last handle closes it).
struct SharedTcp(Arc<tokio::net::TcpStream>);

impl tokio::io::AsyncRead for SharedTcp {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        loop {
            std::task::ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read_buf(buf) {
                Ok(_) => return std::task::Poll::Ready(Ok(())),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return std::task::Poll::Ready(Err(e)),
            }
        }
    }
}

impl tokio::io::AsyncWrite for SharedTcp {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        loop {
            std::task::ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                other => return std::task::Poll::Ready(other),
            }
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        loop {
            std::task::ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                other => return std::task::Poll::Ready(other),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
