//! Temporary licenses (seed 004), the server's side: a user's activation
//! on a device, its extensions and its return, each committed through the
//! pool's log (`ControlCommand::Activate`, `Extend`, `Return`), and the
//! leader's expiry of the licenses whose time has passed.
//!
//! An activation takes its seats out of the receiving server's allocation
//! (borrowing first when short, as a checkout does): they are held back
//! from checkouts here from before the command is proposed until the state
//! that took them from the allocation is applied here, so nothing is issued
//! twice in between. Once committed the seats are no server's: no crash,
//! lost disk or fail-over can lose them, and none holds them for the safe
//! wait W.

use std::sync::Arc;

use tessera_core::answer::CLOCK_TOLERANCE_MS;
use tessera_core::control::{ControlCommand, ControlOutcome};
use tessera_core::grant_proof::{self, GrantClaim};
use tessera_core::temporary::{TemporaryPolicy, TokenFields};
use tessera_core::Version;
use tessera_proto::{self as proto, ErrorCode};

use super::Deadline;
use crate::issuer::SeatRequest;
use crate::refusal::Refusal;
use crate::App;

const DAY_MS: i64 = 86_400_000;

/// Releases the seats held back for an activation that did not commit.
struct Reservation<'a> {
    app: &'a App,
    license_id: String,
    committed: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.app.issuer().end_temporary(&self.license_id);
            self.app.seats_freed();
        }
    }
}

impl App {
    /// Activates a temporary license of `request.feature` for the user's
    /// ticket on the request's device, and answers its signed token.
    pub async fn activate(
        self: &Arc<Self>,
        request: proto::ActivateRequest,
        deadline: Deadline,
    ) -> Result<proto::TemporaryToken, Refusal> {
        let policy = self.temporary_policy(&request.feature, Some(&request.version))?;
        let period_ms = match request.days {
            Some(days) if days == 0 || days > policy.offline_days_max => {
                return Err(Refusal::new(
                    ErrorCode::TemporaryNotAllowed,
                    format!(
                        "an offline borrow of {days} days of `{}` was asked; its license allows \
                         1 to {} days",
                        request.feature, policy.offline_days_max
                    ),
                ))
            }
            Some(days) => i64::from(days) * DAY_MS,
            None => i64::from(policy.period_s) * 1_000,
        };
        let license_id = format!("t{}", (self.grant_ids)());
        let seats = 1;
        let seat_request = SeatRequest {
            client_id: request.client_id.as_str().into(),
            user: request.user.as_str().into(),
            host: request.host.as_str().into(),
            display: None,
            feature: request.feature.as_str().into(),
            version: request.version.as_str().into(),
            count: seats,
            renewal: 0,
        };
        let allocation = self
            .issue_with_borrowing(&seat_request, deadline, None, |app| {
                let now_ms = app.clock.now_ms();
                app.issuer()
                    .reserve_temporary(&license_id, &request.feature, seats, now_ms)
            })
            .await?;
        let mut reservation = Reservation {
            app: self,
            license_id: license_id.clone(),
            committed: false,
        };
        let issued_unix_ms = self.clock.unix_ms();
        let expires_unix_ms = issued_unix_ms + period_ms;
        let outcome = self
            .pool
            .propose(ControlCommand::Activate {
                feature: request.feature.clone(),
                license_id: license_id.clone(),
                ticket: request.user.clone(),
                device: request.device.clone(),
                seats,
                from: self.pool.server_id.clone(),
                expires_unix_ms,
                devices_max: policy.devices_max,
                allocation,
            })
            .await?;
        let serial = committed(outcome)?;
        reservation.committed = true;
        self.issuer().temporary_committed(&license_id, serial);
        drop(reservation);
        tracing::info!(
            "temporary license {license_id} of `{}` for `{}` on device `{}`, until {}",
            request.feature,
            request.user,
            request.device,
            expires_unix_ms
        );
        Ok(self.token(
            &license_id,
            &request.feature,
            &request.user,
            &request.device,
            seats,
            (issued_unix_ms, expires_unix_ms),
            &policy,
        ))
    }

