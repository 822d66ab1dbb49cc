//! Seed 003 from the command line: `tessera hostid`, `tessera master init`,
//! and master licenses in `tessera license sign --master|verify|show`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use tessera_core::master::{MasterLicenseFields, MasterLicenseFile, MasterPublicKey};
use tessera_core::{CivilDate, Expiry, VendorPublicKey, VendorSecretKey};
use tessera_server::hostid::{self, Hostid};
use tessera_server::master::key;

use crate::license_cmd::today;
use tessera_client::{Admin, ClientConfig, ClientError};

/// `tessera hostid`: the hostid on standard output, where it comes from on
/// standard error; a machine without a stable one fails with the reason.
pub fn hostid(json: bool) -> Result<()> {
    match hostid::inspect() {
        Hostid::Stable { hostid, source } => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "hostid": hostid, "source": source })
                );
            } else {
                println!("{hostid}");
                eprintln!("derived from {source}");
            }
            Ok(())
        }
        Hostid::Refused { reason } => bail!(
            "no hostid to bind license codes to: {reason}.\nOn this machine, {}",
            hostid::VID_ROUTE
        ),
    }
}

/// `tessera master init`: the master's key in `data_dir` (made once), and
/// what the vendor needs to sign the master license.
pub fn init(data_dir: &Path) -> Result<()> {
    let hostid = match hostid::inspect() {
        Hostid::Stable { hostid, source } => (hostid, source),
        Hostid::Refused { reason } => bail!(
            "a master server must run on a physical host with a stable hostid, and here {reason}"
        ),
    };
    let (secret, made) = key::init(data_dir)?;
    let public = secret.public();
    let key_path = data_dir.join(key::MASTER_KEY_FILE);
    if made {
        println!(
            "master key: {} (mode 0600; it signs VID certificates; it stays on this host)",
            key_path.display()
        );
    } else {
        println!("master key: {} (made earlier; kept)", key_path.display());
    }
    println!("public key: {}", key::public_text(&public));
    println!("key id:     {}", public.key_id());
    println!("hostid:     {} (from {})", hostid.0, hostid.1);
    println!(
        "\nSend the vendor the public key and the hostid. The vendor signs a master license \
         for them:\n\n  tessera license sign --master --key VENDOR.key --vid VID --servers N \\\n      \
         --hostid {} --master-key {} \\\n      --expiry YYYY-MM-DD --out master.toml",
        hostid.0,
        key::public_text(&public)
    );
    Ok(())
}

/// What `tessera license sign --master` takes.
pub struct MasterArgs {
    pub id: Option<String>,
    pub vid: String,
    pub servers: u32,
    pub master_hostid: String,
    pub master_key: String,
    pub expiry: String,
    pub certificate_lifetime_s: u32,
    pub masters: u32,
}

/// Signs a master license and its slot code (one file, both tables).
pub fn sign(key: &VendorSecretKey, args: MasterArgs) -> Result<MasterLicenseFile> {
    let issued = today();
    let master_key = MasterPublicKey::from_base64(&args.master_key)
        .context("--master-key is the public key `tessera master init` printed")?;
    let id = args
        .id
        .unwrap_or_else(|| format!("master-{}-{}", args.vid, master_key.key_id()));
    let expiry = Expiry::parse(&args.expiry).map_err(|err| anyhow::anyhow!("--expiry: {err}"))?;
    Ok(MasterLicenseFile::sign(
        key,
        MasterLicenseFields {
            id,
            vendor: key.vendor.clone(),
            vid: args.vid,
            servers: args.servers,
            master_hostid: args.master_hostid,
            master_key,
            issued,
            expiry,
            certificate_lifetime_s: args.certificate_lifetime_s,
            masters: args.masters,
        },
    )?)
}

/// The master license file in `text`, if it is one.
pub fn parse(path: &Path, text: &str) -> Option<Result<MasterLicenseFile>> {
    text.contains("[master_license]").then(|| {
        MasterLicenseFile::parse(text).map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))
    })
}

/// `tessera license verify` of a master license file: the vendor's
/// signature, the host it is bound to, its dates and its slot code. Fails
/// with the first reason.
pub fn verify(
    file: &MasterLicenseFile,
    trusted: &[VendorPublicKey],
    hostid: &str,
    today: CivilDate,
    json: bool,
) -> Result<()> {
    let license = &file.license;
    let f = license.fields();
    let verdict = license.verify(trusted).and_then(|()| {
        file.slot_code(trusted)?;
        if f.master_hostid != hostid {
            return Err(tessera_core::master::MasterError::WrongHost {
                id: f.id.clone(),
                bound: f.master_hostid.clone(),
                actual: hostid.to_string(),
            });
        }
        license.check_date(today)
    });
    let reason = verdict.as_ref().err().map(ToString::to_string);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "id": f.id, "vid": f.vid, "servers": f.servers,
                "serves": reason.is_none(), "reason": reason,
            })
        );
    } else {
        match &reason {
            None => println!(
                "ok    master license {}: VID {} for {} production servers, on this host",
                f.id, f.vid, f.servers
            ),
            Some(reason) => println!("FAIL  {reason}"),
        }
    }
    verdict.map_err(|_| anyhow::anyhow!("master license {} would not be served", f.id))
}

