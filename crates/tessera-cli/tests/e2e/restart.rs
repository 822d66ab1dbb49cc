//! Restarts: `kill -9` under load loses no acknowledged grant and never lets
//! the seats in use pass the hard limit; a damaged store or grant journal
//! stops the server with advice instead of being overwritten.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::fixture::{
    checkout_body, heartbeat_body, in_use, tessera_within, Fixture, Renewal, Server, ServerSpec,
    StartMode,
};

const HARD_LIMIT: u32 = 50;
/// Concurrent clients of the load.
const LOAD_TASKS: usize = 12;
/// Grants one client holds at most; more than the limit in all, so some
/// checkouts are denied.
const HELD_PER_TASK_MAX: usize = 4;
/// Acknowledged checkouts before the kill.
const CHECKOUTS_BEFORE_KILL: u32 = 200;
/// Longest the load may take to get that far, and most requests per client.
const LOAD_TIMEOUT: Duration = Duration::from_secs(20);
const REQUESTS_PER_TASK_MAX: u32 = 20_000;

/// What the load's clients know for sure, kept as they go.
#[derive(Default)]
struct Ledger {
    /// Grants the server acknowledged and no check-in was sent for: grant id
    /// to (client id, seats, proof). Each must survive the kill.
    held: Mutex<HashMap<String, (String, u32, String)>>,
    /// Seats of `held`, which the clients hold at once.
    seats_held: AtomicU32,
    checkouts: AtomicU32,
    denials: AtomicU32,
    /// Set just before the kill: errors after it are expected.
    killed: AtomicBool,
    /// What went wrong before the kill; each is a test failure.
    faults: Mutex<Vec<String>>,
}

impl Ledger {
    fn acquired(&self, grant_id: String, client_id: &str, count: u32, proof: String) {
        let before = self.seats_held.fetch_add(count, Ordering::SeqCst);
        if before + count > HARD_LIMIT {
            self.fault(format!(
                "clients hold {} seats at once, above the hard limit {HARD_LIMIT}",
                before + count
            ));
        }
        self.checkouts.fetch_add(1, Ordering::SeqCst);
        self.held
            .lock()
            .unwrap()
            .insert(grant_id, (client_id.to_string(), count, proof));
    }

    /// Called before the check-in is sent: from then on the grant may be gone.
    fn releasing(&self, grant_id: &str, count: u32) {
        self.held.lock().unwrap().remove(grant_id);
        self.seats_held.fetch_sub(count, Ordering::SeqCst);
    }

    fn fault(&self, text: String) {
        self.faults.lock().unwrap().push(text);
    }

    fn faults(&self) -> Vec<String> {
        self.faults.lock().unwrap().clone()
    }
}

