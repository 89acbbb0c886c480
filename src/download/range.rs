//! The server side of a ranged download: `from` / `to` against the attachment's size, and
//! response bodies written with the base64 going straight from the store's bytes into the
//! body buffer.

use std::ops::Range;

use bytes::{BufMut, BytesMut};

use crate::codec::base64::{Encoder, encoded_len};
use crate::error::{Error, RangeProblem, Result};
use crate::policy::Limits;
use crate::wire::write_json_str;

/// A download request's `from` and `to` (inclusive), as parsed from the query.
///
/// # Examples
///
/// ```
/// use attachments::{download::RangeQuery, Limits};
///
/// let limits = Limits::connectivity();
/// // Bytes 0..=1048574 of a 3 MB attachment.
/// let q = RangeQuery::from_query_string("from=0&to=1048574")?;
/// assert_eq!(q.resolve(3_000_000, &limits)?, 0..1_048_575);
/// // `to` past the end is clamped to the last byte.
/// let q = RangeQuery::from_query_string("from=2000000&to=9999999")?;
/// assert_eq!(q.resolve(3_000_000, &limits)?, 2_000_000..3_000_000);
/// // No `from` on an attachment over 1 MB is refused, saying what to do.
/// let err = RangeQuery::default().resolve(3_000_000, &limits).unwrap_err();
/// assert_eq!(err.status(), 400);
/// assert!(err.to_string().contains("pass from and to"), "{err}");
/// # Ok::<(), attachments::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RangeQuery {
    /// The first byte wanted.
    pub from: Option<u64>,
    /// The last byte wanted (inclusive).
    pub to: Option<u64>,
}

impl RangeQuery {
    /// Parses the two parameters' raw values (absent: `None`).
    ///
    /// # Errors
    ///
    /// [`RangeProblem::NotANumber`] for anything but decimal digits (a sign, spaces, an
    /// empty value, a number over `u64`).
    pub fn parse(from: Option<&str>, to: Option<&str>) -> Result<Self> {
        Ok(RangeQuery {
            from: from.map(|v| number("from", v)).transpose()?,
            to: to.map(|v| number("to", v)).transpose()?,
        })
    }

    /// Parses a URL query string (`from=0&to=99`, leading `?` optional) as
    /// `application/x-www-form-urlencoded` (the `form_urlencoded` crate: names and values
    /// percent-decoded, `+` a space, an invalid escape kept as it is). Other parameters
    /// are ignored.
    ///
    /// # Errors
    ///
    /// As [`RangeQuery::parse`], and [`RangeProblem::Repeated`] when `from` or `to` comes
    /// twice.
    pub fn from_query_string(query: &str) -> Result<Self> {
        let query = query.strip_prefix('?').unwrap_or(query);
        let (mut from, mut to) = (None, None);
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let (slot, param) = match key.as_ref() {
                "from" => (&mut from, "from"),
                "to" => (&mut to, "to"),
                _ => continue,
            };
            if slot.is_some() {
                return Err(Error::Range(RangeProblem::Repeated { param }));
            }
            *slot = Some(value);
        }
        Self::parse(from.as_deref(), to.as_deref())
    }

    /// The bytes to send, as a half-open range of the attachment of `size` bytes.
    ///
    /// - No `from`: the whole attachment, if it is at most `limits.max_unranged_download`.
    /// - `from` alone: from there to the end.
    /// - `to` is inclusive and is clamped to the last byte.
    /// - `from = 0` on an empty attachment is the empty range.
    ///
    /// # Errors
    ///
    /// [`RangeProblem::FromRequired`], [`RangeProblem::ToWithoutFrom`],
    /// [`RangeProblem::FromPastEnd`], [`RangeProblem::ToBeforeFrom`], all 400.
    pub fn resolve(&self, size: u64, limits: &Limits) -> Result<Range<u64>> {
        let problem = |p| Err(Error::Range(p));
        let Some(from) = self.from else {
            if let Some(to) = self.to {
                return problem(RangeProblem::ToWithoutFrom { to });
            }
            if size > limits.max_unranged_download {
                return problem(RangeProblem::FromRequired {
                    size,
                    limit: limits.max_unranged_download,
                });
            }
            return Ok(0..size);
        };
        if from >= size && !(from == 0 && size == 0) {
            return problem(RangeProblem::FromPastEnd { from, size });
        }
        let end = match self.to {
            None => size,
            Some(to) if to < from => return problem(RangeProblem::ToBeforeFrom { from, to }),
            Some(to) => to.saturating_add(1).min(size),
        };
        Ok(from..end)
    }
}

