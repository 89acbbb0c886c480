//! The crate's one error type.
//!
//! Every kind knows the HTTP status an API server answers it with ([`Error::status`]) and
//! the message the seed documents put on the wire ([`Error::wire_message`]). `Display` is
//! meant for the developer reading a log: it names the numbers involved and says what to do.

use std::borrow::Cow;
use std::fmt;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while checking, encoding or decoding an attachment.
///
/// The enum is `#[non_exhaustive]`: later versions add kinds (image validation, upload
/// sessions, ranges) without breaking `match`es that end in a wildcard arm.
///
/// # Examples
///
/// ```
/// use attachments::Error;
///
/// let err = Error::SizeMismatch { actual: 35, declared: 350 };
/// assert_eq!(err.to_string(), "Content length is 35 but metadata size is 350");
/// assert_eq!(err.status(), 400);
/// assert_eq!(
///     err.wire_message(),
///     "Request failed with code: 400, message: Content length is 35 but metadata size is 350"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file (or a chunk) is larger than the limit that applies to it.
    ///
    /// `size` is the declared size, or the number of bytes seen so far when the content
    /// itself ran past the limit (then the true size is at least `size`).
    #[error("{}", too_large(*.size, *.limit, *.kind))]
    TooLarge {
        /// Bytes declared or counted.
        size: u64,
        /// The limit in force, in decoded bytes.
        limit: u64,
        /// Which limit it is.
        kind: SizeLimit,
    },

    /// A chunked upload was declared with a total size that belongs to the single-request
    /// endpoint.
    #[error(
        "file size {size} bytes is too small for a chunked upload, which takes files of \
         {min} bytes and more; send it in one request instead"
    )]
    TooSmallForChunks {
        /// The declared total size.
        size: u64,
        /// The smallest total a chunked upload accepts.
        min: u64,
    },

    /// The decoded content length differs from the declared `file_size` / `chunk_size`.
    ///
    /// The text is the one seed 000 documents, decoded length first, declared size second.
    #[error("Content length is {actual} but metadata size is {declared}")]
    SizeMismatch {
        /// Bytes actually received (decoded).
        actual: u64,
        /// Bytes declared in the metadata.
        declared: u64,
    },

    /// The declared MIME type is not one the policy accepts.
    #[error("file type {:?} is not supported here; use one of: {allowed}", shorten(.declared, 100))]
    UnsupportedType {
        /// The type as declared.
        declared: String,
        /// The accepted types, comma separated.
        allowed: String,
    },

    /// The declared type is not a well-formed MIME type (`type/subtype`).
    #[error(
        "file type {:?} is not a valid MIME type; expected the form type/subtype, e.g. image/png",
        shorten(.declared, 100)
    )]
    InvalidType {
        /// The type as declared.
        declared: String,
    },

    /// The content's leading bytes say it is another type than the one declared.
    #[error(
        "the content is {detected} but the declared file type is {declared}; \
         declare the real type or send the intended file"
    )]
    TypeMismatch {
        /// The type as declared (normalised).
        declared: String,
        /// The type recognised from the content.
        detected: String,
    },

    /// The content's leading bytes match no known type, and the policy requires one.
    #[error(
        "the content is not recognisable as {declared}: its first {sniffed} bytes match no \
         known file type"
    )]
    UnrecognizedContent {
        /// The type as declared (normalised).
        declared: String,
        /// How many leading bytes were examined.
        sniffed: usize,
    },

    /// The file is (declared as, or recognised as) a type that can carry active content
    /// a browser runs (HTML, SVG, XML), and the policy does not accept such types.
    #[error(
        "{media_type} files can carry scripts a browser would run, so they are not accepted \
         (the file {how} {media_type}); send another format, such as PDF or PNG",
        how = if *declared { "is declared as" } else { "contains" }
    )]
    ActiveContent {
        /// The type, normalised.
        media_type: String,
        /// Whether it was declared (else recognised from the content).
        declared: bool,
    },

    /// The content is not a well-formed file of its type, as a [`Validator`] found it.
    ///
    /// [`Validator`]: crate::Validator
    #[error("the content is not a valid {media_type} file: {reason} (at byte {offset})")]
    InvalidContent {
        /// The type the content was checked as.
        media_type: String,
        /// Offset in the file where the problem was found.
        offset: u64,
        /// What is wrong, and what to do.
        reason: String,
    },

    /// An image's header declares more than the limits allow. Raised from the header,
    /// before anything is decoded.
    #[error("{}", image_limit(*.what, *.value, *.limit))]
    ImageLimit {
        /// Which limit.
        what: ImageLimit,
        /// The value the file declares (or has reached).
        value: u64,
        /// The limit in force.
        limit: u64,
    },

    /// Bytes follow the end of the image (after PNG's IEND or JPEG's EOI): the way polyglot
    /// files hide a second payload.
    #[error(
        "the {media_type} image ends at byte {offset} but more data follows; send the image \
         without appended data (or allow trailing bytes in the policy)"
    )]
    TrailingData {
        /// The image's type.
        media_type: String,
        /// Offset of the first byte after the image.
        offset: u64,
    },

    /// A base64 text is not canonical standard base64.
    #[error("invalid base64 at byte offset {offset}: {problem}")]
    Base64 {
        /// Offset of the first offending character in the whole text.
        offset: u64,
        /// What is wrong there.
        problem: Base64Problem,
    },

    /// A file name is unusable.
    #[error("file name rejected: {0}")]
    InvalidFileName(FileNameProblem),

    /// A JSON body could not be parsed into the expected request or response.
    #[error("invalid JSON body: {message}")]
    InvalidJson {
        /// serde_json's description, naming the missing or malformed field and its position.
        message: String,
    },

    /// A chunk of a chunked upload does not fit the upload it claims to belong to.
    #[error("chunk rejected: {0}")]
    Chunk(ChunkProblem),

    /// A download's `from` / `to` cannot be served; see [`RangeProblem`].
    #[error("download range rejected: {0}")]
    Range(RangeProblem),

    /// A downloaded piece does not fit the attachment being put back together; see
    /// [`PieceProblem`]. The server sent wrong bytes: re-request, or report it.
    #[error("download piece rejected: {0}")]
    Piece(PieceProblem),

    /// No upload with this id is in progress.
    #[error(
        "no upload {:?} is in progress (it was never started here, or it ended and \
         was cleared); start again with action start and chunk 0"
    ,
        shorten(.upload_id, 100))]
    UploadNotFound {
        /// The id as sent.
        upload_id: String,
    },

    /// The upload was idle longer than the session TTL; its bytes were released.
    #[error(
        "upload {upload_id} expired after {idle_secs} s without a chunk (the limit is \
         {ttl_secs} s) and its bytes were released; start again with action start and chunk 0"
    )]
    UploadExpired {
        /// The upload's id.
        upload_id: String,
        /// Seconds between the last chunk and the expiry.
        idle_secs: u64,
        /// The TTL in force, in seconds.
        ttl_secs: u64,
    },

    /// The upload failed earlier; every later chunk gets this answer.
    #[error(
        "upload {upload_id} failed earlier ({first}); start again with action start and chunk 0"
    )]
    UploadFailed {
        /// The upload's id.
        upload_id: String,
        /// The error that ended it.
        first: Box<Error>,
    },

    /// The upload is already committed as an attachment.
    #[error(
        "upload {upload_id} is already finished as attachment {attachment_id}; start a new \
         upload for another file"
    )]
    UploadFinished {
        /// The upload's id.
        upload_id: String,
        /// The attachment it became.
        attachment_id: String,
    },

    /// Another chunk of the same upload is being processed right now.
    #[error(
        "upload {upload_id} is still processing an earlier chunk; wait for its answer before \
         sending chunk {number}"
    )]
    UploadBusy {
        /// The upload's id.
        upload_id: String,
        /// The chunk number that arrived meanwhile.
        number: u64,
    },

    /// The upload's `finish` is being committed by an earlier request. Its answer carries
    /// the attachment id; if it never came (the request or the server died), the same
    /// `finish` sent again after `retry_after_secs` takes the commit over.
    #[error(
        "upload {upload_id} is being committed by an earlier finish; if that request got no \
         answer, send the same finish again in {retry_after_secs} s"
    )]
    UploadCommitting {
        /// The upload's id.
        upload_id: String,
        /// Seconds until an identical `finish` may take the commit over.
        retry_after_secs: u64,
    },

    /// An attachment (or another stored object) does not exist, or is not visible to the
    /// caller.
    #[error("no {what} with id {:?} exists here", shorten(.id, 100))]
    NotFound {
        /// What was looked up (`attachment`, `upload`).
        what: &'static str,
        /// The id as given.
        id: String,
    },

    /// The path exists but does not take this method.
    #[error("{method} is not served on {path}; see the API's documentation for its methods")]
    MethodNotAllowed {
        /// The request's method.
        method: String,
        /// The request's path.
        path: String,
    },

    /// A byte range lies outside the attachment.
    #[error(
        "byte range {from}..{to} lies outside the attachment of {size} bytes; ask for a range \
         within 0..{size}"
    )]
    RangeOutside {
        /// First byte asked for.
        from: u64,
        /// One past the last byte asked for.
        to: u64,
        /// The attachment's size.
        size: u64,
    },

    /// Reading or writing bytes failed (a file, a store, a network stream). The
    /// [`IoError`] names the operation and keeps the underlying [`std::io::Error`] as its
    /// source.
    #[error(transparent)]
    Io(IoError),

    /// An upload's stored chunks do not (yet) cover its file: they hold `stored` bytes
    /// from the start, without a gap, of the `expected`. A commit is refused rather than
    /// leaving a hole. A receiver waits a little on this (an earlier chunk's write may
    /// still be under way); past that wait an earlier chunk's bytes were lost (its request
    /// was interrupted after it was accepted) and the upload starts again.
    #[error(
        "upload {upload_id} cannot be committed: its stored chunks cover {stored} bytes from \
         the start without a gap, but the file has {expected}; an earlier chunk was accepted \
         but its bytes were not stored (its request was interrupted): start the upload again"
    )]
    Incomplete {
        /// The upload.
        upload_id: String,
        /// Bytes stored contiguously from offset 0.
        stored: u64,
        /// The file's size.
        expected: u64,
    },

    /// A commit named an attachment id that is taken.
    #[error("the {what} id {id} is taken; commit under a new id")]
    Taken {
        /// What the id names (`attachment`).
        what: &'static str,
        /// The id.
        id: String,
    },

    /// Saved state read back from a store (a session record, a validator's position,
    /// attachment metadata) is damaged or could not have been saved by this crate. Not
    /// transient: the same record fails the same way each time.
    #[error("{what} is damaged and cannot be used: {problem}")]
    CorruptState {
        /// What was read (`the session record of upload ...`).
        what: String,
        /// What is wrong with it.
        problem: String,
    },

    /// A state that has to be saved between two requests cannot be: a stateless receiver
    /// needs validators that implement `Validator::save`.
    #[error("{what} cannot be saved: {reason}")]
    NotSaveable {
        /// What was being saved.
        what: String,
        /// Why not.
        reason: String,
    },

    /// A request field has a value the API does not take (other than the file's own
    /// fields, which have their own kinds).
    #[error("{field} {problem}")]
    InvalidField {
        /// The field or path parameter.
        field: String,
        /// What is wrong with it.
        problem: String,
    },

    /// The request carried no credentials or wrong ones.
    #[error("missing or wrong credentials: send Authorization: Bearer <token> and X-Affiliate-Id")]
    Unauthorized,

    /// The client sent more requests than its rate allows.
    #[error("too many requests: retry after {retry_after_secs} s")]
    RateLimited {
        /// Seconds until the next request is accepted (also in `Retry-After`).
        retry_after_secs: u64,
    },

    /// The other side of an API call answered with an error status.
    ///
    /// `status` is its HTTP status and `message` the error text from its envelope (or the
    /// start of its body). [`Error::is_transient`] says whether trying again may help.
    #[error("the server answered {status}: {message}")]
    Remote {
        /// The HTTP status the server answered.
        status: u16,
        /// Its error message.
        message: String,
        /// How long it asked to wait before trying again (`Retry-After`), if it did.
        retry_after: Option<std::time::Duration>,
    },

    /// A request was tried as many times as the retry policy allows and failed each time.
    #[error(
        "gave up on bytes {}..{} after {attempts} attempts; the last error was: {last}",
        .range.start, .range.end
    )]
    RetriesExhausted {
        /// The byte range being fetched.
        range: std::ops::Range<u64>,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: Box<Error>,
    },

    /// An error recorded earlier (in a saved upload session), as its status and message.
    #[error("{message}")]
    Recorded {
        /// The HTTP status it was answered with.
        status: u16,
        /// Its wire message.
        message: String,
    },

    /// Another request changed the same record at the same time (a conditional write in
    /// the store lost the race); send the request again.
    #[error(
        "the {what} {id} was changed by another request at the same time; send the request again"
    )]
    Contended {
        /// What was changed (`upload`).
        what: &'static str,
        /// Its id.
        id: String,
    },

    /// A saved download checkpoint cannot be used to resume.
    #[error("cannot resume the download: {reason}")]
    Resume {
        /// What does not fit.
        reason: String,
    },

    /// A checker (such as the `Inspector`) was used again after it had finished its file.
    #[error("already finished its file; start a new one for the next file")]
    AlreadyFinished,

    /// A stateful checker (such as the `Inspector`) was used again after it had failed.
    #[error("already failed earlier ({first}); start over with a new instance")]
    AlreadyFailed {
        /// The error that ended it.
        first: Box<Error>,
    },
}

