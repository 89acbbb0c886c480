//! `Idempotency-Key` (the IETF httpapi draft, `draft-ietf-httpapi-idempotency-key-header`):
//! what a server remembers per key so that a retried non-idempotent request takes effect
//! once, and the decision it makes when a key comes back.
//!
//! IO-free: the records are kept by a [`KeyStore`](crate::store::KeyStore) (memory,
//! directory or S3), time comes in as arguments.
//!
//! The rules, in the order they are applied to a request carrying a key:
//!
//! 1. The key is checked ([`IdempotencyKey::parse`]): a structured-field string
//!    (`"..."`, RFC 8941) or a bare token, 1 to [`MAX_KEY_LEN`] printable ASCII characters.
//! 2. The key is scoped to the client (its credentials), so two clients never share one
//!    ([`RecordKey`]).
//! 3. The request's [`Fingerprint`] (method, path, query and body) is compared with the one
//!    stored under the key, if any ([`decide`]):
//!    - no record, or one expired ([`IDEMPOTENCY_TTL`] after its answer, [`IN_FLIGHT_LEASE`]
//!      after an unanswered claim): the request is claimed and runs;
//!    - another fingerprint: 422, nothing runs;
//!    - the same, still running: 409 with `Retry-After: 1`;
//!    - the same, answered: the stored answer is sent again, with `Idempotent-Replayed: true`.
//! 4. A request that ran stores its answer when it succeeded (2xx, at most
//!    [`MAX_STORED_ANSWER`] bytes) and gives the key up otherwise: our error answers mean
//!    nothing took effect, so the retry runs again.
//!
//! # Examples
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use attachments::idempotency::{decide, Decision, Fingerprint, IdempotencyKey, KeyRecord, StoredAnswer};
//!
//! let key = IdempotencyKey::parse(b"\"8e03978e-40d5-43e8-bc93-6894a57f9324\"")?;
//! assert_eq!(key.as_str(), "8e03978e-40d5-43e8-bc93-6894a57f9324");
//!
//! let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
//! let fp = Fingerprint::of(&[b"POST", b"/3.1/messages/send", b"{\"content\":\"hi\"}"]);
//! // Nobody holds the key: the request runs.
//! assert_eq!(decide(None, &fp, now), Decision::Claim);
//! // It ran and its answer was stored: a retry gets the answer again.
//! let answer = StoredAnswer::new(200, Some("application/json".into()), "{\"ok\":true}".into());
//! let done = KeyRecord::answered(fp, "claim-1".into(), answer.clone(), now);
//! assert_eq!(decide(Some(&done), &fp, now), Decision::Replay(answer));
//! // The same key with another body is refused.
//! let other = Fingerprint::of(&[b"POST", b"/3.1/messages/send", b"{\"content\":\"ho\"}"]);
//! assert_eq!(decide(Some(&done), &other, now), Decision::Mismatch);
//! # Ok::<(), attachments::Error>(())
//! ```

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The request header that carries the key.
pub const HEADER: &str = "idempotency-key";

/// The answer header that marks a replayed answer: `Idempotent-Replayed: true`.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// Longest key accepted, in characters (after removing the quotes): 255.
pub const MAX_KEY_LEN: usize = 255;

/// How long a key's answer is kept and replayed: 24 hours after it was stored. A retry
/// later than that runs as a new request.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How long a claimed key whose request has not answered blocks its retries (409): 120 s.
/// Past it, the request is taken to have died without effect, and a retry runs. (A server
/// that dies between the effect and storing its answer leaves a key whose retry, after
/// this lease, runs again: the one window where a retry can repeat an effect.)
pub const IN_FLIGHT_LEASE: Duration = Duration::from_secs(120);

/// Largest answer body stored for replay: 16 KiB. The answers of the requests that take
/// keys (an id and a few fields of JSON) are far smaller; a larger one is not stored, and
/// its key is given up.
pub const MAX_STORED_ANSWER: usize = 16 * 1024;

/// Largest record a store reads back: the answer, its type and the bookkeeping.
pub const MAX_KEY_RECORD: usize = 2 * MAX_STORED_ANSWER + 1024;

/// The seconds a client is told to wait (`Retry-After`) while the first request with its
/// key is still running.
pub const IN_FLIGHT_RETRY_AFTER_SECS: u64 = 1;

/// A checked `Idempotency-Key` value.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({:?})", self.0)
    }
}

