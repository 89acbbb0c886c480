//! The deep level (feature `decode`): a full pixel decode with the `image` crate.
//!
//! The structural validators check every byte of the container but not the compressed
//! data inside it; a full decode catches a corrupt zlib stream or entropy-coded data.
//! Decoding needs the whole file, so [`DecodeValidator`] holds it (at most the policy's
//! largest file, checked before each append). Before any pixel is decoded it reads the
//! header, computes the size of the pixel buffer and refuses an image over
//! [`ImageLimits::max_decode_alloc`]: a decompression bomb is refused without allocating its
//! buffer. The decode itself runs under `image::Limits` with the same numbers.

use std::io::Cursor;

use ::image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader};

use crate::error::{Error, ImageLimit, Result, SizeLimit};
use crate::inspect::{ContentInfo, Validator};
use crate::policy::{ImageLimits, Limits};
use crate::sniff::MediaType;

/// Structural validation followed by a full decode; see the [module docs](self).
pub struct DecodeValidator {
    structural: Box<dyn Validator>,
    format: ImageFormat,
    media_type: String,
    file: Vec<u8>,
    max_file: u64,
    limits: ImageLimits,
}

impl std::fmt::Debug for DecodeValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodeValidator")
            .field("format", &self.format)
            .field("held", &self.file.len())
            .finish_non_exhaustive()
    }
}

impl DecodeValidator {
    /// Wraps a structural validator for `media_type` (PNG or JPEG; others decode as PNG
    /// and fail), decoding under `limits` (width, height, decode memory) and holding at
    /// most `max_file` bytes (the policy's largest file, [`Limits::max_file_size`]).
    pub fn new(
        structural: Box<dyn Validator>,
        media_type: &MediaType,
        limits: &ImageLimits,
        max_file: u64,
    ) -> Self {
        let format = if *media_type == MediaType::JPEG {
            ImageFormat::Jpeg
        } else {
            ImageFormat::Png
        };
        DecodeValidator {
            structural,
            format,
            media_type: media_type.to_string(),
            file: Vec::new(),
            max_file,
            limits: *limits,
        }
    }

    fn decode(&self) -> Result<ContentInfo> {
        let undecodable = |e: ImageError| Error::InvalidContent {
            media_type: self.media_type.clone(),
            offset: 0,
            reason: format!("the full decode failed: {e}"),
        };
        let mut reader = ImageReader::with_format(Cursor::new(&self.file[..]), self.format);
        let mut limits = ::image::Limits::default();
        limits.max_image_width = Some(self.limits.max_width);
        limits.max_image_height = Some(self.limits.max_height);
        limits.max_alloc = Some(self.limits.max_decode_alloc);
        reader.limits(limits);
        let decoder = reader
            .into_decoder()
            .map_err(|e| self.map_error(e, undecodable))?;
        let (width, height) = decoder.dimensions();
        let needed = decoder.total_bytes();
        if needed > self.limits.max_decode_alloc {
            return Err(Error::ImageLimit {
                what: ImageLimit::DecodeMemory,
                value: needed,
                limit: self.limits.max_decode_alloc,
            });
        }
        DynamicImage::from_decoder(decoder).map_err(|e| self.map_error(e, undecodable))?;
        if self.format == ImageFormat::Png {
            // The decoder reads the pixels it needs and trusts the rest: check the whole
            // zlib stream, its Adler-32 and its end.
            self.check_png_zlib()?;
        }
        Ok(ContentInfo {
            dimensions: Some((width, height)),
        })
    }

    /// The PNG's image data (its IDAT chunks' data, joined) must be one whole zlib stream
    /// whose Adler-32 matches, ending exactly where the data ends (RFC 1950; PNG 10.1):
    /// the `image` decoder skips the checksum and stops reading once it has its pixels, so
    /// a bad checksum or bytes after the stream's end passed. Inflated into a small buffer
    /// that is thrown away, under the decode-memory limit in all.
    fn check_png_zlib(&self) -> Result<()> {
        let invalid = |offset: u64, reason: String| Error::InvalidContent {
            media_type: self.media_type.clone(),
            offset,
            reason,
        };
        let mut inflate = flate2::Decompress::new(true);
        let mut sink = vec![0u8; 64 * 1024];
        let mut ended = false;
        // The structural check passed: the chunks are whole and their lengths true.
        let mut at = 8usize;
        while let Some(header) = self.file.get(at..at + 8) {
            let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let data_at = at + 8;
            let Some(data) = self.file.get(data_at..data_at + len) else {
                break;
            };
            if &header[4..8] == b"IDAT" {
                let mut used = 0usize;
                while used < data.len() {
                    if ended {
                        return Err(invalid(
                            (data_at + used) as u64,
                            format!(
                                "{} bytes of image data follow the end of its zlib stream",
                                data.len() - used
                            ),
                        ));
                    }
                    let (before_in, before_out) = (inflate.total_in(), inflate.total_out());
                    let status = inflate
                        .decompress(&data[used..], &mut sink, flate2::FlushDecompress::None)
                        .map_err(|e| {
                            invalid(
                                (data_at + used) as u64,
                                format!("the image data is not a valid zlib stream: {e}"),
                            )
                        })?;
                    used += (inflate.total_in() - before_in) as usize;
                    self.within_decode_memory(inflate.total_out())?;
                    ended = status == flate2::Status::StreamEnd;
                    if !ended
                        && inflate.total_in() == before_in
                        && inflate.total_out() == before_out
                    {
                        break;
                    }
                }
            }
            at = data_at + len + 4;
        }
        // What the inflater still holds once all the data is in.
        while !ended {
            let before_out = inflate.total_out();
            let status = inflate
                .decompress(&[], &mut sink, flate2::FlushDecompress::Finish)
                .map_err(|e| {
                    invalid(
                        self.file.len() as u64,
                        format!("the image data is not a valid zlib stream: {e}"),
                    )
                })?;
            self.within_decode_memory(inflate.total_out())?;
            ended = status == flate2::Status::StreamEnd;
            if !ended && inflate.total_out() == before_out {
                return Err(invalid(
                    self.file.len() as u64,
                    "the image data's zlib stream does not end (or its Adler-32 is missing)".into(),
                ));
            }
        }
        Ok(())
    }

