//! HTTP `Range: bytes=...` requests (RFC 9110, section 14), IO-free: what the chat
//! flavour's `/content` endpoint serves for a `Range` header and a representation size.
//!
//! One range is served (206 with `Content-Range`); a request for several ranges is served
//! whole (200), which RFC 9110 allows ("a server MAY ignore the Range header field"), as is
//! anything that is not a well-formed `bytes` range set. A well-formed single range that
//! selects nothing of the file is unsatisfiable (416 with `Content-Range: bytes */size`).

use std::ops::Range;

/// The longest `Range` header value read; a longer one is ignored (served whole), so a
/// request cannot make the parser walk an arbitrarily long header.
pub const MAX_RANGE_HEADER: usize = 1024;

/// What to serve for a `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// The whole file, 200: no header, one that is ignored, or several ranges.
    Whole,
    /// These bytes (half-open, never empty, within the file), 206.
    Partial(Range<u64>),
    /// 416: a single range that selects no byte of the file.
    Unsatisfiable,
}

impl RangeRequest {
    /// Reads a `Range` header value (`None`: no header) against a file of `size` bytes.
    ///
    /// - `bytes=a-b` is bytes `a..=b`, `b` clamped to the last byte; `a` at or past the end
    ///   is unsatisfiable.
    /// - `bytes=a-` is from `a` to the end.
    /// - `bytes=-n` is the last `n` bytes (the whole file when it is shorter);
    ///   `bytes=-0` is unsatisfiable.
    /// - The unit is case-insensitive and spaces around ranges are allowed; anything else
    ///   malformed (`b < a`, signs, a missing `=`), another unit, or several ranges is
    ///   served whole.
    ///
    /// # Examples
    ///
    /// ```
    /// use attachments::download::http_range::RangeRequest;
    ///
    /// assert_eq!(RangeRequest::parse(Some(b"bytes=0-99"), 1000), RangeRequest::Partial(0..100));
    /// assert_eq!(RangeRequest::parse(Some(b"bytes=900-"), 1000), RangeRequest::Partial(900..1000));
    /// assert_eq!(RangeRequest::parse(Some(b"bytes=-100"), 1000), RangeRequest::Partial(900..1000));
    /// assert_eq!(RangeRequest::parse(Some(b"bytes=990-5000"), 1000), RangeRequest::Partial(990..1000));
    /// assert_eq!(RangeRequest::parse(Some(b"bytes=1000-"), 1000), RangeRequest::Unsatisfiable);
    /// assert_eq!(RangeRequest::parse(Some(b"bytes=5-1"), 1000), RangeRequest::Whole);
    /// assert_eq!(RangeRequest::parse(Some(b"bytes=0-1,5-6"), 1000), RangeRequest::Whole);
    /// assert_eq!(RangeRequest::parse(None, 1000), RangeRequest::Whole);
    /// ```
    pub fn parse(header: Option<&[u8]>, size: u64) -> Self {
        let Some(value) = header else {
            return RangeRequest::Whole;
        };
        if value.len() > MAX_RANGE_HEADER {
            return RangeRequest::Whole;
        }
        let Some(spec) = parse_single(value) else {
            return RangeRequest::Whole;
        };
        match spec {
            Spec::From { first, last } => {
                if first >= size {
                    return RangeRequest::Unsatisfiable;
                }
                let end = last.map_or(size, |l| l.saturating_add(1).min(size));
                RangeRequest::Partial(first..end)
            }
            Spec::Suffix(0) => RangeRequest::Unsatisfiable,
            // The last bytes of an empty file: nothing to select, so serve it whole.
            Spec::Suffix(_) if size == 0 => RangeRequest::Whole,
            Spec::Suffix(n) => RangeRequest::Partial(size.saturating_sub(n)..size),
        }
    }
}

/// The `Content-Range` value of a 206 answer: `bytes first-last/size`.
///
/// # Examples
///
/// ```
/// use attachments::download::http_range::{content_range, unsatisfied_range};
///
/// assert_eq!(content_range(&(900..1000), 1000), "bytes 900-999/1000");
/// assert_eq!(unsatisfied_range(1000), "bytes */1000");
/// ```
pub fn content_range(range: &Range<u64>, size: u64) -> String {
    format!(
        "bytes {}-{}/{size}",
        range.start,
        range.end.saturating_sub(1)
    )
}

/// Reads the `Content-Range` value of a 206 answer, as [`content_range`] writes it:
/// `bytes first-last/size` gives `(first..last + 1, size)`; `None` for anything else
/// (another unit, `*`, `last` before `first` or at or past `size`, numbers over 64 bits).
///
/// # Examples
///
/// ```
/// use attachments::download::http_range::parse_content_range;
///
/// assert_eq!(parse_content_range("bytes 900-999/1000"), Some((900..1000, 1000)));
/// assert_eq!(parse_content_range("bytes */1000"), None);
/// ```
pub fn parse_content_range(value: &str) -> Option<(Range<u64>, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, size) = rest.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let digits = |s: &str| number(s.as_bytes()).filter(|&n| n < u64::MAX);
    let (first, last, size) = (digits(first)?, digits(last)?, digits(size)?);
    (first <= last && last < size).then(|| (first..last + 1, size))
}

/// The `Content-Range` value of a 416 answer: `bytes */size`.
pub fn unsatisfied_range(size: u64) -> String {
    format!("bytes */{size}")
}

enum Spec {
    /// `first-` or `first-last` (inclusive).
    From { first: u64, last: Option<u64> },
    /// `-n`.
    Suffix(u64),
}

/// One well-formed `bytes` range-spec, or `None` (malformed, another unit, several).
fn parse_single(value: &[u8]) -> Option<Spec> {
    let eq = value.iter().position(|&b| b == b'=')?;
    let (unit, rest) = (trim(&value[..eq]), &value[eq + 1..]);
    if !unit.eq_ignore_ascii_case(b"bytes") {
        return None;
    }
    // A range set may have empty elements ("bytes=0-1,"): RFC 9110's list rule allows
    // them; more than one real range is served whole.
    let mut specs = rest
        .split(|&b| b == b',')
        .map(trim)
        .filter(|s| !s.is_empty());
    let spec = specs.next()?;
    if specs.next().is_some() {
        return None;
    }
    let dash = spec.iter().position(|&b| b == b'-')?;
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    if first.is_empty() {
        return Some(Spec::Suffix(number(last)?));
    }
    let first = number(first)?;
    let last = if last.is_empty() {
        None
    } else {
        Some(number(last)?)
    };
    if last.is_some_and(|l| l < first) {
        return None;
    }
    Some(Spec::From { first, last })
}

/// ASCII digits as a number; one too large for 64 bits saturates (it is past any file).
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &s[start..end]
}
