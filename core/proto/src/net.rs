//! How every connection notices a silent peer: HTTP/2 keepalive pings with a timeout, TCP
//! keepalive, `TCP_USER_TIMEOUT` on accepted connections, and connect timeouts. One
//! [`NetTimeouts`] per process, set once from the binary's flags ([`configure`]) and read by
//! [`crate::endpoint`], [`crate::server`] and [`crate::incoming`], the one place channels and
//! servers are built.
//!
//! A cut cable sends no RST and no FIN: without these a call or a stream waits forever (a
//! connection idles until the kernel's retransmissions give up, about 15 minutes on Linux).
//! The trade-off is the usual one: shorter intervals and timeouts notice a dead path sooner, but
//! a peer that is merely slow (a loaded machine, a long garbage collection in a trainer) is
//! suspected sooner too, and pings cost a few bytes per interval per connection.

use std::sync::OnceLock;
use std::time::Duration;

/// The timeouts of every connection of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetTimeouts {
    /// An HTTP/2 PING is sent after this much silence on a connection (also while idle).
    pub keepalive_interval: Duration,
    /// A PING unanswered for this long closes the connection, failing every call on it.
    pub keepalive_timeout: Duration,
    /// A TCP connect that takes longer fails.
    pub connect_timeout: Duration,
    /// Data sent but unacknowledged for this long closes a server's connection
    /// (`TCP_USER_TIMEOUT`), and TCP keepalive probes start after this much idle time.
    pub tcp_timeout: Duration,
}

impl Default for NetTimeouts {
    fn default() -> Self {
        NetTimeouts {
            keepalive_interval: Duration::from_millis(500),
            keepalive_timeout: Duration::from_millis(1000),
            connect_timeout: Duration::from_secs(2),
            tcp_timeout: Duration::from_secs(5),
        }
    }
}

impl NetTimeouts {
    /// Timeouts from flag values in milliseconds (zero keeps a default).
    pub fn from_millis(keepalive_interval: u64, keepalive_timeout: u64) -> NetTimeouts {
        let d = NetTimeouts::default();
        let ms = |v: u64, default: Duration| {
            if v == 0 {
                default
            } else {
                Duration::from_millis(v)
            }
        };
        NetTimeouts {
            keepalive_interval: ms(keepalive_interval, d.keepalive_interval),
            keepalive_timeout: ms(keepalive_timeout, d.keepalive_timeout),
            ..d
        }
    }

    /// How long a silent peer goes unnoticed at most on an open connection.
    pub fn detection(&self) -> Duration {
        self.keepalive_interval + self.keepalive_timeout
    }
}

static TIMEOUTS: OnceLock<NetTimeouts> = OnceLock::new();

/// Sets the process's timeouts; the first call wins (later ones are ignored with a warning).
/// Binaries call it from their flags before they open any connection.
pub fn configure(timeouts: NetTimeouts) {
    if TIMEOUTS.set(timeouts).is_err() && TIMEOUTS.get() != Some(&timeouts) {
        tracing::warn!(
            "network timeouts were already set; keeping {:?}",
            TIMEOUTS.get()
        );
    }
}

/// The process's timeouts (the defaults unless [`configure`]d).
pub fn timeouts() -> NetTimeouts {
    TIMEOUTS.get().copied().unwrap_or_default()
}

/// The clap flags every binary offers for these timeouts.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct NetFlags {
    /// Send an HTTP/2 keepalive ping after this much silence on a connection (ms). Lower
    /// notices a cut link sooner; too low suspects a peer that is only slow.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..))]
    pub keepalive_interval_ms: u64,
    /// Close a connection whose keepalive ping is unanswered this long (ms); its calls then
    /// fail and are retried elsewhere.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    pub keepalive_timeout_ms: u64,
}

impl NetFlags {
    /// Configures the process from the flags.
    pub fn apply(&self) {
        configure(NetTimeouts::from_millis(
            self.keepalive_interval_ms,
            self.keepalive_timeout_ms,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_keeps_the_default_and_detection_adds_up() {
        let t = NetTimeouts::from_millis(0, 300);
        assert_eq!(
            t.keepalive_interval,
            NetTimeouts::default().keepalive_interval
        );
        assert_eq!(t.keepalive_timeout, Duration::from_millis(300));
        assert_eq!(t.detection(), Duration::from_millis(800));
    }
}
