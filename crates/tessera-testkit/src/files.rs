//! The files an administrator writes for a pool: the pool file's head and
//! server entries, and each server's config. Every harness writes them here.

/// The head of a new pool's file: its id and sequence 1.
pub fn pool_file_head(pool_id: &str) -> String {
    format!("pool_id = \"{pool_id}\"\nsequence = 1\n\n")
}

/// What goes into one server's config file.
pub struct ServerConfig<'a> {
    pub server_id: &'a str,
    /// Relative to the config's directory, as every path in it.
    pub pool_file: &'a str,
    pub data_dir: &'a str,
    /// The pool's shared key file (`tessera pool key --out FILE`), the same
    /// for every server of a pool.
    pub pool_key_file: &'a str,
    /// Top-level keys after those above (`hostid = "..."`).
    pub top: &'a str,
    pub vendor: &'a str,
    /// The vendor's base64 public key.
    pub public_key: &'a str,
    /// Tables after `[[vendors]]` (`[timing]`).
    pub tables: &'a str,
}

impl ServerConfig<'_> {
    pub fn text(&self) -> String {
        format!(
            "server_id = \"{}\"\npool_file = \"{}\"\ndata_dir = \"{}\"\npool_key_file = \"{}\"\n{}\n\
             [[vendors]]\nname = \"{}\"\npublic_key = \"{}\"\n\n{}",
            self.server_id,
            self.pool_file,
            self.data_dir,
            self.pool_key_file,
            self.top,
            self.vendor,
            self.public_key,
            self.tables
        )
    }
}

/// The base64 key of a public key file written by `tessera vendor keygen`.
pub fn public_key_of(public_key_file: &str) -> Option<String> {
    public_key_file
        .lines()
        .find_map(|l| l.strip_prefix("public_key = "))
        .map(|key| key.trim().trim_matches('"').to_string())
}
