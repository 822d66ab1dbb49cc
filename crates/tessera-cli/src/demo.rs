//! `tessera demo`: a vendor key, a demo license, a local server on loopback,
//! clients checking seats out, a `kill -9` and restart with every grant
//! intact, and the status after each step.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tessera_client::{Client, ClientConfig, ClientError, SeatGuard, SeatState};
use tessera_testkit::Process;

use crate::keys;
use crate::license_cmd::{self, UnsignedText};
use crate::view;

/// How long the demo waits for a server to answer after starting it.
const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(15);

struct DemoServer {
    id: String,
    address: String,
    config: PathBuf,
    log: PathBuf,
    process: Option<Process>,
}

impl DemoServer {
    /// Longest a server may take to exit after SIGTERM.
    const STOP_TIMEOUT: Duration = Duration::from_secs(10);

    async fn start(&mut self) -> Result<()> {
        self.spawn()?;
        self.wait_ready().await
    }

    fn spawn(&mut self) -> Result<()> {
        let exe = std::env::current_exe().context("cannot find the tessera binary")?;
        let command = tessera_testkit::server_command(&exe, &self.config, &["--new-pool"]);
        let process =
            Process::start(command, &self.log).context("cannot start `tessera server`")?;
        self.process = Some(process);
        Ok(())
    }

    async fn wait_ready(&self) -> Result<()> {
        let process = self.process.as_ref().context("the server is not running")?;
        let http = tessera_testkit::http_client(tessera_testkit::LOOPBACK_REQUEST_TIMEOUT);
        match process
            .wait_status(&http, &self.address, SERVER_READY_TIMEOUT, |status| {
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
    async fn stop(&mut self) {
        if let Some(process) = self.process.take() {
            process.terminate(Self::STOP_TIMEOUT).await;
        }
    }
}

fn step(text: &str) {
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
    }
}

pub async fn run(keep: bool, dir: Option<PathBuf>) -> Result<()> {
    let temp;
    let dir = match dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            dir
        }
        None => {
            temp = tempfile::Builder::new().prefix("tessera-demo-").tempdir()?;
            temp.path().to_path_buf()
        }
    };
    println!("Tessera demo in {}", dir.display());

    step("A vendor makes a key pair and signs license codes");
    let key = keys::generate("acme")?;
    keys::write_pair(&key, &dir)?;
    let codes = vec![
        license_cmd::sign_one(&key, demo_code("cad", 10))?,
        license_cmd::sign_one(&key, demo_code("sim", 3))?,
    ];
    println!(
        "  vendor `acme`, key {}: `cad` 10 seats, `sim` 3 seats, versions 1.0-2.99",
        key.public().key_id()
    );

    step("The administrator writes the pool file and starts a pool of three servers");
    let mut servers = write_pool(&dir, &key.public(), &codes)?;
    for server in &mut servers {
        server.spawn()?;
    }
    for server in &servers {
        server.wait_ready().await?;
        println!("  server {} serving on {}", server.id, server.address);
    }
    let addresses: Vec<String> = servers.iter().map(|s| s.address.clone()).collect();

    step("Clients check seats out, each from its nearest server");
    let mut seats: Vec<(String, SeatGuard)> = Vec::new();
    for (first, user, feature, count) in [
        (0, "alice", "cad", 2),
        (1, "bob", "cad", 1),
        (2, "carol", "cad", 2),
        (0, "dave", "sim", 1),
    ] {
        let seat = client_for(&addresses, first, user)?
            .checkout(feature, "2.0", count)
            .await
            .with_context(|| format!("{user} could not check out `{feature}`"))?;
        println!(
            "  {user:<6} {count} seats of `{feature}` from server {} -> grant {}",
            seat.server_id(),
            seat.grant_id()
        );
        seats.push((user.to_string(), seat));
    }
    // The leader learns what each server holds from its reports, one
    // interval behind: erin asks once they are in.
    let leader = leader_of(&addresses).await?;
    wait_in_use(&servers[leader].address, 6).await;
    let asked_at = tokio::time::Instant::now();
    match client_for(&addresses[leader..=leader], 0, "erin")?
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
    print_status(&servers[leader].address).await?;

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
    let new_leader = others[leader_of(&others).await?].clone();
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
    print_status(&new_leader).await?;

