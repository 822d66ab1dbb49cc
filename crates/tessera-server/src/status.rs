//! What a server tells about itself: `/v1/status` (its state, the pool's
//! servers, each feature's distribution, the oldest grants) and `/metrics`
//! (the same, as Prometheus text, plus request and quota counters).

use std::fmt::Write as _;

use tessera_proto::{self as proto, SharedText};

use crate::issuer::{self, Issuer, IssuingState};

use crate::App;

/// Whether a status lists grants (with their users and hosts) or only
/// counts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Grants {
    Listed,
    Counted,
}

impl App {
    pub(crate) fn status(&self, grants: Grants) -> proto::StatusResponse {
        let now_ms = self.clock.now_ms();
        let pool_file = self.pool.pool_file();
        let leader_id = self.pool.leader().map(|(id, _)| id);
        let role = self.pool.role();
        let peers = self.pool.peer_statuses();
        let issuer = self.issuer();
        let state = issuer.state(now_ms);
        let server_id = self.pool.server_id.clone();
        let features = issuer
            .licenses()
            .features()
            .map(|feature| self.feature_status(&issuer, feature, grants == Grants::Listed))
            .collect();
        let grants = match grants {
            Grants::Listed => oldest_grants(&issuer, &server_id, now_ms),
            Grants::Counted => Vec::new(),
        };
        proto::StatusResponse {
            pool_id: pool_file.pool_id.clone(),
            pool_sequence: issuer.pool().map_or(0, |p| p.sequence),
            server: proto::ServerStatus {
                id: server_id,
                address: self.address.clone(),
                role: role.into(),
                leader_id,
                state: match state {
                    IssuingState::Serving => "serving",
                    IssuingState::Grace { .. } => "grace",
                    IssuingState::NoQuorum => "no_quorum",
                    IssuingState::ClockSetBack => "clock_set_back",
                }
                .into(),
                software_version: env!("CARGO_PKG_VERSION").into(),
                uptime_ms: now_ms.saturating_sub(self.started_ms),
                grace_remaining_ms: match state {
                    IssuingState::Grace { until_ms } => Some(until_ms - now_ms),
                    _ => None,
                },
                state_reason: issuer.clock_set_back().map(str::to_string),
                store_sync: Some(self.store_sync.as_str().into()),
                hostid: self.hostid.to_string(),
                vid: self
                    .vid
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .map(crate::vid::VidHold::status),
            },
            servers: peers,
            features,
            grants,
            grants_total: (issuer.grants_total() + issuer.restored_pending()) as u64,
            pool_wide: false,
            unanswered: Vec::new(),
        }
    }

    /// The whole pool's status: this server's, with every other server's
    /// own figures merged in (`tessera_proto::pool_status::merge`), each
    /// asked side by side with this server's peer credential and given
    /// [`crate::pool::network::PEER_TIMEOUT`]. Grants are listed only for
    /// a caller who may see them, as in this server's own status.
    pub(crate) async fn pool_status(&self, grants: Grants) -> proto::StatusResponse {
        let own = self.status(grants);
        let others: Vec<proto::PeerStatus> = own
            .servers
            .iter()
            .filter(|peer| peer.id != own.server.id)
            .cloned()
            .collect();
        let mut asks = tokio::task::JoinSet::new();
        for (index, peer) in others.iter().enumerate() {
            let (peers, address) = (self.pool.peers.clone(), peer.address.clone());
            asks.spawn(async move {
                let answer = peers
                    .get::<proto::StatusResponse>(&address, "/v1/status")
                    .await
                    .map_err(|err| err.to_string());
                (index, answer)
            });
        }
        let mut answers: Vec<Option<Result<proto::StatusResponse, String>>> =
            vec![None; others.len()];
        while let Some(joined) = asks.join_next().await {
            if let Ok((index, answer)) = joined {
                answers[index] = Some(answer);
            }
        }
        let mut merged = proto::pool_status::merge_answers(own, others, answers);
        if grants == Grants::Counted {
            merged.grants.clear();
        }
        merged
    }

