//! The upload quotas (`attachments::server::Quotas`) under any sequence of operations:
//! what each key holds is exactly the sum of its open uploads, never past its quota, and
//! closing everything leaves nothing behind.
#![cfg(feature = "server")]

use std::collections::HashMap;
use std::time::Duration;

use attachments::server::{QuotaLimit, Quotas, UploadQuota};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Open {
        id: u8,
        client: u8,
        scope: u8,
        bytes: u16,
    },
    Stage {
        id: u8,
        bytes: u16,
    },
    Unstage {
        id: u8,
        bytes: u16,
    },
    Rename {
        from: u8,
        to: u8,
    },
    Close {
        id: u8,
    },
    Wait {
        secs: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..12u8, 0..3u8, 0..3u8, any::<u16>()).prop_map(|(id, client, scope, bytes)| Op::Open {
            id,
            client,
            scope,
            bytes
        }),
        (0..12u8, any::<u16>()).prop_map(|(id, bytes)| Op::Stage { id, bytes }),
        (0..12u8, any::<u16>()).prop_map(|(id, bytes)| Op::Unstage { id, bytes }),
        (0..12u8, 0..12u8).prop_map(|(from, to)| Op::Rename { from, to }),
        (0..12u8).prop_map(|id| Op::Close { id }),
        (0..40u8).prop_map(|secs| Op::Wait { secs }),
    ]
}

/// The model: each open upload's keys, bytes and last activity.
#[derive(Default)]
struct Model {
    open: HashMap<String, (Vec<String>, u64, Duration)>,
}

impl Model {
    fn usage(&self, key: &str) -> (usize, u64) {
        self.open
            .values()
            .filter(|(keys, ..)| keys.iter().any(|k| k == key))
            .fold((0, 0), |(n, b), (_, bytes, _)| (n + 1, b + bytes))
    }
    fn expire(&mut self, now: Duration, idle: Duration) {
        self.open
            .retain(|_, (_, _, last)| now.saturating_sub(*last) <= idle);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn usage_is_the_sum_of_open_uploads_and_stays_within_the_quota(
        ops in proptest::collection::vec(op(), 0..80),
    ) {
        let quota = UploadQuota { max_open: 3, max_staged: 100_000 };
        let idle = Duration::from_secs(60);
        let mut q = Quotas::new(quota, idle);
        let mut model = Model::default();
        let mut now = Duration::ZERO;
        let keys_of = |client: u8, scope: u8| vec![format!("client {client}"), format!("scope {scope}")];
        for op in ops {
            match op {
                Op::Open { id, client, scope, bytes } => {
                    model.expire(now, idle);
                    let id = id.to_string();
                    let keys = keys_of(client, scope);
                    let fits = !model.open.contains_key(&id) && keys.iter().all(|k| {
                        let (n, b) = model.usage(k);
                        n < 3 && b + u64::from(bytes) <= 100_000
                    });
                    let got = q.open(&id, &[&keys[0], &keys[1]], u64::from(bytes), now);
                    prop_assert_eq!(got.is_ok(), fits, "{:?}", got);
                    if fits {
                        model.open.insert(id, (keys, u64::from(bytes), now));
                    }
                }
                Op::Stage { id, bytes } => {
                    model.expire(now, idle);
                    let id = id.to_string();
                    let got = q.stage(&id, u64::from(bytes), now);
                    match model.open.get(&id).cloned() {
                        None => prop_assert!(got.is_ok()),
                        Some((keys, _, _)) => {
                            let fits = keys.iter().all(|k| model.usage(k).1 + u64::from(bytes) <= 100_000);
                            prop_assert_eq!(got.is_ok(), fits, "{:?}", got);
                            if let Err(r) = got {
                                prop_assert_eq!(r.limit_kind, QuotaLimit::StagedBytes);
                            }
                            let entry = model.open.get_mut(&id).unwrap();
                            entry.2 = now;
                            if fits {
                                entry.1 += u64::from(bytes);
                            }
                        }
                    }
                }
                Op::Unstage { id, bytes } => {
                    let id = id.to_string();
                    q.unstage(&id, u64::from(bytes));
                    if let Some(entry) = model.open.get_mut(&id) {
                        entry.1 -= u64::from(bytes).min(entry.1);
                    }
                }
                Op::Rename { from, to } => {
                    let (from, to) = (from.to_string(), to.to_string());
                    q.rename(&from, &to);
                    if !model.open.contains_key(&to)
                        && let Some(entry) = model.open.remove(&from)
                    {
                        model.open.insert(to, entry);
                    }
                }
                Op::Close { id } => {
                    q.close(&id.to_string());
                    model.open.remove(&id.to_string());
                }
                Op::Wait { secs } => {
                    now += Duration::from_secs(u64::from(secs));
                    q.expire(now);
                    model.expire(now, idle);
                }
            }
            prop_assert_eq!(q.open_uploads(), model.open.len());
            for client in 0..3 {
                for key in keys_of(client, client) {
                    let (n, bytes) = q.usage(&key);
                    prop_assert_eq!((n, bytes), model.usage(&key), "{}", key);
                    prop_assert!(n <= 3 && bytes <= 100_000);
                }
            }
        }
        let ids: Vec<String> = model.open.keys().cloned().collect();
        for id in ids {
            q.close(&id);
        }
        prop_assert_eq!(q.open_uploads(), 0);
        for client in 0..3 {
            for key in keys_of(client, client) {
                prop_assert_eq!(q.usage(&key), (0, 0));
            }
        }
    }
}
