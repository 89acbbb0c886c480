//! The crate's one error type, in layers.
//!
//! [`Error`] is one `#[non_exhaustive]` enum whose kinds fall in two layers:
//!
//! - **The core's kinds**, raised by the IO-free modules (sniffing, validation, base64,
//!   the upload session, ranges, the reassembler, the wire types): what is wrong with the
//!   file, the request, an upload session, a download, or saved state. Where a kind has
//!   details of its own they are a nested enum ([`ChunkProblem`], [`RangeProblem`],
//!   [`PieceProblem`], [`Base64Problem`], [`FileNameProblem`]).
//! - **The shells' kinds**, raised only by the async shells (stores, the receiver, the
//!   clients, the server): [`Error::Io`], whose [`IoError`] names the operation and keeps
//!   the [`std::io::Error`] as its source; [`Error::Remote`], the other side's error
//!   answer; [`Error::UnexpectedAnswer`], an answer that does not fit the request;
//!   [`Error::RetriesExhausted`]. The store contract's own kinds
//!   ([`Error::Incomplete`], [`Error::Taken`], [`Error::Contended`],
//!   [`Error::CorruptState`]) are states, not IO: a backend reports them exactly, and
//!   callers act on them (a receiver waits only on `Incomplete`).
//!
//! Whatever its layer, every kind has one wire mapping: [`Error::status`] (the HTTP status
//! a server answers with) and [`Error::wire_message`] (the text it puts in the flavour's
//! envelope, the documented texts where the APIs fix them; IO details stay in the logs).
//! `Display` is for the developer reading a log: it names the numbers involved and says
//! what to do. [`Error::is_transient`] says whether the same request may succeed later.

mod io;
mod problems;

use std::borrow::Cow;

