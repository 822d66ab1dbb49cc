//! The attacks of the security review, each driven against a real server in
//! this process. Each worked before its fix: the test fails without it.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tessera_core::ControlState;
use tessera_fuzz::server::{silent_peer_headers, InProcess, Listen, Members, FEATURE};
use tessera_proto::{ErrorCode, BODY_READ_TIMEOUT_MS, RAFT_INDEX_MAX, RAFT_TERM_MAX};

use crate::seeds;

fn refused(answer: &tessera_fuzz::server::Answer, code: ErrorCode, words: &str) {
    let error = answer.error().unwrap_or_else(|| {
        panic!(
            "expected a refusal, got {} {}",
            answer.status,
            answer.text()
        )
    });
    assert_eq!(
        (answer.status, error.error.code),
        (code.http_status(), code),
        "{}",
        answer.text()
    );
    assert!(
        error.error.message.contains(words),
        "`{}` should say `{words}`",
        error.error.message
    );
}

/// The server leads and commits: an administrator's change goes through.
fn leads_and_commits(server: &InProcess, seats: u32) {
    server.wait_until("it leads", |s| s.server.role == "leader");
    let change = json!({"feature": FEATURE, "servers": {"A": seats}});
    let answer = server.post_json("/v1/admin/distribution", &change);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(server.panics(), Vec::<String>::new());
}

/// One append naming term 2^64 - 1 made openraft adopt and persist that
/// vote, then panic on `term + 1` at its next election: the server never
/// led again. Terms and indexes above 2^62 are refused before Raft sees
/// them, in appends, votes and snapshots.
#[test]
fn raft_terms_and_indexes_beyond_the_limit_are_refused_and_the_server_still_leads() {
    let server = InProcess::start(Listen::Memory);
    let mut append = seeds::appends()[0].clone();
    append["vote"]["leader_id"]["term"] = u64::MAX.into();
    let mut vote = seeds::votes()[0].clone();
    vote["vote"]["leader_id"]["term"] = (RAFT_TERM_MAX + 1).into();
    let mut index = seeds::appends()[1].clone();
    index["entries"][0]["log_id"]["index"] = u64::MAX.into();
    let mut snapshot = seeds::snapshot(7, &ControlState::default());
    snapshot["meta"]["last_log_id"]["index"] = (RAFT_INDEX_MAX + 1).into();
    let attacks = [
        ("/v1/peer/raft/append", append, "term 18446744073709551615"),
        ("/v1/peer/raft/vote", vote, "term 4611686018427387905"),
        (
            "/v1/peer/raft/append",
            index,
            "log index 18446744073709551615",
        ),
        (
            "/v1/peer/raft/snapshot",
            snapshot,
            "log index 4611686018427387905",
        ),
    ];
    for (path, body, words) in attacks {
        let answer = server.post_json(path, &body);
        refused(&answer, ErrorCode::RaftOutOfRange, words);
        let status = server.status();
        assert_eq!(status.server.role, "leader", "after {path}: {status:#?}");
    }
    leads_and_commits(&server, 4);
    // At the limit itself, a message is Raft's to judge, but only from the
    // server it names: the pool's own server speaking for a candidate `B`
    // is refused before Raft sees it, and the server still leads.
    let mut vote = seeds::votes()[0].clone();
    vote["vote"]["leader_id"]["term"] = (RAFT_TERM_MAX - 10).into();
    let answer = server.post_json("/v1/peer/raft/vote", &vote);
    refused(&answer, ErrorCode::Forbidden, "only in its own name");
    leads_and_commits(&server, 3);
}

