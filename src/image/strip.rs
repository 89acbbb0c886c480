//! Metadata stripping as a streaming transform.
//!
//! [`MetadataStripper`] takes a PNG or JPEG as slices and appends the same image without
//! its metadata to the caller's buffer, holding at most one EXIF block (64 KiB) at a time.
//!
//! - JPEG: drops APP1 (EXIF, including GPS, and XMP), APP13 (IPTC / Photoshop), COM, and
//!   every other APPn except APP0 (JFIF), APP2 ICC profiles and APP14 (Adobe colour
//!   transform, needed to decode CMYK files). When the EXIF block held an Orientation tag,
//!   a minimal EXIF block holding only that tag takes its place, so viewers still rotate
//!   the image.
//! - PNG: keeps the chunks that decide how the image looks (IHDR, PLTE, IDAT, IEND, tRNS,
//!   gAMA, cHRM, sRGB, iCCP, cICP, mDCv, cLLi, sBIT, bKGD, hIST, pHYs, and APNG's acTL,
//!   fcTL, fdAT) and drops every other chunk (tEXt, zTXt, iTXt, tIME, eXIf and unknown
//!   ones). An eXIf chunk with an Orientation tag is replaced by a minimal one.
//! - Bytes after the end of the image (after EOI / IEND) are dropped too.
//!
//! The stripper walks the structure but does not validate it; run the
//! [`Inspector`](crate::Inspector) on the input (or the output) for that. Segments are
//! passed through unchanged, so the pixels decode exactly as before.

use crate::error::{Error, Result};
use crate::image::jpeg::find_ff;
use crate::image::png::SIGNATURE;
use crate::sniff::MediaType;

/// The most EXIF bytes kept to find the Orientation tag (a JPEG APP1 segment's maximum).
const MAX_EXIF: usize = 65_535;

/// What the stripper removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StripReport {
    /// Bytes of input not copied to the output.
    pub removed_bytes: u64,
    /// Names of what was removed, in order (`APP1 Exif`, `COM`, `tEXt`, `trailing data`...).
    pub removed: Vec<String>,
    /// The Orientation tag carried over into a minimal EXIF block, if the input had one.
    pub orientation: Option<u16>,
}

/// Streaming metadata remover for PNG and JPEG; see the [module docs](self).
///
/// # Examples
///
/// ```
/// use attachments::image::strip::MetadataStripper;
/// use attachments::MediaType;
///
/// // A JPEG start with a comment segment, which goes.
/// let mut s = MetadataStripper::new(&MediaType::JPEG)?;
/// let mut out = Vec::new();
/// s.push(b"\xff\xd8\xff\xfe\x00\x07hello", &mut out)?;
/// assert_eq!(out, b"\xff\xd8");
/// assert_eq!(s.report().removed, ["COM"]);
/// # Ok::<(), attachments::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct MetadataStripper {
    format: Format,
    report: StripReport,
    offset: u64,
    failed: Option<Box<Error>>,
}

#[derive(Debug, Clone)]
enum Format {
    Jpeg(Jpeg),
    Png(Png),
}

