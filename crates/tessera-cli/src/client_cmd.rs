//! `tessera status|checkout|checkin`: the SDK driven from the command line.

use std::path::Path;

use anyhow::{Context, Result};
use tessera_client::{Admin, AdminChange, Client, ClientConfig, ClientError, SeatState};

use crate::view;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    Table,
    Json,
    Lmstat,
}

/// The status: in full with a token (role `read` or `admin`), else what the
/// servers show anyone.
pub async fn status(
    config: ClientConfig,
    token: Option<String>,
    format: StatusFormat,
) -> Result<()> {
    let status = match token {
        Some(token) => Admin::new(config, token)?.pool_status().await?,
        None => Client::new(config)?.pool_status().await?,
    };
    match format {
        StatusFormat::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        StatusFormat::Table => print!("{}", view::render(&status)),
        StatusFormat::Lmstat => print!(
            "{}",
            view::render_lmstat(&status, time::OffsetDateTime::now_utc())
        ),
    }
    Ok(())
}

pub struct CheckoutArgs {
    pub feature: String,
    pub count: u32,
    pub hold_s: Option<u64>,
    pub detach: bool,
    pub version: String,
    pub json: bool,
    /// Wait this long in the pool's queue when no seat is free.
    pub wait_s: Option<u64>,
}

/// `tessera checkout FEATURE --temporary [--days N]`: a temporary license
/// of this device, kept in the user's cache until returned or expired.
pub async fn activate(
    config: ClientConfig,
    feature: &str,
    version: &str,
    days: Option<u32>,
    json: bool,
) -> Result<()> {
    let client = Client::new(config)?;
    let license = client
        .activate(feature, version, days)
        .await
        .with_context(|| format!("cannot take a temporary license of `{feature}`"))?;
    let token = license.token();
    if json {
        println!("{}", serde_json::to_string(&token)?);
    } else {
        println!(
            "temporary license {} of `{feature}` on device {} for {}, until {} (Unix ms); \
             kept in the cache; `tessera return {feature}` gives it back",
            token.license_id, token.device, token.ticket, token.expires_unix_ms
        );
    }
    // Kept, not returned: the license outlives this command.
    std::mem::forget(license);
    Ok(())
}

/// `tessera return FEATURE`: gives back this device's temporary license.
pub async fn give_back(config: ClientConfig, feature: &str, version: &str) -> Result<()> {
    let client = Client::new(config)?;
    let license = client
        .cached_temporary(feature, version)
        .with_context(|| format!("no temporary license of `{feature}` to return"))?;
    let seats = license.return_license().await?;
    println!("returned the temporary license of `{feature}` ({seats} seat)");
    Ok(())
}

