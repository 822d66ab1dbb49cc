//! Why a server's part of the pool could not start. Each message names the
//! file and what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PoolStartError {
    #[error("pool timing: {0}")]
    Timing(Box<openraft::ConfigError>),
    #[error(
        "pool log {path}: cannot open it ({message}); if it is damaged, move it away and the \
         server rejoins the pool from its peers"
    )]
    LogOpen { path: PathBuf, message: String },
    #[error("pool log {path}: {message}")]
    LogWrite { path: PathBuf, message: String },
    #[error(
        "{path} is damaged ({message}); move it away to let this server take the pool's state \
         from its peers"
    )]
    SnapshotDamaged { path: PathBuf, message: String },
    #[error("cannot read {path}: {source}")]
    SnapshotRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set {path} aside as {aside} to re-form the pool: {source}")]
    SetAside {
        path: PathBuf,
        aside: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the pool's Raft: {0}")]
    Raft(String),
}
