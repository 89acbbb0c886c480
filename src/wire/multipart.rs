//! Bounds on the framing of a `multipart/form-data` body (RFC 7578, RFC 2046 §5.1), checked
//! as the body streams past, before a multipart parser buffers it.
//!
//! A streaming multipart parser must hold everything it has not yet framed: the preamble
//! until the first delimiter, a part's header block until its blank line. A client that
//! never sends the first delimiter, or sends a header block of megabytes, makes it hold
//! the whole body. [`FramingCheck`] watches the same bytes, finds the same delimiters the
//! parser does, and fails as soon as a preamble, a part's header block or the number of
//! parts passes its limit ([`FramingLimits`]), so the parser never holds more than those
//! limits plus one piece of the body.
//!
//! It does not parse: a body it lets through may still be malformed, which the parser
//! then reports. It reads no IO and keeps at most a delimiter's length of the body.
//!
//! # Examples
//!
//! ```
//! use attachments::wire::multipart::{FramingCheck, FramingError, FramingLimits};
//!
//! let mut check = FramingCheck::new("XyZ", FramingLimits::default()).unwrap();
//! let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XyZ--\r\n";
//! // In pieces of any size: delimiters split across pieces are found.
//! for piece in body.chunks(3) {
//!     check.feed(piece).unwrap();
//! }
//! assert_eq!(check.parts(), 1);
//!
//! // A body that never reaches its first delimiter fails once past the preamble limit.
//! let mut check = FramingCheck::new("XyZ", FramingLimits::default()).unwrap();
//! let err = check.feed(&vec![b'a'; 64 * 1024]).unwrap_err();
//! assert!(matches!(err, FramingError::Preamble { limit: 4096 }));
//! ```

use std::fmt;

/// Longest boundary RFC 2046 allows (§5.1.1): 70 characters.
pub const MAX_BOUNDARY: usize = 70;

/// The limits a [`FramingCheck`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramingLimits {
    /// Most bytes before the first delimiter (default 4 KiB; browsers and HTTP clients send
    /// none).
    pub max_preamble: usize,
    /// Most bytes of one part's delimiter line and header block, up to and including its
    /// blank line (default 8 KiB; a part's headers are a `Content-Disposition` and a
    /// `Content-Type`, a few hundred bytes).
    pub max_part_headers: usize,
    /// Most parts in one body (default 16).
    pub max_parts: usize,
}

/// Default of [`FramingLimits::max_preamble`].
pub const DEFAULT_MAX_PREAMBLE: usize = 4 * 1024;
/// Default of [`FramingLimits::max_part_headers`].
pub const DEFAULT_MAX_PART_HEADERS: usize = 8 * 1024;
/// Default of [`FramingLimits::max_parts`].
pub const DEFAULT_MAX_PARTS: usize = 16;

impl Default for FramingLimits {
    fn default() -> Self {
        FramingLimits {
            max_preamble: DEFAULT_MAX_PREAMBLE,
            max_part_headers: DEFAULT_MAX_PART_HEADERS,
            max_parts: DEFAULT_MAX_PARTS,
        }
    }
}

/// What a [`FramingCheck`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FramingError {
    /// The boundary is empty or longer than [`MAX_BOUNDARY`].
    Boundary {
        /// Its length, in bytes.
        len: usize,
    },
    /// More than `limit` bytes came before the first delimiter.
    Preamble {
        /// The limit, in bytes.
        limit: usize,
    },
    /// Part number `part` (from 1) has a delimiter line and header block longer than
    /// `limit` bytes.
    PartHeaders {
        /// The part, counted from 1.
        part: usize,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body has more than `limit` parts.
    Parts {
        /// The limit.
        limit: usize,
    },
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FramingError::Boundary { len } => write!(
                f,
                "the multipart boundary is {len} bytes; it must be 1 to {MAX_BOUNDARY}"
            ),
            FramingError::Preamble { limit } => write!(
                f,
                "no multipart delimiter in the first {limit} bytes of the body: start the body with `--` and the boundary"
            ),
            FramingError::PartHeaders { part, limit } => write!(
                f,
                "the headers of part {part} pass the {limit}-byte limit: send a part's headers (Content-Disposition, Content-Type) and a blank line"
            ),
            FramingError::Parts { limit } => write!(
                f,
                "the body has more than {limit} parts: send the file and its few fields only"
            ),
        }
    }
}

