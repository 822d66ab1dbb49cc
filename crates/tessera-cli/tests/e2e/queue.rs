//! The pool's queue: programs that wait for seats (`tessera checkout
//! --wait`) are served first come, first served, pool-wide; they see their
//! place; a checkout that does not wait does not jump the queue; and the
//! queue, kept in the pool's log, survives the death of the leader.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::fixture::{checkout_body, code, tessera_exe, Fixture, Server};

/// A waiting `tessera checkout` process, and the lines it printed, each with
/// when it was printed.
struct Waiting {
    child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<(Instant, String)>,
    seen: Vec<(Instant, String)>,
}

impl Waiting {
    /// `tessera checkout cad --wait 60 --hold 1` against `servers`, in order.
    fn start(servers: &[&Server]) -> Waiting {
        let mut args = vec!["checkout", "cad", "--wait", "60", "--hold", "1"];
        for server in servers {
            args.extend(["--server", server.address.as_str()]);
        }
        let ca = servers[0].credentials.ca_file().display().to_string();
        args.extend(["--ca", ca.as_str()]);
        let mut child = tokio::process::Command::new(tessera_exe())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start tessera checkout");
        let (send, lines) = mpsc::unbounded_channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let send = send.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    let _ = send.send((Instant::now(), line));
                }
            });
        }
        Waiting {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits up to `within` for a line containing `part`; returns when it came.
    async fn expect(&mut self, part: &str, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        loop {
            if let Some((at, _)) = self.seen.iter().find(|(_, l)| l.contains(part)) {
                return *at;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.lines.recv()).await {
                Ok(Some(line)) => self.seen.push(line),
                _ => panic!(
                    "no line with {part:?} within {within:?}; printed: {:#?}",
                    self.seen
                ),
            }
        }
    }
}

/// Three programs wait for the one seat of `cad`, in order, each told its
/// place; a checkout that does not wait is refused while they do; the
/// leader is killed while they wait; the holder checks in, and the three
/// are served in the order they came, one after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_served_in_order_through_a_leader_kill() {
    let fixture = Fixture::new().await;
    let codes = fixture.sign(&code("cad", 1)).await;
    let mut servers = fixture.start_pool(&["A", "B", "C"], &codes, &[]).await;
    let leader = servers[1]
        .poll("a leader", Duration::from_secs(15), |s| {
            s.server.leader_id.is_some()
        })
        .await
        .server
        .leader_id
        .unwrap();
    let index = |id: &str| ["A", "B", "C"].iter().position(|s| *s == id).unwrap();
    let l = index(&leader);
    let (f1, f2) = ((l + 1) % 3, (l + 2) % 3);

    // The seat is held on a follower (its holder outlives the leader).
    let held = servers[f1]
        .post("/v1/checkout", &checkout_body("holder", "cad", 1))
        .await
        .ok();

    // Each waiter asks the leader first, then the two followers.
    let order = [&servers[l], &servers[f1], &servers[f2]];
    let mut waiters = Vec::new();
    for (i, expected) in ["1 of 1", "2 of 2", "3 of 3"].iter().enumerate() {
        let mut waiting = Waiting::start(&order);
        waiting
            .expect(
                &format!("waiting for `cad`: {expected}"),
                Duration::from_secs(15),
            )
            .await;
        waiters.push(waiting);
        assert_eq!(waiters.len(), i + 1);
    }
    // Every server has the queue once it applied the log.
    let three = |s: &tessera_proto::StatusResponse| {
        let cad = crate::fixture::feature_of(s, "cad");
        cad.waiters.iter().map(|w| w.position).collect::<Vec<_>>() == [1, 2, 3]
    };
    for i in [f1, f2] {
        servers[i]
            .poll("the three waiters", Duration::from_secs(5), three)
            .await;
    }
    // Not waiting: no jumping the queue, on any server.
    let jumper = servers[f2]
        .post("/v1/checkout", &checkout_body("jumper", "cad", 1))
        .await;
    jumper.refused(409, "no_seats_available");
    assert!(
        jumper
            .message()
            .contains("3 programs wait for seats of `cad` before this one"),
        "{}",
        jumper.message()
    );

    servers[l].kill();
    // The survivors elect a leader; the places are still there.
    servers[f1]
        .poll("a new leader", Duration::from_secs(20), |s| {
            s.server.leader_id.as_deref().is_some_and(|id| id != leader)
        })
        .await;
    let checkin = serde_json::json!({
        "grant_id": held["grant_id"],
        "client_id": "holder",
        "proof": held["proof"],
    });
    servers[f1].post("/v1/checkin", &checkin).await.ok();

    let mut served = Vec::new();
    for waiting in &mut waiters {
        served.push(
            waiting
                .expect("checked out 1 seats of `cad`", Duration::from_secs(30))
                .await,
        );
    }
    assert!(
        served.windows(2).all(|w| w[0] < w[1]),
        "served out of order: {served:?}"
    );
    for waiting in &mut waiters {
        let status = tokio::time::timeout(Duration::from_secs(20), waiting.child.wait())
            .await
            .expect("the checkout ends after its hold")
            .unwrap();
        assert!(status.success(), "{:#?}", waiting.seen);
    }
    let status = servers[f1].status().await;
    assert!(crate::fixture::feature_of(&status, "cad")
        .waiters
        .is_empty());
}
