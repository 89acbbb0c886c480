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
//! The stripper is a consumer of the format's tokenizer ([`png::Tokenizer`],
//! [`jpeg::Tokenizer`]): it decides, chunk by chunk and segment by segment, what to copy,
//! and writes what it keeps from the tokenizer's slices. It walks the structure but does
//! not validate it (the tokenizers check only what they need to walk, and the stripper
//! does not check CRCs); run the [`Inspector`](crate::Inspector) on the input (or the
//! output) for that. Segments are passed through unchanged, so the pixels decode exactly
//! as before.

use crate::error::{Error, Result};
use crate::image::{jpeg, png};
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
            Format::Png(Png::new())
        } else if *media_type == MediaType::JPEG {
            Format::Jpeg(Jpeg::new())
        } else {
            return Err(Error::UnsupportedType {
                declared: media_type.to_string(),
                allowed: "image/png, image/jpeg".into(),
            });
        };
        Ok(MetadataStripper {
            format,
            report: StripReport::default(),
            failed: None,
        })
    }

    /// Takes the next slice of input, appending the stripped output to `out`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidContent`] when the input's structure cannot be followed (it is not
    /// a PNG / JPEG); [`Error::AlreadyFailed`] after an error.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if let Some(first) = &self.failed {
            return Err(Error::AlreadyFailed {
                first: first.clone(),
            });
        }
        let report = &mut self.report;
        let result = match &mut self.format {
            Format::Jpeg(j) => j.push(input, out, report),
            Format::Png(p) => p.push(input, out, report),
        };
        if let Err(e) = &result {
            self.failed = Some(Box::new(e.clone()));
        }
        result
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
        let (complete, offset, media_type) = match &self.format {
            Format::Jpeg(j) => (j.tokens.is_done(), j.tokens.offset(), "image/jpeg"),
            Format::Png(p) => (p.tokens.is_done(), p.tokens.offset(), "image/png"),
        };
        if !complete {
            return Err(invalid(
                media_type,
                offset,
                "the file ends before the end of the image; it is truncated",
            ));
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

/// The JPEG side: what to do with the segment being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    /// Copied through.
    Keep,
    /// Dropped.
    Drop,
    /// Its first bytes are gathered to decide (APP1: all of it; APP2: the 12 that say
    /// whether it is an ICC profile).
    Decide,
}

#[derive(Debug, Clone)]
struct Jpeg {
    tokens: jpeg::Tokenizer,
    /// The segment being read: its marker, body length, and what happens to it.
    segment: (u8, u16, Segment),
}

const JPEG: &str = "image/jpeg";

impl Jpeg {
    fn new() -> Self {
        Jpeg {
            tokens: jpeg::Tokenizer::new(),
            segment: (0, 0, Segment::Keep),
        }
    }

    fn push(&mut self, input: &[u8], out: &mut Vec<u8>, report: &mut StripReport) -> Result<()> {
        let Jpeg { tokens, segment } = self;
        tokens
            .feed(input, |tokens, event| {
                on_jpeg_event(tokens, event, segment, out, report)
            })
            .map_err(jpeg_error)
    }
}

/// What goes wrong: the tokenizer's problem, or a marker the stripper refuses.
enum JpegProblem {
    Token(jpeg::TokenError),
    /// A marker that cannot come here (a second SOI), with the offset of its code.
    Marker {
        code: u8,
        code_at: u64,
    },
}

impl From<jpeg::TokenError> for JpegProblem {
    fn from(e: jpeg::TokenError) -> Self {
        JpegProblem::Token(e)
    }
}

/// The stripper's own words (and offsets: the byte that showed the problem).
fn jpeg_error(problem: JpegProblem) -> Error {
    use jpeg::TokenError as T;
    match problem {
        JpegProblem::Token(T::NotSoi { at }) => {
            invalid(JPEG, at, "not a JPEG: it does not start with SOI")
        }
        JpegProblem::Token(T::ExpectedMarker { at, found }) => {
            invalid(JPEG, at, format!("expected a marker, found 0x{found:02x}"))
        }
        JpegProblem::Token(T::UndefinedMarker { code, code_at, .. })
        | JpegProblem::Marker { code, code_at } => invalid(
            JPEG,
            code_at,
            format!("0xFF 0x{code:02x} is not a marker expected here"),
        ),
        JpegProblem::Token(T::ShortSegment { length, at, .. }) => {
            invalid(JPEG, at, format!("segment length {length} is under 2"))
        }
        JpegProblem::Token(other) => other.into(),
    }
}

