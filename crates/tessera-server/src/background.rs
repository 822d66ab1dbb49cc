//! The background loops of a running server: following the control state,
//! reporting to the leader for quota, reconciling membership, and the
//! expiry sweep with the daily license check.

use std::sync::Arc;

use tessera_core::{CivilDate, LicenseTable};

use crate::config::ServerConfig;
use crate::pool::Pool;

use crate::start::{grace_ms, INSTALLED_POOL_FILE};
use crate::App;

/// Applies every new control state to the issuer, and writes a newly
/// installed pool file to the data directory.
pub(crate) fn follow_control(app: &Arc<App>, grace: bool, config: &ServerConfig) {
    let app = app.clone();
    let mut applied = app.pool.applied.clone();
    let timing = config.timing;
    tokio::spawn(async move {
        let mut written_sequence = None;
        let mut grace_fitted = !grace;
        loop {
            let (control, index) = {
                let applied = applied.borrow_and_update();
                (applied.state.clone(), applied.index)
            };
            if control.pool().is_some() {
                let licenses = app.licenses_for(&control);
                log_unserved(&licenses);
                let sequence = control.pool().map(|p| p.sequence);
                {
                    let mut issuer = app.issuer();
                    issuer.set_control(control.clone(), licenses);
                    if !grace_fitted {
                        // Now that the codes are known, the grace period is one longest hold.
                        let grace_ms = grace_ms(&timing, Some(issuer.longest_hold_ms()));
                        issuer.set_grace_until(Some(app.started_ms + grace_ms));
                        grace_fitted = true;
                        crate::grace::end_when_over(app.clone());
                    }
                }
                app.seats_freed();
                app.control_taken.send_replace(index);
                if sequence != written_sequence {
                    if let Some(text) = control.pool_text() {
                        let path = app.data_dir.join(INSTALLED_POOL_FILE);
                        if let Err(err) = app.disk.replace_file(&path, text.as_bytes()) {
                            tracing::error!("cannot write {}: {err}", path.display());
                        }
                    }
                    written_sequence = sequence;
                }
            }
            tokio::select! {
                changed = applied.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                // The VIDs this server may serve changed (`crate::vid`).
                () = app.identity_changed.notified() => {}
            }
            let lag_ms = app
                .control_lag_ms
                .load(std::sync::atomic::Ordering::Relaxed);
            if lag_ms > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(lag_ms)).await;
            }
        }
    });
}

fn log_unserved(licenses: &LicenseTable) {
    for feature in licenses.features() {
        for verdict in &feature.codes {
            if let Some(reason) = &verdict.not_served {
                tracing::warn!("license code {} is not served: {reason}", verdict.code.id());
            }
        }
    }
}

pub(crate) fn spawn_membership_loop(pool: Arc<Pool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            ticker.tick().await;
            pool.reconcile_membership().await;
        }
    })
}

/// The expiry sweep and the daily license check.
pub(crate) fn spawn_sweeps(app: Arc<App>, config: ServerConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let sweep = std::time::Duration::from_millis(config.timing.expiry_sweep_interval_ms);
        let license_check_every = config.timing.license_check_interval_ms;
        let mut last_license_check_ms = app.clock.now_ms();
        let mut last_day = CivilDate::from_unix_ms(app.clock.unix_ms());
        let mut ticker = tokio::time::interval(sweep);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            app.watch_clock();
            app.expire_temporaries().await;
            app.expire_waiters().await;
            let now_ms = app.clock.now_ms();
            if app.issuer().cooling_lapsed(now_ms) {
                app.seats_freed();
            }
            let expired = app.issuer().expire(now_ms);
            for released in &expired {
                tracing::debug!("grant {} lapsed", released.grant_id);
            }
            app.report_released(tessera_core::report::EventKind::Expired, &expired);
            app.released(expired).await;
            if now_ms - last_license_check_ms >= license_check_every {
                last_license_check_ms = now_ms;
                let today = CivilDate::from_unix_ms(app.clock.unix_ms());
                if today != last_day {
                    last_day = today;
                    let control = app.pool.applied.borrow().state.clone();
                    let licenses = app.licenses_for(&control);
                    app.issuer().reload_licenses(licenses);
                    tracing::info!("license table evaluated again for {today}");
                }
            }
        }
    })
}
