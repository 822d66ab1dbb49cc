//! openraft type configuration and node ids.

use std::io::Cursor;

use sha2::{Digest, Sha256};
use tessera_core::{ControlCommand, ControlOutcome};

openraft::declare_raft_types!(
    /// The pool's Raft: commands are [`ControlCommand`]s.
    pub TypeConfig:
        D = ControlCommand,
        R = ControlOutcome,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type Node = openraft::BasicNode;

/// A server's Raft node id: derived from its server id, so every server
/// computes the same id for every peer from the pool file alone.
pub fn node_id(server_id: &str) -> NodeId {
    let digest = Sha256::digest(format!("tessera-node:{server_id}").as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}
