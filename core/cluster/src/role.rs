//! What a node of a local cluster is, and which binary runs it.

use cachew_proto::names::Name;
use cachew_proto::v1;
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
        self.to_wire().name()
    }

    pub fn to_wire(self) -> v1::NodeRole {
        match self {
            Role::Dispatcher => v1::NodeRole::Dispatcher,
            Role::Worker => v1::NodeRole::Worker,
            Role::Client => v1::NodeRole::Client,
        }
    }

    /// The role of a raw wire value; `None` for UNSPECIFIED or a value this build does not know.
    pub fn from_wire(raw: i32) -> Option<Role> {
        match v1::NodeRole::try_from(raw).ok()? {
            v1::NodeRole::Dispatcher => Some(Role::Dispatcher),
            v1::NodeRole::Worker => Some(Role::Worker),
            v1::NodeRole::Client => Some(Role::Client),
            v1::NodeRole::Unspecified => None,
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