    fn within_decode_memory(&self, inflated: u64) -> Result<()> {
        if inflated > self.limits.max_decode_alloc {
            return Err(Error::ImageLimit {
                what: ImageLimit::DecodeMemory,
                value: inflated,
                limit: self.limits.max_decode_alloc,
            });
        }
        Ok(())
    }

    fn map_error(&self, e: ImageError, otherwise: impl Fn(ImageError) -> Error) -> Error {
        match e {
            ImageError::Limits(_) => Error::ImageLimit {
                what: ImageLimit::DecodeMemory,
                value: self.limits.max_decode_alloc.saturating_add(1),
                limit: self.limits.max_decode_alloc,
            },
            other => otherwise(other),
        }
    }
}

/// A [`DecodeValidator`] saved: the structural validator's state and the bytes held so
/// far (the full decode needs them all; hex in JSON), with the limits the decode runs
/// under (the three image limits it uses, named as they always were).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct SavedDecode {
    structural: Box<crate::image::ValidatorState>,
    jpeg: bool,
    media_type: String,
    file: String,
    max_file: u64,
    max_width: u32,
    max_height: u32,
    max_alloc: u64,
}

impl SavedDecode {
    /// The validator again under the smaller (field by field) of the saved limits and
    /// `limits`; see [`ValidatorState::restore`](crate::image::ValidatorState::restore).
    pub(crate) fn restore(self, limits: &Limits) -> Result<Box<dyn Validator>> {
        let bad = crate::image::bad_state;
        let want = if self.jpeg {
            MediaType::JPEG
        } else {
            MediaType::PNG
        };
        // The structural level is the PNG or JPEG validator of the same format, never
        // another decode level (nor a check of nothing).
        let same_format = match &self.structural.0 {
            crate::image::Saved::Png(_) => !self.jpeg,
            crate::image::Saved::Jpeg(_) => self.jpeg,
            _ => false,
        };
        if !same_format || self.media_type != want.as_str() {
            return Err(bad(
                "decode state: the structural validator is of another format",
            ));
        }
        let walked = self.structural.offset();
        let structural = self.structural.restore(limits)?;
        let file =
            hex::decode(&self.file).map_err(|_| bad("decode state: held bytes are not hex"))?;
        let held = file.len() as u64;
        if held > self.max_file {
            return Err(bad("decode state: more bytes held than the file limit"));
        }
        // Both levels are fed the same bytes.
        if held != walked {
            return Err(bad(
                "decode state: the structural validator walked another number of bytes",
            ));
        }
        let max_file = self.max_file.min(limits.max_file_size());
        if held > max_file {
            return Err(Error::TooLarge {
                size: held,
                limit: max_file,
                kind: SizeLimit::Single,
            });
        }
        Ok(Box::new(DecodeValidator {
            structural,
            format: if self.jpeg {
                ImageFormat::Jpeg
            } else {
                ImageFormat::Png
            },
            media_type: self.media_type,
            file,
            max_file,
            limits: ImageLimits {
                max_width: self.max_width,
                max_height: self.max_height,
                max_decode_alloc: self.max_alloc,
                ..limits.image
            }
            .tighter(&limits.image),
        }))
    }

    /// The format decoded.
    pub(crate) fn format(&self) -> Option<MediaType> {
        Some(if self.jpeg {
            MediaType::JPEG
        } else {
            MediaType::PNG
        })
    }

    /// Bytes held (as many as the structural level walked): half the hex digits.
    pub(crate) fn offset(&self) -> u64 {
        self.file.len() as u64 / 2
    }
}

impl Validator for DecodeValidator {
    fn save(&self) -> Option<crate::image::ValidatorState> {
        Some(crate::image::ValidatorState::decode(SavedDecode {
            structural: Box::new(self.structural.save()?),
            jpeg: self.format == ImageFormat::Jpeg,
            media_type: self.media_type.clone(),
            file: hex::encode(&self.file),
            max_file: self.max_file,
            max_width: self.limits.max_width,
            max_height: self.limits.max_height,
            max_alloc: self.limits.max_decode_alloc,
        }))
    }

    fn update(&mut self, data: &[u8]) -> Result<()> {
        self.structural.update(data)?;
        let held = (self.file.len() as u64).saturating_add(data.len() as u64);
        if held > self.max_file {
            return Err(Error::TooLarge {
                size: held,
                limit: self.max_file,
                kind: SizeLimit::Single,
            });
        }
        self.file.extend_from_slice(data);
        Ok(())
    }

    fn dimensions(&self) -> Option<(u32, u32)> {
        self.structural.dimensions()
    }

    fn finish(&mut self) -> Result<ContentInfo> {
        self.structural.finish()?;
        let info = self.decode();
        self.file = Vec::new();
        info
    }
}
