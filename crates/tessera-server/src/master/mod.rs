//! The master server of seed 003: on one physical host, it lends a vendor's
//! virtual identifier (VID) to at most N production servers at once.
//!
//! This module holds the master's own key (`tessera master init`).

pub mod key;
