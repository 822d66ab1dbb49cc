//! The queue between requests and the store's writer.
//!
//! A write that someone waits for (a new grant) wakes the writer at once. A
//! write no one waits for (a check-in, an expiry) does not: it waits in
//! the queue for the next batch with a new grant, or at most [`DEFER`].
//! Under load, that spares the writer a wake-up, a `write` and a batch of
//! its own for every check-in; idle, a check-in still reaches the journal
//! within [`DEFER`]. Order is kept: one queue, taken from the front.
//!
//! The writer is a thread (the machine's disk) or a task (a simulated one);
//! [`Signal`] wakes either.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Job;

/// Longest a write no one waits for stays queued while the writer idles.
pub const DEFER: Duration = Duration::from_millis(50);

/// How the writer is woken.
pub enum Signal {
    /// A thread of its own: parked, and unparked.
    Thread(OnceLock<std::thread::Thread>),
    /// A task on the caller's runtime.
    Task(Notify),
}

impl Signal {
    fn wake(&self) {
        match self {
            Signal::Thread(thread) => {
                if let Some(thread) = thread.get() {
                    thread.unpark();
                }
            }
            Signal::Task(notify) => notify.notify_one(),
        }
    }
}

#[derive(Default)]
struct Queued {
    jobs: VecDeque<Job>,
    /// Jobs in `jobs` that someone waits for.
    waited: usize,
    /// When the oldest job no one waits for was queued.
    oldest: Option<Instant>,
    /// The writer sleeps with no deadline: any job wakes it.
    idle: bool,
    /// When the writer last took a batch.
    written_at: Option<Instant>,
    /// Every sender is gone: write what is left and stop.
    closed: bool,
}

/// What the writer is to do next.
pub enum Next {
    /// Write these, in order.
    Write(Vec<Job>),
    /// Nothing is due: sleep until woken, or for at most this long.
    Sleep(Option<Duration>),
    /// Closed and drained.
    Stop,
}

pub struct Queue {
    queued: Mutex<Queued>,
    /// Why the journal stopped, once a write or sync failed: nothing
    /// written after is durable.
    failed: OnceLock<String>,
    /// Wakes the writer.
    pub signal: Signal,
    /// Wakes senders waiting for room.
    room: Notify,
    capacity: usize,
    batch_max: usize,
}

impl Queue {
    pub fn new(signal: Signal, capacity: usize, batch_max: usize) -> Queue {
        Queue {
            queued: Mutex::new(Queued::default()),
            failed: OnceLock::new(),
            signal,
            room: Notify::new(),
            capacity,
            batch_max: batch_max.max(1),
        }
    }

    /// Records that the journal stopped at an error (the first one counts).
    pub fn fail(&self, reason: String) {
        let _ = self.failed.set(reason);
    }

    /// Why the journal stopped, if it did.
    pub fn failed(&self) -> Option<&str> {
        self.failed.get().map(String::as_str)
    }

    fn lock(&self) -> MutexGuard<'_, Queued> {
        self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `job`, waiting while the queue is full; `false` once the
    /// writer has stopped.
    pub async fn push(&self, job: Job) -> bool {
        loop {
            let room = self.room.notified();
            {
                let mut queued = self.lock();
                if queued.closed {
                    return false;
                }
                if queued.jobs.len() < self.capacity {
                    let waited = job.done.is_some();
                    if waited {
                        queued.waited += 1;
                    } else if queued.oldest.is_none() {
                        queued.oldest = Some(Instant::now());
                    }
                    queued.jobs.push_back(job);
                    let wake = waited || queued.idle || queued.jobs.len() >= self.batch_max;
                    queued.idle = false;
                    drop(queued);
                    if wake {
                        self.signal.wake();
                    }
                    return true;
                }
            }
            room.await;
        }
    }

