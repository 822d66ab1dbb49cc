//! [`SeatGuard`]: a checked-out seat, kept alive by a background heartbeat
//! that fails over between the pool's servers.
//!
//! The one rule this module must keep (DESIGN.md, "The safety property", point
//! 5): the seat counts as held only until the *send* time of the request that
//! last granted or renewed it plus that grant's lease. The server started its
//! own lease no earlier than that send time, so the client never believes in
//! a seat the server may already have given to someone else.

use std::fmt;
use std::future::Future;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tessera_proto::{CheckoutRequest, Grant, HeartbeatRequest, Proof, MAX_FIELD_BYTES};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use crate::client::Client;
use crate::config::SERVERS_MAX;
use crate::error::{describe, ClientError, Disposition, Failure};
use crate::http;

/// Longest lease the client believes in, whatever a server says: a bound on
/// how long a broken server can make a program hold a seat without renewing.
pub const LEASE_MS_MAX: u64 = 24 * 60 * 60 * 1000;
/// Shortest pause between heartbeats, whatever a server says.
pub const HEARTBEAT_INTERVAL_MS_MIN: u64 = 10;
/// Longest pause after a round in which no server renewed, before trying
/// again: short, because the seat's remaining validity is running out.
pub const RETRY_PAUSE_MS_MAX: u64 = 250;
/// Extra time `release` waits for an in-flight heartbeat beyond the request timeout.
const STOP_WAIT_MARGIN: Duration = Duration::from_millis(100);

/// What the program should know about its seat. Watch it with [`SeatGuard::subscribe`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeatState {
    /// A server holds the grant; the seat is valid until `valid_until` unless renewed.
    Held {
        server_id: String,
        valid_until: Instant,
    },
    /// No server renewed the seat before it expired, or the pool refused it
    /// for good. The guard no longer heartbeats; check out again to continue.
    Lost { reason: String },
}

/// Seats checked out by [`Client::checkout`]. Heartbeats in the background
/// while it lives; checks the seats in when dropped or [released](Self::release).
pub struct SeatGuard {
    client: Client,
    seat: Arc<Seat>,
    events: watch::Receiver<SeatState>,
    stop: watch::Sender<bool>,
    /// `None` once released, so that `Drop` does not check in a second time.
    heartbeat_task: Option<JoinHandle<()>>,
    /// The runtime the guard was made on: its connections live there, and
    /// `Drop` may run on a thread outside any runtime.
    runtime: tokio::runtime::Handle,
}

/// What the heartbeat task and the guard share.
struct Seat {
    /// The original checkout: every heartbeat repeats it, so that a server
    /// that does not hold the grant can convert the heartbeat into a checkout.
    request: CheckoutRequest,
    /// The grant's proof from the checkout's answer: every heartbeat, on
    /// any server, and the check-in carry it. It binds the grant id to this
    /// client, feature and count, so it never changes while the seat lives.
    proof: Proof,
    holding: Mutex<Holding>,
    events: watch::Sender<SeatState>,
    /// Heartbeats sent so far, on any server: each carries the next number,
    /// so the pool can tell the newest copy of the grant from stale ones.
    renewals: std::sync::atomic::AtomicU64,
}

struct Holding {
    grant: Grant,
    /// The address that last granted or renewed: heartbeats go there first.
    holder_address: String,
    valid_until: Instant,
    next_heartbeat_at: Instant,
    lost_reason: Option<String>,
    /// When the program said it was idle, and how long it had been idle
    /// then ([`SeatGuard::set_idle_for`]).
    idle_since: Option<(Instant, Duration)>,
}

impl Holding {
    fn idle_for(&self) -> Option<Duration> {
        self.idle_since
            .map(|(said, before)| before.saturating_add(said.elapsed()))
    }

    /// The servers to send the next heartbeat to, in order ([`failover_order`]).
    fn failover_order(&self, configured: &[String]) -> Vec<String> {
        failover_order(&self.grant, &self.holder_address, configured)
    }
}

