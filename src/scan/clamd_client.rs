//! [`ClamdScanner`]: `zINSTREAM` to a `clamd` over TCP or a Unix socket, the whole scan under
//! one deadline, the stream capped at clamd's `StreamMaxLength`.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::clamd::{self, END_OF_STREAM, MAX_REPLY, Reply};
use super::{ScanStream, Scanner, Verdict};
use crate::error::{Error, Result};

/// How long a whole scan (connect, send the file, the verdict) or command may take by
/// default: 20 s, under a chunked upload's 30 s commit lease
/// ([`COMMIT_LEASE`](crate::upload::COMMIT_LEASE)). A clamd that takes longer, however it
/// trickles, is unavailable (503), not a verdict.
pub const DEFAULT_SCAN_TIMEOUT: Duration = Duration::from_secs(20);

/// The longest stream sent by default: 25 MiB, clamd's own default `StreamMaxLength`
/// (ClamAV 1.4's `clamconf`: 26214400). Set it to the `StreamMaxLength` of the clamd in use
/// ([`ClamdScanner::with_stream_max`]): a longer file is refused before it is sent
/// ([`Error::ScanTooLarge`]) instead of being cut off by clamd. clamd's `MaxFileSize` and
/// `MaxScanSize` must be at least as large, or clamd answers `OK` for what lies past them
/// without scanning it; `AlertExceedsMax yes` makes it answer `FOUND` instead.
pub const DEFAULT_STREAM_MAX: u64 = 25 * 1024 * 1024;

/// Where clamd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamdAddress {
    /// `host:port`.
    Tcp(String),
    /// A Unix socket's path.
    Unix(PathBuf),
}

/// A `clamd` client.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use attachments::scan::{ClamdAddress, ClamdScanner};
///
/// let tcp = ClamdScanner::parse("clamd://127.0.0.1:3310")?;
/// assert_eq!(tcp.address(), &ClamdAddress::Tcp("127.0.0.1:3310".into()));
/// let unix = ClamdScanner::parse("clamd:unix:/run/clamav/clamd.ctl")?
///     .with_timeout(Duration::from_secs(5))
///     .with_stream_max(100 * 1024 * 1024);
/// assert_eq!(unix.address(), &ClamdAddress::Unix("/run/clamav/clamd.ctl".into()));
/// assert!(ClamdScanner::parse("http://127.0.0.1:3310").is_err());
/// # Ok::<(), attachments::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClamdScanner {
    address: ClamdAddress,
    timeout: Duration,
    stream_max: u64,
}

trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

impl ClamdScanner {
    /// A client of the clamd at `address`, with [`DEFAULT_SCAN_TIMEOUT`] and
    /// [`DEFAULT_STREAM_MAX`].
    pub fn new(address: ClamdAddress) -> Self {
        ClamdScanner {
            address,
            timeout: DEFAULT_SCAN_TIMEOUT,
            stream_max: DEFAULT_STREAM_MAX,
        }
    }

    /// Reads `clamd://HOST:PORT` or `clamd:unix:PATH`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidField`] for anything else.
    pub fn parse(spec: &str) -> Result<Self> {
        let address = if let Some(path) = spec.strip_prefix("clamd:unix:") {
            (!path.is_empty()).then(|| ClamdAddress::Unix(PathBuf::from(path)))
        } else if let Some(host) = spec.strip_prefix("clamd://") {
            let host = host.trim_end_matches('/');
            (host
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()))
            .then(|| ClamdAddress::Tcp(host.to_owned()))
        } else {
            None
        };
        address
            .map(ClamdScanner::new)
            .ok_or_else(|| Error::InvalidField {
                field: "scanner".into(),
                problem: format!(
                    "{spec:?} is not a clamd address: use clamd://HOST:PORT or clamd:unix:PATH"
                ),
            })
    }

    /// Sets how long a whole scan or command may take (default [`DEFAULT_SCAN_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the longest stream sent (default [`DEFAULT_STREAM_MAX`]): clamd's
    /// `StreamMaxLength`.
    pub fn with_stream_max(mut self, bytes: u64) -> Self {
        self.stream_max = bytes;
        self
    }

    /// Where clamd listens.
    pub fn address(&self) -> &ClamdAddress {
        &self.address
    }

    /// Asks clamd whether it is alive.
    ///
    /// # Errors
    ///
    /// [`Error::ScanUnavailable`] when it cannot be reached, does not answer in time, or
    /// answers something else than `PONG`.
    pub async fn ping(&self) -> Result<()> {
        match self.command(clamd::PING).await? {
            Reply::Pong => Ok(()),
            other => Err(self.unavailable(format!("it answered {other:?} to PING"))),
        }
    }

    /// clamd's version line (`ClamAV 1.4.6/...`).
    ///
    /// # Errors
    ///
    /// As [`ClamdScanner::ping`].
    pub async fn version(&self) -> Result<String> {
        match self.command(clamd::VERSION).await? {
            Reply::Other(line) => Ok(line),
            other => Err(self.unavailable(format!("it answered {other:?} to VERSION"))),
        }
    }

    async fn command(&self, command: &[u8]) -> Result<Reply> {
        let deadline = Instant::now() + self.timeout;
        let mut conn = self.connect(deadline).await?;
        self.step("sending a command", deadline, conn.write_all(command))
            .await?;
        read_reply(&mut conn, self, deadline).await
    }

    async fn connect(&self, deadline: Instant) -> Result<Box<dyn Connection>> {
        let conn: Box<dyn Connection> = match &self.address {
            ClamdAddress::Tcp(addr) => {
                let stream = self
                    .step(
                        "connecting",
                        deadline,
                        tokio::net::TcpStream::connect(addr.as_str()),
                    )
                    .await?;
                let _ = stream.set_nodelay(true);
                Box::new(stream)
            }
            #[cfg(unix)]
            ClamdAddress::Unix(path) => Box::new(
                self.step(
                    "connecting",
                    deadline,
                    tokio::net::UnixStream::connect(path),
                )
                .await?,
            ),
            #[cfg(not(unix))]
            ClamdAddress::Unix(_) => {
                return Err(self.unavailable("Unix sockets are not supported here".into()));
            }
        };
        Ok(conn)
    }

    /// Runs one IO step, to be done by `deadline` (the whole scan's); its failure makes
    /// the scanner unavailable.
    async fn step<T>(
        &self,
        what: &str,
        deadline: Instant,
        io: impl std::future::Future<Output = std::io::Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout_at(deadline, io).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.unavailable(format!("{what}: {e}"))),
            Err(_) => Err(self.unavailable(format!(
                "{what}: the scan was not done within {} s",
                self.timeout.as_secs_f64()
            ))),
        }
    }

    fn unavailable(&self, problem: String) -> Error {
        let at = match &self.address {
            ClamdAddress::Tcp(a) => a.clone(),
            ClamdAddress::Unix(p) => p.display().to_string(),
        };
        Error::ScanUnavailable {
            problem: format!("clamd at {at}: {problem}"),
        }
    }
}

