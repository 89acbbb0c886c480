//! Every JSON example of seeds 000 and 001, pasted verbatim, parses into the wire types and
//! serialises back to an equal JSON value.

use attachments::Error;
use attachments::error::SizeLimit;
use attachments::wire::{self, OkFlag, connectivity as conn, demand};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Parses `text` as `T` (borrowing from it), serialises it back, and checks the JSON values
/// are equal.
fn round_trip<'a, T: Deserialize<'a> + Serialize>(text: &'a str) -> T {
    let parsed: T = wire::from_slice(text.as_bytes())
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", std::any::type_name::<T>()));
    let original: Value = serde_json::from_str(text).unwrap();
    let back = serde_json::to_value(&parsed).unwrap();
    assert_eq!(
        back,
        original,
        "{} does not round-trip",
        std::any::type_name::<T>()
    );
    parsed
}

// ---- Seed 000: Demand API v3 -------------------------------------------------------------

const DEMAND_UPLOAD_REQUEST: &str = r#"{
"accommodation": 6819547,
"conversation": "cc872746-77f2-5886-ba7c-17e0497241b5",
"reservation": "4380765874",
"file_content": "iVBORw0KGgoAAAANSUhEUgAAADAAAABAgMAAADW0NTUAAAA",
"file_name": "example_image.png",
"file_type": "image/png",
"file_size": 35
}"#;

const DEMAND_UPLOAD_RESPONSE: &str = r#"{
"request_id": "25539c17-59e6-4465-ad85-d0a517a474c5",
"data": {
"attachment": "c82a5350-19fe-11f0-959e-1373654fdef5"
}
}"#;

const DEMAND_METADATA_REQUEST: &str = r#"{
"conversation":"cc872746-77f2-5886-ba7c-17e0497241b5",
"accommodation":6819547,
"attachment":"c82a5350-19fe-11f0-959e-1373654fdef5"
}"#;

const DEMAND_METADATA_RESPONSE: &str = r#"{
"request_id": "4cf641d4-dc42-4970-a1e6-8f7fb6c8785f",
"data": {
"metadata": {
"file_size": 95299,
"file_name": "c82a5350-19fe-11f0-959e-1373654fdef5.png",
"file_type": "image/png"
}
}
}"#;

const DEMAND_SIZE_EXCEEDED: &str = r#"{
"errors": [
{
"id": 400,
"message": {
"error": "bad request",
"message": "File size exceeds the 1MB limit"
}
}
]
}"#;

const DEMAND_MISMATCH_REQUEST: &str = r#"{
"accommodation": 6819547,
"conversation": "cc872746-77f2-5886-ba7c-17e0497241b5",
"reservation": "4380765874",
"file_content": "iVBORw0KGgoAAAANSUhEUgAAADAAAABAgMAAADW0NTUAAAA",
"file_name": "example_image.png",
"file_type": "image/png",
"file_size": 350
}"#;

const DEMAND_MISMATCH_RESPONSE: &str = r#"{
"request_id": "36a34bff-1353-4689-9169-3bcf361a4ff0",
"errors": [
{
"id": 400,
"message": {
"error": "bad request",
"message": "Request failed with code: 400, message: Content length is 35 but metadata size is 350"
}
}
]
}"#;

#[test]
fn seed_000_upload_request_round_trips() {
    let req: demand::UploadRequest<'static> = round_trip(DEMAND_UPLOAD_REQUEST);
    assert_eq!(req.accommodation, 6819547);
    assert_eq!(req.reservation.as_str(), "4380765874");
    assert_eq!(req.file_size, 35);
    assert_eq!(req.file_content.len(), 47);
    let req: demand::UploadRequest<'static> = round_trip(DEMAND_MISMATCH_REQUEST);
    assert_eq!(req.file_size, 350);
}

#[test]
fn seed_000_responses_round_trip() {
    let up: demand::Response<demand::UploadData> = round_trip(DEMAND_UPLOAD_RESPONSE);
    assert_eq!(up.data.attachment, "c82a5350-19fe-11f0-959e-1373654fdef5");
    let r: demand::AttachmentRef = round_trip(DEMAND_METADATA_REQUEST);
    assert_eq!(r.accommodation, 6819547);
    let meta: demand::Response<demand::MetadataData> = round_trip(DEMAND_METADATA_RESPONSE);
    assert_eq!(meta.data.metadata.file_size, 95299);
    let e: demand::ErrorResponse = round_trip(DEMAND_SIZE_EXCEEDED);
    assert_eq!(e.request_id, None);
    let e: demand::ErrorResponse = round_trip(DEMAND_MISMATCH_RESPONSE);
    assert_eq!(e.errors[0].id, 400);
}

