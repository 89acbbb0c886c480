//! The client side of a ranged download: [`RangePlan`] splits the attachment into ranges,
//! [`Reassembler`] puts the pieces back in order, whatever order they arrive in, and
//! verifies them.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;

use bytes::Bytes;

use crate::digest::{Sha256, Sha256Digest};
use crate::error::{Error, PieceProblem, RangeProblem, Result};

/// Default bytes per range: 1,048,575, so that a server reading `to` as inclusive returns
/// at most 1 MiB (the range plus one byte).
pub const DEFAULT_RANGE_SIZE: u64 = 1_048_575;

/// Splits `[0, file_size)` into ranges of at most `range_size` bytes.
///
/// # Examples
///
/// ```
/// use attachments::download::RangePlan;
///
/// let plan = RangePlan::new(2_500_000);
/// assert_eq!(plan.len(), 3);
/// assert_eq!(plan.range(2), Some(2_097_150..2_500_000));
/// // The query for a range asks `to` = its exclusive end, which covers the range whether
/// // the server reads `to` as inclusive or exclusive.
/// assert_eq!(RangePlan::query(&(0..1_048_575)), (0, 1_048_575));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangePlan {
    file_size: u64,
    range_size: u64,
}

impl RangePlan {
    /// Ranges of [`DEFAULT_RANGE_SIZE`].
    pub fn new(file_size: u64) -> Self {
        RangePlan {
            file_size,
            range_size: DEFAULT_RANGE_SIZE,
        }
    }

    /// Ranges of `range_size` bytes.
    ///
    /// # Errors
    ///
    /// [`RangeProblem::ZeroRangeSize`] when `range_size` is 0.
    pub fn with_range_size(file_size: u64, range_size: u64) -> Result<Self> {
        if range_size == 0 {
            return Err(Error::Range(RangeProblem::ZeroRangeSize));
        }
        Ok(RangePlan {
            file_size,
            range_size,
        })
    }

    /// The attachment's size.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Bytes per range (the last may be shorter).
    pub fn range_size(&self) -> u64 {
        self.range_size
    }

    /// Number of ranges (0 for an empty attachment).
    pub fn len(&self) -> usize {
        usize::try_from(self.file_size.div_ceil(self.range_size)).unwrap_or(usize::MAX)
    }

    /// Whether there is nothing to download.
    pub fn is_empty(&self) -> bool {
        self.file_size == 0
    }

    /// The `i`th range.
    pub fn range(&self, i: usize) -> Option<Range<u64>> {
        let start = (i as u64).checked_mul(self.range_size)?;
        (start < self.file_size).then(|| start..(start + self.range_size).min(self.file_size))
    }

    /// Every range, in order.
    pub fn ranges(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        (0..self.len()).filter_map(|i| self.range(i))
    }

    /// The `from` and `to` to ask for `range`: `to` is the range's exclusive end, so an
    /// inclusive server returns one byte more (the [`Reassembler`] checks it against the
    /// next range) and an exclusive one exactly the range.
    pub fn query(range: &Range<u64>) -> (u64, u64) {
        (range.start, range.end)
    }
}

/// What [`Reassembler::insert`] did with a piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    /// Taken (possibly all duplicate).
    Taken {
        /// Bytes not held before.
        new: u64,
        /// Bytes already held (and equal), or already delivered.
        duplicate: u64,
        /// Bytes of the requested range that did not come back (a short piece): request
        /// them again. Only set by [`Reassembler::insert_response`].
        missing: Option<Range<u64>>,
    },
    /// Not taken: it lies ahead of the delivery point and would pass the out-of-order cap.
    /// Drain [`Reassembler::next_ready`], fetch the range at
    /// [`Reassembler::delivered`] first, then insert this piece again.
    Wait,
}

/// The verdict on a complete download.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// Bytes delivered.
    pub size: u64,
    /// Their SHA-256.
    pub sha256: Sha256Digest,
}

/// Where a download stands, saved to resume it after a restart
/// ([`Reassembler::checkpoint`], [`Reassembler::resume`]).
///
/// Serialises with serde (e.g. to JSON next to the partial file). The alternative to saving
/// the digest state is to re-hash the prefix already written; see
/// `download::checkpoint_from_prefix` (feature `async`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// The attachment's size.
    pub file_size: u64,
    /// Bytes delivered (and written) from the start of the file.
    pub offset: u64,
    /// The SHA-256 state over those bytes ([`Sha256::state`]), in hex.
    pub sha256_state: String,
}