impl SeatGuard {
    pub(crate) fn start(
        client: Client,
        request: CheckoutRequest,
        grant: Grant,
        holder_address: String,
        send_instant: Instant,
    ) -> SeatGuard {
        let valid_until = send_instant + lease_duration(&grant);
        let (events, events_receiver) = watch::channel(SeatState::Held {
            server_id: grant.server_id.to_string(),
            valid_until,
        });
        let proof = grant.proof.clone();
        let holding = Holding {
            next_heartbeat_at: send_instant + heartbeat_interval(&grant),
            grant,
            holder_address,
            valid_until,
            lost_reason: None,
            idle_since: None,
        };
        let seat = Arc::new(Seat {
            proof,
            request,
            holding: Mutex::new(holding),
            events,
            renewals: std::sync::atomic::AtomicU64::new(0),
        });
        let (stop, stop_receiver) = watch::channel(false);
        let heartbeat_task = tokio::spawn(keep_alive(client.clone(), seat.clone(), stop_receiver));
        SeatGuard {
            client,
            seat,
            events: events_receiver,
            stop,
            heartbeat_task: Some(heartbeat_task),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// The grant's id; the same on every server it fails over to.
    pub fn grant_id(&self) -> String {
        self.seat.lock().grant.grant_id.to_string()
    }

    pub fn feature(&self) -> &str {
        &self.seat.request.feature
    }

    pub fn version(&self) -> &str {
        &self.seat.request.version
    }

    pub fn count(&self) -> u32 {
        self.seat.request.count
    }

    /// The server holding the grant now; changes when the guard fails over.
    pub fn server_id(&self) -> String {
        self.seat.lock().grant.server_id.to_string()
    }

    /// The seat is valid until this instant unless renewed before.
    pub fn valid_until(&self) -> Instant {
        self.seat.lock().valid_until
    }

    /// True while the seat may be used: not lost, and not past [`Self::valid_until`].
    pub fn is_valid(&self) -> bool {
        let holding = self.seat.lock();
        holding.lost_reason.is_none() && Instant::now() < holding.valid_until
    }

    /// The latest grant, as the holding server last sent it.
    pub fn grant(&self) -> Grant {
        self.seat.lock().grant.clone()
    }

    /// The seat's state now.
    pub fn state(&self) -> SeatState {
        self.events.borrow().clone()
    }

    /// Follows the seat's state: a program that must stop when its seat is
    /// lost waits on [`watch::Receiver::changed`].
    pub fn subscribe(&self) -> watch::Receiver<SeatState> {
        self.events.clone()
    }

    /// Holds the seat while the program works: follows its state, calling
    /// `on_held` with the holding server and the validity of every renewal
    /// or fail-over, until the seat is lost or a `work()` future breaks.
    /// `work` makes a fresh future each time round, after each state.
    /// Returns the reason if the seat was lost, also just as the hold ended.
    pub async fn hold_while<W, F>(
        &self,
        mut work: W,
        mut on_held: impl FnMut(&str, Instant),
    ) -> Option<String>
    where
        W: FnMut() -> F,
        F: Future<Output = ControlFlow<()>>,
    {
        let mut events = self.subscribe();
        loop {
            tokio::select! {
                biased;
                changed = events.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let state = events.borrow_and_update().clone();
                    match state {
                        SeatState::Held { server_id, valid_until } => on_held(&server_id, valid_until),
                        SeatState::Lost { reason } => return Some(reason),
                    }
                }
                flow = work() => {
                    if flow.is_break() {
                        break;
                    }
                }
            }
        }
        match self.state() {
            SeatState::Lost { reason } => Some(reason),
            SeatState::Held { .. } => None,
        }
    }

    /// Tells the pool whether the program is idle (no user input, nothing
    /// running), as FlexNet's TIMEOUT needs: from the first `set_idle(true)`
    /// until `set_idle(false)`, every heartbeat says how long it has been.
    /// Where the pool's policy gives the feature an `idle_timeout_s`, a
    /// program idle that long loses its seat to someone who needs it: the
    /// state turns [`SeatState::Lost`] with the code `idle_timeout` in the
    /// reason, and the program checks out again when it is used again.
    pub fn set_idle(&self, idle: bool) {
        let mut holding = self.seat.lock();
        match (idle, holding.idle_since) {
            (true, None) => holding.idle_since = Some((Instant::now(), Duration::ZERO)),
            (false, _) => holding.idle_since = None,
            (true, Some(_)) => {}
        }
    }

    /// The program has been idle for `idle` already, as the system tells
    /// it (the time since the last key press or mouse move): as
    /// [`SeatGuard::set_idle`]`(true)`, counted from then.
    pub fn set_idle_for(&self, idle: Duration) {
        self.seat.lock().idle_since = Some((Instant::now(), idle));
    }

    /// How long the program has been idle, as it said; `None` while in use.
    pub fn idle_for(&self) -> Option<Duration> {
        self.seat.lock().idle_for()
    }

    /// Stops heartbeating and checks the seats in, on the holding server first.
    /// A seat no server holds any more (lost, expired) counts as released.
    pub async fn release(mut self) -> Result<(), ClientError> {
        let task = self.heartbeat_task.take();
        self.stop.send_replace(true);
        stop_and_check_in(self.client.clone(), self.seat.clone(), task).await
    }
}

impl Drop for SeatGuard {
    fn drop(&mut self) {
        let Some(task) = self.heartbeat_task.take() else {
            return;
        };
        self.stop.send_replace(true);
        // Never block in drop: the check-in runs on the guard's runtime. If
        // that runtime is shutting down the task never runs, and the seat
        // lapses when its lease expires; `release` is the way to be sure.
        let client = self.client.clone();
        let seat = self.seat.clone();
        self.runtime.spawn(async move {
            if let Err(error) = stop_and_check_in(client, seat, Some(task)).await {
                tracing::warn!(%error, "could not check in a dropped seat; it lapses when its lease expires");
            }
        });
    }
}

impl fmt::Debug for SeatGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeatGuard")
            .field("grant", &self.grant())
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

async fn stop_and_check_in(
    client: Client,
    seat: Arc<Seat>,
    task: Option<JoinHandle<()>>,
) -> Result<(), ClientError> {
    if let Some(mut task) = task {
        // Let an in-flight heartbeat finish first: arriving after the check-in,
        // it would make the server convert it into a new grant that holds the
        // seats for a whole lease.
        let wait = client.config().request_timeout + STOP_WAIT_MARGIN;
        if tokio::time::timeout(wait, &mut task).await.is_err() {
            task.abort();
        }
    }
    let (addresses, grant_id) = {
        let holding = seat.lock();
        let addresses = holding.failover_order(&client.config().servers);
        (addresses, holding.grant.grant_id.clone())
    };
    let lost = matches!(*seat.events.borrow(), SeatState::Lost { .. });
    match client.checkin_on(&addresses, &grant_id, &seat.proof).await {
        Ok(released_seats) => {
            tracing::debug!(%grant_id, released_seats, "checked in");
            Ok(())
        }
        Err(ClientError::UnknownGrant) => Ok(()),
        // A lost seat was already given up: its grant was refused or ran
        // out, so a server that cannot be reached holds nothing the program
        // could still return.
        Err(error) if lost => {
            tracing::debug!(%grant_id, %error, "a lost seat's check-in went unanswered");
            Ok(())
        }
        Err(error) => Err(error),
    }
}

impl Seat {
    fn lock(&self) -> MutexGuard<'_, Holding> {
        // The holding is replaced whole under the lock, so a panic elsewhere
        // cannot leave it half-written: the poisoned value is still sound.
        self.holding.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn renewed(&self, renewal: Renewal) {
        let mut holding = self.lock();
        let previous_server_id = std::mem::take(&mut holding.grant.server_id);
        // Only the latest renewal counts, even if an earlier one promised
        // longer: the server replaced that lease with this one.
        holding.valid_until = renewal.send_instant + lease_duration(&renewal.grant);
        holding.next_heartbeat_at = renewal.send_instant + heartbeat_interval(&renewal.grant);
        holding.grant = renewal.grant;
        holding.holder_address = renewal.address;
        if holding.grant.server_id != previous_server_id {
            tracing::info!(
                feature = %self.request.feature,
                from = %previous_server_id,
                to = %holding.grant.server_id,
                converted = holding.grant.converted,
                "seat failed over to another server"
            );
        }
        self.events.send_replace(SeatState::Held {
            server_id: holding.grant.server_id.to_string(),
            valid_until: holding.valid_until,
        });
    }