async fn post(
    http: &tessera_testkit::Http,
    address: &str,
    path: &str,
    body: &Value,
) -> Result<(u16, Value), reqwest::Error> {
    let response = http.post(address, path).json(body).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

/// One client: checks out 1 to 3 seats at a time, holds up to
/// [`HELD_PER_TASK_MAX`] grants, checks the oldest in when it holds that many
/// or is denied. Stops at the first request the killed server drops.
async fn load_client(
    http: tessera_testkit::Http,
    address: String,
    ledger: Arc<Ledger>,
    task: usize,
) {
    let client_id = format!("load-{task}");
    let mut mine: VecDeque<(String, u32, String)> = VecDeque::new();
    let mut check_in_next = false;
    for round in 0..REQUESTS_PER_TASK_MAX {
        if ledger.killed.load(Ordering::SeqCst) {
            return;
        }
        if check_in_next || mine.len() >= HELD_PER_TASK_MAX {
            check_in_next = false;
            let Some((grant_id, count, proof)) = mine.pop_front() else {
                continue;
            };
            ledger.releasing(&grant_id, count);
            let body =
                serde_json::json!({"grant_id": grant_id, "client_id": client_id, "proof": proof});
            match post(&http, &address, "/v1/checkin", &body).await {
                Ok((200, answer)) if answer["released_seats"].as_u64() == Some(count.into()) => {}
                Ok(other) => ledger.fault(format!("check-in of {grant_id}: {other:?}")),
                Err(_) if ledger.killed.load(Ordering::SeqCst) => return,
                Err(err) => return ledger.fault(format!("check-in of {grant_id}: {err}")),
            }
            continue;
        }
        let count = 1 + round % 3;
        let body = checkout_body(&client_id, "cad", count);
        match post(&http, &address, "/v1/checkout", &body).await {
            Ok((200, grant)) => {
                let grant_id = grant["grant_id"].as_str().unwrap_or_default().to_string();
                let proof = grant["proof"].as_str().unwrap_or_default().to_string();
                ledger.acquired(grant_id.clone(), &client_id, count, proof.clone());
                mine.push_back((grant_id, count, proof));
            }
            Ok((409, answer)) if answer["error"]["code"] == "no_seats_available" => {
                ledger.denials.fetch_add(1, Ordering::SeqCst);
                check_in_next = true;
            }
            Ok(other) => ledger.fault(format!("checkout: {other:?}")),
            Err(_) if ledger.killed.load(Ordering::SeqCst) => return,
            Err(err) => return ledger.fault(format!("checkout: {err}")),
        }
    }
}

/// Checks out one seat at a time until denied; returns the grant ids.
async fn fill(server: &Server, client_id: &str) -> Vec<String> {
    let mut grant_ids = Vec::new();
    for _ in 0..=HARD_LIMIT {
        let answer = server
            .post("/v1/checkout", &checkout_body(client_id, "cad", 1))
            .await;
        if answer.status != 200 {
            answer.refused(409, "no_seats_available");
            return grant_ids;
        }
        grant_ids.push(answer.body["grant_id"].as_str().unwrap().to_string());
    }
    panic!(
        "{} checkouts of one seat succeeded; the hard limit is {HARD_LIMIT}",
        grant_ids.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_then_restart_keeps_every_grant_and_the_hard_limit() {
    let fixture = Fixture::new().await;
    // The long lease: nothing lapses while the test counts.
    let unsigned = crate::fixture::code("cad", HARD_LIMIT);
    let mut server = fixture.server(ServerSpec::new(fixture.sign(&unsigned).await));
    server.start(StartMode::NewPool).await;
    server.wait_state("serving").await;

    let ledger = Arc::new(Ledger::default());
    let tasks: Vec<_> = (0..LOAD_TASKS)
        .map(|task| {
            let http = server.http.clone();
            tokio::spawn(load_client(
                http,
                server.address.clone(),
                ledger.clone(),
                task,
            ))
        })
        .collect();
    let started = Instant::now();
    while ledger.checkouts.load(Ordering::SeqCst) < CHECKOUTS_BEFORE_KILL
        || ledger.denials.load(Ordering::SeqCst) == 0
    {
        assert!(
            started.elapsed() < LOAD_TIMEOUT && tasks.iter().any(|t| !t.is_finished()),
            "the load did not reach {CHECKOUTS_BEFORE_KILL} checkouts and a denial within \
             {LOAD_TIMEOUT:?} ({} checkouts, {} denials); faults: {:?}",
            ledger.checkouts.load(Ordering::SeqCst),
            ledger.denials.load(Ordering::SeqCst),
            ledger.faults()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ledger.killed.store(true, Ordering::SeqCst);
    server.kill();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("a load client did not stop after the kill")
            .expect("a load client panicked");
    }
    assert_eq!(
        ledger.faults(),
        Vec::<String>::new(),
        "faults before the kill"
    );
    let held = ledger.held.lock().unwrap().clone();
    assert!(!held.is_empty(), "the clients held nothing at the kill");

    // The store exists, so no --new-pool and no grace period.
    server.start(StartMode::Plain).await;
    let status = server.wait_state("serving").await;
    let restored: HashMap<&str, u32> = status
        .grants
        .iter()
        .map(|g| (g.grant_id.as_str(), g.count))
        .collect();
    assert_eq!(status.grants_total, restored.len() as u64, "{status:#?}");
    let lost: Vec<&String> = held
        .keys()
        .filter(|id| !restored.contains_key(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged grants were lost in the kill: {lost:?}",
        lost.len(),
        held.len()
    );
    for (grant_id, (_, count, _)) in &held {
        assert_eq!(restored[grant_id.as_str()], *count, "grant {grant_id}");
    }
    // Grants checked in or unanswered just before the kill may be back too,
    // held until they lapse: they take seats, but the table never counts
    // more than the limit.
    let restored_seats: u32 = restored.values().sum();
    assert!(in_use(&status, "cad") <= HARD_LIMIT, "{status:#?}");

    // A restored grant is renewed by its holder, not converted.
    let (grant_id, (client_id, count, proof)) = held.iter().next().expect("checked above");
    server
        .renews(
            &heartbeat_body(grant_id, client_id, "cad", *count, proof),
            Renewal::Renewed,
        )
        .await;

    // New checkouts fill exactly what the restored grants left, then are denied.
    let filled = fill(&server, "after-restart").await;
    assert_eq!(
        filled.len() as u32,
        HARD_LIMIT.saturating_sub(restored_seats),
        "seats taken after the restart, with {restored_seats} seats restored"
    );
    let status = server.status().await;
    assert!(in_use(&status, "cad") <= HARD_LIMIT, "{status:#?}");

    // A clean stop (SIGTERM) and start keeps them as well.
    let exit = server.terminate().await;
    assert!(exit.success(), "SIGTERM: the server exited with {exit}");
    server.start(StartMode::Plain).await;
    let status = server.wait_state("serving").await;
    let kept: HashSet<&str> = status.grants.iter().map(|g| g.grant_id.as_str()).collect();
    for grant_id in filled.iter().chain(held.keys()) {
        assert!(
            kept.contains(grant_id.as_str()),
            "grant {grant_id} lost in a clean restart"
        );
    }
    assert!(in_use(&status, "cad") <= HARD_LIMIT, "{status:#?}");
    server
        .post(
            "/v1/checkout",
            &checkout_body("after-clean-restart", "cad", 1),
        )
        .await
        .refused(409, "no_seats_available");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_stops_the_server_with_advice_and_is_left_alone() {
    let fixture = Fixture::new().await;
    let server = fixture.server(ServerSpec::new(
        fixture.sign(&crate::fixture::code("cad", 3)).await,
    ));
    std::fs::create_dir_all(&server.data_dir).unwrap();
    let store = server.data_dir.join("grants.redb");
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 0x5a) as u8).collect();
    std::fs::write(&store, &garbage).unwrap();

    let config = server.config.to_str().unwrap();
    let output = tessera_within(
        Duration::from_secs(15),
        ["server", "--config", config, "--new-pool"],
    )
    .await
    .failure();
    output.mentions(&["grants.redb", "move it away"]);
    assert_eq!(
        std::fs::read(&store).unwrap(),
        garbage,
        "the server changed the damaged store"
    );
}

/// The grant journal's segments in name (sequence) order.
fn journal_segments(data_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut segments: Vec<_> = std::fs::read_dir(data_dir.join("journal"))
        .expect("the server keeps a journal folder")
        .map(|entry| entry.unwrap().path())
        .collect();
    segments.sort();
    segments
}

fn segment_number(path: &std::path::Path) -> u64 {
    let stem = path.file_stem().unwrap().to_str().unwrap();
    u64::from_str_radix(stem, 16).unwrap()
}

/// A segment's records as segment `seq` would hold them: each record's
/// checksum covers its segment's number (ARCHITECTURE.md, the grant store).
fn renumbered(segment: &[u8], seq: u64) -> Vec<u8> {
    let mut bytes = segment.to_vec();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&seq.to_le_bytes());
        crc.update(&bytes[at..at + 4]);
        crc.update(&bytes[at + 8..at + 8 + len]);
        bytes[at + 4..at + 8].copy_from_slice(&crc.finalize().to_le_bytes());
        at += 8 + len;
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_journal_with_later_grants_stops_the_server_with_advice_and_is_left_alone() {
    let fixture = Fixture::new().await;
    let mut server = fixture.server(ServerSpec::new(
        fixture.sign(&crate::fixture::code("cad", 3)).await,
    ));
    server.start(StartMode::NewPool).await;
    server.wait_state("serving").await;
    assert_eq!(fill(&server, "journal").await.len(), 3);
    server.kill();

    // The grants are in the segment being written; a zero-filled one waits
    // after it. A copy of the first as the second is "later grants"; then
    // the first's first record is damaged. Replay cannot skip it: the grants
    // after it were acknowledged.
    let segments = journal_segments(&server.data_dir);
    let written = segments
        .iter()
        .position(|path| std::fs::read(path).unwrap()[..4] != [0; 4])
        .expect("a segment holds the three grants");
    let later = segments
        .get(written + 1)
        .expect("a segment is made ahead of the one being written");
    let mut bytes = std::fs::read(&segments[written]).unwrap();
    std::fs::write(later, renumbered(&bytes, segment_number(later))).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&segments[written], &bytes).unwrap();
    let before: Vec<Vec<u8>> = segments.iter().map(|p| std::fs::read(p).unwrap()).collect();

    let config = server.config.to_str().unwrap().to_string();
    let output = tessera_within(Duration::from_secs(15), ["server", "--config", &config])
        .await
        .failure();
    output.mentions(&["grant journal is damaged", "checksum", "move grants.redb"]);
    let after: Vec<Vec<u8>> = journal_segments(&server.data_dir)
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(before == after, "the server changed the damaged journal");
}
