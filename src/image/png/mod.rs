//! PNG: one [`Tokenizer`] that walks the chunks, and the consumers built on its events.
//!
//! # Layers
//!
//! - [`Tokenizer`] (IO-free, fed any slice) reads the signature, each chunk's length,
//!   type, data and CRC, the end after IEND and the bytes after it, and emits them as
//!   [`Event`]s: data as slices of the input, never copied, except the first bytes of a
//!   chunk a consumer asks to [`gather`](Tokenizer::gather) (at most [`MAX_GATHER`]).
//!   It reads every length field of the format, and checks only what it needs to walk.
//! - [`PngValidator`] applies the format's rules to those events (below).
//! - [`MetadataStripper`](crate::image::strip::MetadataStripper) copies the chunks that
//!   decide how the image looks and drops the others.
//! - [`DimensionReader`](crate::image::DimensionReader) reads the width and height from
//!   IHDR and stops.
//!
//! No other code reads a PNG chunk header: the tokenizer's `State::Header` is the one
//! place that reads a length field (and `State::Crc` the one that reads a CRC), and
//! [`Ihdr::parse`] the one that reads IHDR's fields. To check: under `src/image`,
//! `from_be_bytes` appears in `png/tokenizer.rs`, `jpeg/tokenizer.rs`, these two header
//! parsers, and the stripper's EXIF reader (which reads TIFF, not PNG or JPEG).
//!
//! # The validator's rules
//!
//! Holding at most one small chunk body (IHDR, PLTE: under 1 KiB) and a CRC state, it
//! checks, in order of appearance:
//!
//! - the 8-byte signature, with nothing before it;
//! - every chunk: length <= 2^31 - 1, type of four ASCII letters, CRC-32 over type and data;
//!   unknown *critical* chunks are rejected, unknown ancillary ones allowed;
//! - IHDR first, 13 bytes: width and height within [`ImageLimits`] (checked before
//!   anything is decoded), a valid bit depth / colour type pair, compression, filter and
//!   interlace methods;
//! - PLTE: at most once, before IDAT, 1-256 entries (at most 2^depth for palette images),
//!   forbidden for greyscale, required for palette images;
//! - IDAT: at least one, all consecutive;
//! - IEND: empty, last; anything after it is rejected unless trailing bytes are allowed.
//!
//! APNG (acTL, fcTL, fdAT) is accepted as PNG. Ancillary chunks other than APNG's count as
//! metadata against [`ImageLimits::max_metadata_bytes`]; the chunk count is capped by
//! [`ImageLimits::max_segments`].
//!
//! # Examples
//!
//! Listing a file's chunks with the tokenizer alone, fed one byte at a time:
//!
//! ```
//! use attachments::image::png::{Event, TokenError, Tokenizer};
//!
//! let file: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\0\0\0\0\x3a\x7e\x9b\x55\0\0\0\nIDAT\x78\xda\x63\x68\0\0\0\x82\0\x81\xda\x45\x08\x3b\0\0\0\0IEND\xaeB`\x82";
//! let mut tokens = Tokenizer::new();
//! let mut names = Vec::new();
//! for byte in file.chunks(1) {
//!     tokens.feed(byte, |_, event| {
//!         if let Event::ChunkBegin(header) = event {
//!             names.push(header.name());
//!         }
//!         Ok::<_, TokenError>(())
//!     })?;
//! }
//! tokens.finish()?;
//! assert_eq!(names, ["IHDR", "IDAT", "IEND"]);
//! # Ok::<(), TokenError>(())
//! ```

mod tokenizer;

pub use tokenizer::{
    ChunkHeader, Crc, Event, Inside, MAX_GATHER, SIGNATURE, TokenError, Tokenizer,
};

use crate::error::{Error, Result};
use crate::image::Budget;
use crate::inspect::{ContentInfo, Validator};
use crate::policy::ImageLimits;
use serde::{Deserialize, Serialize};
use tokenizer::State;

/// Largest chunk length the PNG specification allows.
const MAX_CHUNK_LEN: u32 = 0x7fff_ffff;

/// Longest chunk body the validator keeps to parse (PLTE: 256 entries of 3 bytes).
const MAX_KEPT_BODY: usize = 768;

