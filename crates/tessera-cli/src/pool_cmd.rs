//! `tessera pool init|add-server`: the credentials of a secure pool for an
//! administrator who has no PKI of their own.
//!
//! `init` writes, in one directory:
//!
//! - `ca.pem` (give it to every client: `TESSERA_CA_FILE`) and `ca.key`
//!   (the pool CA's secret: keep it offline; it signs the certificates of
//!   servers added later);
//! - `admin.token` and `read.token`: the administrators' bearer tokens;
//!   with `--production-token`, `production.token` too: a master pool's
//!   production servers hold the VID's slots with it;
//! - `pool.key`: the pool's shared key, which proves its grants;
//! - `pool.toml`: the pool file's head, servers (each with the SHA-256 of
//!   its peer credential) and admins (the tokens' SHA-256);
//! - per server, `ID/`: `server.pem` and `server.key` (its TLS identity,
//!   issued by the pool CA for the host of its address), `peer.credential`
//!   (what it proves itself with to its peers), `ca.pem`, `pool.key`, a
//!   copy of `pool.toml` and a `tessera.toml` that uses them all.
//!
//! Secrets are written with mode 0600 and never overwritten.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tessera_core::{credential_sha256, VendorPublicKey};

use crate::keys;

/// How long the pool CA's certificate is valid.
const CA_VALID_DAYS: i64 = 3_650;
/// How long a server's certificate is valid.
const SERVER_VALID_DAYS: i64 = 825;

/// `ID=host:port`, as on the command line.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    pub id: String,
    pub address: String,
}

