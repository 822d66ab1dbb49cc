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
//!
//! On a runtime that reports its idle workers ([`crate::runtime`]), a new
//! grant does not wake a writer that is between batches either: the writer
//! is woken when a worker runs out of work ([`workers_idle`]), as an event
//! loop syncs once it has read every request that was ready. The grants
//! that arrive together then share one sync instead of the first starting
//! a sync of its own while the others are still being read. A grant that
//! no idle worker reports within [`UNREPORTED_MAX`] wakes the writer
//! itself (`Store::put`), so a runtime that never idles still writes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Job;

/// Longest a write no one waits for stays queued while the writer idles.
pub const DEFER: Duration = Duration::from_millis(50);

/// Longest a new grant waits unreported before it wakes the writer itself.
pub const UNREPORTED_MAX: Duration = Duration::from_millis(2);

/// Every writer that waits for idle workers to be woken.
static REPORTED: Mutex<Vec<Weak<Queue>>> = Mutex::new(Vec::new());

/// Called by a runtime's worker thread about to park (it has no task to
/// run): wakes every writer that has new grants queued unreported.
pub fn workers_idle() {
    let queues = REPORTED.lock().unwrap_or_else(|p| p.into_inner());
    for queue in queues.iter().filter_map(Weak::upgrade) {
        queue.report();
    }
}

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
    /// The writer is writing a batch; it looks at the queue again before
    /// it sleeps.
    writing: bool,
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
    /// New grants wait for an idle worker to wake the writer
    /// ([`workers_idle`]) instead of waking it each.
    on_idle: bool,
    /// A new grant is queued that has not woken the writer.
    unreported: AtomicBool,
    /// Times a new grant woke the writer itself, no idle worker having
    /// reported it within [`UNREPORTED_MAX`].
    late: AtomicU64,
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
            on_idle: false,
            unreported: AtomicBool::new(false),
            late: AtomicU64::new(0),
        }
    }

    /// A queue whose new grants wake the writer when a worker idles
    /// ([`workers_idle`]), or after [`UNREPORTED_MAX`] (`Store::put`).
    pub fn woken_on_idle(signal: Signal, capacity: usize, batch_max: usize) -> Arc<Queue> {
        let queue = Arc::new(Queue {
            on_idle: true,
            ..Queue::new(signal, capacity, batch_max)
        });
        let mut reported = REPORTED.lock().unwrap_or_else(|p| p.into_inner());
        reported.retain(|queue| queue.strong_count() > 0);
        reported.push(Arc::downgrade(&queue));
        queue
    }

    /// Wakes the writer if a new grant is queued that has not; whether it
    /// did.
    pub fn report(&self) -> bool {
        let unreported = self.unreported.load(Ordering::Relaxed)
            && self.unreported.swap(false, Ordering::AcqRel);
        if unreported {
            self.signal.wake();
        }
        unreported
    }

    /// [`Queue::report`] by a grant that waited [`UNREPORTED_MAX`].
    pub fn report_late(&self) {
        if self.report() {
            self.late.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Times a grant had to wake the writer itself ([`Queue::report_late`]).
    #[cfg(test)]
    pub fn late(&self) -> u64 {
        self.late.load(Ordering::Relaxed)
    }

    /// Whether the writer is writing a batch (it looks at the queue again
    /// before it sleeps).
    #[cfg(test)]
    pub fn writing(&self) -> bool {
        self.lock().writing
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
        self.push_reported(job).await.is_some()
    }

    /// As [`Queue::push`]; `Some(false)` when `job` is a new grant left for
    /// an idle worker to report ([`workers_idle`]) rather than waking the
    /// writer.
    pub async fn push_reported(&self, job: Job) -> Option<bool> {
        loop {
            let room = self.room.notified();
            {
                let mut queued = self.lock();
                if queued.closed {
                    return None;
                }
                if queued.jobs.len() < self.capacity {
                    let waited = job.done.is_some();
                    if waited {
                        queued.waited += 1;
                    } else if queued.oldest.is_none() {
                        queued.oldest = Some(Instant::now());
                    }
                    queued.jobs.push_back(job);
                    // An idle writer is woken at once: nothing else is on
                    // its way to share the sync.
                    let wake = (waited && !self.on_idle)
                        || queued.idle
                        || queued.jobs.len() >= self.batch_max;
                    queued.idle = false;
                    let unreported = waited && !wake && !queued.writing;
                    if unreported {
                        self.unreported.store(true, Ordering::Release);
                    }
                    drop(queued);
                    if wake {
                        self.signal.wake();
                    }
                    return Some(!unreported);
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
        queued.writing = false;
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
        // The writer looks at the queue again once this batch is written:
        // every grant queued until then is taken without a wake.
        queued.writing = true;
        self.unreported.store(false, Ordering::Relaxed);
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

    /// A queue whose new grants wait for an idle worker, outside the
    /// process's list: another test's idle workers cannot wake it.
    fn queue_on_idle(batch_max: usize) -> Queue {
        Queue {
            on_idle: true,
            ..queue(batch_max)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_writer_is_woken_for_new_grants_when_a_worker_idles_not_by_each() {
        let queue = queue_on_idle(16);
        // Busy: a batch was just taken.
        let (first, _wait) = put("g0");
        assert_eq!(queue.push_reported(first).await, Some(false));
        assert_eq!(ids(queue.next(Instant::now())), ["g0"]);
        assert!(!woken(&queue).await, "a new grant woke a busy writer");
        assert!(matches!(queue.next(Instant::now()), Next::Sleep(Some(_))));

        let (g1, _w1) = put("g1");
        let (g2, _w2) = put("g2");
        assert_eq!(queue.push_reported(g1).await, Some(false));
        assert_eq!(queue.push_reported(g2).await, Some(false));
        assert!(!woken(&queue).await, "a new grant woke a busy writer");
        // A worker runs out of work: the writer is woken once, for both.
        assert!(queue.report());
        assert!(
            woken(&queue).await,
            "an idle worker did not wake the writer"
        );
        assert!(!queue.report());
        assert!(!woken(&queue).await, "reported twice");
        assert_eq!(ids(queue.next(Instant::now())), ["g1", "g2"]);
        // A grant queued while a batch is written is taken after it
        // without a wake: nothing is left to report.
        let (g5, _w5) = put("g5");
        assert_eq!(queue.push_reported(g5).await, Some(true));
        assert!(!queue.report());
        assert!(!woken(&queue).await, "woken for grants already taken");

        // A full batch wakes the writer whatever the workers do.
        let queue = queue_on_idle(2);
        assert!(matches!(queue.next(Instant::now()), Next::Sleep(None)));
        let (g3, _w3) = put("g3");
        assert_eq!(queue.push_reported(g3).await, Some(true), "an idle writer");
        assert!(woken(&queue).await);
        assert_eq!(ids(queue.next(Instant::now())), ["g3"]);
        assert!(matches!(queue.next(Instant::now()), Next::Sleep(Some(_))));
        let (g4, _w4) = put("g4");
        assert_eq!(queue.push_reported(g4).await, Some(false));
        assert!(queue.push(delete("g4")).await);
        assert!(woken(&queue).await, "a full batch did not wake the writer");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_writer_is_woken_by_the_first_new_grant() {
        let queue = queue_on_idle(16);
        assert!(matches!(queue.next(Instant::now()), Next::Sleep(None)));
        let (first, _wait) = put("g0");
        assert_eq!(queue.push_reported(first).await, Some(true));
        assert!(woken(&queue).await, "an idle writer was not woken");
        assert_eq!(ids(queue.next(Instant::now())), ["g0"]);
    }

    #[tokio::test]
    async fn idle_workers_wake_every_writer_in_the_process_list() {
        let queue = Queue::woken_on_idle(Signal::Task(Notify::new()), 8, 16);
        let (first, _wait) = put("g0");
        assert!(queue.push(first).await);
        assert_eq!(ids(queue.next(Instant::now())), ["g0"]);
        assert!(matches!(queue.next(Instant::now()), Next::Sleep(Some(_))));
        let (next, _wait) = put("g1");
        assert_eq!(queue.push_reported(next).await, Some(false));
        workers_idle();
        assert!(woken(&queue).await, "workers_idle did not reach the writer");
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
