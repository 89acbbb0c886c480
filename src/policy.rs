//! What a deployment accepts: [`Policy`] (allowed types, checks), [`Limits`] (upload
//! sizes) and, inside them, [`ImageLimits`] (what an image may declare).
//!
//! One preset per API flavour the crate speaks:
//!
//! | preset | single request | chunked upload | chunk | types |
//! | --- | --- | --- | --- | --- |
//! | [`Policy::connectivity`] | <= 1,048,576 | 1,048,577 ..= 10,485,760 | <= 1,048,576 | `image/jpeg`, `image/png` |
//! | [`Policy::demand`] | <= 1,048,576 | none | n/a | `image/png`, `image/jpeg` (`image/jpg` read as `image/jpeg`) |
//! | [`Policy::chat`] | <= [`DEFAULT_CHAT_MAX_SIZE`] (configurable) | none | n/a | any |
//!
//! All sizes count decoded bytes, never base64 text.

use serde::{Deserialize, Serialize};

use crate::error::{Error, FileNameProblem, Result, SizeLimit};
use crate::sniff::MediaType;

/// One mebibyte, the "1MB" of the Booking.com documents.
pub const MIB: u64 = 1 << 20;

/// The largest file one request may carry on the Booking.com APIs: 1,048,576 bytes.
pub const BOOKING_SINGLE_MAX: u64 = MIB;

/// The largest file a Connectivity chunked upload may carry: 10,485,760 bytes.
pub const CONNECTIVITY_CHUNKED_MAX: u64 = 10 * MIB;

/// The largest Connectivity chunk: 1,048,576 decoded bytes.
pub const CONNECTIVITY_CHUNK_MAX: u64 = MIB;

/// Default maximum file size of the chat-platform preset: 25 MiB (26,214,400 bytes).
pub const DEFAULT_CHAT_MAX_SIZE: u64 = 25 * MIB;

/// Default longest file name, in bytes of UTF-8: 255 (the common file-system limit).
pub const DEFAULT_MAX_FILE_NAME_LEN: usize = 255;

/// Default largest image width and height: 65,535 pixels (JPEG's own maximum).
pub const DEFAULT_MAX_DIMENSION: u32 = 65_535;

/// Default largest image area: 100,000,000 pixels (100 megapixels; a full decode of that
/// as RGBA needs 400 MB).
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// Default most PNG chunks or JPEG segments in one file: 100,000. Real files have tens to a
/// few thousands (an APNG has two per frame); the cap bounds the work spent on files made of
/// empty chunks.
pub const DEFAULT_MAX_SEGMENTS: u32 = 100_000;

/// Default most metadata bytes in one image: 4 MiB (text, EXIF, XMP including extended
/// XMP, IPTC, ICC profiles, comments).
pub const DEFAULT_MAX_METADATA_BYTES: u64 = 4 * MIB;

/// Default most memory a full decode (feature `decode`) may allocate: 512 MiB.
pub const DEFAULT_MAX_DECODE_ALLOC: u64 = 512 * MIB;

/// What an image may declare: the limits the structural validators and the full decode
/// enforce, apart from the sizes of uploads ([`Limits`]).
///
/// Every preset uses [`ImageLimits::DEFAULT`]. A validator's saved state carries the
/// image limits it started under; a restore applies the smaller of those and the
/// current policy's, field by field ([`ImageLimits::tighter`]).
///
/// # Examples
///
/// ```
/// use attachments::{ImageLimits, Limits};
///
/// let mut limits = Limits::demand();
/// assert_eq!(limits.image, ImageLimits::DEFAULT);
/// limits.image.max_width = 4_000;
/// let now = ImageLimits::DEFAULT.tighter(&limits.image);
/// assert_eq!((now.max_width, now.max_height), (4_000, 65_535));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ImageLimits {
    /// The widest image, in pixels.
    pub max_width: u32,
    /// The tallest image, in pixels.
    pub max_height: u32,
    /// The largest image area (width x height).
    pub max_pixels: u64,
    /// The most PNG chunks or JPEG marker segments in one file.
    pub max_segments: u32,
    /// The most metadata bytes in one image.
    pub max_metadata_bytes: u64,
    /// The most memory a full decode may allocate (feature `decode`). States saved before
    /// this field existed carry none: they read as no limit, so the current policy's
    /// applies.
    #[serde(default = "no_limit")]
    pub max_decode_alloc: u64,
}

