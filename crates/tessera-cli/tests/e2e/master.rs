//! Seed 003's enrolment, as the administrator and the vendor run it: the
//! master's key and hostid from `tessera master init`, the master license
//! `tessera license sign --master` makes of them, and the checks
//! `tessera license verify` makes of it. The machine's hostid is the
//! test-only override (only honoured with the test fault switch), so the
//! tests stand for two hosts on one machine.

use std::time::Duration;

use crate::fixture::*;

const MASTER_HOST: &str = "mid-5eed003000000001";
const OTHER_HOST: &str = "mid-5eed003000000002";

fn on_host(hostid: &str) -> [(&str, &str); 2] {
    [
        ("TESSERA_TEST_FAULTS", "1"),
        ("TESSERA_TEST_HOSTID", hostid),
    ]
}

/// `tessera master init --data-dir DATA` on the master's host.
async fn master_init(data: &std::path::Path) -> Output {
    master_init_on(data, MASTER_HOST).await
}

/// `tessera master init --data-dir DATA` on host `hostid`.
async fn master_init_on(data: &std::path::Path, hostid: &str) -> Output {
    tessera_env(
        &on_host(hostid),
        [
            "master".as_ref(),
            "init".as_ref(),
            "--data-dir".as_ref(),
            data.as_os_str(),
        ],
    )
    .await
    .success()
}

/// The vendor signs `master.toml` in the fixture's directory: VID
/// `acme-vid-1` for 3 servers on the master's host, with `public_key`, and
/// `flags` besides. Returns its path.
async fn sign_master(fixture: &Fixture, public_key: &str, flags: &[&str]) -> std::path::PathBuf {
    sign_master_as(fixture, "master.toml", MASTER_HOST, "3", public_key, flags).await
}

/// The vendor signs `name` in the fixture's directory: VID `acme-vid-1`
/// for `servers` servers on host `hostid`, with `public_key`, and `flags`
/// besides. Returns its path.
async fn sign_master_as(
    fixture: &Fixture,
    name: &str,
    hostid: &str,
    servers: &str,
    public_key: &str,
    flags: &[&str],
) -> std::path::PathBuf {
    let license = fixture.path().join(name);
    let secret = fixture.secret_key();
    let mut args = vec![
        "license",
        "sign",
        "--master",
        "--key",
        secret.to_str().unwrap(),
        "--vid",
        "acme-vid-1",
        "--servers",
        servers,
        "--hostid",
        hostid,
        "--master-key",
        public_key,
        "--expiry",
        "2099-12-31",
        "--out",
        license.to_str().unwrap(),
    ];
    args.extend_from_slice(flags);
    tessera(args).await.success();
    license
}

