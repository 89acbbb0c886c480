//! The multipart framing check (`attachments::wire::multipart`): it finds the delimiters
//! the parser finds (multer, which axum's `Multipart` runs, is the reference), in pieces of
//! any size, and refuses what passes a limit.

use attachments::wire::multipart::{FramingCheck, FramingError, FramingLimits};
use proptest::prelude::*;

const BOUNDARY: &str = "x-Boundary-42";

/// A well-formed form body of `parts` (name, content).
fn body(parts: &[(String, Vec<u8>)], preamble: &[u8]) -> Vec<u8> {
    let mut out = preamble.to_vec();
    for (name, content) in parts {
        out.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        out.extend_from_slice(
            format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
        );
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

/// Each content as a part named `f0`, `f1`...
fn named(contents: Vec<Vec<u8>>) -> Vec<(String, Vec<u8>)> {
    contents
        .into_iter()
        .enumerate()
        .map(|(i, c)| (format!("f{i}"), c))
        .collect()
}

/// Feeds `body` in pieces cut at `cuts`; returns the parts counted, or the error.
fn check_in_pieces(
    body: &[u8],
    cuts: &[usize],
    limits: FramingLimits,
) -> Result<(usize, bool), FramingError> {
    let mut check = FramingCheck::new(BOUNDARY, limits)?;
    let mut at = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    cuts.sort_unstable();
    for cut in cuts.into_iter().chain([body.len()]) {
        check.feed(&body[at..cut])?;
        at = cut;
    }
    Ok((check.parts(), check.is_closed()))
}

/// The fields multer finds in `body`, fed in the same pieces.
fn multer_fields(body: &[u8], cuts: &[usize]) -> Result<Vec<(String, Vec<u8>)>, multer::Error> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut at = 0;
    for cut in cuts.into_iter().chain([body.len()]) {
        pieces.push(Ok::<_, std::convert::Infallible>(
            bytes::Bytes::copy_from_slice(&body[at..cut]),
        ));
        at = cut;
    }
    futures::executor::block_on(async {
        let mut form = multer::Multipart::new(futures::stream::iter(pieces), BOUNDARY);
        let mut fields = Vec::new();
        while let Some(mut field) = form.next_field().await? {
            let name = field.name().unwrap_or_default().to_owned();
            let mut content = Vec::new();
            while let Some(piece) = field.chunk().await? {
                content.extend_from_slice(&piece);
            }
            fields.push((name, content));
        }
        Ok(fields)
    })
}

/// Content that tries hard to look like framing: CRs, LFs, dashes and pieces of the
/// boundary.
fn tricky_content() -> impl Strategy<Value = Vec<u8>> {
    let atoms = prop_oneof![
        Just(b"\r".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"--".to_vec()),
        Just(b"\r\n--".to_vec()),
        Just(b"x-Boundary-4".to_vec()),
        Just(b"\r\n--x-Boundary-4".to_vec()),
        Just(b"--x-Boundary-42".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(atoms, 0..12).prop_map(|a| a.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// On well-formed bodies (content that never holds a delimiter), the check counts the
    /// parts multer yields, wherever the pieces are cut, and sees the close.
    #[test]
    fn agrees_with_the_parser_on_well_formed_bodies(
        contents in proptest::collection::vec(tricky_content(), 0..6),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let delimiter = format!("\r\n--{BOUNDARY}");
        let parts = named(contents);
        let body = body(&parts, b"");
        // Content that holds a delimiter is not well formed: skip those cases honestly
        // by rejecting them from the strategy's space.
        prop_assume!(parts.iter().all(|(_, c)| {
            let framed = [b"\r\n".as_slice(), c, b"\r\n"].concat();
            !framed.windows(delimiter.len()).any(|w| w == delimiter.as_bytes())
                && !c.ends_with(b"\r")
        }));
        let fields = multer_fields(&body, &cuts).expect("multer parses a well-formed body");
        prop_assert_eq!(&fields, &parts);
        let (counted, closed) = check_in_pieces(&body, &cuts, FramingLimits::default()).unwrap();
        prop_assert_eq!(counted, parts.len());
        prop_assert!(closed);
    }

    /// Arbitrary bytes in arbitrary pieces: never a panic, and the verdict does not depend
    /// on where the pieces are cut.
    #[test]
    fn the_verdict_does_not_depend_on_the_cuts(
        atoms in proptest::collection::vec(tricky_content(), 0..20),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
    ) {
        let body = atoms.concat();
        let limits = FramingLimits { max_preamble: 16, max_part_headers: 24, max_parts: 3 };
        let whole = check_in_pieces(&body, &[], limits);
        let cut = check_in_pieces(&body, &cuts, limits);
        prop_assert_eq!(whole, cut);
    }

    /// Whenever multer yields more fields than the limit, the check refused the body.
    #[test]
    fn bodies_the_check_lets_through_stay_within_the_part_limit(
        contents in proptest::collection::vec(tricky_content(), 0..8),
        cuts in proptest::collection::vec(any::<usize>(), 0..4),
    ) {
        let parts = named(contents);
        let body = body(&parts, b"");
        let limits = FramingLimits { max_parts: 3, ..FramingLimits::default() };
        if let Ok(fields) = multer_fields(&body, &cuts) {
            let verdict = check_in_pieces(&body, &cuts, limits);
            prop_assert_eq!(verdict.is_ok(), fields.len() <= 3, "{} fields: {:?}", fields.len(), verdict);
        }
    }
}

#[test]
fn a_body_without_a_delimiter_is_refused_past_the_preamble_limit() {
    let limits = FramingLimits::default();
    let body = vec![b'a'; limits.max_preamble + 100];
    let err = check_in_pieces(&body, &[1, 17, 4000], limits).unwrap_err();
    assert_eq!(err, FramingError::Preamble { limit: 4096 });
    // A short preamble is allowed (RFC 2046 lets one precede the first delimiter).
    let ok = body_with_preamble(&[b'p'; 1000]);
    assert_eq!(check_in_pieces(&ok, &[5, 600], limits), Ok((1, true)));
    assert_eq!(multer_fields(&ok, &[]).unwrap().len(), 1);
}

fn body_with_preamble(preamble: &[u8]) -> Vec<u8> {
    body(&[("a".into(), b"1".to_vec())], preamble)
}

#[test]
fn a_two_megabyte_part_header_is_refused_at_the_limit() {
    let mut body =
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"\r\nX-Pad: ")
            .into_bytes();
    body.extend(std::iter::repeat_n(b'a', 2 << 20));
    body.extend_from_slice(b"\r\n\r\ncontent\r\n--x-Boundary-42--\r\n");
    let err = check_in_pieces(&body, &[100, 8000, 9000], FramingLimits::default()).unwrap_err();
    assert_eq!(
        err,
        FramingError::PartHeaders {
            part: 1,
            limit: 8192
        }
    );
    assert!(err.to_string().contains("8192-byte limit"), "{err}");
}

#[test]
fn one_part_too_many_is_refused_and_the_epilogue_is_ignored() {
    let parts: Vec<(String, Vec<u8>)> = (0..17).map(|i| (format!("f{i}"), vec![b'v'; 3])).collect();
    let err = check_in_pieces(&body(&parts, b""), &[], FramingLimits::default()).unwrap_err();
    assert_eq!(err, FramingError::Parts { limit: 16 });
    let mut ok = body(&parts[..16], b"");
    ok.extend_from_slice(b"anything at all after the close, even --x-Boundary-42\r\n");
    assert_eq!(
        check_in_pieces(&ok, &[], FramingLimits::default()),
        Ok((16, true))
    );
}

#[test]
fn boundaries_outside_the_rfc_lengths_are_refused() {
    assert_eq!(
        FramingCheck::new("", FramingLimits::default()).unwrap_err(),
        FramingError::Boundary { len: 0 }
    );
    let long = "b".repeat(71);
    assert_eq!(
        FramingCheck::new(&long, FramingLimits::default()).unwrap_err(),
        FramingError::Boundary { len: 71 }
    );
    assert!(FramingCheck::new(&long[..70], FramingLimits::default()).is_ok());
}

#[test]
fn a_delimiter_split_one_byte_at_a_time_is_found() {
    let parts = vec![("file".to_owned(), b"\r\n-\r\n--x-Boundary-4\r".to_vec())];
    let body = body(&parts, b"");
    let cuts: Vec<usize> = (0..body.len()).collect();
    // multer agrees this content holds no delimiter.
    assert_eq!(multer_fields(&body, &cuts).unwrap(), parts);
    assert_eq!(
        check_in_pieces(&body, &cuts, FramingLimits::default()),
        Ok((1, true))
    );
}
