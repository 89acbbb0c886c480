//! The PNG and JPEG tokenizers: the events of real files, data handed out in bulk and
//! borrowed, CRCs reported, gathering bounded, saved states checked, the dimension reader
//! on top; and, for any split of any file (real ones, damaged ones), the same event stream
//! and the same validator verdict as fed whole.

mod common;
#[path = "common/tokens.rs"]
mod tokens;

use attachments::image::{DimensionReader, jpeg, png};
use attachments::{Error, MediaType};
use common::*;
use jpeg_encoder::ColorType;
use proptest::prelude::*;

fn png_fixtures() -> Vec<Vec<u8>> {
    let mut all: Vec<Vec<u8>> = png_formats()
        .into_iter()
        .map(|(c, d)| real_png(9, 5, c, d))
        .collect();
    all.push(real_apng(8, 8));
    all.push(interlaced_png(10, 10).0);
    all
}

fn jpeg_fixtures() -> Vec<Vec<u8>> {
    vec![
        image_crate_jpeg(33, 17),
        real_jpeg(40, 24, ColorType::Rgb, false, 0),
        real_jpeg(31, 9, ColorType::Luma, false, 0),
        real_jpeg(48, 32, ColorType::Rgb, true, 0),
        real_jpeg(24, 16, ColorType::Cmyk, false, 0),
        real_jpeg(24, 16, ColorType::CmykAsYcck, false, 0),
        real_jpeg(128, 96, ColorType::Rgb, false, 1),
        real_jpeg(64, 48, ColorType::Rgb, true, 1),
    ]
}

/// Every event of `file`, as text, with data events reduced to their lengths.
fn png_events(tokens: &mut png::Tokenizer, file: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    tokens
        .feed(file, |_, event| {
            out.push(match event {
                png::Event::Data(d) => format!("data {}", d.len()),
                other => format!("{other:?}"),
            });
            Ok::<_, png::TokenError>(())
        })
        .unwrap();
    out
}

#[test]
fn png_events_name_every_chunk_with_its_offset_and_crc() {
    let file = real_png(4, 4, ::png::ColorType::Rgb, ::png::BitDepth::Eight);
    let chunks = png_chunks(&file);
    let mut tokens = png::Tokenizer::new();
    let events = png_events(&mut tokens, &file);
    tokens.finish().unwrap();
    assert_eq!(events[0], "Signature");
    assert_eq!(events.last().unwrap(), "End");
    let begins: Vec<String> = events
        .iter()
        .filter(|e| e.starts_with("ChunkBegin"))
        .cloned()
        .collect();
    assert_eq!(begins.len(), chunks.len());
    for ((at, ty, len), event) in chunks.iter().zip(&begins) {
        let want = png::ChunkHeader {
            chunk_type: *ty,
            length: *len as u32,
            at: *at as u64,
        };
        assert_eq!(*event, format!("{:?}", png::Event::ChunkBegin(want)));
    }
    assert!(
        events
            .iter()
            .filter(|e| e.starts_with("ChunkEnd"))
            .all(|e| e.contains("Match")),
        "{events:?}"
    );
}

#[test]
fn a_bad_crc_is_reported_not_refused_and_not_computed_when_unchecked() {
    let mut file = real_png(4, 4, ::png::ColorType::Rgb, ::png::BitDepth::Eight);
    let (at, _, len) = png_chunks(&file)
        .into_iter()
        .find(|c| &c.1 == b"IDAT")
        .unwrap();
    let stored = u32::from_be_bytes(file[at + 8 + len..at + 12 + len].try_into().unwrap());
    file[at + 8 + len] ^= 1;
    let mut tokens = png::Tokenizer::new();
    let events = png_events(&mut tokens, &file);
    tokens.finish().unwrap();
    let crc = png::Crc::Mismatch {
        stored: stored ^ 0x0100_0000,
        computed: stored,
    };
    assert!(
        events.iter().any(|e| e.contains(&format!("{crc:?}"))),
        "{events:?}"
    );
    let mut unchecked = png::Tokenizer::without_crc_check();
    let events = png_events(&mut unchecked, &file);
    assert!(events.iter().all(|e| !e.contains("Match")), "{events:?}");
    assert!(events.iter().any(|e| e.contains("Unchecked")), "{events:?}");
}

