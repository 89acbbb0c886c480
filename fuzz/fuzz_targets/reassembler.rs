//! Arbitrary insert sequences into the download Reassembler: never a panic, bytes are
//! yielded in order and are the bytes first accepted at each offset, a conflict is only
//! reported where held bytes really differ, and the out-of-order cap is never exceeded.
//!
//! A checkpoint taken at any point and resumed from (as after a restart, losing the pieces
//! held ahead) gives the same digest as never stopping.
//!
//! Input layout: 2 bytes file size (mod 4097), 2 bytes cap, 1 byte verify window (x 64),
//! then 6-byte operations: offset (2), length (2), flip (1), kind (1; 0x55: checkpoint and
//! resume first).
#![no_main]

use attachments::Error;
use attachments::download::{Placed, Reassembler};
use attachments::error::PieceProblem;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let size = u64::from(u16::from_le_bytes([data[0], data[1]])) % 4097;
    let cap = u64::from(u16::from_le_bytes([data[2], data[3]]));
    let window = u64::from(data[4]) * 64;
    let file: Vec<u8> = (0..size).map(|i| (i * 31 % 253) as u8).collect();
    let mut r = Reassembler::new(size, None)
        .with_cap(cap)
        .with_verify_window(window);
    // The first byte accepted at each offset: what must come out.
    let mut shadow: Vec<Option<u8>> = vec![None; size as usize];
    let mut out: Vec<u8> = Vec::new();
    for op in data[5..].chunks_exact(6) {
        let offset = u64::from(u16::from_le_bytes([op[0], op[1]])) % (size + 2);
        let len = u64::from(u16::from_le_bytes([op[2], op[3]])) % 600;
        let mut piece: Vec<u8> = (offset..offset + len)
            .map(|i| file.get(i as usize).copied().unwrap_or(0))
            .collect();
        if op[4] != 0 && !piece.is_empty() {
            let at = usize::from(op[4]) % piece.len();
            piece[at] ^= op[5] | 1;
        }
        if op[5] == 0x55 {
            let saved = serde_json::to_vec(&r.checkpoint()).expect("a checkpoint serialises");
            let back = serde_json::from_slice(&saved).expect("a checkpoint reads back");
            r = Reassembler::resume(&back, size, None)
                .expect("a fresh checkpoint resumes")
                .with_cap(cap)
                .with_verify_window(window);
            assert_eq!(r.delivered(), out.len() as u64);
            // Held pieces are gone: whatever comes next is first at its offset again.
            shadow[out.len()..].iter_mut().for_each(|s| *s = None);
            continue;
        }
        let before = r.delivered();
        match r.insert(offset, Bytes::from(piece.clone())) {
            Ok(Placed::Taken { new, duplicate, .. }) => {
                assert_eq!(new + duplicate, len);
                for (i, &b) in piece.iter().enumerate() {
                    let at = offset as usize + i;
                    if at as u64 >= before {
                        let slot = &mut shadow[at];
                        assert!(
                            slot.is_none() || *slot == Some(b),
                            "accepted a differing byte at {at}"
                        );
                        slot.get_or_insert(b);
                    }
                }
            }
            Ok(Placed::Wait) => assert!(offset > before, "the piece at the delivery point waited"),
            Err(Error::Piece(PieceProblem::PastEnd { .. })) => assert!(offset + len > size),
            Err(Error::Piece(PieceProblem::Conflict { offset: at })) => {
                let i = (at - offset) as usize;
                let held = if at >= before {
                    shadow[at as usize]
                } else {
                    Some(out[at as usize])
                };
                assert!(
                    held.is_some() && held != Some(piece[i]),
                    "false conflict at {at}"
                );
            }
            Err(e) => panic!("unexpected error {e}"),
        }
        assert!(r.out_of_order_bytes() <= cap, "cap exceeded");
        if op[5] & 0x80 == 0 {
            while let Some(b) = r.next_ready() {
                let start = out.len();
                out.extend_from_slice(&b);
                for (i, &byte) in b.iter().enumerate() {
                    assert_eq!(Some(byte), shadow[start + i], "yielded a byte out of order");
                }
            }
            assert_eq!(out.len() as u64, r.delivered());
        }
    }
    while let Some(b) = r.next_ready() {
        out.extend_from_slice(&b);
    }
    let complete = r.is_complete();
    match r.finish() {
        Ok(v) => {
            assert!(complete);
            assert_eq!(v.size, size);
            assert_eq!(v.sha256, attachments::digest::sha256(&out));
        }
        Err(Error::Piece(PieceProblem::Incomplete { missing })) => {
            assert!(!complete);
            assert!(
                missing.start >= out.len() as u64
                    && missing.end <= size
                    && missing.start < missing.end
            );
        }
        Err(e) => panic!("unexpected error at the end {e}"),
    }
});
