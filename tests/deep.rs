//! The deep level (feature `decode`): a full decode catches corrupt compressed data and
//! refuses decompression bombs before allocating their pixels.
#![cfg(feature = "decode")]

mod common;

use std::time::Instant;

use attachments::error::ImageLimit;
use attachments::{Depth, Error, Inspector, Policy};
use common::*;

fn inspect(policy: &Policy, ty: &str, file: &[u8]) -> Result<attachments::Inspection, Error> {
    let mut insp = Inspector::new(policy, ty, Some(file.len() as u64))?;
    for slice in file.chunks(1000) {
        insp.update(slice)?;
    }
    insp.finish()
}

fn deep() -> Policy {
    Policy::connectivity().with_depth(Depth::Decode)
}

#[test]
fn real_images_pass_the_full_decode() {
    for (colour, depth) in png_formats() {
        let file = real_png(21, 13, colour, depth);
        let seen = inspect(&deep(), "image/png", &file)
            .unwrap_or_else(|e| panic!("{colour:?} {depth:?}: {e}"));
        assert_eq!(seen.info.dimensions, Some((21, 13)));
    }
    assert!(inspect(&deep(), "image/png", &interlaced_png(17, 9).0).is_ok());
    assert!(inspect(&deep(), "image/png", &real_apng(8, 8)).is_ok());
    for file in [
        real_jpeg(40, 24, jpeg_encoder::ColorType::Rgb, true, 0),
        real_jpeg(40, 24, jpeg_encoder::ColorType::Cmyk, false, 0),
        real_jpeg(128, 96, jpeg_encoder::ColorType::Luma, false, 1),
        image_crate_jpeg(30, 20),
    ] {
        inspect(&deep(), "image/jpeg", &file).unwrap();
    }
}

#[test]
fn corrupt_compressed_data_passes_the_structure_but_not_the_decode() {
    // Right CRCs, garbage zlib stream.
    let file = structural_png(5000);
    assert!(inspect(&Policy::connectivity(), "image/png", &file).is_ok());
    let err = inspect(&deep(), "image/png", &file).unwrap_err();
    assert!(err.to_string().contains("full decode failed"), "{err}");

    // A real PNG whose zlib stream is damaged, with the CRC recomputed to match.
    let file = real_png(32, 32, png::ColorType::Rgb, png::BitDepth::Eight);
    let (at, _, len) = png_chunks(&file)
        .into_iter()
        .find(|c| &c.1 == b"IDAT")
        .unwrap();
    let mut data = file[at + 8..at + 8 + len].to_vec();
    let mid = data.len() / 2;
    data[mid] ^= 0xFF;
    let mut broken = file[..at].to_vec();
    png_chunk(&mut broken, b"IDAT", &data);
    broken.extend_from_slice(&file[at + 12 + len..]);
    assert!(
        inspect(&Policy::connectivity(), "image/png", &broken).is_ok(),
        "structure is intact"
    );
    assert!(matches!(
        inspect(&deep(), "image/png", &broken),
        Err(Error::InvalidContent { .. })
    ));
}

#[test]
fn a_decompression_bomb_is_refused_before_its_pixels_are_allocated() {
    // 30000 x 30000 RGBA: 3.6 GB of pixels from a file of under 100 bytes.
    let mut file = PNG_SIGNATURE.to_vec();
    png_chunk(&mut file, b"IHDR", &ihdr(30_000, 30_000, 8, 6, 0));
    png_chunk(&mut file, b"IDAT", &zlib_stored(&[0; 16]));
    png_chunk(&mut file, b"IEND", &[]);
    let mut policy = deep();
    policy.limits.image.max_pixels = u64::MAX; // let it past the structural limit
    let started = Instant::now();
    let err = inspect(&policy, "image/png", &file).unwrap_err();
    assert_eq!(
        err,
        Error::ImageLimit {
            what: ImageLimit::DecodeMemory,
            value: 3_600_000_000,
            limit: 512 << 20
        }
    );
    assert!(started.elapsed().as_secs() < 2, "refused without decoding");
    // The structural level alone refuses it at the header with the default limits.
    let err = inspect(&Policy::connectivity(), "image/png", &file).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ImageLimit {
                what: ImageLimit::Pixels,
                ..
            }
        ),
        "{err}"
    );
}

/// `file` with its IDAT chunks' data joined, changed by `change`, and written back as one
/// IDAT (CRC recomputed, so the structure stays valid).
fn with_image_data(file: &[u8], change: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let chunks = png_chunks(file);
    let mut data: Vec<u8> = chunks
        .iter()
        .filter(|c| &c.1 == b"IDAT")
        .flat_map(|(at, _, len)| file[at + 8..at + 8 + len].to_vec())
        .collect();
    change(&mut data);
    let mut out = file[..8].to_vec();
    let mut written = false;
    for (at, ty, len) in chunks {
        if &ty == b"IDAT" {
            if !written {
                png_chunk(&mut out, b"IDAT", &data);
                written = true;
            }
        } else {
            out.extend_from_slice(&file[at..at + 12 + len]);
        }
    }
    out
}

/// The deep level checks the whole zlib stream of a PNG's image data (issue: PNGs with a
/// bad Adler-32, or zlib data after the image, passed the decode as they do in libspng's
/// and Go's test images): the structure passes, the deep level names the fault.
#[test]
fn a_bad_adler32_or_data_after_the_zlib_stream_fails_the_deep_level() {
    let file = real_png(32, 32, png::ColorType::Rgb, png::BitDepth::Eight);
    assert!(inspect(&deep(), "image/png", &file).is_ok());
    // The checksum is the stream's last four bytes.
    let bad_adler = with_image_data(&file, |d| {
        let last = d.len() - 1;
        d[last] ^= 0x55;
    });
    assert!(inspect(&Policy::connectivity(), "image/png", &bad_adler).is_ok());
    let err = inspect(&deep(), "image/png", &bad_adler).unwrap_err();
    assert!(err.to_string().contains("not a valid zlib stream"), "{err}");
    // Bytes after the stream's end, in the same IDAT.
    let trailing = with_image_data(&file, |d| d.extend_from_slice(b"\x78\x9c junk"));
    assert!(inspect(&Policy::connectivity(), "image/png", &trailing).is_ok());
    let err = inspect(&deep(), "image/png", &trailing).unwrap_err();
    assert!(
        err.to_string()
            .contains("7 bytes of image data follow the end of its zlib stream"),
        "{err}"
    );
    // A stream cut before its checksum.
    let cut = with_image_data(&file, |d| d.truncate(d.len() - 4));
    let err = inspect(&deep(), "image/png", &cut).unwrap_err();
    assert!(
        err.to_string().contains("zlib stream does not end"),
        "{err}"
    );
    // Split over many IDATs, as encoders write large images: still whole.
    let big = real_png(300, 200, png::ColorType::Rgba, png::BitDepth::Sixteen);
    assert!(png_chunks(&big).iter().filter(|c| &c.1 == b"IDAT").count() >= 1);
    assert!(inspect(&deep(), "image/png", &big).is_ok());
}
