//! Fixtures and helpers shared by the scenario tests.
#![allow(dead_code)]

use proptest::prelude::*;

/// Seed 000's example `file_content`: 47 characters of unpadded base64, 35 bytes.
pub const SEED_000_CONTENT: &str = "iVBORw0KGgoAAAANSUhEUgAAADAAAABAgMAAADW0NTUAAAA";

/// The PNG signature.
pub const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// A JPEG start: SOI and the start of an APP0 JFIF segment.
pub const JPEG_START: &[u8] = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00";

/// `len` bytes starting with `header`, the rest pseudo-random.
pub fn file_with_header(header: &[u8], len: usize) -> Vec<u8> {
    let mut data = header[..header.len().min(len)].to_vec();
    let mut x: u32 = 0x1234_5678;
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data.push((x >> 24) as u8);
    }
    data
}

/// Splits `data` at the given cut points (taken modulo the length, sorted, deduplicated).
pub fn split_at_points<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    points.sort_unstable();
    points.dedup();
    let mut pieces = Vec::new();
    let mut start = 0;
    for p in points {
        pieces.push(&data[start..p]);
        start = p;
    }
    pieces.push(&data[start..]);
    pieces
}

/// Cut points for [`split_at_points`]: up to 12 of them.
pub fn cuts() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(any::<usize>(), 0..12)
}