fn no_limit() -> u64 {
    u64::MAX
}

impl ImageLimits {
    /// The limits of every preset: width and height [`DEFAULT_MAX_DIMENSION`], area
    /// [`DEFAULT_MAX_PIXELS`], [`DEFAULT_MAX_SEGMENTS`] chunks or segments,
    /// [`DEFAULT_MAX_METADATA_BYTES`] of metadata, [`DEFAULT_MAX_DECODE_ALLOC`] to decode.
    pub const DEFAULT: ImageLimits = ImageLimits {
        max_width: DEFAULT_MAX_DIMENSION,
        max_height: DEFAULT_MAX_DIMENSION,
        max_pixels: DEFAULT_MAX_PIXELS,
        max_segments: DEFAULT_MAX_SEGMENTS,
        max_metadata_bytes: DEFAULT_MAX_METADATA_BYTES,
        max_decode_alloc: DEFAULT_MAX_DECODE_ALLOC,
    };

    /// The smaller of `self` and `other`, field by field: what a restore applies to the
    /// rest of a file (the limits it started under, and the current policy's).
    pub fn tighter(&self, other: &ImageLimits) -> ImageLimits {
        ImageLimits {
            max_width: self.max_width.min(other.max_width),
            max_height: self.max_height.min(other.max_height),
            max_pixels: self.max_pixels.min(other.max_pixels),
            max_segments: self.max_segments.min(other.max_segments),
            max_metadata_bytes: self.max_metadata_bytes.min(other.max_metadata_bytes),
            max_decode_alloc: self.max_decode_alloc.min(other.max_decode_alloc),
        }
    }
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits::DEFAULT
    }
}

/// Upload sizes, all in decoded bytes, and the [`ImageLimits`] images are checked under.
///
/// # Examples
///
/// ```
/// use attachments::Limits;
///
/// let limits = Limits::connectivity();
/// assert_eq!(limits.max_single_size, 1_048_576);
/// assert_eq!(limits.max_chunked_size, Some(10_485_760));
/// assert_eq!(limits.min_chunked_size(), Some(1_048_577));
/// assert_eq!(limits.image.max_width, 65_535);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The largest file a single request may carry.
    pub max_single_size: u64,
    /// The largest file a chunked upload may carry; `None` when the flavour has no chunked
    /// upload. A chunked upload takes files larger than `max_single_size`.
    pub max_chunked_size: Option<u64>,
    /// The largest chunk of a chunked upload.
    pub max_chunk_size: u64,
    /// The longest file name, in bytes of UTF-8.
    pub max_file_name_len: usize,
    /// The largest attachment a download without `from` returns whole (over 1 MB, pass
    /// `from`: `docs/protocol.md`, *Download by range*).
    pub max_unranged_download: u64,
    /// What an image may declare (dimensions, chunks or segments, metadata, decode
    /// memory): the same in every preset.
    pub image: ImageLimits,
}

/// What every preset shares.
const SHARED: Limits = Limits {
    max_single_size: 0,
    max_chunked_size: None,
    max_chunk_size: 0,
    max_file_name_len: DEFAULT_MAX_FILE_NAME_LEN,
    max_unranged_download: BOOKING_SINGLE_MAX,
    image: ImageLimits::DEFAULT,
};

impl Limits {
    /// Connectivity: single <= 1 MiB, chunked 1 MiB + 1 ..= 10 MiB, chunks <= 1 MiB.
    pub const fn connectivity() -> Self {
        Limits {
            max_single_size: BOOKING_SINGLE_MAX,
            max_chunked_size: Some(CONNECTIVITY_CHUNKED_MAX),
            max_chunk_size: CONNECTIVITY_CHUNK_MAX,
            ..SHARED
        }
    }

