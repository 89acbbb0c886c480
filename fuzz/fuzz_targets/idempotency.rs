//! `Idempotency-Key` header values and stored key records, as a hostile client or a
//! damaged store gives them: never a panic; a key read is 1 to 255 printable characters
//! and reads back the same from the header value the clients send; a record read back
//! writes and reads back equal, and the decision on it is total.
//!
//! Input layout: the first byte picks what the rest is (even: a header value; odd: a
//! record), the next 8 bytes of a record input are the time of the decision.
#![no_main]

use std::time::{Duration, SystemTime};

use attachments::idempotency::{
    Decision, Fingerprint, IdempotencyKey, KeyRecord, MAX_KEY_LEN, decide,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Ok(key) = IdempotencyKey::parse(rest) {
            let text = key.as_str();
            assert!(!text.is_empty() && text.len() <= MAX_KEY_LEN, "{key:?}");
            assert!(text.bytes().all(|b| (0x20..0x7f).contains(&b)), "{key:?}");
            let again = IdempotencyKey::parse(key.to_header_value().as_bytes()).unwrap();
            assert_eq!(again, key);
        }
        return;
    }
    let (now, record) = match rest.split_first_chunk::<8>() {
        Some((now, record)) => (u64::from_le_bytes(*now) >> 24, record),
        None => (0, rest),
    };
    let Ok(record) = KeyRecord::from_bytes(record, &"fuzz") else {
        return;
    };
    let back = KeyRecord::from_bytes(&record.to_bytes(), &"fuzz").unwrap();
    assert_eq!(back, record);
    let now = SystemTime::UNIX_EPOCH + Duration::from_millis(now);
    let same = record.fingerprint;
    let other = Fingerprint::of(&[b"another request"]);
    match decide(Some(&record), &same, now) {
        Decision::Claim => assert!(record.is_expired(now)),
        Decision::Replay(answer) => assert_eq!(Some(answer), record.answer),
        Decision::InFlight => assert!(record.answer.is_none()),
        Decision::Mismatch => panic!("the record's own fingerprint is a mismatch"),
    }
    if other != same && !record.is_expired(now) {
        assert_eq!(decide(Some(&record), &other, now), Decision::Mismatch);
    }
});