    step(&format!(
        "Server {killed} comes back and rejoins as a follower"
    ));
    servers[leader].start().await?;
    print_status(&servers[leader].address).await?;

    if keep {
        step("The pool keeps serving (Ctrl-C stops it)");
        println!("  tessera status --server {}", addresses.join(","));
        println!(
            "  tessera checkout cad --server {} --hold 30",
            addresses.join(",")
        );
        println!("  config and keys: {}", dir.display());
        let _ = tokio::signal::ctrl_c().await;
    }

    step("The clients check their seats in");
    for (user, seat) in seats {
        seat.release()
            .await
            .with_context(|| format!("{user} could not check in"))?;
    }
    // The leader's picture follows the servers' reports, one interval
    // behind; copies left on a server the clients failed over from go
    // within two.
    let leader = leader_of(&addresses).await?;
    wait_in_use(&servers[leader].address, 0).await;
    print_status(&servers[leader].address).await?;
    for server in &mut servers {
        server.stop().await;
    }
    println!("\nDemo done.");
    Ok(())
}

/// The index in `addresses` of the server that says it leads and serves
/// (a bounded wait).
async fn leader_of(addresses: &[String]) -> Result<usize> {
    let http = tessera_testkit::http_client(tessera_testkit::LOOPBACK_REQUEST_TIMEOUT);
    tessera_testkit::wait_for_leader(&http, addresses, SERVER_READY_TIMEOUT)
        .await
        .with_context(|| {
            format!("no server of the pool became leader within {SERVER_READY_TIMEOUT:?}")
        })
}

/// Waits (bounded) until the status of the server at `address` shows
/// `seats` in use over the whole pool.
async fn wait_in_use(address: &str, seats: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        if let Ok(client) = Client::new(ClientConfig::new([address])) {
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
fn client_for(addresses: &[String], first: usize, user: &str) -> Result<Client> {
    let mut order = addresses.to_vec();
    order.rotate_left(first);
    let mut config = ClientConfig::new(order);
    config.user = user.to_string();
    config.client_id = format!("{user}-{}", std::process::id());
    Ok(Client::new(config)?)
}

async fn print_status(address: &str) -> Result<()> {
    let status = Client::new(ClientConfig::new([address]))?.status().await?;
    println!();
    print!("{}", view::render(&status));
    Ok(())
}

fn write_pool(
    dir: &Path,
    vendor: &tessera_core::VendorPublicKey,
    codes: &[tessera_core::LicenseCode],
) -> Result<Vec<DemoServer>> {
    let ids = ["A", "B", "C"];
    // One key for the pool, shared by its servers: it proves their grants.
    crate::keys::write_pool_key(&dir.join("pool.key"))?;
    let mut servers_toml = String::new();
    let mut servers = Vec::new();
    for id in ids {
        let address = tessera_testkit::free_address().context("cannot bind loopback")?;
        servers_toml.push_str(&tessera_testkit::server_entry(id, &address));
        let config = tessera_testkit::ServerConfig {
            server_id: id,
            pool_file: "pool.toml",
            data_dir: &format!("data-{id}"),
            pool_key_file: "pool.key",
            top: "",
            vendor: &vendor.vendor,
            public_key: &vendor.to_base64(),
            tables: "",
        }
        .text();
        let config_path = dir.join(format!("tessera-{id}.toml"));
        std::fs::write(&config_path, config)?;
        servers.push(DemoServer {
            id: id.into(),
            address,
            config: config_path,
            log: dir.join(format!("server-{id}.log")),
            process: None,
        });
    }
    let pool = format!(
        "{}{servers_toml}[distribution.cad]\nA = 4\nB = 3\nC = 3\n\n{}",
        tessera_testkit::pool_file_head("demo"),
        tessera_core::LicenseCode::write_file(codes)
    );
    // Check it the way the servers will.
    tessera_core::PoolFile::parse(&pool).context("the demo pool file is invalid")?;
    std::fs::write(dir.join("pool.toml"), pool)?;
    println!("  pool file {}", dir.join("pool.toml").display());
    Ok(servers)
}