    /// Demand: single <= 1 MiB, no chunked upload.
    pub const fn demand() -> Self {
        Limits {
            max_single_size: BOOKING_SINGLE_MAX,
            max_chunked_size: None,
            max_chunk_size: BOOKING_SINGLE_MAX,
            ..SHARED
        }
    }

    /// Chat platform: one upload of at most `max_size` bytes.
    pub const fn chat(max_size: u64) -> Self {
        Limits {
            max_single_size: max_size,
            max_chunked_size: None,
            max_chunk_size: max_size,
            max_unranged_download: max_size,
            ..SHARED
        }
    }

    /// The smallest file a chunked upload takes (`max_single_size + 1`), if there is one.
    pub const fn min_chunked_size(&self) -> Option<u64> {
        match self.max_chunked_size {
            Some(_) => Some(self.max_single_size + 1),
            None => None,
        }
    }

    /// The largest file accepted by any route: the chunked maximum if there is one.
    pub fn max_file_size(&self) -> u64 {
        self.max_chunked_size.unwrap_or(0).max(self.max_single_size)
    }
}

/// How a file of a given size travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UploadMode {
    /// One request carries the whole file.
    Single,
    /// `start` / `resume` / `finish` requests carry it in chunks.
    Chunked,
}

/// Which types a policy accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AllowedTypes {
    /// Any well-formed MIME type.
    Any,
    /// Only these (normalised) types.
    Only(Vec<MediaType>),
}

/// What a deployment accepts: types, sizes, and how strictly content is checked.
///
/// # Examples
///
/// ```
/// use attachments::{Policy, MediaType, UploadMode};
///
/// let demand = Policy::demand();
/// assert_eq!(demand.check_type("image/jpg").unwrap(), MediaType::JPEG);
/// assert_eq!(demand.check_type("image/gif").unwrap_err().status(), 415);
///
/// let connectivity = Policy::connectivity();
/// assert_eq!(connectivity.upload_mode(2_602_519).unwrap(), UploadMode::Chunked);
/// assert!(connectivity.upload_mode(10_485_761).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Policy {
    /// Size limits.
    pub limits: Limits,
    /// Accepted declared types.
    pub allowed_types: AllowedTypes,
    /// Read a declared `image/jpg` as `image/jpeg`.
    pub jpg_alias: bool,
    /// Reject content whose type cannot be recognised from its leading bytes. The image
    /// presets set it; the chat preset accepts unrecognised content under its declared type.
    pub require_recognized: bool,
    /// Accept bytes after the end of an image (after PNG's IEND or JPEG's EOI). Off by
    /// default: appended data is how polyglot files hide a second payload.
    pub allow_trailing: bool,
    /// How deeply images are checked.
    pub depth: Depth,
    /// Accept types that can carry active content a browser runs (HTML, SVG, XML; see
    /// [`MediaType::is_active_content`]), declared or recognised. Off in every preset:
    /// served back from the same origin, such a file runs scripts as the site.
    pub allow_active_content: bool,
}

/// How deeply an image is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Depth {
    /// The file's structure: every PNG chunk and CRC, every JPEG segment and the
    /// entropy-coded data's markers. Needs no pixel decoding; runs at memory speed with
    /// memory bounded by a few small buffers.
    #[default]
    Structure,
    /// The structure, then a full decode with the `image` crate under `image::Limits`
    /// (feature `decode`), which catches corrupt compressed data. Holds the whole file in
    /// memory (at most the policy's largest file) until the end, and refuses an image whose
    /// pixel buffer would exceed [`ImageLimits::max_decode_alloc`] before allocating it.
    #[cfg(feature = "decode")]
    Decode,
}

