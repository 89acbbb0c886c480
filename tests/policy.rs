//! Policy presets and limits: every boundary the seeds give, and the file-name rules of
//! SPEC.md.

use attachments::error::{FileNameProblem, SizeLimit};
use attachments::policy::{DEFAULT_CHAT_MAX_SIZE, MIB};
use attachments::{AllowedTypes, Error, Limits, MediaType, Policy, UploadMode};

#[test]
fn connectivity_preset_matches_seed_001() {
    let p = Policy::connectivity();
    assert_eq!(p.limits.max_single_size, 1_048_576);
    assert_eq!(p.limits.min_chunked_size(), Some(1_048_577));
    assert_eq!(p.limits.max_chunked_size, Some(10_485_760));
    assert_eq!(p.limits.max_chunk_size, 1_048_576);
    assert_eq!(
        p.allowed_types,
        AllowedTypes::Only(vec![MediaType::JPEG, MediaType::PNG])
    );
}

#[test]
fn demand_preset_matches_seed_000() {
    let p = Policy::demand();
    assert_eq!(p.limits.max_single_size, 1_048_576);
    assert_eq!(p.limits.max_chunked_size, None);
    assert_eq!(p.check_type("image/jpg").unwrap(), MediaType::JPEG);
    assert_eq!(p.check_type("image/png").unwrap(), MediaType::PNG);
    assert_eq!(p.check_type("image/webp").unwrap_err().status(), 415);
}

#[test]
fn chat_preset_takes_any_type_up_to_its_configurable_maximum() {
    let p = Policy::chat();
    assert_eq!(p.limits.max_single_size, DEFAULT_CHAT_MAX_SIZE);
    assert_eq!(DEFAULT_CHAT_MAX_SIZE, 25 * MIB);
    assert_eq!(
        p.check_type("application/pdf").unwrap().as_str(),
        "application/pdf"
    );
    assert_eq!(
        p.check_type("text/x-anything").unwrap().as_str(),
        "text/x-anything"
    );
    let small = Policy::chat().with_max_size(1000);
    assert_eq!(small.upload_mode(1000).unwrap(), UploadMode::Single);
    assert_eq!(
        small.upload_mode(1001).unwrap_err(),
        Error::TooLarge {
            size: 1001,
            limit: 1000,
            kind: SizeLimit::Single
        }
    );
}

#[test]
fn connectivity_picks_single_or_chunked_by_the_1mb_limit() {
    let p = Policy::connectivity();
    assert_eq!(p.upload_mode(0).unwrap(), UploadMode::Single);
    assert_eq!(p.upload_mode(1_048_576).unwrap(), UploadMode::Single);
    assert_eq!(p.upload_mode(1_048_577).unwrap(), UploadMode::Chunked);
    assert_eq!(p.upload_mode(10_485_760).unwrap(), UploadMode::Chunked);
    let err = p.upload_mode(10_485_761).unwrap_err();
    assert_eq!(
        err,
        Error::TooLarge {
            size: 10_485_761,
            limit: 10_485_760,
            kind: SizeLimit::Chunked
        }
    );
    assert_eq!(err.wire_message(), "File size exceeds the 10MB limit");
}

#[test]
fn demand_has_no_chunked_route() {
    let err = Policy::demand().upload_mode(1_048_577).unwrap_err();
    assert_eq!(err.wire_message(), "File size exceeds the 1MB limit");
    assert!(
        Policy::demand()
            .check_size(1_048_577, UploadMode::Chunked)
            .is_err()
    );
}

#[test]
fn each_route_checks_its_own_range() {
    let p = Policy::connectivity();
    assert!(p.check_size(1_048_576, UploadMode::Single).is_ok());
    assert_eq!(
        p.check_size(1_048_577, UploadMode::Single)
            .unwrap_err()
            .wire_message(),
        "File size exceeds the 1MB limit"
    );
    let err = p.check_size(1_048_576, UploadMode::Chunked).unwrap_err();
    assert_eq!(
        err,
        Error::TooSmallForChunks {
            size: 1_048_576,
            min: 1_048_577
        }
    );
    assert!(err.to_string().contains("one request"));
    assert!(p.check_size(2_602_519, UploadMode::Chunked).is_ok());
}

#[test]
fn chunks_are_limited_to_1mb() {
    let p = Policy::connectivity();
    assert!(p.check_chunk_size(1_048_576).is_ok());
    let err = p.check_chunk_size(1_048_577).unwrap_err();
    assert_eq!(err.wire_message(), "Chunk size exceeds the 1MB limit");
    assert!(err.to_string().contains("1048577"));
}

#[test]
fn limits_can_be_replaced() {
    let mut limits = Limits::connectivity();
    limits.max_chunked_size = Some(20 * MIB);
    let p = Policy::connectivity().with_limits(limits);
    assert_eq!(p.upload_mode(15 * MIB).unwrap(), UploadMode::Chunked);
    assert_eq!(p.limits.max_file_size(), 20 * MIB);
}

