//! The header fields of the resumable-upload protocols, parsed under caps: tus 1.0
//! (`Upload-Metadata`, `Upload-Checksum`, `Upload-Offset`, `Upload-Length`,
//! `Tus-Resumable`) and the IETF draft's structured fields (`Upload-Complete`,
//! `Upload-Offset`, `Upload-Length`, `Upload-Draft-Interop-Version`; `Upload-Limit`
//! written). No IO: the server's shells call these on the header values they received.

use crate::error::{Error, Result, ResumableProblem, shorten};

/// The tus protocol version spoken: `1.0.0`.
pub const TUS_VERSION: &str = "1.0.0";

/// The tus extensions served, as `Tus-Extension` lists them.
pub const TUS_EXTENSIONS: &str =
    "creation,creation-with-upload,creation-defer-length,termination,checksum,expiration";

/// The checksum algorithms served, as `Tus-Checksum-Algorithm` lists them.
pub const TUS_CHECKSUM_ALGORITHMS: &str = "sha1,sha256";

/// The IETF draft implemented: `draft-ietf-httpbis-resumable-upload-10`, whose
/// `Upload-Draft-Interop-Version` is 8.
pub const IETF_INTEROP_VERSION: i64 = 8;

/// The media type of an IETF append's body.
pub const PARTIAL_UPLOAD: &str = "application/partial-upload";

/// The media type of a tus append's body.
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// The most key-value pairs an `Upload-Metadata` may hold: 32.
pub const MAX_METADATA_PAIRS: usize = 32;

/// The longest key of an `Upload-Metadata` pair, in bytes: 64.
pub const MAX_METADATA_KEY: usize = 64;

/// The tus `Upload-Metadata`: keys with optional base64-decoded values, in order, keys
/// unique. At most [`crate::upload::MAX_METADATA`] bytes of header and
/// [`MAX_METADATA_PAIRS`] pairs.
///
/// # Examples
///
/// ```
/// use attachments::wire::resumable::Metadata;
///
/// let meta = Metadata::parse("filename cGhvdG8uanBn,filetype aW1hZ2UvanBlZw==,is_confidential")?;
/// assert_eq!(meta.text("filename")?.as_deref(), Some("photo.jpg"));
/// assert_eq!(meta.text("filetype")?.as_deref(), Some("image/jpeg"));
/// assert!(meta.has("is_confidential"));
/// assert!(Metadata::parse("filename cGhvdG8uanBn,filename eA==").is_err());
/// # Ok::<(), attachments::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pairs: Vec<(String, Option<Vec<u8>>)>,
}

fn bad(field: &str, problem: impl Into<String>) -> Error {
    Error::InvalidField {
        field: field.to_owned(),
        problem: problem.into(),
    }
}

