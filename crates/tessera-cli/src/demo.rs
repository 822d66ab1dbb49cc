//! `tessera demo`: a vendor key, a demo license, a local server on loopback,
//! clients checking seats out, a `kill -9` and restart with every grant
//! intact, and the status after each step.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tessera_client::{Client, ClientConfig, SeatGuard, SeatState};
use tokio::process::{Child, Command};

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
    child: Option<Child>,
}

impl DemoServer {
    async fn start(&mut self) -> Result<()> {
        let exe = std::env::current_exe().context("cannot find the tessera binary")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let child = Command::new(exe)
            .arg("server")
            .arg("--config")
            .arg(&self.config)
            .arg("--new-pool")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start `tessera server`")?;
        self.child = Some(child);
        wait_ready(&self.address, &self.log).await
    }

    /// `kill -9`: no clean shutdown, no flush.
    async fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("cannot kill the server")?;
        }
        Ok(())
    }

    /// SIGTERM, then wait for the exit.
    async fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                // SAFETY: sending a signal to our own child process.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                child.kill().await?;
            }
        }
        Ok(())
    }
}

async fn wait_ready(address: &str, log: &Path) -> Result<()> {
    let client = Client::new(ClientConfig::new([address]))?;
    let deadline = tokio::time::Instant::now() + SERVER_READY_TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        if let Ok(status) = client.status().await {
            if status.server.state == "serving" {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tail = std::fs::read_to_string(log).unwrap_or_default();
    bail!("server at {address} did not answer within {SERVER_READY_TIMEOUT:?}; its log:\n{tail}")
}

/// A port on loopback that nothing listens on right now.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind loopback")?;
    Ok(listener.local_addr()?.port())
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
        license_cmd::sign_one(&key, demo_code("sim", 4))?,
    ];
    println!(
        "  vendor `acme`, key {}: `cad` 10 seats, `sim` 4 seats, versions 1.0-2.99",
        key.public().key_id()
    );

    step("The administrator writes the pool file and starts the server");
    let mut server = write_pool(&dir, &key.public(), &codes)?;
    server.start().await?;
    println!("  server {} serving on {}", server.id, server.address);

    step("Clients check seats out");
    let mut seats: Vec<(String, SeatGuard)> = Vec::new();
    for (user, feature, count) in [
        ("alice", "cad", 2),
        ("bob", "cad", 3),
        ("carol", "cad", 4),
        ("dave", "sim", 4),
    ] {
        let seat = client_for(&server.address, user)?
            .checkout(feature, "2.0", count)
            .await
            .with_context(|| format!("{user} could not check out `{feature}`"))?;
        println!(
            "  {user:<6} {count} seats of `{feature}` -> grant {}",
            seat.grant_id()
        );
        seats.push((user.to_string(), seat));
    }
    match client_for(&server.address, "erin")?
        .checkout("cad", "2.0", 2)
        .await
    {
        Ok(_) => bail!("erin got 2 seats of `cad` although only 1 was left"),
        Err(err) => println!("  erin   2 seats of `cad` -> refused: {err}"),
    }
    print_status(&server.address).await?;

    step(&format!(
        "kill -9 server {} while the clients hold their seats",
        server.id
    ));
    server.kill().await?;
    println!("  killed; the clients keep their seats until their leases run out");
    server.start().await?;
    println!("  restarted; grants are restored from the durable store");
    print_status(&server.address).await?;

    step("The clients renew on the restarted server");
    for (user, seat) in &seats {
        wait_renewed(seat).await;
        match seat.state() {
            SeatState::Held { server_id, .. } => println!(
                "  {user:<6} holds grant {} on server {server_id}",
                seat.grant_id()
            ),
            SeatState::Lost { reason } => bail!("{user} lost the seat: {reason}"),
        }
    }

    if keep {
        step("The pool keeps serving (Ctrl-C stops it)");
        println!("  tessera status --server {}", server.address);
        println!(
            "  tessera checkout cad --server {} --hold 30",
            server.address
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
    print_status(&server.address).await?;
    server.stop().await?;
    println!("\nDemo done.");
    Ok(())
}

fn client_for(address: &str, user: &str) -> Result<Client> {
    let mut config = ClientConfig::new([address]);
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

/// Waits (bounded by one lease) until the guard's validity moves forward.
async fn wait_renewed(seat: &SeatGuard) {
    let before = seat.valid_until();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(seat.grant().lease_ms);
    while seat.valid_until() <= before && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn write_pool(
    dir: &Path,
    vendor: &tessera_core::VendorPublicKey,
    codes: &[tessera_core::LicenseCode],
) -> Result<DemoServer> {
    let address = format!("127.0.0.1:{}", free_port()?);
    let pool = format!(
        "pool_id = \"demo\"\nsequence = 1\n\n[[servers]]\nid = \"A\"\naddress = \"{address}\"\n\n{}",
        tessera_core::LicenseCode::write_file(codes)
    );
    // Check it the way the server will.
    tessera_core::PoolFile::parse(&pool).context("the demo pool file is invalid")?;
    std::fs::write(dir.join("pool.toml"), pool)?;
    let config = format!(
        "server_id = \"A\"\npool_file = \"pool.toml\"\ndata_dir = \"data-A\"\n\n{}",
        keys::config_snippet(vendor)
    );
    let config_path = dir.join("tessera-A.toml");
    std::fs::write(&config_path, config)?;
    println!("  pool file {}", dir.join("pool.toml").display());
    Ok(DemoServer {
        id: "A".into(),
        address,
        config: config_path,
        log: dir.join("server-A.log"),
        child: None,
    })
}
