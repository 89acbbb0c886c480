//! JPEG: one [`Tokenizer`] that walks the markers and segments, and the consumers built on
//! its events.
//!
//! # Layers
//!
//! - [`Tokenizer`] (IO-free, fed any slice) reads SOI, each marker, each segment's length
//!   and body, the entropy-coded data in bulk, restart markers, EOI and the bytes after it,
//!   and emits them as [`Event`]s: bodies and data as slices of the input, never copied,
//!   except the first bytes of a segment a consumer asks to
//!   [`gather`](Tokenizer::gather) (a frame or scan header, a table, an APPn header).
//!   It refuses only what it cannot walk past.
//! - [`JpegValidator`] applies the format's rules to those events (below).
//! - [`MetadataStripper`](crate::image::strip::MetadataStripper) drops the metadata
//!   segments and copies the rest.
//! - [`DimensionReader`](crate::image::DimensionReader) reads the width and height from
//!   the frame header and stops.
//!
//! No other code reads a JPEG marker or segment length: the tokenizer's `State::Length`
//! is the one place that reads a length field (and its `State::MarkerCode` and the
//! entropy-coded data's 0xFF handling the ones that read a marker code), and
//! [`FrameHeader::parse`] the one that reads a frame header's fields. (The stripper
//! writes markers and lengths back from the events; it reads none.)
//!
//! # The validator's rules
//!
//! With a few bytes of state and one small segment body (SOF, SOS or DRI; under 1 KiB),
//! it checks:
//!
//! - SOI first, with nothing before it;
//! - every marker: a defined code (0xFF fill bytes allowed before it), and for marker
//!   segments a length of at least 2, counted against [`ImageLimits::max_segments`] and,
//!   for APPn and COM, against [`ImageLimits::max_metadata_bytes`];
//! - one frame header (SOF0-SOF15 except DHT, JPG and DAC) with a sample precision of 2 to
//!   16 bits, non-zero width and height within [`ImageLimits`], 1-4 components, and a
//!   length that matches them;
//! - at least one SOS after the frame header, 1-4 components that the frame defines;
//! - entropy-coded data scanned for markers: 0xFF00 is stuffing, RST0-RST7 must come in
//!   sequence, any other marker ends the scan (progressive files have many scans);
//! - EOI last; anything after it is rejected unless trailing bytes are allowed.
//!
//! No pixel is decoded. The entropy-coded data, most of the file, is scanned for 0xFF with
//! a 64-bit position mask per 64-byte block, visiting each 0xFF once.
//!
//! # Examples
//!
//! The markers of a file, with the tokenizer alone:
//!
//! ```
//! use attachments::image::jpeg::{Event, TokenError, Tokenizer};
//!
//! let file = b"\xff\xd8\xff\xe0\x00\x04hi\xff\xc0\x00\x0b\x08\x00\x01\x00\x01\x01\x01\x11\x00\
//!              \xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00\x12\x34\xff\xd9";
//! let mut markers = Vec::new();
//! let mut tokens = Tokenizer::new();
//! tokens.feed(file, |_, event| {
//!     match event {
//!         Event::Marker { code, .. } => markers.push(code),
//!         Event::Eoi { .. } => markers.push(0xD9),
//!         _ => {}
//!     }
//!     Ok::<_, TokenError>(())
//! })?;
//! tokens.finish()?;
//! assert_eq!(markers, [0xE0, 0xC0, 0xDA, 0xD9]);
//! # Ok::<(), TokenError>(())
//! ```

mod tokenizer;

pub use tokenizer::{Event, Inside, MAX_GATHER, TokenError, Tokenizer, has_segment};

use crate::error::{Error, Result};
use crate::image::Budget;
use crate::inspect::{ContentInfo, Validator};
use crate::policy::ImageLimits;
use serde::{Deserialize, Serialize};
use tokenizer::State;

const MEDIA_TYPE: &str = "image/jpeg";

/// Longest segment body the validator keeps to parse (SOF with 255 components).
const MAX_KEPT_BODY: usize = 6 + 3 * 255;

/// The frame header's facts the other rules need.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Frame {
    width: u16,
    height: u16,
    component_ids: Vec<u8>,
}

/// A frame header's first fields, as read (the validator checks them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct FrameHeader {
    /// Sample precision, in bits.
    pub precision: u8,
    /// Height in lines (0: defined later by a DNL segment).
    pub height: u16,
    /// Width in samples per line.
    pub width: u16,
    /// Number of components.
    pub components: u8,
}

