//! `tessera demo`: a vendor key, a demo license, a local server on loopback,
//! clients checking seats out, a `kill -9` and restart with every grant
//! intact, and the status after each step.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tessera_client::{Admin, Client, ClientConfig, ClientError, ClientTls, SeatGuard, SeatState};
use tessera_testkit::{Http, Process, LOOPBACK_REQUEST_TIMEOUT};

use crate::keys;
use crate::license_cmd::{self, UnsignedText};
use crate::pool_cmd::{self, ServerSpec};
use crate::view;

/// How long the demo waits for a server to answer after starting it.
const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(15);

pub(crate) struct DemoServer {
    pub(crate) id: String,
    pub(crate) address: String,
    pub(crate) config: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) process: Option<Process>,
    /// Trusts the pool CA.
    pub(crate) http: Http,
    /// Extra environment of the server process.
    pub(crate) env: Vec<(String, String)>,
}

/// What the demo's clients and administrator hold: the pool CA, the read
/// token, and (built into the program) the vendor's public key.
struct Trust {
    ca_pem: Vec<u8>,
    read_token: String,
    vendor: tessera_core::VendorPublicKey,
}

impl Trust {
    fn config(&self, addresses: Vec<String>) -> ClientConfig {
        let mut config = ClientConfig::new(addresses);
        config.tls = ClientTls::PoolCa(self.ca_pem.clone());
        config.trust = tessera_client::Trust::Vendor(vec![self.vendor.clone()]);
        config
    }

    fn http(&self) -> Http {
        Http::tls(&self.ca_pem, None, LOOPBACK_REQUEST_TIMEOUT)
    }
}

impl DemoServer {
    /// Longest a server may take to exit after SIGTERM.
    const STOP_TIMEOUT: Duration = Duration::from_secs(10);

    async fn start(&mut self) -> Result<()> {
        self.spawn()?;
        self.wait_ready().await
    }

    pub(crate) fn spawn(&mut self) -> Result<()> {
        let exe = std::env::current_exe().context("cannot find the tessera binary")?;
        let mut command = tessera_testkit::server_command(&exe, &self.config, &["--new-pool"]);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let process =
            Process::start(command, &self.log).context("cannot start `tessera server`")?;
        self.process = Some(process);
        Ok(())
    }

    pub(crate) async fn wait_ready(&self) -> Result<()> {
        let process = self.process.as_ref().context("the server is not running")?;
        match process
            .wait_status(&self.http, &self.address, SERVER_READY_TIMEOUT, |status| {
                status.server.state == "serving"
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(not_ready) => bail!(
                "server at {} did not answer within {SERVER_READY_TIMEOUT:?} ({not_ready}); its log:\n{}",
                self.address,
                process.log()
            ),
        }
    }

    /// `kill -9`: no clean shutdown, no flush.
    fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
    }

    /// SIGTERM, then wait for the exit (killed if it does not come).
    pub(crate) async fn stop(&mut self) {
        if let Some(process) = self.process.take() {
            process.terminate(Self::STOP_TIMEOUT).await;
        }
    }
}

pub(crate) fn step(text: &str) {
    println!("\n==> {text}");
}

fn demo_code(feature: &str, seats: u32) -> UnsignedText {
    UnsignedText {
        id: Some(format!("demo-{feature}")),
        feature: feature.into(),
        seats,
        version_min: "1.0".into(),
        version_max: "2.99".into(),
        issued: None,
        expiry: "permanent".into(),
        hostid: "any".into(),
        borrow_threshold_percent: 80,
        // Short terms, so that the demo's restart shows renewals quickly.
        heartbeat_interval_s: 2,
        lease_s: 8,
        ..Default::default()
    }
}

