//! The budget of bytes buffered by request bodies read whole: for all clients together,
//! and for each client alone, so one client holding bodies open cannot take it all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Whose budget had no room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Full {
    /// The client's share.
    Client,
    /// The server's whole budget.
    Total,
}

type Shares = Arc<Mutex<HashMap<String, Arc<Semaphore>>>>;

/// Both budgets, counted in KiB.
#[derive(Debug)]
pub(super) struct Budget {
    total: Arc<Semaphore>,
    total_kib: u32,
    share_kib: u32,
    /// A semaphore per client that has a body buffered or waiting; removed when the last
    /// one is done, so the map holds at most the requests in flight.
    shares: Shares,
}

/// A body's place in both budgets, given back when dropped.
#[derive(Debug)]
pub(super) struct Place {
    _total: OwnedSemaphorePermit,
    _client: Share,
}

/// A body's place in its client's share; removes the client's entry when it was the last.
#[derive(Debug)]
struct Share {
    permit: Option<OwnedSemaphorePermit>,
    key: String,
    shares: Shares,
}

impl Drop for Share {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut shares = self.shares.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map holds it: no body of this client is buffered or waiting.
        if shares
            .get(&self.key)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            shares.remove(&self.key);
        }
    }
}

fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX)
}

impl Budget {
    /// A budget of `total` bytes, of which one client may hold `share`.
    pub(super) fn new(total: usize, share: usize) -> Self {
        let total_kib = kib(total);
        Budget {
            total: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
            share_kib: kib(share).min(total_kib),
            shares: Arc::default(),
        }
    }

    /// Takes `bytes` for `client`, from its share and then from the total (a body larger
    /// than either takes all of it), waiting at most `wait` in all.
    pub(super) async fn take(
        &self,
        client: &str,
        bytes: usize,
        wait: Duration,
    ) -> Result<Place, Full> {
        let deadline = tokio::time::Instant::now() + wait;
        let want = kib(bytes);
        let mut share = Share {
            permit: None,
            key: client.to_owned(),
            shares: Arc::clone(&self.shares),
        };
        let semaphore = {
            let mut shares = self.shares.lock().unwrap_or_else(|e| e.into_inner());
            let share_kib = self.share_kib as usize;
            Arc::clone(
                shares
                    .entry(client.to_owned())
                    .or_insert_with(|| Arc::new(Semaphore::new(share_kib))),
            )
        };
        let acquire = semaphore.acquire_many_owned(want.min(self.share_kib));
        match tokio::time::timeout_at(deadline, acquire).await {
            Ok(Ok(permit)) => share.permit = Some(permit),
            _ => return Err(Full::Client),
        }
        let acquire = Arc::clone(&self.total).acquire_many_owned(want.min(self.total_kib));
        match tokio::time::timeout_at(deadline, acquire).await {
            Ok(Ok(total)) => Ok(Place {
                _total: total,
                _client: share,
            }),
            _ => Err(Full::Total),
        }
    }

    /// Clients with a body buffered or waiting.
    #[cfg(test)]
    fn clients(&self) -> usize {
        self.shares.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn a_client_cannot_take_more_than_its_share_and_others_still_can() {
        let budget = Budget::new(100 * 1024, 40 * 1024);
        let a1 = budget.take("a", 30 * 1024, WAIT).await.unwrap();
        assert_eq!(
            budget.take("a", 20 * 1024, WAIT).await.unwrap_err(),
            Full::Client
        );
        let b = budget.take("b", 40 * 1024, WAIT).await.unwrap();
        let c = budget.take("c", 30 * 1024, WAIT).await.unwrap();
        // 100 KiB taken: the total is full for everyone.
        assert_eq!(budget.take("d", 1024, WAIT).await.unwrap_err(), Full::Total);
        drop((b, c));
        // A body larger than a share takes the whole share.
        drop(a1);
        let big = budget.take("a", 90 * 1024, WAIT).await.unwrap();
        assert_eq!(budget.take("a", 1, WAIT).await.unwrap_err(), Full::Client);
        drop(big);
        assert_eq!(budget.clients(), 0, "entries go with their last body");
    }

    #[tokio::test]
    async fn a_waiting_body_gets_its_place_when_one_is_given_back() {
        let budget = Arc::new(Budget::new(10 * 1024, 10 * 1024));
        let first = budget.take("a", 10 * 1024, WAIT).await.unwrap();
        let waiting = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move {
                budget
                    .take("b", 5 * 1024, Duration::from_secs(5))
                    .await
                    .map(|_| ())
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        assert_eq!(waiting.await.unwrap(), Ok(()));
        assert_eq!(budget.clients(), 0);
    }
}
