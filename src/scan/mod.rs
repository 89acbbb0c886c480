//! Virus scanning: every upload is scanned before it becomes an attachment.
//!
//! - [`clamd`]: ClamAV's `clamd` protocol, IO-free (commands, `INSTREAM` framing, the
//!   reply parser).
//! - [`Scanner`] and [`ScanStream`] (feature `async`): the interface the upload receiver
//!   ([`UploadReceiver::with_scanner`](crate::stream::UploadReceiver::with_scanner)) feeds
//!   a file to, in order, one piece at a time, and asks for a [`Verdict`].
//! - [`ClamdScanner`] (feature `scan`): a `clamd` client over TCP or a Unix socket, with
//!   timeouts and a stream cap.
//!
//! Where the scan runs: a file uploaded in one request is scanned from the bytes the
//! request carried, before it is stored; a chunked upload and a streamed (chat) upload are
//! scanned at commit, by reading the staged file back from the store
//! ([`Store::read_staged`](crate::store::Store::read_staged)) from its first byte to its
//! last, so a signature across a chunk boundary is found, and any server process sharing
//! the store can scan the upload whichever processes received its chunks.

pub mod clamd;
#[cfg(feature = "scan")]
mod clamd_client;

#[cfg(feature = "scan")]
pub use clamd_client::{ClamdAddress, ClamdScanner, DEFAULT_SCAN_TIMEOUT, DEFAULT_STREAM_MAX};

/// What a scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing.
    Clean,
    /// A signature matched: its name (for the log; the client is told only that the file
    /// failed the scan).
    Infected {
        /// The signature's name, as the scanner gives it.
        signature: String,
    },
}

#[cfg(feature = "async")]
pub use shell::{ScanStream, Scanner};

#[cfg(feature = "async")]
mod shell {
    use async_trait::async_trait;

    use super::Verdict;
    use crate::error::Result;

    /// A virus scanner: opens one [`ScanStream`] per file.
    ///
    /// A scanner that cannot be reached or does not answer in time fails with
    /// [`Error::ScanUnavailable`](crate::Error::ScanUnavailable) (503: the upload is not
    /// committed, and can be sent again later); a file larger than the scanner takes
    /// fails with [`Error::ScanTooLarge`](crate::Error::ScanTooLarge).
    #[async_trait]
    pub trait Scanner: Send + Sync + std::fmt::Debug {
        /// Starts scanning a file of `size` bytes.
        async fn open(&self, size: u64) -> Result<Box<dyn ScanStream>>;

        /// The largest file this scanner takes, if it has a limit: a chunked upload of a
        /// larger file is refused at its `start`.
        fn max_size(&self) -> Option<u64> {
            None
        }
    }

    /// One file being scanned: its bytes fed in order, then its verdict.
    #[async_trait]
    pub trait ScanStream: Send {
        /// The next bytes of the file.
        async fn feed(&mut self, bytes: &[u8]) -> Result<()>;

        /// Ends the file and waits for the verdict.
        async fn verdict(self: Box<Self>) -> Result<Verdict>;
    }
}