impl IdempotencyKey {
    /// Reads a header value: an RFC 8941 string (`"..."`, with `\"` and `\\` escapes), as
    /// the draft defines the field, or a bare token as many clients send it. The key is
    /// 1 to [`MAX_KEY_LEN`] printable ASCII characters.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidField`] naming `Idempotency-Key` and what is wrong.
    ///
    /// # Examples
    ///
    /// ```
    /// use attachments::idempotency::IdempotencyKey;
    ///
    /// assert_eq!(IdempotencyKey::parse(b"\"a \\\"quoted\\\" key\"")?.as_str(), "a \"quoted\" key");
    /// assert_eq!(IdempotencyKey::parse(b"plain-token_1")?.as_str(), "plain-token_1");
    /// assert!(IdempotencyKey::parse(b"\"\"").is_err());
    /// assert!(IdempotencyKey::parse(b"two words").is_err());
    /// # Ok::<(), attachments::Error>(())
    /// ```
    pub fn parse(value: &[u8]) -> Result<Self> {
        let bad = |problem: String| Error::InvalidField {
            field: "Idempotency-Key".into(),
            problem,
        };
        let value = value.trim_ascii();
        // Checked before anything is copied: a key, quoted and escaped, is at most twice
        // its length plus the quotes.
        if value.len() > 2 * MAX_KEY_LEN + 2 {
            return Err(bad(format!(
                "is {} bytes long; a key is at most {MAX_KEY_LEN} characters",
                value.len()
            )));
        }
        let key = if let Some(inner) = value.strip_prefix(b"\"") {
            let mut key = String::with_capacity(inner.len());
            let mut chars = inner.iter();
            loop {
                match chars.next() {
                    None => return Err(bad("has no closing quote".into())),
                    Some(b'"') => break,
                    Some(b'\\') => match chars.next() {
                        Some(&c @ (b'"' | b'\\')) => key.push(char::from(c)),
                        _ => {
                            return Err(bad("has a backslash not followed by `\"` or `\\`".into()));
                        }
                    },
                    Some(&c) if (0x20..0x7f).contains(&c) => key.push(char::from(c)),
                    Some(&c) => {
                        return Err(bad(format!(
                            "holds byte 0x{c:02x}; a key is printable ASCII"
                        )));
                    }
                }
            }
            if chars.next().is_some() {
                return Err(bad("has text after its closing quote".into()));
            }
            key
        } else {
            if let Some(&c) = value
                .iter()
                .find(|&&c| !(0x21..0x7f).contains(&c) || c == b'"' || c == b',')
            {
                return Err(bad(format!(
                    "holds byte 0x{c:02x}; send the key as a quoted string (`\"...\"`) or one \
                     token of printable ASCII without spaces"
                )));
            }
            String::from_utf8_lossy(value).into_owned()
        };
        if key.is_empty() {
            return Err(bad(
                "is empty; send a unique value per operation, such as a UUID".into(),
            ));
        }
        if key.len() > MAX_KEY_LEN {
            return Err(bad(format!(
                "is {} characters long; a key is at most {MAX_KEY_LEN}",
                key.len()
            )));
        }
        Ok(IdempotencyKey(key))
    }

    /// A fresh random key (a version 4 UUID's layout), as the clients send.
    #[cfg(feature = "async")]
    pub fn random() -> Self {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).expect("the operating system's random source");
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex::encode(b);
        IdempotencyKey(format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        ))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as the header value the draft defines: an RFC 8941 string.
    pub fn to_header_value(&self) -> String {
        let mut out = String::with_capacity(self.0.len() + 2);
        out.push('"');
        for c in self.0.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        out
    }
}

/// A SHA-256 over the parts of a request that must match for a retry to be the same
/// request: each part length-prefixed, so no two lists of parts hash alike.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Fingerprint([u8; 32]);

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", hex::encode(&self.0[..8]))
    }
}

impl Fingerprint {
    /// The fingerprint of `parts`, in order.
    pub fn of(parts: &[&[u8]]) -> Self {
        let mut h = Sha256::new();
        for part in parts {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        Fingerprint(h.finalize().into())
    }
}

impl From<Fingerprint> for String {
    fn from(f: Fingerprint) -> String {
        hex::encode(f.0)
    }
}

impl TryFrom<String> for Fingerprint {
    type Error = String;
    fn try_from(text: String) -> std::result::Result<Self, String> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(&text, &mut out).map_err(|e| format!("fingerprint: {e}"))?;
        Ok(Fingerprint(out))
    }
}

/// The name a key is stored under: the hex SHA-256 of the client's scope and the key, so
/// names have one length and one alphabet whatever the client sent, and one client's key
/// never names another's record.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey(String);

