//! Streaming standard base64 on top of `base64-simd`.
//!
//! [`Encoder`] takes binary slices split anywhere and appends base64 text straight into the
//! caller's buffer (`Vec<u8>` or [`BytesMut`]); it carries 0-2 bytes between calls.
//! [`Decoder`] takes text split anywhere and appends bytes straight into the caller's
//! buffer; it carries 0-3 characters between calls.
//!
//! The decoder is strict: it accepts standard base64, padded or unpadded, and nothing else.
//! URL-safe characters, whitespace, text after padding, misplaced padding and non-zero
//! trailing bits are rejected with [`Error::Base64`], which gives the offset of the first
//! offending character in the whole text, however the text was split.
//!
//! Bulk work goes through `base64-simd` (AVX2/SSSE3/NEON chosen at run time); only the
//! group that straddles two calls is handled on its own. When `base64-simd` rejects a block,
//! a scalar pass over that block finds where and why, so the fast path carries no
//! bookkeeping.

use std::mem::MaybeUninit;

use base64_simd::{Base64, Out, STANDARD, STANDARD_NO_PAD};
use bytes::BytesMut;

use crate::error::{Base64Problem, Error, Result};

mod sealed {
    pub trait Sealed {}
    impl Sealed for Vec<u8> {}
    impl Sealed for bytes::BytesMut {}
}

/// A growable byte buffer the codecs append to: `Vec<u8>` or [`BytesMut`].
///
/// The codecs reserve what they need and write into the spare capacity directly; nothing
/// goes through a temporary buffer or `String`.
pub trait OutputBuffer: sealed::Sealed {
    /// Ensures room for `additional` more bytes and returns the spare capacity.
    ///
    /// Callers may use it to reserve ahead, ignoring the returned slice.
    #[doc(hidden)]
    fn spare(&mut self, additional: usize) -> &mut [MaybeUninit<u8>];

    /// Marks `n` more bytes as written.
    ///
    /// # Safety
    ///
    /// The first `n` bytes of the slice last returned by `spare` must be initialised.
    #[doc(hidden)]
    unsafe fn commit(&mut self, n: usize);

    /// The bytes written so far.
    #[doc(hidden)]
    fn filled(&self) -> &[u8];
}

impl OutputBuffer for Vec<u8> {
    #[inline]
    fn spare(&mut self, additional: usize) -> &mut [MaybeUninit<u8>] {
        self.reserve(additional);
        self.spare_capacity_mut()
    }

    #[inline]
    unsafe fn commit(&mut self, n: usize) {
        let len = self.len() + n;
        debug_assert!(len <= self.capacity());
        // SAFETY: the caller initialised `n` bytes of spare capacity.
        unsafe { self.set_len(len) }
    }

    #[inline]
    fn filled(&self) -> &[u8] {
        self
    }
}

impl OutputBuffer for BytesMut {
    #[inline]
    fn spare(&mut self, additional: usize) -> &mut [MaybeUninit<u8>] {
        self.reserve(additional);
        self.spare_capacity_mut()
    }

    #[inline]
    unsafe fn commit(&mut self, n: usize) {
        let len = self.len() + n;
        debug_assert!(len <= self.capacity());
        // SAFETY: the caller initialised `n` bytes of spare capacity.
        unsafe { self.set_len(len) }
    }

    #[inline]
    fn filled(&self) -> &[u8] {
        self
    }
}

/// Length of the padded base64 text for `n` bytes.
///
/// # Examples
///
/// ```
/// assert_eq!(attachments::codec::base64::encoded_len(35), 48);
/// assert_eq!(attachments::codec::base64::encoded_len(1_048_575), 1_398_100);
/// ```
pub const fn encoded_len(n: usize) -> usize {
    // Saturating: a length from a peer's claim (a range of a huge file) is not a panic.
    n.div_ceil(3).saturating_mul(4)
}