const MEDIA_TYPE: &str = "image/png";

/// IDAT progress, for the "consecutive IDAT" rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Idat {
    NotYet,
    Inside,
    Done,
}

/// IHDR's fields, as read (the validator checks them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Ihdr {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bits per sample (or per palette index).
    pub bit_depth: u8,
    /// 0 greyscale, 2 RGB, 3 palette, 4 greyscale and alpha, 6 RGBA.
    pub colour_type: u8,
    /// Compression method (0 is the only one).
    pub compression: u8,
    /// Filter method (0 is the only one).
    pub filter: u8,
    /// Interlace method: 0 none, 1 Adam7.
    pub interlace: u8,
}

impl Ihdr {
    /// IHDR's 13 bytes of data, read; `None` for another length.
    pub fn parse(data: &[u8]) -> Option<Ihdr> {
        let b: &[u8; 13] = data.try_into().ok()?;
        Some(Ihdr {
            width: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            height: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            bit_depth: b[8],
            colour_type: b[9],
            compression: b[10],
            filter: b[11],
            interlace: b[12],
        })
    }
}

/// The fields of IHDR the other rules need.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Header {
    width: u32,
    height: u32,
    bit_depth: u8,
    colour_type: u8,
}

/// Incremental PNG structure checker, on the [`Tokenizer`]'s events; see the
/// [module docs](self).
///
/// # Examples
///
/// ```
/// use attachments::image::png::PngValidator;
/// use attachments::{Limits, Validator};
///
/// let mut v = PngValidator::new(&Limits::demand().image, false);
/// // A signature, then a chunk that is not IHDR.
/// let err = v.update(b"\x89PNG\r\n\x1a\n\0\0\0\0IEND\xaeB`\x82").unwrap_err();
/// assert!(err.to_string().contains("IHDR"), "{err}");
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PngValidator {
    /// The walk; saved flat, beside the rules' state, as before the tokenizer was its own
    /// type (states saved then restore).
    #[serde(flatten)]
    tokens: Tokenizer,
    budget: Budget,
    allow_trailing: bool,
    header: Option<Header>,
    palette_entries: Option<u32>,
    idat: Idat,
    /// Not saved: only a validator that has not failed is saved.
    #[serde(skip)]
    failed: Option<Box<Error>>,
}

impl PngValidator {
    /// A validator for a file starting now, with the image limits `limits`.
    /// `allow_trailing` accepts bytes after IEND.
    pub fn new(limits: &ImageLimits, allow_trailing: bool) -> Self {
        PngValidator {
            tokens: Tokenizer::new(),
            budget: Budget::new(limits),
            allow_trailing,
            header: None,
            palette_entries: None,
            idat: Idat::NotYet,
            failed: None,
        }
    }

    /// Bytes walked so far.
    pub(crate) fn offset(&self) -> u64 {
        self.tokens.offset()
    }