impl fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordKey({})", &self.0[..16])
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl RecordKey {
    /// The record name of `key` sent by the client `scope` (any text that identifies the
    /// client, such as a hash of its credentials).
    pub fn new(scope: &str, key: &IdempotencyKey) -> Self {
        let f = Fingerprint::of(&[
            b"idempotency-key",
            scope.as_bytes(),
            key.as_str().as_bytes(),
        ]);
        RecordKey(String::from(f))
    }

    /// Reads back a record name (64 lowercase hex digits); `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        (name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| RecordKey(name.to_owned()))
    }

    /// The name: 64 lowercase hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A success answer kept for replay: status, `Content-Type` and body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAnswer {
    /// The HTTP status (2xx).
    pub status: u16,
    /// The `Content-Type`, if the answer had one.
    pub content_type: Option<String>,
    /// The body (our answers are JSON text).
    pub body: String,
}

impl StoredAnswer {
    /// An answer to store.
    pub fn new(status: u16, content_type: Option<String>, body: String) -> Self {
        StoredAnswer {
            status,
            content_type,
            body,
        }
    }

    /// Whether an answer of `status` with a body of `len` bytes is kept: a success of at
    /// most [`MAX_STORED_ANSWER`] bytes.
    pub fn is_kept(status: u16, len: usize) -> bool {
        (200..300).contains(&status) && len <= MAX_STORED_ANSWER
    }
}

/// What is stored under a key: who claimed it, for which request, and its answer once
/// there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The fingerprint of the request that claimed the key.
    pub fingerprint: Fingerprint,
    /// The claim's own random token: only its holder stores the answer.
    pub claim: String,
    /// When the key was claimed, or answered (Unix milliseconds).
    pub at_ms: u64,
    /// The answer, once the request answered.
    pub answer: Option<StoredAnswer>,
}

impl KeyRecord {
    /// A claim by the request of `fingerprint`, at `now`.
    pub fn claimed(fingerprint: Fingerprint, claim: String, now: SystemTime) -> Self {
        KeyRecord {
            fingerprint,
            claim,
            at_ms: unix_ms(now),
            answer: None,
        }
    }

    /// A claim that answered `answer` at `now`.
    pub fn answered(
        fingerprint: Fingerprint,
        claim: String,
        answer: StoredAnswer,
        now: SystemTime,
    ) -> Self {
        KeyRecord {
            answer: Some(answer),
            ..KeyRecord::claimed(fingerprint, claim, now)
        }
    }

    /// When this record stops counting: [`IDEMPOTENCY_TTL`] after its answer,
    /// [`IN_FLIGHT_LEASE`] after an unanswered claim.
    pub fn expires_ms(&self) -> u64 {
        let life = if self.answer.is_some() {
            IDEMPOTENCY_TTL
        } else {
            IN_FLIGHT_LEASE
        };
        self.at_ms.saturating_add(life.as_millis() as u64)
    }

    /// Whether the record no longer counts at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        unix_ms(now) >= self.expires_ms()
    }

    /// The record as stored (JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a key record serialises")
    }

    /// A record read back, checked against [`MAX_KEY_RECORD`] and
    /// [`MAX_STORED_ANSWER`].
    ///
    /// # Errors
    ///
    /// [`Error::CorruptState`] naming `what` when it is too large or not a record.
    pub fn from_bytes(bytes: &[u8], what: &dyn fmt::Display) -> Result<Self> {
        if bytes.len() > MAX_KEY_RECORD {
            return Err(Error::corrupt(
                format!("the idempotency record {what}"),
                format!(
                    "it is {} bytes, over the {MAX_KEY_RECORD}-byte limit",
                    bytes.len()
                ),
            ));
        }
        let record: KeyRecord = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(format!("the idempotency record {what}"), e.to_string()))?;
        if record
            .answer
            .as_ref()
            .is_some_and(|a| !StoredAnswer::is_kept(a.status, a.body.len()))
        {
            return Err(Error::corrupt(
                format!("the idempotency record {what}"),
                "its answer is not one that is kept",
            ));
        }
        Ok(record)
    }
}

/// What to do with a request that carries a key, given the record stored under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds the key (or its record expired): claim it and run the request.
    Claim,
    /// The key was claimed by another request (same fingerprint) still running: 409.
    InFlight,
    /// The key was used for another request: 422.
    Mismatch,
    /// The request ran and answered this: send it again.
    Replay(StoredAnswer),
}