impl Metadata {
    /// Parses an `Upload-Metadata` value: comma-separated pairs of a key (printable ASCII,
    /// no space or comma) and an optional value, base64 (standard alphabet, padded) after
    /// one space. An empty value is no pairs.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidField`] naming the pair and what is wrong with it, or the cap.
    pub fn parse(value: &str) -> Result<Self> {
        const FIELD: &str = "Upload-Metadata";
        let max = crate::upload::MAX_METADATA;
        if value.len() > max {
            return Err(bad(
                FIELD,
                format!("is {} bytes long; at most {max} are taken", value.len()),
            ));
        }
        let mut pairs: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        if value.trim().is_empty() {
            return Ok(Metadata { pairs });
        }
        for (i, pair) in value.split(',').enumerate() {
            if i == MAX_METADATA_PAIRS {
                return Err(bad(
                    FIELD,
                    format!("has more than {MAX_METADATA_PAIRS} pairs"),
                ));
            }
            let pair = pair.trim_matches(' ');
            let (key, encoded) = match pair.split_once(' ') {
                Some((k, v)) => (k, Some(v)),
                None => (pair, None),
            };
            let shown = shorten(key, 64);
            if key.is_empty() || key.len() > MAX_METADATA_KEY {
                return Err(bad(
                    FIELD,
                    format!(
                        "pair {} has a key of {} bytes; keys are 1 to {MAX_METADATA_KEY} bytes",
                        i + 1,
                        key.len()
                    ),
                ));
            }
            if !key.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
                return Err(bad(
                    FIELD,
                    format!("key {shown:?} holds a byte other than printable ASCII"),
                ));
            }
            if pairs.iter().any(|(k, _)| k == key) {
                return Err(bad(FIELD, format!("key {shown:?} appears twice")));
            }
            let decoded = match encoded {
                None => None,
                Some(text) => Some(
                    base64_simd::STANDARD
                        .decode_to_vec(text.as_bytes())
                        .map_err(|_| bad(FIELD, format!("the value of {shown:?} is not base64")))?,
                ),
            };
            pairs.push((key.to_owned(), decoded));
        }
        Ok(Metadata { pairs })
    }

    /// Whether `key` is present.
    pub fn has(&self, key: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == key)
    }

    /// The value of `key` as UTF-8 text, if present with a value.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidField`] when the value is not UTF-8.
    pub fn text(&self, key: &str) -> Result<Option<String>> {
        let Some((_, Some(value))) = self.pairs.iter().find(|(k, _)| k == key) else {
            return Ok(None);
        };
        String::from_utf8(value.clone()).map(Some).map_err(|_| {
            bad(
                "Upload-Metadata",
                format!("the value of {key:?} is not UTF-8 text"),
            )
        })
    }

    /// The pairs, in order.
    pub fn pairs(&self) -> &[(String, Option<Vec<u8>>)] {
        &self.pairs
    }

    /// The pairs as an `Upload-Metadata` value again.
    pub fn encode(&self) -> String {
        let pairs: Vec<String> = self
            .pairs
            .iter()
            .map(|(k, v)| match v {
                None => k.clone(),
                Some(v) => format!("{k} {}", base64_simd::STANDARD.encode_to_string(v)),
            })
            .collect();
        pairs.join(",")
    }
}

/// A checksum algorithm of the tus checksum extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    /// SHA-1 (the one every tus server must support).
    Sha1,
    /// SHA-256.
    Sha256,
}

impl ChecksumAlgorithm {
    /// Its name in `Upload-Checksum`.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Sha1 => "sha1",
            ChecksumAlgorithm::Sha256 => "sha256",
        }
    }

    /// The length of its digest in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            ChecksumAlgorithm::Sha1 => 20,
            ChecksumAlgorithm::Sha256 => 32,
        }
    }
}

/// A tus `Upload-Checksum`: the algorithm and the digest the body must have.
///
/// # Examples
///
/// ```
/// use attachments::wire::resumable::{Checksum, ChecksumAlgorithm};
///
/// let sum = Checksum::parse("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=")?;
/// assert_eq!(sum.algorithm, ChecksumAlgorithm::Sha1);
/// assert_eq!(sum.digest.len(), 20);
/// // An algorithm the server does not check is a 400 that says which it checks.
/// let err = Checksum::parse("md5 1B2M2Y8AsgTpgAmY7PhCfg==").unwrap_err();
/// assert_eq!(err.status(), 400);
/// assert!(err.to_string().contains("sha1 and sha256"));
/// # Ok::<(), attachments::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// The algorithm.
    pub algorithm: ChecksumAlgorithm,
    /// The digest, decoded.
    pub digest: Vec<u8>,
}

