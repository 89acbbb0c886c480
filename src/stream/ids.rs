//! Ids: the random bits come from the operating system here, in the shell; the core only
//! lays them out ([`RandomId`]).

use std::io;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::upload::RandomId;

/// 128 random bits from the operating system.
pub(crate) fn random_id() -> Result<RandomId> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::io_other("generating an id", io::ErrorKind::Other, e.to_string()))?;
    Ok(RandomId::from_bytes(bytes))
}

/// A [`RandomId::time_ordered`] id for `now`, its random bits from the operating system,
/// and above every id this process made before: within one millisecond (or when the clock
/// steps back) the last id is counted up by a random step instead (RFC 9562, section
/// 6.2, method 2), so a process's attachments list in the order they were made.
pub(crate) fn time_ordered_id(now: SystemTime) -> Result<RandomId> {
    static LAST: Mutex<Option<RandomId>> = Mutex::new(None);
    let random = *random_id()?.as_bytes();
    let fresh = RandomId::time_ordered(crate::upload::unix_millis(now), random);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let id = match *last {
        Some(prev) if fresh <= prev => {
            let step = 1 + u64::from(u16::from_be_bytes([random[14], random[15]]));
            prev.counted_up(step).unwrap_or_else(|| {
                // The counter ran out: the next millisecond.
                let prev_ms = prev.unix_millis().unwrap_or(0);
                RandomId::time_ordered(prev_ms + 1, random)
            })
        }
        _ => fresh,
    };
    *last = Some(id);
    Ok(id)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn time_ordered_ids_increase_within_one_millisecond_and_when_the_clock_steps_back() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_000);
        let mut last = time_ordered_id(t).unwrap();
        for i in 0..2_000u64 {
            // The same millisecond, then one that went back.
            let now = if i % 2 == 0 {
                t
            } else {
                t - Duration::from_millis(5)
            };
            let id = time_ordered_id(now).unwrap();
            assert!(id > last, "{id} after {last}");
            assert!(id.to_string() > last.to_string());
            assert!(id.unix_millis().is_some_and(|ms| ms >= 1_800_000_000_000));
            last = id;
        }
    }
}