/// The decision for a request of `fingerprint` at `now`, given the record under its key.
pub fn decide(
    existing: Option<&KeyRecord>,
    fingerprint: &Fingerprint,
    now: SystemTime,
) -> Decision {
    match existing {
        None => Decision::Claim,
        Some(r) if r.is_expired(now) => Decision::Claim,
        Some(r) if r.fingerprint != *fingerprint => Decision::Mismatch,
        Some(KeyRecord {
            answer: Some(answer),
            ..
        }) => Decision::Replay(answer.clone()),
        Some(_) => Decision::InFlight,
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The error a server answers for a decision that does not run the request: 409 while the
/// key's first request runs, 422 for a key reused with another request. `None` for
/// [`Decision::Claim`] and [`Decision::Replay`].
pub fn refusal(decision: &Decision) -> Option<Error> {
    match decision {
        Decision::InFlight => Some(Error::KeyInFlight {
            retry_after_secs: IN_FLIGHT_RETRY_AFTER_SECS,
        }),
        Decision::Mismatch => Some(Error::KeyReused),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn keys_are_read_quoted_or_bare_and_capped() {
        let long = "k".repeat(MAX_KEY_LEN);
        assert_eq!(
            IdempotencyKey::parse(long.as_bytes()).unwrap().as_str(),
            long
        );
        let quoted = format!("\"{long}\"");
        assert!(IdempotencyKey::parse(quoted.as_bytes()).is_ok());
        let over = "k".repeat(MAX_KEY_LEN + 1);
        let e = IdempotencyKey::parse(over.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("256 characters") && e.contains("255"), "{e}");
        for bad in [
            &b""[..],
            b"\"",
            b"\"a",
            b"\"a\"b",
            b"\"a\\x\"",
            b"a b",
            b"\"\x01\"",
            b"a,b",
        ] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
        let huge = vec![b'k'; 100_000];
        assert!(
            IdempotencyKey::parse(&huge)
                .unwrap_err()
                .to_string()
                .contains("100000 bytes")
        );
    }

    #[test]
    fn header_values_read_back_as_the_same_key() {
        for text in ["plain", "with \"quotes\" and \\", " spaced "] {
            let key = IdempotencyKey(text.to_owned());
            let back = IdempotencyKey::parse(key.to_header_value().as_bytes()).unwrap();
            assert_eq!(back, key);
        }
    }

    #[test]
    fn fingerprints_separate_their_parts() {
        assert_ne!(
            Fingerprint::of(&[b"ab", b"c"]),
            Fingerprint::of(&[b"a", b"bc"])
        );
        assert_eq!(
            Fingerprint::of(&[b"ab", b"c"]),
            Fingerprint::of(&[b"ab", b"c"])
        );
    }

    #[test]
    fn records_expire_after_their_lease_or_ttl() {
        let fp = Fingerprint::of(&[b"x"]);
        let claim = KeyRecord::claimed(fp, "c".into(), at(1000));
        assert_eq!(
            decide(Some(&claim), &fp, at(1000 + 119)),
            Decision::InFlight
        );
        assert_eq!(decide(Some(&claim), &fp, at(1000 + 120)), Decision::Claim);
        let answer = StoredAnswer::new(201, None, "{}".into());
        let done = KeyRecord::answered(fp, "c".into(), answer.clone(), at(1000));
        assert_eq!(
            decide(Some(&done), &fp, at(1000 + 86_399)),
            Decision::Replay(answer)
        );
        assert_eq!(decide(Some(&done), &fp, at(1000 + 86_400)), Decision::Claim);
        // An expired record of another request does not block the key either.
        let other = Fingerprint::of(&[b"y"]);
        assert_eq!(
            decide(Some(&done), &other, at(1000 + 86_400)),
            Decision::Claim
        );
        assert_eq!(decide(Some(&claim), &other, at(1001)), Decision::Mismatch);
    }

    #[test]
    fn records_read_back_or_are_refused() {
        let fp = Fingerprint::of(&[b"x"]);
        let done = KeyRecord::answered(
            fp,
            "c".into(),
            StoredAnswer::new(200, None, "{}".into()),
            at(5),
        );
        assert_eq!(KeyRecord::from_bytes(&done.to_bytes(), &"k").unwrap(), done);
        assert!(KeyRecord::from_bytes(b"{", &"k").is_err());
        let mut big = done.clone();
        big.answer.as_mut().unwrap().body = "x".repeat(MAX_STORED_ANSWER + 1);
        assert!(KeyRecord::from_bytes(&big.to_bytes(), &"k").is_err());
        let mut failed = done;
        failed.answer.as_mut().unwrap().status = 500;
        assert!(KeyRecord::from_bytes(&failed.to_bytes(), &"k").is_err());
        assert!(KeyRecord::from_bytes(&vec![b' '; MAX_KEY_RECORD + 1], &"k").is_err());
    }

    #[test]
    fn record_names_are_fixed_hex_and_scoped() {
        let key = IdempotencyKey::parse(b"k").unwrap();
        let a = RecordKey::new("client-a", &key);
        assert_eq!(RecordKey::parse(a.as_str()), Some(a.clone()));
        assert_ne!(a, RecordKey::new("client-b", &key));
        assert_eq!(RecordKey::parse("../etc"), None);
    }
}