impl std::str::FromStr for ServerSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<ServerSpec, String> {
        let (id, address) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}` is not ID=host:port"))?;
        if !address.contains(':') {
            return Err(format!("`{address}` is not host:port"));
        }
        Ok(ServerSpec {
            id: id.trim().to_string(),
            address: address.trim().to_string(),
        })
    }
}

pub struct InitArgs {
    pub pool_id: String,
    pub servers: Vec<ServerSpec>,
    pub vendor_keys: Vec<PathBuf>,
    pub out: PathBuf,
    /// Also a token of role `production` (a pool of master servers).
    pub production_token: bool,
}

/// `tessera pool init`.
pub fn init(args: InitArgs) -> Result<()> {
    write_pool(&args)?;
    print_summary(&args);
    Ok(())
}

/// Writes everything `tessera pool init` makes, saying nothing.
pub fn write_pool(args: &InitArgs) -> Result<()> {
    if args.servers.is_empty() {
        bail!("name the pool's servers with --server ID=host:port, in leader-priority order");
    }
    let vendors = args
        .vendor_keys
        .iter()
        .map(|path| keys::read_public(path))
        .collect::<Result<Vec<_>>>()?;
    let out = &args.out;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let ca_key = KeyPair::generate().context("cannot make the pool CA's key")?;
    let ca_params = ca_params(&args.pool_id)?;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .context("cannot make the pool CA's certificate")?;
    write_new(&out.join("ca.pem"), ca_cert.pem().as_bytes(), false)?;
    write_new(&out.join("ca.key"), ca_key.serialize_pem().as_bytes(), true)?;
    keys::write_pool_key(&out.join("pool.key"))?;
    let pool_key = read(&out.join("pool.key"))?;
    let issuer = Issuer::new(ca_params, ca_key);
    let mut pool_file = format!("pool_id = \"{}\"\nsequence = 1\n\n", args.pool_id);
    for server in &args.servers {
        let credential = make_server(out, &issuer, &args.pool_id, server)?;
        pool_file.push_str(&server_entry(server, &credential));
    }
    let production = args
        .production_token
        .then_some(("production", "production"));
    for (name, role) in [("admin", "admin"), ("read", "read")]
        .into_iter()
        .chain(production)
    {
        let token = secret();
        write_new(&out.join(format!("{name}.token")), token.as_bytes(), true)?;
        pool_file.push_str(&format!(
            "[[admins]]\nname = \"{name}\"\nrole = \"{role}\"\ntoken_sha256 = \"{}\"\n\n",
            credential_sha256(&token)
        ));
    }
    pool_file.push_str("# Paste the vendor's [[license]] tables below, or add them later with\n");
    pool_file.push_str("# `tessera admin add-license`.\n");
    tessera_core::PoolFile::parse(&pool_file).context("the pool file made is not valid")?;
    write_new(&out.join("pool.toml"), pool_file.as_bytes(), false)?;
    for server in &args.servers {
        let dir = out.join(&server.id);
        write_new(&dir.join("pool.toml"), pool_file.as_bytes(), false)?;
        write_new(&dir.join("ca.pem"), ca_cert.pem().as_bytes(), false)?;
        write_new(&dir.join("pool.key"), pool_key.as_bytes(), true)?;
        let config = server_config(&server.id, &vendors);
        write_new(&dir.join("tessera.toml"), config.as_bytes(), false)?;
    }
    Ok(())
}

/// `tessera pool add-server`: credentials for a server joining a pool made
/// by `init`, signed with `DIR/ca.key`.
pub fn add_server(dir: &Path, pool_id: &str, server: &ServerSpec) -> Result<()> {
    let ca_pem = read(&dir.join("ca.pem"))?;
    let ca_key = KeyPair::from_pem(&read(&dir.join("ca.key"))?)
        .with_context(|| format!("{} is not a private key", dir.join("ca.key").display()))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
        .with_context(|| format!("{} is not a CA certificate", dir.join("ca.pem").display()))?;
    let credential = make_server(dir, &issuer, pool_id, server)?;
    let server_dir = dir.join(&server.id);
    write_new(&server_dir.join("ca.pem"), ca_pem.as_bytes(), false)?;
    let pool_key = read(&dir.join("pool.key"))?;
    write_new(&server_dir.join("pool.key"), pool_key.as_bytes(), true)?;
    write_new(
        &server_dir.join("tessera.toml"),
        server_config(&server.id, &[]).as_bytes(),
        false,
    )?;
    println!(
        "made {}/ for server `{}`; add it to the pool file (after a copy of the vendors' keys \
         in its tessera.toml), raise `sequence`, and send it with `tessera admin \
         update-pool-file`:\n",
        server_dir.display(),
        server.id
    );
    print!("{}", server_entry(server, &credential));
    Ok(())
}

fn ca_params(pool_id: &str) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("Tessera pool {pool_id} CA"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, CA_VALID_DAYS);
    Ok(params)
}

/// Makes `ID/server.pem`, `ID/server.key` and `ID/peer.credential`;
/// returns the credential.
fn make_server(
    out: &Path,
    issuer: &Issuer<'_, KeyPair>,
    pool_id: &str,
    server: &ServerSpec,
) -> Result<String> {
    let host = host_of(&server.address);
    let mut params = CertificateParams::new(vec![host.to_string()])
        .with_context(|| format!("`{host}` cannot name a certificate"))?;
    params.distinguished_name.push(
        DnType::CommonName,
        format!("Tessera server {} of pool {pool_id}", server.id),
    );
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, SERVER_VALID_DAYS);
    let key = KeyPair::generate().context("cannot make a server key")?;
    let cert = params
        .signed_by(&key, issuer)
        .context("cannot sign a server certificate")?;
    let dir = out.join(&server.id);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_new(&dir.join("server.pem"), cert.pem().as_bytes(), false)?;
    write_new(
        &dir.join("server.key"),
        key.serialize_pem().as_bytes(),
        true,
    )?;
    let credential = secret();
    write_new(&dir.join("peer.credential"), credential.as_bytes(), true)?;
    Ok(credential)
}

fn server_entry(server: &ServerSpec, credential: &str) -> String {
    format!(
        "[[servers]]\nid = \"{}\"\naddress = \"{}\"\ncredential_sha256 = \"{}\"\n\n",
        server.id,
        server.address,
        credential_sha256(credential)
    )
}

fn server_config(id: &str, vendors: &[VendorPublicKey]) -> String {
    let mut text = format!(
        "server_id = \"{id}\"\npool_file = \"pool.toml\"\ndata_dir = \"data\"\n\
         pool_key_file = \"pool.key\"\n\n\
         # server.pem, server.key, ca.pem and peer.credential sit beside this file\n\
         # (see [security] in the README to name other files).\n\n"
    );
    for vendor in vendors {
        text.push_str(&keys::config_snippet(vendor));
        text.push('\n');
    }
    if vendors.is_empty() {
        text.push_str(
            "# Trust the vendors' keys here (`tessera vendor keygen` prints the table).\n",
        );
    }
    text
}

fn print_summary(args: &InitArgs) {
    let (out, servers) = (args.out.display(), &args.servers);
    println!("made a secure pool in {out}/:");
    println!("  ca.pem        the pool CA: clients check the servers with it (TESSERA_CA_FILE)");
    println!(
        "  ca.key        the CA's secret: keep it offline; `tessera pool add-server` needs it"
    );
    println!("  admin.token   changes the pool (tessera admin --token-file)");
    println!("  read.token    reads the full status, grants and users included");
    if args.production_token {
        println!("  production.token  the production servers' token for the VID's slots");
    }
    println!("  pool.key      the pool's shared key: it proves every grant");
    println!("  pool.toml     the pool file; paste the vendor's license codes into it");
    for server in servers {
        println!(
            "  {}/            everything server `{}` ({}) needs: copy it there",
            server.id, server.id, server.address
        );
    }
    println!("\nOn each server: tessera server --config tessera.toml --new-pool");
}

/// The host part of `host:port` (an IPv6 address without its brackets).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// 32 random bytes, hex: a credential or a token.
fn secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    // An hour back, for clocks a little behind this machine's.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Writes a new file; a secret one with mode 0600. Never overwrites.
fn write_new(path: &Path, bytes: &[u8], secret: bool) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| {
        if path.exists() {
            format!(
                "{} exists; move it away or choose another --out directory",
                path.display()
            )
        } else {
            format!("cannot create {}", path.display())
        }
    })?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("10.0.0.5:27000"), "10.0.0.5");
        assert_eq!(host_of("licenses.example:27000"), "licenses.example");
        assert_eq!(host_of("[::1]:27000"), "::1");
    }

    #[test]
    fn server_specs_parse() {
        let spec: ServerSpec = "A=127.0.0.1:27000".parse().unwrap();
        assert_eq!(
            (spec.id.as_str(), spec.address.as_str()),
            ("A", "127.0.0.1:27000")
        );
        assert!("A".parse::<ServerSpec>().is_err());
        assert!("A=nohost".parse::<ServerSpec>().is_err());
    }
}