    /// Prometheus text exposition of this server's state.
    pub(crate) fn metrics(&self) -> String {
        let status = self.status(Grants::Counted);
        let server = &status.server;
        let mut out = Exposition::default();
        out.gauge("tessera_leader", u64::from(server.role == "leader"));
        out.gauge("tessera_serving", u64::from(server.state == "serving"));
        out.gauge("tessera_pool_sequence", status.pool_sequence);
        out.gauge("tessera_grants", status.grants_total);
        let up = status.servers.iter().filter(|p| p.up).count();
        out.gauge("tessera_servers_up", up as u64);
        out.family("tessera_hard_limit", "gauge");
        for f in &status.features {
            let labels = format!("feature=\"{}\"", f.feature);
            out.sample("tessera_hard_limit", &labels, f.hard_limit);
        }
        out.family("tessera_temporary_seats", "gauge");
        for f in &status.features {
            let labels = format!("feature=\"{}\"", f.feature);
            out.sample("tessera_temporary_seats", &labels, f.temporary_seats);
        }
        out.family("tessera_seats_allocated", "gauge");
        out.family("tessera_seats_in_use", "gauge");
        for (f, row) in rows(&status.features).filter(|(_, r)| r.in_use.is_some()) {
            let labels = row_labels(f, row);
            out.sample("tessera_seats_allocated", &labels, row.allocation);
            out.sample("tessera_seats_in_use", &labels, row.in_use.unwrap_or(0));
        }
        out.family("tessera_seats_reserved", "gauge");
        out.family("tessera_borrows_total", "counter");
        out.family("tessera_seats_moved_in_total", "counter");
        out.family("tessera_seats_moved_out_total", "counter");
        for (f, row) in rows(&status.features) {
            let labels = row_labels(f, row);
            out.sample("tessera_seats_reserved", &labels, row.reserved);
            out.sample("tessera_borrows_total", &labels, row.borrows);
            out.sample("tessera_seats_moved_in_total", &labels, row.seats_in);
            out.sample("tessera_seats_moved_out_total", &labels, row.seats_out);
        }
        let renewals = *self
            .quota_renewals
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        out.counter("tessera_quota_renewals_total", renewals.count);
        let cooling = self.issuer().cooling_seats();
        out.gauge("tessera_seats_cooling", cooling);
        let queued = self.superseded_outbox().len();
        out.gauge("tessera_superseded_queued", queued as u64);
        out.gauge("tessera_quota_renewal_gap_max_ms", renewals.gap_max_ms);
        let framed = self
            .framed_requests
            .load(std::sync::atomic::Ordering::Relaxed);
        out.counter("tessera_framed_requests_total", framed);
        let (batches, answers, bound, codes_held) = self.batch_signer.counts();
        out.counter("tessera_answer_batches_total", batches);
        out.counter("tessera_answers_batch_signed_total", answers);
        out.counter("tessera_answers_channel_bound_total", bound);
        out.counter("tessera_answers_codes_held_total", codes_held);
        out.family("tessera_requests_total", "counter");
        let counts = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        for ((endpoint, outcome), count) in counts.iter() {
            let labels = format!("endpoint=\"{endpoint}\",outcome=\"{outcome}\"");
            out.sample("tessera_requests_total", &labels, *count);
        }
        out.0
    }

