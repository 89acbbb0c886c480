//! The `session_record` fuzz target's body ([`session_record`]), shared with the test suite:
//! the target, `tests/saved_state.rs` (a proptest) and `tests/fuzz_corpus.rs` (which
//! replays the target's corpus) include this file with `#[path]`; it needs only
//! `attachments`, `serde_json` and `crc32fast`.
//!
//! An input that starts with `{` is a saved `SessionRecord` (or `InspectorState`) as raw
//! JSON, a newline, then the bytes of the next chunk ([`raw_record`]). Any other input
//! goes to [`run`], which takes it as choices: they pick one of the [`samples`] (a `SessionRecord`, an
//! `InspectorState` or a `ValidatorState` saved from real PNG, JPEG and untyped files at
//! many positions: between chunks and segments, inside a chunk header, a body, a CRC, a
//! scan), mutate its JSON where it matters (numbers to boundary values and off by one,
//! enum tags swapped, strings and hex truncated, extended or flipped, array entries
//! dropped or repeated, fields removed, nodes grafted from other samples), restore it
//! under three policies and, when a restore succeeds, feed it more bytes (the rest of the
//! file, damaged or not, or the fuzz bytes) and finish. Nothing may panic; and a state
//! that a restored session, inspector or validator saves again must restore.
#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use attachments::codec::base64::encode_to;
use attachments::image::ValidatorState;
use attachments::policy::Depth;
use attachments::upload::{RandomId, Received, SessionRecord, UploadSession};
use attachments::wire::Base64Text;
use attachments::wire::connectivity::{Chunk, ChunkAction, ChunkAttachment};
use attachments::{Inspector, InspectorState, Limits, Policy, Validator};
use serde_json::{Value, json};

/// Bytes read as choices, then zeros once they run out.
pub struct Choices<'a> {
    data: &'a [u8],
}

impl<'a> Choices<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Choices { data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        let x = u32::from_le_bytes([self.byte(), self.byte(), self.byte(), 0]) as usize;
        if n == 0 { 0 } else { x % n }
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(std::array::from_fn(|_| self.byte()))
    }

    /// What is left of the input.
    pub fn rest(&self) -> &'a [u8] {
        self.data
    }
}

/// The policy the samples were saved under: any type, chunked above 4 KiB (so sessions
/// of the small files below are chunked), default image limits.
pub fn policy_start() -> Policy {
    let mut limits = Limits::connectivity();
    limits.max_single_size = 4096;
    limits.max_chunked_size = Some(1 << 20);
    limits.max_chunk_size = 64 * 1024;
    Policy::chat().with_limits(limits)
}

/// The same, tightened: smaller images, fewer chunks or segments, less metadata.
pub fn policy_tight() -> Policy {
    let mut policy = policy_start();
    policy.limits.image.max_width = 40;
    policy.limits.image.max_height = 40;
    policy.limits.image.max_pixels = 1_000;
    policy.limits.image.max_segments = 9;
    policy.limits.image.max_metadata_bytes = 20;
    policy
}

/// The same at the full-decode depth.
pub fn policy_decode() -> Policy {
    policy_start().with_depth(Depth::Decode)
}

/// Deterministic pseudo-random bytes.
fn noise(len: usize, seed: u32) -> Vec<u8> {
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

fn chunk(out: &mut Vec<u8>, ty: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(ty);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(ty);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
}

fn ihdr(width: u32, height: u32, depth: u8, colour: u8) -> Vec<u8> {
    let mut d = width.to_be_bytes().to_vec();
    d.extend_from_slice(&height.to_be_bytes());
    d.extend_from_slice(&[depth, colour, 0, 0, 0]);
    d
}

/// A palette PNG (16 x 16): IHDR, PLTE, tEXt, three IDATs, IEND; 12 KiB.
fn png_palette() -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr(16, 16, 8, 3));
    chunk(
        &mut out,
        b"PLTE",
        &[0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255],
    );
    chunk(&mut out, b"tEXt", b"Comment\0saved state");
    for seed in 1..=3 {
        chunk(&mut out, b"IDAT", &noise(4_000, seed));
    }
    chunk(&mut out, b"IEND", &[]);
    out
}