impl Checkpoint {
    /// A checkpoint at `offset` whose digest state is `hasher`, which has hashed exactly
    /// the file's first `offset` bytes.
    pub fn new(file_size: u64, offset: u64, hasher: &Sha256) -> Self {
        Checkpoint {
            file_size,
            offset,
            sha256_state: hex::encode(hasher.state()),
        }
    }
}

/// Puts downloaded pieces back in order and verifies them.
///
/// - [`insert`](Reassembler::insert) takes a piece at its offset, in any order. Pieces are
///   kept as the `Bytes` they arrived in (slices, never copies).
/// - [`next_ready`](Reassembler::next_ready) yields the bytes in order as soon as they are
///   contiguous, and hashes them.
/// - Overlaps are compared byte for byte with what is held (pending pieces, and the most
///   recently delivered bytes: the verify window, and always the last piece delivered); a
///   difference is an error naming the offset. Overlaps with older delivered bytes are counted as duplicates unchecked.
/// - **Memory:** pieces ahead of the delivery point are buffered up to the out-of-order
///   cap ([`Placed::Wait`] beyond it); a piece at the delivery point is always taken.
///   Held bytes are therefore at most the cap, plus the piece being delivered, plus the
///   verify window (or the last piece delivered, when that is larger).
/// - [`finish`](Reassembler::finish) checks that every byte arrived and, when known, the
///   SHA-256.
///
/// # Examples
///
/// ```
/// use attachments::download::{Reassembler, Placed};
/// use attachments::digest::sha256;
/// use bytes::Bytes;
///
/// let file = b"hello, world";
/// let mut r = Reassembler::new(12, Some(sha256(file)));
/// r.insert(7, Bytes::from_static(b"world"))?;      // ahead: buffered
/// assert_eq!(r.next_ready(), None);
/// r.insert(0, Bytes::from_static(b"hello, w"))?;  // overlaps "w": compared, equal
/// let mut out = Vec::new();
/// while let Some(b) = r.next_ready() {
///     out.extend_from_slice(&b);
/// }
/// assert_eq!(out, file);
/// assert_eq!(r.finish()?.size, 12);
/// # Ok::<(), attachments::Error>(())
/// ```
#[derive(Debug)]
pub struct Reassembler {
    file_size: u64,
    expected: Option<Sha256Digest>,
    /// Bytes yielded by `next_ready` (and hashed).
    delivered: u64,
    /// Held pieces by offset: non-overlapping, all at or after `delivered`.
    pending: BTreeMap<u64, Bytes>,
    /// End of the contiguous run of pending bytes from `delivered`.
    frontier: u64,
    /// Pending bytes beyond `frontier`.
    out_of_order: u64,
    cap: u64,
    /// Recently delivered pieces, kept to check overlaps against.
    recent: VecDeque<(u64, Bytes)>,
    recent_bytes: u64,
    window: u64,
    hasher: Sha256,
}

/// Default out-of-order cap: 8 ranges of the default size.
pub const DEFAULT_OUT_OF_ORDER_CAP: u64 = 8 * DEFAULT_RANGE_SIZE;

impl Reassembler {
    /// A reassembler for `file_size` bytes, checking `sha256` at the end when given. The
    /// out-of-order cap is [`DEFAULT_OUT_OF_ORDER_CAP`] and the verify window one default
    /// range.
    pub fn new(file_size: u64, sha256: Option<Sha256Digest>) -> Self {
        Reassembler {
            file_size,
            expected: sha256,
            delivered: 0,
            pending: BTreeMap::new(),
            frontier: 0,
            out_of_order: 0,
            cap: DEFAULT_OUT_OF_ORDER_CAP,
            recent: VecDeque::new(),
            recent_bytes: 0,
            window: DEFAULT_RANGE_SIZE,
            hasher: Sha256::new(),
        }
    }