    /// Checks a restored state against every invariant the walk relies on
    /// ([`ValidatorState::restore`](crate::image::ValidatorState::restore)): the
    /// tokenizer's own ([`Tokenizer::check_restored`]), then a chunk that
    /// [`PngValidator::begin_chunk`] would have let in (type, length, order against IHDR,
    /// PLTE and IDAT, the body gathered for IHDR and PLTE), the position of the first
    /// chunk, the header fields, and the counts within their limits.
    pub(crate) fn check_saved(&self) -> std::result::Result<(), &'static str> {
        let t = &self.tokens;
        t.check_saved()?;
        if !t.check_crc || t.state == State::Iend {
            return Err("PNG state: a walk the validator does not save");
        }
        self.budget.check_saved()?;
        let offset = t.progress.offset;
        if let Some(h) = self.header {
            let fields_ok = (1..=MAX_CHUNK_LEN).contains(&h.width)
                && (1..=MAX_CHUNK_LEN).contains(&h.height)
                && depth_allowed(h.colour_type, h.bit_depth) == Some(true)
                && self.budget.dimensions(h.width, h.height).is_ok();
            if !fields_ok {
                return Err("PNG state: header fields out of range");
            }
        }
        if let Some(n) = self.palette_entries {
            let fits = match self.header {
                Some(h) if h.colour_type == 3 => n <= 1 << h.bit_depth,
                Some(h) => !matches!(h.colour_type, 0 | 4),
                None => false,
            };
            if n == 0 || n > 256 || !fits {
                return Err("PNG state: a palette the header does not allow");
            }
        }
        if self.idat != Idat::NotYet {
            match self.header {
                Some(h) if h.colour_type != 3 || self.palette_entries.is_some() => {}
                _ => return Err("PNG state: image data without the header or palette it needs"),
            }
        }
        let first_chunk = self.header.is_none();
        if first_chunk
            && (self.palette_entries.is_some()
                || self.idat != Idat::NotYet
                || !matches!(
                    t.state,
                    State::Signature | State::Header | State::Data | State::Crc
                ))
        {
            return Err("PNG state: past the first chunk without a header");
        }
        match t.state {
            State::Signature if self.budget.segments() != 0 => {
                return Err("PNG state: inside the signature at another position");
            }
            State::Header
                if first_chunk
                    && (offset != 8 + t.have as u64
                        || self.budget.segments() != 0
                        || (t.have > 0 && t.chunk_start != 8)) =>
            {
                return Err("PNG state: before IHDR at another position");
            }
            State::Data | State::Crc => {
                let ty = &t.chunk_type;
                let kept = matches!(ty, b"IHDR" | b"PLTE");
                let order_ok = match ty {
                    b"IHDR" => first_chunk && t.chunk_start == 8,
                    _ if first_chunk => false,
                    b"IDAT" => self.idat == Idat::Inside,
                    b"PLTE" => self.palette_entries.is_none() && self.idat == Idat::NotYet,
                    b"IEND" => self.idat == Idat::Done,
                    _ => self.idat != Idat::Inside,
                };
                if t.chunk_len > MAX_CHUNK_LEN
                    || !ty.iter().all(u8::is_ascii_alphabetic)
                    || chunk_problem(ty, t.chunk_len).is_some()
                    || !order_ok
                    || self.budget.segments() == 0
                    || t.keep_body != kept
                    || (kept && (t.keep_max as usize) < t.chunk_len as usize)
                {
                    return Err("PNG state: the chunk being read does not fit the header seen");
                }
            }
            _ => {}
        }
        if !matches!(t.state, State::Data | State::Crc) && t.body.len() > MAX_KEPT_BODY {
            return Err("PNG state: a chunk body or start out of range");
        }
        if t.state == State::End && (first_chunk || self.idat != Idat::Done) {
            return Err("PNG state: at the end without image data");
        }
        Ok(())
    }

    /// Applies `limits` where they are tighter than the saved ones (after
    /// [`PngValidator::check_saved`]); what the file already showed must fit them. Outside
    /// a chunk, drops the body a finished IHDR or PLTE left (older saves kept it).
    pub(crate) fn tighten(&mut self, limits: &ImageLimits) -> Result<()> {
        if !matches!(self.tokens.state, State::Data | State::Crc) {
            self.tokens.release_gathered();
        }
        self.budget.tighten(limits)?;
        match self.header {
            Some(h) => self.budget.dimensions(h.width, h.height),
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

    fn on_event(&mut self, event: Event<'_>) -> Result<()> {
        match event {
            Event::ChunkBegin(h) => self.begin_chunk(h),
            Event::ChunkEnd { header, crc } => self.end_chunk(header, crc),
            Event::Trailing { at, .. } if !self.allow_trailing => Err(Error::TrailingData {
                media_type: MEDIA_TYPE.into(),
                offset: at,
            }),
            _ => Ok(()),
        }
    }

    /// A chunk's length and type are read: check them before reading its data.
    fn begin_chunk(&mut self, h: ChunkHeader) -> Result<()> {
        let (at, ty, len) = (h.at, h.chunk_type, h.length);
        let name = h.name();
        if !ty.iter().all(u8::is_ascii_alphabetic) {
            return Err(self.invalid(
                at.saturating_add(4),
                format!(
                    "chunk type \"{}\" is not four ASCII letters; the file is corrupt",
                    ty.escape_ascii()
                ),
            ));
        }
        if len > MAX_CHUNK_LEN {
            return Err(self.invalid(
                at,
                format!("chunk {name} declares {len} bytes, over the PNG maximum of 2^31-1"),
            ));
        }
        self.budget.segment()?;
        if self.header.is_none() && &ty != b"IHDR" {
            return Err(self.invalid(
                at,
                format!("the first chunk is {name}; a PNG must start with IHDR"),
            ));
        }
        if &ty == b"IHDR" && self.header.is_some() {
            return Err(self.invalid(at, "a second IHDR chunk"));
        }
        if let Some(reason) = chunk_problem(&ty, len) {
            return Err(self.invalid(at, reason));
        }
        if !is_known(&ty) {
            // An ancillary chunk (unknown critical ones are refused above).
            self.budget.metadata(u64::from(len))?;
        }
        // IDAT contiguity: an IDAT after IDATs ended, or anything else ending them.
        if &ty == b"IDAT" {
            match self.idat {
                Idat::Done => {
                    return Err(self.invalid(
                        at,
                        "IDAT chunks must be consecutive; another chunk comes between them",
                    ));
                }
                Idat::NotYet => {
                    // IHDR precedes every other chunk (checked above); `is_some_and` keeps
                    // a panic out all the same.
                    let palette_image = self.header.is_some_and(|h| h.colour_type == 3);
                    if palette_image && self.palette_entries.is_none() {
                        return Err(self.invalid(
                            at,
                            "a palette image (colour type 3) needs a PLTE chunk before its IDAT",
                        ));
                    }
                    self.idat = Idat::Inside;
                }
                Idat::Inside => {}
            }
        } else if self.idat == Idat::Inside {
            self.idat = Idat::Done;
        }
        if &ty == b"IEND" && self.idat == Idat::NotYet {
            return Err(self.invalid(at, "IEND before any IDAT: the image has no data"));
        }
        if &ty == b"PLTE" {
            if self.palette_entries.is_some() {
                return Err(self.invalid(at, "a second PLTE chunk"));
            }
            if self.idat != Idat::NotYet {
                return Err(self.invalid(
                    at,
                    "PLTE after IDAT; the palette must come before the image data",
                ));
            }
        }
        if matches!(&ty, b"IHDR" | b"PLTE") {
            self.tokens.gather(MAX_KEPT_BODY);
        }
        Ok(())
    }

    /// A chunk's CRC is read: it must match, then the chunk's own rules apply.
    fn end_chunk(&mut self, h: ChunkHeader, crc: Crc) -> Result<()> {
        let at = h.at;
        if let Crc::Mismatch { stored, computed } = crc {
            return Err(self.invalid(
                at.saturating_add(8 + u64::from(h.length)),
                format!(
                    "chunk {} has CRC {stored:08x} but its bytes give {computed:08x}; the file is corrupt",
                    h.name()
                ),
            ));
        }
        match &h.chunk_type {
            b"IHDR" => self.parse_header(at)?,
            b"PLTE" => {
                let entries = h.length / 3;
                let Some(header) = self.header else {
                    // IHDR precedes every other chunk: begin_chunk and check_saved see to it.
                    return Err(self.invalid(at, "PLTE before IHDR"));
                };
                match header.colour_type {
                    0 | 4 => {
                        return Err(self.invalid(
                            at,
                            "PLTE in a greyscale image (colour types 0 and 4 have no palette)",
                        ));
                    }
                    3 if u64::from(entries) > 1u64 << header.bit_depth.min(16) => {
                        return Err(self.invalid(
                            at,
                            format!("PLTE has {entries} entries but a {}-bit palette image can index only {}", header.bit_depth, 1u64 << header.bit_depth.min(16)),
                        ));
                    }
                    _ => {}
                }
                self.palette_entries = Some(entries);
            }
            _ => return Ok(()),
        }
        // The body was kept to parse above: nothing needs it any more.
        self.tokens.release_gathered();
        Ok(())
    }

    fn parse_header(&mut self, chunk_at: u64) -> Result<()> {
        let at = chunk_at.saturating_add(8);
        // 13 bytes: begin_chunk checked IHDR's length, and check_saved a restored one.
        let Some(ihdr) = Ihdr::parse(self.tokens.gathered()) else {
            return Err(self.invalid(at, "IHDR is not 13 bytes long"));
        };
        let Ihdr {
            width,
            height,
            bit_depth,
            colour_type,
            compression,
            filter,
            interlace,
        } = ihdr;
        if width == 0 || height == 0 || width > MAX_CHUNK_LEN || height > MAX_CHUNK_LEN {
            return Err(self.invalid(
                at,
                format!("IHDR declares {width} x {height} pixels; each must be 1 to 2^31-1"),
            ));
        }
        self.budget.dimensions(width, height)?;
        let Some(depth_ok) = depth_allowed(colour_type, bit_depth) else {
            return Err(self.invalid(
                at.saturating_add(9),
                format!("IHDR colour type {colour_type} does not exist (0, 2, 3, 4 and 6 do)"),
            ));
        };
        if !depth_ok {
            return Err(self.invalid(
                at.saturating_add(8),
                format!("IHDR bit depth {bit_depth} is not allowed with colour type {colour_type}"),
            ));
        }
        if compression != 0 || filter != 0 {
            return Err(self.invalid(
                at.saturating_add(10),
                format!(
                    "IHDR compression method {compression} / filter method {filter}; only 0 exists"
                ),
            ));
        }
        if interlace > 1 {
            return Err(self.invalid(
                at.saturating_add(12),
                format!("IHDR interlace method {interlace}; only 0 (none) and 1 (Adam7) exist"),
            ));
        }
        self.header = Some(Header {
            width,
            height,
            bit_depth,
            colour_type,
        });
        Ok(())
    }
}

/// Whether `bit_depth` goes with `colour_type`; `None` for a colour type that does not
/// exist.
fn depth_allowed(colour_type: u8, bit_depth: u8) -> Option<bool> {
    match colour_type {
        0 => Some(matches!(bit_depth, 1 | 2 | 4 | 8 | 16)),
        3 => Some(matches!(bit_depth, 1 | 2 | 4 | 8)),
        2 | 4 | 6 => Some(matches!(bit_depth, 8 | 16)),
        _ => None,
    }
}

/// The chunk types the validator knows; any other is metadata (ancillary) or refused
/// (critical).
fn is_known(ty: &[u8; 4]) -> bool {
    matches!(
        ty,
        b"IHDR" | b"IEND" | b"PLTE" | b"acTL" | b"fcTL" | b"fdAT" | b"IDAT"
    )
}

/// Why a chunk of type `ty` cannot declare `len` bytes (or at all), if it cannot: the
/// rules of [`PngValidator::begin_chunk`] that depend on the chunk alone, shared with
/// [`PngValidator::check_saved`].
fn chunk_problem(ty: &[u8; 4], len: u32) -> Option<String> {
    let name = String::from_utf8_lossy(ty);
    let exact = |want: u32| {
        (len != want).then(|| format!("chunk {name} is {len} bytes long; it must be {want}"))
    };
    match ty {
        b"IHDR" => exact(13),
        b"IEND" => exact(0),
        b"PLTE" if len == 0 || !len.is_multiple_of(3) || len as usize > MAX_KEPT_BODY => Some(
            format!("PLTE is {len} bytes long; it must hold 1 to 256 entries of 3 bytes"),
        ),
        b"acTL" => exact(8),
        b"fcTL" => exact(26),
        b"fdAT" if len < 4 => Some(format!(
            "fdAT is {len} bytes long; it must hold at least its 4-byte sequence number"
        )),
        _ if !is_known(ty) && ty[0].is_ascii_uppercase() => Some(format!(
            "unknown critical chunk {name}; a decoder cannot display this image"
        )),
        _ => None,
    }
}

impl Validator for PngValidator {
    fn save(&self) -> Option<crate::image::ValidatorState> {
        Some(crate::image::ValidatorState::png(self))
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
        self.header.map(|h| (h.width, h.height))
    }

    fn finish(&mut self) -> Result<ContentInfo> {
        if let Some(first) = &self.failed {
            return Err(Error::AlreadyFailed {
                first: first.clone(),
            });
        }
        if let Err(e) = self.tokens.finish() {
            return Err(self.fail(e.into()));
        }
        Ok(ContentInfo {
            dimensions: self.dimensions(),
        })
    }
}
