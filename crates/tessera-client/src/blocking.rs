//! The SDK for programs without a tokio runtime of their own, and the face
//! the C and Python bindings wrap: every call blocks its thread, and one
//! runtime shared by the process runs the requests and every seat's
//! heartbeats in the background.
//!
//! ```no_run
//! use std::time::Duration;
//! use tessera_client::blocking::BlockingClient;
//! use tessera_client::{ClientConfig, ClientError, Trust, VendorPublicKey};
//!
//! # fn run() -> Result<(), ClientError> {
//! let acme = VendorPublicKey::from_base64("acme", "tQ2nYq6e8Nk1M0oVYp9mV1s1X1f6Vf5yqYx0y7QGq9E=")
//!     .expect("a vendor key");
//! let mut config = ClientConfig::new(["10.0.0.1:7001", "10.0.0.2:7001"]);
//! config.trust = Trust::Vendor(vec![acme]);
//! let client = BlockingClient::new(config)?;
//! let seat = client.checkout("cad", "2.1", 1, Some(Duration::from_secs(10)))?;
//! // ... the program's work, checking `seat.is_valid()` where it matters ...
//! seat.checkin()?; // or drop it: that checks in without waiting
//! # Ok(())
//! # }
//! ```
//!
//! Never call these from a callback given to [`BlockingSeat::on_change`] or
//! [`BlockingTemporary::on_change`]: callbacks run on the shared runtime,
//! which a blocking call would stall.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Client, ClientConfig, ClientError, SeatGuard, SeatState};
use crate::{TemporaryLicense, TemporaryState, TemporaryToken};

/// Worker threads of the shared runtime: heartbeats are a few small
/// requests a second at most.
const RUNTIME_THREADS: usize = 2;

/// The process's runtime for blocking clients, started at first use and
/// kept for the life of the process.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("tessera-sdk")
            .enable_all()
            .build()
            .expect("the Tessera SDK cannot start its runtime threads")
    })
}

/// Runs `work` on the shared runtime, within `deadline` if given.
///
/// An answer that arrives after the deadline is refused like a missing one:
/// tokio's timer fires on whole milliseconds and polls the work first, so a
/// deadline shorter than a millisecond would otherwise let a fast answer
/// through. What the late answer held (a seat) is given back as it drops.
fn run<T>(
    deadline: Option<Duration>,
    work: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    runtime().block_on(async {
        let Some(deadline) = deadline else {
            return work.await;
        };
        let exceeded = || ClientError::DeadlineExceeded {
            deadline_ms: deadline.as_millis() as u64,
        };
        let until = tokio::time::Instant::now() + deadline;
        let answer = tokio::time::timeout_at(until, work)
            .await
            .map_err(|_| exceeded())?;
        if tokio::time::Instant::now() >= until {
            return Err(exceeded());
        }
        answer
    })
}

/// A [`Client`] whose calls block. Cheap to clone; share it between threads.
#[derive(Clone, Debug)]
pub struct BlockingClient {
    client: Client,
}

impl BlockingClient {
    /// A client of these settings, checked as [`Client::new`] checks them.
    pub fn new(config: ClientConfig) -> Result<BlockingClient, ClientError> {
        let _runtime = runtime().enter();
        Ok(BlockingClient {
            client: Client::new(config)?,
        })
    }

    /// The asynchronous client behind this one.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// [`Client::checkout`], giving up after `deadline` if given
    /// ([`ClientError::DeadlineExceeded`]).
    pub fn checkout(
        &self,
        feature: &str,
        version: &str,
        count: u32,
        deadline: Option<Duration>,
    ) -> Result<BlockingSeat, ClientError> {
        let guard = run(deadline, self.client.checkout(feature, version, count))?;
        Ok(BlockingSeat { guard: Some(guard) })
    }

    /// [`Client::checkout_waiting`]: when no seat is free, waits in the
    /// pool's queue for up to `wait`; `on_place` is told the program's
    /// place (position, programs waiting) whenever it changes, on the
    /// calling thread's behalf but from the SDK's runtime: it must not
    /// block.
    pub fn checkout_waiting(
        &self,
        feature: &str,
        version: &str,
        count: u32,
        wait: Duration,
        on_place: impl FnMut(u32, u32) + Send,
    ) -> Result<BlockingSeat, ClientError> {
        let mut on_place = on_place;
        let waiting = self
            .client
            .checkout_waiting(feature, version, count, wait, |place| {
                on_place(place.position, place.waiting)
            });
        let guard = run(None, waiting)?;
        Ok(BlockingSeat { guard: Some(guard) })
    }

    /// [`Client::activate`]: a temporary license of this device.
    pub fn activate(
        &self,
        feature: &str,
        version: &str,
        days: Option<u32>,
        deadline: Option<Duration>,
    ) -> Result<BlockingTemporary, ClientError> {
        let license = run(deadline, self.client.activate(feature, version, days))?;
        Ok(BlockingTemporary {
            license: Some(license),
        })
    }

    /// [`Client::cached_temporary`]: the license kept in this user's cache,
    /// with no network.
    pub fn cached_temporary(
        &self,
        feature: &str,
        version: &str,
    ) -> Result<BlockingTemporary, ClientError> {
        let _runtime = runtime().enter();
        let license = self.client.cached_temporary(feature, version)?;
        Ok(BlockingTemporary {
            license: Some(license),
        })
    }
}

