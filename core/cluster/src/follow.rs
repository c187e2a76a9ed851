//! Following the dispatcher's status stream (`WatchStatus`) across dispatcher restarts. One
//! [`StatusFollower`] opens the stream, reports it up (each snapshot) or down (why, and when the
//! next attempt is), reconnects with backoff, gives a silent stream up, and hands every event on
//! once. The dashboard's status feed and the scenario runner's waits both read it.
//!
//! On every (re)connection it asks for all the events the dispatcher still holds: a restarted
//! dispatcher numbers its events from 1 again, so asking from the last sequence number seen
//! could skip the new incarnation's first ones. It resumes instead by dropping the events it
//! has handed on already (same `dispatcher_start_unix_ms`, sequence number not larger).
//!
//! It only reads the stream: it never acts on the cluster, and it runs only while polled.

use std::time::Duration;

use cachew_proto::backoff::Backoff;
use cachew_proto::v1;
use tokio::time::Instant;
use tonic::Streaming;

/// How a [`StatusFollower`] reconnects and when it gives a stream up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowOptions {
    /// How long connecting and the answer to `WatchStatus` may take together.
    pub connect_timeout: Duration,
    /// A stream that says nothing for this long is treated as down (the dispatcher sends a
    /// snapshot at least every second; a paused dispatcher keeps its socket open but goes
    /// silent). `None`: a stream is followed as long as its connection stays open.
    pub stall_timeout: Option<Duration>,
    /// The first reconnect delay. It doubles after each failure up to `max_retry`, and starts
    /// again from here once a stream has delivered a snapshot.
    pub first_retry: Duration,
    pub max_retry: Duration,
}

/// What a [`StatusFollower`] saw next.
#[derive(Debug, Clone, PartialEq)]
pub enum Followed {
    /// An attempt to open the stream starts.
    Connecting,
    /// A snapshot. Its `events` are only those not handed on before.
    Up(Box<v1::ClusterStatus>),
    /// The stream could not be opened, failed or went silent; the next attempt starts in
    /// `retry_in`. `attempt` counts the failures since the last stream that delivered.
    Down {
        reason: String,
        attempt: u32,
        retry_in: Duration,
    },
}

/// A follower of one dispatcher's status stream; [`StatusFollower::next`] drives it.
#[derive(Debug)]
pub struct StatusFollower {
    address: String,
    options: FollowOptions,
    phase: Phase,
    backoff: Backoff,
    attempt: u32,
    /// The last event handed on: (its dispatcher's `dispatcher_start_unix_ms`, its sequence
    /// number).
    last_event: Option<(u64, u64)>,
}

#[derive(Debug)]
enum Phase {
    /// The next attempt is due at this instant (none: now); it starts with `Connecting`.
    Waiting(Option<Instant>),
    Opening,
    Streaming {
        stream: Streaming<v1::ClusterStatus>,
        delivered: bool,
    },
}

impl StatusFollower {
    /// Follows the dispatcher at `address` (`host:port`); nothing happens until polled.
    pub fn new(address: &str, options: FollowOptions) -> StatusFollower {
        StatusFollower {
            address: address.to_string(),
            options,
            phase: Phase::Waiting(None),
            backoff: Backoff::new(options.first_retry, options.max_retry),
            attempt: 0,
            last_event: None,
        }
    }

    /// The next report; never ends. Cancel-safe: a call dropped before it returns loses at most
    /// the connection attempt in progress (a backoff wait keeps its deadline).
    pub async fn next(&mut self) -> Followed {
        loop {
            match &mut self.phase {
                Phase::Waiting(due) => {
                    if let Some(due) = *due {
                        tokio::time::sleep_until(due).await;
                    }
                    self.phase = Phase::Opening;
                    return Followed::Connecting;
                }
                Phase::Opening => match self.open().await {
                    Ok(stream) => {
                        self.phase = Phase::Streaming {
                            stream,
                            delivered: false,
                        }
                    }
                    Err(reason) => return self.down(reason, false),
                },
                Phase::Streaming { stream, delivered } => {
                    let message =
                        match self.options.stall_timeout {
                            Some(stall) => tokio::time::timeout(stall, stream.message())
                                .await
                                .map_err(|_| {
                                    format!(
                                        "no status for {} s (paused or partitioned?)",
                                        stall.as_secs()
                                    )
                                }),
                            None => Ok(stream.message().await),
                        };
                    let was_delivered = *delivered;
                    match message {
                        Ok(Ok(Some(mut status))) => {
                            *delivered = true;
                            self.drop_seen_events(&mut status);
                            return Followed::Up(Box::new(status));
                        }
                        Ok(Ok(None)) => {
                            return self.down("the status stream ended".into(), was_delivered);
                        }
                        Ok(Err(status)) => return self.down(status_reason(&status), was_delivered),
                        Err(stalled) => return self.down(stalled, was_delivered),
                    }
                }
            }
        }
    }

