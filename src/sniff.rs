//! MIME types and content sniffing.
//!
//! [`MediaType`] is a normalised MIME essence (`type/subtype`, lowercase, no parameters).
//! [`Sniffer`] recognises a file's type from its first [`SNIFF_LEN`] bytes with the `infer`
//! crate, whatever the slice boundaries it is fed: it always decides on the same prefix, so
//! the verdict cannot depend on how the input was split.

use std::borrow::Cow;
use std::fmt;

use crate::error::{Error, Result};

/// The types [`MediaType::is_active_content`] names.
const ACTIVE_CONTENT: [&str; 5] = [
    "text/html",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/xml",
    "application/xml",
];

/// How many leading bytes the sniffer examines.
///
/// Images are recognised from their first few bytes; the wider window lets container
/// formats (ZIP-based documents, for instance) be told apart. The window is copied at most
/// once, and not at all when the first slice already covers it.
pub const SNIFF_LEN: usize = 8192;

/// The longest declared type accepted, parameters included: 255 bytes (RFC 6838 allows
/// 127 characters for each of type and subtype). A declaration is saved with an upload, so
/// it is bounded like every other name a request carries.
pub const MAX_TYPE_LEN: usize = 255;

/// A normalised MIME type essence such as `image/png`.
///
/// # Examples
///
/// ```
/// use attachments::MediaType;
///
/// let t = MediaType::parse(" Image/PNG; charset=binary ").unwrap();
/// assert_eq!(t, MediaType::PNG);
/// assert_eq!(t.as_str(), "image/png");
/// assert!(MediaType::parse("png").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MediaType(Cow<'static, str>);

impl MediaType {
    /// `image/png`.
    pub const PNG: MediaType = MediaType(Cow::Borrowed("image/png"));
    /// `image/jpeg`.
    pub const JPEG: MediaType = MediaType(Cow::Borrowed("image/jpeg"));
    /// `application/octet-stream`: "no particular type".
    pub const OCTET_STREAM: MediaType = MediaType(Cow::Borrowed("application/octet-stream"));
    /// `image/svg+xml`.
    pub const SVG: MediaType = MediaType(Cow::Borrowed("image/svg+xml"));

    /// Whether content of this type can carry active content a browser runs when it opens
    /// the file (scripts in HTML, SVG and XML documents): `text/html`,
    /// `application/xhtml+xml`, `image/svg+xml`, `text/xml`, `application/xml`. Policies
    /// refuse these unless [`Policy::with_active_content`](crate::Policy::with_active_content)
    /// allows them.
    ///
    /// # Examples
    ///
    /// ```
    /// use attachments::MediaType;
    ///
    /// assert!(MediaType::SVG.is_active_content());
    /// assert!(!MediaType::parse("application/pdf")?.is_active_content());
    /// # Ok::<(), attachments::Error>(())
    /// ```
    pub fn is_active_content(&self) -> bool {
        ACTIVE_CONTENT.contains(&self.as_str())
    }

    /// Parses a declared type: trims spaces, drops parameters after `;`, lowercases, and
    /// checks the `type/subtype` form (RFC 9110 token characters on both sides).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidType`] when the text is not of that form, or longer than
    /// [`MAX_TYPE_LEN`] bytes.
    pub fn parse(declared: &str) -> Result<MediaType> {
        let invalid = || Error::InvalidType {
            declared: declared.to_owned(),
        };
        if declared.len() > MAX_TYPE_LEN {
            return Err(invalid());
        }
        let essence = declared.split(';').next().unwrap_or("").trim();
        let (ty, sub) = essence.split_once('/').ok_or_else(invalid)?;
        let token = |s: &str| !s.is_empty() && s.bytes().all(is_token_byte);
        if !token(ty) || !token(sub) {
            return Err(invalid());
        }
        Ok(match essence.to_ascii_lowercase().as_str() {
            "image/png" => MediaType::PNG,
            "image/jpeg" => MediaType::JPEG,
            other => MediaType(Cow::Owned(other.to_owned())),
        })
    }