fn on_jpeg_event(
    tokens: &mut jpeg::Tokenizer,
    event: jpeg::Event<'_>,
    (marker_now, length, segment): &mut (u8, u16, Segment),
    out: &mut Vec<u8>,
    report: &mut StripReport,
) -> std::result::Result<(), JpegProblem> {
    use jpeg::Event as E;
    match event {
        E::Soi => out.extend_from_slice(&[0xFF, 0xD8]),
        E::Eoi { .. } => out.extend_from_slice(&[0xFF, 0xD9]),
        E::Entropy(data) => out.extend_from_slice(data),
        E::Restart { n, .. } => out.extend_from_slice(&[0xFF, 0xD0 + n]),
        E::Marker { code: 0xD8, .. } => {
            return Err(JpegProblem::Marker {
                code: 0xD8,
                code_at: tokens.offset().saturating_sub(1),
            });
        }
        // Standalone markers (TEM, RSTn outside scan data) go through; a segment's
        // marker is written with its length.
        E::Marker { code, .. } if !jpeg::has_segment(code) => {
            out.extend_from_slice(&[0xFF, code]);
        }
        E::Marker { .. } => {}
        E::SegmentBegin {
            marker,
            length: len,
            ..
        } => {
            *marker_now = marker;
            *length = len;
            *segment = match marker {
                // APP1 (EXIF, XMP): gathered whole to find the orientation, then dropped.
                0xE1 => {
                    tokens.gather(usize::from(len));
                    Segment::Decide
                }
                // APP2: ICC profiles only; the first 12 bytes tell.
                0xE2 => {
                    tokens.gather(ICC_HEADER.len());
                    Segment::Decide
                }
                0xE0 | 0xEE => Segment::Keep,
                0xE3..=0xEF | 0xFE => {
                    let name = if marker == 0xFE {
                        "COM".to_owned()
                    } else {
                        format!("APP{}", marker - 0xE0)
                    };
                    note_removed(report, name, 4 + u64::from(len));
                    Segment::Drop
                }
                _ => Segment::Keep,
            };
            match *segment {
                Segment::Keep => write_jpeg_header(out, marker, len),
                // Nothing to gather: the empty body decides.
                Segment::Decide if len == 0 => {
                    *segment = decide(marker, len, &[], out, report);
                }
                _ => {}
            }
        }
        E::Gathered => {
            *segment = decide(*marker_now, *length, tokens.gathered(), out, report);
        }
        E::Data(data) if *segment == Segment::Keep => out.extend_from_slice(data),
        E::Data(_) | E::SegmentEnd { .. } => {}
        E::Trailing { data, .. } => {
            note_removed(report, "trailing data".into(), data.len() as u64);
        }
    }
    Ok(())
}

/// A marker and its length field.
fn write_jpeg_header(out: &mut Vec<u8>, marker: u8, length: u16) {
    out.extend_from_slice(&[0xFF, marker]);
    out.extend_from_slice(&(length + 2).to_be_bytes());
}

/// The gathered bytes decide an APP1 or APP2 segment of `length` bytes of body: an ICC
/// profile's APP2 is kept (its header and the gathered bytes written here, the rest
/// copied); anything else is dropped, an EXIF block's orientation carried over.
fn decide(
    marker: u8,
    length: u16,
    collected: &[u8],
    out: &mut Vec<u8>,
    report: &mut StripReport,
) -> Segment {
    let total = 4 + u64::from(length);
    if marker == 0xE2 {
        if collected == ICC_HEADER {
            write_jpeg_header(out, marker, length);
            out.extend_from_slice(collected);
            return Segment::Keep;
        }
        note_removed(report, "APP2".into(), total);
    } else {
        let exif = collected.strip_prefix(EXIF_HEADER);
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
            let len = (EXIF_HEADER.len() + tiff.len()) as u16;
            write_jpeg_header(out, 0xE1, len);
            out.extend_from_slice(EXIF_HEADER);
            out.extend_from_slice(&tiff);
        }
    }
    Segment::Drop
}

// ---- PNG --------------------------------------------------------------------------------

/// Chunks that decide how the image looks; every other chunk is metadata and goes.
const PNG_KEEP: [&[u8; 4]; 19] = [
    b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"cICP",
    b"mDCv", b"cLLi", b"sBIT", b"bKGD", b"hIST", b"pHYs", b"acTL", b"fcTL", b"fdAT",
];

#[derive(Debug, Clone)]
struct Png {
    tokens: png::Tokenizer,
    /// Whether the chunk being read is copied.
    keep: bool,
}

const PNG: &str = "image/png";

impl Png {
    fn new() -> Self {
        Png {
            // The stripper checks nothing: CRCs are copied, not computed.
            tokens: png::Tokenizer::without_crc_check(),
            keep: false,
        }
    }

    fn push(&mut self, input: &[u8], out: &mut Vec<u8>, report: &mut StripReport) -> Result<()> {
        let Png { tokens, keep } = self;
        tokens
            .feed(input, |tokens, event| {
                on_png_event(tokens, event, keep, out, report);
                Ok(())
            })
            .map_err(|e: png::TokenError| match e {
                png::TokenError::Signature { at } => {
                    invalid(PNG, at, "not a PNG: it does not start with the signature")
                }
                other => other.into(),
            })
    }
}

fn on_png_event(
    tokens: &mut png::Tokenizer,
    event: png::Event<'_>,
    keep: &mut bool,
    out: &mut Vec<u8>,
    report: &mut StripReport,
) {
    use png::Event as E;
    match event {
        E::Signature => out.extend_from_slice(&png::SIGNATURE),
        E::ChunkBegin(h) => {
            *keep = PNG_KEEP.contains(&&h.chunk_type);
            if *keep {
                out.extend_from_slice(&h.length.to_be_bytes());
                out.extend_from_slice(&h.chunk_type);
            } else {
                note_removed(report, h.name(), 12 + u64::from(h.length));
            }
            if &h.chunk_type == b"eXIf" {
                // Up to MAX_EXIF bytes of data, to read the orientation.
                tokens.gather(MAX_EXIF);
            }
        }
        E::Data(data) if *keep => out.extend_from_slice(data),
        E::ChunkEnd { header, crc } => {
            if *keep {
                out.extend_from_slice(&crc.stored().to_be_bytes());
            }
            if &header.chunk_type == b"eXIf" {
                if let Some(orientation) = exif_orientation(tokens.gathered()) {
                    report.orientation = Some(orientation);
                    write_png_chunk(out, b"eXIf", &minimal_exif(orientation));
                }
                tokens.release_gathered();
            }
        }
        E::Trailing { data, .. } => {
            note_removed(report, "trailing data".into(), data.len() as u64);
        }
        _ => {}
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