    /// Connects and asks for the stream, within `connect_timeout`.
    async fn open(&self) -> Result<Streaming<v1::ClusterStatus>, String> {
        let endpoint = cachew_proto::endpoint(&self.address).map_err(|e| e.to_string())?;
        let open = async {
            let channel = endpoint.connect().await.map_err(|e| error_chain(&e))?;
            let mut client = cachew_proto::DispatcherClient::new(channel)
                .max_decoding_message_size(cachew_proto::MAX_MESSAGE_BYTES);
            let request = v1::WatchStatusRequest { events_after: 0 };
            match client.watch_status(request).await {
                Ok(response) => Ok(response.into_inner()),
                Err(status) => Err(status_reason(&status)),
            }
        };
        tokio::time::timeout(self.options.connect_timeout, open)
            .await
            .map_err(|_| "no answer to WatchStatus".to_string())?
    }

    fn down(&mut self, reason: String, delivered: bool) -> Followed {
        if delivered {
            self.backoff.reset();
            self.attempt = 0;
        }
        self.attempt += 1;
        let retry_in = self.backoff.next_delay();
        self.phase = Phase::Waiting(Some(Instant::now() + retry_in));
        Followed::Down {
            reason,
            attempt: self.attempt,
            retry_in,
        }
    }

    /// Keeps only the events of `status` not handed on before, and remembers the last one.
    fn drop_seen_events(&mut self, status: &mut v1::ClusterStatus) {
        let start = status.dispatcher_start_unix_ms;
        let after = match self.last_event {
            Some((seen_start, seq)) if seen_start == start => seq,
            _ => 0,
        };
        status.events.retain(|e| e.seq > after);
        let last = status.events.iter().map(|e| e.seq).max().unwrap_or(after);
        self.last_event = Some((start, last));
    }
}

/// An error and its sources on one line (tonic's "transport error" alone says little).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A gRPC status as one line: its message, or the whole error chain when it has none.
pub fn status_reason(status: &tonic::Status) -> String {
    if status.message().is_empty() {
        error_chain(status)
    } else {
        status.message().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> v1::Event {
        v1::Event {
            seq,
            ..Default::default()
        }
    }

    fn status(start: u64, seqs: &[u64]) -> v1::ClusterStatus {
        v1::ClusterStatus {
            dispatcher_start_unix_ms: start,
            events: seqs.iter().copied().map(event).collect(),
            ..Default::default()
        }
    }

    fn seqs(s: &v1::ClusterStatus) -> Vec<u64> {
        s.events.iter().map(|e| e.seq).collect()
    }

    const OPTIONS: FollowOptions = FollowOptions {
        connect_timeout: Duration::from_secs(2),
        stall_timeout: None,
        first_retry: Duration::from_millis(250),
        max_retry: Duration::from_secs(4),
    };

    #[test]
    fn events_are_handed_on_once_per_dispatcher_incarnation() {
        let mut f = StatusFollower::new("127.0.0.1:1", OPTIONS);
        let mut s = status(10, &[1, 2, 3]);
        f.drop_seen_events(&mut s);
        assert_eq!(seqs(&s), [1, 2, 3]);
        // A reconnection to the same dispatcher sends its whole backlog again.
        let mut s = status(10, &[1, 2, 3, 4]);
        f.drop_seen_events(&mut s);
        assert_eq!(seqs(&s), [4]);
        let mut s = status(10, &[]);
        f.drop_seen_events(&mut s);
        assert!(s.events.is_empty());
        // A restarted dispatcher numbers from 1 again: all of its events are new.
        let mut s = status(20, &[1, 2]);
        f.drop_seen_events(&mut s);
        assert_eq!(seqs(&s), [1, 2]);
        let mut s = status(20, &[1, 2, 3]);
        f.drop_seen_events(&mut s);
        assert_eq!(seqs(&s), [3]);
    }

    #[tokio::test]
    async fn a_dead_dispatcher_is_reported_down_with_growing_delays() {
        // A port nothing listens on.
        let port = crate::free_port().unwrap();
        let mut f = StatusFollower::new(&format!("127.0.0.1:{port}"), OPTIONS);
        let mut reports = Vec::new();
        while reports.len() < 4 {
            let next = tokio::time::timeout(Duration::from_secs(10), f.next()).await;
            reports.push(next.unwrap());
        }
        assert_eq!(reports[0], Followed::Connecting);
        assert_eq!(reports[2], Followed::Connecting);
        let (
            Followed::Down {
                reason,
                attempt: 1,
                retry_in: first,
            },
            Followed::Down {
                attempt: 2,
                retry_in: second,
                ..
            },
        ) = (&reports[1], &reports[3])
        else {
            panic!("not two downs: {reports:?}");
        };
        assert!(!reason.is_empty());
        assert_eq!(*first, OPTIONS.first_retry);
        assert_eq!(*second, OPTIONS.first_retry * 2);
    }
}
