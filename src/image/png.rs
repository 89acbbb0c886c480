//! Incremental structural PNG validator.
//!
//! Walks the file chunk by chunk as slices arrive, holding at most one small chunk body
//! (IHDR, PLTE, acTL: under 1 KiB) and a CRC state. Checks, in order of appearance:
//!
//! - the 8-byte signature, with nothing before it;
//! - every chunk: length <= 2^31 - 1, type of four ASCII letters, CRC-32 over type and data;
//!   unknown *critical* chunks are rejected, unknown ancillary ones allowed;
//! - IHDR first, 13 bytes: width and height within [`Limits`] (checked before anything is
//!   decoded), a valid bit depth / colour type pair, compression, filter and interlace
//!   methods;
//! - PLTE: at most once, before IDAT, 1-256 entries (at most 2^depth for palette images),
//!   forbidden for greyscale, required for palette images;
//! - IDAT: at least one, all consecutive;
//! - IEND: empty, last; anything after it is rejected unless trailing bytes are allowed.
//!
//! APNG (acTL, fcTL, fdAT) is accepted as PNG. Ancillary chunks other than APNG's count as
//! metadata against [`Limits::max_metadata_bytes`]; the chunk count is capped by
//! [`Limits::max_segments`].

use crate::error::{Error, Result};
use crate::image::{Budget, Progress, Walk};
use crate::inspect::{ContentInfo, Validator};
use crate::policy::Limits;
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
/// let mut v = PngValidator::new(&Limits::demand(), false);
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
    /// Checks a restored state against the invariants the walk indexes by
    /// ([`ValidatorState::restore`](crate::image::ValidatorState::restore)).
    pub(crate) fn check_saved(&self) -> std::result::Result<(), &'static str> {
        let have_ok = match self.state {
            State::Signature | State::Header => self.have < 8,
            State::Crc => self.have < 4,
            State::Data | State::End => self.have == 0,
        };
        if !have_ok {
            return Err("PNG state: partial header bytes out of range");
        }
        let in_chunk = matches!(self.state, State::Data | State::Crc);
        if in_chunk {
            let read = self.chunk_len.checked_sub(self.remaining);
            if self.chunk_len > MAX_CHUNK_LEN
                || read.is_none()
                || (self.state == State::Data && self.remaining == 0)
                || (self.state == State::Crc && self.remaining != 0)
            {
                return Err("PNG state: chunk length and bytes left disagree");
            }
            let ty = &self.chunk_type;
            let kept = matches!(ty, b"IHDR" | b"PLTE");
            if self.keep_body != kept
                || (kept && Some(self.body.len() as u32) != read)
                || (ty == b"IHDR" && (self.chunk_len != 13 || self.header.is_some()))
                || (ty != b"IHDR" && self.header.is_none())
                || self.chunk_len as usize > MAX_KEPT_BODY && kept
            {
                return Err("PNG state: the chunk being read does not fit the header seen");
            }
        } else if !self.body.is_empty() || self.keep_body {
            return Err("PNG state: a body kept outside a chunk");
        }
        if self
            .header
            .is_some_and(|h| h.bit_depth > 16 || !matches!(h.colour_type, 0 | 2 | 3 | 4 | 6))
            || self.palette_entries.is_some_and(|n| n > 256)
        {
            return Err("PNG state: header fields out of range");
        }
        Ok(())
    }

    /// A validator for a file starting now, with the image limits of `limits`.
    /// `allow_trailing` accepts bytes after IEND.
    pub fn new(limits: &Limits, allow_trailing: bool) -> Self {
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
                at + 4,
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
        let critical = ty[0].is_ascii_uppercase();
        let exact = |want: u32| -> Result<()> {
            if len == want {
                Ok(())
            } else {
                Err(self.invalid(
                    at,
                    format!("chunk {name} is {len} bytes long; it must be {want}"),
                ))
            }
        };
        match &ty {
            b"IHDR" => {
                if self.header.is_some() {
                    return Err(self.invalid(at, "a second IHDR chunk"));
                }
                exact(13)?;
            }
            b"IEND" => exact(0)?,
            b"PLTE" => {
                if len == 0 || !len.is_multiple_of(3) || len as usize > MAX_KEPT_BODY {
                    return Err(self.invalid(
                        at,
                        format!(
                            "PLTE is {len} bytes long; it must hold 1 to 256 entries of 3 bytes"
                        ),
                    ));
                }
            }
            b"acTL" => exact(8)?,
            b"fcTL" => exact(26)?,
            b"fdAT" if len < 4 => {
                return Err(self.invalid(
                    at,
                    format!(
                        "fdAT is {len} bytes long; it must hold at least its 4-byte sequence number"
                    ),
                ));
            }
            b"IDAT" | b"fdAT" => {}
            _ if critical => {
                return Err(self.invalid(
                    at,
                    format!("unknown critical chunk {name}; a decoder cannot display this image"),
                ));
            }
            _ => {
                self.budget.metadata(u64::from(len))?;
            }
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
                    let header = self.header.expect("IHDR precedes every other chunk");
                    if header.colour_type == 3 && self.palette_entries.is_none() {
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
                at + 8 + u64::from(self.chunk_len),
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
                let header = self.header.expect("IHDR precedes every other chunk");
                match header.colour_type {
                    0 | 4 => {
                        return Err(self.invalid(
                            at,
                            "PLTE in a greyscale image (colour types 0 and 4 have no palette)",
                        ));
                    }
                    3 if entries > 1 << header.bit_depth => {
                        return Err(self.invalid(
                            at,
                            format!("PLTE has {entries} entries but a {}-bit palette image can index only {}", header.bit_depth, 1u32 << header.bit_depth),
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
        self.state = State::Header;
        Ok(())
    }

    fn parse_header(&mut self) -> Result<()> {
        let b = &self.body;
        let at = self.chunk_start + 8;
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
        let depth_ok = match colour_type {
            0 => matches!(bit_depth, 1 | 2 | 4 | 8 | 16),
            3 => matches!(bit_depth, 1 | 2 | 4 | 8),
            2 | 4 | 6 => matches!(bit_depth, 8 | 16),
            _ => {
                return Err(self.invalid(
                    at + 9,
                    format!("IHDR colour type {colour_type} does not exist (0, 2, 3, 4 and 6 do)"),
                ));
            }
        };
        if !depth_ok {
            return Err(self.invalid(
                at + 8,
                format!("IHDR bit depth {bit_depth} is not allowed with colour type {colour_type}"),
            ));
        }
        if compression != 0 || filter != 0 {
            return Err(self.invalid(
                at + 10,
                format!(
                    "IHDR compression method {compression} / filter method {filter}; only 0 exists"
                ),
            ));
        }
        if interlace > 1 {
            return Err(self.invalid(
                at + 12,
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
