//! The JPEG tokenizer: the one walk of a JPEG's markers and segments, as events.
//!
//! [`Tokenizer::next`] takes any slice and consumes a prefix of it, returning at most one
//! [`Event`]; [`Tokenizer::feed`] runs it over a whole slice. It reads SOI, each marker
//! (0xFF fill bytes before it skipped), each segment's length and body, the entropy-coded
//! data after a scan header (in bulk: stuffed 0xFF00 stays in the data, and the scan
//! leaves the fast loop only at a marker), restart markers, EOI and the bytes after it.
//! It refuses only what it cannot walk past: a file that does not start with SOI, a byte
//! other than 0xFF where a marker must start, a code that is not a marker, a segment
//! length under 2. The rules of the format belong to the consumers.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, SizeLimit};
use crate::image::{MAX_SAVED_OFFSET, Progress};

/// The most bytes of a segment's body [`Tokenizer::gather`] collects: every body fits
/// (a segment's length field counts at most 65,533 bytes of body).
pub const MAX_GATHER: usize = 65_535;

const MEDIA_TYPE: &str = "image/jpeg";

/// Where the walk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum State {
    /// Reading SOI (`FF D8`); `have` bytes so far.
    Soi,
    /// Expecting the 0xFF that starts a marker.
    Marker,
    /// After 0xFF: expecting a marker code (more 0xFF are fill).
    MarkerCode,
    /// Reading a segment's 2-byte length.
    Length,
    /// Reading a segment's body; with nothing left, [`Event::SegmentEnd`] is due.
    Segment,
    /// Inside entropy-coded data; `ff` when the last byte was 0xFF.
    Entropy { ff: bool },
    /// After EOI.
    End,
}

/// What the tokenizer read; slices borrow the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// SOI, the file's first two bytes.
    Soi,
    /// A marker other than SOI's, EOI and a restart marker inside entropy-coded data.
    /// A marker that has a segment (every code from 0xC0 on except RST0-RST7, SOI and
    /// EOI) is followed by [`Event::SegmentBegin`]; the others (TEM 0x01, RST0-RST7
    /// outside entropy-coded data, a second SOI) stand alone.
    Marker {
        /// The marker code (the byte after 0xFF).
        code: u8,
        /// Offset of its 0xFF (the first of the fill bytes outside entropy-coded data,
        /// the last inside it).
        at: u64,
    },
    /// A segment's length is read. Its body follows as [`Event::Data`] (or, for the part
    /// [`Tokenizer::gather`] collects, one [`Event::Gathered`]), then
    /// [`Event::SegmentEnd`].
    SegmentBegin {
        /// The marker code.
        marker: u8,
        /// Offset of the marker's 0xFF.
        at: u64,
        /// Bytes of body (the length field minus its own 2 bytes).
        length: u16,
    },
    /// The next bytes of the segment's body, in order.
    Data(&'a [u8]),
    /// The bytes [`Tokenizer::gather`] asked for are collected: read them with
    /// [`Tokenizer::gathered`].
    Gathered,
    /// The segment's body is read. After a scan header (SOS), entropy-coded data follows.
    SegmentEnd {
        /// The marker code.
        marker: u8,
        /// Offset of the marker's 0xFF.
        at: u64,
    },
    /// Entropy-coded data, as in the file (stuffed 0xFF00 included).
    Entropy(&'a [u8]),
    /// A restart marker inside entropy-coded data.
    Restart {
        /// Its number, 0 to 7.
        n: u8,
        /// Offset of its 0xFF.
        at: u64,
    },
    /// EOI: the image ends here.
    Eoi {
        /// Offset of its 0xFF.
        at: u64,
    },
    /// Bytes after EOI.
    Trailing {
        /// Offset of the first of them.
        at: u64,
        /// The bytes.
        data: &'a [u8],
    },
}

/// Where the input stood when it ended before EOI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Inside {
    /// In SOI.
    Soi,
    /// Between two segments (where a marker is due).
    BetweenSegments,
    /// In a marker, its length or its segment; `marker` is the last code read.
    Segment {
        /// The last marker code read (0 before any).
        marker: u8,
    },
    /// In entropy-coded data.
    Entropy,
}