/// Stops calling a callback when dropped.
#[derive(Debug)]
pub struct Watching(JoinHandle<()>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Who holds a seat in `state` (`None`: lost), what a change is made of.
fn holder(state: &SeatState) -> Option<String> {
    match state {
        SeatState::Held { server_id, .. } => Some(server_id.clone()),
        SeatState::Lost { .. } => None,
    }
}

/// Calls `callback` with every new value of `events`, on the shared runtime.
fn watch_events<S: Clone + Send + Sync + 'static>(
    mut events: watch::Receiver<S>,
    mut callback: impl FnMut(S) + Send + 'static,
) -> Watching {
    Watching(runtime().spawn(async move {
        events.borrow_and_update();
        while events.changed().await.is_ok() {
            let state = events.borrow_and_update().clone();
            callback(state);
        }
    }))
}

/// Seats checked out by a [`BlockingClient`]: heartbeated in the
/// background while it lives, checked in when dropped or by
/// [`BlockingSeat::checkin`].
#[derive(Debug)]
pub struct BlockingSeat {
    /// `None` once checked in.
    guard: Option<SeatGuard>,
}

impl BlockingSeat {
    fn guard(&self) -> &SeatGuard {
        self.guard.as_ref().expect("a seat is checked in only once")
    }

    /// True while the seat is valid by this machine's clock (from the send
    /// time of the request that last granted or renewed it).
    pub fn is_valid(&self) -> bool {
        self.guard().is_valid()
    }

    pub fn count(&self) -> u32 {
        self.guard().count()
    }

    /// Whether the program is idle: see [`SeatGuard::set_idle`].
    pub fn set_idle(&self, idle: bool) {
        self.guard().set_idle(idle)
    }

    /// Idle for `idle` already: see [`SeatGuard::set_idle_for`].
    pub fn set_idle_for(&self, idle: std::time::Duration) {
        self.guard().set_idle_for(idle)
    }

    pub fn feature(&self) -> &str {
        self.guard().feature()
    }

    pub fn grant_id(&self) -> String {
        self.guard().grant_id()
    }

    /// The server that last granted or renewed the seat.
    pub fn server_id(&self) -> String {
        self.guard().server_id()
    }

    pub fn state(&self) -> SeatState {
        self.guard().state()
    }

    /// Calls `callback` on the SDK's thread when the seat moves to another
    /// server (a fail-over) or is lost, until the returned [`Watching`] is
    /// dropped. Renewals, which only push its validity on, are not changes.
    pub fn on_change(&self, callback: impl Fn(SeatState) + Send + 'static) -> Watching {
        let mut last = holder(&self.guard().state());
        watch_events(self.guard().subscribe(), move |state| {
            let now = holder(&state);
            if now != last {
                last = now;
                callback(state);
            }
        })
    }

    /// Stops heartbeating and checks the seats in, waiting for the answer.
    pub fn checkin(mut self) -> Result<(), ClientError> {
        let guard = self.guard.take().expect("a seat is checked in only once");
        run(None, guard.release())
    }
}

impl Drop for BlockingSeat {
    fn drop(&mut self) {
        // The guard checks in on the shared runtime, without waiting.
        let _runtime = runtime().enter();
        self.guard.take();
    }
}

/// A temporary license of a [`BlockingClient`]: extended in the background
/// while it lives; dropped, it is returned when its terms say so.
pub struct BlockingTemporary {
    /// `None` once returned.
    license: Option<TemporaryLicense>,
}

impl BlockingTemporary {
    fn license(&self) -> &TemporaryLicense {
        self.license
            .as_ref()
            .expect("a temporary license is returned only once")
    }

    /// True while its token has not expired by this machine's clock.
    pub fn is_valid(&self) -> bool {
        self.license().is_valid()
    }

    /// The current signed token (it changes at each extension).
    pub fn token(&self) -> TemporaryToken {
        self.license().token()
    }

    pub fn state(&self) -> TemporaryState {
        self.license().state()
    }

    /// Calls `callback` on the SDK's thread at every change (an extension,
    /// a withdrawal) until the returned [`Watching`] is dropped.
    pub fn on_change(&self, callback: impl FnMut(TemporaryState) + Send + 'static) -> Watching {
        watch_events(self.license().subscribe(), callback)
    }

    /// Extends it now, for another period.
    pub fn extend(&self) -> Result<(), ClientError> {
        run(None, self.license().extend())
    }

    /// Returns it to the pool now; answers the seats returned.
    pub fn return_license(mut self) -> Result<u32, ClientError> {
        let license = self
            .license
            .take()
            .expect("a temporary license is returned only once");
        run(None, license.return_license())
    }
}

impl Drop for BlockingTemporary {
    fn drop(&mut self) {
        let _runtime = runtime().enter();
        self.license.take();
    }
}

impl std::fmt::Debug for BlockingTemporary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingTemporary")
            .field("token", &self.license.as_ref().map(|l| l.token()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Work that holds its thread for `busy`, then answers at its first poll:
    /// the timer never gets a turn before the answer is ready.
    async fn answers_after(busy: Duration) -> Result<u32, ClientError> {
        std::thread::sleep(busy);
        Ok(7)
    }

    #[test]
    fn an_answer_after_the_deadline_is_deadline_exceeded() {
        let late = run(
            Some(Duration::from_micros(1)),
            answers_after(Duration::from_millis(5)),
        );
        assert!(
            matches!(late, Err(ClientError::DeadlineExceeded { deadline_ms: 0 })),
            "{late:?}"
        );
        let zero = run(Some(Duration::ZERO), answers_after(Duration::ZERO));
        assert!(
            matches!(zero, Err(ClientError::DeadlineExceeded { .. })),
            "{zero:?}"
        );
    }

    #[test]
    fn an_answer_within_the_deadline_is_kept() {
        let answer = run(
            Some(Duration::from_secs(30)),
            answers_after(Duration::from_millis(1)),
        );
        assert!(matches!(answer, Ok(7)), "{answer:?}");
        let unbounded = run(None, answers_after(Duration::ZERO));
        assert!(matches!(unbounded, Ok(7)), "{unbounded:?}");
    }
}
