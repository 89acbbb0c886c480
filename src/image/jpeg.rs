//! Incremental structural JPEG validator.
//!
//! Walks the marker segments and the entropy-coded data as slices arrive, with a few bytes
//! of state and one small segment body (SOF, SOS or DRI; under 1 KiB). Checks:
//!
//! - SOI first, with nothing before it;
//! - every marker: a defined code (0xFF fill bytes allowed before it), and for marker
//!   segments a length of at least 2, counted against [`ImageLimits::max_segments`](crate::ImageLimits::max_segments) and, for
//!   APPn and COM, against [`ImageLimits::max_metadata_bytes`](crate::ImageLimits::max_metadata_bytes);
//! - one frame header (SOF0-SOF15 except DHT, JPG and DAC) with non-zero width and height
//!   within [`ImageLimits`](crate::ImageLimits), 1-4 components, and a length that matches them;
//! - at least one SOS after the frame header, 1-4 components that the frame defines;
//! - entropy-coded data scanned for markers: 0xFF00 is stuffing, RST0-RST7 must come in
//!   sequence, any other marker ends the scan (progressive files have many scans);
//! - EOI last; anything after it is rejected unless trailing bytes are allowed.
//!
//! No pixel is decoded. The entropy-coded data, most of the file, is scanned for 0xFF with
//! a 64-bit position mask per 64-byte block, visiting each 0xFF once.

use crate::error::{Error, Result};
use crate::image::{Budget, Progress, Walk};
use crate::inspect::{ContentInfo, Validator};
use crate::policy::ImageLimits;
use serde::{Deserialize, Serialize};

const MEDIA_TYPE: &str = "image/jpeg";

/// Longest segment body the validator keeps to parse (SOF with 255 components).
const MAX_KEPT_BODY: usize = 6 + 3 * 255;

/// Where the walk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum State {
    /// Reading SOI (`FF D8`); `have` bytes so far.
    Soi,
    /// Expecting the 0xFF that starts a marker.
    Marker,
    /// After 0xFF: expecting a marker code (more 0xFF are fill).
    MarkerCode,
    /// Reading a segment's 2-byte length.
    Length,
    /// Reading a segment's data.
    Segment,
    /// Inside entropy-coded data; `ff` when the last byte was 0xFF.
    Entropy { ff: bool },
    /// After EOI.
    End,
}

/// The frame header's facts the other rules need.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Frame {
    width: u16,
    height: u16,
    component_ids: Vec<u8>,
}

/// Incremental JPEG structure checker; see the [module docs](self).
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
    budget: Budget,
    allow_trailing: bool,

    state: State,
    progress: Progress,
    buf: [u8; 2],
    have: usize,

    marker: u8,
    marker_at: u64,
    remaining: u16,
    body: Vec<u8>,
    keep_body: bool,

    frame: Option<Frame>,
    scans: u32,
    next_rst: u8,
}

