//! The nested kinds of [`Error`](super::Error): what exactly is wrong with a chunk, a
//! range, a downloaded piece, a base64 text or a file name; which limit a size or an image
//! broke; and the helpers that word their messages.

use std::borrow::Cow;
use std::fmt;

/// Why a chunk was rejected; see [`Error::Chunk`](super::Error::Chunk).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChunkProblem {
    /// `start` carried another chunk than 0.
    StartNotZero {
        /// The number it carried.
        number: u64,
    },
    /// `resume` or `finish` came without the `upload_id` that `start` returned.
    MissingUploadId {
        /// `resume` or `finish`.
        action: &'static str,
    },
    /// `start` came with an `upload_id`; a start opens a new upload.
    UnexpectedUploadId,
    /// A chunk number other than the next one.
    OutOfOrder {
        /// The number the upload expects next.
        expected: u64,
        /// The number that came.
        got: u64,
    },
    /// A number already used, with other content or another action than the first time.
    Reused {
        /// The number that came again.
        number: u64,
        /// The number the upload expects next.
        next: u64,
    },
    /// A chunk describes another file than `start` did.
    Changed {
        /// `file_name`, `file_type` or `file_size`.
        field: &'static str,
        /// The value `start` gave.
        at_start: String,
        /// The value this chunk gives.
        now: String,
    },
    /// A `resume` chunk completes the file, which only `finish` may do.
    CompletesEarly {
        /// The chunk's number.
        number: u64,
        /// The file's declared size.
        file_size: u64,
    },
    /// A chunk carries no bytes.
    Empty {
        /// The chunk's number.
        number: u64,
    },
    /// A client was configured with a chunk size of 0.
    ZeroChunkSize,
}

impl fmt::Display for ChunkProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkProblem::StartNotZero { number } => write!(
                f,
                "action start must carry chunk_number 0, not {number}; use resume for later chunks"
            ),
            ChunkProblem::MissingUploadId { action } => write!(
                f,
                "action {action} needs the upload_id that the start response returned"
            ),
            ChunkProblem::UnexpectedUploadId => f.write_str(
                "action start opens a new upload and takes no upload_id; send resume or finish to \
                 continue an upload",
            ),
            ChunkProblem::OutOfOrder { expected, got } => write!(
                f,
                "expected chunk_number {expected} next but got {got}; send the chunks in order, \
                 each number once"
            ),
            ChunkProblem::Reused { number, next } => write!(
                f,
                "chunk_number {number} was already accepted with other content; the next chunk \
                 is {next}"
            ),
            ChunkProblem::Changed {
                field,
                at_start,
                now,
            } => write!(
                f,
                "{field} is {now} but was {at_start} at start; every chunk must describe the same \
                 file"
            ),
            ChunkProblem::CompletesEarly { number, file_size } => write!(
                f,
                "chunk {number} brings the total to the file_size of {file_size} bytes; send the \
                 last chunk with action finish"
            ),
            ChunkProblem::Empty { number } => write!(
                f,
                "chunk {number} is empty; every chunk carries at least one byte"
            ),
            ChunkProblem::ZeroChunkSize => f.write_str(
                "a chunk size of 0 bytes cannot carry a file; use at least 1 byte \
                 (the default is 1048575)",
            ),
        }
    }
}

/// Which size limit a [`Error::TooLarge`](super::Error::TooLarge) refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SizeLimit {
    /// The largest file one request may carry (1 MB on the Booking.com APIs).
    Single,
    /// The largest file a chunked upload may carry (10 MB on Connectivity).
    Chunked,
    /// The largest single chunk (1 MB on Connectivity).
    Chunk,
    /// The largest request body, in bytes of JSON (the largest file or chunk as base64,
    /// plus room for the other fields).
    Body,
}

/// Which image limit an [`Error::ImageLimit`](super::Error::ImageLimit) refers to; see [`crate::Limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ImageLimit {
    /// Width in pixels.
    Width,
    /// Height in pixels.
    Height,
    /// Width x height.
    Pixels,
    /// Number of PNG chunks or JPEG marker segments.
    Segments,
    /// Bytes of metadata (text, EXIF, XMP, IPTC, ICC profiles, comments).
    MetadataBytes,
    /// Memory a full decode would need, in bytes.
    DecodeMemory,
}