/// An APNG (20 x 10 RGBA): IHDR, acTL, fcTL, two IDATs, fcTL, fdAT, IEND; 12 KiB.
fn png_animated() -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr(20, 10, 8, 6));
    chunk(&mut out, b"acTL", &[0, 0, 0, 2, 0, 0, 0, 0]);
    chunk(&mut out, b"fcTL", &[0; 26]);
    chunk(&mut out, b"IDAT", &noise(4_500, 4));
    chunk(&mut out, b"IDAT", &noise(4_500, 5));
    chunk(&mut out, b"fcTL", &[1; 26]);
    let mut fdat = vec![0, 0, 0, 2];
    fdat.extend_from_slice(&noise(3_000, 6));
    chunk(&mut out, b"fdAT", &fdat);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Entropy-coded data: `len` bytes of noise with 0xFF stuffed, a restart marker every
/// 700 bytes when `restarts`, and once a fill byte before one.
fn entropy(out: &mut Vec<u8>, len: usize, seed: u32, restarts: bool) {
    let mut rst = 0u8;
    for (i, b) in noise(len, seed).into_iter().enumerate() {
        out.push(b);
        if b == 0xFF {
            out.push(0x00);
        }
        if restarts && i % 700 == 699 {
            if i == 699 {
                out.push(0xFF); // fill
            }
            out.extend_from_slice(&[0xFF, 0xD0 + rst]);
            rst = (rst + 1) % 8;
        }
    }
}

fn segment(out: &mut Vec<u8>, marker: u8, body: &[u8]) {
    out.extend_from_slice(&[0xFF, marker]);
    out.extend_from_slice(&(body.len() as u16 + 2).to_be_bytes());
    out.extend_from_slice(body);
}