fn number(param: &'static str, value: &str) -> Result<u64> {
    let bad = || {
        Error::Range(RangeProblem::NotANumber {
            param,
            value: value.to_owned(),
        })
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    value.parse().map_err(|_| bad())
}

/// Writes a Connectivity download response (`docs/protocol.md`, *Download by range*) into
/// `out`: the envelope with `data.ok`, `data.file_content` (the base64 of `pieces`, in
/// order), `data.attachment_id`, `data.conversation_id`, and `meta.ruid`. The base64 is
/// encoded from the pieces (the store's `Bytes`) straight into `out`, reserved once.
///
/// # Examples
///
/// ```
/// use attachments::download::write_connectivity_download;
/// use attachments::wire::{self, connectivity::DownloadResponse};
///
/// let mut body = bytes::BytesMut::new();
/// write_connectivity_download(&mut body, "att-1", "conv-1", "ruid-1", [&b"hel"[..], b"lo"]);
/// let resp: DownloadResponse<'_> = wire::from_slice(&body)?;
/// let data = resp.data.unwrap();
/// assert_eq!(data.file_content, "aGVsbG8=");
/// assert_eq!((data.attachment_id.as_str(), data.conversation_id.as_str()), ("att-1", "conv-1"));
/// assert_eq!(resp.meta.ruid, "ruid-1");
/// # Ok::<(), attachments::Error>(())
/// ```
pub fn write_connectivity_download<I, P>(
    out: &mut BytesMut,
    attachment_id: &str,
    conversation_id: &str,
    ruid: &str,
    pieces: I,
) where
    I: IntoIterator<Item = P>,
    I::IntoIter: Clone,
    P: AsRef<[u8]>,
{
    let pieces = pieces.into_iter();
    out.reserve(
        payload_len(pieces.clone())
            + 160
            + attachment_id.len()
            + conversation_id.len()
            + ruid.len(),
    );
    out.put_slice(b"{\"errors\":[],\"warnings\":[],\"data\":{\"ok\":\"true\",\"attachment_id\":");
    write_json_str(out, attachment_id);
    out.put_slice(b",\"conversation_id\":");
    write_json_str(out, conversation_id);
    out.put_slice(b",\"file_content\":\"");
    encode_pieces(out, pieces);
    out.put_slice(b"\"},\"meta\":{\"ruid\":");
    write_json_str(out, ruid);
    out.put_slice(b"}}");
}

/// Writes a Demand download response into `out`: `{"request_id": .., "data":
/// {"attachment": .., "file_content": ..}}`. The Demand API's documentation only says the
/// file comes back "as a base64-encoded string in the response body"; this shape follows
/// the Demand API's other responses (`docs/protocol.md`, *Demand metadata and download*).
///
/// # Examples
///
/// ```
/// use attachments::download::write_demand_download;
///
/// let mut body = bytes::BytesMut::new();
/// write_demand_download(&mut body, "req-1", "att-1", [&b"hello"[..]]);
/// let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
/// assert_eq!(v["data"]["file_content"], "aGVsbG8=");
/// assert_eq!(v["data"]["attachment"], "att-1");
/// assert_eq!(v["request_id"], "req-1");
/// ```
pub fn write_demand_download<I, P>(
    out: &mut BytesMut,
    request_id: &str,
    attachment: &str,
    pieces: I,
) where
    I: IntoIterator<Item = P>,
    I::IntoIter: Clone,
    P: AsRef<[u8]>,
{
    let pieces = pieces.into_iter();
    out.reserve(payload_len(pieces.clone()) + 80 + request_id.len() + attachment.len());
    out.put_slice(b"{\"request_id\":");
    write_json_str(out, request_id);
    out.put_slice(b",\"data\":{\"attachment\":");
    write_json_str(out, attachment);
    out.put_slice(b",\"file_content\":\"");
    encode_pieces(out, pieces);
    out.put_slice(b"\"}}");
}

/// Length of the base64 text of `pieces`, to reserve the whole body at once.
fn payload_len<P: AsRef<[u8]>>(pieces: impl Iterator<Item = P>) -> usize {
    encoded_len(pieces.map(|p| p.as_ref().len()).sum())
}

fn encode_pieces<P: AsRef<[u8]>>(out: &mut BytesMut, pieces: impl Iterator<Item = P>) {
    let mut encoder = Encoder::new();
    for piece in pieces {
        encoder.encode(piece.as_ref(), out);
    }
    encoder.finish(out);
}