    /// Queues `job` last, whatever the room, and closes the queue: no job
    /// comes after it. `false` if the queue was closed already.
    pub fn close_after(&self, job: Job) -> bool {
        let mut queued = self.lock();
        if queued.closed {
            return false;
        }
        if job.done.is_some() {
            queued.waited += 1;
        }
        queued.jobs.push_back(job);
        queued.closed = true;
        drop(queued);
        self.signal.wake();
        true
    }

    /// Marks the queue closed (every sender is gone) and wakes the writer.
    pub fn close(&self) {
        self.lock().closed = true;
        self.signal.wake();
    }

    /// The writer's next step, at `now`.
    pub fn next(&self, now: Instant) -> Next {
        let mut queued = self.lock();
        // How long the oldest job no one waits for has been deferred.
        let deferred = queued
            .oldest
            .map(|oldest| now.saturating_duration_since(oldest));
        let due = queued.waited > 0
            || queued.closed
            || queued.jobs.len() >= self.batch_max
            || deferred.is_some_and(|deferred| deferred >= DEFER);
        if queued.jobs.is_empty() {
            if queued.closed {
                return Next::Stop;
            }
            // Busy of late: the next new grant is likely near, and a
            // check-in before it need not wake the writer.
            let since = queued
                .written_at
                .map(|at| now.saturating_duration_since(at))
                .filter(|since| *since < DEFER);
            if let Some(since) = since {
                return Next::Sleep(Some(DEFER - since));
            }
            queued.idle = true;
            return Next::Sleep(None);
        }
        if !due {
            return Next::Sleep(Some(DEFER.saturating_sub(deferred.unwrap_or_default())));
        }
        let take = queued.jobs.len().min(self.batch_max);
        let jobs: Vec<Job> = queued.jobs.drain(..take).collect();
        let taken_waited = jobs.iter().filter(|job| job.done.is_some()).count();
        queued.waited -= taken_waited;
        // What is left was queued after what was taken: its oldest time is
        // no earlier than the one kept, which at worst writes it early.
        if !queued.jobs.iter().any(|job| job.done.is_none()) {
            queued.oldest = None;
        }
        queued.written_at = Some(now);
        drop(queued);
        self.room.notify_waiters();
        Next::Write(jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOp;
    use std::sync::Arc;

    fn delete(id: &str) -> Job {
        Job {
            op: Some(StoreOp::Delete(id.into(), 1)),
            done: None,
        }
    }

    fn put(
        id: &str,
    ) -> (
        Job,
        tokio::sync::oneshot::Receiver<Result<(), super::super::StoreError>>,
    ) {
        let (done, wait) = tokio::sync::oneshot::channel();
        let grant = crate::store::journal::tests::grant(1);
        let job = Job {
            op: Some(StoreOp::Put(id.into(), grant, true)),
            done: Some(done),
        };
        (job, wait)
    }

    fn ids(next: Next) -> Vec<String> {
        match next {
            Next::Write(jobs) => jobs
                .into_iter()
                .map(|job| match job.op {
                    Some(StoreOp::Put(id, ..) | StoreOp::Delete(id, _)) => id.into(),
                    None => "sync".into(),
                })
                .collect(),
            Next::Sleep(at_most) => panic!("the writer would sleep ({at_most:?})"),
            Next::Stop => panic!("the writer would stop"),
        }
    }

    fn queue(batch_max: usize) -> Queue {
        Queue::new(Signal::Task(Notify::new()), 8, batch_max)
    }

    /// Whether the writer was woken since it last looked.
    async fn woken(queue: &Queue) -> bool {
        let Signal::Task(notify) = &queue.signal else {
            unreachable!()
        };
        tokio::time::timeout(Duration::ZERO, notify.notified())
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_in_waits_for_the_next_new_grant_and_keeps_its_place() {
        let queue = queue(16);
        // Busy: a batch was just taken.
        let (first, _wait) = put("g0");
        assert!(queue.push(first).await);
        assert_eq!(ids(queue.next(Instant::now())), ["g0"]);
        assert!(woken(&queue).await);

        assert!(queue.push(delete("g0")).await);
        assert!(!woken(&queue).await, "a check-in woke the writer");
        let Next::Sleep(Some(at_most)) = queue.next(Instant::now()) else {
            panic!("a check-in alone was due at once");
        };
        assert!(at_most <= DEFER);

        let (next, _wait) = put("g1");
        assert!(queue.push(next).await);
        assert!(woken(&queue).await, "a new grant did not wake the writer");
        assert_eq!(ids(queue.next(Instant::now())), ["g0", "g1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_in_alone_is_written_within_the_deferral() {
        let queue = queue(16);
        // Idle: any job wakes the writer, which then waits out the deferral.
        assert!(matches!(queue.next(Instant::now()), Next::Sleep(None)));
        assert!(queue.push(delete("g0")).await);
        assert!(woken(&queue).await, "an idle writer was not woken");
        let Next::Sleep(Some(at_most)) = queue.next(Instant::now()) else {
            panic!("not deferred");
        };
        assert_eq!(at_most, DEFER);
        tokio::time::advance(DEFER).await;
        assert_eq!(ids(queue.next(Instant::now())), ["g0"]);
        // Busy of late: the writer sleeps at most the deferral, then idles.
        let Next::Sleep(Some(at_most)) = queue.next(Instant::now()) else {
            panic!("idled at once");
        };
        assert!(at_most <= DEFER);
        tokio::time::advance(at_most).await;
        assert!(matches!(queue.next(Instant::now()), Next::Sleep(None)));
    }

    #[tokio::test(start_paused = true)]
    async fn batches_are_bounded_and_a_closed_queue_is_drained_then_stops() {
        let queue = queue(2);
        let mut waits = Vec::new();
        for id in ["a", "b", "c"] {
            let (job, wait) = put(id);
            waits.push(wait);
            assert!(queue.push(job).await);
        }
        assert!(queue.push(delete("a")).await);
        assert_eq!(ids(queue.next(Instant::now())), ["a", "b"]);
        queue.close();
        assert!(!queue.push(delete("b")).await, "a closed queue took a job");
        assert_eq!(ids(queue.next(Instant::now())), ["c", "a"]);
        assert!(matches!(queue.next(Instant::now()), Next::Stop));
    }

    #[tokio::test(start_paused = true)]
    async fn a_closing_sync_comes_after_everything_queued_and_before_nothing() {
        let queue = queue(16);
        assert!(queue.push(delete("a")).await);
        assert!(queue.push(delete("b")).await);
        let (done, _wait) = tokio::sync::oneshot::channel();
        let sync = Job {
            op: None,
            done: Some(done),
        };
        assert!(queue.close_after(sync));
        assert!(woken(&queue).await, "closing did not wake the writer");
        assert!(!queue.push(delete("c")).await, "a job came after the sync");
        let (done, _wait) = tokio::sync::oneshot::channel();
        let again = Job {
            op: None,
            done: Some(done),
        };
        assert!(!queue.close_after(again), "a closed queue closed again");
        // Due at once, though no one waits for the check-ins before it.
        assert_eq!(ids(queue.next(Instant::now())), ["a", "b", "sync"]);
        assert!(matches!(queue.next(Instant::now()), Next::Stop));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_holds_its_sender_until_the_writer_takes_a_batch() {
        let queue = Arc::new(queue(4));
        for n in 0..8 {
            assert!(queue.push(delete(&format!("g{n}"))).await);
        }
        let sender = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.push(delete("g8")).await })
        };
        tokio::task::yield_now().await;
        assert!(!sender.is_finished(), "a full queue took one more job");
        assert_eq!(ids(queue.next(Instant::now())).len(), 4);
        assert!(sender.await.unwrap());
        // A full batch is due at once; what is left, within the deferral.
        assert_eq!(ids(queue.next(Instant::now())), ["g4", "g5", "g6", "g7"]);
        assert!(matches!(queue.next(Instant::now()), Next::Sleep(Some(_))));
        tokio::time::advance(DEFER).await;
        assert_eq!(ids(queue.next(Instant::now())), ["g8"]);
    }
}