/// A baseline JPEG (24 x 16, three components): APP0, COM, DQT, SOF0, DHT, DRI, SOS,
/// entropy-coded data with stuffing and restart markers, EOI; 12 KiB.
fn jpeg_baseline() -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8];
    segment(&mut out, 0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
    segment(&mut out, 0xFE, b"saved state");
    let mut dqt = vec![0];
    dqt.extend_from_slice(&[1; 64]);
    segment(&mut out, 0xDB, &dqt);
    segment(
        &mut out,
        0xC0,
        &[8, 0, 16, 0, 24, 3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1],
    );
    let mut dht = vec![0];
    dht.extend_from_slice(&[0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]);
    dht.extend_from_slice(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    segment(&mut out, 0xC4, &dht);
    segment(&mut out, 0xDD, &[0, 4]);
    segment(&mut out, 0xDA, &[3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0]);
    entropy(&mut out, 11_500, 9, true);
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// A progressive JPEG (32 x 32, one component): SOF2, DHT, SOS, data, DHT, SOS, data,
/// EOI; 12 KiB.
fn jpeg_progressive() -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8];
    segment(&mut out, 0xC2, &[8, 0, 32, 0, 32, 1, 1, 0x11, 0]);
    segment(
        &mut out,
        0xC4,
        &[0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    segment(&mut out, 0xDA, &[1, 1, 0x00, 0, 0, 0]);
    entropy(&mut out, 6_000, 10, false);
    segment(
        &mut out,
        0xC4,
        &[0x10, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    );
    segment(&mut out, 0xDA, &[1, 1, 0x00, 1, 63, 0]);
    entropy(&mut out, 6_000, 11, false);
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// The files the samples are saved from, with the type each is declared as.
pub fn files() -> &'static [(&'static str, Vec<u8>)] {
    static FILES: OnceLock<Vec<(&'static str, Vec<u8>)>> = OnceLock::new();
    FILES.get_or_init(|| {
        vec![
            ("image/png", png_palette()),
            ("image/png", png_animated()),
            ("image/jpeg", jpeg_baseline()),
            ("image/jpeg", jpeg_progressive()),
            ("application/octet-stream", noise(12_000, 12)),
            // A PNG sent as "no particular type": validated as the PNG it is.
            ("application/octet-stream", png_palette()),
        ]
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Session,
    Inspector,
    Validator,
}

/// A saved state, as JSON, of the file `file` (an index into [`files`]) after `at` bytes.
#[derive(Debug, Clone)]
pub struct Sample {
    pub kind: Kind,
    pub json: Value,
    pub file: usize,
    pub at: usize,
}

/// Positions where the walk of `file` changes state, the byte after, and the middle of
/// each stretch between two: every kind of place a validator can be saved at.
fn turning_points(ty: &str, file: &[u8]) -> Vec<usize> {
    let policy = policy_start();
    let media = attachments::MediaType::parse(ty).unwrap();
    let mut v = attachments::image::validator_for(&policy, &media);
    let state_of = |v: &dyn Validator| {
        let json = serde_json::to_value(v.save().unwrap()).unwrap();
        json["state"].to_string()
    };
    let mut points = vec![0];
    let mut last = state_of(&*v);
    let mut since = 0;
    for (i, b) in file.iter().enumerate() {
        if v.update(std::slice::from_ref(b)).is_err() {
            break;
        }
        let now = state_of(&*v);
        if now != last {
            points.extend([(since + i).div_ceil(2), i + 1, i + 2]);
            since = i + 1;
            last = now;
        }
    }
    points.push(file.len());
    points.retain(|&p| p <= file.len());
    points.sort_unstable();
    points.dedup();
    points
}

fn validator_sample(policy: &Policy, ty: &str, file: usize, at: usize) -> Sample {
    let data = &files()[file].1;
    let media = attachments::MediaType::parse(ty).unwrap();
    let mut v = attachments::image::validator_for(policy, &media);
    v.update(&data[..at]).unwrap();
    Sample {
        kind: Kind::Validator,
        json: serde_json::to_value(v.save().unwrap()).unwrap(),
        file,
        at,
    }
}

fn inspector_sample(policy: &Policy, file: usize, at: usize) -> Sample {
    let (ty, data) = &files()[file];
    let mut insp = Inspector::new(policy, ty, Some(data.len() as u64)).unwrap();
    // In two slices, as a server gets them.
    insp.update(&data[..at / 2]).unwrap();
    insp.update(&data[at / 2..at]).unwrap();
    Sample {
        kind: Kind::Inspector,
        json: serde_json::to_value(insp.save().unwrap()).unwrap(),
        file,
        at,
    }
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 30)
}

/// The chunk request for `data`, numbered `number`, of file `file`.
fn chunk_request(
    action: ChunkAction,
    upload_id: Option<String>,
    number: u64,
    data: &[u8],
    ty: &str,
    size: u64,
) -> ChunkAttachment<'static> {
    let mut text = Vec::new();
    encode_to(data, &mut text);
    ChunkAttachment {
        action,
        upload_id,
        chunk: Chunk {
            chunk_number: number,
            chunk_content: Base64Text::from(String::from_utf8(text).unwrap()),
            chunk_size: data.len() as u64,
        },
        file_type: ty.to_owned(),
        file_size: size,
        file_name: "saved.bin".to_owned(),
    }
}

/// Sessions of `file` saved after chunks of the given sizes (the last one `finish` when
/// it completes the file), then in their other states.
fn session_samples(file: usize, chunks: &[usize], out: &mut Vec<Sample>) {
    let policy = policy_start();
    let (ty, data) = &files()[file];
    let size = data.len() as u64;
    let id = RandomId::from_bytes([file as u8 + 1; 16]);
    let first = chunks[0];
    let req = chunk_request(ChunkAction::Start, None, 0, &data[..first], ty, size);
    let (mut session, _) = UploadSession::start(&policy, id, &req, now()).unwrap();
    let mut at = first;
    let save = |s: &UploadSession, at: usize, out: &mut Vec<Sample>| {
        out.push(Sample {
            kind: Kind::Session,
            json: serde_json::to_value(s.save().unwrap()).unwrap(),
            file,
            at,
        });
    };
    save(&session, at, out);
    for &len in &chunks[1..] {
        let end = (at + len).min(data.len());
        let action = if end == data.len() {
            ChunkAction::Finish
        } else {
            ChunkAction::Resume
        };
        let req = chunk_request(
            action,
            Some(id.to_string()),
            session.next_number(),
            &data[at..end],
            ty,
            size,
        );
        let got = session.receive(&req, now());
        at = end;
        save(&session, at, out);
        if let Ok(Received::Last { attachment, .. }) = got {
            // Committing as a claimed attachment, then committed.
            let attachment_id = RandomId::from_bytes([0xa0 | file as u8; 16]).to_string();
            session.claim_commit(attachment_id.clone(), attachment, now());
            save(&session, at, out);
            session.committed(attachment_id);
            save(&session, at, out);
            return;
        }
    }
    // Expired while receiving, and failed on a chunk out of order.
    let mut expired = UploadSession::restore(&policy, session.save().unwrap()).unwrap();
    expired.expire_if_idle(now() + Duration::from_secs(7_200), Duration::from_secs(60));
    save(&expired, at, out);
    let req = chunk_request(
        ChunkAction::Resume,
        Some(id.to_string()),
        session.next_number() + 5,
        &data[at..at + 1],
        ty,
        size,
    );
    let _ = session.receive(&req, now());
    save(&session, at, out);
}

/// Every sample, built once.
pub fn samples() -> &'static [Sample] {
    static SAMPLES: OnceLock<Vec<Sample>> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        let mut out = Vec::new();
        let start = policy_start();
        let decode = policy_decode();
        for (file, (ty, data)) in files().iter().enumerate() {
            let image = ty.starts_with("image/");
            if image {
                for at in turning_points(ty, data) {
                    out.push(validator_sample(&start, ty, file, at));
                }
                for at in [0, 40, 3_000, data.len()] {
                    out.push(validator_sample(&decode, ty, file, at));
                }
            }
            for at in [0, 1, 8, 33, 100, 8_191, 8_192, 8_193, 9_000, data.len() - 1] {
                out.push(inspector_sample(&start, file, at));
            }
            if image || file == 5 {
                for at in [100, 9_000] {
                    out.push(inspector_sample(&decode, file, at));
                }
            }
            let len = data.len();
            session_samples(file, &[1, 32, 8_200, 200], &mut out);
            session_samples(file, &[8_192, 1, len], &mut out);
            session_samples(file, &[40, 9_000, len], &mut out);
            session_samples(file, &[len - 1, 1], &mut out);
        }
        out
    })
}