#[test]
fn data_is_borrowed_from_the_input_in_as_few_events_as_the_slices_allow() {
    // A 1 MiB PNG of 64 KiB IDAT chunks fed in 64 KiB slices: a few data events per chunk.
    let file = structural_png(1 << 20);
    let mut tokens = png::Tokenizer::new();
    let (mut data_events, mut data_bytes) = (0, 0);
    for slice in file.chunks(64 * 1024) {
        let range = slice.as_ptr_range();
        tokens
            .feed(slice, |_, event| {
                if let png::Event::Data(d) = event {
                    assert!(range.contains(&d.as_ptr()), "a slice of the input");
                    data_events += 1;
                    data_bytes += d.len();
                }
                Ok::<_, png::TokenError>(())
            })
            .unwrap();
    }
    tokens.finish().unwrap();
    let chunks = png_chunks(&file).len();
    assert!(
        data_events <= 2 * chunks + 16,
        "{data_events} for {chunks} chunks"
    );
    assert_eq!(
        data_bytes,
        png_chunks(&file).iter().map(|c| c.2).sum::<usize>()
    );

    // A 1 MiB JPEG: the entropy-coded data (0xFF stuffed about every 256 bytes) comes in
    // one event per slice, not one per 0xFF.
    let file = structural_jpeg(1 << 20);
    let mut tokens = jpeg::Tokenizer::new();
    let mut entropy = Vec::new();
    let mut events = 0;
    for slice in file.chunks(64 * 1024) {
        tokens
            .feed(slice, |_, event| {
                events += 1;
                if let jpeg::Event::Entropy(d) = event {
                    entropy.extend_from_slice(d);
                }
                Ok::<_, jpeg::TokenError>(())
            })
            .unwrap();
    }
    tokens.finish().unwrap();
    assert!(events < 64, "{events} events");
    let sos = jpeg_segments(&file).last().unwrap().0 + 14;
    assert_eq!(entropy, file[sos..file.len() - 2]);
}

#[test]
fn restart_markers_and_fill_bytes_are_events_of_their_own() {
    let file = real_jpeg(128, 96, ColorType::Rgb, false, 1);
    let mut tokens = jpeg::Tokenizer::new();
    let mut restarts = Vec::new();
    tokens
        .feed(&file, |_, event| {
            if let jpeg::Event::Restart { n, at } = event {
                assert_eq!(file[at as usize..at as usize + 2], [0xFF, 0xD0 + n]);
                restarts.push(n);
            }
            Ok::<_, jpeg::TokenError>(())
        })
        .unwrap();
    tokens.finish().unwrap();
    assert!(restarts.len() > 8, "{}", restarts.len());
    assert!(
        restarts
            .iter()
            .enumerate()
            .all(|(i, &n)| n == (i % 8) as u8)
    );

    // 0xFF fill before a marker: the marker is at its last 0xFF inside scan data.
    let mut filled = file.clone();
    let end = filled.len() - 2;
    filled.splice(end..end, [0xFF, 0xFF]);
    let mut tokens = jpeg::Tokenizer::new();
    let mut eoi = None;
    tokens
        .feed(&filled, |_, event| {
            if let jpeg::Event::Eoi { at } = event {
                eoi = Some(at);
            }
            Ok::<_, jpeg::TokenError>(())
        })
        .unwrap();
    assert_eq!(eoi, Some(filled.len() as u64 - 2));
}

