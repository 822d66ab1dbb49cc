//! `tessera`: the one binary of Tessera. Thin: it parses arguments and calls
//! the libraries. Errors leave through `anyhow` and exit with code 1 (2 for
//! usage errors, from clap).

mod client_cmd;
mod demo;
mod demo_master;
mod keys;
mod license_cmd;
mod master_cmd;
mod pool_cmd;
mod report_cmd;
mod view;

/// The server allocates and frees small buffers for every request: glibc's
/// allocator took a fifth of its CPU under load, mimalloc less (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

/// Default server address of the client commands.
const DEFAULT_SERVER: &str = "127.0.0.1:27000";

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Tessera: a network floating-license manager"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a license server.
    Server {
        /// The server's config file (tessera.toml).
        #[arg(long)]
        config: PathBuf,
        /// This pool has never issued a seat: start issuing at once even
        /// though the grant store is new, instead of waiting out one lease.
        /// A grace period an earlier run still owes is kept.
        #[arg(long)]
        new_pool: bool,
        /// Re-form a pool that lost a majority of its servers for good, from
        /// the survivors: start every survivor once with the same pool file
        /// FILE, which lists only the survivors and has a higher sequence.
        /// Each sets its pool log aside; no seat is issued beyond what the
        /// survivors' own clients hold until the lost servers' grants have
        /// lapsed. Only when the lost servers can never come back with their
        /// disks (see README).
        #[arg(long, value_name = "FILE", conflicts_with = "new_pool")]
        recover_pool: Option<PathBuf>,
    },
    /// Start a local pool on loopback with a demo license, check seats out,
    /// kill and restart a server, show the status.
    Demo {
        /// Keep serving after the demo and print how to use the pool.
        #[arg(long, conflicts_with = "master")]
        keep: bool,
        /// Show seed 003 instead: a master server lending a VID to three
        /// production servers, refusing a fourth, handing over on a stop.
        #[arg(long)]
        master: bool,
        /// Directory for keys, licenses and data (default: a temporary one).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Show the pool, its distribution table and grants: the server asked
    /// answers, then every other server for its own seats in use and
    /// grants; a server that does not answer is named (PARTIAL).
    Status {
        #[command(flatten)]
        servers: ServerArgs,
        /// Shorthand for `--format json`.
        #[arg(long)]
        json: bool,
        /// `table` (default), `json`, or `lmstat` (FlexNet `lmstat -a` style, for existing monitoring).
        #[arg(long, value_enum, default_value_t = client_cmd::StatusFormat::Table)]
        format: client_cmd::StatusFormat,
        /// With a token (role `read` or `admin`): grants, users and hosts too.
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Usage per feature and user from the servers' report logs (their
    /// `[report] dir`): seat-hours, peak seats, denials, queue waits.
    Report {
        /// Report files, or directories of them; give every server's.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Start of the period: 2026-12-01, 2026-12-01T08:00:00Z or Unix ms
        /// (default: the first event).
        #[arg(long)]
        from: Option<String>,
        /// End of the period (default: the last event).
        #[arg(long)]
        to: Option<String>,
        #[arg(long, value_enum, default_value_t = report_cmd::ReportFormat::Table)]
        format: report_cmd::ReportFormat,
    },
    /// Check seats out; hold them (heartbeating) until --hold runs out or Ctrl-C.
    Checkout {
        feature: String,
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Seconds to hold the seats, then check them in (default: until Ctrl-C).
        #[arg(long)]
        hold: Option<u64>,
        /// Exit at once without checking in; the seats lapse after the lease.
        #[arg(long, conflicts_with = "hold")]
        detach: bool,
        /// Program version to ask for.
        #[arg(long, default_value = "1.0")]
        version: String,
        /// A vendor's public key file (`<vendor>.pub` of `tessera vendor
        /// keygen`): check the grant as that vendor's program would (signed
        /// answer, every code the vendor's). Repeat for several vendors.
        #[arg(long = "vendor-key")]
        vendor_keys: Vec<PathBuf>,
        /// A temporary license of this device (seed 004) instead of a seat:
        /// kept in the user's cache until `tessera return` or its expiry.
        #[arg(long, conflicts_with_all = ["hold", "detach"])]
        temporary: bool,
        /// With --temporary: an offline borrow of this many days, within the
        /// vendor's limit.
        #[arg(long, requires = "temporary")]
        days: Option<u32>,
        /// When no seat is free, wait up to this many seconds in the pool's
        /// queue (first come, first served, pool-wide), printing the place.
        #[arg(long, value_name = "SECONDS", conflicts_with = "temporary")]
        wait: Option<u64>,
        #[command(flatten)]
        servers: ServerArgs,
        #[arg(long)]
        json: bool,
    },
    /// Give back this device's temporary license of a feature.
    Return {
        feature: String,
        #[arg(long, default_value = "1.0")]
        version: String,
        #[command(flatten)]
        servers: ServerArgs,
    },
    /// Check a grant in by id (as printed by `tessera checkout`).
    Checkin {
        grant_id: String,
        /// The client id the grant was issued to.
        #[arg(long)]
        client_id: String,
        /// The grant's proof, as printed by `tessera checkout`.
        #[arg(long, allow_hyphen_values = true)]
        proof: String,
        #[command(flatten)]
        servers: ServerArgs,
    },
    /// Print this machine's hostid, for binding license codes to it, and
    /// say what it is derived from; refuses containers and virtual machines.
    Hostid {
        #[arg(long)]
        json: bool,
    },
    /// The master server of a virtual identifier (VID), for pools on
    /// virtual machines and containers.
    Master {
        #[command(subcommand)]
        command: MasterCommand,
    },
    /// Administer a running pool.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Vendor tools.
    Vendor {
        #[command(subcommand)]
        command: VendorCommand,
    },
    /// Sign, verify and show license codes.
    License {
        #[command(subcommand)]
        command: LicenseCommand,
    },
    /// Set up a secure pool: its CA, server certificates, credentials and tokens.
    Pool {
        #[command(subcommand)]
        command: PoolCommand,
    },
}

#[derive(Subcommand)]
enum PoolCommand {
    /// Make the pool's shared key (64 hex characters, mode 0600) alone:
    /// `init` makes one too. Copy the file to every server of the pool and
    /// name it in `pool_key_file`.
    Key {
        /// The key file to write; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Make a pool CA, each server's certificate and peer credential, the
    /// administrators' tokens, the pool file and each server's config.
    Init {
        /// The pool's id (letters, digits, `-`, `_`, `.`).
        #[arg(long)]
        pool_id: String,
        /// A server as ID=host:port; repeat, in leader-priority order.
        #[arg(long = "server", required = true)]
        servers: Vec<pool_cmd::ServerSpec>,
        /// A vendor's public key file (VENDOR.pub) the servers trust; repeat.
        #[arg(long = "vendor-key")]
        vendor_keys: Vec<PathBuf>,
        /// Where to write it all (must not hold a pool already).
        #[arg(long, default_value = "pool")]
        out: PathBuf,
        /// Also make `production.token` (role `production`): for a pool of
        /// master servers, the token its production servers hold VID slots
        /// with (`token_file` of their [vid]).
        #[arg(long)]
        production_token: bool,
    },
    /// Make the certificate and credential of a server joining a pool made
    /// by `init` (needs its ca.key), and print its pool file entry.
    AddServer {
        /// The directory `init` wrote.
        #[arg(long, default_value = "pool")]
        dir: PathBuf,
        #[arg(long)]
        pool_id: String,
        /// The new server as ID=host:port.
        #[arg(long)]
        server: pool_cmd::ServerSpec,
    },
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Server address host:port; repeat for fail-over, in priority order.
    #[arg(long = "server", env = "TESSERA_SERVER", value_delimiter = ',', default_value = DEFAULT_SERVER)]
    servers: Vec<String>,
    /// The pool CA the servers are checked against (ca.pem of `tessera pool init`).
    #[arg(long = "ca", env = tessera_client::CA_FILE_ENV)]
    ca: Option<PathBuf>,
    /// Plain HTTP without TLS: only for a pool on loopback whose servers set
    /// `plain_http` (`tessera demo`).
    #[arg(long, env = "TESSERA_PLAIN_HTTP", conflicts_with = "ca")]
    plain_http: bool,
}

impl ServerArgs {
    fn client_config(&self) -> Result<tessera_client::ClientConfig> {
        let mut config = tessera_client::ClientConfig::new(self.servers.clone());
        config.tls = if self.plain_http {
            tessera_client::ClientTls::Plain
        } else {
            let Some(ca) = &self.ca else {
                bail!(
                    "no pool CA to check the servers with: pass --ca ca.pem (from `tessera pool \
                     init`) or set {}",
                    tessera_client::CA_FILE_ENV
                );
            };
            let pem = std::fs::read(ca)
                .with_context(|| format!("cannot read the pool CA {}", ca.display()))?;
            tessera_client::ClientTls::PoolCa(pem)
        };
        // The command-line tool is the administrator's, not a vendor's
        // program: it checks vendor keys only when given them.
        config.trust = tessera_client::Trust::AnyServer;
        Ok(config)
    }

    /// A checkout's configuration: checked against `vendor_keys` (files) when given.
    fn checkout_config(&self, vendor_keys: &[PathBuf]) -> Result<tessera_client::ClientConfig> {
        let mut config = self.client_config()?;
        if !vendor_keys.is_empty() {
            let keys = vendor_keys
                .iter()
                .map(|path| keys::read_public(path))
                .collect::<Result<Vec<_>>>()?;
            config.trust = tessera_client::Trust::Vendor(keys);
        }
        Ok(config)
    }
}

#[derive(clap::Args)]
struct TokenArgs {
    /// The file holding an administrator's token (admin.token of `tessera pool init`).
    #[arg(long, env = "TESSERA_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

impl TokenArgs {
    fn token(&self) -> Result<Option<String>> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token {}", path.display()))?;
        Ok(Some(token.trim().to_string()))
    }

    fn required(&self) -> Result<String> {
        match self.token()? {
            Some(token) => Ok(token),
            None => bail!(
                "changes to the pool need an administrator's token: pass --token-file \
                 admin.token (from `tessera pool init`) or set TESSERA_TOKEN_FILE"
            ),
        }
    }
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Install a pool file with a higher sequence number on every server of
    /// the pool (servers added or removed change the pool's membership).
    UpdatePoolFile {
        file: PathBuf,
        #[command(flatten)]
        servers: ServerArgs,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Set a feature's distribution live, e.g. `cad A=40,B=30,C=30`. Servers
    /// not named get none; seats not given go to the free pool. A server
    /// holding more than its share gives the excess back as its seats return.
    SetDistribution {
        feature: String,
        /// SERVER=SEATS pairs, comma separated.
        distribution: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Add license codes (a file of `[[license]]` tables, as `tessera
    /// license sign` writes them): a new feature, or more seats for one.
    AddLicense {
        file: PathBuf,
        /// Give the new seats to this server instead of the free pool.
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Take a license code out of the pool. Refused while clients hold
    /// seats of its feature, unless `--force`.
    RemoveLicense {
        id: String,
        /// Remove the code even while clients hold seats of its feature
        /// (they keep them only until their leases run out).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        change: ChangeArgs,
    },
}

#[derive(clap::Args)]
struct ChangeArgs {
    #[command(flatten)]
    servers: ServerArgs,
    /// Refuse the change unless the pool runs this pool file sequence.
    #[arg(long)]
    sequence: Option<u64>,
    #[command(flatten)]
    token: TokenArgs,
}

#[derive(Subcommand)]
enum VendorCommand {
    /// Make a vendor key pair: VENDOR.key (secret) and VENDOR.pub.
    Keygen {
        /// Vendor name, as it appears in license codes.
        #[arg(long)]
        vendor: String,
        /// Directory to write the key files to.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum MasterCommand {
    /// Make the master's key on this physical host, and print its public
    /// key and hostid for the vendor to sign a master license.
    Init {
        /// The master's data directory.
        #[arg(long, default_value = "master-data")]
        data_dir: PathBuf,
    },
    /// List a master's slots and the production servers holding them.
    Status {
        #[command(flatten)]
        servers: ServerArgs,
        /// A token of role `read` or `admin` (the holders are in the grants).
        #[command(flatten)]
        token: TokenArgs,
        #[arg(long)]
        json: bool,
    },
    /// Stop renewing one production server run's certificates: it stops
    /// serving the VID's codes at its next renewal (at the latest when its
    /// certificate lapses), and its slot goes to the next server that asks.
    Revoke {
        /// The run, as `tessera master status` names it.
        instance: String,
        #[command(flatten)]
        servers: ServerArgs,
        #[command(flatten)]
        token: TokenArgs,
    },
}

// Parsed once per run: the size of the `sign` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum LicenseCommand {
    /// Sign a file of unsigned [[license]] tables, or one code given by flags.
    Sign {
        /// The vendor's secret key file (VENDOR.key).
        #[arg(long)]
        key: PathBuf,
        /// File of unsigned [[license]] tables; without it, the flags describe one code.
        #[arg(conflicts_with = "master")]
        file: Option<PathBuf>,
        #[arg(long, required_unless_present_any = ["file", "master"])]
        feature: Option<String>,
        #[arg(long, required_unless_present_any = ["file", "master"])]
        seats: Option<u32>,
        /// Sign a master license instead: a VID lent to at most --servers
        /// production servers by the master on host --hostid with key
        /// --master-key (both printed by `tessera master init`).
        #[arg(long, requires_all = ["vid", "servers", "master_key"])]
        master: bool,
        /// The virtual identifier codes will bind to as `vid:VID`.
        #[arg(long, requires = "master")]
        vid: Option<String>,
        /// How many production servers may hold the VID at once.
        #[arg(long, requires = "master")]
        servers: Option<u32>,
        /// The master's public key, as `tessera master init` printed it.
        #[arg(long, requires = "master", allow_hyphen_values = true)]
        master_key: Option<String>,
        /// How long a VID certificate lives without renewal.
        #[arg(long, default_value_t = 3_600, requires = "master")]
        certificate_lifetime_s: u32,
        /// How many masters, each on its own host with its own license,
        /// share the VID's N; a certificate needs a majority of their
        /// signatures. Sign one license per master, all alike but host and key.
        #[arg(long, default_value_t = 1, requires = "master")]
        masters: u32,
        /// Last day served (YYYY-MM-DD) or `permanent`.
        #[arg(long, default_value = "permanent")]
        expiry: String,
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value = "0")]
        version_min: String,
        #[arg(long, default_value = "999999")]
        version_max: String,
        /// `any`, a hostid printed by `tessera hostid`, or `vid:VID`; with
        /// --master, the hostid of the master's physical host.
        #[arg(long, default_value = "any")]
        hostid: String,
        #[arg(long, default_value_t = 80)]
        borrow_threshold_percent: u32,
        #[arg(long, default_value_t = 10)]
        heartbeat_interval_s: u32,
        #[arg(long, default_value_t = 30)]
        lease_s: u32,
        /// Allow temporary licenses (seed 004) with the seed's terms: 8 h,
        /// extended after 4 h, returned on close, at most 3 devices.
        #[arg(long)]
        temporary: bool,
        /// Length of one temporary license, in seconds (implies --temporary).
        #[arg(long)]
        temporary_period_s: Option<u32>,
        /// Devices one user may hold a temporary license on at once (implies --temporary).
        #[arg(long)]
        temporary_devices_max: Option<u32>,
        /// Longest offline borrow a user may ask for, in days (implies --temporary).
        #[arg(long)]
        temporary_offline_days_max: Option<u32>,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check the signatures, expiry and host binding of a license or pool file.
    Verify {
        file: PathBuf,
        /// A vendor public key file to trust; repeat for several vendors.
        #[arg(long = "key")]
        keys: Vec<PathBuf>,
        /// Trust the vendors of this server config instead (or as well).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Check host binding against this hostid (default: this machine's).
        #[arg(long)]
        hostid: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print the codes of a license or pool file.
    Show {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    // The demo tells its own story; its clients' routine events (a seat
    // failed over) would only repeat it, stamped, between its lines.
    let default_filter = match cli.command {
        Command::Demo { .. } => "warn",
        _ => "info,openraft=warn",
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr);
    // `TESSERA_LOG_FORMAT=json`: one JSON object per line, for a log
    // collector; otherwise lines for people (and journald).
    match std::env::var("TESSERA_LOG_FORMAT").as_deref() {
        Ok("json") => logs.json().flatten_event(true).init(),
        Ok("text") | Err(_) => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        Ok(other) => {
            eprintln!("error: TESSERA_LOG_FORMAT is `{other}`; it must be `text` or `json`");
            std::process::exit(2);
        }
    }
    if let Err(err) = run(cli) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

/// The runtime of every command but `server`: one worker per core.
fn runtime() -> Result<tokio::runtime::Runtime> {
    server_runtime(tessera_server::config::default_workers())
}

fn server_runtime(workers: usize) -> Result<tokio::runtime::Runtime> {
    tessera_server::runtime(workers).context("cannot start the async runtime")
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Server {
            config,
            new_pool,
            recover_pool,
        } => {
            let config_path = config;
            let mut config = tessera_server::ServerConfig::load(&config_path)?;
            if new_pool {
                config.grace_on_missing_store = false;
            }
            if let Some(file) = recover_pool {
                config.pool_file = file;
                config.recover_pool = true;
            }
            server_runtime(config.workers())?.block_on(serve(config, config_path))
        }
        Command::Demo {
            master: true, dir, ..
        } => runtime()?.block_on(demo_master::run(dir)),
        Command::Demo { keep, dir, .. } => runtime()?.block_on(demo::run(keep, dir)),
        Command::Status {
            servers,
            json,
            format,
            token,
        } => {
            let format = if json {
                client_cmd::StatusFormat::Json
            } else {
                format
            };
            let config = servers.client_config()?;
            runtime()?.block_on(client_cmd::status(config, token.token()?, format))
        }
        Command::Checkout {
            feature,
            version,
            vendor_keys,
            temporary: true,
            days,
            servers,
            json,
            ..
        } => runtime()?.block_on(client_cmd::activate(
            servers.checkout_config(&vendor_keys)?,
            &feature,
            &version,
            days,
            json,
        )),
        Command::Return {
            feature,
            version,
            servers,
        } => runtime()?.block_on(client_cmd::give_back(
            servers.client_config()?,
            &feature,
            &version,
        )),
        Command::Checkout {
            feature,
            count,
            hold,
            detach,
            version,
            vendor_keys,
            servers,
            json,
            wait,
            ..
        } => runtime()?.block_on(client_cmd::checkout(
            servers.checkout_config(&vendor_keys)?,
            client_cmd::CheckoutArgs {
                feature,
                count,
                hold_s: hold,
                detach,
                version,
                json,
                wait_s: wait,
            },
        )),
        Command::Checkin {
            grant_id,
            client_id,
            proof,
            servers,
        } => runtime()?.block_on(client_cmd::checkin(
            servers.client_config()?,
            client_cmd::CheckinArgs {
                grant_id,
                client_id,
                proof,
            },
        )),
        Command::Admin { command } => {
            let (servers, token, change) = match command {
                AdminCommand::UpdatePoolFile {
                    file,
                    servers,
                    token,
                } => (servers, token, client_cmd::pool_file_change(&file)?),
                AdminCommand::SetDistribution {
                    feature,
                    distribution,
                    change,
                } => (
                    change.servers,
                    change.token,
                    client_cmd::distribution_change(feature, &distribution, change.sequence)?,
                ),
                AdminCommand::AddLicense { file, to, change } => (
                    change.servers,
                    change.token,
                    client_cmd::add_license_change(&file, to, change.sequence)?,
                ),
                AdminCommand::RemoveLicense { id, force, change } => (
                    change.servers,
                    change.token,
                    client_cmd::remove_license_change(id, change.sequence, force),
                ),
            };
            let config = servers.client_config()?;
            runtime()?.block_on(client_cmd::admin(config, token.required()?, change))
        }
        Command::Hostid { json } => master_cmd::hostid(json),
        Command::Report {
            paths,
            from,
            to,
            format,
        } => report_cmd::report(&paths, from.as_deref(), to.as_deref(), format),
        Command::Master {
            command: MasterCommand::Init { data_dir },
        } => master_cmd::init(&data_dir),
        Command::Master {
            command:
                MasterCommand::Status {
                    servers,
                    token,
                    json,
                },
        } => {
            let config = servers.client_config()?;
            runtime()?.block_on(master_cmd::status(config, token.required()?, json))
        }
        Command::Master {
            command:
                MasterCommand::Revoke {
                    instance,
                    servers,
                    token,
                },
        } => {
            let config = servers.client_config()?;
            runtime()?.block_on(master_cmd::revoke(config, token.required()?, &instance))
        }
        Command::Vendor {
            command: VendorCommand::Keygen { vendor, out },
        } => {
            let key = keys::generate(&vendor)?;
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let (secret, public) = keys::write_pair(&key, &out)?;
            println!(
                "secret key: {} (keep it safe; it signs license codes)",
                secret.display()
            );
            println!("public key: {}", public.display());
            println!("key id:     {}", key.public().key_id());
            println!("\nServers trust this vendor with, in tessera.toml:\n");
            print!("{}", keys::config_snippet(&key.public()));
            Ok(())
        }
        Command::License { command } => license(command),
        Command::Pool {
            command:
                PoolCommand::Init {
                    pool_id,
                    servers,
                    vendor_keys,
                    out,
                    production_token,
                },
        } => pool_cmd::init(pool_cmd::InitArgs {
            pool_id,
            servers,
            vendor_keys,
            out,
            production_token,
        }),
        Command::Pool {
            command:
                PoolCommand::AddServer {
                    dir,
                    pool_id,
                    server,
                },
        } => pool_cmd::add_server(&dir, &pool_id, &server),
        Command::Pool {
            command: PoolCommand::Key { out },
        } => {
            keys::write_pool_key(&out)?;
            let name = out.file_name().map_or(out.display().to_string(), |name| {
                name.to_string_lossy().into_owned()
            });
            println!("pool key: {} (mode 0600; keep it secret)", out.display());
            println!(
                "\nCopy it to every server of the pool, readable only by the server's user, \
                 and set in each tessera.toml:\n\npool_key_file = \"{name}\""
            );
            Ok(())
        }
    }
}

fn license(command: LicenseCommand) -> Result<()> {
    match command {
        LicenseCommand::Sign {
            key,
            file,
            feature,
            seats,
            expiry,
            id,
            version_min,
            version_max,
            hostid,
            borrow_threshold_percent,
            heartbeat_interval_s,
            lease_s,
            temporary,
            temporary_period_s,
            temporary_devices_max,
            temporary_offline_days_max,
            master,
            vid,
            servers,
            master_key,
            certificate_lifetime_s,
            masters,
            out,
        } => {
            let key = keys::read_secret(&key)?;
            if master {
                let license = master_cmd::sign(
                    &key,
                    master_cmd::MasterArgs {
                        id,
                        vid: vid.context("--vid is required")?,
                        servers: servers.context("--servers is required")?,
                        master_hostid: hostid,
                        master_key: master_key.context("--master-key is required")?,
                        expiry,
                        certificate_lifetime_s,
                        masters,
                    },
                )?;
                return write_out(out.as_deref(), &license.write());
            }
            let codes = match file {
                Some(file) => license_cmd::sign_file(&key, &file)?,
                None => vec![license_cmd::sign_one(
                    &key,
                    license_cmd::UnsignedText {
                        id,
                        feature: feature.context("--feature is required")?,
                        seats: seats.context("--seats is required")?,
                        version_min,
                        version_max,
                        issued: None,
                        expiry,
                        hostid,
                        borrow_threshold_percent,
                        heartbeat_interval_s,
                        lease_s,
                        temporary_period_s: temporary_period_s.or(temporary
                            .then_some(tessera_core::temporary::TemporaryPolicy::DEFAULT.period_s)),
                        temporary_devices_max,
                        temporary_offline_days_max,
                        ..Default::default()
                    },
                )?],
            };
            write_out(
                out.as_deref(),
                &tessera_core::LicenseCode::write_file(&codes),
            )
        }
        LicenseCommand::Verify {
            file,
            keys: key_files,
            config,
            hostid,
            json,
        } => {
            let mut trusted = key_files
                .iter()
                .map(|path| keys::read_public(path))
                .collect::<Result<Vec<_>>>()?;
            if let Some(config) = config {
                trusted.extend(tessera_server::ServerConfig::load(&config)?.vendors);
            }
            if trusted.is_empty() {
                bail!("no vendor key to check against: give --key VENDOR.pub or --config tessera.toml");
            }
            let hostid = hostid
                .or_else(tessera_server::hostid::machine_hostid)
                .unwrap_or_else(|| tessera_server::hostid::NO_HOSTID.into());
            if let Some(license) = master_cmd::parse(&file, &read_text(&file)?) {
                let today = license_cmd::today();
                return master_cmd::verify(&license?, &trusted, &hostid, today, json);
            }
            let codes = license_cmd::read_codes(&file)?;
            let failed = license_cmd::verify(&codes, &trusted, &hostid, json);
            if failed > 0 {
                bail!(
                    "{failed} of {} license codes would not be served",
                    codes.len()
                );
            }
            Ok(())
        }
        LicenseCommand::Show { file, json } => {
            if let Some(license) = master_cmd::parse(&file, &read_text(&file)?) {
                master_cmd::show(&license?, json);
                return Ok(());
            }
            license_cmd::show(&license_cmd::read_codes(&file)?, json);
            Ok(())
        }
    }
}

fn read_text(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Writes `text` to `out`, or to standard output.
fn write_out(out: Option<&std::path::Path>, text: &str) -> Result<()> {
    match out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
        }
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// `tessera server`: serves until SIGTERM or Ctrl-C (a clean stop), and
/// reads its config and pool file again on each SIGHUP
/// ([`tessera_server::reload`]).
async fn serve(config: tessera_server::ServerConfig, config_path: PathBuf) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Taken before the server starts: SIGHUP's default action ends the process.
    let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let running = tessera_server::start(config.clone(), shutdown_signal()).await?;
    let mut done = running.done;
    loop {
        tokio::select! {
            _ = &mut done => return Ok(()),
            _ = hangup.recv() => {
                tessera_server::reload::reload(&running.app, &config_path, &config).await;
            }
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped systemd unit starts a command this binary takes, reloads
    /// with the signal it handles and stops with the one it stops on.
    #[test]
    fn the_systemd_unit_runs_a_command_this_binary_takes() {
        let unit = include_str!("../../../packaging/systemd/tessera.service");
        let value = |key: &str| -> Vec<&str> {
            unit.lines()
                .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
                .collect()
        };
        let start = value("ExecStart");
        assert_eq!(start.len(), 1, "{unit}");
        let mut args = start[0].split_whitespace();
        assert!(args.next().unwrap().ends_with("/tessera"));
        let cli = Cli::try_parse_from(std::iter::once("tessera").chain(args)).unwrap();
        assert!(matches!(cli.command, Command::Server { .. }));
        assert_eq!(value("ExecReload"), ["/bin/kill -HUP $MAINPID"]);
        assert_eq!(value("KillSignal"), ["SIGTERM"]);
        assert_eq!(value("NoNewPrivileges"), ["yes"]);
        assert_eq!(value("ProtectSystem"), ["strict"]);
    }

    /// A proof is base64url: one in 64 starts with `-`, which must not be
    /// taken for a flag.
    #[test]
    fn a_proof_that_starts_with_a_dash_is_a_value() {
        let cli = Cli::try_parse_from([
            "tessera",
            "checkin",
            "g1",
            "--client-id",
            "c1",
            "--proof",
            "-8mFSXq1GGRP7jrGJzHbQUThIQx1zM1IX5lm7fmVEyA",
        ])
        .expect("parses");
        let Command::Checkin { proof, .. } = cli.command else {
            panic!("not a checkin");
        };
        assert!(proof.starts_with("-8m"));
    }
}