#[test]
fn our_errors_produce_the_seed_000_error_bodies_exactly() {
    let too_large = Error::TooLarge {
        size: 2_000_000,
        limit: 1_048_576,
        kind: SizeLimit::Single,
    };
    assert_eq!(
        serde_json::to_value(demand::ErrorResponse::from_error(&too_large, None)).unwrap(),
        serde_json::from_str::<Value>(DEMAND_SIZE_EXCEEDED).unwrap()
    );
    let mismatch = Error::SizeMismatch {
        actual: 35,
        declared: 350,
    };
    let body = demand::ErrorResponse::from_error(
        &mismatch,
        Some("36a34bff-1353-4689-9169-3bcf361a4ff0".into()),
    );
    assert_eq!(
        serde_json::to_value(body).unwrap(),
        serde_json::from_str::<Value>(DEMAND_MISMATCH_RESPONSE).unwrap()
    );
}

// ---- Seed 001: Connectivity --------------------------------------------------------------

const CONN_UPLOAD_REQUEST: &str = r#"{
  "attachment": {
      "file_name": "food.jpeg",
      "file_content": "bmd8dM1Zs2I2H2qvIMTHHvWMFIY9Z...HG09cKPxP+lSyAFsHoMAfgtap+W0cfgOP61gH/2Q==",
      "file_type": "image/jpeg",
      "file_size": 30220
  }
}"#;

const CONN_UPLOAD_RESPONSE: &str = r#"{
  "errors": [],
  "warnings": [],
  "data": {
      "ok": "true",
      "attachment_id": "795e5w90-0419-11eb-a306-e506dfed6417"
  },
  "meta": {
      "ruid": "UmFuZG9tSVYkc2RlIyh9YeZtlXlfGFyaSXUVOZBxzuFBEyAuoUTymmZBQBL8HJp1Sg4KYsL4sCa9K1nyyjq2Wm4Mm5oc6GVh"
  }
}"#;

const CONN_START: &str = r#"{
  "attachment": {
    "action": "start",
    "chunk": {
      "chunk_number": 0,
      "chunk_content": "6jc4ONP6nZ2ZIO+/Ltt3oKb6jsR/kvafzKP...9SB9R2I9/1L2n0/4lH+pBd2taxoYxoa1o/2Q==",
      "chunk_size": 887654
    },
    "file_type": "image/png",
    "file_size": 2602519,
    "file_name": "test.png"
  }
}"#;

const CONN_RESUME: &str = r#"{
  "attachment": {
    "action": "resume",
    "upload_id": "70f676b0-0fc0-11eb-bd1d-af10278183bb",
    "chunk": {
      "chunk_number": 1,
      "chunk_content": "r34tr34jc4ONP6nZwdwfdv'+3oKb6jsR/kvafzKP...9SB9R2I9/1L2n0/4lH+pBd2taxoYxoa1o/dq=",
      "chunk_size": 879543
    },
    "file_type": "image/png",
    "file_size": 2602519,
    "file_name": "test.png"
  }
}"#;

const CONN_FINISH: &str = r#"{
  "attachment": {
    "action": "finish",
    "upload_id": "70f676b0-0fc0-11eb-bd1d-af10278183bb",
    "chunk": {
      "chunk_number": 2,
      "chunk_content": "dswqd+/Ltt3oKb6jsR/kvafzKP...9SB9R2I9/1L2n0/4lH+pBd2twefewfQ==",
      "chunk_size": 835322
    },
    "file_type": "image/png",
    "file_size": 2602519,
    "file_name": "test.png"
  }
}"#;

const CONN_START_RESPONSE: &str = r#"{
  "meta": {
      "ruid": "UmFuZG9tSVYkc2RlIyh9YQVPzSJM7C3Qb40xAeaz3rHCVM8SwJA2okmkRCaFHScL+e0ZCOlFpCeu2/PCn/z9Z4OciPg57g5d"
  },
  "data": {
      "attachment_id": null,
      "upload_id": "ab88c360-0425-11eb-a250-9fc9f2abb407",
      "ok": "true"
  },
  "warnings": [],
  "errors": []
}"#;

const CONN_RESUME_RESPONSE: &str = r#"{
    "warnings": [],
    "meta": {
        "ruid": "UmFuZG9tSVYkc2RlIyh9YbmJopTsBnWOJd/bcc/NhX1asY9SXpUBN8XseXC7RbmbOlQZBLpVS8jsYY4ItxirrSDtTbeUDg2b"
    },
    "errors": [],
    "data": {
        "ok": "true",
        "upload_id": null,
        "attachment_id": null
    }
}"#;