impl FrameHeader {
    /// A frame header's first 6 bytes of body, read; `None` for a shorter body.
    pub fn parse(body: &[u8]) -> Option<FrameHeader> {
        let b: &[u8; 6] = body.get(..6)?.try_into().ok()?;
        Some(FrameHeader {
            precision: b[0],
            height: u16::from_be_bytes([b[1], b[2]]),
            width: u16::from_be_bytes([b[3], b[4]]),
            components: b[5],
        })
    }
}

/// SOF0-SOF15 except DHT (C4), JPG (C8) and DAC (CC).
pub fn is_sof(code: u8) -> bool {
    matches!(code, 0xC0..=0xCF) && !matches!(code, 0xC4 | 0xC8 | 0xCC)
}

/// Incremental JPEG structure checker, on the [`Tokenizer`]'s events; see the
/// [module docs](self).
///
/// # Examples
///
/// ```
/// use attachments::image::jpeg::JpegValidator;
/// use attachments::{Limits, Validator};
///
/// let mut v = JpegValidator::new(&Limits::demand().image, false);
/// v.update(b"\xff\xd8").unwrap();
/// let err = v.update(b"\xff\xd9").unwrap_err(); // EOI with no image in between
/// assert!(err.to_string().contains("no scan"), "{err}");
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JpegValidator {
    /// The walk; saved flat, beside the rules' state, as before the tokenizer was its own
    /// type (states saved then restore).
    #[serde(flatten)]
    tokens: Tokenizer,
    budget: Budget,
    allow_trailing: bool,
    frame: Option<Frame>,
    scans: u32,
    next_rst: u8,
    /// Not saved: only a validator that has not failed is saved.
    #[serde(skip)]
    failed: Option<Box<Error>>,
}

impl JpegValidator {
    /// A validator for a file starting now, with the image limits `limits`.
    /// `allow_trailing` accepts bytes after EOI.
    pub fn new(limits: &ImageLimits, allow_trailing: bool) -> Self {
        JpegValidator {
            tokens: Tokenizer::new(),
            budget: Budget::new(limits),
            allow_trailing,
            frame: None,
            scans: 0,
            next_rst: 0,
            failed: None,
        }
    }

    /// Bytes walked so far.
    pub(crate) fn offset(&self) -> u64 {
        self.tokens.offset()
    }