#[test]
fn gathering_is_bounded_and_asked_for() {
    // An APP1 of 60,000 bytes: asked for everything, the tokenizer gathers it all (a
    // segment body is at most 65,533 bytes); asked for 12, it gathers 12 and hands out
    // the rest as data.
    let mut file = real_jpeg(8, 8, ColorType::Luma, false, 0);
    let body = vec![7u8; 60_000];
    let mut segment = vec![0xFF, 0xE1];
    segment.extend_from_slice(&(body.len() as u16 + 2).to_be_bytes());
    segment.extend_from_slice(&body);
    file.splice(2..2, segment);
    for (ask, gathered) in [(usize::MAX, 60_000), (12, 12), (0, 0)] {
        let mut tokens = jpeg::Tokenizer::new();
        let (mut got, mut data) = (None, 0);
        for slice in file.chunks(1000) {
            tokens
                .feed(slice, |tokens, event| {
                    match event {
                        jpeg::Event::SegmentBegin { marker: 0xE1, .. } => tokens.gather(ask),
                        jpeg::Event::Gathered => got = Some(tokens.gathered().len()),
                        jpeg::Event::Data(d) if got.is_some() || ask == 0 => data += d.len(),
                        _ => {}
                    }
                    Ok::<_, jpeg::TokenError>(())
                })
                .unwrap();
        }
        assert_eq!(got, (gathered > 0).then_some(gathered), "asked {ask}");
        assert!(
            data >= 60_000 - gathered,
            "asked {ask}: {data} bytes of data"
        );
    }
    // PNG: at most MAX_GATHER of a chunk.
    let mut file = PNG_SIGNATURE.to_vec();
    png_chunk(&mut file, b"IHDR", &ihdr(1, 1, 8, 0, 0));
    png_chunk(&mut file, b"zTXt", &vec![1u8; 100_000]);
    let mut tokens = png::Tokenizer::new();
    let mut got = None;
    tokens
        .feed(&file, |tokens, event| {
            match event {
                png::Event::ChunkBegin(h) if &h.chunk_type == b"zTXt" => tokens.gather(1 << 30),
                png::Event::Gathered => got = Some(tokens.gathered().len()),
                _ => {}
            }
            Ok::<_, png::TokenError>(())
        })
        .unwrap();
    assert_eq!(got, Some(png::MAX_GATHER));
}

#[test]
fn tokenizer_errors_carry_the_validators_texts_and_offsets() {
    let cases: [(&[u8], &str, u64); 4] = [
        (
            b"\xff\xd8\x00",
            "expected a marker (0xFF) but found 0x00",
            2,
        ),
        (b"\xff\xd8\xff\xff\x05", "0xFF 0x05 is not a JPEG marker", 2),
        (
            b"\xff\xd8\xff\xe0\x00\x01",
            "declares a segment length of 1",
            2,
        ),
        (b"GIF89a", "does not start with a JPEG SOI marker", 0),
    ];
    for (file, text, offset) in cases {
        let mut tokens = jpeg::Tokenizer::new();
        let err = tokens
            .feed(file, |_, _| Ok::<_, jpeg::TokenError>(()))
            .unwrap_err();
        assert_eq!(err.offset(), offset, "{err}");
        let err = Error::from(err);
        assert!(err.to_string().contains(text), "{err}");
        // Fatal means fatal.
        let again = tokens.next(b"\xff").unwrap_err();
        assert!(
            matches!(again, jpeg::TokenError::AlreadyFailed(_)),
            "{again:?}"
        );
    }
    let mut tokens = png::Tokenizer::new();
    let err = tokens.next(b"\x89PNX").unwrap_err();
    assert_eq!(err, png::TokenError::Signature { at: 3 });
    let mut tokens = png::Tokenizer::new();
    tokens.next(&PNG_SIGNATURE[..5]).unwrap();
    assert_eq!(
        Error::from(tokens.finish().unwrap_err()).to_string(),
        "the content is not a valid image/png file: the file ends inside the PNG signature \
         (at byte 5)"
    );
}

#[test]
fn a_saved_tokenizer_restores_and_a_forged_one_is_refused() {
    let file = real_jpeg(64, 48, ColorType::Rgb, true, 1);
    for at in [0, 1, 2, 3, 5, 30, 200, file.len() / 2, file.len()] {
        let mut tokens = jpeg::Tokenizer::new();
        tokens
            .feed(&file[..at], |_, _| Ok::<_, jpeg::TokenError>(()))
            .unwrap();
        let json = serde_json::to_value(&tokens).unwrap();
        let mut back: jpeg::Tokenizer = serde_json::from_value(json.clone()).unwrap();
        back.check_restored().unwrap();
        // The restored tokenizer goes on exactly as the one that was saved.
        let rest = |t: &mut jpeg::Tokenizer| {
            let mut events = Vec::new();
            t.feed(&file[at..], |_, e| {
                events.push(format!("{e:?}"));
                Ok::<_, jpeg::TokenError>(())
            })
            .unwrap();
            (events, t.finish())
        };
        assert_eq!(rest(&mut back), rest(&mut tokens), "saved after {at}");
        // Forged: positions past any file, a length read for a marker without one, bytes
        // held that the state cannot hold.
        for patch in [
            serde_json::json!({"progress": {"offset": u64::MAX}}),
            serde_json::json!({"state": "Length", "marker": 0xD0}),
            serde_json::json!({"state": "Soi", "have": 7}),
            serde_json::json!({"marker_at": u64::MAX}),
        ] {
            let mut forged = json.clone();
            for (k, v) in patch.as_object().unwrap() {
                forged[k] = v.clone();
            }
            let forged: jpeg::Tokenizer = serde_json::from_value(forged).unwrap();
            let err = forged.check_restored().unwrap_err();
            assert!(
                matches!(err, Error::CorruptState { .. }),
                "{patch}: {err:?}"
            );
        }
    }
    let png_file = real_png(5, 4, ::png::ColorType::Rgb, ::png::BitDepth::Eight);
    let mut tokens = png::Tokenizer::new();
    tokens
        .feed(&png_file[..40], |_, _| Ok::<_, png::TokenError>(()))
        .unwrap();
    let mut json = serde_json::to_value(&tokens).unwrap();
    let back: png::Tokenizer = serde_json::from_value(json.clone()).unwrap();
    back.check_restored().unwrap();
    json["have"] = serde_json::json!(8);
    let forged: png::Tokenizer = serde_json::from_value(json).unwrap();
    assert!(forged.check_restored().is_err());
}

