//! The fault schedule of one seed: episodes, each a fault that starts at a
//! time and heals after a while. Drawn before the run starts, printed with
//! every failure, so a seed names its whole schedule.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

/// One fault. Hosts are named by index: servers `0..servers`, client
/// machines after them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The server process dies (`kill -9`); unsynced writes are lost. With
    /// `wipe`, its disk is replaced too. It restarts when the episode ends.
    Crash { server: usize, wipe: bool },
    /// A client machine dies with every program on it, no check-ins sent.
    ClientCrash { host: usize },
    /// The hosts in `side` can reach each other but nobody else.
    Partition { side: Vec<usize> },
    /// Messages from `from` to `to` are dropped; the other way works.
    OneWay { from: usize, to: usize },
    /// The link between `a` and `b` goes down and up every `period`.
    Flap {
        a: usize,
        b: usize,
        period: Duration,
    },
    /// Messages between `a` and `b` are held, then all delivered late.
    Hold { a: usize, b: usize },
    /// Messages between `a` and `b` take up to `max` each.
    Latency { a: usize, b: usize, max: Duration },
    /// Requests `host` sends, or their answers, are lost (per mille).
    Loss { host: usize, per_mille: u32 },
    /// Requests `host` sends are delivered twice (per mille).
    Duplicate { host: usize, per_mille: u32 },
    /// Every commit on the server's disk takes `delay` longer.
    SlowDisk { server: usize, delay: Duration },
    /// The server's issuer takes each new control state `lag` after the
    /// pool applied it, as on a server too busy to follow its log at once.
    /// Drawn by no seed's own schedule, so every seed keeps its story;
    /// plans name it, and [`draw_slow_follow`] adds it over a schedule.
    SlowFollow { server: usize, lag: Duration },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Episode {
    pub start: Duration,
    pub length: Duration,
    pub fault: Fault,
}

impl Episode {
    pub fn end(&self) -> Duration {
        self.start + self.length
    }
}

/// Names for hosts in printed schedules.
pub struct Names<'a> {
    pub servers: &'a [String],
    pub clients: &'a [String],
}

impl Names<'_> {
    pub fn of(&self, host: usize) -> &str {
        if host < self.servers.len() {
            &self.servers[host]
        } else {
            &self.clients[host - self.servers.len()]
        }
    }
}

pub struct Shown<'a>(pub &'a Episode, pub &'a Names<'a>);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Shown(episode, names) = self;
        let n = |host: &usize| names.of(*host).to_string();
        write!(
            f,
            "{:>7.3} s +{:>6.3} s  ",
            episode.start.as_secs_f64(),
            episode.length.as_secs_f64()
        )?;
        match &episode.fault {
            Fault::Crash { server, wipe } => {
                write!(
                    f,
                    "crash {}{}",
                    n(server),
                    if *wipe { ", disk lost" } else { "" }
                )
            }
            Fault::ClientCrash { host } => write!(f, "crash client machine {}", n(host)),
            Fault::Partition { side } => {
                let side: Vec<String> = side.iter().map(n).collect();
                write!(f, "partition {{{}}} from the rest", side.join(", "))
            }
            Fault::OneWay { from, to } => write!(f, "drop {} -> {}", n(from), n(to)),
            Fault::Flap { a, b, period } => {
                write!(
                    f,
                    "flap {} <-> {} every {} ms",
                    n(a),
                    n(b),
                    period.as_millis()
                )
            }
            Fault::Hold { a, b } => write!(f, "hold {} <-> {}, then deliver late", n(a), n(b)),
            Fault::Latency { a, b, max } => {
                write!(
                    f,
                    "latency {} <-> {} up to {} ms",
                    n(a),
                    n(b),
                    max.as_millis()
                )
            }
            Fault::Loss { host, per_mille } => {
                write!(
                    f,
                    "lose {per_mille}/1000 of {}'s requests or answers",
                    n(host)
                )
            }
            Fault::Duplicate { host, per_mille } => {
                write!(f, "duplicate {per_mille}/1000 of {}'s requests", n(host))
            }
            Fault::SlowDisk { server, delay } => {
                write!(
                    f,
                    "slow disk on {}: +{} ms a commit",
                    n(server),
                    delay.as_millis()
                )
            }
            Fault::SlowFollow { server, lag } => {
                write!(
                    f,
                    "{} takes each control state {} ms late",
                    n(server),
                    lag.as_millis()
                )
            }
        }
    }
}