/// What stops the tokenizer. Its `Display` is the reason the crate's validator gives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// Byte `at` is not SOI's.
    NotSoi {
        /// Its offset.
        at: u64,
    },
    /// A byte other than 0xFF where a marker must start.
    ExpectedMarker {
        /// Its offset.
        at: u64,
        /// The byte.
        found: u8,
    },
    /// 0xFF followed by a code that is not a marker (0x00 outside entropy-coded data,
    /// 0x02 to 0xBF).
    UndefinedMarker {
        /// The code.
        code: u8,
        /// Offset of the 0xFF.
        marker_at: u64,
        /// Offset of the code.
        code_at: u64,
    },
    /// A segment length under 2.
    ShortSegment {
        /// The marker code.
        marker: u8,
        /// The length field.
        length: u16,
        /// Offset of the marker's 0xFF.
        marker_at: u64,
        /// Offset of the length's last byte.
        at: u64,
    },
    /// The input ended before EOI ([`Tokenizer::finish`]).
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
    /// The offset the problem is reported at: the marker's 0xFF for a marker or segment,
    /// the byte itself otherwise.
    pub fn offset(&self) -> u64 {
        match self {
            TokenError::NotSoi { at }
            | TokenError::ExpectedMarker { at, .. }
            | TokenError::Truncated { at, .. } => *at,
            TokenError::UndefinedMarker { marker_at, .. }
            | TokenError::ShortSegment { marker_at, .. } => *marker_at,
            TokenError::TooLong { end } => *end,
            TokenError::AlreadyFailed(first) => first.offset(),
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::NotSoi { .. } => f.write_str(
                "the file does not start with a JPEG SOI marker (FF D8); it is not a \
                 JPEG, or something precedes the image",
            ),
            TokenError::ExpectedMarker { found, .. } => write!(
                f,
                "expected a marker (0xFF) but found 0x{found:02x}; the segment before it has a wrong length"
            ),
            TokenError::UndefinedMarker { code, .. } => write!(
                f,
                "0xFF 0x{code:02x} is not a JPEG marker; the file is corrupt"
            ),
            TokenError::ShortSegment { marker, length, .. } => write!(
                f,
                "marker 0x{marker:02x} declares a segment length of {length}; the minimum is 2"
            ),
            TokenError::Truncated { inside, .. } => match inside {
                Inside::Soi => f.write_str("the file ends inside the SOI marker"),
                Inside::BetweenSegments => {
                    f.write_str("the file ends without an EOI marker; it is truncated")
                }
                Inside::Segment { marker } => write!(
                    f,
                    "the file ends inside the segment of marker 0x{marker:02x}; it is truncated"
                ),
                Inside::Entropy => {
                    f.write_str("the file ends inside scan data, without EOI; it is truncated")
                }
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

fn max_gather() -> u16 {
    u16::MAX
}

/// The markers that have a segment (a length follows): every code from 0xC0 on except
/// RST0-RST7, SOI and EOI (0xFF is fill, never a marker).
pub fn has_segment(code: u8) -> bool {
    matches!(code, 0xC0..=0xCF | 0xDA..=0xFE)
}

/// The incremental JPEG tokenizer; see the [module docs](super).
///
/// Plain data: it serialises with serde, to continue a file in another process. A state
/// read back is input like any other: [`Tokenizer::check_restored`] checks every
/// invariant the walk relies on.
///
/// # Examples
///
/// ```
/// use attachments::image::jpeg::{Event, TokenError, Tokenizer};
///
/// // SOI, a comment, a frame header, a scan header, two bytes of data with a stuffed
/// // 0xFF, EOI: fed one byte at a time.
/// let file = b"\xff\xd8\xff\xfe\x00\x04hi\xff\xc0\x00\x0b\x08\x00\x01\x00\x01\x01\x01\x11\x00\
///              \xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00\x12\xff\x00\xff\xd9";
/// let mut tokens = Tokenizer::new();
/// let (mut segments, mut entropy) = (Vec::new(), Vec::new());
/// for byte in file.chunks(1) {
///     tokens.feed(byte, |tokens, event| {
///         match event {
///             Event::SegmentBegin { marker: 0xC0, .. } => tokens.gather(64),
///             Event::SegmentEnd { marker, .. } => segments.push((marker, tokens.gathered().len())),
///             Event::Entropy(data) => entropy.extend_from_slice(data),
///             _ => {}
///         }
///         Ok::<_, TokenError>(())
///     })?;
/// }
/// tokens.finish()?;
/// assert_eq!(segments, [(0xFE, 0), (0xC0, 9), (0xDA, 0)]);
/// assert_eq!(entropy, b"\x12\xff\x00");
/// # Ok::<(), TokenError>(())
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tokenizer {
    pub(super) state: State,
    pub(super) progress: Progress,
    pub(super) buf: [u8; 2],
    pub(super) have: usize,

    /// The last marker code read.
    pub(super) marker: u8,
    /// Offset of its 0xFF.
    pub(super) marker_at: u64,
    /// Body bytes left in the current segment.
    pub(super) remaining: u16,
    /// The gathered bytes ([`Tokenizer::gather`]).
    pub(super) body: Vec<u8>,
    /// Whether the current segment's first bytes are gathered.
    pub(super) keep_body: bool,
    /// How many of them, at most (states saved before this field gathered whole bodies).
    #[serde(default = "max_gather")]
    pub(super) keep_max: u16,
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
    /// A tokenizer for a file starting now.
    pub fn new() -> Self {
        Tokenizer {
            state: State::Soi,
            progress: Progress::default(),
            buf: [0; 2],
            have: 0,
            marker: 0,
            marker_at: 0,
            remaining: 0,
            body: Vec::new(),
            keep_body: false,
            keep_max: u16::MAX,
            failed: None,
        }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.progress.offset
    }

    /// Whether the image has ended (EOI read).
    pub fn is_done(&self) -> bool {
        self.state == State::End
    }

    /// Collects the first `max` bytes of the current segment's body (all of it when
    /// shorter) instead of giving them as [`Event::Data`]: one [`Event::Gathered`] says
    /// when they are all there, and [`Tokenizer::gathered`] has them until the next
    /// segment begins. Takes effect when called on [`Event::SegmentBegin`], before any of
    /// the body is read; otherwise it does nothing. An empty body gathers nothing and sends
    /// no [`Event::Gathered`].
    pub fn gather(&mut self, max: usize) {
        if self.state == State::Segment && self.body.is_empty() && !self.keep_body {
            self.keep_body = true;
            self.keep_max = max.min(usize::from(u16::MAX)) as u16;
        }
    }

    /// The bytes gathered from the current (or last) segment ([`Tokenizer::gather`]).
    pub fn gathered(&self) -> &[u8] {
        &self.body
    }

    /// Drops the gathered bytes (a consumer done with them keeps a saved state small).
    pub fn release_gathered(&mut self) {
        self.body = Vec::new();
        self.keep_body = false;
    }

    /// Consumes a prefix of `data` and returns its length, with the event it completed
    /// (if any). An empty `data` gives `(0, None)` unless an event is due without input
    /// (the end of a segment whose last byte was just read, or of an empty one). Call it
    /// again with the rest of the slice until it is used up and no event comes.
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

    /// Runs [`Tokenizer::next`] over all of `data` (and the events due after it), handing
    /// each event to `on` with the tokenizer (to [`gather`](Tokenizer::gather) on a
    /// [`Event::SegmentBegin`]). Stops at the first error, of the tokenizer or of `on`.
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

    /// Where the input stands, for a message about a file that ends here; `None` after
    /// EOI.
    pub fn inside(&self) -> Option<Inside> {
        Some(match self.state {
            State::End => return None,
            State::Soi => Inside::Soi,
            State::Entropy { .. } => Inside::Entropy,
            State::Marker => Inside::BetweenSegments,
            State::MarkerCode | State::Length | State::Segment => Inside::Segment {
                marker: self.marker,
            },
        })
    }

    /// Ends the input.
    ///
    /// # Errors
    ///
    /// [`TokenError::Truncated`] when the image has not ended (EOI not read).
    pub fn finish(&mut self) -> Result<(), TokenError> {
        if let Some(first) = &self.failed {
            return Err(TokenError::AlreadyFailed(Box::new(first.clone())));
        }
        match self.inside() {
            None => Ok(()),
            Some(inside) => Err(self.fail(TokenError::Truncated {
                at: self.progress.offset,
                inside,
            })),
        }
    }

    fn fail(&mut self, e: TokenError) -> TokenError {
        self.failed = Some(e.clone());
        e
    }

    fn step<'a>(&mut self, data: &'a [u8]) -> Result<(usize, Option<Event<'a>>), TokenError> {
        if let State::Entropy { ff: false } = self.state
            && !data.is_empty()
        {
            return Ok(self.entropy(data));
        }
        if self.state == State::Segment {
            return Ok(self.segment(data));
        }
        let Some(&byte) = data.first() else {
            return Ok((0, None));
        };
        let at = self.progress.offset;
        match self.state {
            State::Soi => {
                let want = if self.have == 0 { 0xFF } else { 0xD8 };
                if byte != want {
                    return Err(TokenError::NotSoi { at });
                }
                self.have += 1;
                if self.have < 2 {
                    return Ok((1, None));
                }
                self.have = 0;
                self.state = State::Marker;
                Ok((1, Some(Event::Soi)))
            }
            State::Marker => {
                if byte != 0xFF {
                    return Err(TokenError::ExpectedMarker { at, found: byte });
                }
                self.marker_at = at;
                self.state = State::MarkerCode;
                Ok((1, None))
            }
            // Fill bytes before a marker.
            State::MarkerCode if byte == 0xFF => Ok((1, None)),
            State::MarkerCode => self.marker(byte, at).map(|e| (1, Some(e))),
            State::Length => {
                let have = self.have.min(1);
                let take = (2 - have).min(data.len());
                self.buf[have..have + take].copy_from_slice(&data[..take]);
                self.have = have + take;
                if self.have < 2 {
                    return Ok((take, None));
                }
                self.have = 0;
                let length = u16::from_be_bytes(self.buf);
                if length < 2 {
                    return Err(TokenError::ShortSegment {
                        marker: self.marker,
                        length,
                        marker_at: self.marker_at,
                        at: at + take as u64 - 1,
                    });
                }
                self.remaining = length - 2;
                self.body.clear();
                self.keep_body = false;
                self.state = State::Segment;
                Ok((
                    take,
                    Some(Event::SegmentBegin {
                        marker: self.marker,
                        at: self.marker_at,
                        length: length - 2,
                    }),
                ))
            }
            State::Entropy { .. } => match byte {
                // Stuffing split from its 0xFF by the slice boundary.
                0x00 => {
                    self.state = State::Entropy { ff: false };
                    Ok((1, Some(Event::Entropy(b"\xff\x00"))))
                }
                // Fill: the marker starts at the last 0xFF.
                0xFF => {
                    self.marker_at = at;
                    Ok((1, None))
                }
                0xD0..=0xD7 => {
                    self.state = State::Entropy { ff: false };
                    Ok((
                        1,
                        Some(Event::Restart {
                            n: byte - 0xD0,
                            at: self.marker_at,
                        }),
                    ))
                }
                code => self.marker(code, at).map(|e| (1, Some(e))),
            },
            State::End => Ok((
                data.len(),
                Some(Event::Trailing {
                    at: self.progress.offset,
                    data,
                }),
            )),
            State::Segment => Ok((0, None)),
        }
    }

    /// A marker code (at `code_at`) after 0xFF (at `marker_at`).
    fn marker(&mut self, code: u8, code_at: u64) -> Result<Event<'static>, TokenError> {
        let at = self.marker_at;
        if matches!(code, 0x00 | 0x02..=0xBF) {
            return Err(TokenError::UndefinedMarker {
                code,
                marker_at: at,
                code_at,
            });
        }
        self.marker = code;
        Ok(match code {
            0xD9 => {
                self.state = State::End;
                Event::Eoi { at }
            }
            _ if has_segment(code) => {
                self.state = State::Length;
                Event::Marker { code, at }
            }
            _ => {
                self.state = State::Marker;
                Event::Marker { code, at }
            }
        })
    }

    /// A segment's body (possibly none left: the segment ends).
    #[inline]
    fn segment<'a>(&mut self, data: &'a [u8]) -> (usize, Option<Event<'a>>) {
        if self.remaining == 0 {
            self.state = if self.marker == 0xDA {
                State::Entropy { ff: false }
            } else {
                State::Marker
            };
            let event = Event::SegmentEnd {
                marker: self.marker,
                at: self.marker_at,
            };
            return (0, Some(event));
        }
        if data.is_empty() {
            return (0, None);
        }
        let remaining = usize::from(self.remaining);
        let target = usize::from(self.keep_max);
        if self.keep_body && self.body.len() < target {
            let take = (target - self.body.len()).min(remaining).min(data.len());
            self.body.extend_from_slice(&data[..take]);
            self.remaining -= take as u16;
            let done = self.body.len() >= target || self.remaining == 0;
            return (take, done.then_some(Event::Gathered));
        }
        let take = remaining.min(data.len());
        self.remaining -= take as u16;
        (take, Some(Event::Data(&data[..take])))
    }

    /// Entropy-coded data (`data` is not empty).
    #[inline]
    fn entropy<'a>(&mut self, data: &'a [u8]) -> (usize, Option<Event<'a>>) {
        let end = entropy_end(data);
        if end > 0 {
            return (end, Some(Event::Entropy(&data[..end])));
        }
        // A 0xFF that is not stuffing: the byte after it decides.
        self.marker_at = self.progress.offset;
        self.state = State::Entropy { ff: true };
        (1, None)
    }

    /// Checks a restored tokenizer against every invariant the walk relies on.
    ///
    /// # Errors
    ///
    /// [`Error::CorruptState`] naming the first that does not hold.
    pub fn check_restored(&self) -> Result<(), Error> {
        self.check_saved()
            .map_err(|problem| Error::corrupt("a saved JPEG tokenizer state", problem))
    }

    /// The invariants: the partial bytes held for the state, positions, a marker that has
    /// a segment for a length or body being read, the gathered bytes within the segment.
    pub(crate) fn check_saved(&self) -> Result<(), &'static str> {
        let have_ok = match self.state {
            State::Soi | State::Length => self.have < 2,
            _ => self.have == 0,
        };
        if !have_ok {
            return Err("JPEG state: partial marker bytes out of range");
        }
        let offset = self.progress.offset;
        if offset > MAX_SAVED_OFFSET || self.marker_at > offset {
            return Err("JPEG state: position past any file");
        }
        let gathered_ok = if self.keep_body {
            self.body.len() <= usize::from(self.keep_max)
        } else {
            self.body.is_empty()
        };
        let ok = match self.state {
            State::Soi => offset == self.have as u64,
            State::Marker | State::MarkerCode | State::Entropy { .. } | State::End => offset >= 2,
            State::Length => offset >= 2 && has_segment(self.marker),
            State::Segment => {
                offset >= 2
                    && has_segment(self.marker)
                    && gathered_ok
                    && self.body.len() + usize::from(self.remaining) <= 65_533
            }
        };
        if !ok {
            return Err("JPEG state: the marker or segment being read does not fit the state");
        }
        if self.body.len() > MAX_GATHER {
            return Err("JPEG state: kept segment body over its maximum");
        }
        Ok(())
    }
}

