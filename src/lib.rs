//! Streaming processing of file attachments for messaging APIs.
//!
//! `attachments` checks a file before it is sent, moves it as base64 inside JSON (in one
//! request or in chunks), and checks it again on the receiving side, for the Booking.com
//! Connectivity and Demand messaging APIs and for a chat platform's attachments resource.
//!
//! # Design
//!
//! The core does no IO and reads no clock. Every piece takes bytes as slices split
//! anywhere and gives the same answer however they were split:
//!
//! - [`sniff`]: the type from the first bytes ([`sniff::SNIFF_LEN`]) with `infer`.
//! - [`codec::base64`]: strict streaming base64 that writes straight into the caller's
//!   `Vec<u8>` / `BytesMut` (the request body being built), on `base64-simd`.
//! - [`digest`]: SHA-256 (`sha2`, SHA-NI where present).
//! - [`image`]: one incremental tokenizer per format (`image::png::Tokenizer`,
//!   `image::jpeg::Tokenizer`) whose events the validators, the metadata stripper and the
//!   dimension reader consume, so each format is walked in one place.
//! - [`Inspector`]: sniffing, size accounting, hashing and a [`Validator`] in one pass.
//! - [`Policy`] / [`Limits`]: what a deployment accepts, with one preset per API flavour;
//!   [`ImageLimits`] inside them, what an image may declare.
//! - [`upload`]: the chunked-upload state machine ([`upload::UploadSession`]), fed a
//!   neutral [`upload::ChunkHeader`] and the time, with a next-deadline query.
//!
//! The shells around it: `stream` (client body streams, the server's receiver, by role),
//! `server` (one file per API flavour), `client`, and `store` (memory, directory, S3; a
//! conformance suite behind the `conformance` feature). The protocol they implement is
//! described in the repository's `docs/protocol.md`.
//! - [`wire`]: serde types for each flavour's requests and responses.
//!
//! Memory is bounded by what the caller feeds: nothing holds a whole file.
//! Errors are one [`Error`] type whose kinds know their HTTP status and wire message.
//!
//! # Example: checking and encoding a file in one pass
//!
//! ```
//! use attachments::{codec::base64::Encoder, Inspector, Policy};
//!
//! // A complete 1 x 1 greyscale PNG.
//! let file: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\0\0\0\0\x3a\x7e\x9b\x55\0\0\0\nIDAT\x78\xda\x63\x68\0\0\0\x82\0\x81\xda\x45\x08\x3b\0\0\0\0IEND\xaeB`\x82";
//! let policy = Policy::demand();
//! let mut inspector = Inspector::new(&policy, "image/png", Some(file.len() as u64))?;
//! let mut body = Vec::from(&b"{\"file_content\":\""[..]);
//! let mut encoder = Encoder::new();
//! for slice in file.chunks(7) {
//!     inspector.update(slice)?;
//!     encoder.encode(slice, &mut body);
//! }
//! encoder.finish(&mut body);
//! body.extend_from_slice(b"\"}");
//! let verdict = inspector.finish()?;
//! assert_eq!(verdict.size, 67);
//! println!("{} {}", verdict.media_type, verdict.sha256);
//! # Ok::<(), attachments::Error>(())
//! ```

#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

#[cfg(feature = "client")]
pub mod client;
pub mod codec;
pub mod digest;
pub mod download;
pub mod error;
pub mod idempotency;
pub mod image;
mod inspect;
pub mod policy;
pub mod retry;
pub mod scan;
#[cfg(feature = "server")]
pub mod server;
pub mod sniff;
#[cfg(feature = "async")]
pub mod store;
#[cfg(feature = "async")]
pub mod stream;
pub mod upload;
pub mod wire;

pub use error::{Error, Result};
pub use inspect::{AcceptAll, ContentInfo, Inspection, Inspector, InspectorState, Validator};
pub use policy::{AllowedTypes, Depth, ImageLimits, Limits, Policy, UploadMode};
pub use sniff::MediaType;

/// The README's examples, compiled and run as doctests so they stay true (they use the
/// server and the client, hence the features).
#[cfg(all(doctest, feature = "server", feature = "client"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