pub(super) fn image_limit(what: ImageLimit, value: u64, limit: u64) -> String {
    let (name, unit, hint) = match what {
        ImageLimit::Width => ("image width", "pixels", "scale the image down"),
        ImageLimit::Height => ("image height", "pixels", "scale the image down"),
        ImageLimit::Pixels => ("image area", "pixels", "scale the image down"),
        ImageLimit::Segments => ("number of chunks/segments", "", "re-save the image"),
        ImageLimit::MetadataBytes => ("metadata", "bytes", "strip the metadata"),
        ImageLimit::DecodeMemory => (
            "memory to decode the image",
            "bytes",
            "scale the image down",
        ),
    };
    let unit = if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    };
    format!("{name} of {value}{unit} exceeds the limit of {limit}{unit}; {hint}")
}

/// Why a download's range was refused; see [`Error::Range`](super::Error::Range).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RangeProblem {
    /// `from` or `to` is not a non-negative integer.
    NotANumber {
        /// `from` or `to`.
        param: &'static str,
        /// The value as sent.
        value: String,
    },
    /// The attachment is larger than a download without `from` may return.
    FromRequired {
        /// The attachment's size.
        size: u64,
        /// The largest attachment served without `from`.
        limit: u64,
    },
    /// `to` without `from`.
    ToWithoutFrom {
        /// The `to` sent.
        to: u64,
    },
    /// `from` is at or past the end of the attachment.
    FromPastEnd {
        /// The `from` sent.
        from: u64,
        /// The attachment's size.
        size: u64,
    },
    /// `to` is before `from`.
    ToBeforeFrom {
        /// The `from` sent.
        from: u64,
        /// The `to` sent.
        to: u64,
    },
    /// A parameter was given twice.
    Repeated {
        /// `from` or `to`.
        param: &'static str,
    },
    /// A [`RangePlan`](crate::download::RangePlan) was asked for ranges of 0 bytes.
    ZeroRangeSize,
}

impl fmt::Display for RangeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeProblem::NotANumber { param, value } => write!(
                f,
                "{param}={value:?} is not a byte offset; pass a non-negative integer"
            ),
            RangeProblem::FromRequired { size, limit } => write!(
                f,
                "the attachment is {size} bytes, over the {limit} bytes a download without from \
                 returns; pass from and to to download it in ranges (from=0&to={})",
                limit - 1
            ),
            RangeProblem::ToWithoutFrom { to } => {
                write!(f, "to={to} was given without from; pass from as well")
            }
            RangeProblem::FromPastEnd { from, size } => write!(
                f,
                "from={from} is past the end of the attachment of {size} bytes (its last byte is \
                 {}); ask for from < {size}",
                size.saturating_sub(1)
            ),
            RangeProblem::ToBeforeFrom { from, to } => write!(
                f,
                "to={to} is before from={from}; to is the last byte wanted (inclusive) and must \
                 be at least from"
            ),
            RangeProblem::Repeated { param } => {
                write!(f, "{param} is given more than once; pass it once")
            }
            RangeProblem::ZeroRangeSize => {
                f.write_str("a download range must hold at least one byte")
            }
        }
    }
}

/// Why a downloaded piece was refused; see [`Error::Piece`](super::Error::Piece).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PieceProblem {
    /// The piece runs past the attachment's size.
    PastEnd {
        /// Where the piece was placed.
        offset: u64,
        /// Its length.
        len: u64,
        /// The attachment's size.
        file_size: u64,
    },
    /// The piece overlaps bytes already received, and they differ.
    Conflict {
        /// The first byte that differs, from the start of the file.
        offset: u64,
    },
    /// The download ended with bytes missing.
    Incomplete {
        /// The first missing range: re-request it.
        missing: std::ops::Range<u64>,
    },
    /// All bytes arrived but their SHA-256 is not the expected one.
    DigestMismatch {
        /// The expected digest, hex.
        expected: String,
        /// The digest of the bytes received, hex.
        actual: String,
    },
}

