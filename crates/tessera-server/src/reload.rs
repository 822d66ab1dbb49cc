//! What a running server does on `SIGHUP` (`systemctl reload`): reads its
//! config and pool file again. A pool file with a higher sequence is
//! installed across the pool as `tessera admin update-pool-file` would
//! install it (codes, policy, servers), and recorded in the report log as
//! an administrator's change; one the pool already has, or an older one,
//! changes nothing. The config's settings are read once at start: a
//! reload checks the file and names every setting that changed, which
//! takes effect at the next restart. Nothing a reload reads can stop the
//! server: a file that does not parse is logged with its reason and the
//! server goes on with what it has.

use std::path::Path;

use tessera_core::report::EventKind;
use tessera_core::PoolFile;

use crate::start::INSTALLED_POOL_FILE;
use crate::{App, ServerConfig};

/// What one reload did, in the words it logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The pool file's higher sequence was installed.
    Installed { sequence: u64 },
    /// The file is the pool's current one.
    Unchanged { sequence: u64 },
    /// The file differs from the installed one but keeps its sequence.
    SameSequence { sequence: u64 },
    /// The pool has a newer pool file than the one on disk.
    Older { file: u64, installed: u64 },
    /// The pool file could not be read, parsed or installed.
    Refused { reason: String },
}

/// Reads `config_path` and the pool file it names again; `running` is the
/// config the server started with. Logs what it found and returns what it
/// did with the pool file.
pub async fn reload(app: &App, config_path: &Path, running: &ServerConfig) -> Reloaded {
    tracing::info!(config = %config_path.display(), "reload: reading the config and pool file again");
    let pool_file = match ServerConfig::load(config_path) {
        Ok(config) => {
            let changed = restart_settings(running, &config);
            if !changed.is_empty() {
                tracing::warn!(
                    settings = %changed.join(", "),
                    "reload: these settings changed in {}; they take effect at the next restart",
                    config_path.display()
                );
            }
            config.pool_file
        }
        Err(err) => {
            tracing::error!("reload: {err}; the server goes on with the config it started with");
            running.pool_file.clone()
        }
    };
    let outcome = reload_pool_file(app, &pool_file).await;
    match &outcome {
        Reloaded::Installed { sequence } => tracing::info!(
            sequence,
            "reload: installed pool file {} across the pool",
            pool_file.display()
        ),
        Reloaded::Unchanged { sequence } => {
            tracing::info!(sequence, "reload: the pool file is the pool's current one")
        }
        Reloaded::SameSequence { sequence } => tracing::warn!(
            sequence,
            "reload: {} differs from the installed pool file but keeps its sequence; raise \
             `sequence` to install it",
            pool_file.display()
        ),
        Reloaded::Older { file, installed } => tracing::warn!(
            file,
            installed,
            "reload: {} is older than the pool file the pool has installed; nothing to install",
            pool_file.display()
        ),
        Reloaded::Refused { reason } => tracing::error!(
            "reload: {}: {reason}; the pool keeps the pool file it has",
            pool_file.display()
        ),
    }
    outcome
}

async fn reload_pool_file(app: &App, path: &Path) -> Reloaded {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) => {
            return Reloaded::Refused {
                reason: format!("cannot read it: {err}"),
            }
        }
    };
    let file = match PoolFile::parse(&text) {
        Ok(file) => file,
        Err(err) => {
            return Reloaded::Refused {
                reason: format!("is not a valid pool file: {err}"),
            }
        }
    };
    let installed = app.issuer().pool().map(|p| (p.pool_id.clone(), p.sequence));
    if let Some((pool_id, sequence)) = installed {
        if file.pool_id != pool_id {
            return Reloaded::Refused {
                reason: format!(
                    "names pool `{}`, but this server serves pool `{pool_id}`",
                    file.pool_id
                ),
            };
        }
        if file.sequence < sequence {
            return Reloaded::Older {
                file: file.sequence,
                installed: sequence,
            };
        }
        if file.sequence == sequence {
            let installed_text = std::fs::read_to_string(app.data_dir.join(INSTALLED_POOL_FILE));
            return match installed_text {
                Ok(installed) if installed != text => Reloaded::SameSequence { sequence },
                _ => Reloaded::Unchanged { sequence },
            };
        }
    }
    match app.pool.update_pool_file(text).await {
        Ok(installed) => {
            app.report_other(
                EventKind::Admin,
                "",
                &format!("SIGHUP on server {}", app.pool.server_id),
                0,
                format!(
                    "reload: pool file sequence {} installed",
                    installed.sequence
                ),
            );
            Reloaded::Installed {
                sequence: installed.sequence,
            }
        }
        Err(refusal) => Reloaded::Refused {
            reason: format!("{} ({})", refusal.message, refusal.code.as_str()),
        },
    }
}

/// The settings of `new` that differ from the running config's, by name.
fn restart_settings(running: &ServerConfig, new: &ServerConfig) -> Vec<&'static str> {
    let same =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") == format!("{b:?}");
    let settings: [(&'static str, bool); 14] = [
        ("server_id", running.server_id == new.server_id),
        ("pool_file", running.pool_file == new.pool_file),
        ("data_dir", running.data_dir == new.data_dir),
        ("listen", running.listen == new.listen),
        ("vendors", same(&running.vendors, &new.vendors)),
        ("limits", same(&running.limits, &new.limits)),
        ("timing", same(&running.timing, &new.timing)),
        ("security", same(&running.security, &new.security)),
        ("borrowing", same(&running.borrowing, &new.borrowing)),
        ("pool_key_file", running.pool_key_file == new.pool_key_file),
        (
            "vid",
            same(&running.vid, &new.vid) && running.master_license_file == new.master_license_file,
        ),
        ("report", same(&running.report, &new.report)),
        ("store", running.store_sync == new.store_sync),
        ("runtime", running.workers == new.workers),
    ];
    settings
        .into_iter()
        .filter(|(_, same)| !same)
        .map(|(name, _)| name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_names_the_settings_that_wait_for_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("peer.credential"), "c".repeat(64)).unwrap();
        let base = "server_id = \"A\"\npool_file = \"pool.toml\"\ndata_dir = \"d\"\n\
                    pool_key_file = \"pool.key\"\n";
        let running = ServerConfig::parse(base, dir.path()).unwrap();
        assert!(restart_settings(&running, &running).is_empty());
        let changed = format!(
            "{base}[limits]\ngrants_max = 7\n\n[store]\nsync = \"background\"\n\n\
             [runtime]\nworkers = 2\n"
        );
        let new = ServerConfig::parse(&changed, dir.path()).unwrap();
        assert_eq!(
            restart_settings(&running, &new),
            ["limits", "store", "runtime"]
        );
    }
}
