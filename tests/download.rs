//! Ranged download: the server's reading of from/to (every bound, exact messages), the
//! response bodies, and the client's plan and reassembler against a simulated server that
//! reads `to` either way, answers in any order, repeats and overlaps.

use std::ops::Range;

use attachments::digest::sha256;
use attachments::download::{
    Placed, RangePlan, RangeQuery, Reassembler, write_connectivity_download, write_demand_download,
};
use attachments::error::PieceProblem;
use attachments::wire::{self, connectivity::DownloadResponse};
use attachments::{Error, Limits};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

const MB: u64 = 1_048_576;

fn resolve(query: &str, size: u64) -> Result<Range<u64>, String> {
    RangeQuery::from_query_string(query)
        .and_then(|q| q.resolve(size, &Limits::connectivity()))
        .map_err(|e| {
            assert_eq!(e.status(), 400, "{e}");
            e.wire_message().into_owned()
        })
}

#[test]
fn server_ranges_follow_every_documented_bound() {
    // Inclusive `to`, clamped to the last byte.
    assert_eq!(resolve("from=0&to=99", 3 * MB), Ok(0..100));
    assert_eq!(resolve("from=5&to=5", 10), Ok(5..6));
    assert_eq!(
        resolve("from=3000000&to=99999999", 3 * MB),
        Ok(3_000_000..3 * MB)
    );
    // `from` alone: to the end (seed 001: "set from to 0" for files over 1 MB).
    assert_eq!(resolve("from=0", 3 * MB), Ok(0..3 * MB));
    // No parameters: the whole attachment up to 1 MiB.
    assert_eq!(resolve("", MB), Ok(0..MB));
    assert_eq!(resolve("", 0), Ok(0..0));
    assert_eq!(resolve("from=0", 0), Ok(0..0));
    // Other parameters are ignored; values are percent-decoded.
    assert_eq!(resolve("?x=1&from=%31&to=2", 10), Ok(1..3));

    assert_eq!(
        resolve("", MB + 1),
        Err("download range rejected: the attachment is 1048577 bytes, over the 1048576 bytes a download without from returns; pass from and to to download it in ranges (from=0&to=1048575)".into())
    );
    assert_eq!(
        resolve("from=10", 10),
        Err("download range rejected: from=10 is past the end of the attachment of 10 bytes (its last byte is 9); ask for from < 10".into())
    );
    assert_eq!(
        resolve("from=7&to=6", 10),
        Err("download range rejected: to=6 is before from=7; to is the last byte wanted (inclusive) and must be at least from".into())
    );
    assert_eq!(
        resolve("to=6", 10),
        Err("download range rejected: to=6 was given without from; pass from as well".into())
    );
    assert_eq!(
        resolve("from=-1", 10),
        Err("download range rejected: from=\"-1\" is not a byte offset; pass a non-negative integer".into())
    );
    for bad in [
        "from=abc",
        "from=",
        "from=1e3",
        "from=+1",
        "to=1.5&from=0",
        "from=99999999999999999999",
    ] {
        assert!(
            resolve(bad, 10)
                .unwrap_err()
                .contains("is not a byte offset"),
            "{bad}"
        );
    }
    assert_eq!(
        resolve("from=1&from=2", 10),
        Err("download range rejected: from is given more than once; pass it once".into())
    );
}

/// The query is a form: names are percent-decoded like values (`%66rom` is `from`), so a
/// parameter spelled both ways is given twice; a value that is not a number once decoded
/// (not UTF-8 included) is refused.
#[test]
fn range_query_names_and_values_are_form_decoded() {
    assert_eq!(resolve("%66rom=5&t%6F=9", 100), Ok(5..10));
    assert_eq!(resolve("from=%35&to=9", 100), Ok(5..10));
    let twice = resolve("from=1&%66rom=2", 100).unwrap_err();
    assert!(twice.contains("from"), "{twice}");
    assert!(resolve("from=%FF", 100).is_err());
    assert!(resolve("from=+5", 100).is_err(), "a space is not a digit");
}

