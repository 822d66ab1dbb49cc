//! The pool's queue of programs waiting for seats (FlexNet's and RLM's
//! queueing, but pool-wide): a checkout that asks to wait and finds no seat
//! joins the back of its feature's queue in the pool's log
//! ([`ControlCommand::Wait`]) and is answered `queued` with a ticket and its
//! place. The program asks again with the ticket, on any server; only the
//! first in the queue is served, so seats go first come first served
//! across the pool, and, the queue being in the log, a place survives the
//! death of the server or the leader it was taken on. A checkout that does
//! not wait is refused while others wait. A place lapses unless its
//! program asks again within [`PLACE_HOLD_MS`]; the leader takes lapsed
//! places out, and a served program leaves the queue.

use std::sync::Arc;

use tessera_core::control::{ControlCommand, ControlOutcome, Waiter};
use tessera_core::report::{EventKind, UsageEvent};
use tessera_core::SharedText;
use tessera_proto::{self as proto, ErrorCode};

use super::{Deadline, Granted};
use crate::issuer::SeatRequest;
use crate::refusal::Refusal;
use crate::App;

/// How long a place holds after its program last asked.
pub const PLACE_HOLD_MS: i64 = 10_000;

impl App {
    /// A checkout that may wait in the queue (`queue`), or that may not
    /// jump it (none).
    ///
    /// Every outcome goes to the report log: the checkout (with how long
    /// it waited), a denial with its code, joining the queue.
    pub async fn checkout_in_turn(
        self: &Arc<Self>,
        request: SeatRequest,
        deadline: Deadline,
        address: Option<std::net::IpAddr>,
        queue: Option<proto::QueueAsk>,
    ) -> Result<Granted, Refusal> {
        let mut waited_ms = None;
        let mut reached = false;
        let result = self
            .served_in_turn(
                &request,
                deadline,
                address,
                queue,
                (&mut waited_ms, &mut reached),
            )
            .await;
        if !reached {
            // App::checkout counts what it answers; the rest is counted here.
            self.count(super::Ask::Checkout.endpoint(), &result);
        }
        let event = match &result {
            Ok(granted) => UsageEvent {
                waited_ms,
                ..self.report_seats(
                    EventKind::Checkout,
                    &request,
                    &granted.issued.grant_id,
                    None,
                )
            },
            Err(refusal) if refusal.code == ErrorCode::Queued => {
                let place = refusal.queue.as_ref();
                if place.is_some_and(|p| p.since_unix_ms < self.clock.unix_ms() - 1_000) {
                    // Asked again: already recorded when it joined.
                    return result;
                }
                let ticket = place.map_or(SharedText::default(), |p| p.ticket.as_str().into());
                self.report_seats(EventKind::Queued, &request, &ticket, None)
            }
            Err(refusal) => {
                self.count_denial(&request.feature, refusal.code);
                self.report_seats(
                    EventKind::Denied,
                    &request,
                    &SharedText::default(),
                    Some(refusal.code.as_str().to_string()),
                )
            }
        };
        self.report.record(event);
        result
    }

    /// Counts a refused checkout of a feature this server serves; a name
    /// it does not know is not kept, so no caller can grow the counts.
    fn count_denial(&self, feature: &str, code: ErrorCode) {
        let key = (feature.to_string(), code);
        let mut denials = self.denials.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = denials.get_mut(&key) {
            *count += 1;
            return;
        }
        drop(denials);
        if self.issuer().licenses().feature(feature).is_none() {
            return;
        }
        let mut denials = self.denials.lock().unwrap_or_else(|p| p.into_inner());
        *denials.entry(key).or_default() += 1;
    }

    async fn served_in_turn(
        self: &Arc<Self>,
        request: &SeatRequest,
        deadline: Deadline,
        address: Option<std::net::IpAddr>,
        queue: Option<proto::QueueAsk>,
        (waited_ms, reached): (&mut Option<u64>, &mut bool),
    ) -> Result<Granted, Refusal> {
        let request = request.clone();
        let feature = request.feature.clone();
        let (place, waiting) = self.place(&feature, &request.client_id, queue.as_ref());
        if waiting > 0 || queue.is_some() {
            // A request no queue could serve is refused as such first.
            self.issuer().servable(&request)?;
        }
        if queue.as_ref().is_some_and(|ask| ask.leave) {
            if let Some(held) = place {
                self.leave_queue(&feature, held.ticket);
            }
            return Err(Refusal::new(
                ErrorCode::NoSeatsAvailable,
                format!("the program stopped waiting for `{feature}` and left the pool's queue"),
            ));
        }
        let Some(_) = queue else {
            if waiting > 0 {
                return Err(Refusal::new(
                    ErrorCode::NoSeatsAvailable,
                    format!(
                        "{waiting} programs wait for seats of `{feature}` before this one; ask \
                         to wait in the queue (`tessera checkout --wait`) to be served in turn"
                    ),
                ));
            }
            *reached = true;
            return self.checkout(request, deadline, address).await;
        };
        let first = match &place {
            Some(held) => held.position == 1,
            None => waiting == 0,
        };
        if first {
            *reached = true;
            match self.checkout(request.clone(), deadline, address).await {
                Ok(granted) => {
                    if let Some(held) = place {
                        let now = self.clock.unix_ms();
                        *waited_ms = Some(u64::try_from(now - held.since_unix_ms).unwrap_or(0));
                        self.leave_queue(&feature, held.ticket);
                    }
                    return Ok(granted);
                }
                Err(refusal) if refusal.code == ErrorCode::NoSeatsAvailable => {}
                Err(refusal) => return Err(refusal),
            }
        }
        let place = Box::pin(self.keep_place(&request, place)).await?;
        Err(Refusal {
            queue: Some(place.clone()),
            ..Refusal::new(
                ErrorCode::Queued,
                format!(
                    "no seat of `{feature}` is free for this program yet; it waits in the pool's \
                     queue, {} of {}",
                    place.position, place.waiting
                ),
            )
        })
    }