#[test]
fn file_names_are_names_not_paths() {
    let p = Policy::connectivity();
    assert!(p.check_file_name("food.jpeg").is_ok());
    assert!(p.check_file_name("Zimmer 12 – Aussicht.png").is_ok());
    let problem = |name: &str| match p.check_file_name(name) {
        Err(Error::InvalidFileName(problem)) => problem,
        other => panic!("{name:?}: {other:?}"),
    };
    assert_eq!(problem(""), FileNameProblem::Empty);
    assert_eq!(
        problem("../etc/passwd"),
        FileNameProblem::PathSeparator { at: 2 }
    );
    assert_eq!(
        problem("a\\b.png"),
        FileNameProblem::PathSeparator { at: 1 }
    );
    assert_eq!(
        problem("a\nb.png"),
        FileNameProblem::ControlCharacter { at: 1 }
    );
    assert_eq!(problem(".."), FileNameProblem::DotName);
    let long = "x".repeat(256);
    assert_eq!(
        problem(&long),
        FileNameProblem::TooLong { len: 256, max: 255 }
    );
    assert!(p.check_file_name(&"x".repeat(255)).is_ok());
    let err = p.check_file_name("a/b").unwrap_err();
    assert_eq!(err.status(), 400);
    assert!(err.to_string().contains("not a path"), "{err}");
}

#[test]
fn every_error_kind_knows_its_status() {
    let cases: Vec<(Error, u16)> = vec![
        (
            Error::TooLarge {
                size: 2,
                limit: 1,
                kind: SizeLimit::Single,
            },
            400,
        ),
        (Error::TooSmallForChunks { size: 1, min: 2 }, 400),
        (
            Error::SizeMismatch {
                actual: 1,
                declared: 2,
            },
            400,
        ),
        (
            Error::UnsupportedType {
                declared: "a/b".into(),
                allowed: "c/d".into(),
            },
            415,
        ),
        (
            Error::InvalidType {
                declared: "x".into(),
            },
            400,
        ),
        (
            Error::TypeMismatch {
                declared: "a/b".into(),
                detected: "c/d".into(),
            },
            400,
        ),
        (
            Error::UnrecognizedContent {
                declared: "a/b".into(),
                sniffed: 3,
            },
            415,
        ),
        (
            Error::InvalidContent {
                media_type: "a/b".into(),
                offset: 0,
                reason: "r".into(),
            },
            400,
        ),
        (Error::InvalidFileName(FileNameProblem::Empty), 400),
        (
            Error::InvalidJson {
                message: "m".into(),
            },
            400,
        ),
    ];
    for (err, status) in cases {
        assert_eq!(err.status(), status, "{err}");
        assert!(!err.wire_message().is_empty());
        let wrapped = Error::AlreadyFailed {
            first: Box::new(err.clone()),
        };
        assert_eq!(wrapped.status(), status);
        assert_eq!(wrapped.wire_message(), err.wire_message());
    }
}

#[test]
fn active_content_is_refused_unless_the_policy_allows_it() {
    use attachments::{Inspector, Policy};
    let svg =
        br#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.cookie)</script></svg>"#;
    let chat = Policy::chat();
    // Declared as such: refused before any byte.
    for declared in [
        "image/svg+xml",
        "text/html",
        "application/xhtml+xml",
        "text/xml",
        "application/xml",
    ] {
        let err = Inspector::new(&chat, declared, None).unwrap_err();
        assert_eq!(err.status(), 415, "{declared}");
        assert_eq!(
            err.to_string(),
            format!(
                "{declared} files can carry scripts a browser would run, so they are not accepted \
                 (the file is declared as {declared}); send another format, such as PDF or PNG"
            )
        );
    }
    // Declared as "no particular type": the content decides, and is refused.
    let mut insp = Inspector::new(&chat, "application/octet-stream", None).unwrap();
    insp.update(svg).unwrap();
    let err = insp.finish().unwrap_err();
    assert_eq!(
        err.to_string(),
        "image/svg+xml files can carry scripts a browser would run, so they are not accepted \
         (the file contains image/svg+xml); send another format, such as PDF or PNG"
    );
    // Declared as something else: the mismatch is the answer.
    let mut insp = Inspector::new(&chat, "text/plain", None).unwrap();
    insp.update(svg).unwrap();
    assert!(matches!(
        insp.finish().unwrap_err(),
        attachments::Error::TypeMismatch { .. }
    ));
    // Allowed: accepted as declared.
    let open = Policy::chat().with_active_content(true);
    let mut insp = Inspector::new(&open, "image/svg+xml", None).unwrap();
    insp.update(svg).unwrap();
    assert_eq!(
        insp.finish().unwrap().media_type,
        attachments::MediaType::SVG
    );
    // A PDF under the chat preset is recognised and accepted.
    let pdf = b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n";
    let mut insp = Inspector::new(&chat, "application/pdf", None).unwrap();
    insp.update(pdf).unwrap();
    assert_eq!(
        insp.finish().unwrap().media_type.as_str(),
        "application/pdf"
    );
}
