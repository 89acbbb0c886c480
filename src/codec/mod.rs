//! Encodings of attachment bytes on the wire.

pub mod base64;
