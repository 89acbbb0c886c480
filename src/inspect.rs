//! The one-pass [`Inspector`]: sniffing, counting, hashing and validation over the same
//! slices, in one pass, with memory bounded by the sniff window.

use std::fmt;

use crate::codec::base64::{Decoder, Encoder, OutputBuffer, encoded_len};
use crate::digest::{Sha256, Sha256Digest};
use crate::error::{Error, Result, SizeLimit};
use crate::image::ValidatorState;
use crate::policy::Policy;
use crate::sniff::{MediaType, SNIFF_LEN, Sniffer};
use serde::{Deserialize, Serialize};

/// Bytes per step of [`Inspector::update_encode`]: three SHA-256 blocks, the smallest
/// multiple of both the 64-byte block and the 3-byte base64 group. Measured best among
/// 192, 384, 576, 1152 and 64 KiB steps (smaller steps overlap the two better; steps that
/// are not such a multiple pay for carries).
pub(crate) const FUSED_STEP: usize = 192;

/// Characters of base64 text per step of [`Inspector::update_decode`]: they decode to one
/// [`FUSED_STEP`].
const DECODE_STEP: usize = FUSED_STEP / 3 * 4;

/// Steps decoded and hashed before the validator sees them, in one call.
const DECODE_BLOCK_STEPS: usize = 16;

/// A structural checker fed the content slice by slice.
///
/// Implementations must give the same verdict whatever the slice boundaries (one byte at
/// a time included), must never panic on any input, and must check every length read from
/// the input against a limit before reserving memory for it. After an error the Inspector
/// stops feeding the validator.
pub trait Validator: Send {
    /// Checks the next slice of content.
    ///
    /// # Errors
    ///
    /// The first structural problem found.
    fn update(&mut self, data: &[u8]) -> Result<()>;

    /// Ends the content and returns what the validator learnt about it.
    ///
    /// # Errors
    ///
    /// A problem that only the end reveals (truncation, a missing trailer).
    fn finish(&mut self) -> Result<ContentInfo>;

    /// Width and height as soon as the header gave them, even if the file fails later.
    fn dimensions(&self) -> Option<(u32, u32)> {
        None
    }

    /// Saves the validator's progress, to continue in another process with
    /// [`ValidatorState::restore`] (what [`Inspector::save`] needs). `None`, the default,
    /// when the validator cannot be saved: the crate's validators all can.
    fn save(&self) -> Option<ValidatorState> {
        None
    }
}

/// Whether [`Inspector::admit`] left the slice for the validator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Validate {
    /// The type was known before this slice: validate it.
    Slice,
    /// Already validated (the slice decided the type), or the type is not decided yet.
    Done,
}

/// What a validator learnt about the content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ContentInfo {
    /// Image dimensions (width, height) when the validator read them.
    pub dimensions: Option<(u32, u32)>,
}

/// A validator that accepts everything: for types with no structural check.
#[derive(Debug, Clone, Copy, Default)]
pub struct AcceptAll;

impl Validator for AcceptAll {
    fn update(&mut self, _data: &[u8]) -> Result<()> {
        Ok(())
    }

    fn finish(&mut self) -> Result<ContentInfo> {
        Ok(ContentInfo::default())
    }

    fn save(&self) -> Option<ValidatorState> {
        Some(ValidatorState::any())
    }
}

/// An [`Inspector`]'s progress through a file, from [`Inspector::save`]; serialises with
/// serde (JSON: about 300 bytes plus the validator's few kept header bytes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InspectorState {
    declared_type: String,
    declared_size: Option<u64>,
    count: u64,
    /// Hex of the bytes held while the type is undecided.
    window: String,
    /// Whether the sniffer has decided (then `detected` is its verdict).
    decided: bool,
    detected: Option<String>,
    /// Hex of the SHA-256 state ([`Sha256::state`]).
    sha256: String,
    validator: ValidatorState,
    /// Whether the validator is still to be picked by the sniffed type (a file declared as
    /// `application/octet-stream`, undecided). Written for readers of the state; a restore
    /// derives it from the declaration, as [`Inspector::new`] does.
    #[serde(default)]
    pick_validator: bool,
}