pub async fn checkout(config: ClientConfig, args: CheckoutArgs) -> Result<()> {
    let client = Client::new(config)?;
    let seat = match args.wait_s {
        None => {
            client
                .checkout(&args.feature, &args.version, args.count)
                .await
        }
        Some(seconds) => {
            let feature = args.feature.clone();
            let on_place = move |place: &tessera_proto::QueuePlace| {
                // On stderr: with --json, stdout carries only the grant.
                eprintln!(
                    "waiting for `{feature}`: {} of {} in the pool's queue",
                    place.position, place.waiting
                );
            };
            client
                .checkout_waiting(
                    &args.feature,
                    &args.version,
                    args.count,
                    std::time::Duration::from_secs(seconds),
                    on_place,
                )
                .await
        }
    };
    let seat = seat.with_context(|| {
        format!(
            "cannot check out {} seats of `{}`",
            args.count, args.feature
        )
    })?;
    let grant = seat.grant();
    if args.json {
        let mut value = serde_json::to_value(&grant)?;
        value["client_id"] = client.config().client_id.clone().into();
        println!("{}", serde_json::to_string(&value)?);
    } else {
        println!(
            "checked out {} seats of `{}` from server {}: grant {} (client {}, proof {})",
            grant.count,
            grant.feature,
            grant.server_id,
            grant.grant_id,
            client.config().client_id,
            grant.proof.as_str()
        );
    }
    if args.detach {
        // The guard would check in on drop; a detached grant lapses with its lease instead.
        std::mem::forget(seat);
        return Ok(());
    }
    let mut events = seat.subscribe();
    let hold = async {
        match args.hold_s {
            Some(seconds) => tokio::time::sleep(std::time::Duration::from_secs(seconds)).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    let lost = async {
        loop {
            if events.changed().await.is_err() {
                return "the heartbeat stopped".to_string();
            }
            if let SeatState::Lost { reason } = &*events.borrow() {
                return reason.clone();
            }
        }
    };
    tokio::select! {
        _ = hold => {
            seat.release().await.context("check-in failed")?;
            if !args.json {
                println!("checked in grant {}", grant.grant_id);
            }
            Ok(())
        }
        reason = lost => anyhow::bail!("seat lost: {reason}"),
    }
}

pub struct CheckinArgs {
    pub grant_id: String,
    pub client_id: String,
    pub proof: String,
}

pub async fn checkin(mut config: ClientConfig, args: CheckinArgs) -> Result<()> {
    config.client_id = args.client_id;
    let client = Client::new(config)?;
    let released = client.checkin(&args.grant_id, &args.proof).await?;
    println!(
        "checked in grant {}: {released} seats returned",
        args.grant_id
    );
    Ok(())
}

/// `tessera admin update-pool-file FILE`: the pool file, checked as the servers will.
pub fn pool_file_change(file: &Path) -> Result<AdminChange> {
    let text = read(file)?;
    let pool = tessera_core::PoolFile::parse(&text)
        .with_context(|| format!("{} is not a valid pool file", file.display()))?;
    Ok(AdminChange::PoolFile {
        pool_id: pool.pool_id,
        update: tessera_proto::PoolFileUpdate { text },
    })
}

/// `tessera admin set-distribution FEATURE A=40,B=30,C=30`.
pub fn distribution_change(
    feature: String,
    spec: &str,
    expected_sequence: Option<u64>,
) -> Result<AdminChange> {
    let mut given = std::collections::BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (server, seats) = part
            .split_once('=')
            .with_context(|| format!("`{part}` is not SERVER=SEATS"))?;
        let seats: u32 = seats
            .trim()
            .parse()
            .with_context(|| format!("`{part}`: the seats are not a whole number"))?;
        if given.insert(server.trim().to_string(), seats).is_some() {
            anyhow::bail!("server `{}` is named twice", server.trim());
        }
    }
    Ok(AdminChange::Distribution(tessera_proto::SetDistribution {
        feature,
        servers: given,
        expected_sequence,
    }))
}

/// `tessera admin add-license FILE [--to SERVER]`: the codes, checked to be codes.
pub fn add_license_change(
    file: &Path,
    to: Option<String>,
    expected_sequence: Option<u64>,
) -> Result<AdminChange> {
    let text = read(file)?;
    tessera_core::LicenseCode::parse_file(&text)
        .with_context(|| format!("{} does not hold license codes", file.display()))?;
    Ok(AdminChange::AddLicense(tessera_proto::AddLicense {
        text,
        server: to,
        expected_sequence,
    }))
}

/// `tessera admin remove-license ID [--force]`.
pub fn remove_license_change(
    id: String,
    expected_sequence: Option<u64>,
    force: bool,
) -> AdminChange {
    AdminChange::RemoveLicense(tessera_proto::RemoveLicense {
        id,
        expected_sequence,
        force,
    })
}

fn read(file: &Path) -> Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

/// Longest wait for one server to take an admin change (it waits for the
/// leader to commit it).
const ADMIN_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Sends an admin change to the first server that takes it (see
/// [`tessera_client::Admin::change`]) and says what the pool runs now.
pub async fn admin(mut config: ClientConfig, token: String, change: AdminChange) -> Result<()> {
    config.request_timeout = ADMIN_REQUEST_TIMEOUT;
    // In the administrator's terms, not the SDK's advice to a program.
    let installed = match Admin::new(config, token)?.change(&change).await {
        Ok(installed) => installed,
        Err(ClientError::Rejected { code, message }) => {
            anyhow::bail!("refused ({code}): {message}")
        }
        Err(ClientError::NoServerReachable { last_error, .. }) => {
            anyhow::bail!("no server made the change; last error: {last_error}")
        }
        Err(err) => return Err(err.into()),
    };
    println!(
        "pool `{}` now runs pool file sequence {}",
        installed.pool_id, installed.sequence
    );
    Ok(())
}