    /// Extends a temporary license for another period, from its own device
    /// while it is its ticket's newest; answers the new token.
    pub async fn extend_temporary(
        &self,
        request: proto::TemporaryRequest,
    ) -> Result<proto::TemporaryToken, Refusal> {
        let license = self.proven_license(&request)?;
        let policy = self.temporary_policy(&request.feature, None)?;
        let issued_unix_ms = self.clock.unix_ms();
        let expires_unix_ms = issued_unix_ms + i64::from(policy.period_s) * 1_000;
        let outcome = self
            .pool
            .propose(ControlCommand::Extend {
                feature: request.feature.clone(),
                license_id: request.license_id.clone(),
                device: request.device.clone(),
                expires_unix_ms,
            })
            .await?;
        committed(outcome)?;
        Ok(self.token(
            &request.license_id,
            &request.feature,
            &license.ticket,
            &request.device,
            license.seats,
            (issued_unix_ms, expires_unix_ms),
            &policy,
        ))
    }

    /// Returns a temporary license from its device: its seats go back to
    /// the pool at once. Answers the seats returned.
    pub async fn return_temporary(&self, request: proto::TemporaryRequest) -> Result<u32, Refusal> {
        let license = self.proven_license(&request)?;
        let outcome = self
            .pool
            .propose(ControlCommand::Return {
                feature: request.feature.clone(),
                license_id: request.license_id.clone(),
                device: request.device.clone(),
            })
            .await?;
        committed(outcome)?;
        Ok(license.seats)
    }