    /// Checks a restored state against every invariant the walk relies on
    /// ([`ValidatorState::restore`](crate::image::ValidatorState::restore)): the
    /// tokenizer's own ([`Tokenizer::check_restored`]), then a marker that
    /// [`JpegValidator::begin_marker`] would have let in for the segment being read (a scan
    /// header only after the frame header, a frame header only before it), the body
    /// gathered for it, the frame's fields, and the counts within their limits.
    pub(crate) fn check_saved(&self) -> std::result::Result<(), &'static str> {
        let t = &self.tokens;
        t.check_saved()?;
        self.budget.check_saved()?;
        let frame_ok = |f: &Frame| {
            (1..=4).contains(&f.component_ids.len())
                && f.width > 0
                && f.height > 0
                && self
                    .budget
                    .dimensions(u32::from(f.width), u32::from(f.height))
                    .is_ok()
        };
        if self.frame.as_ref().is_some_and(|f| !frame_ok(f)) {
            return Err("JPEG state: frame fields out of range");
        }
        // Each scan header is a segment counted against the limit, and needs the frame.
        if self.next_rst >= 8
            || self.scans > self.budget.segments()
            || (self.scans > 0 && self.frame.is_none())
        {
            return Err("JPEG state: frame or restart counters out of range");
        }
        // Length and Segment: a marker begin_marker lets through to a segment. (In Length
        // the body is the last segment's, cleared when the length is read.)
        let code = t.marker;
        // A scan header being read was counted as a segment at its marker, and is counted as a
        // scan only at its end: fewer scans than segments so far.
        let marker_ok = self.budget.segments() > 0
            && !(is_sof(code) && self.frame.is_some())
            && !(code == 0xDA && (self.frame.is_none() || self.scans >= self.budget.segments()));
        let kept = is_sof(code) || matches!(code, 0xDA | 0xDD);
        let body_ok = t.keep_body == kept
            && if kept {
                t.body.len() + usize::from(t.remaining) <= MAX_KEPT_BODY
                    && usize::from(t.keep_max) >= MAX_KEPT_BODY
            } else {
                t.body.is_empty()
            };
        let ok = match t.state {
            State::Soi => self.budget.segments() == 0,
            State::Marker | State::MarkerCode => true,
            State::Length => marker_ok,
            State::Segment => t.remaining > 0 && marker_ok && body_ok,
            State::Entropy { .. } => self.frame.is_some() && self.scans > 0,
            State::End => self.scans > 0,
        };
        if !ok {
            return Err("JPEG state: the marker or segment being read does not fit the state");
        }
        if t.state != State::Segment && t.body.len() > MAX_KEPT_BODY {
            return Err("JPEG state: kept segment body over its maximum");
        }
        Ok(())
    }

    /// Applies `limits` where they are tighter than the saved ones (after
    /// [`JpegValidator::check_saved`]); what the file already showed must fit them.
    /// Outside a segment, drops the body the last kept segment left.
    pub(crate) fn tighten(&mut self, limits: &ImageLimits) -> Result<()> {
        if self.tokens.state != State::Segment {
            self.tokens.release_gathered();
        }
        self.budget.tighten(limits)?;
        match &self.frame {
            Some(f) => self
                .budget
                .dimensions(u32::from(f.width), u32::from(f.height)),
            None => Ok(()),
        }
    }

    fn invalid(&self, offset: u64, reason: impl Into<String>) -> Error {
        Error::InvalidContent {
            media_type: MEDIA_TYPE.into(),
            offset,
            reason: reason.into(),
        }
    }

    fn fail(&mut self, e: Error) -> Error {
        self.failed = Some(Box::new(e.clone()));
        e
    }

    #[inline]
    fn on_event(&mut self, event: Event<'_>) -> Result<()> {
        match event {
            Event::Entropy(_) | Event::Data(_) | Event::Gathered | Event::Soi => Ok(()),
            Event::Restart { n, at } => {
                if n != self.next_rst {
                    return Err(self.invalid(
                        at,
                        format!(
                            "restart marker RST{n} where RST{} was due; the scan data is corrupt",
                            self.next_rst
                        ),
                    ));
                }
                self.next_rst = (n + 1) % 8;
                Ok(())
            }
            Event::Marker { code, at } => self.begin_marker(code, at),
            Event::SegmentBegin { marker, at, length } => self.begin_segment(marker, at, length),
            Event::SegmentEnd { marker, at } => self.end_segment(marker, at),
            Event::Eoi { at } => {
                if self.scans == 0 {
                    return Err(
                        self.invalid(at, "EOI before any scan (SOS): the image has no scan data")
                    );
                }
                Ok(())
            }
            Event::Trailing { at, .. } if !self.allow_trailing => Err(Error::TrailingData {
                media_type: MEDIA_TYPE.into(),
                offset: at,
            }),
            Event::Trailing { .. } => Ok(()),
        }
    }

    /// A marker (other than EOI and a restart inside scan data) at `at`.
    fn begin_marker(&mut self, code: u8, at: u64) -> Result<()> {
        match code {
            0xD8 => Err(self.invalid(at, "a second SOI marker inside the image")),
            0xD0..=0xD7 => Err(self.invalid(
                at,
                format!("restart marker RST{} outside scan data", code - 0xD0),
            )),
            _ if !has_segment(code) => Ok(()),
            _ => {
                if is_sof(code) && self.frame.is_some() {
                    return Err(self.invalid(
                        at,
                        format!(
                            "a second frame header (SOF{}); only one frame is supported",
                            code - 0xC0
                        ),
                    ));
                }
                if code == 0xDA && self.frame.is_none() {
                    return Err(self.invalid(at, "a scan (SOS) before the frame header (SOF)"));
                }
                self.budget.segment()
            }
        }
    }

    /// A marker segment's length is known: check it before reading the body.
    fn begin_segment(&mut self, code: u8, at: u64, data_len: u16) -> Result<()> {
        if matches!(code, 0xE0..=0xEF | 0xFE) {
            self.budget.metadata(u64::from(data_len))?;
        }
        if is_sof(code) || matches!(code, 0xDA | 0xDD) {
            if usize::from(data_len) > MAX_KEPT_BODY {
                return Err(self.invalid(
                    at,
                    format!(
                        "marker 0x{code:02x} declares {data_len} bytes, more than its fields can fill"
                    ),
                ));
            }
            self.tokens.gather(MAX_KEPT_BODY);
        }
        Ok(())
    }

    /// A segment's body is complete.
    fn end_segment(&mut self, code: u8, at: u64) -> Result<()> {
        let result = if is_sof(code) {
            self.parse_frame(at)
        } else if code == 0xDA {
            self.parse_scan(at)
        } else if code == 0xDD && self.tokens.gathered().len() != 2 {
            Err(self.invalid(
                at,
                format!(
                    "DRI is {} bytes long; it must be 2",
                    self.tokens.gathered().len()
                ),
            ))
        } else {
            Ok(())
        };
        if is_sof(code) || matches!(code, 0xDA | 0xDD) {
            self.tokens.release_gathered();
        }
        result
    }

    fn parse_frame(&mut self, at: u64) -> Result<()> {
        let b = self.tokens.gathered();
        let Some(header) = FrameHeader::parse(b) else {
            return Err(self.invalid(
                at,
                format!("frame header of {} bytes; it needs at least 6", b.len()),
            ));
        };
        let FrameHeader {
            precision,
            height,
            width,
            components,
        } = header;
        let components = usize::from(components);
        if !(1..=4).contains(&components) {
            return Err(self.invalid(
                at,
                format!("frame header declares {components} components; 1 to 4 are allowed"),
            ));
        }
        if b.len() != 6 + 3 * components {
            return Err(self.invalid(
                at,
                format!(
                    "frame header is {} bytes long but {components} components need {}",
                    b.len(),
                    6 + 3 * components
                ),
            ));
        }
        if !(2..=16).contains(&precision) {
            return Err(self.invalid(
                at,
                format!("frame header sample precision {precision}; 2 to 16 bits exist"),
            ));
        }
        if width == 0 || height == 0 {
            return Err(self.invalid(
                at,
                format!("frame header declares {width} x {height} pixels; both must be non-zero"),
            ));
        }
        self.budget
            .dimensions(u32::from(width), u32::from(height))?;
        let mut ids = Vec::with_capacity(components);
        for c in b[6..].chunks_exact(3) {
            let (h, v) = (c[1] >> 4, c[1] & 0x0F);
            if !(1..=4).contains(&h) || !(1..=4).contains(&v) {
                return Err(self.invalid(
                    at,
                    format!(
                        "component {} has sampling factors {h}x{v}; 1 to 4 are allowed",
                        c[0]
                    ),
                ));
            }
            if c[2] > 3 {
                return Err(self.invalid(
                    at,
                    format!(
                        "component {} uses quantisation table {}; 0 to 3 exist",
                        c[0], c[2]
                    ),
                ));
            }
            ids.push(c[0]);
        }
        self.frame = Some(Frame {
            width,
            height,
            component_ids: ids,
        });
        Ok(())
    }

    fn parse_scan(&mut self, at: u64) -> Result<()> {
        let b = self.tokens.gathered();
        let count = usize::from(*b.first().unwrap_or(&0));
        if !(1..=4).contains(&count) {
            return Err(self.invalid(
                at,
                format!("scan header declares {count} components; 1 to 4 are allowed"),
            ));
        }
        if b.len() != 4 + 2 * count {
            return Err(self.invalid(
                at,
                format!(
                    "scan header is {} bytes long but {count} components need {}",
                    b.len(),
                    4 + 2 * count
                ),
            ));
        }
        let Some(frame) = self.frame.as_ref() else {
            // Checked at the SOS marker, and by check_saved for a restored walk.
            return Err(self.invalid(at, "a scan (SOS) before the frame header (SOF)"));
        };
        let components = b.get(1..1 + 2 * count).unwrap_or_default();
        if let Some(&[id, _]) = components
            .chunks_exact(2)
            .find(|c| !frame.component_ids.contains(&c[0]))
        {
            return Err(self.invalid(
                at,
                format!("scan uses component {id} which the frame does not define"),
            ));
        }
        self.scans = self.scans.saturating_add(1);
        self.next_rst = 0;
        Ok(())
    }
}