#[test]
fn response_bodies_parse_as_the_seed_shapes() {
    let file: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let pieces = [
        Bytes::copy_from_slice(&file[..40_001]),
        Bytes::copy_from_slice(&file[40_001..]),
    ];
    let mut body = BytesMut::new();
    write_connectivity_download(&mut body, "8d65", "7e70", "UmFu", &pieces);
    let resp: DownloadResponse<'_> = wire::from_slice(&body).unwrap();
    assert!(resp.errors.is_empty() && resp.warnings.is_empty());
    let data = resp.data.unwrap();
    assert!(data.ok.0);
    let mut decoded = Vec::new();
    attachments::codec::base64::decode_to(data.file_content.as_bytes(), &mut decoded).unwrap();
    assert_eq!(decoded, file);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["data"]["ok"], "true",
        "ok is the string \"true\" as in seed 001"
    );
    assert_eq!(v["meta"]["ruid"], "UmFu");

    let mut body = BytesMut::new();
    write_demand_download(&mut body, "req", "att\"1", &pieces);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["data"]["attachment"], "att\"1", "ids are JSON-escaped");
    let mut decoded = Vec::new();
    attachments::codec::base64::decode_to(
        v["data"]["file_content"].as_str().unwrap().as_bytes(),
        &mut decoded,
    )
    .unwrap();
    assert_eq!(decoded, file);
}

#[test]
fn plan_covers_the_file_once() {
    for (size, rs) in [(0u64, 5u64), (1, 5), (10, 5), (11, 5), (10 * MB, 1_048_575)] {
        let plan = RangePlan::with_range_size(size, rs).unwrap();
        let ranges: Vec<_> = plan.ranges().collect();
        assert_eq!(ranges.len(), plan.len());
        let mut at = 0;
        for r in &ranges {
            assert_eq!(r.start, at);
            assert!(r.end - r.start <= rs && r.end > r.start);
            at = r.end;
        }
        assert_eq!(at, size);
    }
    assert!(RangePlan::with_range_size(10, 0).is_err());
}

/// A server reading `to` as inclusive or exclusive.
fn serve(file: &[u8], from: u64, to: u64, inclusive: bool) -> Bytes {
    let n = file.len() as u64;
    let end = if inclusive { to.saturating_add(1) } else { to }.min(n);
    Bytes::copy_from_slice(&file[from.min(n) as usize..end.max(from.min(n)) as usize])
}

/// Downloads `file` through the plan and a reassembler, asking in `order`, with extra
/// requests `extra` mixed in; returns the bytes delivered and the verdict.
fn download(
    file: &[u8],
    range_size: u64,
    order: &[usize],
    extra: &[Range<u64>],
    inclusive: bool,
    cap: u64,
) -> (
    Vec<u8>,
    attachments::Result<attachments::download::Verified>,
) {
    let n = file.len() as u64;
    let plan = RangePlan::with_range_size(n, range_size).unwrap();
    let mut queue: Vec<Range<u64>> = order.iter().filter_map(|&i| plan.range(i)).collect();
    queue.extend(
        extra
            .iter()
            .filter(|r| r.start < r.end && r.end <= n)
            .cloned(),
    );
    queue.reverse();
    let mut r = Reassembler::new(n, Some(sha256(file))).with_cap(cap);
    let mut out = Vec::new();
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 100_000, "no progress");
        let req = match queue.pop() {
            Some(req) => req,
            None => match r.missing().first() {
                Some(gap) => gap.start..(gap.start + range_size).min(gap.end),
                None => break,
            },
        };
        let (from, to) = RangePlan::query(&req);
        match r.insert_response(req.clone(), serve(file, from, to, inclusive)) {
            Ok(Placed::Taken { missing, .. }) => queue.extend(missing),
            Ok(Placed::Wait) => {
                // Fetch the range at the delivery point first, then this one again.
                queue.insert(0, req);
                let gap = r.missing()[0].clone();
                queue.push(gap.start..(gap.start + range_size).min(gap.end));
            }
            Err(e) => return (out, Err(e)),
        }
        assert!(r.out_of_order_bytes() <= cap, "cap exceeded");
        while let Some(b) = r.next_ready() {
            out.extend_from_slice(&b);
        }
    }
    (out, r.finish())
}

fn file_of(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(seed as u32 % 31) as u8
        })
        .collect()
}

