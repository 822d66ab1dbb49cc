//! Valid inputs the fuzz targets start from: one or more of every kind a
//! server reads, shaped as the in-process pool of one would take them.

use std::collections::{BTreeMap, BTreeSet};

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta,
    StoredMembership, Vote,
};
use serde_json::{json, Value};
use tessera_core::{BorrowSource, ControlCommand, ControlOutcome, ControlState};
use tessera_fuzz::server::{self, CODE_ID, FEATURE, SERVER_ID};
use tessera_server::pool::types::{node_id, TypeConfig};

/// A pool file of the pool of one (any address; sequence 2), with a
/// distribution and a borrowing section, and one with two servers.
pub fn pool_files() -> Vec<String> {
    let key = server::vendor_key();
    let codes = server::license_text(&key, &[(CODE_ID, FEATURE, 5), ("acme-sim", "sim", 3)]);
    let address = "127.0.0.1:9".parse().unwrap();
    let plain = server::pool_text(2, &address, &codes);
    let sections = plain.replacen(
        "\n[[license]]",
        "\n[distribution.cad]\nA = 4\n\n[borrowing.cad]\nthreshold_percent = 90\nbatch = 2\n\n[[license]]",
        1,
    );
    let two = plain.replacen(
        "\n[[license]]",
        "\n[[servers]]\nid = \"B\"\naddress = \"127.0.0.1:10\"\n\n[[license]]",
        1,
    );
    vec![plain, sections, two]
}

/// The pool files of [`pool_files`] that keep the pool of one: a file
/// adding a server commits, and then every later commit waits for that
/// server, which never comes; a fuzz target would spend its time waiting.
pub fn pool_files_of_one() -> Vec<String> {
    pool_files()
        .into_iter()
        .filter(|text| text.matches("[[servers]]").count() == 1)
        .collect()
}

/// Files of signed `[[license]]` tables.
pub fn license_files() -> Vec<String> {
    let key = server::vendor_key();
    vec![
        server::license_text(&key, &[("acme-cad-2", FEATURE, 3)]),
        server::license_text(
            &key,
            &[("acme-cam", "cam", 2), ("acme-cam-2", "cam", 1_000)],
        ),
    ]
}

/// Unsigned `[[license]]` tables, as a vendor writes them.
pub fn unsigned_files() -> Vec<String> {
    vec![
        "[[license]]\nfeature = \"cad\"\nseats = 25\nexpiry = \"2027-12-31\"\n".into(),
        "[[license]]\nid = \"x\"\nfeature = \"cad\"\nseats = 1\nversion_min = \"1.0\"\n\
         version_max = \"2.99\"\nissued = \"2026-01-01\"\nexpiry = \"permanent\"\n\
         hostid = \"mid-0123456789abcdef\"\nborrow_threshold_percent = 80\n\
         heartbeat_interval_s = 10\nlease_s = 30\n"
            .into(),
    ]
}

/// Server configs (`tessera.toml`).
pub fn configs() -> Vec<String> {
    vec![
        "server_id = \"A\"\npool_file = \"pool.toml\"\ndata_dir = \"data\"\n\
         pool_key_file = \"pool.key\"\n"
            .into(),
        "server_id = \"A\"\npool_file = \"p.toml\"\ndata_dir = \"d\"\nlisten = \"0.0.0.0:27000\"\n\
         pool_key_file = \"pool.key\"\ngrace_on_missing_store = false\n\
         [[vendors]]\nname = \"acme\"\npublic_key = \"6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw=\"\n\
         [limits]\ngrants_max = 10\n[timing]\nclock_drift_percent = 2\nquota_lease_ms = 3000\n\
         [borrowing.cad]\nthreshold_percent = 90\n\
         [security]\nplain_http = true\npublic_status = \"full\"\n"
            .into(),
    ]
}

/// Control states as snapshots carry them: applied from the pool files,
/// with a request pending.
pub fn control_states() -> Vec<ControlState> {
    let mut states = Vec::new();
    for text in pool_files() {
        let mut state = ControlState::default();
        let outcome = state.apply(&ControlCommand::InstallPoolFile { text });
        assert!(
            matches!(outcome, ControlOutcome::Installed { .. }),
            "{outcome:?}"
        );
        states.push(state);
    }
    let mut asked = states[2].clone();
    asked.apply(&ControlCommand::RequestRelease {
        feature: FEATURE.into(),
        donor: "A".into(),
        recipient: "B".into(),
        seats: 1,
    });
    states.push(asked);
    states
}

pub fn checkouts() -> Vec<Value> {
    vec![
        json!({"client_id": "fuzz", "user": "u", "host": "h", "feature": FEATURE,
               "version": "1.0", "count": 1}),
        json!({"client_id": "fuzz-2", "user": "u", "host": "h", "feature": FEATURE,
               "version": "2.5", "count": 2, "answer_within_ms": 500}),
    ]
}

pub fn heartbeats(grant_id: &str) -> Vec<Value> {
    checkouts()
        .into_iter()
        .map(|mut body| {
            body["grant_id"] = grant_id.into();
            body["renewal"] = 3.into();
            body
        })
        .collect()
}

pub fn checkins(grant_id: &str) -> Vec<Value> {
    vec![json!({"grant_id": grant_id, "client_id": "fuzz"})]
}