/// An IO failure: what was being done, with the [`std::io::Error`] as its
/// [source](std::error::Error::source). See [`Error::Io`].
///
/// Cheap to clone (the source is shared). Two `IoError`s are equal when they name the same
/// operation, kind and message.
///
/// # Examples
///
/// ```
/// use std::error::Error as _;
/// use attachments::Error;
///
/// let err = Error::io("reading photo.jpg", std::io::Error::other("disk on fire"));
/// assert_eq!(err.to_string(), "reading photo.jpg failed: disk on fire");
/// assert_eq!(err.source().map(|s| s.to_string()).as_deref(), Some("disk on fire"));
/// assert!(err.is_transient());
/// ```
#[derive(Debug, Clone)]
pub struct IoError {
    op: String,
    source: std::sync::Arc<std::io::Error>,
}

impl IoError {
    /// An IO error `source` met while doing `op`.
    pub fn new(op: impl Into<String>, source: std::io::Error) -> Self {
        IoError {
            op: op.into(),
            source: std::sync::Arc::new(source),
        }
    }

    /// What was being done.
    pub fn op(&self) -> &str {
        &self.op
    }

    /// The kind of the underlying error.
    pub fn kind(&self) -> std::io::ErrorKind {
        self.source.kind()
    }

    /// The underlying error.
    pub fn io_error(&self) -> &std::io::Error {
        &self.source
    }
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.op, self.source)
    }
}