    /// A reassembler that continues after a restart from `checkpoint`: the bytes before
    /// [`Checkpoint::offset`] count as delivered, and hashing goes on from the saved state.
    ///
    /// # Errors
    ///
    /// [`Error::Resume`] when the checkpoint is for another size, lies past the end, or its
    /// digest state cannot be read.
    ///
    /// # Examples
    ///
    /// ```
    /// use attachments::download::Reassembler;
    /// use attachments::digest::sha256;
    /// use bytes::Bytes;
    ///
    /// let file = b"hello, world";
    /// let mut first = Reassembler::new(12, Some(sha256(file)));
    /// first.insert(0, Bytes::from_static(b"hello, "))?;
    /// while first.next_ready().is_some() {}
    /// // Save this (it is serde-serialisable) next to the 7 bytes written so far.
    /// let saved = first.checkpoint();
    /// drop(first);
    ///
    /// let mut second = Reassembler::resume(&saved, 12, Some(sha256(file)))?;
    /// assert_eq!(second.delivered(), 7);
    /// second.insert(7, Bytes::from_static(b"world"))?;
    /// while second.next_ready().is_some() {}
    /// assert_eq!(second.finish()?.sha256, sha256(file));
    /// # Ok::<(), attachments::Error>(())
    /// ```
    pub fn resume(
        checkpoint: &Checkpoint,
        file_size: u64,
        sha256: Option<Sha256Digest>,
    ) -> Result<Self> {
        let refuse = |reason: String| Error::Resume { reason };
        if checkpoint.file_size != file_size {
            return Err(refuse(format!(
                "the checkpoint is for a file of {} bytes, this one has {file_size}",
                checkpoint.file_size
            )));
        }
        if checkpoint.offset > file_size {
            return Err(refuse(format!(
                "the checkpoint's offset {} lies past the end ({file_size} bytes)",
                checkpoint.offset
            )));
        }
        let state = hex::decode(&checkpoint.sha256_state)
            .map_err(|e| refuse(format!("its digest state is not hex: {e}")))?;
        let hasher = Sha256::from_state(&state).map_err(|e| refuse(e.to_string()))?;
        if hasher.bytes_hashed() != checkpoint.offset {
            return Err(refuse(format!(
                "its digest state covers {} bytes, not the offset {}",
                hasher.bytes_hashed(),
                checkpoint.offset
            )));
        }
        let mut r = Reassembler::new(file_size, sha256);
        r.delivered = checkpoint.offset;
        r.frontier = checkpoint.offset;
        r.hasher = hasher;
        Ok(r)
    }