pub async fn run(keep: bool, dir: Option<PathBuf>) -> Result<()> {
    let (dir, _temp) = demo_dir(dir)?;
    println!("Tessera demo in {}", dir.display());
    let (vendor, codes) = sign_codes(&dir)?;
    let (mut servers, trust) = start_pool(&dir, vendor, &codes).await?;
    let addresses: Vec<String> = servers.iter().map(|s| s.address.clone()).collect();
    let seats = check_out(&trust, &addresses).await?;
    let leader = deny_past_the_limit(&trust, &servers, &addresses).await?;
    kill_leader(&trust, &mut servers, leader, &seats).await?;

    step(&format!(
        "Server {} comes back and rejoins as a follower",
        servers[leader].id
    ));
    servers[leader].start().await?;
    print_status(&trust, &servers[leader].address).await?;

    if keep {
        keep_serving(&dir, &addresses, &trust.read_token).await;
    }
    check_in(&trust, &servers, &addresses, seats).await?;
    for server in &mut servers {
        server.stop().await;
    }
    println!("\nDemo done.");
    Ok(())
}

/// The demo's directory: `dir`, made if missing, or a temporary one that
/// lives as long as the returned guard.
pub(crate) fn demo_dir(dir: Option<PathBuf>) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            Ok((dir, None))
        }
        None => {
            let temp = tempfile::Builder::new().prefix("tessera-demo-").tempdir()?;
            Ok((temp.path().to_path_buf(), Some(temp)))
        }
    }
}

fn sign_codes(
    dir: &Path,
) -> Result<(
    tessera_core::VendorPublicKey,
    Vec<tessera_core::LicenseCode>,
)> {
    step("A vendor makes a key pair and signs license codes");
    let key = keys::generate("acme")?;
    keys::write_pair(&key, dir)?;
    let codes = vec![
        license_cmd::sign_one(&key, demo_code("cad", 10))?,
        license_cmd::sign_one(&key, demo_code("sim", 3))?,
    ];
    println!(
        "  vendor `acme`, key {}: `cad` 10 seats, `sim` 3 seats, versions 1.0-2.99",
        key.public().key_id()
    );
    Ok((key.public(), codes))
}

async fn start_pool(
    dir: &Path,
    vendor: tessera_core::VendorPublicKey,
    codes: &[tessera_core::LicenseCode],
) -> Result<(Vec<DemoServer>, Trust)> {
    step(
        "The administrator makes the pool's CA, certificates and tokens, and starts three servers",
    );
    let (mut servers, trust) = write_pool(dir, vendor, codes)?;
    for server in &mut servers {
        server.spawn()?;
    }
    for server in &servers {
        server.wait_ready().await?;
        println!("  server {} serving on {} (TLS)", server.id, server.address);
    }
    Ok((servers, trust))
}

/// Each user's seats, checked out from the user's nearest server.
async fn check_out(trust: &Trust, addresses: &[String]) -> Result<Vec<(String, SeatGuard)>> {
    step("Clients check seats out, each from its nearest server");
    println!(
        "  each program holds vendor `acme`'s public key {} and accepts a grant only if its \
         server signed it, over this request or over the TLS connection it came on, and every \
         code behind it is acme's",
        trust.vendor.key_id()
    );
    let mut seats: Vec<(String, SeatGuard)> = Vec::new();
    for (first, user, feature, count) in [
        (0, "alice", "cad", 2),
        (1, "bob", "cad", 1),
        (2, "carol", "cad", 2),
        (0, "dave", "sim", 1),
    ] {
        let seat = client_for(trust, addresses, first, user)?
            .checkout(feature, "2.0", count)
            .await
            .with_context(|| format!("{user} could not check out `{feature}`"))?;
        println!(
            "  {user:<6} {count} {} of `{feature}` from server {} -> grant {}",
            if count == 1 { "seat " } else { "seats" },
            seat.server_id(),
            seat.grant_id()
        );
        seats.push((user.to_string(), seat));
    }
    Ok(seats)
}

