//! Writes the fuzz targets' seed corpus from the fixtures when `WRITE_FUZZ_CORPUS` is set,
//! and otherwise checks that the committed seeds still pass the validators (so the seeds
//! stay valid starting points as the fixtures change) and runs the tokenizer targets'
//! checks on them.

mod common;
#[path = "common/saved_states.rs"]
mod saved_states;
#[path = "common/tokens.rs"]
mod tokens;

use attachments::image::{jpeg::JpegValidator, png::PngValidator};
use attachments::{Limits, Validator};
use common::*;

fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut seeds = vec![
        (
            "png_tokenizer",
            "seed-rgb8",
            real_png(7, 5, png::ColorType::Rgb, png::BitDepth::Eight),
        ),
        (
            "png_tokenizer",
            "seed-indexed4",
            real_png(7, 5, png::ColorType::Indexed, png::BitDepth::Four),
        ),
        ("png_tokenizer", "seed-apng", real_apng(4, 4)),
        ("png_tokenizer", "seed-interlaced", interlaced_png(9, 9).0),
        (
            "jpeg_tokenizer",
            "seed-baseline",
            real_jpeg(16, 8, jpeg_encoder::ColorType::Rgb, false, 0),
        ),
        (
            "jpeg_tokenizer",
            "seed-progressive",
            real_jpeg(16, 16, jpeg_encoder::ColorType::Rgb, true, 0),
        ),
        (
            "jpeg_tokenizer",
            "seed-restarts",
            real_jpeg(32, 32, jpeg_encoder::ColorType::Luma, false, 1),
        ),
        (
            "jpeg_tokenizer",
            "seed-cmyk",
            real_jpeg(8, 8, jpeg_encoder::ColorType::Cmyk, false, 0),
        ),
    ];
    // Each target's input starts with a slice-length byte.
    for seed in &mut seeds {
        seed.2.insert(0, 7);
    }
    seeds
}

#[test]
fn committed_seeds_are_valid_images() {
    let write = std::env::var_os("WRITE_FUZZ_CORPUS").is_some();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (target, name, data) in seeds() {
        let path = dir.join(target).join(name);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &data).unwrap();
        }
        let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut v: Box<dyn Validator> = if target == "png_tokenizer" {
            Box::new(PngValidator::new(&Limits::connectivity().image, false))
        } else {
            Box::new(JpegValidator::new(&Limits::connectivity().image, false))
        };
        v.update(&stored[1..])
            .and_then(|()| v.finish())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // What the target checks: any split, the same events and verdicts.
        let step = usize::from(stored[0]) + 1;
        tokens::check_split_independence(
            target == "png_tokenizer",
            &stored[1..],
            step,
            &[stored.len() / 3, stored.len() / 2],
        );
    }
}

/// Seeds of the `session_record` target: a saved session as JSON, a newline, then the
/// bytes of the next chunk. The sessions hold a JPEG, a PNG and an untyped upload after
/// their first chunk.
fn session_record_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use attachments::Policy;
    use attachments::upload::{RandomId, UploadSession};
    use attachments::wire::{self, connectivity::ChunkRequest};

    let cases = [
        ("seed-jpeg", "image/jpeg", exact_jpeg(1_200_000), 700_000),
        ("seed-png", "image/png", structural_png(1_100_000), 1_000),
        (
            "seed-bin",
            "application/octet-stream",
            noise(1_050_000, 3),
            1_000,
        ),
    ];
    let policy = Policy::chat().with_limits(Limits::connectivity());
    cases
        .into_iter()
        .map(|(name, ty, file, first)| {
            let mut content = Vec::new();
            attachments::codec::base64::encode_to(&file[..first], &mut content);
            let body = serde_json::json!({"attachment": {
                "action": "start", "file_name": "seed", "file_type": ty,
                "file_size": file.len(),
                "chunk": {"chunk_number": 0, "chunk_size": first,
                          "chunk_content": String::from_utf8(content).unwrap()}}})
            .to_string();
            let req: ChunkRequest<'_> = wire::from_slice(body.as_bytes()).unwrap();
            let now = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1 << 30);
            let (session, _) =
                UploadSession::start(&policy, RandomId::from_bytes([5; 16]), &req.attachment, now)
                    .unwrap();
            let mut seed = serde_json::to_vec(&session.save().unwrap()).unwrap();
            seed.push(b'\n');
            seed.extend_from_slice(&file[first..first + 600]);
            (name, seed)
        })
        .collect()
}

#[test]
fn committed_session_record_seeds_restore() {
    use attachments::upload::{SessionRecord, UploadSession};
    let write = std::env::var_os("WRITE_FUZZ_CORPUS").is_some();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/session_record");
    let policy = attachments::Policy::chat().with_limits(Limits::connectivity());
    for (name, data) in session_record_seeds() {
        let path = dir.join(name);
        if write {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &data).unwrap();
        }
        let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let split = stored.iter().position(|&b| b == b'\n').unwrap();
        let record: SessionRecord = serde_json::from_slice(&stored[..split]).unwrap();
        let session =
            UploadSession::restore(&policy, record).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(session.next_number(), 1, "{name}");
    }
}

/// Every committed input of the `session_record` target (its seeds, and the inputs that
/// once found a defect) runs through the target's own code, without a panic.
#[test]
fn committed_session_record_inputs_replay() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/session_record");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("seed-") {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        saved_states::session_record(&data);
        replayed += 1;
    }
    assert!(replayed >= 10, "{replayed} inputs in {}", dir.display());
}
