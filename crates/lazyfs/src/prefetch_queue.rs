//! One order for the prefetch requests of every layer of a process.
//!
//! Each layer's prefetch list starts when that layer is mounted, and the layers of an image
//! are mounted one after another. Run side by side, each with its own requests in flight,
//! they would split the link evenly, so the spans a workload reads first (in any layer)
//! wait behind spans of other layers it reads last. A prefetch artifact ranks its span
//! ranges by the position of the read they serve in the whole image's read list, so the
//! ranks of different layers compare: this queue lets requests go lowest rank first, a few at
//! a time, whichever layer they belong to.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// Prefetch requests in flight at once across all layers sharing a queue, unless said
/// otherwise: enough to keep a link busy between requests without splitting it so finely
/// that the next needed span arrives late.
pub const PREFETCH_SLOTS: usize = 3;

/// Prefetch requests of several layers taken in rank order (lowest first, then first asked),
/// at most `slots` at a time.
#[derive(Debug)]
pub struct PrefetchQueue {
    slots: usize,
    state: Mutex<State>,
    changed: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct State {
    running: usize,
    /// (rank, ticket) of every request waiting for its turn.
    waiting: BTreeSet<(i64, u64)>,
    next_ticket: u64,
}

impl Default for PrefetchQueue {
    fn default() -> Self {
        PrefetchQueue::new(PREFETCH_SLOTS)
    }
}

impl PrefetchQueue {
    /// A queue letting `slots` requests (at least one) run at once.
    pub fn new(slots: usize) -> Self {
        PrefetchQueue {
            slots: slots.max(1),
            state: Mutex::new(State::default()),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain counters and a set: consistent even after a panic elsewhere.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until a request of rank `rank` may run: a slot is free and no request of a
    /// lower rank (or of the same rank, asked earlier) waits. The turn lasts until the
    /// returned guard is dropped; a wait that is given up leaves no trace.
    pub async fn turn(self: &Arc<Self>, rank: i64) -> Turn {
        let ticket = {
            let mut state = self.lock();
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            state.waiting.insert((rank, ticket));
            ticket
        };
        let mut waiter = Waiter {
            queue: self.clone(),
            key: Some((rank, ticket)),
        };
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.lock();
                if state.running < self.slots && state.waiting.first() == Some(&(rank, ticket)) {
                    state.waiting.pop_first();
                    state.running += 1;
                    waiter.key = None;
                    drop(state);
                    // The next in line may go too if a slot is still free; it looked while
                    // this one was first and waits to be told.
                    self.changed.notify_waiters();
                    return Turn {
                        queue: self.clone(),
                    };
                }
            }
            changed.await;
        }
    }

    /// Requests waiting for their turn.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }
}

/// A request's place in line until it gets its turn: dropped early (the task was
/// cancelled), it leaves the line so the requests behind it move up.
struct Waiter {
    queue: Arc<PrefetchQueue>,
    key: Option<(i64, u64)>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.queue.lock().waiting.remove(&key);
            self.queue.changed.notify_waiters();
        }
    }
}

/// A running prefetch request's slot; dropping it lets the next request go.
pub struct Turn {
    queue: Arc<PrefetchQueue>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        {
            let mut state = self.queue.lock();
            state.running = state.running.saturating_sub(1);
        }
        self.queue.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn requests_go_lowest_rank_first_a_few_at_a_time() {
        let queue = Arc::new(PrefetchQueue::new(1));
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = queue.turn(5).await;
        let mut tasks = Vec::new();
        for rank in [9, 3, 7, 3] {
            let (queue, order) = (queue.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _turn = queue.turn(rank).await;
                order.lock().unwrap().push(rank);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }));
            // Asked in this order.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(queue.waiting(), 4);
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [3, 3, 7, 9]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_free_slot_is_taken_at_once() {
        let queue = Arc::new(PrefetchQueue::new(3));
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // A turn is given back only once three turns are held at once: a free slot left
        // untaken (a waiter not woken) stalls every holder, and the test with them.
        let all_three = Arc::new(tokio::sync::Barrier::new(3));
        let tasks: Vec<_> = (0..9)
            .map(|rank| {
                let (queue, running, most) = (queue.clone(), running.clone(), most.clone());
                let all_three = all_three.clone();
                tokio::spawn(async move {
                    let _turn = queue.turn(rank).await;
                    let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    all_three.wait().await;
                    running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                })
            })
            .collect();
        let all = async {
            for t in tasks {
                t.await.unwrap();
            }
        };
        // Three rounds of three at once; bounded, so a stall fails instead of hanging.
        tokio::time::timeout(Duration::from_secs(30), all)
            .await
            .expect("turns were left untaken while slots were free");
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiter_that_looked_while_another_was_first_is_woken_for_a_free_slot() {
        let queue = Arc::new(PrefetchQueue::new(3));
        let mut held = Vec::new();
        for rank in 0..3 {
            held.push(queue.turn(rank).await);
        }
        // B (rank 6) waits, then A (rank 5) lines up ahead of it; both sleep (one thread:
        // a spawned task runs only when this one yields).
        let (qa, qb) = (queue.clone(), queue.clone());
        let b = tokio::spawn(async move { qb.turn(6).await });
        tokio::task::yield_now().await;
        let a = tokio::spawn(async move { qa.turn(5).await });
        tokio::task::yield_now().await;
        assert_eq!(queue.waiting(), 2);
        // Two slots free with one wake-up: B looks first, sees A first and sleeps again;
        // A takes a slot, and B must be told that one is still free.
        for turn in held.drain(1..) {
            std::mem::forget(turn);
        }
        queue.lock().running -= 2;
        queue.changed.notify_waiters();
        let both = async { (a.await.unwrap(), b.await.unwrap()) };
        let _turns = tokio::time::timeout(Duration::from_secs(10), both)
            .await
            .expect("a waiter slept while a slot was free");
        assert_eq!(queue.lock().running, 3);
        assert_eq!(queue.waiting(), 0);
    }

    #[tokio::test]
    async fn a_request_given_up_leaves_the_line() {
        let queue = Arc::new(PrefetchQueue::new(1));
        let held = queue.turn(0).await;
        let gone = tokio::spawn({
            let queue = queue.clone();
            async move {
                let _turn = queue.turn(1).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        gone.abort();
        let _ = gone.await;
        assert_eq!(queue.waiting(), 0);
        drop(held);
        // The next request is not stuck behind the one that left.
        tokio::time::timeout(Duration::from_secs(5), queue.turn(2))
            .await
            .expect("turn after an abandoned wait");
    }
}
