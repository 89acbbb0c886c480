//! Images: one incremental tokenizer per format, and the consumers of its events.
//!
//! # Layers
//!
//! Each format is walked by exactly one tokenizer, [`png::Tokenizer`] and
//! [`jpeg::Tokenizer`]. A tokenizer does no IO, takes slices split anywhere (one byte at a
//! time included) and turns them into events: PNG's signature, chunk headers, chunk data,
//! CRCs and end; JPEG's SOI, markers, segment bodies, entropy-coded data, restart markers
//! and EOI; then any bytes after the image. Data comes as slices of the caller's input,
//! never copied; a consumer that needs a small body whole (a header, a table, the first
//! bytes of an APPn segment) asks the tokenizer to gather it, into a buffer bounded before
//! anything is reserved. A tokenizer checks only what it must to walk on; its state is
//! plain data that saves with serde and is checked again when restored.
//!
//! The consumers decide what the events mean:
//!
//! | consumer | what it does with the events |
//! | --- | --- |
//! | [`png::PngValidator`], [`jpeg::JpegValidator`] | the format's rules, under [`ImageLimits`] ([`validator_for`] picks one) |
//! | [`strip::MetadataStripper`] | copies what decides how the image looks, drops metadata |
//! | [`DimensionReader`] | the width and height from IHDR or the frame header, and nothing more |
//! | [`deep::DecodeValidator`] (feature `decode`) | the structural validator, then a full decode |
//!
//! No code outside the tokenizers reads a PNG chunk header or a JPEG marker or segment
//! length; header fields are read in one place each ([`png::Ihdr::parse`],
//! [`jpeg::FrameHeader::parse`]).
//!
//! [`validator_for`] picks the checker for a declared type under a [`Policy`]; the
//! [`Inspector`](crate::Inspector) calls it, so every file that passes the Inspector as
//! `image/png` or `image/jpeg` is a complete, well-formed image within the policy's limits,
//! with nothing before or after it.
//!
//! # Examples
//!
//! The same JPEG through three consumers: the dimensions alone, the validator, the
//! stripper.
//!
//! ```
//! use attachments::image::{jpeg::JpegValidator, strip::MetadataStripper, DimensionReader};
//! use attachments::{ImageLimits, MediaType, Validator};
//!
//! // SOI, a comment, a frame header (3 x 2, one component), a scan header, data, EOI.
//! let file = b"\xff\xd8\xff\xfe\x00\x04hi\xff\xc0\x00\x0b\x08\x00\x02\x00\x03\x01\x01\x11\x00\
//!              \xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00\x12\x34\xff\xd9";
//!
//! let mut dims = DimensionReader::new(&MediaType::JPEG)?;
//! assert_eq!(dims.push(&file[..20])?, Some((3, 2)));
//!
//! let mut v = JpegValidator::new(&ImageLimits::DEFAULT, false);
//! v.update(file)?;
//! assert_eq!(v.finish()?.dimensions, Some((3, 2)));
//!
//! let mut s = MetadataStripper::new(&MediaType::JPEG)?;
//! let mut out = Vec::new();
//! s.push(file, &mut out)?;
//! assert_eq!(s.finish()?.removed, ["COM"]);
//! assert_eq!(out.len(), file.len() - 6);
//! # Ok::<(), attachments::Error>(())
//! ```

#[cfg(feature = "decode")]
pub mod deep;
mod dimensions;
pub mod jpeg;
pub mod png;
pub mod strip;

pub use dimensions::DimensionReader;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ImageLimit, Result};
use crate::inspect::{AcceptAll, Validator};
use crate::policy::{ImageLimits, Limits, Policy};
use crate::sniff::MediaType;

/// The validator the policy applies to content of type `media_type`: structural PNG or JPEG
/// checks for images (followed by a full decode at [`Depth::Decode`](crate::Depth)),
/// nothing for other types.
pub fn validator_for(policy: &Policy, media_type: &MediaType) -> Box<dyn Validator> {
    let limits = &policy.limits.image;
    let structural: Box<dyn Validator> = if *media_type == MediaType::PNG {
        Box::new(png::PngValidator::new(limits, policy.allow_trailing))
    } else if *media_type == MediaType::JPEG {
        Box::new(jpeg::JpegValidator::new(limits, policy.allow_trailing))
    } else {
        return Box::new(AcceptAll);
    };
    #[cfg(feature = "decode")]
    if policy.depth == crate::policy::Depth::Decode {
        return Box::new(deep::DecodeValidator::new(
            structural,
            media_type,
            limits,
            policy.limits.max_file_size(),
        ));
    }
    structural
}