    /// Leader: expires the temporary licenses whose time has passed by
    /// this clock, beyond the tolerance a device's clock may be behind.
    pub(crate) async fn expire_temporaries(&self) {
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
                    let ids = a
                        .temporaries
                        .iter()
                        .filter(|(_, t)| t.expires_unix_ms.saturating_add(CLOCK_TOLERANCE_MS) < now)
                        .map(|(id, _)| id.clone())
                        .collect::<Vec<_>>();
                    (feature.clone(), ids)
                })
                .filter(|(_, ids)| !ids.is_empty())
                .collect()
        };
        for (feature, license_ids) in due {
            let count = license_ids.len();
            match self
                .pool
                .propose(ControlCommand::Expire {
                    feature: feature.clone(),
                    license_ids,
                })
                .await
            {
                Ok(_) => tracing::info!("{count} temporary licenses of `{feature}` expired"),
                Err(err) => tracing::warn!("temporary licenses of `{feature}` not expired: {err}"),
            }
        }
    }

    /// The terms of temporary licenses of `feature` on this server: every
    /// served code must allow them, the strictest terms hold, and the pool
    /// file may tighten them further.
    fn temporary_policy(
        &self,
        feature: &str,
        version: Option<&str>,
    ) -> Result<TemporaryPolicy, Refusal> {
        let issuer = self.issuer();
        let Some(license) = issuer.licenses().feature(feature) else {
            return Err(Refusal::new(
                ErrorCode::UnknownFeature,
                format!("no license code names feature `{feature}`"),
            ));
        };
        if let Some(version) = version {
            let parsed = Version::parse(version)
                .map_err(|err| Refusal::new(ErrorCode::InvalidField, format!("version: {err}")))?;
            if !license.covers(&parsed) {
                return Err(Refusal::new(
                    ErrorCode::VersionNotLicensed,
                    format!("no served code of `{feature}` covers version {version}"),
                ));
            }
        }
        let policies: Option<Vec<TemporaryPolicy>> = license
            .served()
            .map(|code| code.fields().temporary)
            .collect();
        let vendor = policies
            .and_then(|p| TemporaryPolicy::strictest(&p))
            .ok_or_else(|| {
                Refusal::new(
                    ErrorCode::TemporaryNotAllowed,
                    format!(
                        "the license codes of `{feature}` served here do not all allow temporary \
                         licenses"
                    ),
                )
            })?;
        drop(issuer);
        // The pool's `[temporary.FEATURE]` may tighten the vendor's terms.
        let limits = self
            .pool
            .with_pool_file(|pool| pool.temporary.get(feature).copied());
        match limits {
            None => Ok(vendor),
            Some(limits) => limits.apply(vendor).ok_or_else(|| {
                Refusal::new(
                    ErrorCode::TemporaryNotAllowed,
                    format!(
                        "the pool file allows no temporary licenses of `{feature}` \
                         ([temporary.{feature}] allowed = false)"
                    ),
                )
            }),
        }
    }

    /// The license `request` names, if its proof checks and it is out.
    fn proven_license(
        &self,
        request: &proto::TemporaryRequest,
    ) -> Result<tessera_core::control::TemporaryLicense, Refusal> {
        let applied = self.pool.applied.borrow();
        let license = applied
            .state
            .allocation(&request.feature)
            .and_then(|a| a.temporaries.get(&request.license_id))
            .cloned()
            .ok_or_else(|| {
                Refusal::new(
                    ErrorCode::LicenseWithdrawn,
                    format!(
                        "temporary license {} of `{}` is not out: it was returned or expired",
                        request.license_id, request.feature
                    ),
                )
            })?;
        let claim = license_claim(
            &request.license_id,
            &request.device,
            &request.feature,
            license.seats,
        );
        grant_proof::verify(&self.pool_key, &claim, request.proof.as_str()).map_err(|_| {
            Refusal::new(
                ErrorCode::GrantProofInvalid,
                format!(
                    "the proof does not prove temporary license {} on device `{}`",
                    request.license_id, request.device
                ),
            )
        })?;
        Ok(license)
    }

    /// The signed token of a license.
    #[allow(clippy::too_many_arguments)]
    fn token(
        &self,
        license_id: &str,
        feature: &str,
        ticket: &str,
        device: &str,
        seats: u32,
        (issued_unix_ms, expires_unix_ms): (i64, i64),
        policy: &TemporaryPolicy,
    ) -> proto::TemporaryToken {
        let (codes, codes_sha256) = {
            let issuer = self.issuer();
            issuer
                .licenses()
                .feature(feature)
                .map(|f| (f.served_texts.to_vec(), f.served_sha256.clone()))
                .unwrap_or_default()
        };
        let fields = TokenFields {
            license_id: license_id.to_string(),
            pool_id: self.pool.pool_id.clone(),
            server_id: self.pool.server_id.clone(),
            hostid: self.hostid.to_string(),
            feature: feature.to_string(),
            ticket: ticket.to_string(),
            device: device.to_string(),
            seats,
            issued_unix_ms,
            expires_unix_ms,
            extend_after_unix_ms: issued_unix_ms + i64::from(policy.extend_after_s) * 1_000,
            return_on_close: policy.return_on_close,
            codes_sha256,
        };
        let proof = grant_proof::prove(
            &self.pool_key,
            &license_claim(license_id, device, feature, seats),
        );
        proto::TemporaryToken::signed(
            fields,
            &self.answer_key,
            proto::Proof(proof.to_string()),
            codes,
        )
    }
}

/// What a license's proof covers: the pool key's HMAC over the license id
/// (as the grant id), the device (as the client), the feature and seats.
fn license_claim<'a>(
    license_id: &'a str,
    device: &'a str,
    feature: &'a str,
    seats: u32,
) -> GrantClaim<'a> {
    GrantClaim {
        grant_id: license_id,
        client_id: device,
        feature,
        count: seats,
    }
}

/// The serial of a committed activation or extension, or the refusal.
fn committed(outcome: ControlOutcome) -> Result<u64, Refusal> {
    match outcome {
        ControlOutcome::Temporary { serial } => Ok(serial),
        ControlOutcome::Moved { .. } => Ok(0),
        ControlOutcome::Limited { .. } => Err(crate::claims::limited(outcome)),
        ControlOutcome::Refused { reason } => {
            let code = if reason.contains("the most its license allows") {
                ErrorCode::TooManyDevices
            } else if reason.contains("withdrawn") || reason.contains("returned or expired") {
                ErrorCode::LicenseWithdrawn
            } else if reason.contains("extend it") || reason.contains("another device") {
                ErrorCode::TemporaryNotAllowed
            } else {
                ErrorCode::NoSeatsAvailable
            };
            Err(Refusal::new(code, reason))
        }
        other => Err(Refusal::new(
            ErrorCode::Internal,
            format!("the temporary license applied as {other:?}"),
        )),
    }
}