impl std::error::Error for FramingError {}

/// Where the check is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before the first delimiter (`--` boundary, anywhere).
    Preamble,
    /// Just after a delimiter: `--` closes the body, anything else opens a part.
    AfterDelimiter,
    /// The rest of the delimiter line, up to its CRLF.
    DelimiterLine,
    /// A part's header block, up to its blank line (CRLF CRLF).
    Headers,
    /// A part's content, up to the next delimiter (CRLF `--` boundary).
    Content,
    /// After the close delimiter: ignored (RFC 2046's epilogue).
    Epilogue,
}

/// Watches a multipart body's framing as it streams past ([module docs](self)).
///
/// It finds delimiters where a streaming parser does (the first `--boundary` anywhere,
/// later ones after a CRLF), so the limits hold for what the parser buffers.
#[derive(Debug, Clone)]
pub struct FramingCheck {
    limits: FramingLimits,
    /// `--` and the boundary (the first delimiter, which needs no CRLF before it).
    first: Vec<u8>,
    /// CRLF, `--` and the boundary.
    next: Vec<u8>,
    stage: Stage,
    /// Bytes of the current preamble or header block seen so far.
    seen: usize,
    parts: usize,
    /// The end of what was fed, at most one pattern long less one byte: a pattern split
    /// across two pieces is found in it and the next piece's start.
    tail: Vec<u8>,
}

impl FramingCheck {
    /// A check for a body framed by `boundary` (the `boundary` parameter of its
    /// `Content-Type`).
    ///
    /// # Errors
    ///
    /// [`FramingError::Boundary`] for an empty boundary or one over [`MAX_BOUNDARY`]
    /// bytes.
    pub fn new(boundary: &str, limits: FramingLimits) -> Result<Self, FramingError> {
        let len = boundary.len();
        if len == 0 || len > MAX_BOUNDARY {
            return Err(FramingError::Boundary { len });
        }
        let first = [b"--", boundary.as_bytes()].concat();
        let next = [b"\r\n", first.as_slice()].concat();
        Ok(FramingCheck {
            limits,
            first,
            next,
            stage: Stage::Preamble,
            seen: 0,
            parts: 0,
            tail: Vec::with_capacity(MAX_BOUNDARY + 4),
        })
    }

    /// The parts opened so far.
    pub fn parts(&self) -> usize {
        self.parts
    }

    /// Whether the close delimiter has been seen (what follows is ignored).
    pub fn is_closed(&self) -> bool {
        self.stage == Stage::Epilogue
    }