    fn next_renewal(&self) -> u64 {
        self.renewals
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }

    fn lose(&self, reason: String) {
        tracing::warn!(feature = %self.request.feature, %reason, "seat lost");
        self.lock().lost_reason = Some(reason.clone());
        self.events.send_replace(SeatState::Lost { reason });
    }
}

/// The shortest time a heartbeat attempt is given before the next server is asked.
const ATTEMPT_MIN: std::time::Duration = std::time::Duration::from_millis(50);

/// The background task of a guard: renew on time, fail over when the holder
/// does not renew, give up only when the seat has expired.
async fn keep_alive(client: Client, seat: Arc<Seat>, mut stop: watch::Receiver<bool>) {
    let mut retry_at: Option<Instant> = None;
    let mut last_failures = Vec::new();
    loop {
        let (valid_until, wake_at) = {
            let holding = seat.lock();
            let due_at = retry_at.unwrap_or(holding.next_heartbeat_at);
            (holding.valid_until, due_at.min(holding.valid_until))
        };
        tokio::select! {
            biased;
            // An error means the guard is gone: stop as well.
            _ = stop.changed() => return,
            () = sleep_until(wake_at) => {}
        }
        if Instant::now() >= valid_until {
            seat.lose(expired_reason(&seat.request.feature, &last_failures));
            return;
        }
        match renew_round(&client, &seat, &stop, valid_until).await {
            Round::Renewed(renewal) => {
                seat.renewed(*renewal);
                retry_at = None;
                last_failures.clear();
            }
            Round::Failed(failures) => {
                tracing::debug!(
                    feature = %seat.request.feature,
                    answers = %describe(&failures),
                    "no server renewed the seat; retrying"
                );
                let pause = retry_pause(&seat.lock().grant);
                retry_at = Some(Instant::now() + pause);
                last_failures = failures;
            }
            Round::Expired(failures) => {
                let failures = latest_answers(failures, last_failures);
                seat.lose(expired_reason(&seat.request.feature, &failures));
                return;
            }
            Round::Refused(failure) => {
                seat.lose(format!(
                    "the pool refused to renew the seat of feature `{}`: {failure}",
                    seat.request.feature
                ));
                return;
            }
            Round::Stopped => return,
        }
    }
}

enum Round {
    Renewed(Box<Renewal>),
    /// Every server failed in a way that may pass; the seat is still valid.
    Failed(Vec<Failure>),
    /// The seat expired before any server renewed it.
    Expired(Vec<Failure>),
    /// A server refused in a way the whole pool shares.
    Refused(Failure),
    Stopped,
}

struct Renewal {
    grant: Grant,
    address: String,
    send_instant: Instant,
}

/// One heartbeat to each server in fail-over order, until one renews.
async fn renew_round(
    client: &Client,
    seat: &Seat,
    stop: &watch::Receiver<bool>,
    valid_until: Instant,
) -> Round {
    let (addresses, request) = {
        let holding = seat.lock();
        let addresses = holding.failover_order(&client.config().servers);
        (
            addresses,
            heartbeat_request(&seat.request, &holding.grant, &seat.proof),
        )
    };
    let mut failures = Vec::new();
    let servers = addresses.len();
    for (tried, address) in addresses.into_iter().enumerate() {
        if *stop.borrow() || stop.has_changed().is_err() {
            return Round::Stopped;
        }
        let send_instant = Instant::now();
        if send_instant >= valid_until {
            return Round::Expired(failures);
        }
        // A server that does not answer (stopped, overloaded) may take only
        // its share of the seat's remaining time, so that the servers after
        // it are still asked before the seat expires.
        let share = (valid_until - send_instant) / (servers - tried) as u32;
        let give_up_at = (send_instant + share.max(ATTEMPT_MIN)).min(valid_until);
        let idle_ms = seat
            .lock()
            .idle_for()
            .map(|idle| u64::try_from(idle.as_millis()).unwrap_or(u64::MAX));
        let request = HeartbeatRequest {
            renewal: seat.next_renewal(),
            idle_ms,
            nonce: client.checker().nonce(),
            codes_held: client.checker().codes_held(&request.feature),
            answer_within_ms: Some(wait_ms(
                (give_up_at - send_instant).min(client.config().request_timeout),
            )),
            ..request.clone()
        };
        let answer: Result<Grant, Failure> = tokio::select! {
            biased;
            (answer, channel) = http::post_for_grant(client, &address, "/heartbeat", &request) => {
                client.checker().screen(&address, &request.as_checkout(), answer, channel.as_deref())
            }
            // A renewal that arrives after expiry would come too late: the
            // program must already have been told that the seat is gone.
            () = sleep_until(give_up_at) => {
                if give_up_at >= valid_until {
                    return Round::Expired(failures);
                }
                Err(Failure::no_answer(
                    &address,
                    format!("no answer within {} ms", share.as_millis()),
                ))
            }
        };
        match answer {
            Ok(grant) => match check_grant(&grant, &request.feature, request.count) {
                Ok(()) => {
                    return Round::Renewed(Box::new(Renewal {
                        grant,
                        address,
                        send_instant,
                    }))
                }
                // Not checked in: it may carry our own grant id, and checking
                // that in could release the seats the program is using.
                Err(text) => failures.push(Failure::no_answer(&address, text)),
            },
            Err(failure) if failure.disposition() == Disposition::Definitive => {
                return Round::Refused(failure);
            }
            Err(failure) => failures.push(failure),
        }
    }
    Round::Failed(failures)
}

fn heartbeat_request(checkout: &CheckoutRequest, grant: &Grant, proof: &Proof) -> HeartbeatRequest {
    HeartbeatRequest {
        proof: proof.clone(),
        grant_id: grant.grant_id.clone(),
        client_id: checkout.client_id.clone(),
        user: checkout.user.clone(),
        host: checkout.host.clone(),
        display: checkout.display.clone(),
        idle_ms: None,
        feature: checkout.feature.clone(),
        version: checkout.version.clone(),
        count: checkout.count,
        answer_within_ms: None,
        nonce: None,
        codes_held: None,
        server_key: checkout.server_key.clone(),
        renewal: 0,
        // Where the seat was held last: a server the heartbeat fails over
        // to may have the seat handed over from there.
        holding: grant.holding.clone(),
    }
}

/// A wait as the protocol's `answer_within_ms`.
pub(crate) fn wait_ms(wait: Duration) -> u32 {
    u32::try_from(wait.as_millis()).unwrap_or(u32::MAX)
}

/// The expiry may cut a round short: the servers it did not reach answered
/// last in the round before.
fn latest_answers(current: Vec<Failure>, previous: Vec<Failure>) -> Vec<Failure> {
    let mut answers = current;
    for failure in previous {
        if !answers
            .iter()
            .any(|answer| answer.address == failure.address)
        {
            answers.push(failure);
        }
    }
    answers
}

fn expired_reason(feature: &str, failures: &[Failure]) -> String {
    let answers = if failures.is_empty() {
        "no server answered in time".to_string()
    } else {
        describe(failures)
    };
    format!("no server renewed the seat of feature `{feature}` before it expired; last answers: {answers}")
}

/// Where heartbeats go: the holder first, then the grant's servers in
/// priority order starting after the holder and wrapping around, then any
/// configured server the grant did not list (a server may advertise an
/// address this client cannot use).
pub(crate) fn failover_order(
    grant: &Grant,
    holder_address: &str,
    configured: &[String],
) -> Vec<String> {
    let servers = &grant.servers[..grant.servers.len().min(SERVERS_MAX)];
    let holder_index = servers
        .iter()
        .position(|server| *server.id == *grant.server_id)
        .or_else(|| {
            servers
                .iter()
                .position(|server| server.address == holder_address)
        });
    let start = holder_index.map_or(0, |index| index + 1);
    let rotated = (0..servers.len())
        .map(|offset| (start + offset) % servers.len())
        .filter(|&index| Some(index) != holder_index)
        .map(|index| &servers[index].address);
    let mut order: Vec<String> = vec![holder_address.to_string()];
    for address in rotated.chain(configured) {
        if !order.contains(address) {
            order.push(address.clone());
        }
    }
    order
}

/// A grant this client can hold: the seats asked for, and a lease.
pub(crate) fn check_grant(grant: &Grant, feature: &str, count: u32) -> Result<(), String> {
    if *grant.feature != *feature || grant.count != count {
        return Err(format!(
            "answered with a grant of {} seats of `{}` when {count} seats of `{feature}` were asked for",
            grant.count, grant.feature
        ));
    }
    if grant.grant_id.is_empty() || grant.grant_id.len() > MAX_FIELD_BYTES {
        return Err("answered with a grant whose id is empty or too long".to_string());
    }
    let proof = grant.proof.as_str();
    if proof.is_empty() || proof.len() > MAX_FIELD_BYTES {
        return Err(
            "answered with a grant without a proof: the server is older than this SDK".to_string(),
        );
    }
    if grant.lease_ms == 0 {
        return Err("answered with a grant whose lease is zero".to_string());
    }
    Ok(())
}

pub(crate) fn lease_duration(grant: &Grant) -> Duration {
    Duration::from_millis(grant.lease_ms.min(LEASE_MS_MAX))
}

/// The server's heartbeat interval, but never so long that a single missed
/// heartbeat loses the seat.
fn heartbeat_interval(grant: &Grant) -> Duration {
    let lease_ms = grant.lease_ms.min(LEASE_MS_MAX);
    let interval_ms = grant
        .heartbeat_interval_ms
        .min(lease_ms / 2)
        .max(HEARTBEAT_INTERVAL_MS_MIN);
    Duration::from_millis(interval_ms)
}

fn retry_pause(grant: &Grant) -> Duration {
    let interval_ms = heartbeat_interval(grant).as_millis() as u64;
    Duration::from_millis((interval_ms / 2).clamp(HEARTBEAT_INTERVAL_MS_MIN, RETRY_PAUSE_MS_MAX))
}

#[cfg(test)]
mod tests {
    use tessera_proto::ServerInfo;