pub fn distributions() -> Vec<Value> {
    vec![
        json!({"feature": FEATURE, "servers": {SERVER_ID: 3}}),
        json!({"feature": FEATURE, "servers": {SERVER_ID: 5}, "expected_sequence": 1}),
    ]
}

pub fn add_licenses() -> Vec<Value> {
    vec![
        json!({"text": "", "server": SERVER_ID}),
        json!({"text": "", "expected_sequence": 1}),
    ]
}

pub fn remove_licenses() -> Vec<Value> {
    vec![
        json!({"id": CODE_ID}),
        json!({"id": "acme-cad-2", "expected_sequence": 2, "force": true}),
    ]
}

pub fn reports() -> Vec<Value> {
    vec![
        json!({"server_id": SERVER_ID, "in_use": {FEATURE: 1}}),
        json!({"server_id": SERVER_ID, "in_use": {FEATURE: 2, "sim": 0},
               "superseded": [{"grant_id": "g", "renewal": 3},
                              {"grant_id": "h", "renewal": u64::MAX}]}),
    ]
}

pub fn borrows() -> Vec<Value> {
    vec![
        json!({"server_id": SERVER_ID, "feature": FEATURE, "seats": 1}),
        json!({"server_id": SERVER_ID, "feature": FEATURE, "seats": 3, "ahead": true,
               "needed": 2}),
    ]
}

pub fn pool_file_updates() -> Vec<Value> {
    vec![json!({"text": ""})]
}

pub fn peer_commands() -> Vec<Value> {
    let commands = [
        ControlCommand::Drain {
            feature: FEATURE.into(),
            server: SERVER_ID.into(),
            seats: 1,
            allocation_before: 5,
            target_before: 4,
            loosened_before: 0,
        },
        ControlCommand::Release {
            feature: FEATURE.into(),
            request_id: 0,
            seats: 1,
            allocation_before: 5,
            loosened_before: 0,
        },
        ControlCommand::Borrow {
            feature: FEATURE.into(),
            recipient: SERVER_ID.into(),
            source: BorrowSource::Parked("B".into()),
            seats: 1,
        },
    ];
    commands
        .into_iter()
        .map(|command| json!({"server_id": SERVER_ID, "command": command}))
        .collect()
}

/// The Raft node id of a leader that does not exist.
pub fn stranger() -> u64 {
    node_id("Z")
}

fn log_id(term: u64, node: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

fn membership() -> Membership<u64, BasicNode> {
    let own = node_id(SERVER_ID);
    Membership::new(
        vec![BTreeSet::from([own])],
        BTreeMap::from([(own, BasicNode::new("127.0.0.1:9"))]),
    )
}

pub fn appends() -> Vec<Value> {
    let own = node_id(SERVER_ID);
    let stranger = stranger();
    let heartbeat: AppendEntriesRequest<TypeConfig> = AppendEntriesRequest {
        vote: Vote::new_committed(7, stranger),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    };
    let entries: AppendEntriesRequest<TypeConfig> = AppendEntriesRequest {
        vote: Vote::new_committed(2, stranger),
        prev_log_id: Some(log_id(1, own, 2)),
        entries: vec![
            Entry {
                log_id: log_id(1, own, 3),
                payload: EntryPayload::Normal(ControlCommand::CancelRelease {
                    feature: FEATURE.into(),
                    request_id: 0,
                }),
            },
            Entry {
                log_id: log_id(1, own, 4),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(1, own, 5),
                payload: EntryPayload::Membership(membership()),
            },
        ],
        leader_commit: Some(log_id(1, own, 2)),
    };
    let stale: AppendEntriesRequest<TypeConfig> = AppendEntriesRequest {
        vote: Vote::new_committed(0, stranger),
        prev_log_id: Some(log_id(0, stranger, 0)),
        entries: vec![],
        leader_commit: Some(log_id(0, stranger, 0)),
    };
    let mut own_name = entries.clone();
    own_name.vote = Vote::new_committed(1, own);
    [heartbeat, entries, stale, own_name]
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect()
}

pub fn votes() -> Vec<Value> {
    let requests = [
        VoteRequest {
            vote: Vote::new(7, stranger()),
            last_log_id: Some(log_id(7, stranger(), 100)),
        },
        VoteRequest {
            vote: Vote::new(1, node_id(SERVER_ID)),
            last_log_id: None,
        },
        VoteRequest {
            vote: Vote::new(2, node_id("B")),
            last_log_id: Some(log_id(1, node_id(SERVER_ID), 2)),
        },
    ];
    requests
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect()
}

/// A snapshot's chunk holding the whole of `state`.
pub fn snapshot(term: u64, state: &ControlState) -> Value {
    let request: InstallSnapshotRequest<TypeConfig> = InstallSnapshotRequest {
        vote: Vote::new_committed(term, stranger()),
        meta: SnapshotMeta {
            last_log_id: Some(log_id(term, stranger(), 50)),
            last_membership: StoredMembership::new(
                Some(log_id(1, node_id(SERVER_ID), 0)),
                membership(),
            ),
            snapshot_id: format!("fuzz-{term}"),
        },
        offset: 0,
        data: serde_json::to_vec(state).unwrap(),
        done: true,
    };
    serde_json::to_value(request).unwrap()
}