pub use io::IoError;
pub use problems::{
    Base64Problem, ChunkProblem, FileNameProblem, ImageLimit, PieceProblem, RangeProblem,
    ResumableProblem, SizeLimit,
};
pub(crate) use problems::{human_size, shorten};
use problems::{image_limit, too_large};

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
    // ---- The file: its size, type, name and content ----
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
    /// The text is the one the Demand API documents, decoded length first, declared size
    /// second (`docs/protocol.md`, *Error texts and statuses*).
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

    // ---- The request: its body, fields, path, credentials and rate ----
    /// A JSON body could not be parsed into the expected request or response.
    #[error("invalid JSON body: {message}")]
    InvalidJson {
        /// serde_json's description, naming the missing or malformed field and its position.
        message: String,
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

    /// A chunk of a chunked upload does not fit the upload it claims to belong to.
    #[error("chunk rejected: {0}")]
    Chunk(ChunkProblem),

    /// A request of a resumable upload (tus 1.0 or the IETF draft) does not fit the upload;
    /// see [`ResumableProblem`] (its status is the problem's).
    #[error("{0}")]
    Resumable(ResumableProblem),

    /// A download's `from` / `to` cannot be served; see [`RangeProblem`].
    #[error("download range rejected: {0}")]
    Range(RangeProblem),

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

    /// The request carried no credentials or wrong ones.
    #[error("missing or wrong credentials: send Authorization: Bearer <token> and X-Affiliate-Id")]
    Unauthorized,

    /// The client sent more requests than its rate allows.
    #[error("too many requests: retry after {retry_after_secs} s")]
    RateLimited {
        /// Seconds until the next request is accepted (also in `Retry-After`).
        retry_after_secs: u64,
    },

    // ---- Upload sessions ----
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

    /// An error recorded earlier (in a saved upload session), as its status and message.
    #[error("{message}")]
    Recorded {
        /// The HTTP status it was answered with.
        status: u16,
        /// Its wire message.
        message: String,
    },

    // ---- Downloads ----
    /// A downloaded piece does not fit the attachment being put back together; see
    /// [`PieceProblem`]. The server sent wrong bytes: re-request, or report it.
    #[error("download piece rejected: {0}")]
    Piece(PieceProblem),

    /// A saved download checkpoint cannot be used to resume.
    #[error("cannot resume the download: {reason}")]
    Resume {
        /// What does not fit.
        reason: String,
    },

    // ---- A checker used again ----
    /// A checker (such as the `Inspector`) was used again after it had finished its file.
    #[error("already finished its file; start a new one for the next file")]
    AlreadyFinished,

    /// A stateful checker (such as the `Inspector`) was used again after it had failed.
    #[error("already failed earlier ({first}); start over with a new instance")]
    AlreadyFailed {
        /// The error that ended it.
        first: Box<Error>,
    },

    // ---- Stored state: the store contract's kinds ----
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

    // ---- The shells: IO, the other side's answers, retries (never raised by the IO-free core) ----
    /// Reading or writing bytes failed (a file, a store, a network stream). The
    /// [`IoError`] names the operation and keeps the underlying [`std::io::Error`] as its
    /// source.
    #[error(transparent)]
    Io(IoError),

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

    /// The server handles as many requests as it may at once; this one was not queued.
    /// 503, with `Retry-After: 1`.
    #[error("the server is busy with {in_flight} requests; send this one again in 1 s")]
    Overloaded {
        /// The requests it handles at once.
        in_flight: usize,
    },

    /// The request names a host (`Host`, HTTP/2 `:authority`) the server does not link to:
    /// not in its allowed hosts, and no public URL is configured. 421.
    #[error(
        "this server does not answer for host {host:?}: send one of its hosts ({allowed}), or configure its public URL"
    )]
    MisdirectedRequest {
        /// The host the request named (shortened), empty if none.
        host: String,
        /// The hosts it answers for.
        allowed: String,
    },

    /// A conditional request's `If-Match` names no current version of the resource. 412.
    #[error(
        "If-Match names no current version of this attachment (its ETag is {etag}): fetch it again"
    )]
    PreconditionFailed {
        /// The resource's current entity tag.
        etag: String,
    },

    /// The virus scanner found a signature in the file. 422; the file is not stored. The
    /// client is told only "The file failed the virus scan" ([`Error::wire_message`]);
    /// the signature's name is for the server's log.
    #[error("the file failed the virus scan (signature {signature})")]
    Infected {
        /// The signature's name, as the scanner gave it.
        signature: String,
    },

    /// The virus scanner could not be reached or did not answer in time. 503, with
    /// `Retry-After: 30`: nothing was committed, and the same request can be sent again.
    #[error("the virus scanner is unavailable ({problem}); send this again in 30 s")]
    ScanUnavailable {
        /// What failed (names the scanner's address: kept in the logs).
        problem: String,
    },

    /// The file is larger than the virus scanner takes (clamd's `StreamMaxLength`), so it
    /// cannot be scanned and is not stored. 400.
    #[error(
        "the file is {size} bytes, more than the virus scanner takes ({limit} bytes); send a file of at most {limit} bytes"
    )]
    ScanTooLarge {
        /// The file's size (or the bytes sent when the scanner refused more).
        size: u64,
        /// The scanner's cap.
        limit: u64,
    },

    /// A request with an `Idempotency-Key` whose first request (the same method, path and
    /// body) is still running. 409, with `Retry-After: 1`: its answer will be replayed.
    #[error(
        "the first request with this Idempotency-Key is still being processed; send it again in {retry_after_secs} s to get its answer"
    )]
    KeyInFlight {
        /// Seconds to wait (also in `Retry-After`).
        retry_after_secs: u64,
    },

    /// An `Idempotency-Key` already used for another request (another method, path or
    /// body). 422; nothing was done.
    #[error(
        "this Idempotency-Key was already used for a different request (another method, path or body): use a new key for each operation, and the same key only to repeat it unchanged"
    )]
    KeyReused,

    /// The store keeps as many idempotency keys (or bytes of their answers) as it may,
    /// none of them expired. 503, with `Retry-After: 60`; nothing was done.
    #[error(
        "the server keeps {limit} {what} of idempotency keys, its most, none expired yet; send this again in 60 s"
    )]
    KeysFull {
        /// What is counted: `records` or `bytes`.
        what: &'static str,
        /// The store's cap.
        limit: u64,
    },

    /// A request body read whole (everything but a multipart upload's) did not arrive
    /// within the server's body timeout. 408; the connection is closed.
    #[error(
        "the request body did not arrive within {secs} s: send a body of up to {limit} bytes whole within that time"
    )]
    RequestTimeout {
        /// The body timeout, in seconds.
        secs: u64,
        /// The request's body limit, in bytes.
        limit: u64,
    },

    /// A client or a conversation already holds as many open uploads, or as many bytes
    /// staged in them, as the server allows (its upload quota). 429, with `Retry-After`.
    #[error(
        "{who} already holds {used} {what} of the {limit} allowed: finish or abandon one of its uploads (idle ones expire), then send this again"
    )]
    QuotaExceeded {
        /// Whose quota: `this client` or `this conversation`.
        who: &'static str,
        /// What is counted: `open uploads` or `bytes staged in open uploads`.
        what: &'static str,
        /// What it holds.
        used: u64,
        /// Its quota.
        limit: u64,
        /// Seconds to wait before trying again (also in `Retry-After`).
        retry_after_secs: u64,
    },

    /// The server is buffering as many bytes of request bodies as its budget allows; this
    /// request's body was not read. 503, with `Retry-After: 1`.
    #[error(
        "the server is buffering {whose} {budget}-byte budget of request bodies and has no room for {wanted} more; send this one again in 1 s"
    )]
    BufferFull {
        /// Whose budget: `its` (the server's) or `this client's`.
        whose: &'static str,
        /// The bytes this body would take.
        wanted: u64,
        /// The budget.
        budget: u64,
    },

    /// A request body stopped arriving: no byte came for `idle_secs` seconds (the
    /// server's body idle timeout). 408; the connection is closed.
    #[error(
        "the request body stopped arriving: no byte for {idle_secs} s; send the body without pausing"
    )]
    BodyTimeout {
        /// The idle timeout, in seconds.
        idle_secs: u64,
    },

    /// The other side answered, but not with what the request asked for: a header the
    /// answer needs is missing or unreadable (`Content-Range`, `Content-Length`), another
    /// range than the one asked for, more bytes than announced, an attachment id before
    /// the whole file was sent. The other side is at fault, as a gateway sees it (502).
    #[error("the server's answer does not fit the request: {problem}")]
    UnexpectedAnswer {
        /// What does not fit.
        problem: String,
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
}

