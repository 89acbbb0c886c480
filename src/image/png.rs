//! Incremental structural PNG validator.
//!
//! Walks the file chunk by chunk as slices arrive, holding at most one small chunk body
//! (IHDR, PLTE, acTL: under 1 KiB) and a CRC state. Checks, in order of appearance:
//!
//! - the 8-byte signature, with nothing before it;
//! - every chunk: length <= 2^31 - 1, type of four ASCII letters, CRC-32 over type and data;
//!   unknown *critical* chunks are rejected, unknown ancillary ones allowed;
//! - IHDR first, 13 bytes: width and height within [`ImageLimits`](crate::ImageLimits) (checked before anything is
//!   decoded), a valid bit depth / colour type pair, compression, filter and interlace
//!   methods;
//! - PLTE: at most once, before IDAT, 1-256 entries (at most 2^depth for palette images),
//!   forbidden for greyscale, required for palette images;
//! - IDAT: at least one, all consecutive;
//! - IEND: empty, last; anything after it is rejected unless trailing bytes are allowed.
//!
//! APNG (acTL, fcTL, fdAT) is accepted as PNG. Ancillary chunks other than APNG's count as
//! metadata against [`ImageLimits::max_metadata_bytes`](crate::ImageLimits::max_metadata_bytes); the chunk count is capped by
//! [`ImageLimits::max_segments`](crate::ImageLimits::max_segments).

use crate::error::{Error, Result};
use crate::image::{Budget, Progress, Walk};
use crate::inspect::{ContentInfo, Validator};
use crate::policy::ImageLimits;
use serde::{Deserialize, Serialize};

/// The PNG signature.
pub const SIGNATURE: [u8; 8] = *b"\x89PNG\r\n\x1a\n";

/// Largest chunk length the PNG specification allows.
const MAX_CHUNK_LEN: u32 = 0x7fff_ffff;

/// Longest chunk body the validator keeps to parse (PLTE: 256 entries of 3 bytes).
const MAX_KEPT_BODY: usize = 768;

const MEDIA_TYPE: &str = "image/png";

/// Where the walk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum State {
    /// Reading the 8-byte signature.
    Signature,
    /// Reading a chunk's length and type (8 bytes).
    Header,
    /// Reading a chunk's data.
    Data,
    /// Reading a chunk's CRC (4 bytes).
    Crc,
    /// After IEND.
    End,
}

/// IDAT progress, for the "consecutive IDAT" rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Idat {
    NotYet,
    Inside,
    Done,
}

/// The fields of IHDR the other rules need.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Header {
    width: u32,
    height: u32,
    bit_depth: u8,
    colour_type: u8,
}

/// Incremental PNG structure checker; see the [module docs](self).
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
    budget: Budget,
    allow_trailing: bool,

    state: State,
    progress: Progress,
    /// Partial signature / chunk header / CRC.
    buf: [u8; 8],
    have: usize,

    chunk_type: [u8; 4],
    chunk_len: u32,
    chunk_start: u64,
    remaining: u32,
    #[serde(with = "crate::image::crc_state")]
    crc: crc32fast::Hasher,
    body: Vec<u8>,
    keep_body: bool,

    header: Option<Header>,
    palette_entries: Option<u32>,
    idat: Idat,
}

