//! Wire types (serde) for the attachment APIs, as `docs/protocol.md` describes them
//! (*Envelopes* and the sections of each API).
//!
//! - [`connectivity`]: Booking.com Connectivity (supply-xml) messaging: `{"attachment": ..}`
//!   requests, `attachment_chunks` start/resume/finish, and the `errors` / `warnings` /
//!   `data` / `meta.ruid` envelope.
//! - [`demand`]: Booking.com Demand API v3 messaging: flat upload requests, `request_id` +
//!   `data` responses and the `errors[].message.{error,message}` error shape.
//! - [`chat`]: a chat platform's attachments resource (`docs/protocol.md`, *Chat
//!   attachments resource*): attachment objects, the `{has_more, data}` page, the rename
//!   body and the `{"error": {..}}` shape.
//!
//! Reading is lenient where the APIs' documents disagree with their own examples
//! (`docs/protocol.md`, *Conventions*): numbers that the Connectivity API documents as
//! strings (`chunk_number`, `chunk_size`, ...) are accepted as JSON strings or integers,
//! and `"ok"` as a string or a boolean. Writing follows the examples: integers, and
//! `"ok": "true"`. Unknown fields are ignored. Base64 payloads (`file_content`,
//! `chunk_content`) are [`Base64Text`]: they borrow from the request body when they hold
//! no JSON escape, so a server parses a chunk without copying it, and they are left for
//! the base64 decoder to check rather than scanned twice.
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
//! assert!(req.attachment.file_content.is_borrowed());
//! assert_eq!(req.attachment.file_content, "iVBORw0KGgo=");
//!
//! let err = wire::from_slice::<UploadRequest<'_>>(br#"{"attachment": {"file_name": "a.png"}}"#)
//!     .unwrap_err();
//! assert!(err.to_string().contains("missing field `file_content`"), "{err}");
//! # Ok::<(), attachments::Error>(())
//! ```

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::error::Result;

pub mod chat;
pub mod connectivity;
pub mod demand;
pub mod multipart;
pub mod resumable;

/// The longest identifier a request may name (conversation, reservation, message and
/// attachment ids, the chat flavour's `conversation_id` / `message_id`): 255 bytes.
///
/// Every id a request carries is checked against it before it is used, stored or put into
/// a record, so one request cannot make a record no reader takes back.
pub const MAX_REF_LEN: usize = 255;

/// Checks an identifier from a request: 1 to [`MAX_REF_LEN`] bytes, no control
/// characters.
///
/// # Errors
///
/// [`Error::InvalidField`](crate::Error::InvalidField) (400) naming `field`, the length
/// and the limit.
///
/// # Examples
///
/// ```
/// use attachments::wire::check_ref;
///
/// assert!(check_ref("conversation", "cc872746-77f2-5886-ba7c-17e0497241b5").is_ok());
/// let err = check_ref("reservation", &"7".repeat(300)).unwrap_err();
/// assert_eq!(err.to_string(), "reservation is 300 bytes long, over the 255-byte limit");
/// assert_eq!(err.status(), 400);
/// ```
pub fn check_ref(field: &str, value: &str) -> Result<()> {
    let problem = if value.is_empty() {
        "is empty".to_owned()
    } else if value.len() > MAX_REF_LEN {
        format!(
            "is {} bytes long, over the {MAX_REF_LEN}-byte limit",
            value.len()
        )
    } else if value.chars().any(char::is_control) {
        "contains a control character".to_owned()
    } else {
        return Ok(());
    };
    Err(crate::Error::InvalidField {
        field: field.to_owned(),
        problem,
    })
}

/// Appends `value` as JSON to a body being written by hand.
pub(crate) fn write_json<T: Serialize + ?Sized>(body: &mut bytes::BytesMut, value: &T) {
    use bytes::BufMut;
    // Writing into memory cannot fail, and the wire types and strings always serialise.
    let _ = serde_json::to_writer(body.writer(), value);
}

/// Appends `s` as a JSON string (quoted and escaped).
pub(crate) fn write_json_str(body: &mut bytes::BytesMut, s: &str) {
    write_json(body, s);
}

/// Parses a JSON body into a wire type, mapping failures to
/// [`Error::InvalidJson`](crate::Error::InvalidJson) (400), whose message names the missing
/// or malformed field and where it is.
///
/// # Errors
///
/// [`Error::InvalidJson`](crate::Error::InvalidJson).
pub fn from_slice<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T> {
    match serde_json::from_slice(body) {
        Ok(value) => Ok(value),
        // Parsed again only on failure, to name where the problem is: the happy path
        // pays nothing for it.
        Err(err) => {
            let mut de = serde_json::Deserializer::from_slice(body);
            let path = match serde_path_to_error::deserialize::<_, T>(&mut de) {
                Err(e) if e.path().iter().next().is_some() => e.path().to_string(),
                _ => String::new(),
            };
            let message = if path.is_empty() {
                err.to_string()
            } else {
                format!("{path}: {err}")
            };
            Err(crate::Error::InvalidJson { message })
        }
    }
}