impl Checksum {
    /// Parses `<algorithm> <base64 digest>`.
    ///
    /// # Errors
    ///
    /// [`ResumableProblem::UnsupportedChecksum`] for an algorithm other than `sha1` and
    /// `sha256`; [`Error::InvalidField`] for a malformed value or a digest of the wrong
    /// length.
    pub fn parse(value: &str) -> Result<Self> {
        const FIELD: &str = "Upload-Checksum";
        let (name, encoded) = value
            .split_once(' ')
            .ok_or_else(|| bad(FIELD, "must be an algorithm, a space and a base64 digest"))?;
        let algorithm = match name {
            "sha1" => ChecksumAlgorithm::Sha1,
            "sha256" => ChecksumAlgorithm::Sha256,
            other => {
                return Err(Error::Resumable(ResumableProblem::UnsupportedChecksum {
                    algorithm: shorten(other, 32).into_owned(),
                }));
            }
        };
        let digest = base64_simd::STANDARD
            .decode_to_vec(encoded.trim().as_bytes())
            .map_err(|_| bad(FIELD, "the digest is not base64"))?;
        if digest.len() != algorithm.digest_len() {
            return Err(bad(
                FIELD,
                format!(
                    "a {} digest is {} bytes, not {}",
                    algorithm.name(),
                    algorithm.digest_len(),
                    digest.len()
                ),
            ));
        }
        Ok(Checksum { algorithm, digest })
    }
}

/// The largest offset or length either protocol takes: 2^53 - 1 (beyond any file a
/// policy accepts, and what JavaScript clients count exactly).
pub const MAX_OFFSET: u64 = (1 << 53) - 1;

/// A tus integer header (`Upload-Offset`, `Upload-Length`): decimal digits only.
///
/// # Errors
///
/// [`Error::InvalidField`] naming `field` for anything else, or a value over
/// [`MAX_OFFSET`].
pub fn tus_integer(field: &str, value: &str) -> Result<u64> {
    if value.is_empty() || value.len() > 16 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(
            field,
            format!(
                "must be a non-negative decimal integer, not {:?}",
                shorten(value, 32)
            ),
        ));
    }
    let n: u64 = value.parse().map_err(|_| bad(field, "is out of range"))?;
    if n > MAX_OFFSET {
        return Err(bad(
            field,
            format!("is over the largest taken, {MAX_OFFSET}"),
        ));
    }
    Ok(n)
}

/// Checks `Tus-Resumable` (`None`: missing).
///
/// # Errors
///
/// [`ResumableProblem::Version`] unless it is [`TUS_VERSION`].
pub fn tus_version(value: Option<&str>) -> Result<()> {
    match value {
        Some(TUS_VERSION) => Ok(()),
        other => Err(Error::Resumable(ResumableProblem::Version {
            got: shorten(other.unwrap_or(""), 32).into_owned(),
        })),
    }
}

/// A structured-field Item (RFC 9651), its parameters ignored.
fn sf_item(field: &str, value: &str) -> Result<sfv::BareItem> {
    sfv::Parser::new(value)
        .parse::<sfv::Item>()
        .map(|item| item.bare_item)
        .map_err(|e| bad(field, format!("is not a structured-field item ({e})")))
}

/// An IETF structured-field Boolean (`Upload-Complete`: `?1` or `?0`).
///
/// # Errors
///
/// [`Error::InvalidField`] for anything else.
///
/// # Examples
///
/// ```
/// use attachments::wire::resumable::sf_boolean;
///
/// assert_eq!(sf_boolean("Upload-Complete", "?1")?, true);
/// assert_eq!(sf_boolean("Upload-Complete", "?0;x=1")?, false);
/// assert!(sf_boolean("Upload-Complete", "1").is_err());
/// # Ok::<(), attachments::Error>(())
/// ```
pub fn sf_boolean(field: &str, value: &str) -> Result<bool> {
    sf_item(field, value)?
        .as_boolean()
        .ok_or_else(|| bad(field, "must be a structured-field Boolean, ?1 or ?0"))
}