    use super::*;

    fn grant(server_id: &str, servers: &[(&str, &str)]) -> Grant {
        Grant {
            grant_id: "g-1".into(),
            feature: "cad".into(),
            count: 1,
            server_id: server_id.into(),
            lease_ms: 30_000,
            heartbeat_interval_ms: 10_000,
            servers: servers
                .iter()
                .map(|(id, address)| ServerInfo {
                    id: id.to_string(),
                    address: address.to_string(),
                })
                .collect(),
            converted: false,
            proof: Proof("proof-of-g-1".to_string()),
            holding: None,
            certificate: None,
            answer: None,
        }
    }

    #[test]
    fn failover_starts_after_the_holder_and_wraps_around() {
        let pool = [("a", "a:1"), ("b", "b:1"), ("c", "c:1")];
        let check =
            |holder_id: &str, holder_address: &str, configured: &[&str], expected: &[&str]| {
                let configured: Vec<String> = configured.iter().map(|s| s.to_string()).collect();
                let order = failover_order(&grant(holder_id, &pool), holder_address, &configured);
                assert_eq!(order, expected, "holder {holder_id} at {holder_address}");
            };
        check("a", "a:1", &[], &["a:1", "b:1", "c:1"]);
        check("b", "b:1", &[], &["b:1", "c:1", "a:1"]);
        check("c", "c:1", &["a:1"], &["c:1", "a:1", "b:1"]);
        // The holder reached under another name is not tried twice by id.
        check("b", "localhost:2", &[], &["localhost:2", "c:1", "a:1"]);
        // A configured server the grant does not list comes last.
        check("b", "b:1", &["z:9", "a:1"], &["b:1", "c:1", "a:1", "z:9"]);
        // A holder missing from the list: everything, in priority order.
        check("x", "x:1", &[], &["x:1", "a:1", "b:1", "c:1"]);
    }

