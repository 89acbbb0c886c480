//! Wire types (serde) for the attachment APIs, exactly as the seed documents show them.
//!
//! - [`connectivity`]: Booking.com Connectivity (supply-xml) messaging: `{"attachment": ..}`
//!   requests, `attachment_chunks` start/resume/finish, and the `errors` / `warnings` /
//!   `data` / `meta.ruid` envelope.
//! - [`demand`]: Booking.com Demand API v3 messaging: flat upload requests, `request_id` +
//!   `data` responses and the `errors[].message.{error,message}` error shape.
//!
//! Reading is lenient where the documents disagree with their own examples: numbers that
//! seed 001 documents as strings (`chunk_number`, `chunk_size`, ...) are accepted as JSON
//! strings or integers, and `"ok"` as a string or a boolean. Writing follows the examples:
//! integers, and `"ok": "true"`. Unknown fields are ignored. Base64 payloads
//! (`file_content`, `chunk_content`) borrow from the request body when they hold no JSON
//! escape, so a server parses a chunk without copying it.
//!
//! # Examples
//!
//! ```
//! use attachments::wire::{self, connectivity::UploadRequest};
//!
//! let body = br#"{"attachment": {"file_name": "a.png", "file_content": "iVBORw0KGgo=",
//!                 "file_type": "image/png", "file_size": "8"}}"#;
//! let req: UploadRequest<'_> = wire::from_slice(body)?;
//! assert_eq!(req.attachment.file_size, 8);
//! assert!(matches!(req.attachment.file_content, std::borrow::Cow::Borrowed(_)));
//!
//! let err = wire::from_slice::<UploadRequest<'_>>(br#"{"attachment": {"file_name": "a.png"}}"#)
//!     .unwrap_err();
//! assert!(err.to_string().contains("missing field `file_content`"), "{err}");
//! # Ok::<(), attachments::Error>(())
//! ```

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::error::Result;

pub mod connectivity;
pub mod demand;

/// Parses a JSON body into a wire type, mapping failures to
/// [`Error::InvalidJson`](crate::Error::InvalidJson) (400), whose message names the missing
/// or malformed field and where it is.
///
/// # Errors
///
/// [`Error::InvalidJson`](crate::Error::InvalidJson).
pub fn from_slice<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T> {
    Ok(serde_json::from_slice(body)?)
}

/// Connectivity's `"ok"` flag: written as the string `"true"` / `"false"` (as the examples
/// show), read from a string or a boolean (as the tables document).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct OkFlag(pub bool);

impl Serialize for OkFlag {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(if self.0 { "true" } else { "false" })
    }
}

impl<'de> Deserialize<'de> for OkFlag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = OkFlag;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false, \"true\" or \"false\"")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<OkFlag, E> {
                Ok(OkFlag(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<OkFlag, E> {
                match v {
                    "true" => Ok(OkFlag(true)),
                    "false" => Ok(OkFlag(false)),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A non-negative integer read from a JSON integer or a string of decimal digits, and
/// written as an integer.
pub(crate) mod lenient_u64 {
    use super::*;

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_u64(*v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
        d.deserialize_any(U64Visitor)
    }

    pub(crate) struct U64Visitor;

    impl Visitor<'_> for U64Visitor {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a non-negative integer, as a JSON number or a string of digits")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<u64, E> {
            u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<u64, E> {
            // Digits only: no sign, no spaces, no exponent. At most 20 digits fit a u64.
            if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(E::invalid_value(de::Unexpected::Str(v), &self));
            }
            v.parse()
                .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
        }
    }
}

/// An identifier that arrives as a JSON string or a JSON integer (Booking's `reservation`
/// is `"4380765874"` in one document and `4380765874` in another). Compares by its text and
/// is written back in the form it came in.
///
/// # Examples
///
/// ```
/// use attachments::wire::Id;
///
/// let a: Id = serde_json::from_str("4380765874").unwrap();
/// let b: Id = serde_json::from_str("\"4380765874\"").unwrap();
/// assert_eq!(a, b);
/// assert_eq!(serde_json::to_string(&a).unwrap(), "4380765874");
/// assert_eq!(serde_json::to_string(&b).unwrap(), "\"4380765874\"");
/// ```
#[derive(Debug, Clone, Eq)]
pub struct Id {
    text: String,
    numeric: bool,
}

impl Id {
    /// An identifier written as a JSON string.
    pub fn text(text: impl Into<String>) -> Self {
        Id {
            text: text.into(),
            numeric: false,
        }
    }

    /// An identifier written as a JSON integer.
    pub fn number(n: u64) -> Self {
        Id {
            text: n.to_string(),
            numeric: true,
        }
    }

    /// The identifier's text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for Id {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl std::hash::Hash for Id {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Self {
        Id::text(s)
    }
}

impl From<u64> for Id {
    fn from(n: u64) -> Self {
        Id::number(n)
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match (self.numeric, self.text.parse::<u64>()) {
            (true, Ok(n)) => s.serialize_u64(n),
            _ => s.serialize_str(&self.text),
        }
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an identifier, as a JSON string or a non-negative integer")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Id, E> {
                Ok(Id::number(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Id, E> {
                u64::try_from(v)
                    .map(Id::number)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Id, E> {
                Ok(Id::text(v))
            }
        }
        d.deserialize_any(V)
    }
}