/// A leader's snapshot that breaks the control state's invariants (here:
/// one seat more in the free pool than the codes carry) was installed as it
/// came. From anyone but the member it names as leader it is refused before
/// it is read; from that member (here the silent `Z` of a pool of two, whose
/// credential the test holds) it is checked whole, refused, and nothing of
/// it installed; a sound one, in chunks, still is.
#[test]
fn a_snapshot_that_breaks_the_invariants_is_refused_and_a_sound_one_installs() {
    let server = InProcess::start_with(Listen::Memory, Members::WithSilentPeer);
    let mut state = ControlState::default();
    state.apply(&tessera_core::ControlCommand::InstallPoolFile {
        text: server.pool_text.replace("sequence = 2", "sequence = 9"),
    });
    let mut broken = serde_json::to_value(&state).unwrap();
    let free_pool = broken["allocations"][FEATURE]["free_pool"]
        .as_u64()
        .unwrap();
    broken["allocations"][FEATURE]["free_pool"] = (free_pool + 1).into();
    // Far above any term the lone server reaches while it stands for election.
    let term = 1_000_000;
    let mut request = seeds::snapshot(term, &state);
    request["data"] = serde_json::to_value(serde_json::to_vec(&broken).unwrap()).unwrap();
    // Sent by `A`'s credential in `Z`'s name: refused before it is read.
    let answer = server.post_json("/v1/peer/raft/snapshot", &request);
    refused(&answer, ErrorCode::Forbidden, "only in its own name");
    let as_z = |body: &Value| {
        let mut headers = vec![("content-type", "application/json")];
        headers.extend(silent_peer_headers());
        server
            .request(
                "POST",
                "/v1/peer/raft/snapshot",
                &headers,
                serde_json::to_vec(body).unwrap(),
            )
            .unwrap()
    };
    let answer = as_z(&request);
    refused(&answer, ErrorCode::SnapshotRefused, "add to 6, not 5");
    let mut not_a_state = seeds::snapshot(term, &state);
    not_a_state["data"] = serde_json::to_value(b"{\"pool_text\": 1}".to_vec()).unwrap();
    let answer = as_z(&not_a_state);
    refused(&answer, ErrorCode::SnapshotRefused, "not a control state");
    assert_ne!(server.status().pool_sequence, 9, "nothing was installed");

    // A sound snapshot, in three chunks, with a chunk sent twice (a retry)
    // and one that skips ahead (refused by Raft's rules).
    let whole = seeds::snapshot(term + 1, &state);
    let data: Vec<u8> = serde_json::from_value(whole["data"].clone()).unwrap();
    let third = data.len() / 3;
    let chunk = |from: usize, to: usize, done: bool| {
        let mut request = whole.clone();
        request["offset"] = from.into();
        request["data"] = serde_json::to_value(&data[from..to]).unwrap();
        request["done"] = done.into();
        request
    };
    let sent = [
        chunk(0, third, false),
        chunk(0, third, false),
        chunk(third, 2 * third, false),
    ];
    for request in sent {
        let answer = as_z(&request);
        assert_eq!(answer.status, 200, "{}", answer.text());
        let result: Value = serde_json::from_slice(&answer.body).unwrap();
        assert!(result.get("Ok").is_some(), "{result}");
    }
    let gap = as_z(&chunk(3 * third, data.len(), true));
    assert!(gap.text().contains("SnapshotMismatch"), "{}", gap.text());
    let last = as_z(&chunk(2 * third, data.len(), true));
    assert_eq!(last.status, 200, "{}", last.text());
    server.wait_until("the snapshot's pool file", |s| s.pool_sequence == 9);
    assert_eq!(server.panics(), Vec::<String>::new());
}

