//! Image validation: incremental structural checkers for PNG and JPEG, fed any slices.
//!
//! [`validator_for`] picks the checker for a declared type under a [`Policy`]; the
//! [`Inspector`](crate::Inspector) calls it, so every file that passes the Inspector as
//! `image/png` or `image/jpeg` is a complete, well-formed image within the policy's limits,
//! with nothing before or after it.

#[cfg(feature = "decode")]
pub mod deep;
pub mod jpeg;
pub mod png;
pub mod strip;

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

/// A byte-level state machine fed slices: the validators' shared driver.
///
/// `step` consumes a prefix of the slice it is given (at least one byte) and says how
/// much; [`Walk::feed`] calls it until the slice is used up. The first error is kept, and
/// every later call answers [`Error::AlreadyFailed`] with it.
pub(crate) trait Walk {
    /// Consumes a prefix of `data` (which is never empty); returns its length.
    fn step(&mut self, data: &[u8]) -> Result<usize>;
    /// The walk's position and first error.
    fn progress(&mut self) -> &mut Progress;
    /// Why the input cannot end here, or `None` when it can.
    fn incomplete(&self) -> Option<Error>;

    /// Feeds a slice through [`Walk::step`].
    fn feed(&mut self, mut data: &[u8]) -> Result<()> {
        self.progress().alive()?;
        // No walk goes past the farthest position a saved state may hold, so whatever it
        // saves restores (only a restored state can be this far: no policy takes such a
        // file).
        let end = self.progress().offset.saturating_add(data.len() as u64);
        if end > MAX_SAVED_OFFSET {
            let e = Error::TooLarge {
                size: end,
                limit: MAX_SAVED_OFFSET,
                kind: crate::error::SizeLimit::Single,
            };
            return Err(self.progress().fail(e));
        }
        while !data.is_empty() {
            match self.step(data) {
                Ok(n) => {
                    // `step` consumes at most the slice; `get` keeps a wrong count from
                    // panicking here all the same.
                    let progress = self.progress();
                    progress.offset = progress.offset.saturating_add(n as u64);
                    data = data.get(n..).unwrap_or_default();
                }
                Err(e) => return Err(self.progress().fail(e)),
            }
        }
        Ok(())
    }

    /// Ends the input: an error when the walk is not at an end.
    fn end(&mut self) -> Result<()> {
        self.progress().alive()?;
        match self.incomplete() {
            Some(e) => Err(self.progress().fail(e)),
            None => Ok(()),
        }
    }
}

/// Position and first error of a [`Walk`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Progress {
    /// Bytes consumed so far.
    pub(crate) offset: u64,
    /// Not saved: only a validator that has not failed is saved.
    #[serde(skip)]
    failed: Option<Box<Error>>,
}

impl Progress {
    fn alive(&self) -> Result<()> {
        match &self.failed {
            Some(first) => Err(Error::AlreadyFailed {
                first: first.clone(),
            }),
            None => Ok(()),
        }
    }

    fn fail(&mut self, e: Error) -> Error {
        self.failed = Some(Box::new(e.clone()));
        e
    }
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
