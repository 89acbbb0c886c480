//! The PNG tokenizer: the one walk of a PNG's chunks, as events.
//!
//! [`Tokenizer::next`] takes any slice and consumes a prefix of it, returning at most one
//! [`Event`]; [`Tokenizer::feed`] runs it over a whole slice. It checks only what it needs
//! to walk the file (the signature) and reports everything else as it reads it: each
//! chunk's length and type, its data as slices of the input, its CRC (checked against the
//! bytes, or only read), the end after IEND, and any bytes after that. The rules of the
//! format (which chunk may come where, lengths, header fields) belong to the consumers.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, SizeLimit};
use crate::image::{MAX_SAVED_OFFSET, Progress};

/// The PNG signature.
pub const SIGNATURE: [u8; 8] = *b"\x89PNG\r\n\x1a\n";

/// The most bytes of a chunk's data [`Tokenizer::gather`] collects: larger requests are
/// cut to it. (The most a consumer of this crate asks for is the stripper's 65,535 bytes
/// of an eXIf chunk.)
pub const MAX_GATHER: usize = 65_535;

const MEDIA_TYPE: &str = "image/png";

/// Where the walk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum State {
    /// Reading the 8-byte signature.
    Signature,
    /// Reading a chunk's length and type (8 bytes).
    Header,
    /// Reading a chunk's data.
    Data,
    /// Reading a chunk's CRC (4 bytes).
    Crc,
    /// IEND's CRC read: [`Event::End`] is due.
    Iend,
    /// After IEND.
    End,
}

/// A chunk's length and type, as read (nothing about them is checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkHeader {
    /// The four type bytes (`IHDR`, `IDAT`...).
    pub chunk_type: [u8; 4],
    /// The length field: bytes of data.
    pub length: u32,
    /// Offset of the length field, the chunk's first byte.
    pub at: u64,
}

impl ChunkHeader {
    /// The type as text, for messages (bytes that are not UTF-8 replaced).
    pub fn name(&self) -> String {
        String::from_utf8_lossy(&self.chunk_type).into_owned()
    }
}

/// A chunk's CRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Crc {
    /// The stored CRC matches the chunk's type and data.
    Match(u32),
    /// The stored CRC does not match.
    Mismatch {
        /// The CRC in the file.
        stored: u32,
        /// The CRC of the chunk's type and data.
        computed: u32,
    },
    /// Read but not checked ([`Tokenizer::without_crc_check`]).
    Unchecked(u32),
}

impl Crc {
    /// The CRC as stored in the file.
    pub fn stored(&self) -> u32 {
        match *self {
            Crc::Match(crc) | Crc::Unchecked(crc) => crc,
            Crc::Mismatch { stored, .. } => stored,
        }
    }
}

/// What the tokenizer read; slices borrow the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// The 8-byte signature, as it should be.
    Signature,
    /// A chunk's length and type. Its data follows as [`Event::Data`] (or, for the part
    /// [`Tokenizer::gather`] collects, one [`Event::Gathered`]), then [`Event::ChunkEnd`].
    ChunkBegin(ChunkHeader),
    /// The next bytes of the chunk's data, in order.
    Data(&'a [u8]),
    /// The bytes [`Tokenizer::gather`] asked for are collected: read them with
    /// [`Tokenizer::gathered`].
    Gathered,
    /// The chunk's CRC has been read.
    ChunkEnd {
        /// The chunk that ends.
        header: ChunkHeader,
        /// Its CRC, checked or only read.
        crc: Crc,
    },
    /// IEND's CRC was read: the image ends here.
    End,
    /// Bytes after the end of the image.
    Trailing {
        /// Offset of the first of them.
        at: u64,
        /// The bytes.
        data: &'a [u8],
    },
}

/// Where the input stood when it ended before the end of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Inside {
    /// In the signature.
    Signature,
    /// Between two chunks.
    BetweenChunks,
    /// In a chunk's length and type.
    ChunkHeader,
    /// In a chunk's data or CRC.
    Chunk(ChunkHeader),
}