/// Unknown fields were ignored on admin and peer requests (a typo, or a
/// field a newer client relies on, passed silently). Every request type the
/// server reads refuses them with `malformed_request` naming the field:
/// client, admin and peer ones. (openraft's own message types cannot be
/// changed; a command inside an append is Tessera's and refuses them.)
#[test]
fn unknown_fields_are_refused_on_every_request() {
    let server = InProcess::start(Listen::Memory);
    let grant: Value = serde_json::from_slice(
        &server
            .post_json("/v1/checkout", &seeds::checkouts()[0])
            .body,
    )
    .unwrap();
    let grant_id = grant["grant_id"].as_str().unwrap();
    let mut command = seeds::peer_commands()[0].clone();
    command["command"]["Drain"]["sneaky"] = true.into();
    let mut append = seeds::appends()[1].clone();
    append["entries"][0]["payload"]["Normal"]["CancelRelease"]["sneaky"] = true.into();
    let with_sneaky = |mut body: Value| {
        body["sneaky"] = true.into();
        body
    };
    let cases = [
        ("/v1/checkout", with_sneaky(seeds::checkouts()[0].clone())),
        ("/v1/noop", with_sneaky(seeds::checkouts()[0].clone())),
        (
            "/v1/heartbeat",
            with_sneaky(seeds::heartbeats(grant_id)[0].clone()),
        ),
        (
            "/v1/checkin",
            with_sneaky(seeds::checkins(grant_id)[0].clone()),
        ),
        (
            "/v1/admin/pool-file",
            with_sneaky(json!({"text": server.pool_text})),
        ),
        (
            "/v1/admin/distribution",
            with_sneaky(seeds::distributions()[0].clone()),
        ),
        (
            "/v1/admin/license",
            with_sneaky(seeds::add_licenses()[0].clone()),
        ),
        (
            "/v1/admin/license/remove",
            with_sneaky(seeds::remove_licenses()[0].clone()),
        ),
        ("/v1/peer/report", with_sneaky(seeds::reports()[0].clone())),
        ("/v1/peer/borrow", with_sneaky(seeds::borrows()[0].clone())),
        (
            "/v1/peer/first-pool-file",
            with_sneaky(json!({"text": server.pool_text})),
        ),
        (
            "/v1/peer/command",
            with_sneaky(seeds::peer_commands()[0].clone()),
        ),
        ("/v1/peer/command", command),
        ("/v1/peer/raft/append", append),
    ];
    for (path, body) in cases {
        let answer = server.post_json(path, &body);
        refused(
            &answer,
            ErrorCode::MalformedRequest,
            "unknown field `sneaky`",
        );
    }
    let status = server.status();
    assert_eq!(
        (status.pool_sequence, status.server.role.as_str()),
        (1, "leader")
    );
}

/// A pool file at sequence 2^63 - 1 (the largest TOML integer) was
/// installed; every later admin change then panicked making the next file,
/// and the pool stayed frozen across restarts. Sequences above 2^53 are
/// refused, and a pool at 2^53 refuses further changes with a reason.
#[test]
fn a_pool_file_sequence_beyond_the_limit_is_refused_and_changes_go_on() {
    let server = InProcess::start(Listen::Memory);
    let at = |sequence: u64| json!({"text": server.pool_text.replace("sequence = 1", &format!("sequence = {sequence}"))});
    let answer = server.post_json("/v1/admin/pool-file", &at(i64::MAX as u64));
    refused(
        &answer,
        ErrorCode::PoolFileRefused,
        "above the limit 9007199254740992",
    );
    leads_and_commits(&server, 4);
    let last = tessera_core::pool_file::SEQUENCE_MAX;
    let answer = server.post_json("/v1/admin/pool-file", &at(last));
    assert_eq!(answer.status, 200, "{}", answer.text());
    let change = json!({"feature": FEATURE, "servers": {"A": 3}});
    let answer = server.post_json("/v1/admin/distribution", &change);
    refused(&answer, ErrorCode::PoolFileRefused, "no change can follow");
    let status = server.status();
    assert_eq!(
        (status.pool_sequence, status.server.state.as_str()),
        (last, "serving")
    );
    assert_eq!(server.panics(), Vec::<String>::new());
}