/// Length of the unpadded base64 text for `n` bytes.
pub const fn encoded_len_unpadded(n: usize) -> usize {
    n / 3 * 4 + [0, 2, 3][n % 3]
}

/// Number of bytes a *valid* base64 text of this content decodes to, computed from its
/// length and trailing padding without decoding it.
///
/// This lets a server compare a declared size with the content before reserving memory.
/// For invalid text the number is meaningless, and decoding reports the error.
///
/// # Examples
///
/// ```
/// use attachments::codec::base64::decoded_len;
/// assert_eq!(decoded_len(b"iVBORw0KGgoAAAANSUhEUgAAADAAAABAgMAAADW0NTUAAAA"), 35);
/// assert_eq!(decoded_len(b"QUI="), 2);
/// ```
pub fn decoded_len(text: &[u8]) -> usize {
    let pads = text
        .iter()
        .rev()
        .take(2)
        .take_while(|&&c| c == b'=')
        .count();
    let n = text.len()
        - if text.len().is_multiple_of(4) {
            pads
        } else {
            0
        };
    n / 4 * 3 + [0, 0, 1, 2][n % 4]
}

#[inline]
fn encode_into<B: OutputBuffer>(cfg: &Base64, src: &[u8], out: &mut B) -> usize {
    let n = cfg.encoded_length(src.len());
    let spare = out.spare(n);
    let written = cfg
        .encode(src, Out::from_uninit_slice(&mut spare[..n]))
        .len();
    debug_assert_eq!(written, n);
    // SAFETY: `encode` initialised exactly `written` bytes at the start of the spare slice.
    unsafe { out.commit(written) };
    written
}

fn decode_into<B: OutputBuffer>(
    cfg: &Base64,
    src: &[u8],
    out: &mut B,
) -> Result<usize, base64_simd::Error> {
    let n = cfg.estimated_decoded_length(src.len());
    let spare = out.spare(n);
    let written = cfg
        .decode(src, Out::from_uninit_slice(&mut spare[..n]))?
        .len();
    // SAFETY: on success `decode` initialised `written` bytes at the start of the spare slice.
    unsafe { out.commit(written) };
    Ok(written)
}

/// Streaming base64 encoder (standard alphabet).
///
/// Feed it slices with [`Encoder::encode`]; end with [`Encoder::finish`], which writes the
/// last group (padded unless built with [`Encoder::unpadded`]) and readies the encoder for
/// a new text. The output is the same whatever the split.
///
/// # Examples
///
/// ```
/// use attachments::codec::base64::Encoder;
/// use bytes::BytesMut;
///
/// let mut body = BytesMut::from(&b"{\"file_content\":\""[..]);
/// let mut enc = Encoder::new();
/// enc.encode(b"he", &mut body);
/// enc.encode(b"llo", &mut body);
/// enc.finish(&mut body);
/// body.extend_from_slice(b"\"}");
/// assert_eq!(&body[..], b"{\"file_content\":\"aGVsbG8=\"}");
/// ```
#[derive(Debug, Clone)]
pub struct Encoder {
    carry: [u8; 2],
    carry_len: u8,
    padded: bool,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    /// An encoder that pads the final group with `=`.
    pub const fn new() -> Self {
        Encoder {
            carry: [0; 2],
            carry_len: 0,
            padded: true,
        }
    }

    /// An encoder that writes no padding.
    pub const fn unpadded() -> Self {
        Encoder {
            carry: [0; 2],
            carry_len: 0,
            padded: false,
        }
    }

    /// Bytes held back until the next call completes their group (0-2).
    pub fn pending(&self) -> usize {
        usize::from(self.carry_len)
    }