const CONN_FINISH_RESPONSE: &str = r#"{
  "meta": {
      "ruid": "UmFuZG9tSVYkc2RlIyh9YbmJopTsBnWOblzRm5qla6/doscqJol+h1DH2cL+0RcuM9wnUHudhoGNd6ISWjEep5nEcpCRzQYP"
  },
  "errors": [],
  "warnings": [],
  "data": {
      "attachment_id": "8a9ee7f0-0fb1-11eb-aadc-81123ea571a8",
      "ok": "true",
      "upload_id": null
  }
}"#;

const CONN_DOWNLOAD_RESPONSE: &str = r#"{
    "data": {
        "ok": "true",
        "file_content": "/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAAYEBQYFBAYGBQY..dfcw7-ll",
        "attachment_id": "8d6547c0-0428-11eb-a52f-03d56b16926b",
        "conversation_id": "7e706d21-7bf3-53cf-b2fb-5ef6466971e0"
    },
    "meta": {
        "ruid": "UmFuZG9tSVYkc2RlIyh9YYvm4ShJdHC4K8EVWhg/6C+8QJoMS24Ixs0yA9+6DCBLOjVv6ZCZGG21hKCwt50kgH3Skiq+vcxo"
    },
    "errors": [],
    "warnings": []
}"#;

const CONN_FILE_INFO_RESPONSE: &str = r#"{
    "errors": [],
    "meta": {
        "ruid": "UmFuZG9tSVYkc2RlIyh9YX1b+ZfQjV8pI0EjTeelZpab12oo9QKESHCr/tki/ynnbcRuMFr9fsxyc4AIzVD6J/vGTbBAkWW0"
    },
    "data": {
        "file_type": "image/jpeg",
        "file_name": "test.jpg",
        "file_size": 655933
    },
    "warnings": []
}"#;

#[test]
fn seed_001_single_upload_round_trips() {
    let req: conn::UploadRequest<'static> = round_trip(CONN_UPLOAD_REQUEST);
    assert_eq!(req.attachment.file_size, 30220);
    assert_eq!(req.attachment.file_type, "image/jpeg");
    let resp: conn::UploadResponse = round_trip(CONN_UPLOAD_RESPONSE);
    let data = resp.data.unwrap();
    assert_eq!(data.ok, OkFlag(true));
    assert_eq!(data.attachment_id, "795e5w90-0419-11eb-a306-e506dfed6417");
}

#[test]
fn seed_001_chunk_requests_round_trip_and_add_up() {
    let start: conn::ChunkRequest<'static> = round_trip(CONN_START);
    let resume: conn::ChunkRequest<'static> = round_trip(CONN_RESUME);
    let finish: conn::ChunkRequest<'static> = round_trip(CONN_FINISH);
    assert_eq!(start.attachment.action, conn::ChunkAction::Start);
    assert_eq!(start.attachment.upload_id, None);
    assert_eq!(resume.attachment.action, conn::ChunkAction::Resume);
    assert_eq!(finish.attachment.action, conn::ChunkAction::Finish);
    assert_eq!(
        finish.attachment.upload_id.as_deref(),
        Some("70f676b0-0fc0-11eb-bd1d-af10278183bb")
    );
    let numbers: Vec<u64> = [&start, &resume, &finish]
        .iter()
        .map(|r| r.attachment.chunk.chunk_number)
        .collect();
    assert_eq!(numbers, [0, 1, 2]);
    let total: u64 = [&start, &resume, &finish]
        .iter()
        .map(|r| r.attachment.chunk.chunk_size)
        .sum();
    assert_eq!(total, start.attachment.file_size);
    assert_eq!(total, 2_602_519);
}

#[test]
fn seed_001_chunk_responses_round_trip() {
    let start: conn::ChunkResponse = round_trip(CONN_START_RESPONSE);
    let data = start.data.unwrap();
    assert_eq!(
        data.upload_id.as_deref(),
        Some("ab88c360-0425-11eb-a250-9fc9f2abb407")
    );
    assert_eq!(data.attachment_id, None);
    let resume: conn::ChunkResponse = round_trip(CONN_RESUME_RESPONSE);
    assert_eq!(
        resume.data.unwrap(),
        conn::ChunkData {
            attachment_id: None,
            upload_id: None,
            ok: OkFlag(true)
        }
    );
    let finish: conn::ChunkResponse = round_trip(CONN_FINISH_RESPONSE);
    assert_eq!(
        finish.data.unwrap().attachment_id.as_deref(),
        Some("8a9ee7f0-0fb1-11eb-aadc-81123ea571a8")
    );
    assert!(finish.errors.is_empty() && finish.warnings.is_empty());
}