/// Enum tags of the saved forms: swapped in for any string.
const TAGS: &[&str] = &[
    "Signature",
    "Header",
    "Data",
    "Crc",
    "End",
    "NotYet",
    "Inside",
    "Done",
    "Soi",
    "Marker",
    "MarkerCode",
    "Length",
    "Segment",
    "any",
    "png",
    "jpeg",
    "decode",
    "receiving",
    "committing",
    "finished",
    "failed",
    "expired",
    "start",
    "resume",
    "finish",
    "image/png",
    "image/jpeg",
    "application/octet-stream",
    "text/html",
];

/// One step along a JSON path.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn paths(v: &Value, at: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(at.clone());
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                at.push(Step::Key(k.clone()));
                paths(child, at, out);
                at.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                at.push(Step::Index(i));
                paths(child, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn node_mut<'v>(v: &'v mut Value, path: &[Step]) -> Option<&'v mut Value> {
    path.iter().try_fold(v, |node, step| match step {
        Step::Key(k) => node.get_mut(k.as_str()),
        Step::Index(i) => node.get_mut(*i),
    })
}

fn node<'v>(v: &'v Value, path: &[Step]) -> Option<&'v Value> {
    path.iter().try_fold(v, |node, step| match step {
        Step::Key(k) => node.get(k.as_str()),
        Step::Index(i) => node.get(*i),
    })
}

/// A number at or next to a boundary, or off by one from `real`.
fn boundary_number(c: &mut Choices, real: Option<u64>) -> Value {
    let real = real.unwrap_or(0);
    let pick = [
        0,
        1,
        2,
        u64::MAX,
        u64::MAX - 1,
        u64::from(u32::MAX),
        u64::from(u32::MAX) + 1,
        u64::from(u32::MAX) - 1,
        u64::from(u16::MAX),
        u64::from(u16::MAX) + 1,
        255,
        256,
        8,
        13,
        0xDA,
        0xC0,
        8_191,
        8_192,
        1 << 62,
        (1 << 62) + 1,
        i64::MAX as u64,
        real.wrapping_add(1),
        real.wrapping_sub(1),
        real.wrapping_mul(2),
        real / 2,
    ];
    match c.below(pick.len() + 2) {
        i if i < pick.len() => json!(pick[i]),
        i if i == pick.len() => json!(-1),
        _ => json!(c.u64()),
    }
}