impl Policy {
    /// Booking.com Connectivity messaging: `image/jpeg` and `image/png`; single uploads up to
    /// 1 MiB, chunked uploads above that up to 10 MiB in chunks of at most 1 MiB.
    pub fn connectivity() -> Self {
        Policy {
            limits: Limits::connectivity(),
            allowed_types: AllowedTypes::Only(vec![MediaType::JPEG, MediaType::PNG]),
            jpg_alias: false,
            require_recognized: true,
            allow_trailing: false,
            depth: Depth::Structure,
            allow_active_content: false,
        }
    }

    /// Booking.com Demand API messaging: `image/png` and `image/jpeg` (with `image/jpg` read
    /// as `image/jpeg`), single uploads up to 1 MiB.
    pub fn demand() -> Self {
        Policy {
            limits: Limits::demand(),
            allowed_types: AllowedTypes::Only(vec![MediaType::PNG, MediaType::JPEG]),
            jpg_alias: true,
            require_recognized: true,
            allow_trailing: false,
            depth: Depth::Structure,
            allow_active_content: false,
        }
    }

    /// A chat platform's attachments resource: any type, up to [`DEFAULT_CHAT_MAX_SIZE`];
    /// change it with [`Policy::with_max_size`].
    pub fn chat() -> Self {
        Policy {
            limits: Limits::chat(DEFAULT_CHAT_MAX_SIZE),
            allowed_types: AllowedTypes::Any,
            jpg_alias: true,
            require_recognized: false,
            allow_trailing: false,
            depth: Depth::Structure,
            allow_active_content: false,
        }
    }

    /// Sets the largest file a single upload may carry (and so the chunk limit of flavours
    /// without chunks).
    pub fn with_max_size(mut self, max: u64) -> Self {
        self.limits.max_single_size = max;
        if self.limits.max_chunked_size.is_none() {
            self.limits.max_chunk_size = max;
        }
        self
    }

    /// Accepts (or not) types that can carry active content (HTML, SVG, XML).
    ///
    /// # Examples
    ///
    /// ```
    /// use attachments::Policy;
    ///
    /// assert_eq!(Policy::chat().check_type("image/svg+xml").unwrap_err().status(), 415);
    /// assert!(Policy::chat().with_active_content(true).check_type("image/svg+xml").is_ok());
    /// ```
    pub fn with_active_content(mut self, allow: bool) -> Self {
        self.allow_active_content = allow;
        self
    }

    /// Accepts (or not) bytes after the end of an image.
    pub fn with_allow_trailing(mut self, allow: bool) -> Self {
        self.allow_trailing = allow;
        self
    }

    /// Sets how deeply images are checked.
    pub fn with_depth(mut self, depth: Depth) -> Self {
        self.depth = depth;
        self
    }

