//! A test pool's credentials, made by `tessera pool init` as an
//! administrator makes them: the pool CA, each server's certificate and
//! peer credential, the administrators' tokens. Kept in `secure/` of the
//! pool's directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::Digest;

/// The credentials in `DIR/secure/`.
#[derive(Clone, Debug)]
pub struct Credentials {
    dir: PathBuf,
}

impl Credentials {
    /// Runs `tessera pool init` in `dir` for these `(id, address)` servers.
    pub fn init(
        tessera: &Path,
        dir: &Path,
        pool_id: &str,
        servers: &[(&str, &str)],
    ) -> Credentials {
        // Every test pool may serve as a master pool.
        let mut args = vec![
            "pool",
            "init",
            "--pool-id",
            pool_id,
            "--out",
            "secure",
            "--production-token",
        ];
        let specs: Vec<String> = servers
            .iter()
            .map(|(id, address)| format!("{id}={address}"))
            .collect();
        for spec in &specs {
            args.extend(["--server", spec.as_str()]);
        }
        crate::run(tessera, &args, dir);
        Credentials {
            dir: dir.join("secure"),
        }
    }

    /// Runs `tessera pool add-server`: credentials for a server joining later.
    pub fn add(&self, tessera: &Path, pool_id: &str, id: &str, address: &str) {
        let spec = format!("{id}={address}");
        let args = [
            "pool",
            "add-server",
            "--dir",
            "secure",
            "--pool-id",
            pool_id,
            "--server",
            &spec,
        ];
        let parent = self.dir.parent().expect("secure/ has a parent");
        crate::run(tessera, &args, parent);
    }

    /// Server `id`'s `[[servers]]` entry, with its credential's SHA-256.
    pub fn server_entry(&self, id: &str, address: &str) -> String {
        let credential = std::fs::read_to_string(self.dir.join(id).join("peer.credential"))
            .expect("the server's peer credential");
        let hash = hex::encode(sha2::Sha256::digest(credential.trim().as_bytes()));
        format!("[[servers]]\nid = \"{id}\"\naddress = \"{address}\"\ncredential_sha256 = \"{hash}\"\n\n")
    }

    /// The `[[admins]]` tables of the pool file `init` wrote.
    pub fn admins(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("pool.toml")).expect("secure/pool.toml");
        let start = text
            .find("[[admins]]")
            .expect("[[admins]] in secure/pool.toml");
        let end = text[start..]
            .find("\n#")
            .map_or(text.len(), |i| start + i + 1);
        text[start..end].to_string()
    }

    /// Server `id`'s `[security]` table.
    pub fn security_table(&self, id: &str) -> String {
        let server = self.dir.join(id);
        format!(
            "[security]\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\n\
             peer_credential_file = \"{}\"\n\n",
            server.join("server.pem").display(),
            server.join("server.key").display(),
            self.ca_file().display(),
            server.join("peer.credential").display()
        )
    }

    /// Server `id`'s `[security]` table without TLS (`plain_http`): its
    /// peer credential still proves it to its peers.
    pub fn plain_security_table(&self, id: &str) -> String {
        format!(
            "[security]\nplain_http = true\npeer_credential_file = \"{}\"\n\n",
            self.dir.join(id).join("peer.credential").display()
        )
    }

    /// Server `id`'s TLS certificate and key files, as its machine holds
    /// them (and so its owner, the customer).
    pub fn server_tls_files(&self, id: &str) -> (PathBuf, PathBuf) {
        let server = self.dir.join(id);
        (server.join("server.pem"), server.join("server.key"))
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.ca_file()).expect("secure/ca.pem")
    }

    /// The token file of role `admin`.
    pub fn admin_token_file(&self) -> PathBuf {
        self.dir.join("admin.token")
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.admin_token_file())
            .expect("secure/admin.token")
            .trim()
            .to_string()
    }

    /// The token file of role `production`.
    pub fn production_token_file(&self) -> PathBuf {
        self.dir.join("production.token")
    }

    /// The token file of role `read`.
    pub fn read_token_file(&self) -> PathBuf {
        self.dir.join("read.token")
    }

    /// An HTTP client that trusts this pool's CA and sends the admin token.
    pub fn http(&self, timeout: Duration) -> crate::Http {
        crate::Http::tls(&self.ca_pem(), Some(self.admin_token()), timeout)
    }
}