/// Reads one reply of at most [`MAX_REPLY`] bytes, up to its NUL, all of it by
/// `deadline` (a reply trickled a byte at a time does not restart the clock).
async fn read_reply(
    conn: &mut Box<dyn Connection>,
    scanner: &ClamdScanner,
    deadline: Instant,
) -> Result<Reply> {
    let read = async {
        let mut reply = Vec::with_capacity(64);
        let mut buf = [0u8; 512];
        loop {
            let n = conn.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
            if reply.contains(&0) || reply.len() > MAX_REPLY {
                break;
            }
        }
        Ok::<_, std::io::Error>(reply)
    };
    let reply = scanner.step("reading the reply", deadline, read).await?;
    clamd::parse_reply(&reply).map_err(|e| scanner.unavailable(e.to_string()))
}

#[async_trait]
impl Scanner for ClamdScanner {
    fn max_size(&self) -> Option<u64> {
        Some(self.stream_max)
    }
    async fn open(&self, size: u64) -> Result<Box<dyn ScanStream>> {
        if size > self.stream_max {
            return Err(Error::ScanTooLarge {
                size,
                limit: self.stream_max,
            });
        }
        let deadline = Instant::now() + self.timeout;
        let mut conn = self.connect(deadline).await?;
        self.step(
            "starting INSTREAM",
            deadline,
            conn.write_all(clamd::INSTREAM),
        )
        .await?;
        Ok(Box::new(ClamdStream {
            conn,
            scanner: self.clone(),
            sent: 0,
            deadline,
        }))
    }
}

struct ClamdStream {
    conn: Box<dyn Connection>,
    scanner: ClamdScanner,
    sent: u64,
    /// When the whole scan must be done.
    deadline: Instant,
}

impl ClamdStream {
    /// A write failed: clamd may have closed the stream with a reply saying why (its size
    /// limit); that reply is the error, else the write's.
    async fn after_failed_write(&mut self, failed: Error) -> Error {
        let quick = (Instant::now() + Duration::from_secs(1)).min(self.deadline);
        match read_reply(&mut self.conn, &self.scanner, quick).await {
            Ok(Reply::SizeLimit) => Error::ScanTooLarge {
                size: self.sent,
                limit: self.scanner.stream_max,
            },
            _ => failed,
        }
    }
}

#[async_trait]
impl ScanStream for ClamdStream {
    async fn feed(&mut self, bytes: &[u8]) -> Result<()> {
        let total = self.sent + bytes.len() as u64;
        if total > self.scanner.stream_max {
            return Err(Error::ScanTooLarge {
                size: total,
                limit: self.scanner.stream_max,
            });
        }
        for (header, piece) in clamd::frames(bytes) {
            let write = async {
                self.conn.write_all(&header).await?;
                self.conn.write_all(piece).await
            };
            if let Err(e) = self
                .scanner
                .step("sending the file", self.deadline, write)
                .await
            {
                return Err(self.after_failed_write(e).await);
            }
            self.sent += piece.len() as u64;
        }
        Ok(())
    }

    async fn verdict(mut self: Box<Self>) -> Result<Verdict> {
        let end = self.conn.write_all(&END_OF_STREAM);
        if let Err(e) = self
            .scanner
            .step("ending the stream", self.deadline, end)
            .await
        {
            return Err(self.after_failed_write(e).await);
        }
        match read_reply(&mut self.conn, &self.scanner, self.deadline).await? {
            Reply::Clean => Ok(Verdict::Clean),
            Reply::Found(signature) => Ok(Verdict::Infected { signature }),
            Reply::SizeLimit => Err(Error::ScanTooLarge {
                size: self.sent,
                limit: self.scanner.stream_max,
            }),
            Reply::Error(text) => Err(self
                .scanner
                .unavailable(format!("it could not scan: {text}"))),
            other => Err(self
                .scanner
                .unavailable(format!("it answered {other:?} to INSTREAM"))),
        }
    }
}