/// A base64 payload (`file_content`, `chunk_content`) as it stands in the JSON body.
///
/// Read with serde's `deserialize_bytes`, so `serde_json` finds the end of the string with
/// its vectorised `"`/`\\` search instead of its byte-class scan, and skips UTF-8
/// validation: the payload is checked once, by the strict base64
/// [`Decoder`](crate::codec::base64::Decoder), which rejects every byte outside the
/// alphabet (control characters and non-ASCII included) with its offset. Measured on the
/// `sessions_receive` bench (10 MiB JPEG in 1 MB chunks): reading the payload as `&str` spent
/// 28% of the time in `serde_json`'s string scan and `from_utf8`, more than decoding it.
///
/// It borrows from the body unless the string holds a JSON escape (`\/` is the only one a
/// base64 text can need); escapes are resolved into an owned copy.
///
/// # Examples
///
/// ```
/// use attachments::wire::{self, Base64Text, connectivity::Chunk};
///
/// let chunk: Chunk<'_> = wire::from_slice(
///     br#"{"chunk_number": 1, "chunk_content": "QUJD", "chunk_size": 3}"#)?;
/// assert!(chunk.chunk_content.is_borrowed());
/// assert_eq!(chunk.chunk_content.as_bytes(), b"QUJD");
///
/// // An escaped slash is resolved (into a copy).
/// let chunk: Chunk<'_> = wire::from_slice(
///     br#"{"chunk_number": 1, "chunk_content": "a\/8=", "chunk_size": 2}"#)?;
/// assert_eq!(chunk.chunk_content, "a/8=");
/// assert!(!chunk.chunk_content.is_borrowed());
///
/// // Written back as a JSON string.
/// let text = Base64Text::from("QUJD");
/// assert_eq!(serde_json::to_string(&text).unwrap(), r#""QUJD""#);
/// # Ok::<(), attachments::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Base64Text<'a>(Cow<'a, [u8]>);

impl<'a> Base64Text<'a> {
    /// The text's bytes, as they came in (after JSON unescaping); not yet checked.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes (characters, for a valid base64 text).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the text borrows from the body it was read from (no copy was made).
    pub fn is_borrowed(&self) -> bool {
        matches!(self.0, Cow::Borrowed(_))
    }

    /// An owned copy, detached from the body.
    pub fn into_owned(self) -> Base64Text<'static> {
        Base64Text(Cow::Owned(self.0.into_owned()))
    }
}

impl fmt::Debug for Base64Text<'_> {
    /// Shows the length and the first 16 bytes: payloads run to megabytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = &self.0[..self.0.len().min(16)];
        write!(
            f,
            "Base64Text({} bytes: {:?}",
            self.0.len(),
            head.escape_ascii().to_string()
        )?;
        if head.len() < self.0.len() {
            f.write_str("...")?;
        }
        f.write_str(")")
    }
}

impl<'a> From<&'a str> for Base64Text<'a> {
    fn from(text: &'a str) -> Self {
        Base64Text(Cow::Borrowed(text.as_bytes()))
    }
}

impl From<String> for Base64Text<'_> {
    fn from(text: String) -> Self {
        Base64Text(Cow::Owned(text.into_bytes()))
    }
}

impl<'a> From<Cow<'a, str>> for Base64Text<'a> {
    fn from(text: Cow<'a, str>) -> Self {
        match text {
            Cow::Borrowed(s) => s.into(),
            Cow::Owned(s) => s.into(),
        }
    }
}

impl PartialEq<str> for Base64Text<'_> {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other.as_bytes()
    }
}

impl PartialEq<&str> for Base64Text<'_> {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == *other.as_bytes()
    }
}

impl Serialize for Base64Text<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(e) => Err(serde::ser::Error::custom(format_args!(
                "base64 text is not UTF-8 at byte {}; it cannot be written as a JSON string",
                e.valid_up_to()
            ))),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Base64Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Base64Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("base64 text as a JSON string")
            }
            fn visit_borrowed_bytes<E: de::Error>(
                self,
                v: &'de [u8],
            ) -> std::result::Result<Self::Value, E> {
                Ok(Base64Text(Cow::Borrowed(v)))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> std::result::Result<Self::Value, E> {
                Ok(Base64Text(Cow::Owned(v.to_vec())))
            }
            fn visit_byte_buf<E: de::Error>(
                self,
                v: Vec<u8>,
            ) -> std::result::Result<Self::Value, E> {
                Ok(Base64Text(Cow::Owned(v)))
            }
            fn visit_borrowed_str<E: de::Error>(
                self,
                v: &'de str,
            ) -> std::result::Result<Self::Value, E> {
                Ok(Base64Text(Cow::Borrowed(v.as_bytes())))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(Base64Text(Cow::Owned(v.as_bytes().to_vec())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<Self::Value, E> {
                Ok(Base64Text(Cow::Owned(v.into_bytes())))
            }
        }
        d.deserialize_bytes(V)
    }
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