    /// Encodes `input`, appending complete groups to `out`. Returns the number of base64
    /// characters written.
    pub fn encode<B: OutputBuffer>(&mut self, mut input: &[u8], out: &mut B) -> usize {
        let mut written = 0;
        let held = usize::from(self.carry_len);
        if held > 0 {
            let need = 3 - held;
            if input.len() < need {
                self.carry[held..held + input.len()].copy_from_slice(input);
                self.carry_len += input.len() as u8;
                return 0;
            }
            let mut group = [0u8; 3];
            group[..held].copy_from_slice(&self.carry[..held]);
            group[held..].copy_from_slice(&input[..need]);
            written += encode_into(&STANDARD, &group, out);
            input = &input[need..];
            self.carry_len = 0;
        }
        let whole = input.len() / 3 * 3;
        if whole > 0 {
            // A multiple of 3 bytes encodes without padding in either configuration.
            written += encode_into(&STANDARD, &input[..whole], out);
        }
        let rest = &input[whole..];
        self.carry[..rest.len()].copy_from_slice(rest);
        self.carry_len = rest.len() as u8;
        written
    }

    /// Writes the held bytes as the final group and resets the encoder. Returns the number
    /// of characters written (0-4).
    pub fn finish<B: OutputBuffer>(&mut self, out: &mut B) -> usize {
        let held = usize::from(std::mem::take(&mut self.carry_len));
        if held == 0 {
            return 0;
        }
        let cfg = if self.padded {
            &STANDARD
        } else {
            &STANDARD_NO_PAD
        };
        encode_into(cfg, &self.carry[..held], out)
    }
}

/// Streaming strict base64 decoder (standard alphabet, padded or unpadded).
///
/// Feed it text with [`Decoder::decode`]; end with [`Decoder::finish`], which decodes an
/// unpadded final group and readies the decoder for a new text. After an error, every call
/// answers [`Error::AlreadyFailed`] until [`Decoder::reset`].
///
/// The decoder appends at most `3 * ceil(len / 4)` bytes per call, so a caller that bounds
/// the text it feeds bounds the memory reserved.
///
/// # Examples
///
/// ```
/// use attachments::codec::base64::Decoder;
/// use attachments::{Error, error::Base64Problem};
///
/// let mut out = Vec::new();
/// let mut dec = Decoder::new();
/// dec.decode(b"aGVs", &mut out).unwrap();
/// dec.decode(b"bG8", &mut out).unwrap(); // unpadded end
/// dec.finish(&mut out).unwrap();
/// assert_eq!(out, b"hello");
///
/// let mut dec = Decoder::new();
/// let err = dec.decode(b"aGVs-G8=", &mut out).unwrap_err();
/// assert_eq!(err, Error::Base64 { offset: 4, problem: Base64Problem::InvalidByte(b'-') });
/// ```
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    carry: [u8; 4],
    carry_len: u8,
    /// Characters fed so far (carried ones included).
    offset: u64,
    /// A padded group has ended the text.
    padded: bool,
    failed: Option<Box<Error>>,
}

impl Decoder {
    /// A decoder at the start of a text.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets all state, including a failure, to decode a new text.
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Characters fed so far.
    pub fn position(&self) -> u64 {
        self.offset
    }

    /// Characters held back until the next call completes their group (0-3).
    pub fn pending(&self) -> usize {
        usize::from(self.carry_len)
    }

    /// Decodes `text`, appending the bytes of every complete group to `out`. Returns the
    /// number of bytes written.
    ///
    /// # Errors
    ///
    /// [`Error::Base64`] with the offset (in the whole text) of the first bad character;
    /// [`Error::AlreadyFailed`] after an earlier error.
    pub fn decode<B: OutputBuffer>(&mut self, text: &[u8], out: &mut B) -> Result<usize> {
        self.check_alive()?;
        let base = self.offset;
        let result = self.decode_inner(text, base, out);
        self.offset += text.len() as u64;
        self.record(result)
    }

