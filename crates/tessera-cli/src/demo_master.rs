//! `tessera demo --master` (seed 003): a master server lends a VID to three
//! production servers, refuses a fourth, and hands the fourth a slot as soon
//! as one of the three stops; all on loopback, each pool with its own CA.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tessera_client::{Admin, Client, ClientConfig, ClientTls, StatusResponse, Trust};
use tessera_core::master::{MasterLicenseFields, MasterLicenseFile};
use tessera_core::{CivilDate, Expiry};
use tessera_server::hostid::{self, Hostid};
use tessera_testkit::{Http, LOOPBACK_REQUEST_TIMEOUT};

use crate::demo::{demo_dir, step, DemoServer};
use crate::keys;
use crate::license_cmd::{self, UnsignedText};
use crate::pool_cmd::{self, ServerSpec};

const VID: &str = "acme-demo-vid";
/// Production servers the master license admits at once.
const SERVERS: u32 = 3;
/// Certificate lifetime: short, so that the demo's hand-over is quick to see.
const LIFETIME_S: u32 = 8;
/// How long the demo waits for the production servers to hear from the master.
const VID_WAIT: Duration = Duration::from_secs(20);

/// A pool of one the demo started, and what its clients trust.
struct DemoPool {
    server: DemoServer,
    ca_pem: Vec<u8>,
    out: PathBuf,
}

impl DemoPool {
    fn client(&self, trust: Trust) -> Result<Client> {
        let mut config = ClientConfig::new([self.server.address.clone()]);
        config.tls = ClientTls::PoolCa(self.ca_pem.clone());
        config.trust = trust;
        Ok(Client::new(config)?)
    }

    async fn status(&self) -> Result<StatusResponse> {
        Ok(self.client(Trust::AnyServer)?.status().await?)
    }
}

