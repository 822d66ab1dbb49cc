//! The attacks of an outsider on the network, and of a customer who wants
//! more seats than were sold, repeated against a pool set up as the README
//! says (`tessera pool init`, TLS, tokens): every one is refused with a
//! clear error, and the pool is unharmed.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tessera_core::ControlCommand;
use tessera_proto::{StatusResponse, PEER_HEADER, POOL_HEADER};
use tessera_testkit::{Http, Pool, PoolSpec, LOOPBACK_REQUEST_TIMEOUT};

mod mitm;

const TESSERA: &str = env!("CARGO_BIN_EXE_tessera");

/// Two servers, 10 seats split 5 and 5.
async fn start_pool() -> Pool {
    start_pool_with(PoolSpec {
        distribution: "A = 5\nB = 5\n",
        ..PoolSpec::default()
    })
    .await
}

/// Two servers of 10 seats, shaped further by `spec`.
async fn start_pool_with(spec: PoolSpec<'_>) -> Pool {
    Pool::start(
        Path::new(TESSERA),
        PoolSpec {
            servers: 2,
            seats: 10,
            ..spec
        },
    )
    .await
}

/// An outsider: trusts the pool CA (it is handed to every client), holds no
/// credential.
fn outsider(pool: &Pool) -> Http {
    Http::tls(&pool.ca_pem(), None, LOOPBACK_REQUEST_TIMEOUT)
}

/// Someone holding this bearer token.
fn with_token(pool: &Pool, token: &str) -> Http {
    Http::tls(
        &pool.ca_pem(),
        Some(token.to_string()),
        LOOPBACK_REQUEST_TIMEOUT,
    )
}

/// A program of the pool's vendor (its key built in, the pool CA trusted)
/// that asks the server at `address`.
fn program_config(pool: &Pool, address: &str) -> tessera_client::ClientConfig {
    let mut config = tessera_client::ClientConfig::new([address.to_string()]);
    config.tls = tessera_client::ClientTls::PoolCa(pool.ca_pem());
    config.trust = tessera_client::Trust::Vendor(vec![pool.vendor_key()]);
    config
}