    /// Ends the text: decodes a final unpadded group of 2 or 3 characters, then resets the
    /// decoder. Returns the number of bytes written (0-2).
    ///
    /// # Errors
    ///
    /// [`Error::Base64`] when the text ends in the middle of a group that cannot be
    /// decoded (a lone character, incomplete padding, non-zero trailing bits).
    pub fn finish<B: OutputBuffer>(&mut self, out: &mut B) -> Result<usize> {
        self.check_alive()?;
        let held = usize::from(self.carry_len);
        let start = self.offset - held as u64;
        let result = match held {
            0 => Ok(0),
            _ => {
                let group = self.carry;
                decode_into(&STANDARD_NO_PAD, &group[..held], out)
                    .map_err(|_| diagnose(&group[..held], start))
            }
        };
        let result = self.record(result);
        if result.is_ok() {
            self.reset();
        }
        result
    }

    /// Decodes `text` like [`Decoder::decode`], handing the bytes to `each` as they are
    /// written: in pieces of `step / 4 * 3` bytes for the bulk of the text, plus short
    /// pieces where a group straddles calls and for the text's last group. Returns the
    /// number of bytes written.
    ///
    /// This is for fusing another pass with decoding (hashing each piece while it is in L1
    /// cache): the bulk goes to `base64-simd` one step at a time, with none of the
    /// bookkeeping of separate `decode` calls.
    ///
    /// # Errors
    ///
    /// As [`Decoder::decode`], and the first error of `each`, after which decoding stops:
    /// the rest of `text` is not decoded, and the decoder stands after the piece it handed
    /// over.
    ///
    /// # Panics
    ///
    /// If `step` is not a positive multiple of 4.
    ///
    /// # Examples
    ///
    /// ```
    /// use attachments::codec::base64::Decoder;
    ///
    /// let (mut dec, mut out, mut pieces) = (Decoder::new(), Vec::new(), Vec::new());
    /// dec.decode_each(b"aGVsbG8gd29ybGQ=", &mut out, 8, |piece| {
    ///     pieces.push(piece.to_vec());
    ///     Ok(())
    /// })?;
    /// dec.finish(&mut out)?;
    /// assert_eq!(out, b"hello world");
    /// assert_eq!(pieces.concat(), b"hello world");
    /// # Ok::<(), attachments::Error>(())
    /// ```
    pub fn decode_each<B, F>(
        &mut self,
        text: &[u8],
        out: &mut B,
        step: usize,
        mut each: F,
    ) -> Result<usize>
    where
        B: OutputBuffer,
        F: FnMut(&[u8]) -> Result<()>,
    {
        assert!(
            step > 0 && step.is_multiple_of(4),
            "step must be a positive multiple of 4"
        );
        self.check_alive()?;
        let start = out.filled().len();
        let general = |dec: &mut Self, piece: &[u8], out: &mut B, each: &mut F| -> Result<()> {
            let at = out.filled().len();
            dec.decode(piece, out)?;
            if out.filled().len() > at {
                each(&out.filled()[at..])?;
            }
            Ok(())
        };
        // Complete a group carried from an earlier call.
        let lead = match usize::from(self.carry_len) {
            0 => 0,
            held => (4 - held).min(text.len()),
        };
        let (lead, rest) = text.split_at(lead);
        if !lead.is_empty() {
            general(self, lead, out, &mut each)?;
        }
        // Whole groups, the text's last one excepted: it may hold padding or be short, and
        // goes through the general path with what remains.
        let bulk = rest.len().saturating_sub(1) / 4 * 4;
        let (bulk, tail) = rest.split_at(bulk);
        out.spare(bulk.len() / 4 * 3);
        for piece in bulk.chunks(step) {
            let pos = self.offset;
            let at = out.filled().len();
            let decoded = if self.padded {
                Err(Error::Base64 {
                    offset: pos,
                    problem: Base64Problem::DataAfterPadding,
                })
            } else {
                self.decode_groups(piece, pos, out)
            };
            if let Err(e) = decoded {
                return self.record(Err(e));
            }
            self.offset += piece.len() as u64;
            each(&out.filled()[at..])?;
        }
        if !tail.is_empty() {
            general(self, tail, out, &mut each)?;
        }
        Ok(out.filled().len() - start)
    }