    /// The state to save to continue later with [`Reassembler::resume`]: the bytes
    /// delivered so far and the running SHA-256 over them. Save it together with (after)
    /// the bytes it covers.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint::new(self.file_size, self.delivered, &self.hasher)
    }

    /// Sets the most out-of-order bytes buffered.
    pub fn with_cap(mut self, cap: u64) -> Self {
        self.cap = cap;
        self
    }

    /// Sets how many recently delivered bytes are kept to check overlaps against (0: none).
    /// Unless it is 0, the last piece delivered is kept even when larger.
    pub fn with_verify_window(mut self, window: u64) -> Self {
        self.window = window;
        self
    }

    /// The attachment's size.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Bytes yielded so far: everything before this offset is delivered.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Bytes held ahead of the contiguous run (counted against the cap).
    pub fn out_of_order_bytes(&self) -> u64 {
        self.out_of_order
    }

    /// Whether every byte has been delivered.
    pub fn is_complete(&self) -> bool {
        self.delivered == self.file_size
    }

    /// The ranges not held yet, from the delivery point to the end, in order.
    pub fn missing(&self) -> Vec<Range<u64>> {
        let mut gaps = Vec::new();
        let mut at = self.delivered;
        for (&start, piece) in &self.pending {
            if start > at {
                gaps.push(at..start);
            }
            at = at.max(start + piece.len() as u64);
        }
        if at < self.file_size {
            gaps.push(at..self.file_size);
        }
        gaps
    }

    /// Takes a piece that starts at `offset`.
    ///
    /// # Errors
    ///
    /// [`PieceProblem::PastEnd`] when it runs past the file, [`PieceProblem::Conflict`]
    /// when it overlaps held bytes that differ. Nothing of the piece is taken then.
    pub fn insert(&mut self, offset: u64, data: Bytes) -> Result<Placed> {
        let len = data.len() as u64;
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= self.file_size)
            .ok_or(Error::Piece(PieceProblem::PastEnd {
                offset,
                len,
                file_size: self.file_size,
            }))?;
        // Check every overlap before taking anything.
        self.check_recent(offset, &data)?;
        let mut gaps = Vec::new();
        let mut at = offset.max(self.delivered);
        let before = self
            .pending
            .range(..at)
            .next_back()
            .filter(|(s, p)| *s + p.len() as u64 > at);
        for (&start, piece) in before
            .into_iter()
            .chain(self.pending.range(at..end.max(at)))
        {
            if start > at {
                gaps.push(at..start.min(end));
            }
            compare(at, offset, &data, start, piece)?;
            at = at.max(start + piece.len() as u64);
        }
        if at < end {
            gaps.push(at..end);
        }
        let new: u64 = gaps.iter().map(|g| g.end - g.start).sum();
        // Bytes this piece adds beyond the contiguous run, if it does not touch it.
        if offset > self.frontier && self.out_of_order + new > self.cap {
            return Ok(Placed::Wait);
        }
        for gap in gaps {
            let piece = data.slice((gap.start - offset) as usize..(gap.end - offset) as usize);
            self.pending.insert(gap.start, piece);
            if gap.start > self.frontier {
                self.out_of_order += gap.end - gap.start;
            }
        }
        self.advance_frontier();
        Ok(Placed::Taken {
            new,
            duplicate: len - new,
            missing: None,
        })
    }

    /// Takes the response to a request for `requested`: the piece is placed at
    /// `requested.start` whatever its length, and a short piece reports the bytes of the
    /// range that did not come back in [`Placed::Taken::missing`].
    ///
    /// # Errors
    ///
    /// As [`Reassembler::insert`].
    pub fn insert_response(&mut self, requested: Range<u64>, data: Bytes) -> Result<Placed> {
        let got_end = requested.start + data.len() as u64;
        let placed = self.insert(requested.start, data)?;
        Ok(match placed {
            Placed::Taken { new, duplicate, .. } => Placed::Taken {
                new,
                duplicate,
                missing: (got_end < requested.end).then_some(got_end..requested.end),
            },
            Placed::Wait => Placed::Wait,
        })
    }

    /// The next bytes in order, if they are here; hashed on the way out.
    pub fn next_ready(&mut self) -> Option<Bytes> {
        let piece = self.pending.remove(&self.delivered)?;
        self.hasher.update(&piece);
        self.delivered += piece.len() as u64;
        if self.window > 0 {
            self.recent
                .push_back((self.delivered - piece.len() as u64, piece.clone()));
            self.recent_bytes += piece.len() as u64;
            // The newest piece stays whatever its size: the next range overlaps it (by one
            // byte from a server that reads `to` as inclusive).
            while self.recent_bytes > self.window && self.recent.len() > 1 {
                let Some((_, old)) = self.recent.pop_front() else {
                    break;
                };
                self.recent_bytes -= old.len() as u64;
            }
        }
        Some(piece)
    }

    /// Checks that everything arrived and was taken out, and the SHA-256 when known.
    ///
    /// # Errors
    ///
    /// [`PieceProblem::Incomplete`] naming the first missing range (bytes still held count
    /// as missing until [`Reassembler::next_ready`] has yielded them);
    /// [`PieceProblem::DigestMismatch`].
    pub fn finish(self) -> Result<Verified> {
        if self.delivered < self.file_size {
            let missing = self
                .missing()
                .into_iter()
                .next()
                .unwrap_or(self.delivered..self.file_size);
            return Err(Error::Piece(PieceProblem::Incomplete { missing }));
        }
        let sha256 = self.hasher.finalize();
        if let Some(expected) = self.expected
            && expected != sha256
        {
            return Err(Error::Piece(PieceProblem::DigestMismatch {
                expected: expected.to_hex(),
                actual: sha256.to_hex(),
            }));
        }
        Ok(Verified {
            size: self.delivered,
            sha256,
        })
    }

    fn check_recent(&self, offset: u64, data: &[u8]) -> Result<()> {
        if offset >= self.delivered {
            return Ok(());
        }
        self.recent
            .iter()
            .try_for_each(|(start, piece)| compare(offset, offset, data, *start, piece))
    }

    /// Moves the end of the contiguous run past the pieces now joined to it, and recounts
    /// the bytes beyond it.
    fn advance_frontier(&mut self) {
        self.frontier = self.frontier.max(self.delivered);
        let before = self.frontier;
        while let Some(piece) = self.pending.get(&self.frontier) {
            self.frontier += piece.len() as u64;
        }
        if self.frontier > before {
            self.out_of_order = self
                .pending
                .range(self.frontier..)
                .map(|(_, p)| p.len() as u64)
                .sum();
        }
    }
}

/// Compares `data` (placed at `offset`) with `held` (placed at `start`) where they overlap,
/// from `from` on.
///
/// # Errors
///
/// [`PieceProblem::Conflict`] at the first byte that differs.
fn compare(from: u64, offset: u64, data: &[u8], start: u64, held: &[u8]) -> Result<()> {
    let lo = from.max(offset).max(start);
    let hi = (offset + data.len() as u64).min(start + held.len() as u64);
    if lo >= hi {
        return Ok(());
    }
    let ours = &data[(lo - offset) as usize..(hi - offset) as usize];
    let theirs = &held[(lo - start) as usize..(hi - start) as usize];
    match ours.iter().zip(theirs).position(|(a, b)| a != b) {
        Some(i) => Err(Error::Piece(PieceProblem::Conflict {
            offset: lo + i as u64,
        })),
        None => Ok(()),
    }
}