/// The value after `label` on the line that starts with it.
fn field(text: &str, label: &str) -> String {
    text.lines()
        .find_map(|line| line.strip_prefix(label))
        .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
        .unwrap_or_else(|| panic!("no `{label}` line in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vendor_signs_a_master_license_for_what_master_init_printed() {
    let fixture = Fixture::new().await;
    let data = fixture.path().join("master-data");
    let init = master_init(&data).await;
    init.mentions(&["mode 0600", "tessera license sign --master"]);
    let public_key = field(&init.stdout, "public key: ");
    assert_eq!(field(&init.stdout, "hostid:     "), MASTER_HOST);

    // Run again, the master keeps its key: a new one would void the license.
    let again = master_init(&data).await;
    again.mentions(&["made earlier; kept"]);
    assert_eq!(field(&again.stdout, "public key: "), public_key);

    let license = sign_master(&fixture, &public_key, &[]).await;
    tessera(["license", "show", license.to_str().unwrap()])
        .await
        .success()
        .mentions(&[
            "vid:acme-vid-1",
            "3 production servers at once",
            MASTER_HOST,
        ]);

    let public = fixture.public_key();
    let verify = |hostid: &'static str, file: std::path::PathBuf| {
        let public = public.clone();
        async move {
            tessera_env(
                &on_host(hostid),
                [
                    "license".as_ref(),
                    "verify".as_ref(),
                    file.as_os_str(),
                    "--key".as_ref(),
                    public.as_os_str(),
                ],
            )
            .await
        }
    };
    verify(MASTER_HOST, license.clone())
        .await
        .success()
        .mentions(&["ok", "VID acme-vid-1 for 3 production servers"]);
    // The data directory copied to another host: the license names one host.
    verify(OTHER_HOST, license.clone())
        .await
        .failure()
        .mentions(&[&format!("bound to host {MASTER_HOST}"), OTHER_HOST]);
    // The customer raises N: the vendor's signature no longer checks.
    let tampered = fixture.path().join("tampered.toml");
    let text = std::fs::read_to_string(&license).unwrap();
    std::fs::write(&tampered, text.replace("servers = 3", "servers = 30")).unwrap();
    verify(MASTER_HOST, tampered)
        .await
        .failure()
        .mentions(&["bad signature"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_license_must_name_one_physical_host_and_a_master_key() {
    let fixture = Fixture::new().await;
    let secret = fixture.secret_key();
    let key = secret.to_str().unwrap();
    let master_key = "07ONa1LseQgvhk2vISwAH9fqegLD584VTddWqaYp6Bk=";
    // Each case: the flags that differ from a good license, and the reason.
    let cases: [(&[&str], &[&str]); 3] = [
        (
            &["--servers", "3", "--master-key", master_key],
            &["master_hostid is `any`", "one physical host"],
        ),
        (
            &[
                "--servers",
                "3",
                "--hostid",
                MASTER_HOST,
                "--master-key",
                "not-a-key",
            ],
            &["--master-key is the public key `tessera master init` printed"],
        ),
        (
            &[
                "--servers",
                "0",
                "--hostid",
                MASTER_HOST,
                "--master-key",
                master_key,
            ],
            &["servers is 0"],
        ),
    ];
    for (flags, reasons) in cases {
        let mut args = vec!["license", "sign", "--master", "--key", key, "--vid", "v1"];
        args.extend_from_slice(flags);
        tessera(args).await.failure().mentions(reasons);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostid_says_whence_and_a_server_config_cannot_claim_one() {
    let output = tessera_env(&on_host(MASTER_HOST), ["hostid"])
        .await
        .success();
    assert_eq!(output.stdout.trim(), MASTER_HOST, "{output}");
    output.mentions(&["derived from TESSERA_TEST_HOSTID"]);

    // The customer's old trick: name the host a code is bound to in the
    // config. The server does not start, and says why.
    let fixture = Fixture::new().await;
    let mut spec = ServerSpec::new(String::new());
    spec.config_top = format!("hostid = \"{OTHER_HOST}\"\n");
    let server = fixture.server(spec);
    tessera([
        "server".as_ref(),
        "--config".as_ref(),
        server.config.as_os_str(),
    ])
    .await
    .failure()
    .mentions(&["can no longer be set in its config", "tessera master init"]);
}

/// Enrols a master for server `M` of `fixture` on `MASTER_HOST` with N = 3
/// and certificates (slot leases) of a minute, longer than any wait here:
/// its key made by `tessera master init` in the server's data directory,
/// the vendor's master license file beside it. Returns the file's path and
/// the slot code's text (`[[license]]`).
async fn enrol_master(fixture: &Fixture) -> (std::path::PathBuf, String) {
    enrol_master_for(fixture, 60).await
}

/// [`enrol_master`] with certificates of `lifetime_s`.
async fn enrol_master_for(fixture: &Fixture, lifetime_s: u32) -> (std::path::PathBuf, String) {
    let data = fixture.path().join("server-M").join("data");
    let init = master_init(&data).await;
    let public_key = field(&init.stdout, "public key: ");
    let license = sign_master(
        fixture,
        &public_key,
        &["--certificate-lifetime-s", &lifetime_s.to_string()],
    )
    .await;
    let text = std::fs::read_to_string(&license).unwrap();
    let slots = text[text.find("[[license]]").expect("a slot code")..].to_string();
    (license, slots)
}

fn master_spec(slots: String, host: &str) -> ServerSpec {
    let mut spec = ServerSpec::new(slots);
    spec.server_id = "M".into();
    spec.config_top = "master_license_file = \"../master.toml\"\n".into();
    spec.env = on_host(host)
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    spec
}

/// The master's pool counts the lendings: N slots of `vid:<VID>`, the
/// (N+1)th refused, a clean check-in frees one at once, and a restart of
/// the master forgets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_lends_its_vid_to_at_most_n_and_a_restart_forgets_none() {
    let fixture = Fixture::new().await;
    let (_, slots) = enrol_master(&fixture).await;
    let mut master = fixture.server(master_spec(slots, MASTER_HOST));
    master.start(StartMode::NewPool).await;
    master.wait_state("serving").await;

    let mut grants = Vec::new();
    for n in 1..=3 {
        let body = checkout_body(&format!("production-{n}"), "vid:acme-vid-1", 1);
        grants.push(master.post("/v1/checkout", &body).await.ok());
    }
    let fourth = checkout_body("production-4", "vid:acme-vid-1", 1);
    let refused = master.post("/v1/checkout", &fourth).await;
    refused.refused(409, "no_seats_available");
    // The refusal names the holders, for the administrator to act on.
    for n in 1..=3 {
        let holder = format!("e2e (production-{n})");
        assert!(refused.message().contains(&holder), "{refused:?}");
    }

    // Production server 1 stops cleanly: its slot is free at once.
    let first = &grants[0];
    let checkin = serde_json::json!({
        "grant_id": first["grant_id"], "client_id": "production-1", "proof": first["proof"],
    });
    master.post("/v1/checkin", &checkin).await.ok();
    master.post("/v1/checkout", &fourth).await.ok();

    // The master dies and comes back: the three lendings are still held.
    master.kill();
    master.start(StartMode::Plain).await;
    let status = master.wait_state("serving").await;
    assert_eq!(in_use(&status, "vid:acme-vid-1"), 3, "{status:#?}");
    let fifth = checkout_body("production-5", "vid:acme-vid-1", 1);
    master
        .post("/v1/checkout", &fifth)
        .await
        .refused(409, "no_seats_available");
}

/// Anyone on the network could hold every slot of the VID and starve the
/// production servers: a master lends them only to a token of role
/// `production` (or `admin`) of its pool. Anonymous callers and a `read`
/// token are refused, the checkout and the renewal alike; other features
/// stay open to programs. A production server without the token does not
/// start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_production_servers_hold_the_vids_slots() {
    let fixture = Fixture::new().await;
    let (license, slots) = enrol_master(&fixture).await;
    let app = fixture.sign(&code("app", 2)).await;
    let mut master = fixture.server(master_spec(slots + &app, MASTER_HOST));
    master.start(StartMode::NewPool).await;
    master.wait_state("serving").await;
    let as_caller = |token: Option<String>| {
        tessera_testkit::Http::tls(&master.credentials.ca_pem(), token, Duration::from_secs(5))
    };
    let read_token = std::fs::read_to_string(master.credentials.read_token_file()).unwrap();
    let production_token =
        std::fs::read_to_string(master.credentials.production_token_file()).unwrap();
    let slot = checkout_body("squatter", "vid:acme-vid-1", 1);
    for (caller, status, code) in [
        (None, 401, "unauthenticated"),
        (Some(read_token.trim().to_string()), 403, "forbidden"),
    ] {
        let http = as_caller(caller);
        let answer = master
            .send(http.post(&master.address, "/v1/checkout").json(&slot))
            .await;
        answer.refused(status, code);
        assert!(answer.message().contains("role `production`"), "{answer:?}");
        // A program's feature is still anyone's.
        let program = checkout_body("program", "app", 1);
        let answer = master
            .send(http.post(&master.address, "/v1/checkout").json(&program))
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let production = as_caller(Some(production_token.trim().to_string()));
    let grant = master
        .send(production.post(&master.address, "/v1/checkout").json(&slot))
        .await
        .ok();
    assert!(grant["certificate"].is_object(), "{grant}");
    // The renewal of a slot needs the token as much as the checkout.
    let renewal = heartbeat_body(
        grant["grant_id"].as_str().unwrap(),
        "squatter",
        "vid:acme-vid-1",
        1,
        grant["proof"].as_str().unwrap(),
    );
    master
        .send(
            as_caller(None)
                .post(&master.address, "/v1/heartbeat")
                .json(&renewal),
        )
        .await
        .refused(401, "unauthenticated");
    assert_eq!(in_use(&master.status().await, "vid:acme-vid-1"), 1);

    // A production server without the token refuses to start.
    let cad = fixture
        .sign("[[license]]\nfeature = \"cad\"\nseats = 5\nexpiry = \"permanent\"\nhostid = \"vid:acme-vid-1\"\n")
        .await;
    let mut spec = ServerSpec::new(cad);
    spec.server_id = "P1".into();
    spec.config_tables = format!(
        "[vid]\nmasters = [\"{}\"]\nlicense_files = [\"{}\"]\nca_file = \"{}\"\n",
        master.address,
        license.display(),
        master.credentials.ca_file().display(),
    );
    let server = fixture.server(spec);
    tessera([
        "server".as_ref(),
        "--config".as_ref(),
        server.config.as_os_str(),
        "--new-pool".as_ref(),
    ])
    .await
    .failure()
    .mentions(&["token_file", "production"]);
}

/// The master refuses to start on another host (its data directory copied
/// there), and with a license whose N the customer raised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_does_not_start_on_another_host_or_with_a_changed_license() {
    let fixture = Fixture::new().await;
    let (license, slots) = enrol_master(&fixture).await;
    let elsewhere = fixture.server(master_spec(slots, OTHER_HOST));
    let config = elsewhere.config.clone();
    tessera_env(
        &on_host(OTHER_HOST),
        [
            "server".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--new-pool".as_ref(),
        ],
    )
    .await
    .failure()
    .mentions(&[&format!("bound to host {MASTER_HOST}"), OTHER_HOST]);

    let text = std::fs::read_to_string(&license).unwrap();
    std::fs::write(&license, text.replacen("servers = 3", "servers = 30", 1)).unwrap();
    // On the licensed host itself now (the config is the same server's).
    tessera_env(
        &on_host(MASTER_HOST),
        [
            "server".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--new-pool".as_ref(),
        ],
    )
    .await
    .failure()
    .mentions(&["bad signature"]);
}

/// Production servers `ids`, each a pool of one whose `cad` code (5 seats)
/// is bound to the VID of `master`, started.
async fn start_production(
    fixture: &Fixture,
    master: &Server,
    license: &std::path::Path,
    ids: &[&str],
) -> Vec<Server> {
    start_production_of(fixture, &[master], &[license.to_path_buf()], ids).await
}

/// [`start_production`] with several masters of one pool, and their licenses.
async fn start_production_of(
    fixture: &Fixture,
    masters: &[&Server],
    licenses: &[std::path::PathBuf],
    ids: &[&str],
) -> Vec<Server> {
    let quoted = |items: Vec<String>| {
        items
            .iter()
            .map(|item| format!("\"{item}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let addresses = quoted(masters.iter().map(|m| m.address.clone()).collect());
    let license_files = quoted(licenses.iter().map(|l| l.display().to_string()).collect());
    let credentials = &masters[0].credentials;
    let cad = fixture
        .sign("[[license]]\nfeature = \"cad\"\nseats = 5\nexpiry = \"permanent\"\nhostid = \"vid:acme-vid-1\"\n")
        .await;
    let mut production = Vec::new();
    for id in ids {
        let mut spec = ServerSpec::new(cad.clone());
        spec.server_id = id.to_string();
        spec.config_tables = format!(
            "[vid]\nmasters = [{addresses}]\nlicense_files = [{license_files}]\n\
             ca_file = \"{}\"\ntoken_file = \"{}\"\n",
            credentials.ca_file().display(),
            credentials.production_token_file().display()
        );
        let mut server = fixture.server(spec);
        server.start(StartMode::NewPool).await;
        production.push(server);
    }
    production
}

/// A master with N = 3 and four production servers, each of which has
/// heard from the master: it holds the VID or was refused.
struct Crowd {
    master: Server,
    production: Vec<Server>,
    statuses: Vec<tessera_proto::StatusResponse>,
}

impl Crowd {
    async fn start(fixture: &Fixture, lifetime_s: u32) -> Crowd {
        let (license, slots) = enrol_master_for(fixture, lifetime_s).await;
        let mut master = fixture.server(master_spec(slots, MASTER_HOST));
        master.start(StartMode::NewPool).await;
        master.wait_state("serving").await;
        let mut production =
            start_production(fixture, &master, &license, &["P1", "P2", "P3", "P4"]).await;
        let mut statuses = Vec::new();
        for server in &mut production {
            let answered = |s: &tessera_proto::StatusResponse| {
                vid_held(s) || vid_reason_has(s, "no certificate")
            };
            statuses.push(
                server
                    .poll("an answer from the master", SERVER_READY_TIMEOUT, answered)
                    .await,
            );
        }
        Crowd {
            master,
            production,
            statuses,
        }
    }
}

fn vid_held(status: &tessera_proto::StatusResponse) -> bool {
    status.server.vid.as_ref().is_some_and(|vid| vid.held)
}

fn cad_limit(status: &tessera_proto::StatusResponse) -> u32 {
    status
        .features
        .iter()
        .find(|f| f.feature == "cad")
        .map_or(0, |f| f.hard_limit)
}

/// Seed 003 end to end: a master with N = 3, four production servers whose
/// `cad` code is bound to the VID. Three get certificates and serve `cad`;
/// the fourth is refused and serves nothing; one stops cleanly and the
/// fourth takes its slot at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_production_servers_hold_the_vid_and_a_fourth_waits_for_a_slot() {
    let fixture = Fixture::new().await;
    let Crowd {
        master,
        mut production,
        statuses,
    } = Crowd::start(&fixture, 60).await;
    // Every one has asked: three hold the VID, one was refused.
    let holders: Vec<usize> = (0..4).filter(|&i| vid_held(&statuses[i])).collect();
    assert_eq!(holders.len(), 3, "{statuses:#?}");
    let waiting = (0..4).find(|i| !holders.contains(i)).unwrap();
    let refusal = statuses[waiting].server.vid.clone().unwrap();
    let reason = refusal.reason.as_deref().unwrap_or("");
    assert!(reason.contains("no_seats_available"), "{refusal:?}");
    for &i in &holders {
        let id = format!("P{} (P{}.", i + 1, i + 1);
        assert!(reason.contains(&id), "{id} not in {reason}");
    }
    assert_eq!(in_use(&master.status().await, "vid:acme-vid-1"), 3);

    // The holders serve the VID's code; the one without a certificate does not.
    let holder = holders[0];
    let status = production[holder]
        .poll("cad served", SERVER_READY_TIMEOUT, |s| cad_limit(s) == 5)
        .await;
    assert_eq!(cad_limit(&status), 5);
    production[holder]
        .post("/v1/checkout", &checkout_body("program-1", "cad", 1))
        .await
        .ok();
    program_checks_the_chain(&production[holder]).await;
    assert_eq!(cad_limit(&production[waiting].status().await), 0);
    let answer = production[waiting]
        .post("/v1/checkout", &checkout_body("program-2", "cad", 1))
        .await;
    assert_ne!(answer.status, 200, "{answer:?}");

    // A holder stops cleanly: its slot is free at once, and the fourth,
    // asking again every second, holds the VID and serves `cad`.
    let stopped = holders[1];
    assert!(production[stopped].terminate().await.success());
    production[waiting]
        .poll("the freed slot", SERVER_READY_TIMEOUT, |s| {
            vid_held(s) && cad_limit(s) == 5
        })
        .await;
    production[waiting]
        .post("/v1/checkout", &checkout_body("program-2", "cad", 1))
        .await
        .ok();
    assert_eq!(in_use(&master.status().await, "vid:acme-vid-1"), 3);
}

/// A program with the vendor's key, on `holder`: the grant's chain (vendor
/// key, master license, certificate naming the holder's answer key) checks
/// offline. A fake server that copies the
/// holder's chain and codes but signs with a key of its own satisfies no
/// program: the certificate names another key.
async fn program_checks_the_chain(holder: &Server) {
    let program = |server: &Server, address: &str, tls: tessera_client::ClientTls| {
        let mut config = tessera_client::ClientConfig::new([address]);
        config.tls = tls;
        config.trust = server.vendor_trust();
        config.clock_file = None;
        tessera_client::Client::new(config).unwrap()
    };
    let tls = |server: &Server| tessera_client::ClientTls::PoolCa(server.credentials.ca_pem());
    let seat = program(holder, &holder.address, tls(holder))
        .checkout("cad", "1.0", 1)
        .await
        .expect("a grant whose chain checks");
    let answer = seat.grant().answer.expect("a signed answer");
    let chain = answer.chain.clone().expect("the VID chain");
    assert_eq!(
        chain.certificate.server_key.as_deref(),
        Some(answer.server_key.as_str())
    );
    seat.release().await.unwrap();

    let fake = fake_server(move |own, asked| {
        use tessera_core::answer::{codes_sha256, AnswerFields, ServerSecretKey};
        let key = ServerSecretKey::from_seed([3; 32]);
        let codes: Vec<tessera_core::LicenseCode> = answer
            .codes
            .iter()
            .map(|text| tessera_core::LicenseCode::from_text(text).unwrap())
            .collect();
        let text = |name: &str| asked[name].as_str().unwrap_or("").to_string();
        let fields = AnswerFields {
            outcome: "granted".into(),
            pool_id: answer.pool_id.to_string(),
            server_id: answer.server_id.to_string(),
            hostid: answer.hostid.to_string(),
            server_unix_ms: answer.server_unix_ms,
            nonce: text("nonce"),
            client_id: text("client_id"),
            feature: text("feature"),
            version: text("version"),
            count: 1,
            grant_id: "fake-grant".into(),
            lease_ms: 60_000,
            heartbeat_interval_ms: 15_000,
            codes_sha256: codes_sha256(&codes),
            channel: String::new(),
        };
        let signed = tessera_proto::SignedAnswer {
            server_key: key.public().to_base64().into(),
            signature: key.sign(&fields),
            batch: None,
            ..answer.clone()
        };
        let grant = serde_json::json!({
            "grant_id": "fake-grant", "feature": "cad", "count": 1,
            "server_id": answer.server_id, "lease_ms": 60_000, "heartbeat_interval_ms": 15_000,
            "servers": [{"id": answer.server_id, "address": own}], "converted": false,
            "proof": "fake", "answer": signed,
        });
        (200, grant)
    })
    .await;
    match program(holder, &fake, tessera_client::ClientTls::Plain)
        .checkout("cad", "1.0", 1)
        .await
    {
        Err(tessera_client::ClientError::UntrustedAnswer { message }) => assert!(
            message.contains("does not name the answer key that signed this answer"),
            "{message}"
        ),
        other => panic!("a fake server with a copied chain satisfied a program: {other:?}"),
    }
}

/// A holder killed with `kill -9` cannot give its slot back: the master
/// lends it again only once the dead server's certificate has lapsed by
/// the dead server's own account, never while it might still be valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holders_slot_is_lent_again_only_after_its_certificate_lapsed() {
    let fixture = Fixture::new().await;
    let Crowd {
        master: _master,
        mut production,
        statuses,
    } = Crowd::start(&fixture, 4).await;
    let held: Vec<bool> = statuses.iter().map(vid_held).collect();
    let waiting = held.iter().position(|h| !h).expect("one server waits");
    let victim = held.iter().position(|h| *h).expect("a holder");

    // When the victim's certificate ends, by its own account, just before
    // it dies (an upper bound: the status is read before the answer arrives).
    let asked = std::time::Instant::now();
    let last = production[victim].status().await;
    let victim_until = asked + valid_for(&last);
    production[victim].kill();
    let killed = std::time::Instant::now();

    let status = production[waiting]
        .poll("the dead holder's slot", SERVER_READY_TIMEOUT, vid_held)
        .await;
    let seen = std::time::Instant::now();
    // When the new holder sent the request its certificate answers (a lower
    // bound on the master's lending): its validity ends a lifetime after it.
    let new_sent = (seen + valid_for(&status)) - Duration::from_secs(4);
    println!(
        "the slot was lent again {:?} after the kill; the dead holder's certificate ended {:?} \
         after the kill",
        seen - killed,
        victim_until.saturating_duration_since(killed)
    );
    // Never two valid at once: the new certificate was asked for after the
    // dead holder's had ended (100 ms for the reads' own delays).
    assert!(
        new_sent + Duration::from_millis(100) >= victim_until,
        "lent {:?} before the dead holder's certificate ended",
        victim_until.saturating_duration_since(new_sent)
    );
}

fn valid_for(status: &tessera_proto::StatusResponse) -> Duration {
    Duration::from_millis(status.server.vid.as_ref().map_or(0, |vid| vid.valid_for_ms))
}

/// With the master gone for longer than a certificate's life, production
/// servers stop serving the VID's codes and say why; back, it lends again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_master_past_a_certificates_life_the_vids_codes_stop_and_status_says_why() {
    let fixture = Fixture::new().await;
    let (license, slots) = enrol_master_for(&fixture, 4).await;
    let mut master = fixture.server(master_spec(slots, MASTER_HOST));
    master.start(StartMode::NewPool).await;
    master.wait_state("serving").await;
    let mut production = start_production(&fixture, &master, &license, &["P1"]).await;
    let server = &mut production[0];
    server
        .poll("the VID held and cad served", SERVER_READY_TIMEOUT, |s| {
            vid_held(s) && cad_limit(s) == 5
        })
        .await;

    master.kill();
    let status = server
        .poll("the certificate to lapse", SERVER_READY_TIMEOUT, |s| {
            !vid_held(s) && cad_limit(s) == 0
        })
        .await;
    let vid = status.server.vid.clone().unwrap();
    let reason = vid.reason.as_deref().unwrap_or("");
    assert!(
        ["lapsed", "not renewed", "no certificate"]
            .iter()
            .any(|why| reason.contains(why)),
        "{vid:?}"
    );
    let cad = status.features.iter().find(|f| f.feature == "cad").unwrap();
    let why = serde_json::to_string(cad).unwrap();
    assert!(why.contains("holds no valid certificate"), "{why}");
    let refused = server
        .post("/v1/checkout", &checkout_body("program-1", "cad", 1))
        .await;
    assert_eq!(refused.code(), "license_not_served", "{refused:?}");
    assert!(refused.message().contains("VID acme-vid-1"), "{refused:?}");

    master.start(StartMode::Plain).await;
    server
        .poll("the VID held again", SERVER_READY_TIMEOUT, |s| {
            vid_held(s) && cad_limit(s) == 5
        })
        .await;
}

/// The administrator revokes a run: the master names it in `tessera master
/// status`, stops renewing its certificate (a restart does not forget), the
/// run stops serving the VID's codes at its next renewal (at the latest when
/// its certificate lapses) and says why, and the server that was waiting
/// takes the slot (hand-over).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_run_stops_at_its_certificates_lapse_and_the_next_takes_the_slot() {
    let fixture = Fixture::new().await;
    let Crowd {
        mut master,
        mut production,
        statuses,
    } = Crowd::start(&fixture, 4).await;
    let held: Vec<bool> = statuses.iter().map(vid_held).collect();
    let waiting = held.iter().position(|h| !h).expect("one server waits");
    let victim = held.iter().position(|h| *h).expect("a holder");
    let victim_id = format!("P{}", victim + 1);

    let listed = tessera(master.cli(&["master", "status"])).await.success();
    listed.mentions(&[
        "VID acme-vid-1: 3 of 3 production servers hold it",
        &victim_id,
    ]);
    let json = tessera(master.cli(&["master", "status", "--json"]))
        .await
        .success();
    let slots: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let instance = slots["holders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["server_id"] == victim_id.as_str())
        .and_then(|h| h["instance"].as_str())
        .unwrap_or_else(|| panic!("{victim_id} not among {slots}"))
        .to_string();

    // A master restart between the revocation and the lapse forgets nothing.
    tessera(master.cli(&["master", "revoke", &instance]))
        .await
        .success()
        .mentions(&["revoked", "slot comes free in"]);
    master.kill();
    master.start(StartMode::Plain).await;

    let status = production[victim]
        .poll(
            "the revoked certificate to lapse",
            SERVER_READY_TIMEOUT,
            |s| !vid_held(s) && cad_limit(s) == 0,
        )
        .await;
    let reason = status.server.vid.unwrap().reason.unwrap_or_default();
    assert!(
        reason.contains("revoked") || reason.contains("lapsed"),
        "{reason}"
    );
    production[waiting]
        .poll("the revoked run's slot", SERVER_READY_TIMEOUT, |s| {
            vid_held(s) && cad_limit(s) == 5
        })
        .await;
    // The revoked run asks again, and is refused for good.
    let status = production[victim]
        .poll("the master's refusal", SERVER_READY_TIMEOUT, |s| {
            vid_reason_has(s, "revoked")
        })
        .await;
    assert!(!vid_held(&status));
}

/// Master `M{i}` of a group of three sharing VID `acme-vid-1` with N = 2:
/// its host, its key made by `tessera master init` on that host, its own
/// master license (`--masters 3`, certificates of `lifetime_s`) and slot
/// code. Returns the license's path and the master's spec.
async fn enrol_group_master(
    fixture: &Fixture,
    i: usize,
    lifetime_s: u32,
) -> (std::path::PathBuf, ServerSpec) {
    let host = format!("mid-5eed00300000010{i}");
    let id = format!("M{i}");
    let data = fixture.path().join(format!("server-{id}")).join("data");
    let init = master_init_on(&data, &host).await;
    let public_key = field(&init.stdout, "public key: ");
    let name = format!("master-{id}.toml");
    let lifetime = lifetime_s.to_string();
    let license = sign_master_as(
        fixture,
        &name,
        &host,
        "2",
        &public_key,
        &[
            "--masters",
            "3",
            "--certificate-lifetime-s",
            &lifetime,
            "--id",
            &format!("master-{id}"),
        ],
    )
    .await;
    let text = std::fs::read_to_string(&license).unwrap();
    let mut spec = master_spec(text[text.find("[[license]]").unwrap()..].to_string(), &host);
    spec.server_id = id;
    spec.config_top = format!("master_license_file = \"../{name}\"\n");
    (license, spec)
}

/// True if the production server's VID status gives a reason naming `part`.
fn vid_reason_has(status: &tessera_proto::StatusResponse, part: &str) -> bool {
    status
        .server
        .vid
        .as_ref()
        .and_then(|vid| vid.reason.as_deref())
        .is_some_and(|reason| reason.contains(part))
}

fn vid_master(status: &tessera_proto::StatusResponse) -> Option<String> {
    status
        .server
        .vid
        .as_ref()
        .and_then(|vid| vid.master.clone())
}

/// Backup masters (seed 003): three masters on three hosts, each with its
/// own license for VID acme-vid-1 (N = 2, three masters), in one pool. A
/// certificate needs two of their signatures. Three production servers
/// ask: two hold the VID, the third is refused. A master that lent a slot
/// is killed: two production servers hold the VID again under the
/// survivors' certificates (still a majority of signatures), never three. Then the attack: a copy of
/// a master's data directory run as a pool of its own lends slots, but its
/// certificates carry one signature of three, and no production server
/// takes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_masters_share_one_n_and_a_master_alone_lends_nothing() {
    let fixture = Fixture::new().await;
    let mut licenses = Vec::new();
    let mut specs = Vec::new();
    for i in 1..=3 {
        let (license, spec) = enrol_group_master(&fixture, i, 4).await;
        licenses.push(license);
        specs.push(spec);
    }
    let mut masters = fixture.pool(specs);
    for master in &mut masters {
        master.start(StartMode::NewPool).await;
    }
    for master in &mut masters {
        master.wait_state("serving").await;
    }
    let mut production = {
        let group: Vec<&Server> = masters.iter().collect();
        start_production_of(&fixture, &group, &licenses, &["P1", "P2", "P3"]).await
    };
    let answered =
        |s: &tessera_proto::StatusResponse| vid_held(s) || vid_reason_has(s, "no certificate");
    let mut statuses = Vec::new();
    for server in &mut production {
        statuses.push(
            server
                .poll("an answer from the masters", SERVER_READY_TIMEOUT, answered)
                .await,
        );
    }
    let holders: Vec<usize> = (0..3).filter(|&i| vid_held(&statuses[i])).collect();
    assert_eq!(
        holders.len(),
        2,
        "N = 2 across the three masters: {statuses:#?}"
    );
    let waiting = (0..3).find(|i| !holders.contains(i)).unwrap();
    assert!(!vid_held(&statuses[waiting]));
    for &i in &holders {
        production[i]
            .poll("cad served", SERVER_READY_TIMEOUT, |s| cad_limit(s) == 5)
            .await;
    }

    // The master the first holder's certificate came from dies. Its
    // certificates lapse before the survivors may lend its share (it may
    // have lent them all), so any two of the three production servers then
    // hold the VID, under certificates of the survivors, and never three.
    let lender = vid_master(&statuses[holders[0]]).expect("a holder names its master");
    let index = masters
        .iter()
        .position(|m| {
            m.config
                .parent()
                .unwrap()
                .ends_with(format!("server-{lender}"))
        })
        .unwrap_or_else(|| panic!("no master {lender}"));
    masters[index].kill();
    let killed = std::time::Instant::now();
    let deadline = killed + SERVER_READY_TIMEOUT * 2;
    loop {
        let mut held = Vec::new();
        for server in &production {
            held.push(server.status().await);
        }
        let holding: Vec<&tessera_proto::StatusResponse> =
            held.iter().filter(|s| vid_held(s)).collect();
        assert!(
            holding.len() <= 2,
            "more than N = 2 hold the VID: {held:#?}"
        );
        if holding.len() == 2
            && holding
                .iter()
                .all(|s| vid_master(s).is_some_and(|m| m != lender))
        {
            println!(
                "two production servers hold the VID again {:?} after the kill",
                killed.elapsed()
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "two production servers never held the VID from the survivors: {held:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Any surviving master lists both holders, whichever master lends them,
    // and says which master did not answer.
    let survivor = &masters[(index + 1) % 3];
    let mut held_by = Vec::new();
    for server in &production {
        let status = server.status().await;
        if vid_held(&status) {
            held_by.push(status.server.id.clone());
        }
    }
    let listed = tessera(survivor.cli(&["master", "status"])).await.success();
    let mut expected = vec![
        "VID acme-vid-1: 2 of 2 production servers hold it".to_string(),
        format!("not listed: the slots lent by {lender}"),
    ];
    expected.extend(held_by);
    listed.mentions(&expected.iter().map(String::as_str).collect::<Vec<_>>());

    // The attack: master M{index+1}'s key and license in a pool of its own.
    let alone_id = format!("S{}", index + 1);
    let mut spec = ServerSpec::new(String::new());
    let (license, group_spec) = (&licenses[index], &masters[index]);
    let text = std::fs::read_to_string(license).unwrap();
    spec.licenses = text[text.find("[[license]]").unwrap()..].to_string();
    spec.server_id = alone_id.clone();
    spec.config_top = format!("master_license_file = \"{}\"\n", license.display());
    spec.env = on_host(&format!("mid-5eed00300000010{}", index + 1))
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut alone = fixture.server(spec);
    std::fs::create_dir_all(&alone.data_dir).unwrap();
    std::fs::copy(
        group_spec.data_dir.join("master.key"),
        alone.data_dir.join("master.key"),
    )
    .unwrap();
    alone.start(StartMode::NewPool).await;
    alone.wait_state("serving").await;
    let mut cheat = start_production_of(&fixture, &[&alone], &licenses, &["P9"]).await;
    let status = cheat[0]
        .poll(
            "the lone master's certificate refused",
            SERVER_READY_TIMEOUT,
            |s| vid_reason_has(s, "signed by 1 of the 3 masters"),
        )
        .await;
    assert!(!vid_held(&status) && cad_limit(&status) == 0, "{status:#?}");
}

/// What a fake master answers a production server's checkout with.
#[derive(Clone, Copy, Debug)]
enum Forgery {
    /// A certificate the licensed master signed for this very run, then
    /// changed: its lifetime raised.
    Tampered,
    /// A certificate properly signed, for another run of the same server
    /// (a copy taken from elsewhere).
    OtherRun,
    /// A certificate for another VID, under a master license the production
    /// server does not list.
    OtherVid,
}

/// A fake master on loopback, plain HTTP: it answers every checkout and
/// heartbeat with a grant of the asker's slot whose certificate is forged
/// as `forgery` says, signed with `key` (the licensed master's key, copied).
async fn fake_master(
    key: tessera_core::master::MasterSecretKey,
    license_id: String,
    forgery: Forgery,
) -> String {
    crate::fixture::fake_server(move |own, asked| {
        let instance = asked["client_id"].as_str().unwrap_or("").to_string();
        let server_id = asked["user"].as_str().unwrap_or("P1").to_string();
        let server_key = asked["server_key"].as_str().map(str::to_string);
        let lifetime_ms = 60_000;
        let fields =
            |vid: &str, license: &str, instance: &str| tessera_core::master::CertificateFields {
                vid: vid.into(),
                master_license: license.into(),
                server_id: server_id.clone(),
                instance: instance.into(),
                serial: 1,
                issued_unix_ms: 1_796_083_200_000,
                lifetime_ms,
                server_key: server_key.clone(),
            };
        let certificate = match forgery {
            Forgery::Tampered => {
                let signed = key
                    .certify(fields("acme-vid-1", &license_id, &instance))
                    .unwrap();
                let mut wire = tessera_server::master::wire_certificate(&signed);
                wire.lifetime_ms *= 10;
                wire
            }
            Forgery::OtherRun => tessera_server::master::wire_certificate(
                &key.certify(fields("acme-vid-1", &license_id, "P1.000000000000"))
                    .unwrap(),
            ),
            Forgery::OtherVid => tessera_server::master::wire_certificate(
                &key.certify(fields("acme-vid-2", "master-of-vid-2", &instance))
                    .unwrap(),
            ),
        };
        let lease_ms = if matches!(forgery, Forgery::Tampered) {
            certificate.lifetime_ms
        } else {
            lifetime_ms
        };
        let grant = tessera_proto::Grant {
            grant_id: "forged-grant".into(),
            feature: "vid:acme-vid-1".into(),
            count: 1,
            server_id: "M".into(),
            lease_ms,
            heartbeat_interval_ms: 15_000,
            servers: vec![tessera_proto::ServerInfo {
                id: "M".into(),
                address: own.to_string(),
            }]
            .into(),
            converted: false,
            proof: tessera_proto::Proof("forged".into()),
            holding: None,
            certificate: Some(certificate),
            answer: None,
        };
        (200, serde_json::to_value(&grant).unwrap())
    })
    .await
}

/// A production server asks a fake master that answers with a forged
/// certificate: one changed after signing, one for another run, one for
/// another VID. Each is refused with its reason, and the VID's code is not
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_certificate_from_a_fake_master_is_refused_with_its_reason() {
    let fixture = Fixture::new().await;
    let (license, _) = enrol_master(&fixture).await;
    let master_data = fixture.path().join("server-M").join("data");
    let key = tessera_server::master::key::read(&master_data).unwrap();
    let license_id =
        tessera_core::master::MasterLicenseFile::parse(&std::fs::read_to_string(&license).unwrap())
            .unwrap()
            .license
            .id()
            .to_string();
    let cad = fixture
        .sign("[[license]]\nfeature = \"cad\"\nseats = 5\nexpiry = \"permanent\"\nhostid = \"vid:acme-vid-1\"\n")
        .await;
    let token = fixture.path().join("production.token");
    std::fs::write(&token, "a-token-the-fake-master-takes").unwrap();
    for (n, (forgery, reason)) in [
        (Forgery::Tampered, "signature does not check"),
        (Forgery::OtherRun, "not to this server"),
        (Forgery::OtherVid, "not among `license_files`"),
    ]
    .into_iter()
    .enumerate()
    {
        let fake = fake_master(key.clone(), license_id.clone(), forgery).await;
        let mut spec = ServerSpec::new(cad.clone());
        spec.server_id = format!("P{}", n + 1);
        spec.config_tables = format!(
            "[vid]\nmasters = [\"{fake}\"]\nlicense_files = [\"{}\"]\nplain_http = true\n\
             token_file = \"{}\"\n",
            license.display(),
            token.display()
        );
        let mut server = fixture.server(spec);
        server.start(StartMode::NewPool).await;
        let status = server
            .poll(
                "the forged certificate refused",
                SERVER_READY_TIMEOUT,
                |s| vid_reason_has(s, reason),
            )
            .await;
        println!(
            "{forgery:?}: {}",
            status
                .server
                .vid
                .as_ref()
                .and_then(|v| v.reason.clone())
                .unwrap_or_default()
        );
        assert!(!vid_held(&status), "{forgery:?}: {status:#?}");
        assert_eq!(cad_limit(&status), 0, "{forgery:?}");
        server.kill();
    }
}