/// What stops the tokenizer. Its `Display` is the reason the crate's validator gives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// Byte `at` is not the signature's.
    Signature {
        /// Its offset.
        at: u64,
    },
    /// The input ended before the end of the image ([`Tokenizer::finish`]).
    Truncated {
        /// The input's length.
        at: u64,
        /// Where it stood.
        inside: Inside,
    },
    /// The input runs past the farthest position a saved state may hold (2^62 bytes).
    TooLong {
        /// Where the slice would end.
        end: u64,
    },
    /// A call after an error: the first one.
    AlreadyFailed(Box<TokenError>),
}

impl TokenError {
    /// The offset the problem is reported at.
    pub fn offset(&self) -> u64 {
        match self {
            TokenError::Signature { at } | TokenError::Truncated { at, .. } => *at,
            TokenError::TooLong { end } => *end,
            TokenError::AlreadyFailed(first) => first.offset(),
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Signature { .. } => f.write_str(
                "the file does not start with the PNG signature; it is not a PNG, or \
                 something precedes the image",
            ),
            TokenError::Truncated { inside, .. } => match inside {
                Inside::Signature => f.write_str("the file ends inside the PNG signature"),
                Inside::BetweenChunks => {
                    f.write_str("the file ends without an IEND chunk; it is truncated")
                }
                Inside::ChunkHeader => {
                    f.write_str("the file ends inside a chunk header; it is truncated")
                }
                Inside::Chunk(h) => write!(
                    f,
                    "the file ends inside chunk {} (declared {} bytes); it is truncated",
                    h.name(),
                    h.length
                ),
            },
            TokenError::TooLong { end } => write!(
                f,
                "the input runs to byte {end}, past the 2^62 bytes a walk may reach"
            ),
            TokenError::AlreadyFailed(first) => write!(f, "already failed: {first}"),
        }
    }
}

impl std::error::Error for TokenError {}

impl From<TokenError> for Error {
    /// The crate's error for the file: [`Error::InvalidContent`] with the tokenizer's
    /// reason, [`Error::TooLarge`] past 2^62 bytes.
    fn from(e: TokenError) -> Error {
        match e {
            TokenError::TooLong { end } => Error::TooLarge {
                size: end,
                limit: MAX_SAVED_OFFSET,
                kind: SizeLimit::Single,
            },
            TokenError::AlreadyFailed(first) => Error::AlreadyFailed {
                first: Box::new(Error::from(*first)),
            },
            other => Error::InvalidContent {
                media_type: MEDIA_TYPE.into(),
                offset: other.offset(),
                reason: other.to_string(),
            },
        }
    }
}

fn max_gather() -> u32 {
    MAX_GATHER as u32
}

fn yes() -> bool {
    true
}

/// The incremental PNG tokenizer; see the [module docs](super).
///
/// Plain data: it serialises with serde, to continue a file in another process. A state
/// read back is input like any other: [`Tokenizer::check_restored`] checks every
/// invariant the walk relies on.
///
/// # Examples
///
/// ```
/// use attachments::image::png::{Event, Tokenizer};
///
/// // A 1 x 1 PNG, fed in two slices split inside IHDR.
/// let file: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\0\0\0\0\x3a\x7e\x9b\x55\0\0\0\nIDAT\x78\xda\x63\x68\0\0\0\x82\0\x81\xda\x45\x08\x3b\0\0\0\0IEND\xaeB`\x82";
/// let mut tokens = Tokenizer::new();
/// let mut chunks = Vec::new();
/// for slice in [&file[..20], &file[20..]] {
///     tokens.feed(slice, |tokens, event| {
///         match event {
///             Event::ChunkBegin(h) if &h.chunk_type == b"IHDR" => tokens.gather(13),
///             Event::ChunkEnd { header, crc } => chunks.push((header.name(), crc.stored())),
///             _ => {}
///         }
///         Ok::<_, attachments::image::png::TokenError>(())
///     })?;
/// }
/// tokens.finish()?;
/// assert_eq!(chunks.len(), 3);
/// assert_eq!(chunks[0].0, "IHDR");
/// # Ok::<(), attachments::image::png::TokenError>(())
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tokenizer {
    pub(super) state: State,
    pub(super) progress: Progress,
    /// Partial signature / chunk header / CRC.
    pub(super) buf: [u8; 8],
    pub(super) have: usize,

    pub(super) chunk_type: [u8; 4],
    pub(super) chunk_len: u32,
    pub(super) chunk_start: u64,
    pub(super) remaining: u32,
    #[serde(with = "crate::image::crc_state")]
    crc: crc32fast::Hasher,
    /// The gathered bytes ([`Tokenizer::gather`]).
    pub(super) body: Vec<u8>,
    /// Whether the current chunk's first bytes are gathered.
    pub(super) keep_body: bool,
    /// How many of them, at most (states saved before this field gathered whole bodies).
    #[serde(default = "max_gather")]
    pub(super) keep_max: u32,
    /// Whether CRCs are computed (states saved before this field always did).
    #[serde(default = "yes")]
    pub(super) check_crc: bool,
    /// Not saved: only a tokenizer that has not failed is saved.
    #[serde(skip)]
    failed: Option<TokenError>,
}