    fn check_alive(&self) -> Result<()> {
        match &self.failed {
            Some(first) => Err(Error::AlreadyFailed {
                first: first.clone(),
            }),
            None => Ok(()),
        }
    }

    fn record(&mut self, result: Result<usize>) -> Result<usize> {
        if let Err(e) = &result {
            self.failed = Some(Box::new(e.clone()));
        }
        result
    }

    fn decode_inner<B: OutputBuffer>(
        &mut self,
        mut text: &[u8],
        mut pos: u64,
        out: &mut B,
    ) -> Result<usize> {
        if text.is_empty() {
            return Ok(0);
        }
        let after_padding = |offset| Error::Base64 {
            offset,
            problem: Base64Problem::DataAfterPadding,
        };
        if self.padded {
            return Err(after_padding(pos));
        }
        let mut written = 0;
        let held = usize::from(self.carry_len);
        if held > 0 {
            let need = 4 - held;
            if text.len() < need {
                self.carry[held..held + text.len()].copy_from_slice(text);
                self.carry_len += text.len() as u8;
                return Ok(0);
            }
            let mut group = self.carry;
            group[held..].copy_from_slice(&text[..need]);
            self.carry_len = 0;
            written += self.decode_groups(&group, pos - held as u64, out)?;
            text = &text[need..];
            pos += need as u64;
            if self.padded && !text.is_empty() {
                return Err(after_padding(pos));
            }
        }
        let whole = text.len() / 4 * 4;
        if whole > 0 {
            written += self.decode_groups(&text[..whole], pos, out)?;
            pos += whole as u64;
            if self.padded && whole < text.len() {
                return Err(after_padding(pos));
            }
        }
        let rest = &text[whole..];
        self.carry[..rest.len()].copy_from_slice(rest);
        self.carry_len = rest.len() as u8;
        Ok(written)
    }

    /// Decodes complete groups (`text.len() % 4 == 0`) starting at offset `start`.
    fn decode_groups<B: OutputBuffer>(
        &mut self,
        text: &[u8],
        start: u64,
        out: &mut B,
    ) -> Result<usize> {
        let n = decode_into(&STANDARD, text, out).map_err(|_| diagnose(text, start))?;
        self.padded = text.last() == Some(&b'=');
        Ok(n)
    }
}

/// Value of a standard-alphabet character, or `None`.
fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Finds the first error in `text`, which `base64-simd` rejected. `text` starts on a group
/// boundary at offset `start`; a short last group is the end of the whole text.
///
/// The verdict on a group depends only on the group itself and on whether text follows it,
/// so a text split anywhere gets the same answer as the text fed whole. Trailing bits are
/// judged before "data after padding" for that reason: the streaming decoder checks a padded
/// group before it sees what follows.
fn diagnose(text: &[u8], start: u64) -> Error {
    let err = |at: usize, problem| Error::Base64 {
        offset: start + at as u64,
        problem,
    };
    for (g, group) in text.chunks(4).enumerate() {
        let at = g * 4;
        let mut pad_at = None;
        for (i, &c) in group.iter().enumerate() {
            if c == b'=' {
                pad_at.get_or_insert(i);
            } else if let Some(p) = pad_at {
                return err(at + p, Base64Problem::MisplacedPadding);
            } else if sextet(c).is_none() {
                return err(at + i, Base64Problem::InvalidByte(c));
            }
        }
        let data = pad_at.unwrap_or(group.len());
        match data {
            0 | 1 if pad_at.is_some() => return err(at + data, Base64Problem::MisplacedPadding),
            1 => return err(at, Base64Problem::Truncated),
            _ => {}
        }
        if pad_at.is_some() && group.len() < 4 {
            // "QQ=" at the end of the text: the padding does not complete the group.
            return err(at + data, Base64Problem::MisplacedPadding);
        }
        // Unused low bits of the last data character must be zero in a short group.
        let mask = match data {
            2 => 0x0f,
            3 => 0x03,
            _ => 0,
        };
        if mask != 0 && sextet(group[data - 1]).unwrap_or(0) & mask != 0 {
            return err(at + data - 1, Base64Problem::NonZeroTrailingBits);
        }
        if pad_at.is_some() && at + 4 < text.len() {
            return err(at + 4, Base64Problem::DataAfterPadding);
        }
    }
    // base64-simd rejected what this pass accepts: report the block rather than hide it.
    debug_assert!(
        false,
        "diagnose found no error in text base64-simd rejected"
    );
    err(
        0,
        Base64Problem::InvalidByte(text.first().copied().unwrap_or(0)),
    )
}

