//! The programs: each its own `Client` (its own client id, the server order
//! rotated), checking out one seat, holding it a while, giving it back, and
//! again, until the run stops. Each logs what it believes, by its own clock.

use std::ops::{ControlFlow, Range};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_client::{Client, ClientConfig, SeatGuard};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};

use crate::log::{End, Log};

const FEATURE: &str = "app";
const VERSION: &str = "1.0";
/// How long a program usually holds its seat.
const HOLD_MS: Range<u64> = 500..3_000;
/// One hold in ten is longer, to ride through a fault or be lost to it.
const LONG_HOLD_MS: Range<u64> = 3_000..8_000;
/// Pause after a refused checkout before the next try.
const RETRY_PAUSE_MS: Range<u64> = 100..500;
/// Pause between giving a seat back and asking for the next one.
const THINK_MS: Range<u64> = 0..200;
/// Most checkouts one client tries in a run. Every try is followed by a hold
/// or a pause, so the run's length bounds them first; this bounds the loop.
const CHECKOUTS_PER_CLIENT_MAX: usize = 100_000;

/// How a program ends a hold that was not lost.
#[derive(Clone, Copy)]
enum Ending {
    Release,
    /// Drop the guard: it checks in by itself, without waiting.
    Drop,
}

/// Starts `clients` programs against `addresses`; they run until `stop` is set.
pub fn start(
    addresses: &[String],
    ca_pem: &[u8],
    vendor: &tessera_client::VendorPublicKey,
    clients: usize,
    seed: u64,
    log: &Log,
    stop: &watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut programs = JoinSet::new();
    for index in 0..clients {
        let mut order = addresses.to_vec();
        order.rotate_left(index % addresses.len());
        let mut config = ClientConfig::new(order);
        config.client_id = format!("chaos-{index}");
        config.user = config.client_id.clone();
        config.tls = tessera_client::ClientTls::PoolCa(ca_pem.to_vec());
        config.trust = tessera_client::Trust::Vendor(vec![vendor.clone()]);
        let client = Client::new(config).expect("a valid client configuration");
        let rng = StdRng::seed_from_u64(seed.wrapping_add(1 + index as u64));
        programs.spawn(run(index, client, rng, log.clone(), stop.clone()));
    }
    programs
}

async fn run(
    index: usize,
    client: Client,
    mut rng: StdRng,
    log: Log,
    mut stop: watch::Receiver<bool>,
) {
    for _ in 0..CHECKOUTS_PER_CLIENT_MAX {
        if *stop.borrow() {
            return;
        }
        let result = client.checkout(FEATURE, VERSION, 1).await;
        let at = Instant::now();
        let seat = match result {
            Ok(seat) => seat,
            Err(error) => {
                log.checkout_failed(index, at, &error);
                if !pause(&mut stop, &mut rng, RETRY_PAUSE_MS).await {
                    return;
                }
                continue;
            }
        };
        log.granted(index, &seat, at);
        let (hold_ms, ending) = match rng.gen_range(0..10) {
            0..=6 => (HOLD_MS, Ending::Release),
            7 | 8 => (HOLD_MS, Ending::Drop),
            _ => (LONG_HOLD_MS, Ending::Release),
        };
        let hold_until = at + Duration::from_millis(rng.gen_range(hold_ms));
        let lost = hold(index, &seat, hold_until, &log, &stop).await;
        let ended_at = Instant::now();
        match (lost, ending) {
            (Some(reason), _) => {
                log.ended(index, &seat, ended_at, End::Lost { reason });
                drop(seat);
            }
            (None, Ending::Release) => {
                log.ended(index, &seat, ended_at, End::Released);
                // A failed check-in only leaves the seat reserved until its lease runs out.
                let _ = seat.release().await;
            }
            (None, Ending::Drop) => {
                log.ended(index, &seat, ended_at, End::Dropped);
                drop(seat);
            }
        }
        if !pause(&mut stop, &mut rng, THINK_MS).await {
            return;
        }
    }
}

/// Holds the seat until `until`, the end of the run, or its loss, and logs
/// every fail-over on the way. Returns the reason if the seat was lost.
async fn hold(
    index: usize,
    seat: &SeatGuard,
    until: Instant,
    log: &Log,
    stop: &watch::Receiver<bool>,
) -> Option<String> {
    let mut server_id = seat.server_id();
    let work = || {
        let mut stop = stop.clone();
        async move {
            tokio::select! {
                biased;
                _ = stop.changed() => {}
                () = sleep_until(until) => {}
            }
            ControlFlow::Break(())
        }
    };
    seat.hold_while(work, |holder, _| {
        if holder != server_id {
            let from = std::mem::replace(&mut server_id, holder.to_string());
            log.failed_over(index, seat.grant_id(), from, holder.to_string());
        }
    })
    .await
}

/// Sleeps a random time from `range_ms`; false if the run stopped meanwhile.
async fn pause(stop: &mut watch::Receiver<bool>, rng: &mut StdRng, range_ms: Range<u64>) -> bool {
    let until = Instant::now() + Duration::from_millis(rng.gen_range(range_ms));
    tokio::select! {
        _ = stop.changed() => false,
        () = sleep_until(until) => !*stop.borrow(),
    }
}