/// The verdict of an [`Inspector`] on a complete file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Inspection {
    /// The content's type: the declared one, normalised, which the content matches (or the
    /// recognised one when `application/octet-stream` was declared).
    pub media_type: MediaType,
    /// The type recognised from the content, if any.
    pub detected: Option<MediaType>,
    /// Number of bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: Sha256Digest,
    /// What the validator learnt.
    pub info: ContentInfo,
}

/// One pass over a file's bytes: checks the declared type against the content, counts the
/// bytes against the declared size and the policy's limit, hashes them, and drives a
/// [`Validator`].
///
/// Feed it slices split anywhere; the verdict, size and digest do not depend on the split.
/// Once it has failed, every later call answers [`Error::AlreadyFailed`].
///
/// # Examples
///
/// ```
/// use attachments::{Inspector, Policy, MediaType, Error};
///
/// // A complete 1 x 1 greyscale PNG.
/// let png: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\0\0\0\0\x3a\x7e\x9b\x55\0\0\0\nIDAT\x78\xda\x63\x68\0\0\0\x82\0\x81\xda\x45\x08\x3b\0\0\0\0IEND\xaeB`\x82";
/// let mut insp = Inspector::new(&Policy::demand(), "image/png", Some(png.len() as u64))?;
/// insp.update(&png[..5])?;
/// insp.update(&png[5..])?;
/// let seen = insp.finish()?;
/// assert_eq!(seen.media_type, MediaType::PNG);
/// assert_eq!(seen.size, 67);
/// assert_eq!(seen.info.dimensions, Some((1, 1)));
///
/// // The documented size-mismatch example, 35 bytes declared as 350 (`docs/protocol.md`,
/// // *Error texts and statuses*).
/// let mut insp = Inspector::new(&Policy::demand(), "image/png", Some(350))?;
/// insp.update(&[0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'])?;
/// insp.update(&[0; 27])?;
/// assert_eq!(
///     insp.finish().unwrap_err().to_string(),
///     "Content length is 35 but metadata size is 350"
/// );
/// # Ok::<(), Error>(())
/// ```
pub struct Inspector {
    policy: Policy,
    declared_type: MediaType,
    declared_size: Option<u64>,
    max_size: u64,
    limit_kind: SizeLimit,
    count: u64,
    sniffer: Sniffer,
    hasher: Sha256,
    validator: Box<dyn Validator>,
    /// Declared as "no particular type" with the policy's own validator: once the sniffer
    /// recognises the content, the validator for that type takes over, so a PNG sent as
    /// `application/octet-stream` is checked as a PNG.
    pick_validator: bool,
    failed: Option<Box<Error>>,
}