impl Validator for JpegValidator {
    fn save(&self) -> Option<crate::image::ValidatorState> {
        Some(crate::image::ValidatorState::jpeg(self))
    }

    fn update(&mut self, mut data: &[u8]) -> Result<()> {
        if let Some(first) = &self.failed {
            return Err(Error::AlreadyFailed {
                first: first.clone(),
            });
        }
        loop {
            let (n, event) = match self.tokens.next(data) {
                Ok(step) => step,
                Err(e) => return Err(self.fail(e.into())),
            };
            data = data.get(n..).unwrap_or_default();
            match event {
                Some(event) => {
                    if let Err(e) = self.on_event(event) {
                        return Err(self.fail(e));
                    }
                }
                None if data.is_empty() => return Ok(()),
                None => {}
            }
        }
    }

    fn dimensions(&self) -> Option<(u32, u32)> {
        self.frame
            .as_ref()
            .map(|f| (u32::from(f.width), u32::from(f.height)))
    }

    fn finish(&mut self) -> Result<ContentInfo> {
        if let Some(first) = &self.failed {
            return Err(Error::AlreadyFailed {
                first: first.clone(),
            });
        }
        if let Err(e) = self.tokens.finish() {
            let e = match e {
                // Between segments: what is missing depends on whether a scan came.
                TokenError::Truncated {
                    at,
                    inside: Inside::BetweenSegments,
                } if self.scans == 0 => {
                    self.invalid(at, "the file ends before any image data; it is truncated")
                }
                other => other.into(),
            };
            return Err(self.fail(e));
        }
        Ok(ContentInfo {
            dimensions: self.dimensions(),
        })
    }
}
