//! Ranged download, IO-free: the server's reading of `from` / `to` and its response bodies
//! ([`range`]), and the client's [`RangePlan`] and verified, out-of-order [`Reassembler`]
//! ([`reassemble`]).
//!
//! `to` is inclusive on the server (as in HTTP's `Range: bytes=from-to`; SPEC.md). The
//! client does not depend on either reading: it asks `to` = the exclusive end of each range,
//! which an inclusive server answers with one byte more (checked against the next range)
//! and an exclusive one with exactly the range, places every piece at its `from`, and
//! trusts the number of bytes that came back.

pub mod range;
pub mod reassemble;

pub use range::{RangeQuery, write_connectivity_download, write_demand_download};
pub use reassemble::{DEFAULT_RANGE_SIZE, Placed, RangePlan, Reassembler, Verified};