#[test]
fn the_dimension_reader_stops_at_the_header() {
    for (file, ty, dims) in [
        (
            real_png(13, 7, ::png::ColorType::Rgba, ::png::BitDepth::Eight),
            MediaType::PNG,
            (13, 7),
        ),
        (
            real_jpeg(40, 24, ColorType::Rgb, true, 0),
            MediaType::JPEG,
            (40, 24),
        ),
        (image_crate_jpeg(33, 17), MediaType::JPEG, (33, 17)),
    ] {
        let mut reader = DimensionReader::new(&ty).unwrap();
        let mut first = None;
        for (i, b) in file.iter().enumerate() {
            if let Some(d) = reader.push(std::slice::from_ref(b)).unwrap() {
                first.get_or_insert((i, d));
            }
        }
        let (at, got) = first.expect("dimensions read");
        assert_eq!(got, dims);
        assert!(at < 700, "read by byte {at}");
        assert_eq!(reader.dimensions(), Some(dims));
    }
    let mut reader = DimensionReader::new(&MediaType::PNG).unwrap();
    assert!(reader.push(b"\x89PNG\r\n\x1a\n\0\0\0\x01tEXt").is_err());
    assert!(DimensionReader::new(&MediaType::parse("image/gif").unwrap()).is_err());
}

proptest! {
    /// Any split of a real PNG, whole or damaged and cut short, gives the same event
    /// stream and the same validator verdict as the file fed whole.
    #[test]
    fn png_events_do_not_depend_on_slice_boundaries(
        which in any::<prop::sample::Index>(),
        mutation in prop_oneof![
            Just(None),
            (any::<prop::sample::Index>(), any::<u8>()).prop_map(Some),
        ],
        cut in any::<prop::sample::Index>(),
        step in 1usize..300,
        cuts in cuts(),
    ) {
        let fixtures = png_fixtures();
        let mut file = fixtures[which.index(fixtures.len())].clone();
        if let Some((at, byte)) = mutation {
            let at = at.index(file.len());
            file[at] = byte;
            let keep = cut.index(file.len() + 1).max(at);
            file.truncate(keep.max(1));
        }
        tokens::check_split_independence(true, &file, step, &cuts);
    }

    /// The same for JPEG: baseline, progressive, greyscale, CMYK, restart markers.
    #[test]
    fn jpeg_events_do_not_depend_on_slice_boundaries(
        which in any::<prop::sample::Index>(),
        mutation in prop_oneof![
            Just(None),
            (any::<prop::sample::Index>(), any::<u8>()).prop_map(Some),
        ],
        cut in any::<prop::sample::Index>(),
        step in 1usize..300,
        cuts in cuts(),
    ) {
        let fixtures = jpeg_fixtures();
        let mut file = fixtures[which.index(fixtures.len())].clone();
        if let Some((at, byte)) = mutation {
            let at = at.index(file.len());
            file[at] = byte;
            let keep = cut.index(file.len() + 1).max(at);
            file.truncate(keep.max(1));
        }
        tokens::check_split_independence(false, &file, step, &cuts);
    }
}
