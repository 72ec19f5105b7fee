//! How much federated work the hub takes on at once.
//!
//! Every federated query (gRPC, HTTP or public, cached or not) is admitted
//! here before it asks any member. At most `max_concurrent_queries` are
//! being worked on; the rest wait in arrival order, and a member's deadline
//! starts only when its query is admitted. Without this, a burst of
//! queries would all fan out at once and every one of them would spend its
//! deadline queueing in front of the nodes: under enough load, *every*
//! answer would come back with members timed out. With it, a burst costs
//! waiting time, not answers.
//!
//! Waiting is bounded twice, so memory stays bounded and no caller waits
//! forever: at most `max_queued_queries` may wait, and none longer than
//! `max_queue_wait_ms`. Past either, the caller is told at once that the
//! hub is busy (gRPC RESOURCE_EXHAUSTED, HTTP 503 with Retry-After) and
//! nothing is logged or asked.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

/// The admission gate (one per hub).
#[derive(Debug)]
pub struct Admission {
    working: Semaphore,
    capacity: usize,
    waiting: AtomicUsize,
    max_waiting: usize,
    max_wait: Duration,
}

/// Held while a query is being worked on.
#[derive(Debug)]
pub struct Admitted<'a> {
    _permit: SemaphorePermit<'a>,
}

/// Why a query was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Busy {
    /// `max_queued_queries` were already waiting.
    QueueFull { waiting: usize },
    /// It waited `max_queue_wait_ms` without a slot.
    WaitedTooLong { waited: Duration },
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Busy::QueueFull { waiting } => {
                write!(f, "the hub is busy: {waiting} federated queries are already waiting; try again shortly")
            }
            Busy::WaitedTooLong { waited } => {
                write!(f, "the hub is busy: the query waited {} ms for a slot without getting one; try again shortly", waited.as_millis())
            }
        }
    }
}

/// Decrements the waiting count however the wait ends (admitted, timed
/// out, or the caller went away and the future was dropped).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub fn new(max_concurrent: usize, max_waiting: usize, max_wait: Duration) -> Self {
        let capacity = max_concurrent.max(1);
        Admission { working: Semaphore::new(capacity), capacity, waiting: AtomicUsize::new(0), max_waiting, max_wait }
    }

    /// Waits for a slot (FIFO), within the bounds.
    pub async fn admit(&self) -> Result<Admitted<'_>, Busy> {
        if let Ok(permit) = self.working.try_acquire() {
            return Ok(Admitted { _permit: permit });
        }
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        if before >= self.max_waiting {
            return Err(Busy::QueueFull { waiting: before });
        }
        match tokio::time::timeout(self.max_wait, self.working.acquire()).await {
            Ok(Ok(permit)) => Ok(Admitted { _permit: permit }),
            // The semaphore is never closed; read a closed one as full.
            Ok(Err(_)) => Err(Busy::QueueFull { waiting: before }),
            Err(_) => Err(Busy::WaitedTooLong { waited: self.max_wait }),
        }
    }

    /// Longest a query may wait to be admitted.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// Queries being worked on now.
    pub fn working(&self) -> usize {
        self.capacity - self.working.available_permits()
    }

    /// Queries waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_hub_queues_in_order_then_refuses() {
        let gate = Admission::new(2, 1, Duration::from_millis(200));
        let a = gate.admit().await.unwrap();
        let _b = gate.admit().await.unwrap();
        assert_eq!(gate.working(), 2);

        // A third waits; a fourth finds the queue full at once.
        let third = gate.admit();
        tokio::pin!(third);
        assert!(futures::poll!(third.as_mut()).is_pending());
        assert_eq!(gate.waiting(), 1);
        assert_eq!(gate.admit().await.unwrap_err(), Busy::QueueFull { waiting: 1 });
        assert_eq!(gate.waiting(), 1, "a refused query does not stay counted");

        // A slot frees: the waiting one gets it.
        drop(a);
        let _c = third.await.unwrap();
        assert_eq!(gate.waiting(), 0);
        assert_eq!(gate.working(), 2);

        // Nobody frees a slot: the next one gives up after max_wait.
        let err = gate.admit().await.unwrap_err();
        assert_eq!(err, Busy::WaitedTooLong { waited: Duration::from_millis(200) });
        assert_eq!(gate.waiting(), 0);
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_leaves_the_queue() {
        let gate = Admission::new(1, 8, Duration::from_secs(60));
        let _a = gate.admit().await.unwrap();
        {
            let waiting = gate.admit();
            tokio::pin!(waiting);
            assert!(futures::poll!(waiting.as_mut()).is_pending());
            assert_eq!(gate.waiting(), 1);
        }
        assert_eq!(gate.waiting(), 0);
    }
}
