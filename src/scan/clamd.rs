//! ClamAV's `clamd` protocol, IO-free: the commands, the `INSTREAM` framing and the reply
//! parser. The async client in [`super::ClamdScanner`] moves the bytes.
//!
//! Written here rather than taken from `clamav-client` (read at 2.0): its tokio functions
//! read the reply with `read_to_end`, unbounded, so an endpoint that keeps sending grows
//! the server's memory without limit; a write failing when clamd closes the stream at its
//! `StreamMaxLength` is returned as the IO error, and the reply saying why is lost; its
//! streams take `Vec<u8>` items, a copy of each `Bytes` piece; and it has no timeouts. The
//! protocol is three commands; the parser here is fuzzed (`fuzz/fuzz_targets/clamd_reply.rs`)
//! and property-tested (`tests/scan.rs`).
//!
//! The protocol (clamd(8)): a command is `z<NAME>\0`; `zINSTREAM\0` is followed by chunks,
//! each a 4-byte big-endian length and that many bytes, and a zero length ends the stream.
//! Every reply is one NUL-terminated line:
//!
//! | reply | meaning |
//! | --- | --- |
//! | `stream: OK` | clean |
//! | `stream: <signature> FOUND` | infected |
//! | `INSTREAM size limit exceeded. ERROR` | the stream passed clamd's `StreamMaxLength` |
//! | `<anything> ERROR` | clamd could not scan |
//! | `PONG` | the answer to `zPING` |
//!
//! # Examples
//!
//! ```
//! use attachments::scan::clamd::{Reply, chunk_header, parse_reply, END_OF_STREAM};
//!
//! assert_eq!(chunk_header(5), [0, 0, 0, 5]);
//! assert_eq!(END_OF_STREAM, [0, 0, 0, 0]);
//! assert_eq!(parse_reply(b"stream: OK\0"), Ok(Reply::Clean));
//! assert_eq!(
//!     parse_reply(b"stream: Attachments.Test.Split-1 FOUND\0"),
//!     Ok(Reply::Found("Attachments.Test.Split-1".into()))
//! );
//! assert!(matches!(parse_reply(b"INSTREAM size limit exceeded. ERROR\0"), Ok(Reply::SizeLimit)));
//! ```

use std::fmt;

/// Asks clamd to scan the stream that follows.
pub const INSTREAM: &[u8] = b"zINSTREAM\0";

/// Asks clamd whether it is alive (`PONG`).
pub const PING: &[u8] = b"zPING\0";

/// Asks clamd for its version and its database's.
pub const VERSION: &[u8] = b"zVERSION\0";

/// The zero-length chunk that ends an `INSTREAM`.
pub const END_OF_STREAM: [u8; 4] = [0; 4];

/// Longest reply read: 4 KiB (clamd's are one short line).
pub const MAX_REPLY: usize = 4096;

/// Largest chunk sent in one frame: 256 KiB (clamd reads any size up to its
/// `StreamMaxLength`; smaller frames keep its buffers small).
pub const MAX_FRAME: usize = 256 * 1024;

/// The 4-byte length that precedes a chunk of `len` bytes.
pub fn chunk_header(len: u32) -> [u8; 4] {
    len.to_be_bytes()
}

/// What clamd answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `stream: OK`.
    Clean,
    /// `stream: <signature> FOUND`.
    Found(String),
    /// The stream passed clamd's `StreamMaxLength`.
    SizeLimit,
    /// `... ERROR`: clamd could not scan; its text.
    Error(String),
    /// `PONG`.
    Pong,
    /// Any other line (the answer to `zVERSION`, say).
    Other(String),
}

/// Why a reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// No NUL terminator (clamd closed the connection mid-reply, or sent more than
    /// [`MAX_REPLY`] bytes).
    Unterminated {
        /// The bytes received.
        len: usize,
    },
    /// Bytes after the terminator, or a NUL or control character inside the line.
    Malformed(String),
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::Unterminated { len } => write!(
                f,
                "clamd's reply ended after {len} bytes without its NUL terminator"
            ),
            ReplyError::Malformed(why) => write!(f, "clamd's reply is malformed: {why}"),
        }
    }
}