pub fn show(file: &MasterLicenseFile, json: bool) {
    let license = &file.license;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "master_license": license.to_text(),
                "license": file.slot_codes.iter().map(|c| c.to_text()).collect::<Vec<_>>(),
            })
        );
        return;
    }
    let f = license.fields();
    println!("master license {}", f.id);
    println!("  vendor          {} (key {})", f.vendor, license.key_id());
    println!(
        "  vid             {} (codes bind to hostid = \"vid:{}\")",
        f.vid, f.vid
    );
    println!("  servers         {} production servers at once", f.servers);
    println!("  master host     {}", f.master_hostid);
    if f.masters > 1 {
        println!(
            "  masters         one of {} sharing the VID; a certificate needs {} signatures",
            f.masters,
            f.masters / 2 + 1
        );
    }
    println!("  master key      {}", f.master_key.key_id());
    println!("  issued          {}", f.issued);
    println!("  expiry          {}", f.expiry);
    println!(
        "  certificates    valid {} s without renewal",
        f.certificate_lifetime_s
    );
    for code in &file.slot_codes {
        println!(
            "  slot code       {}: feature {}, {} seats, bound to {}",
            code.id(),
            code.feature(),
            code.seats(),
            code.fields().hostid
        );
    }
}

/// `tessera master status`: the slots of the master's VID and who holds
/// them, from the full status of the first master that answers and of
/// every other server of its pool (each lists the slots it lends).
pub async fn status(config: ClientConfig, token: String, json: bool) -> Result<()> {
    let status = Admin::new(config.clone(), token.clone())?.status().await?;
    let mut grants = status.grants.clone();
    let mut silent = Vec::new();
    for peer in status.servers.iter().filter(|p| p.id != status.server.id) {
        let mut one = config.clone();
        one.servers = vec![peer.address.clone()];
        match Admin::new(one, token.clone())?.status().await {
            Ok(other) => grants.extend(other.grants),
            Err(_) => silent.push(peer.id.clone()),
        }
    }
    // A run's slot may have copies on two masters after a fail-over: the
    // one that lapses last is the one it renews.
    grants.sort_by(|a, b| {
        (&a.client_id, std::cmp::Reverse(a.expires_in_ms))
            .cmp(&(&b.client_id, std::cmp::Reverse(b.expires_in_ms)))
    });
    grants.dedup_by(|later, first| later.client_id == first.client_id);
    let prefix = tessera_core::master::VID_BINDING_PREFIX;
    let slots: Vec<_> = status
        .features
        .iter()
        .filter(|feature| feature.feature.starts_with(prefix))
        .collect();
    if slots.is_empty() {
        bail!(
            "server `{}` lends no VID: it is not a master, or its pool file lacks the slot code \
             of its master license",
            status.server.id
        );
    }
    let holders: Vec<_> = grants
        .iter()
        .filter(|grant| grant.feature.starts_with(prefix))
        .collect();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "slots": slots.iter().map(|f| serde_json::json!({
                    "vid": f.feature.trim_start_matches(prefix),
                    "servers": f.hard_limit,
                    "in_use": f.hard_limit.saturating_sub(f.pool_available),
                })).collect::<Vec<_>>(),
                "holders": holders.iter().map(|g| serde_json::json!({
                    "vid": g.feature.trim_start_matches(prefix),
                    "server_id": g.user, "instance": g.client_id, "host": g.host,
                    "lapses_in_ms": g.expires_in_ms,
                })).collect::<Vec<_>>(),
                "masters_not_answering": silent,
            })
        );
        return Ok(());
    }
    for feature in &slots {
        let vid = feature.feature.trim_start_matches(prefix);
        let held: Vec<_> = holders
            .iter()
            .filter(|g| g.feature == feature.feature)
            .collect();
        println!(
            "VID {vid}: {} of {} production servers hold it",
            held.len(),
            feature.hard_limit
        );
        for grant in held {
            println!(
                "  {:<12} run {:<28} lapses in {:.1} s unless renewed",
                grant.user,
                grant.client_id,
                grant.expires_in_ms as f64 / 1000.0
            );
        }
    }
    if !silent.is_empty() {
        println!(
            "(not listed: the slots lent by {}, which did not answer)",
            silent.join(", ")
        );
    }
    Ok(())
}

/// `tessera master revoke INSTANCE`.
pub async fn revoke(config: ClientConfig, token: String, instance: &str) -> Result<()> {
    let revoked = match Admin::new(config, token)?.revoke_instance(instance).await {
        Ok(revoked) => revoked,
        Err(ClientError::Rejected { code, message }) => bail!("refused ({code}): {message}"),
        Err(err) => return Err(err.into()),
    };
    let already = if revoked.newly {
        ""
    } else {
        " (it was already)"
    };
    match revoked.slot_free_in_ms {
        Some(ms) => println!(
            "run {} revoked{already}: its certificate is not renewed, so it stops serving the \
             VID's codes at its next renewal; its slot comes free in {:.1} s at the latest",
            revoked.instance,
            ms as f64 / 1000.0
        ),
        None => println!(
            "run {} revoked{already}: it holds no slot now, and will get none",
            revoked.instance
        ),
    }
    Ok(())
}