impl JpegValidator {
    /// Checks a restored state against every invariant the walk relies on
    /// ([`ValidatorState::restore`](crate::image::ValidatorState::restore)): the partial
    /// bytes held for the state, positions, a marker that [`JpegValidator::begin_marker`]
    /// would have let in for the segment being read (a scan header only after the frame
    /// header, a frame header only before it), the segment body, the frame's fields, and
    /// the counts within their limits.
    pub(crate) fn check_saved(&self) -> std::result::Result<(), &'static str> {
        let have_ok = match self.state {
            State::Soi | State::Length => self.have < 2,
            _ => self.have == 0,
        };
        if !have_ok {
            return Err("JPEG state: partial marker bytes out of range");
        }
        self.budget.check_saved()?;
        let offset = self.progress.offset;
        if offset > crate::image::MAX_SAVED_OFFSET || self.marker_at > offset {
            return Err("JPEG state: position past any file");
        }
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
        let code = self.marker;
        let marker_ok = is_segment_marker(code)
            && self.budget.segments() > 0
            && !(is_sof(code) && self.frame.is_some())
            && !(code == 0xDA && self.frame.is_none());
        let kept = is_sof(code) || matches!(code, 0xDA | 0xDD);
        let body_ok = self.keep_body == kept
            && if kept {
                self.body.len() + usize::from(self.remaining) <= MAX_KEPT_BODY
            } else {
                self.body.is_empty()
            };
        let ok = match self.state {
            State::Soi => offset == self.have as u64 && self.budget.segments() == 0,
            State::Marker | State::MarkerCode => offset >= 2,
            State::Length => offset >= 2 && marker_ok,
            State::Segment => offset >= 2 && self.remaining > 0 && marker_ok && body_ok,
            State::Entropy { .. } => offset >= 2 && self.frame.is_some() && self.scans > 0,
            State::End => offset >= 2 && self.scans > 0,
        };
        if !ok {
            return Err("JPEG state: the marker or segment being read does not fit the state");
        }
        if self.state != State::Segment && self.body.len() > MAX_KEPT_BODY {
            return Err("JPEG state: kept segment body over its maximum");
        }
        Ok(())
    }

    /// Applies `limits` where they are tighter than the saved ones (after
    /// [`JpegValidator::check_saved`]); what the file already showed must fit them.
    /// Outside a segment, drops the body the last kept segment left.
    pub(crate) fn tighten(&mut self, limits: &ImageLimits) -> Result<()> {
        if self.state != State::Segment {
            self.body = Vec::new();
            self.keep_body = false;
        }
        self.budget.tighten(limits)?;
        match &self.frame {
            Some(f) => self
                .budget
                .dimensions(u32::from(f.width), u32::from(f.height)),
            None => Ok(()),
        }
    }

    /// Bytes walked so far.
    pub(crate) fn offset(&self) -> u64 {
        self.progress.offset
    }

    /// A validator for a file starting now, with the image limits of `limits`.
    /// `allow_trailing` accepts bytes after EOI.
    pub fn new(limits: &ImageLimits, allow_trailing: bool) -> Self {
        JpegValidator {
            budget: Budget::new(limits),
            allow_trailing,
            state: State::Soi,
            progress: Progress::default(),
            buf: [0; 2],
            have: 0,
            marker: 0,
            marker_at: 0,
            remaining: 0,
            body: Vec::new(),
            keep_body: false,
            frame: None,
            scans: 0,
            next_rst: 0,
        }
    }

    fn invalid(&self, offset: u64, reason: impl Into<String>) -> Error {
        Error::InvalidContent {
            media_type: MEDIA_TYPE.into(),
            offset,
            reason: reason.into(),
        }
    }

    fn consume(&mut self, data: &[u8]) -> Result<usize> {
        match self.state {
            State::Soi => {
                let want = if self.have == 0 { 0xFF } else { 0xD8 };
                if data[0] != want {
                    return Err(self.invalid(
                        self.progress.offset,
                        "the file does not start with a JPEG SOI marker (FF D8); it is not a \
                         JPEG, or something precedes the image",
                    ));
                }
                self.have += 1;
                if self.have == 2 {
                    self.have = 0;
                    self.state = State::Marker;
                }
                Ok(1)
            }
            State::Marker => {
                if data[0] != 0xFF {
                    return Err(self.invalid(
                        self.progress.offset,
                        format!("expected a marker (0xFF) but found 0x{:02x}; the segment before it has a wrong length", data[0]),
                    ));
                }
                self.marker_at = self.progress.offset;
                self.state = State::MarkerCode;
                Ok(1)
            }
            State::MarkerCode => {
                let code = data[0];
                if code != 0xFF {
                    self.begin_marker(code)?;
                }
                Ok(1)
            }
            State::Length => {
                let take = (2 - self.have).min(data.len());
                self.buf[self.have..self.have + take].copy_from_slice(&data[..take]);
                self.have += take;
                if self.have == 2 {
                    self.have = 0;
                    self.begin_segment(u16::from_be_bytes(self.buf))?;
                }
                Ok(take)
            }
            State::Segment => {
                let take = usize::from(self.remaining).min(data.len());
                if self.keep_body {
                    self.body.extend_from_slice(&data[..take]);
                }
                self.remaining -= take as u16;
                if self.remaining == 0 {
                    self.end_segment()?;
                }
                Ok(take)
            }
            State::Entropy { ff: false } => self.scan_entropy(data),
            State::Entropy { ff: true } => {
                self.after_ff(data[0])?;
                Ok(1)
            }
            State::End => {
                if self.allow_trailing {
                    Ok(data.len())
                } else {
                    Err(Error::TrailingData {
                        media_type: MEDIA_TYPE.into(),
                        offset: self.progress.offset,
                    })
                }
            }
        }
    }

    /// Scans entropy-coded data for the marker that ends it, passing over stuffed 0xFF00
    /// and in-sequence restart markers without leaving the loop. Returns the bytes consumed.
    fn scan_entropy(&mut self, data: &[u8]) -> Result<usize> {
        // `pos`: the first byte not yet consumed. Whole 64-byte blocks are tested at once;
        // each 0xFF in a block is handled in turn without scanning the block again.
        let mut pos = 0;
        let mut blocks = data.chunks_exact(64);
        for (n, block) in (&mut blocks).enumerate() {
            let base = n * 64;
            // Cannot fail: `chunks_exact(64)` yields 64-byte blocks only.
            let mut mask = ff_mask(block.try_into().expect("64-byte block"));
            while mask != 0 {
                let at = base + mask.trailing_zeros() as usize;
                mask &= mask - 1;
                if at < pos {
                    continue; // the byte after a previous 0xFF, already consumed
                }
                if let Some(done) = self.entropy_ff(data, at)? {
                    return Ok(done);
                }
                pos = at + 2;
            }
        }
        let tail = data.len() - blocks.remainder().len();
        let mut at = pos.max(tail);
        while let Some(i) = data[at..].iter().position(|&b| b == 0xFF) {
            if let Some(done) = self.entropy_ff(data, at + i)? {
                return Ok(done);
            }
            at += i + 2;
            if at >= data.len() {
                break;
            }
        }
        Ok(data.len())
    }

    /// A 0xFF at `at` in entropy-coded data. Returns `Some(consumed)` when the scan leaves
    /// the fast loop (a marker, a fill byte, or the slice ends on the 0xFF), `None` when
    /// the scan goes on after the two bytes (stuffing or a restart marker).
    fn entropy_ff(&mut self, data: &[u8], at: usize) -> Result<Option<usize>> {
        self.marker_at = self.progress.offset.saturating_add(at as u64);
        self.state = State::Entropy { ff: true };
        let Some(&next) = data.get(at + 1) else {
            // The slice ends on 0xFF: the next byte decides.
            return Ok(Some(data.len()));
        };
        if next == 0xFF {
            // Fill byte: the marker starts at the last 0xFF.
            self.marker_at = self.marker_at.saturating_add(1);
            return Ok(Some(at + 2));
        }
        self.after_ff(next)?;
        if self.state == (State::Entropy { ff: false }) {
            Ok(None)
        } else {
            Ok(Some(at + 2))
        }
    }

    /// The byte after a 0xFF inside entropy-coded data.
    fn after_ff(&mut self, code: u8) -> Result<()> {
        match code {
            0x00 => self.state = State::Entropy { ff: false },
            0xFF => self.marker_at = self.progress.offset,
            0xD0..=0xD7 => {
                let n = code - 0xD0;
                if n != self.next_rst {
                    return Err(self.invalid(
                        self.marker_at,
                        format!(
                            "restart marker RST{n} where RST{} was due; the scan data is corrupt",
                            self.next_rst
                        ),
                    ));
                }
                self.next_rst = (n + 1) % 8;
                self.state = State::Entropy { ff: false };
            }
            _ => self.begin_marker(code)?,
        }
        Ok(())
    }

    /// A marker code follows 0xFF (at `marker_at`).
    fn begin_marker(&mut self, code: u8) -> Result<()> {
        let at = self.marker_at;
        self.marker = code;
        match code {
            0xD8 => Err(self.invalid(at, "a second SOI marker inside the image")),
            0xD9 => {
                if self.scans == 0 {
                    return Err(
                        self.invalid(at, "EOI before any scan (SOS): the image has no scan data")
                    );
                }
                self.state = State::End;
                Ok(())
            }
            0xD0..=0xD7 => Err(self.invalid(
                at,
                format!("restart marker RST{} outside scan data", code - 0xD0),
            )),
            0x01 => {
                self.state = State::Marker;
                Ok(())
            }
            0x00 | 0x02..=0xBF => Err(self.invalid(
                at,
                format!("0xFF 0x{code:02x} is not a JPEG marker; the file is corrupt"),
            )),
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
                self.budget.segment()?;
                self.state = State::Length;
                Ok(())
            }
        }
    }

    /// A marker segment's length is known: check it before reading the data.
    fn begin_segment(&mut self, len: u16) -> Result<()> {
        let at = self.marker_at;
        let code = self.marker;
        if len < 2 {
            return Err(self.invalid(
                at,
                format!("marker 0x{code:02x} declares a segment length of {len}; the minimum is 2"),
            ));
        }
        let data_len = len - 2;
        if matches!(code, 0xE0..=0xEF | 0xFE) {
            self.budget.metadata(u64::from(data_len))?;
        }
        self.keep_body = is_sof(code) || matches!(code, 0xDA | 0xDD);
        if self.keep_body && usize::from(data_len) > MAX_KEPT_BODY {
            return Err(self.invalid(
                at,
                format!(
                    "marker 0x{code:02x} declares {data_len} bytes, more than its fields can fill"
                ),
            ));
        }
        self.body.clear();
        self.remaining = data_len;
        if data_len == 0 {
            self.end_segment()
        } else {
            self.state = State::Segment;
            Ok(())
        }
    }

    /// A segment's data is complete.
    fn end_segment(&mut self) -> Result<()> {
        let code = self.marker;
        self.state = State::Marker;
        if is_sof(code) {
            self.parse_frame()
        } else if code == 0xDA {
            self.parse_scan()
        } else if code == 0xDD && self.body.len() != 2 {
            Err(self.invalid(
                self.marker_at,
                format!("DRI is {} bytes long; it must be 2", self.body.len()),
            ))
        } else {
            Ok(())
        }
    }

    fn parse_frame(&mut self) -> Result<()> {
        let at = self.marker_at;
        let b = &self.body;
        if b.len() < 6 {
            return Err(self.invalid(
                at,
                format!("frame header of {} bytes; it needs at least 6", b.len()),
            ));
        }
        let precision = b[0];
        let height = u16::from_be_bytes([b[1], b[2]]);
        let width = u16::from_be_bytes([b[3], b[4]]);
        let components = usize::from(b[5]);
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
        if !(1..=16).contains(&precision) {
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

    fn parse_scan(&mut self) -> Result<()> {
        let at = self.marker_at;
        let b = &self.body;
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
        self.state = State::Entropy { ff: false };
        Ok(())
    }

    fn describe_end(&self) -> String {
        match self.state {
            State::Soi => "the file ends inside the SOI marker".to_owned(),
            State::Entropy { .. } => {
                "the file ends inside scan data, without EOI; it is truncated".to_owned()
            }
            State::Marker if self.scans > 0 => {
                "the file ends without an EOI marker; it is truncated".to_owned()
            }
            State::Marker => "the file ends before any image data; it is truncated".to_owned(),
            _ => format!(
                "the file ends inside the segment of marker 0x{:02x}; it is truncated",
                self.marker
            ),
        }
    }
}

/// The markers [`JpegValidator::begin_marker`] reads a segment length after: every code
/// from C0 on except RST0-RST7, SOI and EOI (FF is fill, never a marker).
fn is_segment_marker(code: u8) -> bool {
    matches!(code, 0xC0..=0xCF | 0xDA..=0xFE)
}

/// SOF0-SOF15 except DHT (C4), JPG (C8) and DAC (CC).
fn is_sof(code: u8) -> bool {
    matches!(code, 0xC0..=0xCF) && !matches!(code, 0xC4 | 0xC8 | 0xCC)
}

/// Bit `i` set when `block[i]` is 0xFF.
///
/// Hand-written for the entropy-coded data, most of a JPEG: it holds a 0xFF about every
/// 256 bytes, so a search that returns one position per call (`memchr`) pays its setup
/// again after every stuffed byte. With a mask per 64-byte block, every 0xFF of the block
/// is visited from one load. `validate_jpeg` on 10 MiB (`benches/pipeline.rs`): 9.2-9.5
/// GiB/s with one word-trick search per 0xFF, 13.3 GiB/s with this mask.
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

/// Index of the first 0xFF byte.
pub(crate) fn find_ff(data: &[u8]) -> Option<usize> {
    let mut blocks = data.chunks_exact(64);
    for (n, block) in (&mut blocks).enumerate() {
        // Cannot fail: `chunks_exact(64)` yields 64-byte blocks only.
        let mask = ff_mask(block.try_into().expect("64-byte block"));
        if mask != 0 {
            return Some(n * 64 + mask.trailing_zeros() as usize);
        }
    }
    let tail = data.len() - blocks.remainder().len();
    blocks
        .remainder()
        .iter()
        .position(|&b| b == 0xFF)
        .map(|i| tail + i)
}

impl Walk for JpegValidator {
    fn step(&mut self, data: &[u8]) -> Result<usize> {
        self.consume(data)
    }

    fn progress(&mut self) -> &mut Progress {
        &mut self.progress
    }

    fn incomplete(&self) -> Option<Error> {
        (self.state != State::End).then(|| self.invalid(self.progress.offset, self.describe_end()))
    }
}

impl Validator for JpegValidator {
    fn save(&self) -> Option<crate::image::ValidatorState> {
        Some(crate::image::ValidatorState::jpeg(self))
    }

    fn update(&mut self, data: &[u8]) -> Result<()> {
        self.feed(data)
    }

    fn dimensions(&self) -> Option<(u32, u32)> {
        self.frame
            .as_ref()
            .map(|f| (u32::from(f.width), u32::from(f.height)))
    }

    fn finish(&mut self) -> Result<ContentInfo> {
        self.end()?;
        Ok(ContentInfo {
            dimensions: self.dimensions(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::find_ff;

    #[test]
    fn find_ff_finds_the_first_in_any_position() {
        for len in [0usize, 1, 7, 63, 64, 65, 200] {
            for at in 0..len {
                let mut data = vec![0xFEu8; len];
                data[at] = 0xFF;
                if at + 1 < len {
                    data[len - 1] = 0xFF;
                }
                assert_eq!(find_ff(&data), Some(at), "len {len} at {at}");
            }
            assert_eq!(find_ff(&vec![0x7F; len]), None);
        }
    }
}
