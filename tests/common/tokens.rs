//! The PNG and JPEG tokenizers' event streams, written down so that two runs compare:
//! shared by `tests/tokenizer.rs` (proptests), the `png_tokenizer` and `jpeg_tokenizer`
//! fuzz targets, and `tests/fuzz_corpus.rs` (which replays their seeds); each includes
//! this file with `#[path]`. It needs only `attachments`.
//!
//! A [`Log`] is the events of one file in order, with the slices of data merged (how the
//! input was split changes where data events are cut, never the bytes), then the verdict
//! (the first error, or the end). The consumer in the log asks the tokenizer to gather
//! the first bytes of some chunks or segments, picked from their offsets, so that
//! gathering is exercised too.
#![allow(dead_code)]

use attachments::image::{jpeg, png};
use attachments::{Error, ImageLimits, Validator};

/// One entry of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// An event other than data, as text.
    Event(String),
    /// Data of one kind (`data`, `entropy`, `trailing`), consecutive slices merged.
    Bytes(&'static str, Vec<u8>),
}

/// The events of a file and the verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Log(pub Vec<Entry>);

impl Log {
    fn event(&mut self, text: String) {
        self.0.push(Entry::Event(text));
    }

    fn bytes(&mut self, kind: &'static str, data: &[u8]) {
        if let Some(Entry::Bytes(last, bytes)) = self.0.last_mut()
            && *last == kind
        {
            bytes.extend_from_slice(data);
            return;
        }
        self.0.push(Entry::Bytes(kind, data.to_vec()));
    }
}

/// How many bytes the logging consumer gathers of a chunk or segment at `at`: none for
/// most, a few for some, the whole of short ones.
fn gather_at(at: u64) -> Option<usize> {
    at.is_multiple_of(3).then_some((at % 37) as usize)
}

/// The PNG tokenizer's log of `pieces` fed in turn (CRCs checked).
pub fn png_log<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Log {
    let mut log = Log::default();
    let mut tokens = png::Tokenizer::new();
    for piece in pieces {
        let fed = tokens.feed(piece, |tokens, event| {
            match event {
                png::Event::Data(data) => log.bytes("data", data),
                png::Event::Trailing { data, .. } => log.bytes("trailing", data),
                png::Event::Gathered => log.event(format!("gathered {:?}", tokens.gathered())),
                png::Event::ChunkBegin(h) => {
                    if let Some(n) = gather_at(h.at) {
                        tokens.gather(n);
                    }
                    log.event(format!("{event:?}"));
                }
                other => log.event(format!("{other:?}")),
            }
            Ok::<_, png::TokenError>(())
        });
        if let Err(e) = fed {
            log.event(format!("error {e:?}"));
            return log;
        }
    }
    log.event(format!("finish {:?}", tokens.finish()));
    log
}

/// The JPEG tokenizer's log of `pieces` fed in turn.
pub fn jpeg_log<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Log {
    let mut log = Log::default();
    let mut tokens = jpeg::Tokenizer::new();
    for piece in pieces {
        let fed = tokens.feed(piece, |tokens, event| {
            match event {
                jpeg::Event::Data(data) => log.bytes("data", data),
                jpeg::Event::Entropy(data) => log.bytes("entropy", data),
                jpeg::Event::Trailing { data, .. } => log.bytes("trailing", data),
                jpeg::Event::Gathered => log.event(format!("gathered {:?}", tokens.gathered())),
                jpeg::Event::SegmentBegin { at, .. } => {
                    if let Some(n) = gather_at(at) {
                        tokens.gather(n);
                    }
                    log.event(format!("{event:?}"));
                }
                other => log.event(format!("{other:?}")),
            }
            Ok::<_, jpeg::TokenError>(())
        });
        if let Err(e) = fed {
            log.event(format!("error {e:?}"));
            return log;
        }
    }
    log.event(format!("finish {:?}", tokens.finish()));
    log
}

/// The limits the split checks validate under: the defaults, with fewer segments and less
/// metadata so that those limits are reached too.
pub fn limits() -> ImageLimits {
    let mut limits = ImageLimits::DEFAULT;
    limits.max_segments = 1000;
    limits.max_metadata_bytes = 10_000;
    limits
}

/// The verdict of the PNG (`png`) or JPEG validator on `pieces`: the dimensions, or the
/// exact error.
pub fn verdict<'a>(
    png: bool,
    pieces: impl IntoIterator<Item = &'a [u8]>,
    trailing: bool,
) -> Result<Option<(u32, u32)>, Error> {
    let mut v: Box<dyn Validator> = if png {
        Box::new(png::PngValidator::new(&limits(), trailing))
    } else {
        Box::new(jpeg::JpegValidator::new(&limits(), trailing))
    };
    for piece in pieces {
        v.update(piece)?;
    }
    Ok(v.finish()?.dimensions)
}

/// `data` cut at `cuts` (offsets, any order, out of range ones ignored).
pub fn split_at<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().copied().filter(|&c| c <= data.len()).collect();
    points.sort_unstable();
    points.dedup();
    let mut pieces = Vec::new();
    let mut from = 0;
    for p in points {
        pieces.push(&data[from..p]);
        from = p;
    }
    pieces.push(&data[from..]);
    pieces
}

/// Checks that `file` gives the same event stream and the same verdicts fed whole, in
/// `step`-byte slices, one byte at a time and cut at `cuts`: the tokenizer's log, the
/// validator's verdict (with and without trailing bytes allowed). Panics otherwise.
pub fn check_split_independence(png: bool, file: &[u8], step: usize, cuts: &[usize]) {
    let log = |pieces: Vec<&[u8]>| {
        if png {
            png_log(pieces)
        } else {
            jpeg_log(pieces)
        }
    };
    let whole = log(vec![file]);
    let splits: [(&str, Vec<&[u8]>); 3] = [
        ("in slices", file.chunks(step.max(1)).collect()),
        ("byte by byte", file.chunks(1).collect()),
        ("cut", split_at(file, cuts)),
    ];
    for (how, pieces) in &splits {
        assert_eq!(log(pieces.clone()), whole, "event stream {how}");
    }
    for trailing in [false, true] {
        let whole = verdict(png, [file], trailing);
        for (how, pieces) in &splits {
            assert_eq!(
                verdict(png, pieces.iter().copied(), trailing),
                whole,
                "validator verdict {how} (trailing {trailing})"
            );
        }
    }
}