/// Index of the first 0xFF in `data` that is not stuffing (followed by 0x00), or
/// `data.len()`. A 0xFF that is the last byte counts as not stuffing: the next slice
/// decides.
///
/// The entropy-coded data, most of a JPEG, holds a 0xFF about every 256 bytes: a search
/// that returns one position per call (`memchr`) pays its setup again after every stuffed
/// byte. With a mask per 64-byte block, every 0xFF of the block is visited from one load.
/// `validate_jpeg` on 10 MiB (`benches/pipeline.rs`): 9.2-9.5 GiB/s with one word-trick
/// search per 0xFF, 13.3 GiB/s with this mask.
#[inline]
fn entropy_end(data: &[u8]) -> usize {
    // Whole 64-byte blocks are tested at once; each 0xFF in a block is handled in turn
    // without scanning the block again. The byte after a stuffed 0xFF is 0x00, never
    // another 0xFF, so no 0xFF is visited twice.
    let mut blocks = data.chunks_exact(64);
    let mut pos = 0;
    for (n, block) in (&mut blocks).enumerate() {
        let base = n * 64;
        // Cannot fail: `chunks_exact(64)` yields 64-byte blocks only.
        let mut mask = ff_mask(block.try_into().expect("64-byte block"));
        while mask != 0 {
            let at = base + mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if data.get(at + 1) != Some(&0x00) {
                return at;
            }
            pos = at + 2;
        }
    }
    let tail = data.len() - blocks.remainder().len();
    let mut at = pos.max(tail);
    while let Some(i) = data
        .get(at..)
        .and_then(|rest| rest.iter().position(|&b| b == 0xFF))
    {
        let ff = at + i;
        if data.get(ff + 1) != Some(&0x00) {
            return ff;
        }
        at = ff + 2;
    }
    data.len()
}