/// A string truncated, extended, flipped (hex digits stay hex half the time), or swapped
/// for an enum tag.
fn mutate_string(c: &mut Choices, s: &str) -> Value {
    let mut bytes = s.as_bytes().to_vec();
    match c.byte() % 7 {
        0 => bytes.truncate(c.below(bytes.len() + 1)),
        1 => {
            let extra: &[u8] = match c.byte() % 4 {
                0 => b"0",
                1 => b"00",
                2 => b"ff",
                _ => b"zz",
            };
            let at = c.below(bytes.len() + 1);
            bytes.splice(at..at, extra.iter().copied());
        }
        2 if !bytes.is_empty() => {
            let at = c.below(bytes.len());
            const HEX: &[u8] = b"0123456789abcdef";
            bytes[at] = HEX[c.below(HEX.len())];
        }
        3 if !bytes.is_empty() => {
            let at = c.below(bytes.len());
            bytes[at] ^= 1 << (c.byte() % 7);
        }
        4 => {
            let copy = bytes.clone();
            bytes.extend_from_slice(&copy);
        }
        _ => return json!(TAGS[c.below(TAGS.len())]),
    }
    json!(String::from_utf8_lossy(&bytes))
}

/// Applies one to four structure-aware mutations to `v`; `others` lend nodes to graft.
pub fn mutate(v: &mut Value, c: &mut Choices, others: &[Sample]) {
    for _ in 0..1 + c.byte() % 4 {
        let mut all = Vec::new();
        paths(v, &mut Vec::new(), &mut all);
        let path = all.swap_remove(c.below(all.len()));
        let op = c.byte();
        // A node from the same place in another sample, or from anywhere in one.
        if op % 8 == 7 && !others.is_empty() {
            let donor = &others[c.below(others.len())].json;
            let graft = match node(donor, &path) {
                Some(n) if c.byte().is_multiple_of(2) => Some(n.clone()),
                _ => {
                    let mut theirs = Vec::new();
                    paths(donor, &mut Vec::new(), &mut theirs);
                    node(donor, &theirs[c.below(theirs.len())]).cloned()
                }
            };
            if let (Some(graft), Some(target)) = (graft, node_mut(v, &path)) {
                *target = graft;
            }
            continue;
        }
        // Remove the field (or array entry) itself.
        if op % 8 == 6 && !path.is_empty() {
            let (last, parent) = path.split_last().unwrap();
            match (node_mut(v, parent), last) {
                (Some(Value::Object(map)), Step::Key(k)) => {
                    map.remove(k);
                }
                (Some(Value::Array(items)), Step::Index(i)) if *i < items.len() => {
                    items.remove(*i);
                }
                _ => {}
            }
            continue;
        }
        let Some(target) = node_mut(v, &path) else {
            continue;
        };
        *target = match target {
            Value::Number(n) => boundary_number(c, n.as_u64()),
            Value::String(s) => mutate_string(c, s),
            Value::Bool(b) => json!(!*b),
            Value::Null => match c.byte() % 4 {
                0 => json!(0),
                1 => json!({"width": 1, "height": 1, "component_ids": [1]}),
                2 => json!({"width": 1, "height": 1, "bit_depth": 8, "colour_type": 3}),
                _ => json!(""),
            },
            Value::Array(items) => {
                let mut items = items.clone();
                match c.byte() % 4 {
                    0 if !items.is_empty() => {
                        items.remove(c.below(items.len()));
                    }
                    1 if !items.is_empty() => {
                        let i = c.below(items.len());
                        items.insert(i, items[i].clone());
                    }
                    2 => items.clear(),
                    _ => items.push(boundary_number(c, None)),
                }
                Value::Array(items)
            }
            Value::Object(map) => match c.byte() % 3 {
                0 => Value::Null,
                1 => json!({"Entropy": {"ff": c.byte().is_multiple_of(2)}}),
                _ => Value::Object(map.clone()),
            },
        };
    }
}

