//! SHA-256 over slices, with hex output.
//!
//! A thin layer over the `sha2` crate, which picks the SHA-NI / ARMv8 instructions at run
//! time where the CPU has them.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;
use sha2::digest::common::hazmat::{SerializableState as _, SerializedState};

/// A SHA-256 digest.
///
/// Displays (and parses) as 64 lowercase hex digits.
///
/// # Examples
///
/// ```
/// use attachments::digest::{sha256, Sha256Digest};
///
/// let d = sha256(b"abc");
/// assert_eq!(
///     d.to_string(),
///     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
/// );
/// assert_eq!(d.to_string().parse::<Sha256Digest>().unwrap(), d);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        // Cannot fail: the buffer is exactly twice the input length.
        hex::encode_to_slice(self.0, &mut buf).map_err(|_| fmt::Error)?;
        // Hex digits are ASCII.
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({self})")
    }
}

/// Why a text is not a SHA-256 hex digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a SHA-256 hex digest: expected 64 hex digits ({0})")]
pub struct ParseDigestError(String);

impl FromStr for Sha256Digest {
    type Err = ParseDigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| ParseDigestError(e.to_string()))?;
        Ok(Sha256Digest(out))
    }
}

/// Incremental SHA-256.
///
/// # Examples
///
/// ```
/// use attachments::digest::{sha256, Sha256};
///
/// let mut h = Sha256::new();
/// h.update(b"ab");
/// h.update(b"c");
/// assert_eq!(h.finalize(), sha256(b"abc"));
/// ```
#[derive(Clone, Default)]
pub struct Sha256 {
    inner: sha2::Sha256,
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sha256").finish_non_exhaustive()
    }
}

impl Sha256 {
    /// A hasher that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hashes the next slice.
    #[inline]
    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
    }

    /// The digest of everything fed.
    pub fn finalize(self) -> Sha256Digest {
        Sha256Digest(self.inner.finalize().into())
    }

    /// The running state, as bytes that can be saved and given to
    /// [`Sha256::from_state`] later (to resume a download after a restart without
    /// reading back what was already written).
    ///
    /// The layout is `sha2`'s: the eight state words, the block count, and the partial
    /// block. It is not a digest and says nothing until resumed.
    ///
    /// # Examples
    ///
    /// ```
    /// use attachments::digest::{sha256, Sha256};
    ///
    /// let mut h = Sha256::new();
    /// h.update(b"hello, ");
    /// let saved = h.state();
    /// let mut resumed = Sha256::from_state(&saved)?;
    /// resumed.update(b"world");
    /// assert_eq!(resumed.finalize(), sha256(b"hello, world"));
    /// # Ok::<(), attachments::digest::StateError>(())
    /// ```
    pub fn state(&self) -> Vec<u8> {
        self.inner.serialize().to_vec()
    }

    /// A hasher resumed from [`Sha256::state`].
    ///
    /// # Errors
    ///
    /// [`StateError`] when `state` has the wrong length or an impossible partial block.
    pub fn from_state(state: &[u8]) -> Result<Self, StateError> {
        let expected = SerializedState::<sha2::Sha256>::default().len();
        let refuse = || StateError {
            len: state.len(),
            expected,
        };
        let array = SerializedState::<sha2::Sha256>::try_from(state).map_err(|_| refuse())?;
        // sha2's layout: 8 state words, the block count (u64 LE), the partial block's
        // length, the partial block. A count whose bit length overflows a u64 makes sha2's
        // finalisation overflow: no real state has one (SHA-256 takes < 2^64 bits).
        let blocks = u64::from_le_bytes(state[32..40].try_into().map_err(|_| refuse())?);
        if blocks >= MAX_BLOCKS {
            return Err(refuse());
        }
        let inner = sha2::Sha256::deserialize(&array).map_err(|_| refuse())?;
        Ok(Sha256 { inner })
    }

    /// How many bytes the hasher has been fed.
    pub fn bytes_hashed(&self) -> u64 {
        let state = self.state();
        let blocks = state
            .get(32..40)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes);
        let partial = state.get(40).copied().map_or(0, u64::from);
        blocks.wrapping_mul(64).wrapping_add(partial)
    }
}

/// Blocks a saved state may count: SHA-256 hashes fewer than 2^64 bits.
const MAX_BLOCKS: u64 = 1 << 55;

/// A saved SHA-256 state that cannot be resumed; see [`Sha256::from_state`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a saved SHA-256 state: {len} bytes, expected {expected} with a partial block \
     shorter than 64 bytes and fewer than 2^55 blocks; start the download again from the \
     beginning"
)]
pub struct StateError {
    /// Bytes given.
    pub len: usize,
    /// Bytes a saved state has.
    pub expected: usize,
}

/// SHA-256 of one slice.
pub fn sha256(data: &[u8]) -> Sha256Digest {
    Sha256Digest(sha2::Sha256::digest(data).into())
}