    /// One feature's row set: this server's own row from its table; on the
    /// leader, every other server's in-use from its last report.
    fn feature_status(
        &self,
        issuer: &Issuer,
        feature: &tessera_core::FeatureLicense,
        listed: bool,
    ) -> proto::FeatureStatus {
        let terms = issuer.terms(&feature.feature);
        let table = issuer.table(&feature.feature);
        let allocation = issuer
            .control()
            .and_then(|c| c.allocation(&feature.feature));
        let own_id = &self.pool.server_id;
        let rows: Vec<proto::DistributionRow> = table
            .map(|t| {
                t.rows()
                    .map(|(server_id, row)| {
                        let in_use = if server_id == own_id {
                            Some(row.in_use)
                        } else {
                            self.pool.reported_in_use(server_id, &feature.feature)
                        };
                        let moved = allocation
                            .and_then(|a| a.moved.get(server_id))
                            .copied()
                            .unwrap_or_default();
                        let reserved = allocation.map_or(0, |a| a.reserved(server_id));
                        proto::DistributionRow {
                            server_id: server_id.to_string(),
                            allocation: row.allocation,
                            in_use,
                            available: in_use
                                .map(|n| row.allocation.saturating_sub(n).saturating_sub(reserved)),
                            reserved,
                            target: allocation.and_then(|a| a.targets.get(server_id).copied()),
                            borrows: moved.borrows,
                            seats_in: moved.seats_in,
                            seats_out: moved.seats_out,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        // The table's free pool is what no server is allocated, temporary
        // licenses included; the control state's says what is free.
        let free_pool = table.map_or(0, |t| t.free_pool());
        let free_pool = allocation.map_or(free_pool, |a| {
            free_pool.min(a.free_pool + a.parked.values().sum::<u32>())
        });
        let pool_available = free_pool + rows.iter().map(|r| r.available.unwrap_or(0)).sum::<u32>();
        let temporaries = allocation.map_or(Vec::new(), |a| {
            a.temporaries
                .iter()
                .map(|(license_id, t)| proto::TemporaryStatus {
                    license_id: license_id.clone(),
                    ticket: listed.then(|| t.ticket.clone()),
                    device: listed.then(|| t.device.clone()),
                    seats: t.seats,
                    expires_unix_ms: t.expires_unix_ms,
                })
                .collect()
        });
        let (reserves, maxima) = match (issuer.control().and_then(|c| c.pool()), allocation) {
            (Some(pool), Some(a)) => {
                let (reserves, maxima) = pool.policy.limits_held(&feature.feature, a.holders());
                let status = |limits: Vec<(&tessera_core::policy::Limit, u64)>| {
                    limits
                        .into_iter()
                        .map(|(limit, held)| proto::LimitStatus {
                            rule: limit.rule.text.clone(),
                            seats: limit.seats,
                            held: u32::try_from(held).unwrap_or(u32::MAX),
                        })
                        .collect()
                };
                (status(reserves), status(maxima))
            }
            _ => (Vec::new(), Vec::new()),
        };
        let waiters = allocation.map_or(Vec::new(), |a| {
            a.waiters
                .iter()
                .enumerate()
                .map(|(i, w)| proto::WaiterStatus {
                    position: i as u32 + 1,
                    user: listed.then(|| w.user.clone()),
                    host: listed.then(|| w.host.clone()),
                    seats: w.seats,
                    since_unix_ms: w.since_unix_ms,
                })
                .collect()
        });
        let mut denials: Vec<proto::DenialCount> = self
            .denials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((name, _), _)| *name == feature.feature)
            .map(|((_, code), count)| proto::DenialCount {
                code: *code,
                count: *count,
            })
            .collect();
        denials.sort_by(|a, b| a.code.as_str().cmp(b.code.as_str()));
        proto::FeatureStatus {
            denials,
            reserves,
            maxima,
            waiters,
            feature: feature.feature.clone(),
            vendor: feature.vendor.clone(),
            hard_limit: feature.hard_limit,
            free_pool,
            pool_available,
            temporary_seats: allocation.map_or(0, |a| a.temporary_seats() as u32),
            temporary_allocation: allocation.map_or(0, |a| a.temporary_allocation() as u32),
            temporaries,
            lingering_seats: issuer.lingering_seats(&feature.feature),
            lease_ms: terms.map_or(0, |t| t.lease_ms),
            heartbeat_interval_ms: terms.map_or(0, |t| t.heartbeat_interval_ms),
            borrow_threshold_percent: self.borrow_policy_in(issuer, &feature.feature).0,
            pending_requests: allocation.map_or(0, |a| a.requests.len() as u32),
            servers: rows,
            codes: feature.codes.iter().map(code_status).collect(),
        }
    }
}

/// A license code as the status shows it: its fields, and whether it is
/// served (and why not).
fn code_status(verdict: &tessera_core::CodeVerdict) -> proto::CodeStatus {
    let fields = verdict.code.fields();
    proto::CodeStatus {
        id: fields.id.clone(),
        vendor: fields.vendor.clone(),
        seats: fields.seats,
        version_min: fields.version_min.to_string(),
        version_max: fields.version_max.to_string(),
        expiry: fields.expiry.to_string(),
        hostid: fields.hostid.to_string(),
        served: verdict.not_served.is_none(),
        reason: verdict.not_served.as_ref().map(|r| r.to_string()),
    }
}

/// Every distribution row of every feature, with its feature.
fn rows(
    features: &[proto::FeatureStatus],
) -> impl Iterator<Item = (&proto::FeatureStatus, &proto::DistributionRow)> {
    features
        .iter()
        .flat_map(|f| f.servers.iter().map(move |row| (f, row)))
}

fn row_labels(feature: &proto::FeatureStatus, row: &proto::DistributionRow) -> String {
    format!(
        "feature=\"{}\",server=\"{}\"",
        feature.feature, row.server_id
    )
}

/// Prometheus text exposition, written line by line.
#[derive(Default)]
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str) {
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
    }

    fn gauge(&mut self, name: &str, value: u64) {
        self.family(name, "gauge");
        let _ = writeln!(self.0, "{name} {value}");
    }

    fn counter(&mut self, name: &str, value: u64) {
        self.family(name, "counter");
        let _ = writeln!(self.0, "{name} {value}");
    }
}

/// The oldest grants, at most [`proto::STATUS_GRANTS_MAX`], oldest first.
fn oldest_grants(issuer: &Issuer, server_id: &str, now_ms: u64) -> Vec<proto::GrantStatus> {
    // The oldest grants, chosen before any is described: a server may
    // hold a million, and the status lists at most STATUS_GRANTS_MAX.
    let mut oldest: Vec<(&SharedText, &issuer::LiveGrant)> = issuer.grants().collect();
    if oldest.len() > proto::STATUS_GRANTS_MAX {
        oldest.select_nth_unstable_by(proto::STATUS_GRANTS_MAX, |a, b| {
            a.1.issued_at_ms
                .cmp(&b.1.issued_at_ms)
                .then_with(|| a.0.cmp(b.0))
        });
        oldest.truncate(proto::STATUS_GRANTS_MAX);
    }
    let mut grants: Vec<proto::GrantStatus> = oldest
        .into_iter()
        .map(|(grant_id, grant)| proto::GrantStatus {
            grant_id: grant_id.to_string(),
            feature: grant.request.feature.to_string(),
            count: grant.request.count,
            client_id: grant.request.client_id.to_string(),
            user: grant.request.user.to_string(),
            host: grant.request.host.to_string(),
            display: grant.request.display.as_deref().map(str::to_string),
            server_id: server_id.to_string(),
            version: grant.request.version.to_string(),
            age_ms: now_ms.saturating_sub(grant.issued_at_ms),
            expires_in_ms: grant.expires_at_ms.saturating_sub(now_ms),
        })
        .collect();
    grants.sort_by(|a, b| b.age_ms.cmp(&a.age_ms).then(a.grant_id.cmp(&b.grant_id)));
    grants.truncate(proto::STATUS_GRANTS_MAX);
    grants
}