    /// Checks the next `piece` of the body.
    ///
    /// # Errors
    ///
    /// The first limit passed; the check then stays failed only in the sense that its
    /// caller must stop: feeding more is allowed but meaningless.
    pub fn feed(&mut self, mut piece: &[u8]) -> Result<(), FramingError> {
        while !piece.is_empty() {
            match self.stage {
                Stage::Epilogue => return Ok(()),
                Stage::AfterDelimiter => {
                    // Two bytes decide; the first may arrive alone.
                    let have = self.tail.len();
                    let take = (2 - have).min(piece.len());
                    self.tail.extend_from_slice(&piece[..take]);
                    if self.tail.len() < 2 {
                        return Ok(());
                    }
                    if self.tail == b"--" {
                        self.stage = Stage::Epilogue;
                        return Ok(());
                    }
                    // Not a close: these bytes belong to the delimiter line.
                    let line = std::mem::take(&mut self.tail);
                    piece = &piece[take..];
                    self.open_part()?;
                    self.stage = Stage::DelimiterLine;
                    self.seen = 0;
                    if let Some(end) = self.scan(&line, Pattern::Crlf)? {
                        // The line ended within the two bytes (a CR LF right after the
                        // delimiter): the header block starts after them.
                        debug_assert_eq!(end, line.len());
                        self.stage = Stage::Headers;
                    }
                }
                Stage::Preamble | Stage::DelimiterLine | Stage::Headers | Stage::Content => {
                    let pattern = match self.stage {
                        Stage::Preamble => Pattern::First,
                        Stage::DelimiterLine => Pattern::Crlf,
                        Stage::Headers => Pattern::CrlfCrlf,
                        _ => Pattern::Next,
                    };
                    match self.scan(piece, pattern)? {
                        None => return Ok(()),
                        Some(end) => {
                            piece = &piece[end..];
                            // The delimiter line and the header block count together.
                            if self.stage != Stage::DelimiterLine {
                                self.seen = 0;
                            }
                            self.stage = match self.stage {
                                Stage::DelimiterLine => Stage::Headers,
                                Stage::Headers => Stage::Content,
                                _ => Stage::AfterDelimiter,
                            };
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn open_part(&mut self) -> Result<(), FramingError> {
        if self.parts == self.limits.max_parts {
            return Err(FramingError::Parts {
                limit: self.limits.max_parts,
            });
        }
        self.parts += 1;
        Ok(())
    }

    /// Looks for `pattern` in the kept tail and `piece`. On a match, returns the index in
    /// `piece` just past it and clears the tail; else keeps the end of `piece` as the new
    /// tail. Counts the bytes against the stage's limit either way.
    fn scan(&mut self, piece: &[u8], pattern: Pattern) -> Result<Option<usize>, FramingError> {
        let needle: &[u8] = match pattern {
            Pattern::First => &self.first,
            Pattern::Next => &self.next,
            Pattern::Crlf => b"\r\n",
            Pattern::CrlfCrlf => b"\r\n\r\n",
        };
        let n = needle.len();
        // A match that starts in the tail ends within the piece's first n - 1 bytes.
        let found = if self.tail.is_empty() {
            memchr::memmem::find(piece, needle).map(|at| at + n)
        } else {
            // The tail and the head together: at most two needles long, on the stack
            // (this runs for every piece of an upload).
            let head = &piece[..piece.len().min(n - 1)];
            let mut buf = [0u8; 2 * (MAX_BOUNDARY + 4)];
            let joined = self.tail.len() + head.len();
            buf[..self.tail.len()].copy_from_slice(&self.tail);
            buf[self.tail.len()..joined].copy_from_slice(head);
            let window = &buf[..joined];
            match memchr::memmem::find(window, needle) {
                Some(at) => Some(at + n - self.tail.len()),
                None => memchr::memmem::find(piece, needle).map(|at| at + n),
            }
        };
        let used = found.unwrap_or(piece.len());
        self.seen = self.seen.saturating_add(used);
        let limit = match self.stage {
            Stage::Preamble => Some((
                self.limits.max_preamble.saturating_add(n),
                FramingError::Preamble {
                    limit: self.limits.max_preamble,
                },
            )),
            Stage::DelimiterLine | Stage::Headers => Some((
                self.limits.max_part_headers,
                FramingError::PartHeaders {
                    part: self.parts,
                    limit: self.limits.max_part_headers,
                },
            )),
            _ => None,
        };
        if let Some((most, err)) = limit
            && self.seen > most
        {
            return Err(err);
        }
        match found {
            Some(end) => {
                self.tail.clear();
                Ok(Some(end))
            }
            None => {
                // Keep the last n - 1 bytes of what was seen (tail and piece).
                let keep = n - 1;
                if piece.len() >= keep {
                    self.tail.clear();
                    self.tail.extend_from_slice(&piece[piece.len() - keep..]);
                } else {
                    self.tail.extend_from_slice(piece);
                    let extra = self.tail.len().saturating_sub(keep);
                    self.tail.drain(..extra);
                }
                Ok(None)
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Pattern {
    First,
    Next,
    Crlf,
    CrlfCrlf,
}