impl Default for Tokenizer {
    fn default() -> Self {
        Tokenizer::new()
    }
}

impl Tokenizer {
    /// A tokenizer for a file starting now, checking every chunk's CRC.
    pub fn new() -> Self {
        Tokenizer {
            state: State::Signature,
            progress: Progress::default(),
            buf: [0; 8],
            have: 0,
            chunk_type: [0; 4],
            chunk_len: 0,
            chunk_start: 0,
            remaining: 0,
            crc: crc32fast::Hasher::new(),
            body: Vec::new(),
            keep_body: false,
            keep_max: MAX_GATHER as u32,
            check_crc: true,
            failed: None,
        }
    }

    /// A tokenizer that reads CRCs without computing them ([`Crc::Unchecked`]): for a
    /// consumer that copies chunks through and checks nothing.
    pub fn without_crc_check() -> Self {
        Tokenizer {
            check_crc: false,
            ..Tokenizer::new()
        }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.progress.offset
    }

    /// Whether the image has ended (IEND read).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Iend | State::End)
    }

    /// The current chunk's header, once read.
    fn header(&self) -> ChunkHeader {
        ChunkHeader {
            chunk_type: self.chunk_type,
            length: self.chunk_len,
            at: self.chunk_start,
        }
    }

    /// Collects the first `max` bytes of the current chunk's data (all of it when
    /// shorter; `max` is cut to [`MAX_GATHER`]) instead of giving them as
    /// [`Event::Data`]: one [`Event::Gathered`] says when they are all there, and
    /// [`Tokenizer::gathered`] has them until the next chunk begins. Takes effect when
    /// called on [`Event::ChunkBegin`], before any of the data is read; otherwise it does
    /// nothing. A chunk with no data gathers nothing and sends no [`Event::Gathered`].
    pub fn gather(&mut self, max: usize) {
        if matches!(self.state, State::Data | State::Crc) && self.remaining == self.chunk_len {
            self.keep_body = true;
            self.keep_max = max.min(MAX_GATHER) as u32;
            self.body.clear();
        }
    }

    /// The bytes gathered from the current (or last) chunk ([`Tokenizer::gather`]).
    pub fn gathered(&self) -> &[u8] {
        &self.body
    }

    /// Drops the gathered bytes (a consumer done with them keeps a saved state small).
    pub fn release_gathered(&mut self) {
        self.body = Vec::new();
        self.keep_body = false;
    }

    fn gather_target(&self) -> usize {
        (self.chunk_len.min(self.keep_max) as usize).min(MAX_GATHER)
    }

    /// Consumes a prefix of `data` and returns its length, with the event it completed
    /// (if any). An empty `data` gives `(0, None)` unless an event is due without input
    /// ([`Event::End`]). Call it again with the rest of the slice until it is used up.
    ///
    /// # Errors
    ///
    /// A [`TokenError`]; after one, every call answers [`TokenError::AlreadyFailed`].
    #[inline]
    pub fn next<'a>(&mut self, data: &'a [u8]) -> Result<(usize, Option<Event<'a>>), TokenError> {
        if let Some(first) = &self.failed {
            return Err(TokenError::AlreadyFailed(Box::new(first.clone())));
        }
        // No walk goes past the farthest position a saved state may hold, so whatever it
        // saves restores (only a restored state can be this far: no policy takes such a
        // file).
        let end = self.progress.offset.saturating_add(data.len() as u64);
        if end > MAX_SAVED_OFFSET {
            return Err(self.fail(TokenError::TooLong { end }));
        }
        match self.step(data) {
            Ok((n, event)) => {
                // `step` consumes at most the slice, and the end is within 2^62.
                self.progress.offset += n.min(data.len()) as u64;
                Ok((n, event))
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Runs [`Tokenizer::next`] over all of `data`, handing each event to `on` with the
    /// tokenizer (to [`gather`](Tokenizer::gather) on a [`Event::ChunkBegin`]). Stops at
    /// the first error, of the tokenizer or of `on`.
    ///
    /// # Errors
    ///
    /// The first error.
    pub fn feed<'a, E: From<TokenError>>(
        &mut self,
        mut data: &'a [u8],
        mut on: impl FnMut(&mut Self, Event<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        loop {
            let (n, event) = self.next(data)?;
            data = data.get(n..).unwrap_or_default();
            match event {
                Some(event) => on(self, event)?,
                None if data.is_empty() => return Ok(()),
                None => {}
            }
        }
    }

    /// Ends the input.
    ///
    /// # Errors
    ///
    /// [`TokenError::Truncated`] when the image has not ended (IEND not read).
    pub fn finish(&mut self) -> Result<(), TokenError> {
        if let Some(first) = &self.failed {
            return Err(TokenError::AlreadyFailed(Box::new(first.clone())));
        }
        let inside = match self.state {
            State::Iend | State::End => return Ok(()),
            State::Signature => Inside::Signature,
            State::Header if self.have == 0 => Inside::BetweenChunks,
            State::Header => Inside::ChunkHeader,
            State::Data | State::Crc => Inside::Chunk(self.header()),
        };
        Err(self.fail(TokenError::Truncated {
            at: self.progress.offset,
            inside,
        }))
    }

    fn fail(&mut self, e: TokenError) -> TokenError {
        self.failed = Some(e.clone());
        e
    }

    /// Copies bytes into `buf` until it holds `want` (at most 8); returns how many were
    /// taken.
    fn fill(&mut self, data: &[u8], want: usize) -> usize {
        let have = self.have.min(want);
        let take = (want - have).min(data.len());
        self.buf[have..have + take].copy_from_slice(&data[..take]);
        self.have = have + take;
        take
    }

    fn step<'a>(&mut self, data: &'a [u8]) -> Result<(usize, Option<Event<'a>>), TokenError> {
        match self.state {
            State::Data if !data.is_empty() => Ok(self.data(data)),
            State::Iend => {
                self.state = State::End;
                Ok((0, Some(Event::End)))
            }
            _ if data.is_empty() => Ok((0, None)),
            State::Signature => {
                let start = self.have.min(8);
                let n = self.fill(data, 8);
                if let Some(i) = (start..self.have).find(|&i| self.buf[i] != SIGNATURE[i]) {
                    return Err(TokenError::Signature { at: i as u64 });
                }
                if self.have < 8 {
                    return Ok((n, None));
                }
                self.have = 0;
                self.state = State::Header;
                Ok((n, Some(Event::Signature)))
            }
            State::Header => {
                if self.have == 0 {
                    self.chunk_start = self.progress.offset;
                }
                let n = self.fill(data, 8);
                if self.have < 8 {
                    return Ok((n, None));
                }
                self.have = 0;
                let b = self.buf;
                self.chunk_len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                self.chunk_type = [b[4], b[5], b[6], b[7]];
                self.remaining = self.chunk_len;
                self.crc = crc32fast::Hasher::new();
                if self.check_crc {
                    self.crc.update(&self.chunk_type);
                }
                self.body.clear();
                self.keep_body = false;
                self.state = if self.chunk_len == 0 {
                    State::Crc
                } else {
                    State::Data
                };
                Ok((n, Some(Event::ChunkBegin(self.header()))))
            }
            State::Data => Ok((0, None)),
            State::Crc => {
                let n = self.fill(data, 4);
                if self.have < 4 {
                    return Ok((n, None));
                }
                self.have = 0;
                let stored =
                    u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                let crc = if self.check_crc {
                    let computed = std::mem::take(&mut self.crc).finalize();
                    if computed == stored {
                        Crc::Match(stored)
                    } else {
                        Crc::Mismatch { stored, computed }
                    }
                } else {
                    Crc::Unchecked(stored)
                };
                self.state = if &self.chunk_type == b"IEND" {
                    State::Iend
                } else {
                    State::Header
                };
                Ok((
                    n,
                    Some(Event::ChunkEnd {
                        header: self.header(),
                        crc,
                    }),
                ))
            }
            State::End => Ok((
                data.len(),
                Some(Event::Trailing {
                    at: self.progress.offset,
                    data,
                }),
            )),
        }
    }

    /// Chunk data (`data` is not empty).
    #[inline]
    fn data<'a>(&mut self, data: &'a [u8]) -> (usize, Option<Event<'a>>) {
        let remaining = self.remaining as usize;
        if self.keep_body && self.body.len() < self.gather_target() {
            let want = self.gather_target() - self.body.len();
            let take = want.min(remaining).min(data.len());
            let part = &data[..take];
            if self.check_crc {
                self.crc.update(part);
            }
            self.body.extend_from_slice(part);
            self.consumed(take);
            let done = self.body.len() >= self.gather_target();
            return (take, done.then_some(Event::Gathered));
        }
        let take = remaining.min(data.len());
        let part = &data[..take];
        if self.check_crc {
            self.crc.update(part);
        }
        self.consumed(take);
        (take, Some(Event::Data(part)))
    }

    fn consumed(&mut self, n: usize) {
        // `n` is at most `remaining`.
        self.remaining = self.remaining.saturating_sub(n as u32);
        if self.remaining == 0 {
            self.state = State::Crc;
        }
    }

    /// Checks a restored tokenizer against every invariant the walk relies on.
    ///
    /// # Errors
    ///
    /// [`Error::CorruptState`] naming the first that does not hold.
    pub fn check_restored(&self) -> Result<(), Error> {
        self.check_saved()
            .map_err(|problem| Error::corrupt("a saved PNG tokenizer state", problem))
    }

    /// The invariants: the partial bytes held for the state, the position against the
    /// chunk being read (its start, the data read, the CRC bytes held), the gathered
    /// bytes against the data read.
    pub(crate) fn check_saved(&self) -> Result<(), &'static str> {
        let have_ok = match self.state {
            State::Signature | State::Header => self.have < 8,
            State::Crc => self.have < 4,
            State::Data | State::Iend | State::End => self.have == 0,
        };
        if !have_ok {
            return Err("PNG state: partial header bytes out of range");
        }
        let offset = self.progress.offset;
        if offset > MAX_SAVED_OFFSET {
            return Err("PNG state: position past any file");
        }
        match self.state {
            State::Signature => {
                let seen = &self.buf[..self.have];
                if offset != self.have as u64 || seen != &SIGNATURE[..seen.len()] {
                    return Err("PNG state: inside the signature at another position");
                }
            }
            State::Header if self.have > 0 => {
                if Some(self.chunk_start) != offset.checked_sub(self.have as u64) {
                    return Err("PNG state: a chunk header that starts elsewhere");
                }
            }
            State::Header | State::Iend | State::End => {}
            State::Data | State::Crc => {
                // Where the walk stands: 8 bytes of length and type, the data read, the
                // CRC bytes held.
                let read = self.chunk_len.checked_sub(self.remaining);
                let at = read.and_then(|read| {
                    self.chunk_start
                        .checked_add(8 + u64::from(read))?
                        .checked_add(self.have as u64)
                });
                if at != Some(offset)
                    || (self.state == State::Data && self.remaining == 0)
                    || (self.state == State::Crc && self.remaining != 0)
                {
                    return Err("PNG state: chunk length and bytes left disagree");
                }
                let gathered_ok = match (self.keep_body, read) {
                    (true, Some(read)) => {
                        self.keep_max as usize <= MAX_GATHER
                            && self.body.len() == (read as usize).min(self.gather_target())
                    }
                    (false, _) => self.body.is_empty(),
                    (true, None) => false,
                };
                if !gathered_ok {
                    return Err("PNG state: gathered bytes that do not fit the data read");
                }
            }
        }
        if !matches!(self.state, State::Data | State::Crc)
            && (self.body.len() > MAX_GATHER || self.chunk_start > offset)
        {
            return Err("PNG state: a chunk body or start out of range");
        }
        Ok(())
    }
}