/// A client that sends its headers and then trickles its body held a
/// request slot for as long as it liked. The body must arrive within
/// `BODY_READ_TIMEOUT_MS`; after that the request is answered
/// `body_timeout` and the connection closed. Other requests are served
/// meanwhile.
#[test]
fn a_trickled_body_is_cut_off_and_other_requests_are_served_meanwhile() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = InProcess::start(Listen::Tcp);
    let limit = Duration::from_millis(BODY_READ_TIMEOUT_MS);
    let started = Instant::now();
    let mut stream = server
        .block_on(tokio::net::TcpStream::connect(server.address))
        .unwrap();
    let head = format!(
        "POST /v1/checkout HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         content-length: 1000\r\n\r\n{{",
        server.address
    );
    server.block_on(stream.write_all(head.as_bytes())).unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let trickle = server.spawn(async move {
        // One byte every half second: it would take 8 minutes.
        while writer.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    // Meanwhile, the server serves.
    let status = server.status();
    assert_eq!(status.server.state, "serving");
    let checkout = server.post_json("/v1/checkout", &seeds::checkouts()[0]);
    assert_eq!(checkout.status, 200, "{}", checkout.text());

    let mut answer = Vec::new();
    let read = server
        .block_on(async { tokio::time::timeout(limit * 3, reader.read_to_end(&mut answer)).await });
    let waited = started.elapsed();
    trickle.abort();
    assert!(
        read.is_ok(),
        "the connection was not closed within {:?}; read so far: {}",
        limit * 3,
        String::from_utf8_lossy(&answer)
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"body_timeout\""), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(
        waited >= limit,
        "cut off after {waited:?}, before the limit"
    );
    assert_eq!(server.panics(), Vec::<String>::new());
}

// Crashes the fuzz targets found, each kept as a named test.

/// Found by `fuzz_raft_append`: an append naming this server itself as the
/// leader, in its own term, made openraft take it as a follower would while
/// it led, and panic (`assertion failed: self.leader.is_none()`); its Raft
/// stopped. No peer sends a server appends or snapshots in its own name:
/// they are refused before Raft sees them.
#[test]
fn an_append_in_the_servers_own_name_is_refused() {
    let server = InProcess::start(Listen::Memory);
    let own = tessera_server::pool::types::node_id(tessera_fuzz::server::SERVER_ID);
    for term in [1, 2, 3] {
        let mut append = seeds::appends()[1].clone();
        append["vote"]["leader_id"]["term"] = term.into();
        append["vote"]["leader_id"]["node_id"] = own.into();
        let mut snapshot = seeds::snapshot(term, &ControlState::default());
        snapshot["vote"]["leader_id"]["node_id"] = own.into();
        let mut vote = seeds::votes()[1].clone();
        vote["vote"]["leader_id"]["term"] = (term + 1).into();
        for (path, message) in [
            ("/v1/peer/raft/append", &append),
            ("/v1/peer/raft/snapshot", &snapshot),
            ("/v1/peer/raft/vote", &vote),
        ] {
            refused(
                &server.post_json(path, message),
                ErrorCode::MalformedRequest,
                "names this server itself",
            );
        }
    }
    assert_eq!(server.panics(), Vec::<String>::new());
    leads_and_commits(&server, 4);
}

/// Found by `fuzz_peer_endpoints`: a pool file adding a server that is not
/// up was committed, and then the request waited, without end, for the Raft
/// membership change that needs the new server's vote. The answer comes
/// once the file is committed; the membership follows in the background.
#[test]
fn a_pool_file_adding_a_server_that_is_not_up_is_answered() {
    let server = InProcess::start(Listen::Memory);
    let added = server
        .pool_text
        .replacen("sequence = 1", "sequence = 2", 1)
        .replacen(
            "\n[[license]]",
            &format!(
                "\n[[servers]]\nid = \"B\"\naddress = \"127.0.0.1:10\"\ncredential_sha256 = \"{}\"\n\n\
                 [[license]]",
                tessera_core::credential_sha256("a credential of server b, which is not up")
            ),
            1,
        );
    for path in ["/v1/admin/pool-file", "/v1/peer/first-pool-file"] {
        let started = Instant::now();
        let answer = server.post_json(path, &json!({"text": added}));
        let waited = started.elapsed();
        assert!(
            answer.status == 200 || answer.code() == Some(ErrorCode::PoolFileRefused),
            "{path}: {} after {waited:?}",
            answer.text()
        );
    }
    assert_eq!(server.status().pool_sequence, 2);
    assert_eq!(server.panics(), Vec::<String>::new());
}
