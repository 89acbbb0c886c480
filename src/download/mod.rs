//! Ranged download, IO-free: the server's reading of `from` / `to` and its response bodies
//! ([`range`]), and the client's [`RangePlan`] and verified, out-of-order [`Reassembler`]
//! ([`reassemble`]); with feature `async`, the [`Downloader`] that drives them over a
//! [`RangeSource`] with N requests in flight, retries and resume ([`fetch`]).
//!
//! `to` is inclusive on the server (as in HTTP's `Range: bytes=from-to`;
//! `docs/protocol.md`, *Download by range*). The client does not depend on either reading:
//! it asks `to` = the exclusive end of each range, which an inclusive server answers with
//! one byte more (checked against the next range) and an exclusive one with exactly the
//! range, places every piece at its `from`, and trusts the number of bytes that came back.
//!
//! The chat flavour serves raw bytes with HTTP `Range` requests instead ([`http_range`]).

#[cfg(feature = "async")]
pub mod fetch;
pub mod http_range;
pub mod range;
pub mod reassemble;

#[cfg(feature = "async")]
pub use fetch::{
    DownloadOptions, Downloader, RangeSource, StoreSource, checkpoint_from_prefix, download_to_file,
};

pub use range::{RangeQuery, write_connectivity_download, write_demand_download};
pub use reassemble::{Checkpoint, DEFAULT_RANGE_SIZE, Placed, RangePlan, Reassembler, Verified};