impl fmt::Display for PieceProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PieceProblem::PastEnd {
                offset,
                len,
                file_size,
            } => write!(
                f,
                "{len} bytes at offset {offset} run past the attachment's {file_size} bytes"
            ),
            PieceProblem::Conflict { offset } => write!(
                f,
                "the bytes at offset {offset} differ from those an earlier piece brought; the \
                 server returned inconsistent content"
            ),
            PieceProblem::Incomplete { missing } => write!(
                f,
                "bytes {}..{} never arrived; request from={}&to={}",
                missing.start,
                missing.end,
                missing.start,
                missing.end - 1
            ),
            PieceProblem::DigestMismatch { expected, actual } => write!(
                f,
                "the SHA-256 of the downloaded bytes is {actual}, not the expected {expected}; \
                 download the attachment again"
            ),
        }
    }
}

/// What is wrong in a base64 text; see [`Error::Base64`](super::Error::Base64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Base64Problem {
    /// A byte outside the standard alphabet `A-Z a-z 0-9 + /` (and `=` for padding).
    InvalidByte(u8),
    /// A `=` where padding may not stand (inside a group, or a group with a single `=`
    /// followed by data).
    MisplacedPadding,
    /// Text continues after a padded final group.
    DataAfterPadding,
    /// The final group's unused low bits are not zero (a non-canonical encoding).
    NonZeroTrailingBits,
    /// The text ends with a lone character, which cannot encode a byte.
    Truncated,
}

impl fmt::Display for Base64Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Base64Problem::InvalidByte(b @ (b'-' | b'_')) => write!(
                f,
                "{:?} is from the URL-safe alphabet; encode with the standard alphabet (+ and /)",
                b as char
            ),
            Base64Problem::InvalidByte(b @ (b' ' | b'\t' | b'\r' | b'\n')) => write!(
                f,
                "whitespace ({:?}) is not allowed; send the base64 text without line breaks or spaces",
                b as char
            ),
            Base64Problem::InvalidByte(b) if b.is_ascii_graphic() => write!(
                f,
                "{:?} is not in the standard base64 alphabet",
                b as char
            ),
            Base64Problem::InvalidByte(b) => {
                write!(f, "byte 0x{b:02x} is not in the standard base64 alphabet")
            }
            Base64Problem::MisplacedPadding => {
                f.write_str("padding '=' may only end the final group of four characters")
            }
            Base64Problem::DataAfterPadding => {
                f.write_str("text continues after the padding that ended it")
            }
            Base64Problem::NonZeroTrailingBits => f.write_str(
                "the last character has non-zero unused bits (not a canonical encoding); re-encode the file",
            ),
            Base64Problem::Truncated => f.write_str(
                "the text ends with a single character of a group, which cannot encode a byte; \
                 the text is truncated",
            ),
        }
    }
}