/// An IETF structured-field Integer that is a byte count (`Upload-Offset`,
/// `Upload-Length`): non-negative, at most [`MAX_OFFSET`].
///
/// # Errors
///
/// [`Error::InvalidField`] for anything else.
pub fn sf_count(field: &str, value: &str) -> Result<u64> {
    let n = sf_item(field, value)?
        .as_integer()
        .map(i64::from)
        .ok_or_else(|| bad(field, "must be a structured-field Integer"))?;
    u64::try_from(n)
        .ok()
        .filter(|n| *n <= MAX_OFFSET)
        .ok_or_else(|| bad(field, format!("must be 0 to {MAX_OFFSET}, not {n}")))
}

/// `Upload-Draft-Interop-Version` as an Integer, if it is one.
pub fn interop_version(value: &str) -> Option<i64> {
    sf_item("Upload-Draft-Interop-Version", value)
        .ok()?
        .as_integer()
        .map(i64::from)
}

/// The IETF `Upload-Limit` dictionary: `max-size` (bytes) and, when known, `max-age`
/// (seconds the upload has left).
///
/// # Examples
///
/// ```
/// use attachments::wire::resumable::upload_limit;
///
/// assert_eq!(upload_limit(10_485_760, Some(1800)), "max-size=10485760, max-age=1800");
/// ```
pub fn upload_limit(max_size: u64, max_age_secs: Option<u64>) -> String {
    let int = |n: u64| sfv::Integer::try_from(n.min(MAX_OFFSET)).unwrap_or(sfv::Integer::ZERO);
    let mut out = sfv::DictSerializer::new();
    if let Ok(key) = sfv::KeyRef::from_str("max-size") {
        let _ = out.bare_item(key, int(max_size)).finish();
    }
    if let (Some(age), Ok(key)) = (max_age_secs, sfv::KeyRef::from_str("max-age")) {
        let _ = out.bare_item(key, int(age)).finish();
    }
    out.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn metadata_caps_and_shapes() {
        assert!(Metadata::parse("").unwrap().pairs().is_empty());
        assert!(Metadata::parse("a,b").unwrap().has("b"));
        let many = (0..=MAX_METADATA_PAIRS)
            .map(|i| format!("k{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(
            Metadata::parse(&many)
                .unwrap_err()
                .to_string()
                .contains("more than 32")
        );
        assert!(
            Metadata::parse("filename !!!")
                .unwrap_err()
                .to_string()
                .contains("not base64")
        );
        assert!(Metadata::parse("f\u{e9}e eA==").is_err());
        assert!(Metadata::parse(&"a".repeat(5000)).is_err());
    }

    #[test]
    fn integers_are_digits_only_and_bounded() {
        assert_eq!(tus_integer("Upload-Offset", "0").unwrap(), 0);
        for bad in ["", "-1", "+1", "1.0", " 1", "99999999999999999"] {
            assert!(tus_integer("Upload-Offset", bad).is_err(), "{bad:?}");
        }
        assert_eq!(sf_count("Upload-Offset", "42").unwrap(), 42);
        assert!(sf_count("Upload-Offset", "-1").is_err());
        assert!(sf_count("Upload-Offset", "1.5").is_err());
        assert!(sf_count("Upload-Offset", "9999999999999999").is_err());
        assert_eq!(interop_version("8"), Some(8));
        assert_eq!(interop_version("x"), None);
    }

    proptest! {
        /// Any pairs encode to a value that parses back to them.
        #[test]
        fn metadata_round_trips(
            pairs in proptest::collection::btree_map("[!-+\\--~]{1,20}", proptest::option::of(proptest::collection::vec(any::<u8>(), 1..40)), 0..10)
        ) {
            let meta = Metadata { pairs: pairs.into_iter().collect() };
            prop_assert_eq!(Metadata::parse(&meta.encode()).unwrap(), meta);
        }

        /// No value makes a parser panic.
        #[test]
        fn parsers_take_any_text(s in "\\PC{0,80}") {
            let _ = Metadata::parse(&s);
            let _ = Checksum::parse(&s);
            let _ = tus_integer("x", &s);
            let _ = sf_boolean("x", &s);
            let _ = sf_count("x", &s);
        }
    }
}