pub async fn run(dir: Option<PathBuf>) -> Result<()> {
    let (dir, _temp) = demo_dir(dir)?;
    println!("Tessera master demo in {}", dir.display());

    step("A vendor makes a key pair");
    let vendor = keys::generate("acme")?;
    keys::write_pair(&vendor, &dir)?;
    println!("  vendor `acme`, key {}", vendor.public().key_id());

    step("The administrator runs `tessera master init` on the master's physical host");
    let (master_host, env) = master_host();
    let mut master = write_pool(&dir, "M", &dir.join("acme.pub"))?;
    let data_dir = master.out.join("M").join("data");
    let (master_key, _) = tessera_server::master::key::init(&data_dir)?;
    println!(
        "  master key {} in {}, host {master_host}",
        master_key.public().key_id(),
        data_dir.display()
    );

    step(&format!(
        "The vendor signs a master license: VID {VID} for {SERVERS} production servers on that host"
    ));
    let license = MasterLicenseFile::sign(
        &vendor,
        MasterLicenseFields {
            id: "demo-master".into(),
            vendor: vendor.vendor.clone(),
            vid: VID.into(),
            servers: SERVERS,
            master_hostid: master_host.clone(),
            master_key: master_key.public(),
            issued: license_cmd::today(),
            expiry: Expiry::EndOf(CivilDate::from_unix_ms(
                license_cmd::unix_ms_now() + 365 * 24 * 3600 * 1000,
            )),
            certificate_lifetime_s: LIFETIME_S,
            masters: 1,
        },
    )?;
    let license_path = dir.join("master.toml");
    std::fs::write(&license_path, license.write())?;
    let cad = license_cmd::sign_one(
        &vendor,
        UnsignedText {
            id: Some("demo-cad".into()),
            feature: "cad".into(),
            seats: 5,
            version_min: "1.0".into(),
            version_max: "2.99".into(),
            issued: None,
            expiry: "permanent".into(),
            hostid: format!("vid:{VID}"),
            borrow_threshold_percent: 80,
            heartbeat_interval_s: 2,
            lease_s: 8,
            ..Default::default()
        },
    )?;
    println!("  and a code for the production pools: `cad` 5 seats, bound to vid:{VID}");

    step("The master starts: its pool serves the license's slot code");
    append(
        &master.out.join("M").join("pool.toml"),
        &tessera_core::LicenseCode::write_file(&license.slot_codes),
    )?;
    prepend(
        &master.server.config,
        &format!("master_license_file = \"{}\"\n", license_path.display()),
    )?;
    master.server.env = env;
    master.server.spawn()?;
    master.server.wait_ready().await?;
    println!("  master M serving on {} (TLS)", master.server.address);

    step("Four production servers start, each asking the master for the VID");
    let mut production = Vec::new();
    for id in ["P1", "P2", "P3", "P4"] {
        let mut pool = write_pool(&dir, id, &dir.join("acme.pub"))?;
        append(
            &pool.out.join(id).join("pool.toml"),
            &tessera_core::LicenseCode::write_file(std::slice::from_ref(&cad)),
        )?;
        append(
            &pool.server.config,
            &format!(
                "\n[vid]\nmasters = [\"{}\"]\nlicense_files = [\"{}\"]\nca_file = \"{}\"\n\
                 token_file = \"{}\"\n",
                master.server.address,
                license_path.display(),
                master.out.join("ca.pem").display(),
                master.out.join("production.token").display()
            ),
        )?;
        pool.server.spawn()?;
        production.push(pool);
    }
    for pool in &production {
        pool.server.wait_ready().await?;
    }
    let statuses = wait_for_answers(&production).await?;
    for (pool, status) in production.iter().zip(&statuses) {
        println!("  {}", describe(&pool.server.id, status));
    }

    step("The master's view: `tessera master status`");
    print_master_status(&master).await?;

    step("A program holding vendor `acme`'s key checks out `cad` on each production server");
    for pool in &production {
        let client = pool.client(Trust::Vendor(vec![vendor.public()]))?;
        match client.checkout("cad", "1.0", 1).await {
            Ok(seat) => {
                println!(
                    "  {}: granted, and checked offline: vendor key -> master license -> \
                     certificate -> {}'s answer key",
                    pool.server.id, pool.server.id
                );
                seat.release().await?;
            }
            Err(err) => println!("  {}: {}", pool.server.id, first_sentence(&err.to_string())),
        }
    }

    let stopping = statuses
        .iter()
        .position(held)
        .context("no production server holds the VID")?;
    let waiting = statuses
        .iter()
        .position(|s| !held(s))
        .context("every production server holds the VID")?;
    step(&format!(
        "{} stops cleanly and gives its slot back; {} takes it",
        production[stopping].server.id, production[waiting].server.id
    ));
    production[stopping].server.stop().await;
    let status = wait_until(&production[waiting], held).await?;
    println!("  {}", describe(&production[waiting].server.id, &status));

    for pool in &mut production {
        pool.server.stop().await;
    }
    master.server.stop().await;
    println!("\nDemo done.");
    Ok(())
}

/// This machine's hostid; on a machine without a stable one (a container,
/// a virtual machine), a stand-in that the demo's master alone is told of
/// through the test-only override.
fn master_host() -> (String, Vec<(String, String)>) {
    match hostid::inspect() {
        Hostid::Stable { hostid, .. } => (hostid, Vec::new()),
        Hostid::Refused { reason } => {
            let stand_in = "mid-00000000000de300".to_string();
            println!("  ({reason}; the demo's master stands for a physical host, {stand_in})");
            let env = vec![
                (
                    tessera_server::pool::TEST_FAULTS_ENV.to_string(),
                    "1".to_string(),
                ),
                (hostid::TEST_HOSTID_ENV.to_string(), stand_in.clone()),
            ];
            (stand_in, env)
        }
    }
}