/// The bytes after the saved position: the rest of the file (whole, with a byte
/// changed, or cut short) or the fuzz bytes.
fn continuation(c: &mut Choices, sample: &Sample) -> Vec<u8> {
    let data = &files()[sample.file].1;
    let mut rest = data.get(sample.at..).unwrap_or_default().to_vec();
    match c.byte() % 4 {
        0 => {}
        1 if !rest.is_empty() => {
            let i = c.below(rest.len());
            rest[i] ^= c.byte() | 1;
        }
        2 => rest.truncate(c.below(rest.len() + 1)),
        _ => rest = c.rest().to_vec(),
    }
    rest
}

/// Feeds `data` to `f` in pieces of a chosen length.
fn in_pieces(c: &mut Choices, data: &[u8], mut f: impl FnMut(&[u8]) -> bool) {
    let step = 1 + c.below(4_096);
    for piece in data.chunks(step) {
        if !f(piece) {
            return;
        }
    }
}

fn exercise_validator(json: &Value, policy: &Policy, c: &mut Choices, sample: &Sample) {
    let Ok(state) = serde_json::from_value::<ValidatorState>(json.clone()) else {
        return;
    };
    let Ok(mut v) = state.restore(&policy.limits) else {
        return;
    };
    let more = continuation(c, sample);
    let mut ok = true;
    in_pieces(c, &more, |piece| {
        ok = v.update(piece).is_ok();
        ok
    });
    if ok {
        // What a restored validator saves restores again, under the same limits.
        let again = v.save().expect("the crate's validators save");
        let back = again.restore(&policy.limits);
        assert!(
            back.is_ok(),
            "a state saved after a restore: {:?}",
            back.err()
        );
        let _ = v.finish();
    }
}

fn exercise_inspector(json: &Value, policy: &Policy, c: &mut Choices, sample: &Sample) {
    let Ok(state) = serde_json::from_value::<InspectorState>(json.clone()) else {
        return;
    };
    let Ok(mut insp) = Inspector::restore(policy, state) else {
        return;
    };
    let more = continuation(c, sample);
    in_pieces(c, &more, |piece| insp.update(piece).is_ok());
    if let Ok(again) = insp.save() {
        let back = Inspector::restore(policy, again);
        assert!(
            back.is_ok(),
            "a state saved after a restore: {:?}",
            back.err()
        );
    }
    let _ = insp.finish();
}

fn exercise_session(json: &Value, policy: &Policy, c: &mut Choices, sample: &Sample) {
    let Ok(record) = serde_json::from_value::<SessionRecord>(json.clone()) else {
        return;
    };
    let Ok(mut session) = UploadSession::restore(policy, record) else {
        return;
    };
    let round_trip = |s: &UploadSession| {
        if let Ok(again) = s.save() {
            let back = UploadSession::restore(policy, again);
            assert!(
                back.is_ok(),
                "a record saved after a restore: {:?}",
                back.err()
            );
        }
    };
    round_trip(&session);
    let _ = session.expire_if_idle(now(), Duration::from_secs(600));
    let more = continuation(c, sample);
    let left = session.file_size().saturating_sub(session.received()) as usize;
    let cut = c.below(more.len().min(left) + 1);
    let (ty, size, id) = (
        session.file_type().to_owned(),
        session.file_size(),
        Some(session.id().to_string()),
    );
    // The next chunk, a retry of it (or of the last one), then the rest as `finish`.
    let number = match c.byte() % 4 {
        0 => session.next_number().saturating_sub(1),
        1 => session.next_number().saturating_add(1),
        _ => session.next_number(),
    };
    let name = session.file_name().to_owned();
    let mut first = chunk_request(
        ChunkAction::Resume,
        id.clone(),
        number,
        &more[..cut],
        &ty,
        size,
    );
    first.file_name = name.clone();
    let _ = session.receive(&first, now());
    let _ = session.receive(&first, now());
    round_trip(&session);
    let mut last = chunk_request(
        ChunkAction::Finish,
        id,
        session.next_number(),
        &more[cut..],
        &ty,
        size,
    );
    last.file_name = name;
    if let Ok(Received::Last { .. }) = session.receive(&last, now()) {
        session.committed("attachment-2");
        let _ = session.receive(&last, now());
    }
    round_trip(&session);
}