/// Encodes `input` as padded standard base64, appending to `out`. Returns the number of
/// characters written.
///
/// # Examples
///
/// ```
/// let mut body = b"\"".to_vec();
/// attachments::codec::base64::encode_to(b"hi", &mut body);
/// assert_eq!(body, b"\"aGk=");
/// ```
pub fn encode_to<B: OutputBuffer>(input: &[u8], out: &mut B) -> usize {
    encode_into(&STANDARD, input, out)
}

/// Encodes `input` as unpadded standard base64, appending to `out`.
pub fn encode_unpadded_to<B: OutputBuffer>(input: &[u8], out: &mut B) -> usize {
    encode_into(&STANDARD_NO_PAD, input, out)
}

/// Decodes a whole padded or unpadded standard base64 text, appending to `out`. Returns the
/// number of bytes written. On error, `out` may hold the bytes of the groups before the
/// error.
///
/// # Errors
///
/// [`Error::Base64`] with the offset of the first bad character.
///
/// # Examples
///
/// ```
/// let mut out = Vec::new();
/// attachments::codec::base64::decode_to(b"aGk", &mut out).unwrap();
/// assert_eq!(out, b"hi");
/// assert!(attachments::codec::base64::decode_to(b"aGk_", &mut out).is_err());
/// ```
pub fn decode_to<B: OutputBuffer>(text: &[u8], out: &mut B) -> Result<usize> {
    let mut dec = Decoder::new();
    let n = dec.decode(text, out)?;
    Ok(n + dec.finish(out)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(text: &[u8]) -> (u64, Base64Problem) {
        match decode_to(text, &mut Vec::new()) {
            Err(Error::Base64 { offset, problem }) => (offset, problem),
            other => panic!("expected a base64 error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn each_problem_is_named_at_its_offset() {
        use Base64Problem::*;
        assert_eq!(problem(b"QUJD-A=="), (4, InvalidByte(b'-')));
        assert_eq!(problem(b"QUJD QUJD"), (4, InvalidByte(b' ')));
        assert_eq!(problem(b"QQ==QUJD"), (4, DataAfterPadding));
        assert_eq!(problem(b"QR=="), (1, NonZeroTrailingBits));
        assert_eq!(problem(b"QUJ="), (2, NonZeroTrailingBits));
        assert_eq!(problem(b"QR"), (1, NonZeroTrailingBits));
        assert_eq!(problem(b"QUJDQ"), (4, Truncated));
        assert_eq!(problem(b"Q==="), (1, MisplacedPadding));
        assert_eq!(problem(b"=AAA"), (0, MisplacedPadding));
        assert_eq!(problem(b"QQ=A"), (2, MisplacedPadding));
        assert_eq!(problem(b"QQ="), (2, MisplacedPadding));
    }

    #[test]
    fn decoded_len_matches_decoding() {
        for n in 0..20usize {
            let data: Vec<u8> = (0..n as u8).collect();
            let mut text = Vec::new();
            encode_to(&data, &mut text);
            assert_eq!(decoded_len(&text), n);
            let mut bare = Vec::new();
            encode_unpadded_to(&data, &mut bare);
            assert_eq!(decoded_len(&bare), n);
            assert_eq!(bare.len(), encoded_len_unpadded(n));
            assert_eq!(text.len(), encoded_len(n));
        }
    }
}