/// Erin asks the leader for more seats than are left and is denied;
/// returns the leader's index.
async fn deny_past_the_limit(
    trust: &Trust,
    servers: &[DemoServer],
    addresses: &[String],
) -> Result<usize> {
    // The leader learns what each server holds from its reports, one
    // interval behind: erin asks once they are in.
    let leader = leader_of(trust, addresses).await?;
    wait_in_use(trust, &servers[leader].address, 6).await;
    let asked_at = tokio::time::Instant::now();
    match client_for(trust, &addresses[leader..=leader], 0, "erin")?
        .checkout("cad", "2.0", 6)
        .await
    {
        Ok(_) => bail!("erin got 6 seats of `cad` although the pool had 5 left"),
        Err(ClientError::NoSeatsAvailable { message, .. }) => println!(
            "  erin   6 seats of `cad` from server {} -> denied after {} ms: {}",
            servers[leader].id,
            asked_at.elapsed().as_millis(),
            message
                .split_once(": ")
                .map_or(message.as_str(), |(_address, text)| text)
        ),
        Err(err) => bail!("erin was not denied as expected: {err}"),
    }
    print_status(trust, &servers[leader].address).await?;
    Ok(leader)
}

/// `kill -9` of the leader: another server leads, and the seats it held
/// move to the others without their clients noticing.
async fn kill_leader(
    trust: &Trust,
    servers: &mut [DemoServer],
    leader: usize,
    seats: &[(String, SeatGuard)],
) -> Result<()> {
    let killed = servers[leader].id.clone();
    step(&format!(
        "kill -9 the leader, server {killed}, while the clients hold their seats"
    ));
    let on_killed: Vec<bool> = seats
        .iter()
        .map(|(_, seat)| seat.server_id() == killed)
        .collect();
    let killed_at = tokio::time::Instant::now();
    servers[leader].kill();
    let others: Vec<String> = servers
        .iter()
        .filter(|s| s.id != killed)
        .map(|s| s.address.clone())
        .collect();
    let new_leader = others[leader_of(trust, &others).await?].clone();
    println!(
        "  server {} leads after {} ms",
        servers
            .iter()
            .find(|s| s.address == new_leader)
            .map_or("?", |s| s.id.as_str()),
        killed_at.elapsed().as_millis()
    );
    for (index, (user, seat)) in seats.iter().enumerate() {
        if on_killed[index] {
            wait_moved(seat, &killed).await;
            match seat.state() {
                SeatState::Held { server_id, .. } => println!(
                    "  {user:<6} renewed grant {} on server {server_id} after {} ms, without noticing",
                    seat.grant_id(),
                    killed_at.elapsed().as_millis()
                ),
                SeatState::Lost { reason } => bail!("{user} lost the seat: {reason}"),
            }
        }
    }
    print_status(trust, &new_leader).await
}

/// Leaves the pool serving, with the commands to try on it, until Ctrl-C
/// or SIGTERM; then the demo checks its seats in and stops its servers.
async fn keep_serving(dir: &Path, addresses: &[String], read_token: &str) {
    step("The pool keeps serving (Ctrl-C or SIGTERM stops it)");
    let pool_dir = dir.join("pool");
    println!(
        "  export TESSERA_CA_FILE={}",
        pool_dir.join("ca.pem").display()
    );
    println!(
        "  tessera status --server {} --token-file {}",
        addresses.join(","),
        pool_dir.join("read.token").display()
    );
    println!(
        "  tessera checkout cad --server {} --hold 30",
        addresses.join(",")
    );
    println!(
        "  dashboard: https://{}/dashboard#token={}",
        addresses[0],
        read_token.trim()
    );
    println!(
        "    (the pool's own CA signed the certificate: the browser warns until {} is imported)",
        pool_dir.join("ca.pem").display()
    );
    println!("  configs, keys and tokens: {}", dir.display());
    crate::shutdown_signal().await;
}

async fn check_in(
    trust: &Trust,
    servers: &[DemoServer],
    addresses: &[String],
    seats: Vec<(String, SeatGuard)>,
) -> Result<()> {
    step("The clients check their seats in");
    for (user, seat) in seats {
        seat.release()
            .await
            .with_context(|| format!("{user} could not check in"))?;
    }
    // The leader's picture follows the servers' reports, one interval
    // behind; copies left on a server the clients failed over from go
    // within two.
    let leader = leader_of(trust, addresses).await?;
    wait_in_use(trust, &servers[leader].address, 0).await;
    print_status(trust, &servers[leader].address).await
}