    #[test]
    fn failover_without_a_server_list_uses_the_configuration() {
        let order = failover_order(&grant("a", &[]), "a:1", &["a:1".into(), "b:1".into()]);
        assert_eq!(order, ["a:1", "b:1"]);
    }

    #[test]
    fn heartbeats_come_well_before_expiry_whatever_the_server_says() {
        let check = |lease_ms: u64, heartbeat_interval_ms: u64, expected_ms: u64| {
            let mut grant = grant("a", &[]);
            grant.lease_ms = lease_ms;
            grant.heartbeat_interval_ms = heartbeat_interval_ms;
            assert_eq!(
                heartbeat_interval(&grant),
                Duration::from_millis(expected_ms),
                "lease {lease_ms} ms, heartbeat {heartbeat_interval_ms} ms"
            );
            assert!(retry_pause(&grant) <= Duration::from_millis(RETRY_PAUSE_MS_MAX));
        };
        check(30_000, 10_000, 10_000);
        check(30_000, 60_000, 15_000);
        check(300, 100, 100);
        check(30_000, 0, HEARTBEAT_INTERVAL_MS_MIN);
        check(u64::MAX, u64::MAX, LEASE_MS_MAX / 2);
    }

    #[test]
    fn grants_not_matching_the_request_are_refused() {
        let good = grant("a", &[]);
        assert_eq!(check_grant(&good, "cad", 1), Ok(()));
        assert!(check_grant(&good, "cad", 2).is_err());
        assert!(check_grant(&good, "cam", 1).is_err());
        let mut no_lease = good.clone();
        no_lease.lease_ms = 0;
        assert!(check_grant(&no_lease, "cad", 1).is_err());
        let mut no_id = good.clone();
        no_id.grant_id = Default::default();
        assert!(check_grant(&no_id, "cad", 1).is_err());
        let mut no_proof = good;
        no_proof.proof = Proof::default();
        assert!(check_grant(&no_proof, "cad", 1).is_err());
    }
}