proptest! {
    #[test]
    fn any_query_resolves_inside_the_file_or_says_why(
        query in "[a-z0-9=&%+-]{0,24}",
        from in proptest::option::of(0u64..3_000_000),
        to in proptest::option::of(0u64..3_000_000),
        size in 0u64..3_000_000,
    ) {
        // Arbitrary text never panics.
        let _ = RangeQuery::from_query_string(&query);
        let q = RangeQuery { from, to };
        match q.resolve(size, &Limits::connectivity()) {
            Ok(r) => {
                prop_assert!(r.start <= r.end && r.end <= size);
                prop_assert_eq!(r.start, from.unwrap_or(0));
                if let Some(to) = to { prop_assert_eq!(r.end, (to + 1).min(size)); }
            }
            Err(e) => prop_assert_eq!(e.status(), 400),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn any_order_either_reading_duplicates_and_overlaps_reassemble_and_verify(
        len in 0usize..200_000,
        range_size in 1u64..40_000,
        seed in any::<u8>(),
        shuffle in any::<u64>(),
        extra in proptest::collection::vec((0u64..200_000, 1u64..50_000), 0..6),
        inclusive in any::<bool>(),
        cap in prop_oneof![Just(0u64), 1u64..100_000, Just(u64::MAX)],
    ) {
        let file = file_of(len, seed);
        let plan = RangePlan::with_range_size(len as u64, range_size).unwrap();
        let mut order: Vec<usize> = (0..plan.len()).collect();
        // A deterministic shuffle from the seed.
        let mut state = shuffle | 1;
        for i in (1..order.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            order.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let extra: Vec<_> = extra.into_iter().map(|(s, l)| s..s + l).collect();
        let (out, verdict) = download(&file, range_size, &order, &extra, inclusive, cap);
        prop_assert_eq!(&out, &file);
        let v = verdict.unwrap();
        prop_assert_eq!(v.size, len as u64);
        prop_assert_eq!(v.sha256, sha256(&file));
    }

    #[test]
    fn a_corrupted_piece_fails_naming_its_offset(
        len in 2usize..100_000,
        at in any::<prop::sample::Index>(),
        seed in any::<u8>(),
    ) {
        let file = file_of(len, seed);
        let at = at.index(len) as u64;
        // The same bytes from two sources, one flipped at `at`: whichever comes second
        // conflicts at exactly that offset.
        let mut r = Reassembler::new(len as u64, None);
        r.insert(0, Bytes::copy_from_slice(&file)).unwrap();
        let mut bad = file.clone();
        bad[at as usize] ^= 1;
        let err = r.insert(0, Bytes::from(bad.clone())).unwrap_err();
        prop_assert_eq!(err, Error::Piece(PieceProblem::Conflict { offset: at }));
        // Alone, the corrupted file fails the SHA-256 check.
        let mut r = Reassembler::new(len as u64, Some(sha256(&file)));
        r.insert(0, Bytes::from(bad)).unwrap();
        while r.next_ready().is_some() {}
        let is_mismatch = matches!(r.finish(), Err(Error::Piece(PieceProblem::DigestMismatch { .. })));
        prop_assert!(is_mismatch);
    }
}

#[test]
fn ten_mib_in_shuffled_ranges_either_reading() {
    let file = file_of(10 * MB as usize, 3);
    let plan = RangePlan::new(file.len() as u64);
    let order: Vec<usize> = (0..plan.len()).rev().collect();
    for inclusive in [true, false] {
        let (out, verdict) = download(&file, plan.range_size(), &order, &[], inclusive, u64::MAX);
        assert!(out == file);
        assert_eq!(verdict.unwrap().sha256, sha256(&file));
    }
}

#[test]
fn gaps_short_pieces_and_the_end_are_reported() {
    let file = file_of(100, 1);
    let mut r = Reassembler::new(100, None);
    // A short answer to 0..50: the rest of the range is reported missing.
    let placed = r
        .insert_response(0..50, Bytes::copy_from_slice(&file[..30]))
        .unwrap();
    assert_eq!(
        placed,
        Placed::Taken {
            new: 30,
            duplicate: 0,
            missing: Some(30..50)
        }
    );
    r.insert(60, Bytes::copy_from_slice(&file[60..70])).unwrap();
    assert_eq!(r.missing(), vec![30..60, 70..100]);
    // Past the end.
    assert_eq!(
        r.insert(95, Bytes::copy_from_slice(&[0; 6]))
            .unwrap_err()
            .to_string(),
        "download piece rejected: 6 bytes at offset 95 run past the attachment's 100 bytes"
    );
    while r.next_ready().is_some() {}
    assert_eq!(
        r.finish().unwrap_err().to_string(),
        "download piece rejected: bytes 30..60 never arrived; request from=30&to=59"
    );
}

#[test]
fn the_cap_makes_far_pieces_wait_but_never_the_next_one() {
    let file = file_of(100, 2);
    let mut r = Reassembler::new(100, None).with_cap(15);
    let piece = |a: usize, b: usize| Bytes::copy_from_slice(&file[a..b]);
    assert!(matches!(
        r.insert(50, piece(50, 60)).unwrap(),
        Placed::Taken { .. }
    ));
    assert_eq!(r.insert(70, piece(70, 80)).unwrap(), Placed::Wait);
    assert_eq!(r.out_of_order_bytes(), 10);
    // The piece at the delivery point is always taken, however large.
    assert!(matches!(
        r.insert(0, piece(0, 50)).unwrap(),
        Placed::Taken { .. }
    ));
    assert_eq!(r.out_of_order_bytes(), 0, "50..60 joined the run");
    assert!(matches!(
        r.insert(70, piece(70, 80)).unwrap(),
        Placed::Taken { .. }
    ));
    let mut out = Vec::new();
    while let Some(b) = r.next_ready() {
        out.extend_from_slice(&b);
    }
    assert_eq!(out, &file[..60]);
}

proptest! {
    #[test]
    fn a_saved_digest_state_resumes_where_it_stopped(
        data in proptest::collection::vec(any::<u8>(), 0..600),
        cut in any::<proptest::sample::Index>(),
    ) {
        use attachments::digest::Sha256;
        let cut = cut.index(data.len() + 1);
        let mut h = Sha256::new();
        h.update(&data[..cut]);
        let mut resumed = Sha256::from_state(&h.state()).unwrap();
        prop_assert_eq!(resumed.bytes_hashed(), cut as u64);
        resumed.update(&data[cut..]);
        prop_assert_eq!(resumed.finalize(), sha256(&data));
    }

    #[test]
    fn any_bytes_as_a_digest_state_are_refused_or_resume(
        state in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            // The right length, so the content checks are what refuses.
            proptest::collection::vec(any::<u8>(), 104..=104),
        ],
    ) {
        use attachments::digest::Sha256;
        match Sha256::from_state(&state) {
            Ok(h) => {
                prop_assert_eq!(state.len(), 104);
                let _ = h.finalize();
            }
            Err(e) => prop_assert!(e.to_string().contains("expected 104"), "{}", e),
        }
    }
}

#[test]
fn a_checkpoint_is_plain_json_and_resumes() {
    let file: Vec<u8> = (0..5_000u32).map(|i| (i % 251) as u8).collect();
    let mut r = Reassembler::new(5_000, Some(sha256(&file)));
    r.insert(0, Bytes::copy_from_slice(&file[..1_234])).unwrap();
    r.insert(3_000, Bytes::copy_from_slice(&file[3_000..]))
        .unwrap();
    while r.next_ready().is_some() {}
    let json = serde_json::to_value(r.checkpoint()).unwrap();
    assert_eq!(json["file_size"], 5_000);
    assert_eq!(json["offset"], 1_234);
    assert_eq!(json["sha256_state"].as_str().unwrap().len(), 208);
    let cp: attachments::download::Checkpoint = serde_json::from_value(json).unwrap();
    // The held piece at 3000 is not part of the checkpoint: everything after 1234 is
    // fetched again.
    let mut r = Reassembler::resume(&cp, 5_000, Some(sha256(&file))).unwrap();
    assert_eq!(r.missing(), vec![1_234..5_000]);
    r.insert(1_234, Bytes::copy_from_slice(&file[1_234..]))
        .unwrap();
    while r.next_ready().is_some() {}
    assert_eq!(r.finish().unwrap().size, 5_000);
    let past = attachments::download::Checkpoint {
        offset: 5_001,
        ..cp
    };
    assert_eq!(
        Reassembler::resume(&past, 5_000, None)
            .unwrap_err()
            .to_string(),
        "cannot resume the download: the checkpoint's offset 5001 lies past the end (5000 bytes)"
    );
}

mod http_range {
    use attachments::download::http_range::{RangeRequest, content_range, parse_content_range};
    use proptest::prelude::*;

    /// One range-spec as a test writes it: (first, last) or a suffix.
    #[derive(Debug, Clone)]
    enum Spec {
        Int(u64, Option<u64>),
        Suffix(u64),
    }

    fn spec() -> impl Strategy<Value = Spec> {
        let n = prop_oneof![0u64..2_000, Just(u64::MAX), any::<u64>()];
        prop_oneof![
            (n.clone(), proptest::option::of(n.clone())).prop_map(|(a, b)| Spec::Int(a, b)),
            n.prop_map(Spec::Suffix),
        ]
    }

    fn write(spec: &Spec) -> String {
        match spec {
            Spec::Int(a, Some(b)) => format!("{a}-{b}"),
            Spec::Int(a, None) => format!("{a}-"),
            Spec::Suffix(n) => format!("-{n}"),
        }
    }

    /// RFC 9110 section 14 for one range, written out plainly in 128-bit arithmetic.
    fn model(spec: &Spec, size: u64) -> RangeRequest {
        let size = u128::from(size);
        match *spec {
            Spec::Int(a, Some(b)) if b < a => RangeRequest::Whole,
            Spec::Int(a, _) if u128::from(a) >= size => RangeRequest::Unsatisfiable,
            Spec::Int(a, b) => {
                let end = b.map_or(size, |b| (u128::from(b) + 1).min(size));
                RangeRequest::Partial(a..end as u64)
            }
            Spec::Suffix(0) => RangeRequest::Unsatisfiable,
            Spec::Suffix(_) if size == 0 => RangeRequest::Whole,
            Spec::Suffix(n) => {
                RangeRequest::Partial(size.saturating_sub(u128::from(n)) as u64..size as u64)
            }
        }
    }

    proptest! {
        #[test]
        fn a_single_range_is_read_as_rfc_9110_says(
            spec in spec(),
            size in prop_oneof![0u64..3_000, any::<u64>()],
            unit in prop::sample::select(vec!["bytes", "Bytes", "BYTES"]),
            pad in prop::sample::select(vec!["", " ", "  "]),
            trailing_comma in any::<bool>(),
        ) {
            let comma = if trailing_comma { ", " } else { "" };
            let header = format!("{unit}={pad}{}{pad}{comma}", write(&spec));
            let got = RangeRequest::parse(Some(header.as_bytes()), size);
            prop_assert_eq!(&got, &model(&spec, size), "{}", header);
            if let RangeRequest::Partial(r) = &got {
                prop_assert!(r.start < r.end && r.end <= size);
                let text = content_range(r, size);
                prop_assert_eq!(text, format!("bytes {}-{}/{size}", r.start, r.end - 1));
            }
        }

        #[test]
        fn several_ranges_or_other_units_are_served_whole(
            a in spec(),
            b in spec(),
            size in 0u64..3_000,
        ) {
            let two = format!("bytes={},{}", write(&a), write(&b));
            prop_assert_eq!(RangeRequest::parse(Some(two.as_bytes()), size), RangeRequest::Whole);
            let other = format!("items={}", write(&a));
            prop_assert_eq!(RangeRequest::parse(Some(other.as_bytes()), size), RangeRequest::Whole);
        }

        /// What the server writes, the client reads back; anything else it reads is a
        /// non-empty range inside the size it names.
        #[test]
        fn content_range_reads_back_what_is_written(
            first in 0u64..1 << 40,
            len in 1u64..1 << 20,
            extra in 0u64..1 << 20,
            text in "\\PC{0,40}",
        ) {
            let size = first + len + extra;
            let written = content_range(&(first..first + len), size);
            prop_assert_eq!(parse_content_range(&written), Some((first..first + len, size)));
            if let Some((r, size)) = parse_content_range(&text) {
                prop_assert!(r.start < r.end && r.end <= size);
            }
        }

        #[test]
        fn any_header_gives_a_range_inside_the_file(
            header in proptest::collection::vec(any::<u8>(), 0..64),
            size in prop_oneof![0u64..100, any::<u64>()],
        ) {
            if let RangeRequest::Partial(r) = RangeRequest::parse(Some(&header), size) {
                prop_assert!(r.start < r.end && r.end <= size);
            }
        }
    }

    #[test]
    fn malformed_headers_are_ignored() {
        for header in [
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes=1-2-3",
            "bytes=1 -2x",
            "bytes=0x10-",
            "=0-1",
            "bytes=1--2",
        ] {
            assert_eq!(
                RangeRequest::parse(Some(header.as_bytes()), 100),
                RangeRequest::Whole,
                "{header}"
            );
        }
        let long = format!("bytes=0-1{}", " ".repeat(2_000));
        assert_eq!(
            RangeRequest::parse(Some(long.as_bytes()), 100),
            RangeRequest::Whole
        );
    }
}