/// Draws the schedule: episodes starting in `[from, from + span)`, each
/// healed by `from + span`, about one every `mean_gap`.
pub fn draw(
    rng: &mut StdRng,
    servers: usize,
    client_hosts: usize,
    from: Duration,
    span: Duration,
    mean_gap: Duration,
) -> Vec<Episode> {
    let mut episodes = Vec::new();
    let end = from + span;
    let mut at = from + jitter(rng, mean_gap);
    let hosts = servers + client_hosts;
    // A pool can lose the disks of fewer than half its servers and go on:
    // the others hold every committed entry. More lost disks stop it for
    // good (a server with a new disk votes only once it has caught up), so
    // a run loses at most that many.
    let wipes_max = (servers - 1) / 2;
    let mut wipes = 0;
    while at < end {
        let left = end - at;
        let length = Duration::from_millis(rng.gen_range(300..=8_000)).min(left);
        let server = rng.gen_range(0..servers);
        let other = |rng: &mut StdRng, not: usize| loop {
            let pick = rng.gen_range(0..hosts);
            if pick != not {
                return pick;
            }
        };
        let fault = match rng.gen_range(0..100) {
            0..=21 => {
                let wipe = rng.gen_bool(0.1) && wipes < wipes_max;
                wipes += usize::from(wipe);
                Fault::Crash { server, wipe }
            }
            22..=27 => Fault::ClientCrash {
                host: servers + rng.gen_range(0..client_hosts),
            },
            28..=47 => {
                // A minority or a majority of the servers, and some clients.
                let mut ids: Vec<usize> = (0..servers).collect();
                ids.shuffle(rng);
                let mut side: Vec<usize> = ids[..rng.gen_range(1..servers)].to_vec();
                for host in servers..hosts {
                    if rng.gen_bool(0.3) {
                        side.push(host);
                    }
                }
                side.sort_unstable();
                Fault::Partition { side }
            }
            48..=55 => Fault::OneWay {
                from: server,
                to: other(rng, server),
            },
            56..=63 => Fault::Flap {
                a: server,
                b: other(rng, server),
                period: Duration::from_millis(rng.gen_range(50..=1_500)),
            },
            64..=71 => Fault::Hold {
                a: server,
                b: other(rng, server),
            },
            72..=79 => Fault::Latency {
                a: server,
                b: other(rng, server),
                max: Duration::from_millis(rng.gen_range(20..=600)),
            },
            80..=87 => Fault::Loss {
                host: rng.gen_range(0..hosts),
                per_mille: rng.gen_range(20..=400),
            },
            88..=93 => Fault::Duplicate {
                host: rng.gen_range(0..hosts),
                per_mille: rng.gen_range(50..=500),
            },
            _ => Fault::SlowDisk {
                server,
                delay: Duration::from_millis(rng.gen_range(5..=400)),
            },
        };
        episodes.push(Episode {
            start: at,
            length,
            fault,
        });
        at += jitter(rng, mean_gap);
    }
    episodes
}

/// Slow-follow episodes to lay over a seed's own schedule: from `from` for
/// `span`, about one every 2 s, each on a random server for 0.5 to 5 s,
/// the issuer taking each control state 20 to 1,500 ms late (the chaos
/// test's own range, and beyond a quota report's interval).
pub fn draw_slow_follow(
    rng: &mut StdRng,
    servers: usize,
    from: Duration,
    span: Duration,
) -> Vec<Episode> {
    let mut episodes = Vec::new();
    let end = from + span;
    let mut at = from + jitter(rng, SLOW_FOLLOW_GAP);
    while at < end {
        let length = Duration::from_millis(rng.gen_range(500..=5_000)).min(end - at);
        episodes.push(Episode {
            start: at,
            length,
            fault: Fault::SlowFollow {
                server: rng.gen_range(0..servers),
                lag: Duration::from_millis(rng.gen_range(20..=1_500)),
            },
        });
        at += jitter(rng, SLOW_FOLLOW_GAP);
    }
    episodes
}

/// Mean time between the starts of two slow-follow episodes.
const SLOW_FOLLOW_GAP: Duration = Duration::from_secs(2);

fn jitter(rng: &mut StdRng, mean: Duration) -> Duration {
    let ms = mean.as_millis() as u64;
    Duration::from_millis(rng.gen_range(ms / 4..=ms * 7 / 4).max(1))
}
