//! Width and height without the whole validation: a consumer of the tokenizers that stops
//! at PNG's IHDR or JPEG's frame header.

use crate::error::{Error, Result};
use crate::image::{jpeg, png};
use crate::sniff::MediaType;

/// Reads an image's width and height from its header, fed slices split anywhere: PNG's
/// IHDR (the first chunk) or the JPEG frame header (SOF0-SOF15, after any number of
/// other segments). Nothing else is checked (no CRC, no other rule): for whoever needs the
/// dimensions of a file another step validates, or a quick look at one. Once it has them,
/// it takes no more input.
///
/// # Examples
///
/// ```
/// use attachments::image::DimensionReader;
/// use attachments::MediaType;
///
/// let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\x04\0\0\0\x03\0\x08\x02\0\0\0";
/// let mut reader = DimensionReader::new(&MediaType::PNG)?;
/// assert_eq!(reader.push(&png[..20])?, None);
/// assert_eq!(reader.push(&png[20..])?, Some((1024, 768)));
/// # Ok::<(), attachments::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct DimensionReader {
    format: Format,
    found: Option<(u32, u32)>,
    failed: Option<Box<Error>>,
}

#[derive(Debug, Clone)]
enum Format {
    Png(png::Tokenizer),
    Jpeg(jpeg::Tokenizer),
}

impl DimensionReader {
    /// A reader for content of `media_type` (`image/png` or `image/jpeg`).
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedType`] for any other type.
    pub fn new(media_type: &MediaType) -> Result<Self> {
        let format = if *media_type == MediaType::PNG {
            Format::Png(png::Tokenizer::without_crc_check())
        } else if *media_type == MediaType::JPEG {
            Format::Jpeg(jpeg::Tokenizer::new())
        } else {
            return Err(Error::UnsupportedType {
                declared: media_type.to_string(),
                allowed: "image/png, image/jpeg".into(),
            });
        };
        Ok(DimensionReader {
            format,
            found: None,
            failed: None,
        })
    }

    /// Takes the next slice; returns the dimensions once the header has given them
    /// (later slices are not looked at).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidContent`] when the file cannot be walked to its header (not a PNG
    /// or JPEG, a PNG whose first chunk is not a 13-byte IHDR, a frame header of under 6
    /// bytes, EOI before any frame header); [`Error::AlreadyFailed`] after an error.
    pub fn push(&mut self, data: &[u8]) -> Result<Option<(u32, u32)>> {
        if let Some(first) = &self.failed {
            return Err(Error::AlreadyFailed {
                first: first.clone(),
            });
        }
        if self.found.is_some() {
            return Ok(self.found);
        }
        let found = &mut self.found;
        let result = match &mut self.format {
            Format::Png(tokens) => push_png(tokens, data, found),
            Format::Jpeg(tokens) => push_jpeg(tokens, data, found),
        };
        match result {
            Ok(()) | Err(Stop::Found) => Ok(self.found),
            Err(Stop::Error(e)) => {
                self.failed = Some(Box::new(e.clone()));
                Err(e)
            }
        }
    }

    /// The dimensions, once read.
    pub fn dimensions(&self) -> Option<(u32, u32)> {
        self.found
    }
}

/// Why a feed stopped early.
enum Stop {
    Found,
    Error(Error),
}

impl From<png::TokenError> for Stop {
    fn from(e: png::TokenError) -> Self {
        Stop::Error(e.into())
    }
}

impl From<jpeg::TokenError> for Stop {
    fn from(e: jpeg::TokenError) -> Self {
        Stop::Error(e.into())
    }
}

fn invalid(media_type: &str, offset: u64, reason: String) -> Stop {
    Stop::Error(Error::InvalidContent {
        media_type: media_type.into(),
        offset,
        reason,
    })
}

fn push_png(
    tokens: &mut png::Tokenizer,
    data: &[u8],
    found: &mut Option<(u32, u32)>,
) -> std::result::Result<(), Stop> {
    tokens.feed(data, |tokens, event| match event {
        png::Event::ChunkBegin(h) if &h.chunk_type != b"IHDR" || h.length != 13 => invalid(
            "image/png",
            h.at,
            format!(
                "the first chunk is {} of {} bytes; a PNG must start with a 13-byte IHDR",
                h.name(),
                h.length
            ),
        )
        .into_err(),
        png::Event::ChunkBegin(_) => {
            tokens.gather(13);
            Ok(())
        }
        png::Event::Gathered => {
            // 13 bytes: the length was checked above.
            *found = png::Ihdr::parse(tokens.gathered()).map(|h| (h.width, h.height));
            Err(Stop::Found)
        }
        _ => Ok(()),
    })
}

fn push_jpeg(
    tokens: &mut jpeg::Tokenizer,
    data: &[u8],
    found: &mut Option<(u32, u32)>,
) -> std::result::Result<(), Stop> {
    tokens.feed(data, |tokens, event| match event {
        jpeg::Event::SegmentBegin { marker, .. } if jpeg::is_sof(marker) => {
            tokens.gather(6);
            Ok(())
        }
        // Only a frame header is gathered: its first 6 bytes give the dimensions.
        jpeg::Event::Gathered => match jpeg::FrameHeader::parse(tokens.gathered()) {
            Some(h) => {
                *found = Some((u32::from(h.width), u32::from(h.height)));
                Err(Stop::Found)
            }
            None => Ok(()),
        },
        jpeg::Event::SegmentEnd { marker, at } if jpeg::is_sof(marker) => invalid(
            "image/jpeg",
            at,
            format!(
                "frame header of {} bytes; it needs at least 6",
                tokens.gathered().len()
            ),
        )
        .into_err(),
        jpeg::Event::Eoi { at } => invalid(
            "image/jpeg",
            at,
            "EOI before any frame header: the file has no dimensions".into(),
        )
        .into_err(),
        _ => Ok(()),
    })
}

impl Stop {
    fn into_err(self) -> std::result::Result<(), Stop> {
        Err(self)
    }
}