    /// The type as text, e.g. `image/png`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn from_static(s: &'static str) -> MediaType {
        MediaType(Cow::Borrowed(s))
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for MediaType {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Recognises a type from a prefix of the content, in one shot.
///
/// Looks at no more than [`SNIFF_LEN`] bytes. Returns `None` when nothing matches (plain
/// text, unknown binary formats, or too few bytes).
///
/// # Examples
///
/// ```
/// use attachments::{sniff, MediaType};
///
/// assert_eq!(sniff::detect(b"\x89PNG\r\n\x1a\n...."), Some(MediaType::PNG));
/// assert_eq!(sniff::detect(b"\xff\xd8\xff\xe0"), Some(MediaType::JPEG));
/// assert_eq!(sniff::detect(b"hello"), None);
/// ```
pub fn detect(prefix: &[u8]) -> Option<MediaType> {
    let prefix = &prefix[..prefix.len().min(SNIFF_LEN)];
    let found = infer::get(prefix).map(|t| match t.mime_type() {
        "image/png" => MediaType::PNG,
        "image/jpeg" => MediaType::JPEG,
        other => MediaType::from_static(other),
    });
    // `infer` has no SVG matcher: an SVG with an XML prolog comes out as `text/xml`, one
    // without as nothing. Hand-written because no crate we use recognises it: the root
    // element is looked for in the window.
    match found.as_ref().map(MediaType::as_str) {
        None | Some("text/xml") if is_svg(prefix) => Some(MediaType::SVG),
        _ => found,
    }
}

/// Whether `prefix` starts an SVG document: after a UTF-8 byte-order mark and white
/// space, either an `<svg` start tag, or an XML prolog / comment / doctype followed
/// somewhere in the window by an `<svg` start tag (ASCII case ignored).
fn is_svg(prefix: &[u8]) -> bool {
    let text = prefix.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(prefix);
    let text = &text[text.iter().take_while(|b| b.is_ascii_whitespace()).count()..];
    let svg_tag = |at: &[u8]| {
        at.len() > 4
            && at[..4].eq_ignore_ascii_case(b"<svg")
            && (at[4].is_ascii_whitespace() || at[4] == b'>' || at[4] == b'/')
    };
    if svg_tag(text) {
        return true;
    }
    if !text.starts_with(b"<?") && !text.starts_with(b"<!") {
        return false;
    }
    (0..text.len()).any(|i| text[i] == b'<' && svg_tag(&text[i..]))
}

/// Incremental sniffer: fed slices, it decides once it holds [`SNIFF_LEN`] bytes, or at
/// [`Sniffer::finish`] for shorter files.
///
/// # Examples
///
/// ```
/// use attachments::{sniff::Sniffer, MediaType};
///
/// let mut s = Sniffer::new();
/// for byte in b"\x89PNG\r\n\x1a\n" {
///     s.update(std::slice::from_ref(byte));
/// }
/// assert_eq!(s.finish(), Some(&MediaType::PNG));
/// ```
#[derive(Debug, Default, Clone)]
pub struct Sniffer {
    /// Leading bytes held until the window is full. Never longer than [`SNIFF_LEN`].
    window: Vec<u8>,
    /// `Some(verdict)` once decided.
    verdict: Option<Option<MediaType>>,
}

impl Sniffer {
    /// A sniffer that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next slice. Returns `true` when this call made the decision (the window
    /// just filled); the verdict is then available from [`Sniffer::verdict`].
    pub fn update(&mut self, data: &[u8]) -> bool {
        if self.verdict.is_some() || data.is_empty() {
            return false;
        }
        if self.window.is_empty() && data.len() >= SNIFF_LEN {
            // The first slice covers the window: decide on it directly, no copy.
            self.verdict = Some(detect(&data[..SNIFF_LEN]));
            return true;
        }
        let take = (SNIFF_LEN - self.window.len()).min(data.len());
        if self.window.capacity() == 0 {
            self.window.reserve_exact(SNIFF_LEN);
        }
        self.window.extend_from_slice(&data[..take]);
        if self.window.len() == SNIFF_LEN {
            self.decide();
            return true;
        }
        false
    }

    /// The verdict, once decided: `Some(None)` means "decided: unknown type".
    pub fn verdict(&self) -> Option<Option<&MediaType>> {
        self.verdict.as_ref().map(Option::as_ref)
    }

    /// Ends the input and returns the detected type, if any. Deciding on a short file uses
    /// all of it.
    pub fn finish(&mut self) -> Option<&MediaType> {
        if self.verdict.is_none() {
            self.decide();
        }
        self.verdict.as_ref().and_then(Option::as_ref)
    }

    /// Bytes held in the window while undecided (at most [`SNIFF_LEN`]).
    pub fn buffered(&self) -> usize {
        self.window.len()
    }

    /// Takes the bytes held in the window, leaving it empty. A caller that defers other
    /// work until the type is known replays them from here.
    pub fn take_window(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.window)
    }

    fn decide(&mut self) {
        self.verdict = Some(detect(&self.window));
    }

    /// The window and the verdict, to save.
    pub(crate) fn parts(&self) -> (&[u8], Option<Option<&MediaType>>) {
        (&self.window, self.verdict())
    }

    /// A sniffer from saved parts; `None` for parts no sniffer holds: an undecided window
    /// of [`SNIFF_LEN`] bytes or more (it decides when the window fills), or a window
    /// still held after deciding (it is taken then).
    pub(crate) fn from_parts(window: Vec<u8>, verdict: Option<Option<MediaType>>) -> Option<Self> {
        let possible = match verdict {
            None => window.len() < SNIFF_LEN,
            Some(_) => window.is_empty(),
        };
        possible.then_some(Sniffer { window, verdict })
    }
}