impl std::error::Error for ReplyError {}

/// Reads one reply: the bytes up to and including its NUL (a trailing newline, which
/// clamd sends to `n`-prefixed commands, is also taken).
///
/// # Errors
///
/// [`ReplyError`] for a reply without its terminator, with bytes after it, or with control
/// characters inside; a reply of more than [`MAX_REPLY`] bytes is unterminated.
pub fn parse_reply(reply: &[u8]) -> Result<Reply, ReplyError> {
    let Some(end) = reply.iter().position(|&b| b == 0 || b == b'\n') else {
        return Err(ReplyError::Unterminated { len: reply.len() });
    };
    if end + 1 != reply.len() || end >= MAX_REPLY {
        return Err(ReplyError::Malformed(format!(
            "{} bytes follow the end of its line",
            reply.len() - end - 1
        )));
    }
    let line = &reply[..end];
    if let Some(c) = line.iter().find(|&&c| c < 0x20 && c != b'\t') {
        return Err(ReplyError::Malformed(format!("it holds byte 0x{c:02x}")));
    }
    let line = String::from_utf8_lossy(line);
    let line = line.trim_end();
    if line == "PONG" {
        return Ok(Reply::Pong);
    }
    if line.ends_with("size limit exceeded. ERROR") {
        return Ok(Reply::SizeLimit);
    }
    if let Some(text) = line.strip_suffix(" ERROR") {
        return Ok(Reply::Error(text.to_owned()));
    }
    // `stream: ` for INSTREAM; clamd names a file scan by its path, which ends in `: `.
    let verdict = line
        .strip_prefix("stream: ")
        .or_else(|| line.rsplit_once(": ").map(|(_, v)| v));
    match verdict {
        Some("OK") => Ok(Reply::Clean),
        Some(v) => match v.strip_suffix(" FOUND") {
            Some(signature) if !signature.is_empty() => Ok(Reply::Found(signature.to_owned())),
            _ => Ok(Reply::Other(line.to_owned())),
        },
        None => Ok(Reply::Other(line.to_owned())),
    }
}

/// The frames that carry `data` to clamd: `(header, slice)` pairs of at most
/// [`MAX_FRAME`] bytes each, in order (none for empty data).
pub fn frames(data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    data.chunks(MAX_FRAME)
        .map(|piece| (chunk_header(piece.len() as u32), piece))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read() {
        assert_eq!(parse_reply(b"stream: OK\0"), Ok(Reply::Clean));
        assert_eq!(parse_reply(b"stream: OK\n"), Ok(Reply::Clean));
        assert_eq!(parse_reply(b"PONG\0"), Ok(Reply::Pong));
        assert_eq!(
            parse_reply(b"stream: Win.Test.EICAR_HDB-1 FOUND\0"),
            Ok(Reply::Found("Win.Test.EICAR_HDB-1".into()))
        );
        assert_eq!(
            parse_reply(b"INSTREAM size limit exceeded. ERROR\0"),
            Ok(Reply::SizeLimit)
        );
        assert_eq!(
            parse_reply(b"Can't allocate memory ERROR\0"),
            Ok(Reply::Error("Can't allocate memory".into()))
        );
        assert!(matches!(
            parse_reply(b"ClamAV 1.4.6/27000/Mon Nov 30 2026\0"),
            Ok(Reply::Other(_))
        ));
        assert_eq!(
            parse_reply(b"stream: FOUND\0"),
            Ok(Reply::Other("stream: FOUND".into()))
        );
        assert!(parse_reply(b"stream: OK").is_err());
        assert!(parse_reply(b"stream: OK\0junk").is_err());
        assert!(parse_reply(b"stream:\x01 OK\0").is_err());
        assert!(parse_reply(&[b'a'; MAX_REPLY + 10]).is_err());
    }

    #[test]
    fn frames_cover_the_data_in_order() {
        let data = vec![7u8; MAX_FRAME * 2 + 3];
        let frames: Vec<_> = frames(&data).collect();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[2].0, chunk_header(3));
        let total: usize = frames.iter().map(|(_, p)| p.len()).sum();
        assert_eq!(total, data.len());
        assert_eq!(super::frames(&[]).count(), 0);
    }
}