/// A validator's progress through a file, saved to continue in another process (see
/// [`Validator::save`]): what a stateless server keeps in its store between two chunks.
///
/// It serialises with serde. [`ValidatorState::restore`] checks every invariant the
/// validators rely on (positions, counters against their limits, which state goes with
/// which chunk or marker), so a damaged or forged state is refused, never a panic. The
/// policy's image limits travel inside it, as they were when the file started; a restore
/// applies the smaller of those and the current ones, field by field.
///
/// # Examples
///
/// ```
/// use attachments::image::{jpeg::JpegValidator, ValidatorState};
/// use attachments::{Limits, Validator};
///
/// let mut v = JpegValidator::new(&Limits::demand().image, false);
/// v.update(b"\xff\xd8\xff")?;
/// let json = serde_json::to_string(&v.save().expect("the JPEG validator saves"))?;
/// let mut again = serde_json::from_str::<ValidatorState>(&json)?.restore(&Limits::demand())?;
/// let err = again.update(b"\xd9").unwrap_err(); // EOI at once: the same verdict as `v`'s
/// assert!(err.to_string().contains("no scan"), "{err}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidatorState(Saved);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Saved {
    Any,
    Png(Box<png::PngValidator>),
    Jpeg(Box<jpeg::JpegValidator>),
    #[cfg(feature = "decode")]
    Decode(deep::SavedDecode),
}

impl ValidatorState {
    pub(crate) fn any() -> Self {
        ValidatorState(Saved::Any)
    }

    pub(crate) fn png(v: &png::PngValidator) -> Self {
        ValidatorState(Saved::Png(Box::new(v.clone())))
    }

    pub(crate) fn jpeg(v: &jpeg::JpegValidator) -> Self {
        ValidatorState(Saved::Jpeg(Box::new(v.clone())))
    }

    #[cfg(feature = "decode")]
    pub(crate) fn decode(saved: deep::SavedDecode) -> Self {
        ValidatorState(Saved::Decode(saved))
    }

    /// The validator again, where it was saved, under the smaller (field by field) of the
    /// image limits saved with it and `limits.image` (the current policy's): a policy
    /// tightened between two chunks applies to the rest of the file. (The upload sizes of
    /// `limits` matter only to the full-decode level, which holds the file's bytes: at
    /// most the smaller of the saved and the current largest file.)
    ///
    /// # Errors
    ///
    /// [`Error::CorruptState`] for a state no validator could have saved;
    /// [`Error::ImageLimit`] / [`Error::TooLarge`] when what the file already showed
    /// (dimensions, chunk or segment count, metadata, bytes held for the full decode) is
    /// over the tightened limits.
    pub fn restore(self, limits: &Limits) -> Result<Box<dyn Validator>> {
        match self.0 {
            Saved::Any => Ok(Box::new(AcceptAll)),
            Saved::Png(mut v) => {
                v.check_saved().map_err(bad_state)?;
                v.tighten(&limits.image)?;
                Ok(v)
            }
            Saved::Jpeg(mut v) => {
                v.check_saved().map_err(bad_state)?;
                v.tighten(&limits.image)?;
                Ok(v)
            }
            #[cfg(feature = "decode")]
            Saved::Decode(saved) => saved.restore(limits),
        }
    }

    /// The structural format the state validates: `None` for a validator that accepts
    /// anything.
    pub(crate) fn format(&self) -> Option<MediaType> {
        match &self.0 {
            Saved::Any => None,
            Saved::Png(_) => Some(MediaType::PNG),
            Saved::Jpeg(_) => Some(MediaType::JPEG),
            #[cfg(feature = "decode")]
            Saved::Decode(saved) => saved.format(),
        }
    }

    /// How many bytes of the file the saved validator has walked (0 for one that accepts
    /// anything: it keeps no position).
    pub(crate) fn offset(&self) -> u64 {
        match &self.0 {
            Saved::Any => 0,
            Saved::Png(v) => v.offset(),
            Saved::Jpeg(v) => v.offset(),
            #[cfg(feature = "decode")]
            Saved::Decode(saved) => saved.offset(),
        }
    }
}

