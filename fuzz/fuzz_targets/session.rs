//! Random sequences of upload-session operations (start, resume, finish, retries, chunks
//! with arbitrary numbers, sizes and bytes, expiry, concurrent check-outs): never a panic,
//! and a commit only ever covers exactly the bytes the session accepted, in order, with
//! their SHA-256.
#![no_main]

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use attachments::codec::base64::encode_to;
use attachments::digest::sha256;
use attachments::upload::{RandomId, Received, Sessions, UploadSession};
use attachments::wire::Base64Text;
use attachments::wire::connectivity::{Chunk, ChunkAction, ChunkAttachment};
use attachments::{Limits, Policy};
use libfuzzer_sys::fuzz_target;

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn num(&mut self, max: u64) -> u64 {
        let v = u64::from(self.byte()) << 8 | u64::from(self.byte());
        if max == 0 { 0 } else { v % (max + 1) }
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fn b64(data: &[u8]) -> String {
    let mut out = Vec::new();
    encode_to(data, &mut out);
    String::from_utf8(out).unwrap()
}

fn request(
    action: ChunkAction,
    id: Option<String>,
    number: u64,
    size: u64,
    text: String,
    file_size: u64,
) -> ChunkAttachment<'static> {
    ChunkAttachment {
        action,
        upload_id: id,
        chunk: Chunk {
            chunk_number: number,
            chunk_content: Base64Text::from(text),
            chunk_size: size,
        },
        file_type: "application/octet-stream".into(),
        file_size,
        file_name: "f.bin".into(),
    }
}

/// What the model knows of one upload: the file it sends and the bytes accepted so far.
struct Model {
    file: Vec<u8>,
    accepted: Vec<u8>,
    next: u64,
    last: Option<(u64, ChunkAction, std::ops::Range<usize>)>,
}

fuzz_target!(|data: &[u8]| {
    let mut limits = Limits::connectivity();
    limits.max_single_size = 8;
    limits.max_chunked_size = Some(4096);
    limits.max_chunk_size = 512;
    let policy = Policy::chat().with_limits(limits);
    let mut input = Bytes(data);
    let mut now = SystemTime::UNIX_EPOCH;
    let mut sessions = Sessions::new(Duration::from_secs(100));
    let mut models: HashMap<RandomId, Model> = HashMap::new();
    let mut ids: Vec<RandomId> = Vec::new();
    let mut serial = 0u8;

    let check = |received: &Received, model: &mut Model| match received {
        Received::Chunk { offset, data, .. } | Received::Last { offset, data, .. } => {
            assert_eq!(
                *offset as usize,
                model.accepted.len(),
                "chunks are contiguous"
            );
            model.accepted.extend_from_slice(data);
            if let Received::Last { attachment, .. } = received {
                assert_eq!(attachment.size as usize, model.accepted.len());
                assert_eq!(
                    attachment.sha256,
                    sha256(&model.accepted),
                    "commit = accepted bytes"
                );
                assert_eq!(
                    model.accepted, model.file,
                    "only the file's own bytes are accepted"
                );
            }
        }
        _ => {}
    };

    while !input.0.is_empty() {
        match input.byte() % 7 {
            0 => {
                // Start a new upload of a file of 9..=4096 bytes.
                let size = 9 + input.num(4087) as usize;
                let mut file = input.take(size).to_vec();
                file.resize(size, serial);
                let len = (1 + input.num(511) as usize).min(size);
                serial = serial.wrapping_add(1);
                let id = RandomId::from_bytes([serial; 16]);
                let req = request(
                    ChunkAction::Start,
                    None,
                    0,
                    len as u64,
                    b64(&file[..len]),
                    size as u64,
                );
                if let Ok((session, received)) = UploadSession::start(&policy, id, &req, now) {
                    let mut model = Model {
                        file,
                        accepted: Vec::new(),
                        next: 1,
                        last: Some((0, ChunkAction::Start, 0..len)),
                    };
                    check(&received, &mut model);
                    models.insert(id, model);
                    sessions.insert(session);
                    ids.push(id);
                }
            }
            op @ (1..=4) => {
                // The next chunk done right (1), as finish (2), a retry (3), or anything (4).
                let Some(&id) = ids.get(input.num(ids.len() as u64) as usize) else {
                    continue;
                };
                let model = models.get_mut(&id).unwrap();
                let size = model.file.len();
                let from = model.accepted.len().min(size);
                let req = match op {
                    1 | 2 => {
                        let len = (1 + input.num(511) as usize).min(size - from);
                        let action = if op == 2 || from + len == size {
                            ChunkAction::Finish
                        } else {
                            ChunkAction::Resume
                        };
                        model.last = Some((model.next, action, from..from + len));
                        request(
                            action,
                            Some(id.to_string()),
                            model.next,
                            len as u64,
                            b64(&model.file[from..from + len]),
                            size as u64,
                        )
                    }
                    3 => {
                        let Some((n, action, range)) = model.last.clone() else {
                            continue;
                        };
                        request(
                            action,
                            Some(id.to_string()),
                            n,
                            range.len() as u64,
                            b64(&model.file[range]),
                            size as u64,
                        )
                    }
                    _ => {
                        let action = [ChunkAction::Start, ChunkAction::Resume, ChunkAction::Finish]
                            [input.byte() as usize % 3];
                        let n = input.num(20);
                        let declared = input.num(600);
                        let raw_len = input.num(700) as usize;
                        let raw = input.take(raw_len).to_vec();
                        let text = if input.byte() % 2 == 0 {
                            b64(&raw)
                        } else {
                            String::from_utf8_lossy(&raw).into_owned()
                        };
                        let file_size = if input.byte() % 4 == 0 {
                            input.num(5000)
                        } else {
                            size as u64
                        };
                        request(action, Some(id.to_string()), n, declared, text, file_size)
                    }
                };
                let Ok(mut session) =
                    sessions.check_out(&id.to_string(), req.chunk.chunk_number, now)
                else {
                    continue;
                };
                let result = session.receive(&req, now);
                if let Ok(received) = &result {
                    if !matches!(received, Received::Repeat { .. }) {
                        // Only bytes of the model's own file can be accepted, since the
                        // model checks the total against the file at commit; random chunks
                        // that happen to be accepted are recorded as what they are.
                        if op == 4 {
                            let data = received_data(received);
                            model.file.splice(
                                model.accepted.len()..(model.accepted.len() + data.len()).min(size),
                                data.iter().copied(),
                            );
                            model.file.truncate(size);
                        }
                        model.next += 1;
                        check(received, model);
                    }
                    if let Received::Last { .. } = received {
                        session.committed(format!("att-{serial}"));
                    }
                } else if session.failure().is_some() {
                    assert!(
                        session.receive(&req, now).is_err(),
                        "a failed session stays failed"
                    );
                }
                sessions.check_in(session);
            }
            5 => now += Duration::from_secs(input.num(150)),
            _ => {
                let _ = sessions.expire(now);
                if let Some(&id) = ids.first() {
                    if let Ok(s) = sessions.check_out(&id.to_string(), 0, now) {
                        assert!(sessions.check_out(&id.to_string(), 0, now).is_err(), "busy");
                        sessions.check_in(s);
                    }
                }
            }
        }
    }
});

fn received_data(r: &Received) -> Vec<u8> {
    r.data().map(|d| d.to_vec()).unwrap_or_default()
}