impl MetadataStripper {
    /// A stripper for content of `media_type` (`image/png` or `image/jpeg`).
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedType`] for any other type.
    pub fn new(media_type: &MediaType) -> Result<Self> {
        let format = if *media_type == MediaType::PNG {
            Format::Png(Png::default())
        } else if *media_type == MediaType::JPEG {
            Format::Jpeg(Jpeg::default())
        } else {
            return Err(Error::UnsupportedType {
                declared: media_type.to_string(),
                allowed: "image/png, image/jpeg".into(),
            });
        };
        Ok(MetadataStripper {
            format,
            report: StripReport::default(),
            offset: 0,
            failed: None,
        })
    }

    /// Takes the next slice of input, appending the stripped output to `out`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidContent`] when the input's structure cannot be followed (it is not
    /// a PNG / JPEG); [`Error::AlreadyFailed`] after an error.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if let Some(first) = &self.failed {
            return Err(Error::AlreadyFailed {
                first: first.clone(),
            });
        }
        while !input.is_empty() {
            let step = match &mut self.format {
                Format::Jpeg(j) => j.step(input, out, &mut self.report, self.offset),
                Format::Png(p) => p.step(input, out, &mut self.report, self.offset),
            };
            match step {
                Ok(n) => {
                    self.offset += n as u64;
                    input = &input[n..];
                }
                Err(e) => {
                    self.failed = Some(Box::new(e.clone()));
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// What has been removed so far.
    pub fn report(&self) -> &StripReport {
        &self.report
    }

    /// Ends the input and returns the report.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidContent`] when the input ended before the end of the image.
    pub fn finish(self) -> Result<StripReport> {
        if let Some(first) = self.failed {
            return Err(Error::AlreadyFailed { first });
        }
        let (complete, media_type) = match &self.format {
            Format::Jpeg(j) => (j.state == JState::End, "image/jpeg"),
            Format::Png(p) => (p.state == PState::End, "image/png"),
        };
        if !complete {
            return Err(Error::InvalidContent {
                media_type: media_type.into(),
                offset: self.offset,
                reason: "the file ends before the end of the image; it is truncated".into(),
            });
        }
        Ok(self.report)
    }
}

fn invalid(media_type: &str, offset: u64, reason: impl Into<String>) -> Error {
    Error::InvalidContent {
        media_type: media_type.into(),
        offset,
        reason: reason.into(),
    }
}

fn note_removed(report: &mut StripReport, what: String, bytes: u64) {
    report.removed_bytes += bytes;
    report.removed.push(what);
}

// ---- EXIF -------------------------------------------------------------------------------

/// The Orientation tag (0x0112) of IFD0 in a TIFF-structured EXIF block, if present.
pub fn exif_orientation(tiff: &[u8]) -> Option<u16> {
    let big = match tiff.get(..4)? {
        b"MM\0*" => true,
        b"II*\0" => false,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b: [u8; 2] = tiff.get(at..at + 2)?.try_into().ok()?;
        Some(if big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = tiff.get(at..at + 4)?.try_into().ok()?;
        Some(if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    let ifd = usize::try_from(u32_at(4)?).ok()?;
    let count = usize::from(u16_at(ifd)?);
    (0..count).find_map(|i| {
        let entry = ifd + 2 + 12 * i;
        // Tag 0x0112, type SHORT (3), count 1: the value sits in the first two value bytes.
        (u16_at(entry)? == 0x0112 && u16_at(entry + 2)? == 3 && u32_at(entry + 4)? == 1)
            .then(|| u16_at(entry + 8))
            .flatten()
    })
}

/// A TIFF-structured EXIF block holding only the Orientation tag.
pub fn minimal_exif(orientation: u16) -> Vec<u8> {
    let mut t = Vec::with_capacity(26);
    t.extend_from_slice(b"MM\0*");
    t.extend_from_slice(&8u32.to_be_bytes()); // IFD0 right after the header
    t.extend_from_slice(&1u16.to_be_bytes()); // one entry
    t.extend_from_slice(&0x0112u16.to_be_bytes());
    t.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    t.extend_from_slice(&1u32.to_be_bytes()); // count
    t.extend_from_slice(&orientation.to_be_bytes());
    t.extend_from_slice(&[0, 0]);
    t.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    t
}

// ---- JPEG -------------------------------------------------------------------------------

const EXIF_HEADER: &[u8] = b"Exif\0\0";
const ICC_HEADER: &[u8] = b"ICC_PROFILE\0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum JState {
    #[default]
    Soi,
    Marker,
    MarkerCode,
    Length,
    /// Copying a kept segment's data.
    Copy,
    /// Skipping a dropped segment's data.
    Skip,
    /// Collecting a segment's data (or its first bytes) to decide.
    Collect,
    Entropy {
        ff: bool,
    },
    End,
}

#[derive(Debug, Clone, Default)]
struct Jpeg {
    state: JState,
    have: usize,
    len_bytes: [u8; 2],
    marker: u8,
    remaining: usize,
    /// Bytes collected to decide (APP1: the whole segment; APP2: its first 12 bytes).
    collected: Vec<u8>,
    want: usize,
}

impl Jpeg {
    fn step(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        report: &mut StripReport,
        offset: u64,
    ) -> Result<usize> {
        const JPEG: &str = "image/jpeg";
        match self.state {
            JState::Soi => {
                if data[0] != [0xFF, 0xD8][self.have] {
                    return Err(invalid(
                        JPEG,
                        offset,
                        "not a JPEG: it does not start with SOI",
                    ));
                }
                self.have += 1;
                if self.have == 2 {
                    out.extend_from_slice(&[0xFF, 0xD8]);
                    self.have = 0;
                    self.state = JState::Marker;
                }
                Ok(1)
            }
            JState::Marker => {
                if data[0] != 0xFF {
                    return Err(invalid(
                        JPEG,
                        offset,
                        format!("expected a marker, found 0x{:02x}", data[0]),
                    ));
                }
                self.state = JState::MarkerCode;
                Ok(1)
            }
            JState::MarkerCode => {
                if data[0] != 0xFF {
                    self.marker(data[0], out, offset)?;
                }
                Ok(1)
            }
            JState::Length => {
                self.len_bytes[self.have] = data[0];
                self.have += 1;
                if self.have == 2 {
                    self.have = 0;
                    self.begin_segment(out, report, offset)?;
                }
                Ok(1)
            }
            JState::Copy | JState::Skip => {
                let take = self.remaining.min(data.len());
                if self.state == JState::Copy {
                    out.extend_from_slice(&data[..take]);
                }
                self.remaining -= take;
                if self.remaining == 0 {
                    self.state = if self.marker == 0xDA {
                        JState::Entropy { ff: false }
                    } else {
                        JState::Marker
                    };
                }
                Ok(take)
            }
            JState::Collect => {
                let take = (self.want - self.collected.len()).min(data.len());
                self.collected.extend_from_slice(&data[..take]);
                self.remaining -= take;
                if self.collected.len() == self.want {
                    self.decide(out, report);
                }
                Ok(take)
            }
            JState::Entropy { ff: false } => match find_ff(data) {
                Some(i) => {
                    out.extend_from_slice(&data[..=i]);
                    self.state = JState::Entropy { ff: true };
                    Ok(i + 1)
                }
                None => {
                    out.extend_from_slice(data);
                    Ok(data.len())
                }
            },
            JState::Entropy { ff: true } => {
                let code = data[0];
                if code == 0x00 || (0xD0..=0xD7).contains(&code) {
                    out.push(code);
                    self.state = JState::Entropy { ff: false };
                } else if code != 0xFF {
                    // A marker ends the scan: take back its 0xFF, the marker writes its own.
                    out.pop();
                    self.marker(code, out, offset)?;
                }
                // Further 0xFF are fill bytes before a marker: dropped.
                Ok(1)
            }
            JState::End => {
                note_removed(report, "trailing data".into(), data.len() as u64);
                Ok(data.len())
            }
        }
    }

    fn marker(&mut self, code: u8, out: &mut Vec<u8>, offset: u64) -> Result<()> {
        self.marker = code;
        match code {
            0xD9 => {
                out.extend_from_slice(&[0xFF, 0xD9]);
                self.state = JState::End;
            }
            0x01 | 0xD0..=0xD7 => {
                out.extend_from_slice(&[0xFF, code]);
                self.state = JState::Marker;
            }
            0x00 | 0x02..=0xBF | 0xD8 => {
                return Err(invalid(
                    "image/jpeg",
                    offset,
                    format!("0xFF 0x{code:02x} is not a marker expected here"),
                ));
            }
            _ => self.state = JState::Length,
        }
        Ok(())
    }

    fn begin_segment(
        &mut self,
        out: &mut Vec<u8>,
        report: &mut StripReport,
        offset: u64,
    ) -> Result<()> {
        let len = usize::from(u16::from_be_bytes(self.len_bytes));
        if len < 2 {
            return Err(invalid(
                "image/jpeg",
                offset,
                format!("segment length {len} is under 2"),
            ));
        }
        self.remaining = len - 2;
        let code = self.marker;
        self.collected.clear();
        match code {
            // APP1 (EXIF, XMP): collect it all to find the orientation, then drop it.
            0xE1 => self.want = self.remaining,
            // APP2: keep ICC profiles only; the first 12 bytes tell.
            0xE2 => self.want = self.remaining.min(ICC_HEADER.len()),
            0xE0 | 0xEE => {
                self.keep(out);
                return Ok(());
            }
            0xE3..=0xEF | 0xFE => {
                let name = if code == 0xFE {
                    "COM".to_owned()
                } else {
                    format!("APP{}", code - 0xE0)
                };
                note_removed(report, name, 4 + self.remaining as u64);
                self.state = if self.remaining == 0 {
                    JState::Marker
                } else {
                    JState::Skip
                };
                return Ok(());
            }
            _ => {
                self.keep(out);
                return Ok(());
            }
        }
        if self.want == 0 {
            self.decide(out, report);
        } else {
            self.state = JState::Collect;
        }
        Ok(())
    }

    /// Writes the marker and length and copies the segment's data through.
    fn keep(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0xFF, self.marker]);
        out.extend_from_slice(&self.len_bytes);
        self.state = match (self.remaining, self.marker) {
            (0, 0xDA) => JState::Entropy { ff: false },
            (0, _) => JState::Marker,
            _ => JState::Copy,
        };
    }

    /// The collected bytes decide an APP1 or APP2 segment.
    fn decide(&mut self, out: &mut Vec<u8>, report: &mut StripReport) {
        let total = 4 + (self.collected.len() + self.remaining) as u64;
        if self.marker == 0xE2 {
            if self.collected == ICC_HEADER {
                self.keep(out);
                out.extend_from_slice(&self.collected);
                return;
            }
            note_removed(report, "APP2".into(), total);
        } else {
            let exif = self.collected.strip_prefix(EXIF_HEADER);
            note_removed(
                report,
                if exif.is_some() {
                    "APP1 Exif".into()
                } else {
                    "APP1".into()
                },
                total,
            );
            if let Some(orientation) = exif.and_then(exif_orientation) {
                report.orientation = Some(orientation);
                let tiff = minimal_exif(orientation);
                let len = (2 + EXIF_HEADER.len() + tiff.len()) as u16;
                out.extend_from_slice(&[0xFF, 0xE1]);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(EXIF_HEADER);
                out.extend_from_slice(&tiff);
            }
        }
        self.state = if self.remaining == 0 {
            JState::Marker
        } else {
            JState::Skip
        };
    }
}

// ---- PNG --------------------------------------------------------------------------------

/// Chunks that decide how the image looks; every other chunk is metadata and goes.
const PNG_KEEP: [&[u8; 4]; 19] = [
    b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"cICP",
    b"mDCv", b"cLLi", b"sBIT", b"bKGD", b"hIST", b"pHYs", b"acTL", b"fcTL", b"fdAT",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum PState {
    #[default]
    Signature,
    Header,
    /// Copying (or skipping) a chunk's data and CRC.
    Body {
        keep: bool,
    },
    /// Collecting an eXIf chunk's data.
    Exif,
    End,
}

#[derive(Debug, Clone, Default)]
struct Png {
    state: PState,
    header: [u8; 8],
    have: usize,
    /// Data and CRC bytes left in the current chunk.
    remaining: u64,
    exif: Vec<u8>,
}

impl Png {
    fn step(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        report: &mut StripReport,
        offset: u64,
    ) -> Result<usize> {
        const PNG: &str = "image/png";
        match self.state {
            PState::Signature => {
                if data[0] != SIGNATURE[self.have] {
                    return Err(invalid(
                        PNG,
                        offset,
                        "not a PNG: it does not start with the signature",
                    ));
                }
                self.have += 1;
                if self.have == 8 {
                    out.extend_from_slice(&SIGNATURE);
                    self.have = 0;
                    self.state = PState::Header;
                }
                Ok(1)
            }
            PState::Header => {
                let take = (8 - self.have).min(data.len());
                self.header[self.have..self.have + take].copy_from_slice(&data[..take]);
                self.have += take;
                if self.have == 8 {
                    self.have = 0;
                    self.begin_chunk(out, report);
                }
                Ok(take)
            }
            PState::Body { keep } => {
                let take =
                    usize::try_from(self.remaining).map_or(data.len(), |r| r.min(data.len()));
                if keep {
                    out.extend_from_slice(&data[..take]);
                }
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    self.state = if &self.header[4..] == b"IEND" {
                        PState::End
                    } else {
                        PState::Header
                    };
                }
                Ok(take)
            }
            PState::Exif => {
                // Keep up to MAX_EXIF bytes of data (not the CRC) to read the orientation.
                let data_left = self.remaining.saturating_sub(4);
                let take =
                    usize::try_from(self.remaining).map_or(data.len(), |r| r.min(data.len()));
                let useful = usize::try_from(data_left).map_or(take, |d| d.min(take));
                let room = MAX_EXIF.saturating_sub(self.exif.len()).min(useful);
                self.exif.extend_from_slice(&data[..room]);
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    if let Some(orientation) = exif_orientation(&self.exif) {
                        report.orientation = Some(orientation);
                        write_png_chunk(out, b"eXIf", &minimal_exif(orientation));
                    }
                    self.exif = Vec::new();
                    self.state = PState::Header;
                }
                Ok(take)
            }
            PState::End => {
                note_removed(report, "trailing data".into(), data.len() as u64);
                Ok(data.len())
            }
        }
    }

    fn begin_chunk(&mut self, out: &mut Vec<u8>, report: &mut StripReport) {
        let len = u32::from_be_bytes([
            self.header[0],
            self.header[1],
            self.header[2],
            self.header[3],
        ]);
        let ty: [u8; 4] = [
            self.header[4],
            self.header[5],
            self.header[6],
            self.header[7],
        ];
        self.remaining = u64::from(len) + 4;
        let keep = PNG_KEEP.contains(&&ty);
        if keep {
            out.extend_from_slice(&self.header);
        } else {
            note_removed(
                report,
                String::from_utf8_lossy(&ty).into_owned(),
                12 + u64::from(len),
            );
        }
        self.state = if &ty == b"eXIf" {
            PState::Exif
        } else {
            PState::Body { keep }
        };
    }
}

fn write_png_chunk(out: &mut Vec<u8>, ty: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(ty);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(ty);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_exif_reads_back() {
        for o in 1..=8 {
            assert_eq!(exif_orientation(&minimal_exif(o)), Some(o));
        }
        assert_eq!(exif_orientation(b"II*\0\x08\0\0\0\0\0"), None);
        assert_eq!(exif_orientation(b"garbage"), None);
        assert_eq!(exif_orientation(b"MM\0*\xff\xff\xff\xff"), None);
    }
}