impl PngValidator {
    /// Checks a restored state against every invariant the walk relies on
    /// ([`ValidatorState::restore`](crate::image::ValidatorState::restore)): the partial
    /// bytes held for the state, the position against the chunk being read, a chunk that
    /// [`PngValidator::begin_chunk`] would have let in (type, length, order against IHDR,
    /// PLTE and IDAT), the header fields, and the counts within their limits.
    pub(crate) fn check_saved(&self) -> std::result::Result<(), &'static str> {
        let have_ok = match self.state {
            State::Signature | State::Header => self.have < 8,
            State::Crc => self.have < 4,
            State::Data | State::End => self.have == 0,
        };
        if !have_ok {
            return Err("PNG state: partial header bytes out of range");
        }
        self.budget.check_saved()?;
        let offset = self.progress.offset;
        if offset > crate::image::MAX_SAVED_OFFSET {
            return Err("PNG state: position past any file");
        }
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
                    self.state,
                    State::Signature | State::Header | State::Data | State::Crc
                ))
        {
            return Err("PNG state: past the first chunk without a header");
        }
        let in_chunk = matches!(self.state, State::Data | State::Crc);
        match self.state {
            State::Signature => {
                let seen = self.buf.get(..self.have).unwrap_or_default();
                if offset != self.have as u64
                    || seen != &SIGNATURE[..seen.len()]
                    || self.budget.segments() != 0
                {
                    return Err("PNG state: inside the signature at another position");
                }
            }
            State::Header if first_chunk => {
                if offset != 8 + self.have as u64
                    || self.budget.segments() != 0
                    || (self.have > 0 && self.chunk_start != 8)
                {
                    return Err("PNG state: before IHDR at another position");
                }
            }
            State::Header if self.have > 0 => {
                if Some(self.chunk_start) != offset.checked_sub(self.have as u64) {
                    return Err("PNG state: a chunk header that starts elsewhere");
                }
            }
            State::Header | State::End => {}
            State::Data | State::Crc => {
                // Where the walk stands: 8 bytes of length and type, the data read, the
                // CRC bytes held.
                let read = self.chunk_len.checked_sub(self.remaining);
                let at = read.and_then(|read| {
                    self.chunk_start
                        .checked_add(8 + u64::from(read))?
                        .checked_add(self.have as u64)
                });
                if self.chunk_len > MAX_CHUNK_LEN
                    || at != Some(offset)
                    || (self.state == State::Data && self.remaining == 0)
                    || (self.state == State::Crc && self.remaining != 0)
                {
                    return Err("PNG state: chunk length and bytes left disagree");
                }
                let ty = &self.chunk_type;
                let kept = matches!(ty, b"IHDR" | b"PLTE");
                let order_ok = match ty {
                    b"IHDR" => first_chunk && self.chunk_start == 8,
                    _ if first_chunk => false,
                    b"IDAT" => self.idat == Idat::Inside,
                    b"PLTE" => self.palette_entries.is_none() && self.idat == Idat::NotYet,
                    b"IEND" => self.idat == Idat::Done,
                    _ => self.idat != Idat::Inside,
                };
                if !ty.iter().all(u8::is_ascii_alphabetic)
                    || chunk_problem(ty, self.chunk_len).is_some()
                    || !order_ok
                    || self.budget.segments() == 0
                    || self.keep_body != kept
                    || (kept && Some(self.body.len() as u32) != read)
                    || (!kept && !self.body.is_empty())
                {
                    return Err("PNG state: the chunk being read does not fit the header seen");
                }
            }
        }
        if !in_chunk && (self.body.len() > MAX_KEPT_BODY || self.chunk_start > offset) {
            return Err("PNG state: a chunk body or start out of range");
        }
        if self.state == State::End && (first_chunk || self.idat != Idat::Done) {
            return Err("PNG state: at the end without image data");
        }
        Ok(())
    }

    /// Applies `limits` where they are tighter than the saved ones (after
    /// [`PngValidator::check_saved`]); what the file already showed must fit them. Outside
    /// a chunk, drops the body a finished IHDR or PLTE left (older saves kept it).
    pub(crate) fn tighten(&mut self, limits: &ImageLimits) -> Result<()> {
        if !matches!(self.state, State::Data | State::Crc) {
            self.body = Vec::new();
            self.keep_body = false;
        }
        self.budget.tighten(limits)?;
        match self.header {
            Some(h) => self.budget.dimensions(h.width, h.height),
            None => Ok(()),
        }
    }

    /// Bytes walked so far.
    pub(crate) fn offset(&self) -> u64 {
        self.progress.offset
    }

    /// A validator for a file starting now, with the image limits of `limits`.
    /// `allow_trailing` accepts bytes after IEND.
    pub fn new(limits: &ImageLimits, allow_trailing: bool) -> Self {
        PngValidator {
            budget: Budget::new(limits),
            allow_trailing,
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
            header: None,
            palette_entries: None,
            idat: Idat::NotYet,
        }
    }

    fn invalid(&self, offset: u64, reason: impl Into<String>) -> Error {
        Error::InvalidContent {
            media_type: MEDIA_TYPE.into(),
            offset,
            reason: reason.into(),
        }
    }

    fn type_name(&self) -> String {
        String::from_utf8_lossy(&self.chunk_type).into_owned()
    }

    /// Copies bytes into `buf` until it holds `want`; returns how many were taken.
    fn fill(&mut self, data: &[u8], want: usize) -> usize {
        let take = (want - self.have).min(data.len());
        self.buf[self.have..self.have + take].copy_from_slice(&data[..take]);
        self.have += take;
        take
    }

    fn consume(&mut self, data: &[u8]) -> Result<usize> {
        match self.state {
            State::Signature => {
                let start = self.have;
                let n = self.fill(data, 8);
                if let Some(i) = (start..self.have).find(|&i| self.buf[i] != SIGNATURE[i]) {
                    return Err(self.invalid(
                        i as u64,
                        "the file does not start with the PNG signature; it is not a PNG, or \
                         something precedes the image",
                    ));
                }
                if self.have == 8 {
                    self.have = 0;
                    self.state = State::Header;
                }
                Ok(n)
            }
            State::Header => {
                if self.have == 0 {
                    self.chunk_start = self.progress.offset;
                }
                let n = self.fill(data, 8);
                if self.have == 8 {
                    self.have = 0;
                    self.begin_chunk()?;
                }
                Ok(n)
            }
            State::Data => {
                let take = (self.remaining as usize).min(data.len());
                let part = &data[..take];
                self.crc.update(part);
                if self.keep_body {
                    self.body.extend_from_slice(part);
                }
                self.remaining -= take as u32;
                if self.remaining == 0 {
                    self.state = State::Crc;
                }
                Ok(take)
            }
            State::Crc => {
                let n = self.fill(data, 4);
                if self.have == 4 {
                    self.have = 0;
                    self.end_chunk()?;
                }
                Ok(n)
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

    /// A chunk's length and type are in `buf`: check them before reading its data.
    fn begin_chunk(&mut self) -> Result<()> {
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        self.chunk_type = [self.buf[4], self.buf[5], self.buf[6], self.buf[7]];
        let at = self.chunk_start;
        let ty = self.chunk_type;
        let name = self.type_name();

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

        self.keep_body = matches!(&ty, b"IHDR" | b"PLTE");
        self.body.clear();
        self.crc = crc32fast::Hasher::new();
        self.crc.update(&ty);
        self.chunk_len = len;
        self.remaining = len;
        self.state = if len == 0 { State::Crc } else { State::Data };
        Ok(())
    }

    /// A chunk's CRC is in `buf`: verify it, then apply the chunk's own rules.
    fn end_chunk(&mut self) -> Result<()> {
        let stored = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        let computed = std::mem::take(&mut self.crc).finalize();
        let at = self.chunk_start;
        if stored != computed {
            return Err(self.invalid(
                at.saturating_add(8 + u64::from(self.chunk_len)),
                format!(
                    "chunk {} has CRC {stored:08x} but its bytes give {computed:08x}; the file is corrupt",
                    self.type_name()
                ),
            ));
        }
        match &self.chunk_type {
            b"IHDR" => self.parse_header()?,
            b"PLTE" => {
                let entries = self.chunk_len / 3;
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
            b"IEND" => {
                self.state = State::End;
                return Ok(());
            }
            _ => {}
        }
        // The body was kept to parse above: nothing needs it any more.
        self.body = Vec::new();
        self.keep_body = false;
        self.state = State::Header;
        Ok(())
    }

    fn parse_header(&mut self) -> Result<()> {
        let at = self.chunk_start.saturating_add(8);
        // 13 bytes: begin_chunk checked IHDR's length, and check_saved a restored one.
        let Ok(b) = <[u8; 13]>::try_from(self.body.as_slice()) else {
            return Err(self.invalid(at, "IHDR is not 13 bytes long"));
        };
        let width = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let height = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        let (bit_depth, colour_type, compression, filter, interlace) =
            (b[8], b[9], b[10], b[11], b[12]);
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

    fn describe_end(&self) -> String {
        match self.state {
            State::Signature => "the file ends inside the PNG signature".to_owned(),
            State::Header if self.have == 0 => {
                "the file ends without an IEND chunk; it is truncated".to_owned()
            }
            State::Header => "the file ends inside a chunk header; it is truncated".to_owned(),
            State::Data | State::Crc => format!(
                "the file ends inside chunk {} (declared {} bytes); it is truncated",
                self.type_name(),
                self.chunk_len
            ),
            State::End => String::new(),
        }
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

impl Walk for PngValidator {
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

impl Validator for PngValidator {
    fn save(&self) -> Option<crate::image::ValidatorState> {
        Some(crate::image::ValidatorState::png(self))
    }

    fn update(&mut self, data: &[u8]) -> Result<()> {
        self.feed(data)
    }

    fn dimensions(&self) -> Option<(u32, u32)> {
        self.header.map(|h| (h.width, h.height))
    }

    fn finish(&mut self) -> Result<ContentInfo> {
        self.end()?;
        Ok(ContentInfo {
            dimensions: self.dimensions(),
        })
    }
}
