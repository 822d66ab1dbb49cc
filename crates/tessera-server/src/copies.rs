//! One seat, counted once across the pool.
//!
//! A grant can have copies on several servers: the server a client failed
//! over from still holds the grant it issued (or reads it back from its store
//! after a restart) while the next server holds the converted one. The copy
//! the client renewed last is the one it believes in; the others are stale
//! and would keep seats held until their leases ran out, for hours with long
//! leases.
//!
//! The SDK numbers its heartbeats (`HeartbeatRequest::renewal`). A server
//! that converts a grant, renews one after heartbeats went elsewhere, or
//! checks one in queues a [`SupersededGrant`]; it goes to the leader with the
//! next quota report, and the leader hands it to every other server with the
//! acknowledgement of that server's next report. A server drops its copy
//! only when the copy was renewed before that heartbeat
//! ([`crate::issuer::Issuer::drop_superseded`]), so the newest copy always
//! stays, and a stale copy is gone within two report intervals.
//!
//! Dropping a copy only frees seats. It never takes a seat from a client: the
//! client believes only in its newest renewal, and the server that made it
//! keeps its copy for at least as long as the client believes in it.

use std::collections::{HashMap, VecDeque};

use tessera_proto::{SharedText, SupersededGrant, SUPERSEDED_PER_MESSAGE_MAX};

use crate::App;

/// Most stale copies a server or the leader keeps waiting to be sent, per
/// destination. Past it the oldest are forgotten: those copies lapse with
/// their leases instead.
pub const SUPERSEDED_QUEUED_MAX: usize = 100_000;

/// Stale copies waiting to be sent to one destination.
#[derive(Default)]
pub struct Outbox {
    queue: VecDeque<SupersededGrant>,
}

impl Outbox {
    pub fn push(&mut self, superseded: SupersededGrant) {
        if self.queue.len() >= SUPERSEDED_QUEUED_MAX {
            self.queue.pop_front();
        }
        self.queue.push_back(superseded);
    }

    /// The oldest, at most one message's worth.
    pub fn take(&mut self) -> Vec<SupersededGrant> {
        let count = self.queue.len().min(SUPERSEDED_PER_MESSAGE_MAX);
        self.queue.drain(..count).collect()
    }

    /// Puts back what could not be sent, ahead of what came since.
    pub fn put_back(&mut self, unsent: Vec<SupersededGrant>) {
        for superseded in unsent.into_iter().rev() {
            if self.queue.len() >= SUPERSEDED_QUEUED_MAX {
                break;
            }
            self.queue.push_front(superseded);
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// The leader's relay: what each server must still be told.
#[derive(Default)]
pub struct Relay {
    outboxes: HashMap<String, Outbox>,
}

impl Relay {
    /// Queues what `from` reported for every other server of `servers`.
    pub fn forward(&mut self, from: &str, servers: &[String], superseded: &[SupersededGrant]) {
        if superseded.is_empty() {
            return;
        }
        for server in servers.iter().filter(|server| server.as_str() != from) {
            let outbox = self.outboxes.entry(server.clone()).or_default();
            for entry in superseded {
                outbox.push(entry.clone());
            }
        }
        self.outboxes
            .retain(|server, _| servers.iter().any(|known| known == server));
    }

    /// What `server` must be told now, at most one message's worth.
    pub fn take(&mut self, server: &str) -> Vec<SupersededGrant> {
        self.outboxes
            .get_mut(server)
            .map(Outbox::take)
            .unwrap_or_default()
    }
}

impl App {
    /// Tells the pool, with the next report, that other copies of
    /// `grant_id` renewed before heartbeat `renewal` are stale. Only in a
    /// pool of several servers: in a pool of one no other server holds a
    /// copy, and queueing every check-in for nobody would keep up to
    /// [`SUPERSEDED_QUEUED_MAX`] grant ids in memory.
    pub(crate) fn supersede(&self, grant_id: &SharedText, renewal: u64) {
        self.superseded_outbox().push(SupersededGrant {
            grant_id: grant_id.clone(),
            renewal,
        });
    }

    /// The stale copies waiting for the next report, locked.
    pub(crate) fn superseded_outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.superseded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops this server's stale copies, deletes them from the store and
    /// wakes checkouts waiting for seats.
    pub(crate) async fn drop_superseded(&self, superseded: &[SupersededGrant]) {
        if superseded.is_empty() {
            return;
        }
        let dropped: Vec<_> = {
            let mut issuer = self.issuer();
            superseded
                .iter()
                .filter_map(|s| issuer.drop_superseded(&s.grant_id, s.renewal))
                .collect()
        };
        for released in &dropped {
            if let Some(observer) = &self.observer {
                observer.dropped_stale_copy(&self.pool.server_id, &released.grant_id);
            }
            tracing::debug!(
                "dropped the stale copy of grant {} ({} seats): renewed or checked in on another server",
                released.grant_id,
                released.seats
            );
        }
        self.released(dropped).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: usize) -> SupersededGrant {
        SupersededGrant {
            grant_id: format!("g{id}").into(),
            renewal: id as u64,
        }
    }

    #[test]
    fn an_outbox_sends_oldest_first_in_bounded_messages_and_keeps_what_failed() {
        let mut outbox = Outbox::default();
        for id in 0..SUPERSEDED_PER_MESSAGE_MAX + 3 {
            outbox.push(entry(id));
        }
        let first = outbox.take();
        assert_eq!(first.len(), SUPERSEDED_PER_MESSAGE_MAX);
        assert_eq!(first[0], entry(0));
        assert_eq!(outbox.len(), 3);
        outbox.put_back(first);
        assert_eq!(outbox.take()[0], entry(0), "what failed goes first again");
    }

    #[test]
    fn an_outbox_forgets_the_oldest_past_its_bound() {
        let mut outbox = Outbox::default();
        for id in 0..SUPERSEDED_QUEUED_MAX + 2 {
            outbox.push(entry(id));
        }
        assert_eq!(outbox.len(), SUPERSEDED_QUEUED_MAX);
        assert_eq!(outbox.take()[0], entry(2));
    }

    #[test]
    fn the_relay_tells_every_other_server_once() {
        let servers: Vec<String> = ["A", "B", "C"].map(String::from).to_vec();
        let mut relay = Relay::default();
        relay.forward("B", &servers, &[entry(1), entry(2)]);
        assert_eq!(relay.take("A"), [entry(1), entry(2)]);
        assert_eq!(relay.take("C"), [entry(1), entry(2)]);
        assert!(relay.take("B").is_empty(), "not back to the sender");
        assert!(relay.take("A").is_empty(), "told once");
        // A server that left the pool is no longer queued for.
        relay.forward("A", &servers[..2], &[entry(3)]);
        assert!(relay.take("C").is_empty());
        assert_eq!(relay.take("B"), [entry(3)]);
    }
}