/// What a client is told about a file the virus scanner refused
/// ([`Error::Infected`]'s wire message).
pub const INFECTED_TEXT: &str = "The file failed the virus scan";

impl Error {
    /// The HTTP status an API server answers this error with.
    ///
    /// 400 for malformed or oversized requests (as the Demand API documents for the size
    /// errors; `docs/protocol.md`, *Error texts and statuses*),
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
            | Error::Taken { .. }
            | Error::KeyInFlight { .. } => 409,
            Error::KeyReused | Error::Infected { .. } => 422,
            Error::CorruptState { .. } | Error::NotSaveable { .. } => 500,
            Error::Recorded { status, .. } => *status,
            Error::Unauthorized => 401,
            Error::MethodNotAllowed { .. } => 405,
            Error::RateLimited { .. } | Error::QuotaExceeded { .. } => 429,
            Error::RangeOutside { .. } => 416,
            // The other side sent wrong bytes: a gateway's view of an upstream fault.
            Error::Piece(_) | Error::Remote { .. } | Error::UnexpectedAnswer { .. } => 502,
            Error::BodyTimeout { .. } | Error::RequestTimeout { .. } => 408,
            Error::MisdirectedRequest { .. } => 421,
            Error::PreconditionFailed { .. } => 412,
            Error::Overloaded { .. }
            | Error::BufferFull { .. }
            | Error::KeysFull { .. }
            | Error::ScanUnavailable { .. } => 503,
            Error::RetriesExhausted { last, .. } => last.status(),
            Error::Resumable(problem) => problem.status(),
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
    /// For the two errors the Demand API's documentation spells out, this is their exact text
    /// (`docs/protocol.md`, *Error texts and statuses*):
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
            // One documented text; the signature's name goes to the log only.
            Error::Infected { .. } => Cow::Borrowed(INFECTED_TEXT),
            // The scanner's address stays in the logs.
            Error::ScanUnavailable { .. } => Cow::Borrowed(
                "the virus scanner is unavailable; nothing was stored: send this again in 30 s",
            ),
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
    /// connection, a timeout), a server's 408, 429 or 5xx, or a 409 that says when to
    /// send it again (`Retry-After`: a `finish` an earlier request is still committing, a
    /// chunk that came while too many waited). Everything else is about the request or
    /// the content and fails the same way each time.
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
    /// let committing = Error::Remote {
    ///     status: 409,
    ///     message: "being committed".into(),
    ///     retry_after: Some(std::time::Duration::from_secs(3)),
    /// };
    /// assert!(committing.is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Io(_) => true,
            Error::Remote {
                status,
                retry_after,
                ..
            } => {
                matches!(status, 408 | 429 | 500..=599) || (*status == 409 && retry_after.is_some())
            }
            _ => false,
        }
    }

    /// How long the client should wait before sending the request again, when the error
    /// says (`Retry-After` on the wire): a rate limit, a `finish` being committed by an
    /// earlier request, a chunk that arrived while too many others waited (1 s), or a
    /// remote server's own `Retry-After`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use attachments::Error;
    ///
    /// let busy = Error::UploadCommitting { upload_id: "u".into(), retry_after_secs: 30 };
    /// assert_eq!(busy.retry_after(), Some(Duration::from_secs(30)));
    /// assert_eq!(Error::Unauthorized.retry_after(), None);
    /// ```
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::RateLimited { retry_after_secs }
            | Error::QuotaExceeded {
                retry_after_secs, ..
            }
            | Error::UploadCommitting {
                retry_after_secs, ..
            }
            | Error::KeyInFlight { retry_after_secs } => {
                Some(std::time::Duration::from_secs(*retry_after_secs))
            }
            Error::KeysFull { .. } => Some(std::time::Duration::from_secs(60)),
            Error::ScanUnavailable { .. } => Some(std::time::Duration::from_secs(30)),
            Error::UploadBusy { .. }
            | Error::Overloaded { .. }
            | Error::BufferFull { .. }
            | Error::Resumable(ResumableProblem::Locked { .. }) => {
                Some(std::time::Duration::from_secs(1))
            }
            Error::Remote { retry_after, .. } => *retry_after,
            _ => None,
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