impl fmt::Debug for Inspector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inspector")
            .field("declared_type", &self.declared_type)
            .field("declared_size", &self.declared_size)
            .field("max_size", &self.max_size)
            .field("count", &self.count)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Inspector {
    /// Starts inspecting a file declared as `file_type` (and `file_size` bytes, when known),
    /// with the validator the policy picks for the type
    /// ([`image::validator_for`](crate::image::validator_for)): structural PNG or JPEG
    /// checks for images.
    ///
    /// # Errors
    ///
    /// Checks what the declaration alone can tell: [`Error::InvalidType`],
    /// [`Error::UnsupportedType`], and [`Error::TooLarge`] for a declared size over the
    /// policy's largest file.
    pub fn new(policy: &Policy, file_type: &str, file_size: Option<u64>) -> Result<Self> {
        let declared = policy.check_type(file_type)?;
        let validator = crate::image::validator_for(policy, &declared);
        let mut insp = Self::with_validator(policy, file_type, file_size, validator)?;
        insp.pick_validator = declared == MediaType::OCTET_STREAM;
        Ok(insp)
    }

    /// Like [`Inspector::new`], with a validator of the caller's choosing.
    ///
    /// # Errors
    ///
    /// As [`Inspector::new`].
    pub fn with_validator(
        policy: &Policy,
        file_type: &str,
        file_size: Option<u64>,
        validator: Box<dyn Validator>,
    ) -> Result<Self> {
        let declared_type = policy.check_type(file_type)?;
        let (max_size, limit_kind) = match policy.limits.max_chunked_size {
            Some(max) if max > policy.limits.max_single_size => (max, SizeLimit::Chunked),
            _ => (policy.limits.max_single_size, SizeLimit::Single),
        };
        if let Some(size) = file_size
            && size > max_size
        {
            return Err(Error::TooLarge {
                size,
                limit: max_size,
                kind: limit_kind,
            });
        }
        Ok(Inspector {
            policy: policy.clone(),
            declared_type,
            declared_size: file_size,
            max_size,
            limit_kind,
            count: 0,
            sniffer: Sniffer::new(),
            hasher: Sha256::new(),
            validator,
            pick_validator: false,
            failed: None,
        })
    }

    /// The declared type, normalised.
    pub fn declared_type(&self) -> &MediaType {
        &self.declared_type
    }

    /// The declared size, if one was.
    pub(crate) fn declared_size(&self) -> Option<u64> {
        self.declared_size
    }

    /// Bytes fed so far.
    pub fn bytes_seen(&self) -> u64 {
        self.count
    }

    /// The type recognised from the content, once the sniff window is full (or after
    /// [`Inspector::finish`] for shorter files); `None` while undecided or unrecognised.
    pub fn detected_type(&self) -> Option<&MediaType> {
        self.sniffer.verdict().flatten()
    }

    /// Image width and height as soon as the validator has read them, even if the file
    /// fails later (for reporting what a rejected file claimed to be).
    pub fn dimensions(&self) -> Option<(u32, u32)> {
        self.validator.dimensions()
    }

    /// Feeds the next slice of content.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] as soon as the content passes the policy's limit;
    /// [`Error::TypeMismatch`] / [`Error::UnrecognizedContent`] once the sniff window is
    /// full; any error of the validator; [`Error::AlreadyFailed`] after an earlier error.
    pub fn update(&mut self, data: &[u8]) -> Result<()> {
        self.check_alive()?;
        let result = self.update_inner(data);
        if let Err(e) = &result {
            self.failed = Some(Box::new(e.clone()));
        }
        result
    }

    fn update_inner(&mut self, data: &[u8]) -> Result<()> {
        if self.admit(data)? == Validate::Slice {
            self.validator.update(data)?;
        }
        self.hasher.update(data);
        Ok(())
    }

    /// Feeds the next slice like [`Inspector::update`] and appends its base64 to `out`
    /// through `encoder`, in one pass.
    ///
    /// The slice is counted, sniffed and validated first, so a rejected slice adds nothing
    /// to `out` (except within the first [`SNIFF_LEN`] bytes of the file, which the
    /// validator checks once the sniffer has decided the type). Hashing and encoding are then interleaved in 192-byte steps
    /// aligned to the start of the file: the hasher always takes whole blocks, each step is
    /// encoded while it is in L1 cache, and the SIMD encoding overlaps the latency-bound
    /// SHA-256 rounds. Measured with `benches/pipeline.rs` on a SHA-NI machine: ~0.90x the
    /// throughput of SHA-256 alone on 10 MiB, against ~0.85x for hashing and then encoding
    /// each 64 KiB slice.
    ///
    /// # Errors
    ///
    /// As [`Inspector::update`].
    ///
    /// # Examples
    ///
    /// ```
    /// use attachments::{codec::base64::Encoder, Inspector, Policy};
    ///
    /// let file = b"\x89PNG\r\n\x1a\n and the rest of the image";
    /// let mut insp = Inspector::new(&Policy::demand(), "image/png", None)?;
    /// let (mut enc, mut body) = (Encoder::new(), Vec::new());
    /// for slice in file.chunks(10) {
    ///     insp.update_encode(slice, &mut enc, &mut body)?;
    /// }
    /// enc.finish(&mut body);
    /// let mut expected = Vec::new();
    /// attachments::codec::base64::encode_to(file, &mut expected);
    /// assert_eq!(body, expected);
    /// # Ok::<(), attachments::Error>(())
    /// ```
    pub fn update_encode<B: OutputBuffer>(
        &mut self,
        data: &[u8],
        encoder: &mut Encoder,
        out: &mut B,
    ) -> Result<()> {
        self.check_alive()?;
        let result = self.update_encode_inner(data, encoder, out);
        if let Err(e) = &result {
            self.failed = Some(Box::new(e.clone()));
        }
        result
    }

    fn update_encode_inner<B: OutputBuffer>(
        &mut self,
        data: &[u8],
        encoder: &mut Encoder,
        out: &mut B,
    ) -> Result<()> {
        // Validated whole, before any of it is encoded: crc32fast and the JPEG scan run
        // fastest on long slices, and interleaving them with the steps measured no gain.
        if self.admit(data)? == Validate::Slice {
            self.validator.update(data)?;
        }
        // One reservation for the whole slice; the steps then write into spare capacity.
        out.spare(encoded_len(data.len() + encoder.pending()));
        // Steps end on multiples of FUSED_STEP counted from the start of the file, so the
        // hasher always takes whole blocks (no copy through its block buffer) and an encoder
        // started with the file never carries bytes between steps.
        let offset = (self.count - data.len() as u64) % FUSED_STEP as u64;
        let head = ((FUSED_STEP - offset as usize) % FUSED_STEP).min(data.len());
        let (head, rest) = data.split_at(head);
        let hasher = &mut self.hasher;
        let mut step = |s: &[u8]| {
            hasher.update(s);
            encoder.encode(s, out);
        };
        step(head);
        let mut steps = rest.chunks_exact(FUSED_STEP);
        for s in &mut steps {
            step(s);
        }
        step(steps.remainder());
        Ok(())
    }

    /// Decodes the next piece of the file's base64 text into `out` through `decoder`, and
    /// inspects the bytes (like [`Inspector::update`]) in the same pass. Returns the number
    /// of bytes appended to `out`.
    ///
    /// The text may be split anywhere (the decoder carries partial groups); the verdict,
    /// size and digest are those of the decoded bytes. Decoding and hashing are interleaved
    /// in 192-byte steps aligned to the start of the file, so each step is hashed
    /// while it is in L1 cache and the SIMD decoding overlaps the latency-bound SHA-256
    /// rounds; the validator takes the decoded bytes every 3 KiB. Measured with
    /// `benches/pipeline.rs` (`sessions_receive`, 10 MiB JPEG): ~4% faster than decoding 16 KiB
    /// of text and then inspecting it; validating every step instead of every 3 KiB, or
    /// decoding longer steps, measured slower.
    ///
    /// At the end of the text, [`Decoder::finish`] writes the last 0-2 bytes: pass them to
    /// [`Inspector::update`] before [`Inspector::finish`] (as the example does). On an
    /// error, `out` may hold bytes of the failed piece: discard it.
    ///
    /// # Errors
    ///
    /// [`Error::Base64`] from the decoder, and as [`Inspector::update`].
    ///
    /// # Examples
    ///
    /// ```
    /// use attachments::{codec::base64::Decoder, Inspector, Policy};
    ///
    /// let mut insp = Inspector::new(&Policy::chat(), "text/plain", Some(11))?;
    /// let (mut dec, mut file) = (Decoder::new(), Vec::new());
    /// for piece in [&b"aGVsbG8gd2"[..], b"9ybGQ="] {
    ///     insp.update_decode(piece, &mut dec, &mut file)?;
    /// }
    /// dec.finish(&mut file)?;
    /// assert_eq!(file, b"hello world");
    /// assert_eq!(insp.finish()?.sha256, attachments::digest::sha256(b"hello world"));
    /// # Ok::<(), attachments::Error>(())
    /// ```
    pub fn update_decode<B: OutputBuffer>(
        &mut self,
        text: &[u8],
        decoder: &mut Decoder,
        out: &mut B,
    ) -> Result<usize> {
        self.check_alive()?;
        let result = self.update_decode_inner(text, decoder, out);
        if let Err(e) = &result {
            self.failed = Some(Box::new(e.clone()));
        }
        result
    }

    fn update_decode_inner<B: OutputBuffer>(
        &mut self,
        text: &[u8],
        decoder: &mut Decoder,
        out: &mut B,
    ) -> Result<usize> {
        let start = out.filled().len();
        // One reservation for the whole piece.
        out.spare((text.len() + decoder.pending()) / 4 * 3);
        // When this piece starts on a group boundary, a first short step brings the file
        // to a multiple of FUSED_STEP, so every later step hands the hasher whole blocks.
        let at = (self.count % FUSED_STEP as u64) as usize;
        let head = if decoder.pending() == 0 && at.is_multiple_of(3) {
            ((FUSED_STEP - at) % FUSED_STEP / 3 * 4).min(text.len())
        } else {
            0
        };
        let (head, rest) = text.split_at(head);
        self.decode_block(head, decoder, out)?;
        for block in rest.chunks(DECODE_STEP * DECODE_BLOCK_STEPS) {
            self.decode_block(block, decoder, out)?;
        }
        Ok(out.filled().len() - start)
    }

    /// Decodes and hashes `text` step by step, then counts, sniffs and validates its bytes.
    fn decode_block<B: OutputBuffer>(
        &mut self,
        text: &[u8],
        decoder: &mut Decoder,
        out: &mut B,
    ) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let from = out.filled().len();
        let hasher = &mut self.hasher;
        decoder.decode_each(text, out, DECODE_STEP, |piece| {
            hasher.update(piece);
            Ok(())
        })?;
        let block = &out.filled()[from..];
        if self.admit(block)? == Validate::Slice {
            self.validator.update(block)?;
        }
        Ok(())
    }

    /// Counts the slice against the limit and feeds the sniffer; when this slice decides
    /// the type, replays the sniff window and the slice to the validator. Says whether the
    /// slice still has to go to the validator.
    ///
    /// The validator sees no byte before the sniffer has decided, so a file of the wrong
    /// type is always reported as such (not as a malformed image), whatever the split.
    fn admit(&mut self, data: &[u8]) -> Result<Validate> {
        self.count = self.count.saturating_add(data.len() as u64);
        if self.count > self.max_size {
            return Err(Error::TooLarge {
                size: self.count,
                limit: self.max_size,
                kind: self.limit_kind,
            });
        }
        if self.sniffer.verdict().is_some() {
            return Ok(Validate::Slice);
        }
        let earlier = self.sniffer.buffered();
        if self.sniffer.update(data) {
            self.decide()?;
            let window = self.sniffer.take_window();
            self.validator.update(&window[..earlier])?;
            self.validator.update(data)?;
        }
        Ok(Validate::Done)
    }

    /// Saves the inspector's progress through the file, to continue in another process
    /// with [`Inspector::restore`]: what a stateless server keeps in its store between two
    /// chunks of an upload. The state holds the SHA-256 state (104 bytes), the sniff window
    /// while the type is undecided (under [`SNIFF_LEN`] bytes), and the validator's
    /// position with the few header bytes it keeps; at the full-decode depth, also the bytes
    /// so far.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyFailed`] / [`Error::AlreadyFinished`] once the file was rejected or
    /// finished; [`Error::NotSaveable`] for a validator that cannot be saved
    /// ([`Validator::save`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use attachments::{Inspector, InspectorState, Policy};
    ///
    /// let policy = Policy::demand();
    /// let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    /// let mut first = Inspector::new(&policy, "image/png", None)?;
    /// first.update(&png[..10])?;
    /// // ... stored as JSON between two requests, perhaps read by another process ...
    /// let json = serde_json::to_vec(&first.save()?)?;
    /// let state: InspectorState = serde_json::from_slice(&json)?;
    /// let mut second = Inspector::restore(&policy, state)?;
    /// second.update(&png[10..])?;
    /// assert_eq!(second.bytes_seen(), png.len() as u64);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn save(&self) -> Result<InspectorState> {
        self.check_alive()?;
        let validator = self.validator.save().ok_or_else(|| Error::NotSaveable {
            what: "an inspector".into(),
            reason: "its validator cannot be saved (Validator::save gives None)".into(),
        })?;
        let (window, verdict) = self.sniffer.parts();
        Ok(InspectorState {
            declared_type: self.declared_type.to_string(),
            declared_size: self.declared_size,
            count: self.count,
            window: hex::encode(window),
            decided: verdict.is_some(),
            detected: verdict.flatten().map(ToString::to_string),
            sha256: hex::encode(self.hasher.state()),
            validator,
            pick_validator: self.pick_validator,
        })
    }

    /// An inspector continued from [`Inspector::save`], under `policy` (the policy the file
    /// started under, or one that accepts what was seen so far: the declared type, size and
    /// sniffed type are checked again, and the image limits are the smaller of the saved
    /// and the policy's). It continues as one that [`Inspector::new`] started: the
    /// validator must be the policy's check for the type the file goes as, and a file
    /// declared as `application/octet-stream` still takes the validator of the type it
    /// turns out to be.
    ///
    /// # Errors
    ///
    /// As [`Inspector::new`] for the declaration; [`Error::CorruptState`] for a
    /// state no inspector could have saved (a damaged or forged record).
    pub fn restore(policy: &Policy, state: InspectorState) -> Result<Self> {
        let bad = |problem: &str| crate::image::bad_state(&format!("inspector state: {problem}"));
        let saved_format = state.validator.format();
        let walked = state.validator.offset();
        let validator = state.validator.restore(&policy.limits)?;
        let mut insp =
            Self::with_validator(policy, &state.declared_type, state.declared_size, validator)?;
        let window = hex::decode(&state.window).map_err(|_| bad("window is not hex"))?;
        let detected = match state.detected {
            None => None,
            Some(t) => {
                Some(MediaType::parse(&t).map_err(|_| bad("sniffed type is not a media type"))?)
            }
        };
        if detected.is_some() && !state.decided {
            return Err(bad("a sniffed type while undecided"));
        }
        let verdict = state.decided.then_some(detected);
        let undecided = verdict.is_none();
        insp.sniffer = Sniffer::from_parts(window, verdict)
            .ok_or_else(|| bad("the sniff window does not fit the sniffer's verdict"))?;
        let sha = hex::decode(&state.sha256).map_err(|_| bad("SHA-256 state is not hex"))?;
        insp.hasher = Sha256::from_state(&sha).map_err(|e| bad(&e.to_string()))?;
        insp.count = state.count;
        // As `Inspector::new` sets it, whatever the state says: while undecided, a file
        // declared as octet-stream takes the validator of the type it turns out to be (a
        // state that said otherwise would let a PNG through unchecked).
        insp.pick_validator = undecided && insp.declared_type == MediaType::OCTET_STREAM;
        // (A count over the declared size is one `update` lets through and `finish`
        // reports, as it will after the restore: an upload session checks its own.)
        if insp.hasher.bytes_hashed() != state.count || state.count > insp.max_size {
            return Err(bad("byte count does not match the hash or the limits"));
        }
        if undecided {
            if insp.sniffer.buffered() as u64 != state.count {
                return Err(bad(&format!(
                    "the undecided sniff window holds {} bytes but {} were seen",
                    insp.sniffer.buffered(),
                    state.count
                )));
            }
        } else {
            // The sniffer decides when its window fills (a shorter file is decided only at
            // the end, and a finished inspector is not saved).
            if state.count < SNIFF_LEN as u64 {
                return Err(bad("a sniffed type before the sniff window filled"));
            }
            insp.check_sniffed()?;
        }
        // The validator sees no byte before the type is decided, then every byte.
        let validated = if undecided { 0 } else { state.count };
        if saved_format.is_some() && walked != validated {
            return Err(bad(
                "the validator walked another number of bytes than were seen",
            ));
        }
        // Never a weaker check than the policy's for the type the file goes as: a PNG or
        // JPEG (declared, or recognised in a file declared as octet-stream) is validated
        // as one.
        let effective = match insp.sniffer.verdict() {
            Some(Some(found)) if insp.declared_type == MediaType::OCTET_STREAM => found.clone(),
            _ => insp.declared_type.clone(),
        };
        let wanted = crate::image::validator_for(policy, &effective)
            .save()
            .and_then(|v| v.format());
        if wanted.is_some() && wanted != saved_format {
            return Err(bad(
                "the validator does not check the type the file goes as",
            ));
        }
        Ok(insp)
    }

    /// The SHA-256 state of the bytes so far ([`Sha256::state`]).
    pub(crate) fn hash_state(&self) -> Vec<u8> {
        self.hasher.state()
    }

    /// After a failure or the end of the file, every call says so.
    fn check_alive(&self) -> Result<()> {
        match self.failed.as_deref() {
            None => Ok(()),
            Some(Error::AlreadyFinished) => Err(Error::AlreadyFinished),
            Some(first) => Err(Error::AlreadyFailed {
                first: Box::new(first.clone()),
            }),
        }
    }

    /// The sniffer has decided: checks its verdict and, for a file declared as
    /// `application/octet-stream`, takes the validator for the recognised type.
    fn decide(&mut self) -> Result<()> {
        self.check_sniffed()?;
        if std::mem::take(&mut self.pick_validator)
            && let Some(found) = self.sniffer.verdict().flatten()
        {
            self.validator = crate::image::validator_for(&self.policy, found);
        }
        Ok(())
    }

    fn check_sniffed(&self) -> Result<()> {
        let detected = self.sniffer.verdict().flatten();
        let sniffed = usize::try_from(self.count)
            .unwrap_or(usize::MAX)
            .min(SNIFF_LEN);
        self.policy
            .check_detected(&self.declared_type, detected, sniffed)
    }

    /// Ends the content and gives the verdict. The inspector is then finished: later calls
    /// answer [`Error::AlreadyFinished`] (or, after a rejection, [`Error::AlreadyFailed`]),
    /// while [`Inspector::dimensions`] and [`Inspector::detected_type`] still tell what the
    /// file claimed.
    ///
    /// Checks, in this order: the declared size against the bytes seen
    /// ([`Error::SizeMismatch`], decoded length first), the type of a file shorter than the
    /// sniff window, then the validator's end-of-content checks.
    ///
    /// # Errors
    ///
    /// The first of the problems above, or [`Error::AlreadyFailed`].
    pub fn finish(&mut self) -> Result<Inspection> {
        self.check_alive()?;
        let result = self.finish_inner();
        // Finished either way: a later call says so instead of mixing in another file.
        self.failed = Some(Box::new(match &result {
            Ok(_) => Error::AlreadyFinished,
            Err(e) => e.clone(),
        }));
        result
    }

    fn finish_inner(&mut self) -> Result<Inspection> {
        if let Some(declared) = self.declared_size
            && declared != self.count
        {
            return Err(Error::SizeMismatch {
                actual: self.count,
                declared,
            });
        }
        if self.sniffer.verdict().is_none() {
            self.sniffer.finish();
            self.decide()?;
            let window = self.sniffer.take_window();
            self.validator.update(&window)?;
        }
        let info = self.validator.finish()?;
        let detected = self.sniffer.verdict().flatten().cloned();
        // "No particular type" takes the recognised type, where the policy lets it stand.
        let media_type = match &detected {
            Some(found) if self.declared_type == MediaType::OCTET_STREAM => found.clone(),
            _ => self.declared_type.clone(),
        };
        Ok(Inspection {
            media_type,
            detected,
            size: self.count,
            sha256: std::mem::take(&mut self.hasher).finalize(),
            info,
        })
    }
}