/// Farthest position a saved validator may stand at: far beyond any file a policy takes
/// (2^62 bytes), so that positions computed from it (a chunk's end, the next marker) never
/// overflow, whatever a forged state says.
pub(crate) const MAX_SAVED_OFFSET: u64 = 1 << 62;

/// The error for a saved state that cannot be restored.
pub(crate) fn bad_state(problem: &str) -> Error {
    Error::corrupt("a saved validator state", problem)
}

/// Saves and restores a `crc32fast::Hasher` as its running value: the CRC of the bytes
/// so far is all the state it has.
pub(crate) mod crc_state {
    pub fn serialize<S: serde::Serializer>(
        h: &crc32fast::Hasher,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_u32(h.clone().finalize())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<crc32fast::Hasher, D::Error> {
        let crc = <u32 as serde::Deserialize>::deserialize(d)?;
        Ok(crc32fast::Hasher::new_with_initial(crc))
    }
}

/// A tokenizer's position: the bytes it has consumed (saved as `{"offset": n}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Progress {
    /// Bytes consumed so far.
    pub(crate) offset: u64,
}

/// The image limits a validator enforces as it walks a file, with its running counts:
/// shared by the PNG and JPEG validators.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Budget {
    #[serde(flatten)]
    limits: ImageLimits,
    segments: u32,
    metadata: u64,
}

fn within(what: ImageLimit, value: u64, limit: u64) -> Result<()> {
    if value > limit {
        Err(Error::ImageLimit { what, value, limit })
    } else {
        Ok(())
    }
}

impl Budget {
    /// Checks a restored budget: its counts within its own limits (a walk fails as soon as
    /// one passes), as a validator saves it.
    pub(crate) fn check_saved(&self) -> std::result::Result<(), &'static str> {
        if self.segments > self.limits.max_segments
            || self.metadata > self.limits.max_metadata_bytes
        {
            return Err("image budget: counts over the limits saved with them");
        }
        Ok(())
    }

    /// Takes the smaller of each saved limit and `limits`' (a policy tightened between two
    /// chunks), then checks the counts so far against them.
    ///
    /// # Errors
    ///
    /// [`Error::ImageLimit`] for a count already over a tightened limit.
    pub(crate) fn tighten(&mut self, limits: &ImageLimits) -> Result<()> {
        self.limits = self.limits.tighter(limits);
        within(
            ImageLimit::Segments,
            u64::from(self.segments),
            u64::from(self.limits.max_segments),
        )?;
        within(
            ImageLimit::MetadataBytes,
            self.metadata,
            self.limits.max_metadata_bytes,
        )
    }

    /// Chunks or segments counted so far.
    pub(crate) fn segments(&self) -> u32 {
        self.segments
    }

    pub(crate) fn new(limits: &ImageLimits) -> Self {
        Budget {
            limits: *limits,
            segments: 0,
            metadata: 0,
        }
    }

    /// Checks declared dimensions, before anything is decoded.
    pub(crate) fn dimensions(&self, width: u32, height: u32) -> Result<()> {
        within(
            ImageLimit::Width,
            u64::from(width),
            u64::from(self.limits.max_width),
        )?;
        within(
            ImageLimit::Height,
            u64::from(height),
            u64::from(self.limits.max_height),
        )?;
        within(
            ImageLimit::Pixels,
            u64::from(width) * u64::from(height),
            self.limits.max_pixels,
        )
    }

    /// Counts one more chunk or segment.
    pub(crate) fn segment(&mut self) -> Result<()> {
        // In u64, where one more than any u32 count fits; within the u32 limit it fits
        // back.
        let count = u64::from(self.segments) + 1;
        within(
            ImageLimit::Segments,
            count,
            u64::from(self.limits.max_segments),
        )?;
        self.segments = u32::try_from(count).unwrap_or(u32::MAX);
        Ok(())
    }

    /// Counts `bytes` more of metadata.
    pub(crate) fn metadata(&mut self, bytes: u64) -> Result<()> {
        let total = self.metadata.saturating_add(bytes);
        within(
            ImageLimit::MetadataBytes,
            total,
            self.limits.max_metadata_bytes,
        )?;
        self.metadata = total;
        Ok(())
    }
}