/// A pool of one server `id` on loopback, made with `tessera pool init`.
fn write_pool(dir: &Path, id: &str, vendor_key: &Path) -> Result<DemoPool> {
    let address = tessera_testkit::free_address().context("cannot bind loopback")?;
    let out = dir.join(format!("pool-{id}"));
    pool_cmd::write_pool(&pool_cmd::InitArgs {
        pool_id: format!("demo-{}", id.to_lowercase()),
        servers: vec![ServerSpec {
            id: id.to_string(),
            address: address.clone(),
        }],
        vendor_keys: vec![vendor_key.to_path_buf()],
        out: out.clone(),
        // The master's production servers hold its VID's slots with it.
        production_token: id == "M",
    })?;
    let ca_pem = std::fs::read(out.join("ca.pem"))?;
    let server_dir = out.join(id);
    Ok(DemoPool {
        server: DemoServer {
            id: id.to_string(),
            address,
            config: server_dir.join("tessera.toml"),
            log: server_dir.join("server.log"),
            process: None,
            http: Http::tls(&ca_pem, None, LOOPBACK_REQUEST_TIMEOUT),
            env: Vec::new(),
        },
        ca_pem,
        out,
    })
}

fn held(status: &StatusResponse) -> bool {
    status.server.vid.as_ref().is_some_and(|vid| vid.held) && cad_limit(status) > 0
}

fn cad_limit(status: &StatusResponse) -> u32 {
    status
        .features
        .iter()
        .find(|f| f.feature == "cad")
        .map_or(0, |f| f.hard_limit)
}

fn refused(status: &StatusResponse) -> bool {
    status
        .server
        .vid
        .as_ref()
        .and_then(|vid| vid.reason.as_deref())
        .is_some_and(|reason| reason.contains("no certificate"))
}

/// The production servers' statuses once each holds the VID or was refused.
async fn wait_for_answers(production: &[DemoPool]) -> Result<Vec<StatusResponse>> {
    let mut statuses = Vec::new();
    for pool in production {
        statuses.push(wait_until(pool, |s| held(s) || refused(s)).await?);
    }
    Ok(statuses)
}

async fn wait_until(
    pool: &DemoPool,
    done: impl Fn(&StatusResponse) -> bool,
) -> Result<StatusResponse> {
    let deadline = tokio::time::Instant::now() + VID_WAIT;
    loop {
        if let Ok(status) = pool.status().await {
            if done(&status) {
                return Ok(status);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "server {} did not settle with the master within {VID_WAIT:?}: {:?}",
                    pool.server.id,
                    status.server.vid
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn describe(id: &str, status: &StatusResponse) -> String {
    let Some(vid) = &status.server.vid else {
        return format!("{id}: bound to no VID");
    };
    if held(status) {
        format!(
            "{id}: holds VID {} (certificate from {}, renewed every {} s), serves `cad` {} seats",
            vid.vid,
            vid.master.as_deref().unwrap_or("the master"),
            LIFETIME_S / 4,
            cad_limit(status)
        )
    } else {
        format!(
            "{id}: refused, serves no `cad`: {}",
            vid.reason.as_deref().unwrap_or("no certificate")
        )
    }
}

/// The start of an error, up to the server's detail, for one line of output.
fn first_sentence(text: &str) -> &str {
    text.split_once("; ").map_or(text, |(first, _)| first)
}

async fn print_master_status(master: &DemoPool) -> Result<()> {
    let mut config = ClientConfig::new([master.server.address.clone()]);
    config.tls = ClientTls::PoolCa(master.ca_pem.clone());
    let token = std::fs::read_to_string(master.out.join("read.token"))?;
    let status = Admin::new(config, token)?.status().await?;
    let mut holders: Vec<_> = status
        .grants
        .iter()
        .filter(|grant| grant.feature == format!("vid:{VID}"))
        .collect();
    holders.sort_by(|a, b| a.user.cmp(&b.user));
    println!(
        "  VID {VID}: {} of {SERVERS} production servers hold it",
        holders.len()
    );
    for grant in holders {
        println!("    {:<4} run {}", grant.user, grant.client_id);
    }
    Ok(())
}

fn append(path: &Path, text: &str) -> Result<()> {
    let before =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    std::fs::write(path, before + text).with_context(|| format!("cannot write {}", path.display()))
}

fn prepend(path: &Path, text: &str) -> Result<()> {
    let before =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    std::fs::write(path, text.to_string() + &before)
        .with_context(|| format!("cannot write {}", path.display()))
}