    /// The place of `ask`'s ticket in the queue of `feature`, if it is
    /// there for `client_id`, and how many wait.
    fn place(
        &self,
        feature: &str,
        client_id: &str,
        ask: Option<&proto::QueueAsk>,
    ) -> (Option<proto::QueuePlace>, u32) {
        let applied = self.pool.applied.borrow();
        let Some(allocation) = applied.state.allocation(feature) else {
            return (None, 0);
        };
        let waiting = allocation.waiters.len() as u32;
        let ticket = ask.and_then(|a| a.ticket.as_deref());
        let place = allocation
            .waiters
            .iter()
            .position(|w| Some(w.ticket.as_str()) == ticket && w.client_id == client_id)
            .map(|i| proto::QueuePlace {
                ticket: allocation.waiters[i].ticket.clone(),
                position: i as u32 + 1,
                waiting,
                since_unix_ms: allocation.waiters[i].since_unix_ms,
                until_unix_ms: allocation.waiters[i].until_unix_ms,
            });
        (place, waiting)
    }

    /// Joins the queue, or keeps the place held, for another
    /// [`PLACE_HOLD_MS`] (written to the log only once half of it ran).
    async fn keep_place(
        &self,
        request: &SeatRequest,
        place: Option<proto::QueuePlace>,
    ) -> Result<proto::QueuePlace, Refusal> {
        let now = self.clock.unix_ms();
        if let Some(held) = &place {
            if held.until_unix_ms - now > PLACE_HOLD_MS / 2 {
                return Ok(held.clone());
            }
        }
        let ticket = match &place {
            Some(held) => held.ticket.clone(),
            None => format!("q{}", (self.grant_ids)()),
        };
        let waiter = Waiter {
            ticket: ticket.clone(),
            client_id: request.client_id.to_string(),
            user: request.user.to_string(),
            host: request.host.to_string(),
            seats: request.count,
            since_unix_ms: place.as_ref().map_or(now, |p| p.since_unix_ms),
            until_unix_ms: now + PLACE_HOLD_MS,
        };
        let command = ControlCommand::Wait {
            feature: request.feature.to_string(),
            waiter,
        };
        match self.pool.propose(command).await? {
            ControlOutcome::Queue { position } => {
                let waiting = self
                    .pool
                    .applied
                    .borrow()
                    .state
                    .allocation(&request.feature)
                    .map_or(position, |a| (a.waiters.len() as u32).max(position));
                if place.is_none() {
                    tracing::info!(
                        "`{}` on `{}` waits for {} seats of `{}`, {position} of {waiting}",
                        request.user,
                        request.host,
                        request.count,
                        request.feature
                    );
                }
                Ok(proto::QueuePlace {
                    ticket,
                    position,
                    waiting,
                    since_unix_ms: place.as_ref().map_or(now, |p| p.since_unix_ms),
                    until_unix_ms: now + PLACE_HOLD_MS,
                })
            }
            ControlOutcome::Refused { reason } => {
                Err(Refusal::new(ErrorCode::NoSeatsAvailable, reason))
            }
            other => Err(Refusal::new(
                ErrorCode::Internal,
                format!("joining the queue applied as {other:?}"),
            )),
        }
    }

    /// A served program leaves the queue.
    fn leave_queue(&self, feature: &str, ticket: String) {
        let pool = self.pool.clone();
        let command = ControlCommand::LeaveQueue {
            feature: feature.to_string(),
            tickets: vec![ticket],
        };
        tokio::spawn(async move {
            if let Err(err) = pool.propose(command).await {
                tracing::debug!("leaving the queue not committed: {err}");
            }
        });
    }

    /// Leader: takes out of the queues the places whose programs stopped
    /// asking.
    pub(crate) async fn expire_waiters(&self) {
        if !self.pool.is_leader() {
            return;
        }
        let now = self.clock.unix_ms();
        let due: Vec<(String, Vec<String>)> = {
            let applied = self.pool.applied.borrow();
            applied
                .state
                .allocations()
                .iter()
                .map(|(feature, a)| {
                    let tickets = a
                        .waiters
                        .iter()
                        .filter(|w| w.until_unix_ms < now)
                        .map(|w| w.ticket.clone())
                        .collect::<Vec<_>>();
                    (feature.clone(), tickets)
                })
                .filter(|(_, tickets)| !tickets.is_empty())
                .collect()
        };
        for (feature, tickets) in due {
            let count = tickets.len();
            let command = ControlCommand::LeaveQueue {
                feature: feature.clone(),
                tickets,
            };
            match self.pool.propose(command).await {
                Ok(_) => tracing::info!(
                    "{count} programs stopped waiting for `{feature}`; their places lapsed"
                ),
                Err(err) => tracing::debug!("lapsed places of `{feature}` not taken out: {err}"),
            }
        }
    }
}
