//! Writes the fuzz targets' seed corpus from the fixtures when `WRITE_FUZZ_CORPUS` is set,
//! and otherwise checks that the committed seeds still pass the validators (so the seeds
//! stay valid starting points as the fixtures change).

mod common;

use attachments::image::{jpeg::JpegValidator, png::PngValidator};
use attachments::{Limits, Validator};
use common::*;

fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut seeds = vec![
        (
            "png_validator",
            "seed-rgb8",
            real_png(7, 5, png::ColorType::Rgb, png::BitDepth::Eight),
        ),
        (
            "png_validator",
            "seed-indexed4",
            real_png(7, 5, png::ColorType::Indexed, png::BitDepth::Four),
        ),
        ("png_validator", "seed-apng", real_apng(4, 4)),
        ("png_validator", "seed-interlaced", interlaced_png(9, 9).0),
        (
            "jpeg_validator",
            "seed-baseline",
            real_jpeg(16, 8, jpeg_encoder::ColorType::Rgb, false, 0),
        ),
        (
            "jpeg_validator",
            "seed-progressive",
            real_jpeg(16, 16, jpeg_encoder::ColorType::Rgb, true, 0),
        ),
        (
            "jpeg_validator",
            "seed-restarts",
            real_jpeg(32, 32, jpeg_encoder::ColorType::Luma, false, 1),
        ),
        (
            "jpeg_validator",
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
        let mut v: Box<dyn Validator> = if target == "png_validator" {
            Box::new(PngValidator::new(&Limits::connectivity(), false))
        } else {
            Box::new(JpegValidator::new(&Limits::connectivity(), false))
        };
        v.update(&stored[1..])
            .and_then(|()| v.finish())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