async fn answer(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// Sends `request` in the pool's name and asserts that it is refused with
/// `refusal`: its HTTP status and error code.
async fn refused(request: reqwest::RequestBuilder, refusal: (u16, &str)) {
    let (status, body) = answer(request.header(POOL_HEADER, "test")).await;
    assert_eq!((status, code(&body)), refusal, "{body}");
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

fn allocations(status: &StatusResponse) -> Vec<u32> {
    status.features[0]
        .servers
        .iter()
        .map(|r| r.allocation)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_need_an_admin_token_not_the_pool_id() {
    let pool = start_pool().await;
    let leader = pool.wait_leader(&pool.all()).await;
    let address = &pool.servers[leader].address;
    let change = json!({"feature": "app", "servers": {"A": 10, "B": 0}});
    // The pool id, which anyone reads from /v1/status, is no credential.
    refused(
        outsider(&pool)
            .post(address, "/v1/admin/distribution")
            .json(&change),
        (401, "unauthenticated"),
    )
    .await;
    // A made-up token.
    refused(
        with_token(&pool, "not-a-token")
            .post(address, "/v1/admin/license/remove")
            .json(&json!({"id": "app-1"})),
        (401, "unauthenticated"),
    )
    .await;
    // A read token reads, and changes nothing.
    let read = std::fs::read_to_string(pool.credentials.read_token_file()).unwrap();
    refused(
        with_token(&pool, read.trim())
            .post(address, "/v1/admin/distribution")
            .json(&change),
        (403, "forbidden"),
    )
    .await;
    // The CLI without a token says what to pass.
    let out = std::process::Command::new(TESSERA)
        .args([
            "admin",
            "set-distribution",
            "app",
            "A=10,B=0",
            "--server",
            address,
        ])
        .arg("--ca")
        .arg(pool.credentials.ca_file())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--token-file"),
        "{stderr}"
    );
    let status = pool.status(leader).await.expect("status");
    assert_eq!(allocations(&status), vec![5, 5], "nothing changed");
    assert_eq!(status.pool_sequence, 1);
    // The administrator's token does change it.
    pool.admin_ok(leader, &["set-distribution", "app", "A=6,B=4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_routes_take_only_a_pool_member_speaking_for_itself() {
    let pool = start_pool().await;
    let leader = pool.wait_leader(&pool.all()).await;
    let follower = 1 - leader;
    let leader_address = &pool.servers[leader].address;
    let follower_id = pool.servers[follower].id.clone();
    // Seats held on the follower, which a forged drain would hand out again.
    let (status, body) = pool.checkout(follower, "victim", 5).await;
    assert_eq!(status, 200, "{body}");
    pool.wait_status(leader, "the follower's seats reported", |s| {
        s.features[0].servers[follower].in_use == Some(5)
    })
    .await;
    let drain = json!({
        "server_id": follower_id,
        "command": ControlCommand::Drain {
            feature: "app".into(),
            server: follower_id.clone(),
            seats: 5,
            allocation_before: 5,
            target_before: 0,
            loosened_before: 0,
        },
    });
    // An outsider naming the follower, with the pool id and its server id.
    refused(
        outsider(&pool)
            .post(leader_address, "/v1/peer/command")
            .header(PEER_HEADER, &follower_id)
            .json(&drain),
        (401, "unauthenticated"),
    )
    .await;
    // The leader's own credential, presented by someone speaking for the
    // follower: a member may speak only for itself.
    let leader_id = pool.servers[leader].id.clone();
    let credential = std::fs::read_to_string(
        pool.path()
            .join("secure")
            .join(&leader_id)
            .join("peer.credential"),
    )
    .unwrap();
    refused(
        with_token(&pool, credential.trim())
            .post(leader_address, "/v1/peer/command")
            .header(PEER_HEADER, &leader_id)
            .json(&drain),
        (403, "forbidden"),
    )
    .await;
    // A Raft append with a term past any real one, from an outsider.
    let append = json!({
        "vote": {"leader_id": {"term": u64::MAX, "node_id": 1}, "committed": true},
        "prev_log_id": null, "entries": [], "leader_commit": null
    });
    refused(
        outsider(&pool)
            .post(leader_address, "/v1/peer/raft/append")
            .json(&append),
        (401, "unauthenticated"),
    )
    .await;
    // The victim's seats stay held on the follower, the pool still counts
    // 10 seats in all, and its leader still leads and serves.
    let status = pool.status(leader).await.expect("status");
    assert_eq!(allocations(&status).iter().sum::<u32>(), 10);
    assert_eq!(status.features[0].servers[follower].in_use, Some(5));
    assert_eq!(status.server.role, "leader");
    let follower_status = pool.status(follower).await.expect("status");
    assert_eq!(
        follower_status.grants_total, 1,
        "the victim's grant is held"
    );
    let (code_after, _) = pool.checkout(leader, "after", 1).await;
    assert_eq!(code_after, 200, "the leader still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_status_names_no_grant_user_or_host() {
    let pool = start_pool().await;
    let leader = pool.wait_leader(&pool.all()).await;
    let (status, _) = pool.checkout(leader, "alice-workstation", 1).await;
    assert_eq!(status, 200);
    let address = &pool.servers[leader].address;
    let (code, public) = answer(outsider(&pool).get(address, "/v1/status")).await;
    assert_eq!(code, 200);
    assert_eq!(public["grants"], json!([]), "{public}");
    assert_eq!(public["grants_total"], json!(1));
    assert!(!public.to_string().contains("alice-workstation"));
    // The read token sees them.
    let read = std::fs::read_to_string(pool.credentials.read_token_file()).unwrap();
    let (_, full) = answer(with_token(&pool, read.trim()).get(address, "/v1/status")).await;
    assert!(full.to_string().contains("alice-workstation"), "{full}");
    // A wrong token is refused, not taken as anonymous.
    let (code, body) = answer(with_token(&pool, "guess").get(address, "/v1/status")).await;
    assert_eq!(
        (code, self::code(&body)),
        (401, "unauthenticated"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_a_secure_server_gets_no_answer() {
    let pool = start_pool().await;
    let address = &pool.servers[0].address;
    let plain = Http::plain(LOOPBACK_REQUEST_TIMEOUT);
    let result = plain.get(address, "/v1/status").send().await;
    assert!(
        result.is_err(),
        "a TLS server does not speak plain HTTP: {result:?}"
    );
    // The CLI over plain HTTP fails and names the server.
    let out = std::process::Command::new(TESSERA)
        .args(["status", "--plain-http", "--server", address])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // And the server is unharmed.
    assert!(pool.status(0).await.is_some());
}

/// Slow uploads hold client capacity only: the servers' own traffic, the
/// status and the pool's elections go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uploads_do_not_starve_the_pool() {
    let pool = start_pool_with(PoolSpec {
        config_extra: "[limits]\nrequests_in_flight_max = 4\n",
        ..PoolSpec::default()
    })
    .await;
    let leader = pool.wait_leader(&pool.all()).await;
    let address = pool.servers[leader].address.clone();
    // Four TLS connections that send a checkout's headers and then one byte
    // of body every few hundred milliseconds.
    let mut slow = Vec::new();
    for n in 0..4 {
        slow.push(tokio::spawn(mitm::trickle(
            pool.ca_pem(),
            address.clone(),
            format!("slow-{n}"),
        )));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The status answers at once, the follower still follows the leader.
    let asked = std::time::Instant::now();
    let status = pool.status(leader).await.expect("the status answers");
    assert!(asked.elapsed() < Duration::from_secs(2));
    assert_eq!(status.server.role, "leader");
    let follower = 1 - leader;
    pool.wait_status(follower, "the follower hears its leader", |s| {
        s.servers.iter().all(|p| p.up)
    })
    .await;
    for task in slow {
        task.abort();
    }
}

/// A man in the middle that presents its own certificate is refused by the
/// SDK; one that relays the real server's bytes and flips one of them gets
/// a broken connection, never a forged answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_man_in_the_middle_cannot_forge_or_rewrite_answers() {
    let pool = start_pool().await;
    let leader = pool.wait_leader(&pool.all()).await;
    let real = pool.servers[leader].address.clone();
    // An impostor with a certificate of its own for 127.0.0.1.
    let impostor = mitm::Impostor::start().await;
    let client = tessera_client::Client::new(program_config(&pool, &impostor.address)).unwrap();
    let refused = client.checkout("app", "1.0", 1).await;
    assert!(
        refused.is_err(),
        "the SDK took an impostor's answer: {refused:?}"
    );
    assert!(
        !impostor.answered(),
        "no request reached the impostor in the clear"
    );
    // A relay that flips one byte of every answer.
    let relay = mitm::Relay::start(real.clone()).await;
    let mut config = program_config(&pool, &relay.address);
    config.request_timeout = Duration::from_secs(2);
    let client = tessera_client::Client::new(config).unwrap();
    let rewritten = client.checkout("app", "1.0", 1).await;
    assert!(
        rewritten.is_err(),
        "a rewritten answer was taken: {rewritten:?}"
    );
    // The pool is unharmed.
    assert!(pool.status(leader).await.is_some());
}

/// The customer puts a relay in front of a real server, with that server's
/// own certificate and key, so that a program's framed `tessera/3`
/// connection ends at the relay. Passing the real server's answers on, the
/// relay hands the program a signature over the relay's own TLS channel
/// with the server, which is not the program's: refused. Taking the
/// signatures off, as if a channel vouched for them: refused. A program
/// that reaches the server itself is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_ends_tls_with_the_servers_own_key_cannot_bind_answers_to_it() {
    let pool = start_pool().await;
    let leader = pool.wait_leader(&pool.all()).await;
    let real = pool.servers[leader].address.clone();
    let id = ["A", "B"][leader];
    let program = |address: &str| {
        let mut config = program_config(&pool, address);
        config.request_timeout = Duration::from_secs(3);
        tessera_client::Client::new(config).unwrap()
    };
    for strip in [false, true] {
        let relay = mitm::TlsRelay::start(
            real.clone(),
            pool.credentials.server_tls_files(id),
            pool.ca_pem(),
            strip,
        )
        .await;
        let relayed = program(&relay.address).checkout("app", "1.0", 1).await;
        let why = match relayed {
            Err(err @ tessera_client::ClientError::UntrustedAnswer { .. }) => err.to_string(),
            other => panic!("a relayed answer (signatures stripped: {strip}) was taken: {other:?}"),
        };
        let expected = match strip {
            false => "signature",
            true => "no signed answer has bound",
        };
        assert!(why.contains(expected), "strip {strip}: {why}");
    }
    let seat = program(&real)
        .checkout("app", "1.0", 1)
        .await
        .expect("the real server serves the program itself");
    seat.release().await.expect("a check-in");
}

/// `tessera pool init` for a pool of one in `dir`; returns server A's folder.
fn init_pool_of_one(dir: &Path) -> std::path::PathBuf {
    let init = std::process::Command::new(TESSERA)
        .args([
            "pool",
            "init",
            "--pool-id",
            "p",
            "--server",
            "A=127.0.0.1:1",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    dir.join("pool").join("A")
}

/// Starts `tessera server` with `config`, which must refuse to start;
/// returns what it said.
fn refused_start(config: &Path) -> String {
    let out = std::process::Command::new(TESSERA)
        .args(["server", "--new-pool", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    stderr
}

/// `plain_http` is for loopback only: a server asked to listen on every
/// address without TLS refuses to start, and says what to do.
#[test]
fn plain_http_is_refused_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let config = init_pool_of_one(dir.path()).join("tessera.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace(
        "data_dir = \"data\"\n",
        "data_dir = \"data\"\nlisten = \"0.0.0.0:0\"\n",
    );
    text.push_str("\n[security]\nplain_http = true\n");
    std::fs::write(&config, text).unwrap();
    let stderr = refused_start(&config);
    assert!(stderr.contains("only on a loopback address"), "{stderr}");
}

/// A server without its certificate or credential refuses to start and
/// names the file and the command that makes it.
#[test]
fn a_server_without_its_credentials_says_how_to_make_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = init_pool_of_one(dir.path());
    let config = server.join("tessera.toml");
    for (file, expected) in [
        ("server.pem", "server.pem"),
        ("peer.credential", "peer.credential"),
    ] {
        let kept = std::fs::read(server.join(file)).unwrap();
        std::fs::remove_file(server.join(file)).unwrap();
        let stderr = refused_start(&config);
        assert!(
            stderr.contains(expected) && stderr.contains("tessera pool init"),
            "{stderr}"
        );
        std::fs::write(server.join(file), kept).unwrap();
    }
    // Another server's credential (or a pool file of another pool).
    std::fs::write(server.join("peer.credential"), "f".repeat(64)).unwrap();
    let stderr = refused_start(&config);
    assert!(
        stderr.contains("is not the SHA-256 of this server's peer"),
        "{stderr}"
    );
    // A credential too short to be a secret.
    std::fs::write(server.join("peer.credential"), "short\n").unwrap();
    assert!(refused_start(&config).contains("shorter than 32"));
}