    /// Replaces the limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Normalises a declared type and checks that the policy accepts it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidType`] (400) for text that is not a MIME type,
    /// [`Error::UnsupportedType`] (415) for a type the policy does not accept.
    pub fn check_type(&self, declared: &str) -> Result<MediaType> {
        let mut ty = MediaType::parse(declared)?;
        if self.jpg_alias && ty.as_str() == "image/jpg" {
            ty = MediaType::JPEG;
        }
        match &self.allowed_types {
            AllowedTypes::Any if ty.is_active_content() && !self.allow_active_content => {
                Err(Error::ActiveContent {
                    media_type: ty.to_string(),
                    declared: true,
                })
            }
            AllowedTypes::Any => Ok(ty),
            AllowedTypes::Only(list) if list.contains(&ty) => Ok(ty),
            AllowedTypes::Only(list) => Err(Error::UnsupportedType {
                declared: declared.to_owned(),
                allowed: list
                    .iter()
                    .map(MediaType::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Checks the type recognised from the content against the declared (normalised) one.
    ///
    /// `detected` is `None` when the content matched no known type.
    ///
    /// # Errors
    ///
    /// [`Error::TypeMismatch`] when both are known and differ;
    /// [`Error::UnrecognizedContent`] when nothing was recognised and the policy requires it.
    pub fn check_detected(
        &self,
        declared: &MediaType,
        detected: Option<&MediaType>,
        sniffed: usize,
    ) -> Result<()> {
        let active = |found: &MediaType| {
            if found.is_active_content() && !self.allow_active_content {
                Err(Error::ActiveContent {
                    media_type: found.to_string(),
                    declared: false,
                })
            } else {
                Ok(())
            }
        };
        match detected {
            Some(found) if found == declared => active(found),
            // Declaring "no particular type" lets the content decide, where any type goes.
            Some(found) if *declared == MediaType::OCTET_STREAM && !self.require_recognized => {
                active(found)
            }
            Some(found) => Err(Error::TypeMismatch {
                declared: declared.to_string(),
                detected: found.to_string(),
            }),
            None if self.require_recognized => Err(Error::UnrecognizedContent {
                declared: declared.to_string(),
                sniffed,
            }),
            None => Ok(()),
        }
    }

    /// Decides how a file of `size` bytes travels, or refuses it.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] when no route takes a file that large.
    pub fn upload_mode(&self, size: u64) -> Result<UploadMode> {
        let limits = &self.limits;
        if size <= limits.max_single_size {
            return Ok(UploadMode::Single);
        }
        match limits.max_chunked_size {
            Some(max) if size <= max => Ok(UploadMode::Chunked),
            Some(max) => Err(Error::TooLarge {
                size,
                limit: max,
                kind: SizeLimit::Chunked,
            }),
            None => Err(Error::TooLarge {
                size,
                limit: limits.max_single_size,
                kind: SizeLimit::Single,
            }),
        }
    }

    /// Checks a declared total size for the given route.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] over the route's maximum; [`Error::TooSmallForChunks`] for a
    /// chunked upload of a file a single request could carry.
    pub fn check_size(&self, size: u64, mode: UploadMode) -> Result<()> {
        let limits = &self.limits;
        match (mode, limits.max_chunked_size) {
            (UploadMode::Single, _) | (UploadMode::Chunked, None) => {
                if size > limits.max_single_size {
                    return Err(Error::TooLarge {
                        size,
                        limit: limits.max_single_size,
                        kind: SizeLimit::Single,
                    });
                }
                Ok(())
            }
            (UploadMode::Chunked, Some(max)) => {
                if size > max {
                    Err(Error::TooLarge {
                        size,
                        limit: max,
                        kind: SizeLimit::Chunked,
                    })
                } else if size <= limits.max_single_size {
                    Err(Error::TooSmallForChunks {
                        size,
                        min: limits.max_single_size + 1,
                    })
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Checks one chunk's decoded size.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] with [`SizeLimit::Chunk`] over `max_chunk_size`.
    pub fn check_chunk_size(&self, size: u64) -> Result<()> {
        if size > self.limits.max_chunk_size {
            return Err(Error::TooLarge {
                size,
                limit: self.limits.max_chunk_size,
                kind: SizeLimit::Chunk,
            });
        }
        Ok(())
    }

    /// Checks a file name: stored for display, never used as a path.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidFileName`] for an empty name, `.` or `..`, a name over
    /// `max_file_name_len` bytes, or one holding `/`, `\` or a control character.
    pub fn check_file_name(&self, name: &str) -> Result<()> {
        let bad = |p| Err(Error::InvalidFileName(p));
        if name.is_empty() {
            return bad(FileNameProblem::Empty);
        }
        if name.len() > self.limits.max_file_name_len {
            return bad(FileNameProblem::TooLong {
                len: name.len(),
                max: self.limits.max_file_name_len,
            });
        }
        if name == "." || name == ".." {
            return bad(FileNameProblem::DotName);
        }
        for (at, c) in name.char_indices() {
            if c == '/' || c == '\\' {
                return bad(FileNameProblem::PathSeparator { at });
            }
            if c.is_control() {
                return bad(FileNameProblem::ControlCharacter { at });
            }
        }
        Ok(())
    }
}
