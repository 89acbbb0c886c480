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

/// Deterministic pseudo-random bytes.
pub fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// Appends one PNG chunk: length, type, data, CRC.
pub fn png_chunk(out: &mut Vec<u8>, ty: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(ty);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(ty);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
}

/// IHDR data.
pub fn ihdr(width: u32, height: u32, bit_depth: u8, colour_type: u8, interlace: u8) -> Vec<u8> {
    let mut d = Vec::with_capacity(13);
    d.extend_from_slice(&width.to_be_bytes());
    d.extend_from_slice(&height.to_be_bytes());
    d.extend_from_slice(&[bit_depth, colour_type, 0, 0, interlace]);
    d
}

/// A structurally valid PNG of exactly `len` bytes (at least 57): IHDR, IDAT chunks of up
/// to 64 KiB of pseudo-random data (the CRCs are right; the compressed stream is not),
/// IEND. Passes the structural validator; a full decode rejects it.
pub fn structural_png(len: usize) -> Vec<u8> {
    const IDAT_MAX: usize = 64 * 1024;
    let mut out = PNG_SIGNATURE.to_vec();
    png_chunk(&mut out, b"IHDR", &ihdr(1024, 768, 8, 2, 0));
    // Signature and IHDR take 33 bytes, IEND 12, each IDAT 12 plus its data.
    let room = len.saturating_sub(out.len() + 12);
    let chunks = room.div_ceil(IDAT_MAX + 12).max(1);
    let payload = noise(room.saturating_sub(12 * chunks), 7);
    let per = payload.len().div_ceil(chunks).max(1);
    let mut parts: Vec<&[u8]> = payload.chunks(per).collect();
    parts.resize(chunks, &[]);
    for part in parts {
        png_chunk(&mut out, b"IDAT", part);
    }
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A structurally valid baseline JPEG of at least `len` bytes: SOI, APP0, DQT, SOF0, DHT,
/// SOS, pseudo-random entropy-coded data (0xFF stuffed as 0xFF00), EOI.
pub fn structural_jpeg(len: usize) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8];
    out.extend_from_slice(b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00");
    out.extend_from_slice(b"\xff\xdb\x00\x43\x00");
    out.extend_from_slice(&[1u8; 64]);
    out.extend_from_slice(
        b"\xff\xc0\x00\x11\x08\x03\x00\x04\x00\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01",
    );
    out.extend_from_slice(b"\xff\xc4\x00\x1f\x00\x00\x01\x05\x01\x01\x01\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b");
    out.extend_from_slice(b"\xff\xda\x00\x0c\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00");
    for b in noise(len.saturating_sub(out.len() + 2), 11) {
        out.push(b);
        if b == 0xFF {
            out.push(0x00);
        }
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}