#[test]
fn seed_001_download_and_file_info_round_trip() {
    let dl: conn::DownloadResponse<'static> = round_trip(CONN_DOWNLOAD_RESPONSE);
    assert_eq!(
        dl.data.unwrap().conversation_id,
        "7e706d21-7bf3-53cf-b2fb-5ef6466971e0"
    );
    let info: conn::FileInfoResponse = round_trip(CONN_FILE_INFO_RESPONSE);
    let info = info.data.unwrap();
    assert_eq!(
        (info.file_name.as_str(), info.file_size),
        ("test.jpg", 655933)
    );
}

// ---- Reading leniently, writing as the examples do ---------------------------------------

#[test]
fn numbers_documented_as_strings_are_accepted_as_strings_and_written_as_integers() {
    let text = r#"{"attachment": {"action": "resume", "upload_id": "u1",
        "chunk": {"chunk_number": "1", "chunk_content": "QUJD", "chunk_size": "3"},
        "file_type": "image/png", "file_size": "2602519", "file_name": "test.png"}}"#;
    let req: conn::ChunkRequest<'_> = wire::from_slice(text.as_bytes()).unwrap();
    assert_eq!(req.attachment.chunk.chunk_number, 1);
    assert_eq!(req.attachment.chunk.chunk_size, 3);
    assert_eq!(req.attachment.file_size, 2_602_519);
    let back = serde_json::to_value(&req).unwrap();
    assert_eq!(back["attachment"]["chunk"]["chunk_number"], Value::from(1));
    assert_eq!(back["attachment"]["file_size"], Value::from(2_602_519));
}

#[test]
fn malformed_numbers_are_a_400_naming_the_value() {
    for bad in [
        r#""-1""#,
        r#""1.5""#,
        r#"" 3""#,
        r#""""#,
        "-1",
        "1.5",
        r#""99999999999999999999999""#,
    ] {
        let text = format!(
            r#"{{"attachment": {{"file_name": "a.png", "file_content": "", "file_type": "image/png", "file_size": {bad}}}}}"#
        );
        let err = wire::from_slice::<conn::UploadRequest<'_>>(text.as_bytes()).unwrap_err();
        assert_eq!(err.status(), 400, "{bad}");
        assert!(matches!(err, Error::InvalidJson { .. }), "{bad}: {err}");
        assert!(
            err.to_string().contains(bad.trim_matches('"')),
            "{bad}: {err}"
        );
    }
}

#[test]
fn ok_is_read_from_a_boolean_too() {
    let text = r#"{"errors": [], "warnings": [], "data": {"ok": true, "attachment_id": "a"}, "meta": {"ruid": "r"}}"#;
    let resp: conn::UploadResponse = wire::from_slice(text.as_bytes()).unwrap();
    assert_eq!(resp.data.unwrap().ok, OkFlag(true));
}

#[test]
fn a_missing_field_is_named() {
    let text = r#"{"accommodation": 1, "conversation": "c", "reservation": 5, "file_content": "",
        "file_name": "a.png", "file_type": "image/png"}"#;
    let err = wire::from_slice::<demand::UploadRequest<'_>>(text.as_bytes()).unwrap_err();
    assert_eq!(err.status(), 400);
    assert!(
        err.to_string().contains("missing field `file_size`"),
        "{err}"
    );
}

#[test]
fn unknown_fields_are_ignored() {
    let text = r#"{"accommodation": 1, "conversation": "c", "reservation": 4380765874, "file_content": "",
        "file_name": "a.png", "file_type": "image/png", "file_size": 0, "extra": {"x": 1}}"#;
    let req: demand::UploadRequest<'_> = wire::from_slice(text.as_bytes()).unwrap();
    assert_eq!(req.reservation.as_str(), "4380765874");
}

#[test]
fn base64_payloads_are_borrowed_from_the_body() {
    let body = CONN_START.as_bytes().to_vec();
    let req: conn::ChunkRequest<'_> = wire::from_slice(&body).unwrap();
    let content = &req.attachment.chunk.chunk_content;
    assert!(content.is_borrowed(), "no copy of chunk_content");
    let range = body.as_ptr_range();
    assert!(range.contains(&content.as_bytes().as_ptr()));
}

#[test]
fn a_connectivity_error_envelope_carries_status_and_message() {
    let err = Error::TooLarge {
        size: 20,
        limit: 10,
        kind: SizeLimit::Chunk,
    };
    let env: conn::Envelope<conn::UploadData> = conn::Envelope::error(&err, "r1");
    assert_eq!(
        serde_json::to_value(&env).unwrap(),
        serde_json::json!({"errors": [{"code": 400, "message": "Chunk size exceeds the 10 bytes limit"}],
                           "warnings": [], "meta": {"ruid": "r1"}})
    );
    let text = serde_json::to_string(&env).unwrap();
    let back: conn::Envelope<conn::UploadData> = wire::from_slice(text.as_bytes()).unwrap();
    assert_eq!(back, env);
}
