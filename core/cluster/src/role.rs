//! What a node of a local cluster is, and which binary runs it.

use serde::{Deserialize, Serialize};

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Dispatcher,
    Worker,
    Client,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Dispatcher => "dispatcher",
            Role::Worker => "worker",
            Role::Client => "client",
        }
    }

    pub fn binary(self) -> &'static str {
        match self {
            Role::Dispatcher => "cachew-dispatcher",
            Role::Worker => "cachew-worker",
            Role::Client => "cachew-client",
        }
    }
}