/// The index in `addresses` of the server that says it leads and serves
/// (a bounded wait).
async fn leader_of(trust: &Trust, addresses: &[String]) -> Result<usize> {
    tessera_testkit::wait_for_leader(&trust.http(), addresses, SERVER_READY_TIMEOUT)
        .await
        .with_context(|| {
            format!("no server of the pool became leader within {SERVER_READY_TIMEOUT:?}")
        })
}

/// Waits (bounded) until the status of the server at `address` shows
/// `seats` in use over the whole pool.
async fn wait_in_use(trust: &Trust, address: &str, seats: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        if let Ok(client) = Client::new(trust.config(vec![address.to_string()])) {
            if let Ok(status) = client.status().await {
                let in_use: u32 = status
                    .features
                    .iter()
                    .flat_map(|f| &f.servers)
                    .map(|row| row.in_use.unwrap_or(0))
                    .sum();
                if in_use == seats {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded by one lease) until the guard holds its seat elsewhere.
async fn wait_moved(seat: &SeatGuard, from: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(seat.grant().lease_ms);
    while seat.server_id() == from && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client that asks server `first` first, then the others in order.
fn client_for(trust: &Trust, addresses: &[String], first: usize, user: &str) -> Result<Client> {
    let mut order = addresses.to_vec();
    order.rotate_left(first);
    let mut config = trust.config(order);
    config.user = user.to_string();
    config.client_id = format!("{user}-{}", std::process::id());
    Ok(Client::new(config)?)
}

/// The status as the administrator sees it, with the read token.
async fn print_status(trust: &Trust, address: &str) -> Result<()> {
    let config = trust.config(vec![address.to_string()]);
    let status = Admin::new(config, trust.read_token.clone())?
        .pool_status()
        .await?;
    println!();
    print!("{}", view::render(&status));
    Ok(())
}

/// `tessera pool init` for three servers on loopback, the vendor's codes
/// pasted into each server's pool file, as an administrator would.
fn write_pool(
    dir: &Path,
    vendor: tessera_core::VendorPublicKey,
    codes: &[tessera_core::LicenseCode],
) -> Result<(Vec<DemoServer>, Trust)> {
    let ids = ["A", "B", "C"];
    let mut specs = Vec::new();
    for id in ids {
        let address = tessera_testkit::free_address().context("cannot bind loopback")?;
        specs.push(ServerSpec {
            id: id.to_string(),
            address,
        });
    }
    let out = dir.join("pool");
    pool_cmd::write_pool(&pool_cmd::InitArgs {
        pool_id: "demo".into(),
        servers: specs.clone(),
        vendor_keys: vec![dir.join("acme.pub")],
        out: out.clone(),
        production_token: false,
    })?;
    let trust = Trust {
        ca_pem: std::fs::read(out.join("ca.pem"))?,
        read_token: std::fs::read_to_string(out.join("read.token"))?,
        vendor,
    };
    let licenses = format!(
        "[distribution.cad]\nA = 4\nB = 3\nC = 3\n\n{}",
        tessera_core::LicenseCode::write_file(codes)
    );
    let mut servers = Vec::new();
    for spec in specs {
        let server_dir = out.join(&spec.id);
        let pool_path = server_dir.join("pool.toml");
        let pool = std::fs::read_to_string(&pool_path)? + &licenses;
        // Check it the way the servers will.
        tessera_core::PoolFile::parse(&pool).context("the demo pool file is invalid")?;
        std::fs::write(&pool_path, pool)?;
        servers.push(DemoServer {
            id: spec.id,
            address: spec.address,
            config: server_dir.join("tessera.toml"),
            log: server_dir.join("server.log"),
            process: None,
            http: trust.http(),
            env: Vec::new(),
        });
    }
    println!(
        "  tessera pool init: CA, server certificates and tokens in {}",
        out.display()
    );
    Ok((servers, trust))
}