/// One run: `data` picks a sample, mutates it, restores it under three policies and
/// carries on. Panics only where a check of this module fails (or the code under test
/// panics).
pub fn run(data: &[u8]) {
    let all = samples();
    let mut c = Choices::new(data);
    // A kind first, so that the many validator samples do not crowd out the others.
    let kind = [Kind::Session, Kind::Inspector, Kind::Validator][usize::from(c.byte() % 3)];
    let of_kind: Vec<&Sample> = all.iter().filter(|s| s.kind == kind).collect();
    let sample = of_kind[c.below(of_kind.len())];
    let mut json = sample.json.clone();
    // Now and then the sample as saved: its restore must succeed.
    let pristine = c.byte().is_multiple_of(16);
    if !pristine {
        mutate(&mut json, &mut c, all);
    }
    for policy in [policy_start(), policy_tight(), policy_decode()] {
        match sample.kind {
            Kind::Validator => exercise_validator(&json, &policy, &mut c, sample),
            Kind::Inspector => exercise_inspector(&json, &policy, &mut c, sample),
            Kind::Session => exercise_session(&json, &policy, &mut c, sample),
        }
    }
    if pristine {
        let policy = policy_start();
        let restored = match sample.kind {
            Kind::Validator => serde_json::from_value::<ValidatorState>(json)
                .unwrap()
                .restore(&policy.limits)
                .err(),
            Kind::Inspector => {
                Inspector::restore(&policy, serde_json::from_value(json).unwrap()).err()
            }
            Kind::Session => {
                UploadSession::restore(&policy, serde_json::from_value(json).unwrap()).err()
            }
        };
        assert!(restored.is_none(), "a state as saved: {restored:?}");
    }
}

/// One input of the `session_record` fuzz target: raw JSON when it starts with `{`, else
/// choices for [`run`].
pub fn session_record(data: &[u8]) {
    if data.first() == Some(&b'{') {
        raw_record(data);
    } else {
        run(data);
    }
}

/// Any bytes as a `SessionRecord` (or an `InspectorState`), restored under two policies,
/// then fed the next chunk. A damaged or forged record is refused with an error, never a
/// panic; a restored session saves again to a record that restores to the same counters.
pub fn raw_record(data: &[u8]) {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (record, rest) = (&data[..split], data.get(split + 1..).unwrap_or(&[]));
    let policies = [
        Policy::chat().with_limits(Limits::connectivity()),
        Policy::connectivity(),
    ];
    if let Ok(saved) = serde_json::from_slice::<SessionRecord>(record) {
        for policy in &policies {
            let Ok(mut session) = UploadSession::restore(policy, saved.clone()) else {
                continue;
            };
            // Saving again gives a record that restores to the same place.
            if let Ok(again) = session.save() {
                let back = UploadSession::restore(policy, again).expect("a saved record restores");
                assert_eq!(back.next_number(), session.next_number());
                assert_eq!(back.received(), session.received());
            }
            let _ = session.expire_if_idle(now(), Duration::from_secs(600));
            let left = session.file_size().saturating_sub(session.received());
            let action = if rest.len() as u64 >= left {
                ChunkAction::Finish
            } else {
                ChunkAction::Resume
            };
            let mut req = chunk_request(
                action,
                Some(session.id().to_string()),
                session.next_number(),
                rest,
                session.file_type(),
                session.file_size(),
            );
            req.file_name = session.file_name().to_owned();
            let _ = session.receive(&req, now());
            let _ = session.save();
        }
    }
    if let Ok(state) = serde_json::from_slice::<InspectorState>(record) {
        for policy in &policies {
            if let Ok(mut insp) = Inspector::restore(policy, state.clone()) {
                let _ = insp.update(rest);
                let _ = insp.finish();
            }
        }
    }
}
