//! The snake_case names of the protocol's vocabulary enums (`WorkerState`, `DropReason`,
//! `CacheMode`, `EventKind`, `ProcessState`, `NodeRole`): one table per enum, used by logs, events, the
//! dashboard and scenario files, and the only place a name is turned back into a value.
//!
//! The wire carries the enum values; names exist for people. [`Name::parse`] refuses an unknown
//! name with the list of valid ones, so a typo in a scenario file fails at load, not as a
//! timeout. A value received from a newer peer that this build does not know is shown as
//! `unknown(N)` by [`label`].

use crate::v1::{CacheMode, DropReason, EventKind, NodeRole, ProcessState, WorkerState};

/// A vocabulary enum with a snake_case name per value (its `UNSPECIFIED` value has none).
pub trait Name: Sized + Copy + PartialEq + 'static {
    /// What the values are, for messages: "event kind".
    const WHAT: &'static str;
    /// Every named value, in protocol order.
    const ALL: &'static [Self];
    /// The value's name ("" for `UNSPECIFIED`).
    fn name(self) -> &'static str;
    /// The value's name in the .proto file (`WORKER_STATE_SUSPECT`).
    fn proto_name(self) -> &'static str;

    /// The value of a name, or an error listing every valid name.
    fn parse(name: &str) -> Result<Self, UnknownName> {
        Self::ALL
            .iter()
            .copied()
            .find(|v| v.name() == name)
            .ok_or_else(|| UnknownName {
                what: Self::WHAT,
                name: name.to_string(),
                valid: Self::ALL.iter().map(|v| v.name()).collect(),
            })
    }
}

/// A name that is not in a vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {name:?}; valid: {}", valid.join(", "))]
pub struct UnknownName {
    pub what: &'static str,
    pub name: String,
    pub valid: Vec<&'static str>,
}

/// A value received from the wire (a raw `i32`) that this build does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value} (a newer peer?)")]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: i32,
}

/// The value of a raw wire field; `UNSPECIFIED` and values this build does not know are errors.
pub fn known<T>(value: i32) -> Result<T, UnknownValue>
where
    T: Name + TryFrom<i32>,
{
    match T::try_from(value) {
        Ok(v) if T::ALL.contains(&v) => Ok(v),
        _ => Err(UnknownValue {
            what: T::WHAT,
            value,
        }),
    }
}

/// The name of a raw wire field's value for display: its name, `unspecified`, or `unknown(N)`.
pub fn label<T>(value: i32) -> std::borrow::Cow<'static, str>
where
    T: Name + TryFrom<i32>,
{
    match T::try_from(value) {
        Ok(v) if T::ALL.contains(&v) => v.name().into(),
        _ if value == 0 => "unspecified".into(),
        _ => format!("unknown({value})").into(),
    }
}

macro_rules! vocabulary {
    ($ty:ident, $what:literal, $($variant:ident => $name:literal),+ $(,)?) => {
        impl Name for $ty {
            const WHAT: &'static str = $what;
            const ALL: &'static [$ty] = &[$($ty::$variant),+];
            fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                    $ty::Unspecified => "",
                }
            }
            fn proto_name(self) -> &'static str {
                self.as_str_name()
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<$ty, UnknownName> {
                <$ty as Name>::parse(s)
            }
        }
    };
}

vocabulary!(WorkerState, "worker state",
    Alive => "alive",
    Suspect => "suspect",
    Dead => "dead",
    Standby => "standby",
    Draining => "draining",
    Left => "left",
);

vocabulary!(DropReason, "drop reason",
    Delivered => "delivered",
    Fenced => "fenced",
    Unassigned => "unassigned",
    JobFinished => "job_finished",
    UnknownJob => "unknown_job",
);

vocabulary!(CacheMode, "cache mode",
    Compute => "compute",
    Put => "put",
    Get => "get",
    Auto => "auto",
);

vocabulary!(EventKind, "event kind",
    Registered => "registered",
    Reregistered => "reregistered",
    HeartbeatMissed => "heartbeat_missed",
    HeartbeatResumed => "heartbeat_resumed",
    HeartbeatTimeout => "heartbeat_timeout",
    DeclaredDead => "declared_dead",
    Failover => "failover",
    Recovered => "recovered",
    Fenced => "fenced",
    StandbyPromoted => "standby_promoted",
    JobCreated => "job_created",
    JobFinished => "job_finished",
    EpochDone => "epoch_done",
    ConsumerAttached => "consumer_attached",
    ConsumerReleased => "consumer_released",
    ConsumerTimeout => "consumer_timeout",
    EpochReport => "epoch_report",
    VerdictOk => "verdict_ok",
    VerdictFailed => "verdict_failed",
    CacheDecision => "cache_decision",
    CacheRepaired => "cache_repaired",
    CacheComplete => "cache_complete",
    DiskFailing => "disk_failing",
    DiskRecovered => "disk_recovered",
    DispatcherStalled => "dispatcher_stalled",
    JournalReplayed => "journal_replayed",
    JournalUnavailable => "journal_unavailable",
    JournalRecovered => "journal_recovered",
    Expired => "expired",
    WorkerDraining => "worker_draining",
    WorkerLeft => "worker_left",
    ScaleUp => "scale_up",
    ScaleDown => "scale_down",
    ScalePinned => "scale_pinned",
    ScaleCommandFailed => "scale_command_failed",
);

vocabulary!(NodeRole, "node role",
    Dispatcher => "dispatcher",
    Worker => "worker",
    Client => "client",
);

vocabulary!(ProcessState, "process state",
    NotStarted => "not_started",
    Running => "running",
    Paused => "paused",
    Exited => "exited",
    Killed => "killed",
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value the protocol defines is named, and its name is its protocol name without
    /// the enum's prefix, in lower case: the table cannot drift from the .proto file.
    fn check<T>(prefix: &str)
    where
        T: Name + TryFrom<i32> + std::fmt::Debug,
    {
        let defined: Vec<T> = (1..1000).filter_map(|i| T::try_from(i).ok()).collect();
        assert_eq!(
            defined,
            T::ALL,
            "{}: every defined value is in ALL",
            T::WHAT
        );
        for v in T::ALL {
            let proto = v.proto_name();
            let want = proto
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("{proto} starts with {prefix}"))
                .to_lowercase();
            assert_eq!(v.name(), want);
            assert_eq!(T::parse(v.name()).ok(), Some(*v));
        }
    }

    #[test]
    fn names_follow_the_protocol() {
        check::<WorkerState>("WORKER_STATE_");
        check::<DropReason>("DROP_REASON_");
        check::<CacheMode>("CACHE_MODE_");
        check::<EventKind>("EVENT_KIND_");
        check::<ProcessState>("PROCESS_STATE_");
        check::<NodeRole>("NODE_ROLE_");
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_valid_ones() {
        let e = WorkerState::parse("registered").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown worker state \"registered\"; valid: alive, suspect, dead, standby, draining, left"
        );
        assert!(EventKind::parse("").is_err(), "UNSPECIFIED has no name");
    }

    #[test]
    fn raw_values_from_the_wire() {
        assert_eq!(known::<CacheMode>(3), Ok(CacheMode::Get));
        assert_eq!(
            known::<CacheMode>(0).unwrap_err().to_string(),
            "unknown cache mode 0 (a newer peer?)"
        );
        assert!(known::<CacheMode>(99).is_err());
        assert_eq!(label::<EventKind>(7), "failover");
        assert_eq!(label::<EventKind>(0), "unspecified");
        assert_eq!(label::<EventKind>(999), "unknown(999)");
    }
}