/// Bit `i` set when `block[i]` is 0xFF.
#[inline]
fn ff_mask(block: &[u8; 64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
        };
        let mut mask = 0u64;
        for (i, lane) in block.chunks_exact(16).enumerate() {
            // SAFETY: SSE2 is part of the x86_64 baseline; `lane` is 16 readable bytes and
            // the load is unaligned.
            let bits = unsafe {
                let v = _mm_loadu_si128(lane.as_ptr().cast());
                _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(-1)))
            };
            mask |= u64::from(bits as u16) << (16 * i);
        }
        mask
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        block
            .iter()
            .enumerate()
            .fold(0u64, |m, (i, &b)| m | (u64::from(b == 0xFF) << i))
    }
}

#[cfg(test)]
mod tests {
    use super::entropy_end;

    #[test]
    fn entropy_end_finds_the_first_unstuffed_ff_in_any_position() {
        for len in [1usize, 7, 63, 64, 65, 127, 128, 200] {
            for at in 0..len {
                let mut data = vec![0xFEu8; len];
                data[at] = 0xFF;
                assert_eq!(entropy_end(&data), at, "len {len} at {at}");
                // Stuffed, it is data; the next unstuffed one ends it.
                if at + 1 < len {
                    data[at + 1] = 0x00;
                    assert_eq!(entropy_end(&data), len, "stuffed, len {len} at {at}");
                    if at + 2 < len {
                        data[len - 1] = 0xFF;
                        assert_eq!(entropy_end(&data), len - 1, "len {len} at {at}");
                    }
                }
            }
            assert_eq!(entropy_end(&vec![0x7F; len]), len);
        }
    }
}