impl std::error::Error for IoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

impl PartialEq for IoError {
    fn eq(&self, other: &Self) -> bool {
        self.op == other.op
            && self.source.kind() == other.source.kind()
            && self.source.to_string() == other.source.to_string()
    }
}

impl Eq for IoError {}

/// Why a chunk was rejected; see [`Error::Chunk`].
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

/// Which size limit a [`Error::TooLarge`] refers to.
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

/// Which image limit an [`Error::ImageLimit`] refers to; see [`crate::Limits`].
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

fn image_limit(what: ImageLimit, value: u64, limit: u64) -> String {
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

/// Why a download's range was refused; see [`Error::Range`].
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

/// Why a downloaded piece was refused; see [`Error::Piece`].
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

/// What is wrong in a base64 text; see [`Error::Base64`].
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

/// Why a file name was rejected; see [`Error::InvalidFileName`].
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

fn too_large(size: u64, limit: u64, kind: SizeLimit) -> String {
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

impl Error {
    /// The HTTP status an API server answers this error with.
    ///
    /// 400 for malformed or oversized requests (as seed 000 documents for the size errors),
    /// 415 for a type the policy does not accept or content of no recognisable type.
    pub fn status(&self) -> u16 {
        match self {
            Error::UnsupportedType { .. }
            | Error::UnrecognizedContent { .. }
            | Error::ActiveContent { .. } => 415,
            Error::UploadNotFound { .. } | Error::UploadExpired { .. } | Error::NotFound { .. } => {
                404
            }
            Error::UploadBusy { .. }
            | Error::UploadCommitting { .. }
            | Error::UploadFinished { .. }
            | Error::Contended { .. }
            | Error::Incomplete { .. }
            | Error::Taken { .. } => 409,
            Error::CorruptState { .. } | Error::NotSaveable { .. } => 500,
            Error::Recorded { status, .. } => *status,
            Error::Unauthorized => 401,
            Error::MethodNotAllowed { .. } => 405,
            Error::RateLimited { .. } => 429,
            Error::RangeOutside { .. } => 416,
            // The other side sent wrong bytes: a gateway's view of an upstream fault.
            Error::Piece(_) | Error::Remote { .. } => 502,
            Error::RetriesExhausted { last, .. } => last.status(),
            Error::Resume { .. } => 500,
            Error::Io(_) => 500,
            Error::AlreadyFailed { first } | Error::UploadFailed { first, .. } => first.status(),
            // Reusing a finished checker is the caller's own mistake, not the client's.
            Error::AlreadyFinished => 500,
            _ => 400,
        }
    }

    /// The message an API server puts on the wire for this error.
    ///
    /// For the two errors seed 000 documents, this is their exact text:
    /// `File size exceeds the 1MB limit` and
    /// `Request failed with code: 400, message: Content length is 35 but metadata size is 350`.
    /// Every other kind uses its `Display` text, which holds only facts the client sent.
    pub fn wire_message(&self) -> Cow<'_, str> {
        match self {
            Error::TooLarge { limit, kind, .. } => {
                let what = match kind {
                    SizeLimit::Chunk => "Chunk",
                    SizeLimit::Body => "Request body",
                    _ => "File",
                };
                Cow::Owned(format!(
                    "{what} size exceeds the {} limit",
                    human_size(*limit)
                ))
            }
            Error::SizeMismatch { .. } => Cow::Owned(format!(
                "Request failed with code: {}, message: {self}",
                self.status()
            )),
            Error::AlreadyFailed { first } => first.wire_message(),
            Error::UploadFailed { upload_id, first } => Cow::Owned(format!(
                "upload {upload_id} failed earlier ({}); start again with action start and chunk 0",
                first.wire_message()
            )),
            // The IO error's text may name paths and hosts: keep it in the logs.
            Error::Io(_) => Cow::Borrowed("internal storage error; try again later"),
            // The details name records and stores: keep them in the logs.
            Error::CorruptState { .. } => Cow::Borrowed(
                "internal error: stored state is damaged; start the upload or request again",
            ),
            Error::NotSaveable { .. } => {
                Cow::Borrowed("internal error: the upload's state cannot be saved")
            }
            other => Cow::Owned(other.to_string()),
        }
    }
}

impl Error {
    /// Whether trying the same request again later may succeed: an IO failure (a dropped
    /// connection, a timeout), or a server's 408, 429 or 5xx. Everything else is about the
    /// request or the content and fails the same way each time.
    ///
    /// # Examples
    ///
    /// ```
    /// use attachments::Error;
    ///
    /// let busy = Error::Remote { status: 429, message: "slow down".into(), retry_after: None };
    /// assert!(busy.is_transient());
    /// let gone = Error::Remote { status: 404, message: "no such attachment".into(), retry_after: None };
    /// assert!(!gone.is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Io(_) => true,
            Error::Remote { status, .. } => matches!(status, 408 | 429 | 500..=599),
            _ => false,
        }
    }

    /// An [`Error::Io`] for `err` while doing `op`; `err` stays its source.
    pub fn io(op: impl Into<String>, err: std::io::Error) -> Self {
        Error::Io(IoError::new(op, err))
    }

    /// An [`Error::Io`] for an error of another type (a task, a library) while doing `op`,
    /// kept as the source of an [`std::io::Error`] of `kind`.
    pub fn io_other(
        op: impl Into<String>,
        kind: std::io::ErrorKind,
        err: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Io(IoError::new(op, std::io::Error::new(kind, err)))
    }

    /// An [`Error::CorruptState`]: `what` was read back and `problem` makes it unusable.
    pub fn corrupt(what: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::CorruptState {
            what: what.into(),
            problem: problem.into(),
        }
    }
}

/// An IO error from reading a file or a stream (as `tokio_util::io::ReaderStream` yields):
/// [`Error::Io`] with the operation "reading the file".
impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::io("reading the file", err)
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::InvalidJson {
            message: err.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes_follow_the_documents() {
        assert_eq!(human_size(1_048_576), "1MB");
        assert_eq!(human_size(10_485_760), "10MB");
        assert_eq!(human_size(2048), "2KB");
        assert_eq!(human_size(1_000_000), "1000000 bytes");
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("abcd", 3), "abc... (4 bytes)");
        // Never inside a character: "é" is two bytes.
        assert_eq!(shorten("aéb", 2), "a... (4 bytes)");
        let err = Error::InvalidType {
            declared: "x".repeat(70_000),
        };
        assert!(err.to_string().len() < 300, "{err}");
        let err = Error::NotFound {
            what: "attachment",
            id: "7".repeat(70_000),
        };
        assert!(err.to_string().contains("(70000 bytes)"), "{err}");
    }
}