/// Why a file name was rejected; see [`Error::InvalidFileName`](super::Error::InvalidFileName).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FileNameProblem {
    /// The name is empty.
    Empty,
    /// The name is longer than the limit, in bytes of UTF-8.
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The name holds a `/` or `\` at this byte offset; names are never paths.
    PathSeparator {
        /// Byte offset in the name.
        at: usize,
    },
    /// The name holds a control character at this byte offset.
    ControlCharacter {
        /// Byte offset in the name.
        at: usize,
    },
    /// The name is `.` or `..`.
    DotName,
}

impl fmt::Display for FileNameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FileNameProblem::Empty => f.write_str("it is empty; give the file a name"),
            FileNameProblem::TooLong { len, max } => {
                write!(
                    f,
                    "it is {len} bytes long, over the limit of {max} bytes; shorten it"
                )
            }
            FileNameProblem::PathSeparator { at } => write!(
                f,
                "it holds a path separator at byte {at}; send a bare file name, not a path"
            ),
            FileNameProblem::ControlCharacter { at } => {
                write!(f, "it holds a control character at byte {at}; remove it")
            }
            FileNameProblem::DotName => f.write_str("\".\" and \"..\" are not file names"),
        }
    }
}

/// `text` for an error message: as it is up to `max` bytes, else its first bytes (cut at a
/// character boundary), an ellipsis and its length. Values a client sent can be of any
/// length; the messages that quote them stay short enough to log, answer and save.
pub(crate) fn shorten(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    Cow::Owned(format!("{}... ({} bytes)", &text[..cut], text.len()))
}

/// Formats a limit the way the Booking.com documents do: `1MB` for 1,048,576 bytes.
pub(crate) fn human_size(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    const KIB: u64 = 1 << 10;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{}MB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{}KB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

pub(super) fn too_large(size: u64, limit: u64, kind: SizeLimit) -> String {
    let human = human_size(limit);
    match kind {
        SizeLimit::Single => format!(
            "file size {size} bytes exceeds the {human} limit ({limit} bytes) of a single upload; \
             use a chunked upload where the API offers one, or send a smaller file"
        ),
        SizeLimit::Chunked => format!(
            "file size {size} bytes exceeds the {human} limit ({limit} bytes) of a chunked upload; \
             send a smaller file"
        ),
        SizeLimit::Body => format!(
            "the request body of at least {size} bytes exceeds the limit of {limit} bytes; \
             send a smaller file or chunk"
        ),
        SizeLimit::Chunk => format!(
            "chunk size {size} bytes exceeds the {human} limit ({limit} bytes) per chunk; \
             split the file into smaller chunks"
        ),
    }
}

/// Why a request of a resumable upload (tus 1.0 or the IETF draft) was refused; see
/// [`Error::Resumable`](super::Error::Resumable). Each names the upload or the numbers
/// involved and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResumableProblem {
    /// An append began elsewhere than where the upload stands. 409.
    OffsetMismatch {
        /// Where the upload stands: the bytes the server keeps.
        expected: u64,
        /// The offset the request gave.
        got: u64,
    },
    /// Another request is appending to the upload now. 423, with `Retry-After`.
    Locked {
        /// The upload's id.
        upload_id: String,
    },
    /// The body does not have the checksum `Upload-Checksum` gave; nothing of it was kept.
    /// 460 (tus checksum extension).
    ChecksumMismatch {
        /// The algorithm named.
        algorithm: &'static str,
    },
    /// `Upload-Checksum` names an algorithm the server does not support. 400.
    UnsupportedChecksum {
        /// The name sent (shortened).
        algorithm: String,
    },
    /// A length that contradicts the one the upload already has. 400.
    InconsistentLength {
        /// The length the upload has.
        declared: u64,
        /// The length this request gives.
        now: u64,
    },
    /// A length shorter than what the upload already holds. 400.
    LengthBelowOffset {
        /// The length given.
        length: u64,
        /// The bytes already kept.
        offset: u64,
    },
    /// The body runs past the upload's length. 413.
    PastLength {
        /// The upload's length.
        length: u64,
        /// Where the body would end.
        end: u64,
    },
    /// The upload is complete: it takes no more bytes. 400 (the IETF `completed-upload`).
    Completed {
        /// The upload's id (its attachment's).
        upload_id: String,
    },
    /// The upload was refused earlier (the file stopped being acceptable, or it expired):
    /// every later request gets this, with the first error's status. Create a new upload.
    Refused {
        /// The upload's id.
        upload_id: String,
        /// The error that ended it.
        first: Box<super::Error>,
    },
    /// The upload was idle longer than the server keeps one; its bytes were released.
    /// 410 Gone.
    Expired {
        /// The upload's id.
        upload_id: String,
        /// The idle time allowed, in seconds.
        ttl_secs: u64,
    },
    /// The body came slower than the server waits for: fewer than `bytes` in `secs`
    /// seconds. 408; the bytes that came are kept.
    TooSlow {
        /// Seconds allowed for one piece.
        secs: u64,
        /// The piece's size in bytes.
        bytes: u64,
    },
    /// The request speaks another tus version than 1.0.0. 412, with `Tus-Version`.
    Version {
        /// The `Tus-Resumable` value sent (shortened), empty when missing.
        got: String,
    },
    /// The body's `Content-Type` is not the one the protocol requires. 415.
    ContentType {
        /// The type required.
        expected: &'static str,
        /// The type sent (shortened), empty when missing.
        got: String,
    },
}

impl ResumableProblem {
    /// The HTTP status this problem is answered with.
    pub fn status(&self) -> u16 {
        match self {
            ResumableProblem::OffsetMismatch { .. } => 409,
            ResumableProblem::Locked { .. } => 423,
            ResumableProblem::ChecksumMismatch { .. } => 460,
            ResumableProblem::PastLength { .. } => 413,
            ResumableProblem::Refused { first, .. } => first.status(),
            ResumableProblem::Version { .. } => 412,
            ResumableProblem::Expired { .. } => 410,
            ResumableProblem::TooSlow { .. } => 408,
            ResumableProblem::ContentType { .. } => 415,
            ResumableProblem::UnsupportedChecksum { .. }
            | ResumableProblem::InconsistentLength { .. }
            | ResumableProblem::LengthBelowOffset { .. }
            | ResumableProblem::Completed { .. } => 400,
        }
    }
}

impl fmt::Display for ResumableProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResumableProblem::OffsetMismatch { expected, got } => write!(
                f,
                "the append starts at byte {got} but the upload holds {expected} bytes: ask for \
                 the offset (HEAD) and send from byte {expected}"
            ),
            ResumableProblem::Locked { upload_id } => write!(
                f,
                "upload {upload_id} is taking another request's bytes right now: send this again \
                 in 1 s"
            ),
            ResumableProblem::ChecksumMismatch { algorithm } => write!(
                f,
                "the body's {algorithm} is not the one Upload-Checksum gives; none of it was kept: \
                 send the same bytes again"
            ),
            ResumableProblem::UnsupportedChecksum { algorithm } => write!(
                f,
                "Upload-Checksum names the algorithm {algorithm:?}; this server checks sha1 and \
                 sha256"
            ),
            ResumableProblem::InconsistentLength { declared, now } => write!(
                f,
                "the upload's length is {declared} bytes, and this request says {now}: a length \
                 cannot change"
            ),
            ResumableProblem::LengthBelowOffset { length, offset } => write!(
                f,
                "a length of {length} bytes is less than the {offset} bytes the upload holds"
            ),
            ResumableProblem::PastLength { length, end } => write!(
                f,
                "the body would end at byte {end}, past the upload's length of {length} bytes: \
                 send at most the bytes that remain"
            ),
            ResumableProblem::Completed { upload_id } => write!(
                f,
                "upload {upload_id} has all its bytes and takes no more; it is (or, once \
                 committed, will be) attachment {upload_id}"
            ),
            ResumableProblem::Refused { upload_id, first } => write!(
                f,
                "upload {upload_id} was refused earlier ({}); create a new upload",
                first.wire_message()
            ),
            ResumableProblem::Expired {
                upload_id,
                ttl_secs,
            } => write!(
                f,
                "upload {upload_id} expired: no bytes came for over {ttl_secs} s, and the ones \
                 it had were released; create a new upload"
            ),
            ResumableProblem::TooSlow { secs, bytes } => write!(
                f,
                "the body sent fewer than {bytes} bytes in {secs} s; the bytes that came are \
                 kept: ask for the offset (HEAD) and send the rest faster"
            ),
            ResumableProblem::Version { got } if got.is_empty() => {
                f.write_str("Tus-Resumable is missing: this server speaks tus 1.0.0")
            }
            ResumableProblem::Version { got } => write!(
                f,
                "Tus-Resumable is {got:?}: this server speaks tus 1.0.0 only"
            ),
            ResumableProblem::ContentType { expected, got } if got.is_empty() => {
                write!(
                    f,
                    "Content-Type is missing: an append is sent as {expected}"
                )
            }
            ResumableProblem::ContentType { expected, got } => write!(
                f,
                "Content-Type is {got:?}: an append is sent as {expected}"
            ),
        }
    }
}
