//! Key presses: moving the selection, overlays, and the node actions that become
//! [`Effect`]s for the caller (kill, terminate, pause or resume, restart, start a standby; drain
//! through the dispatcher).

use cachew_cluster::NodeState;
use cachew_proto::v1;

use super::{
    ActCommand, Control, Effect, Level, Mode, Model, NodeRow, Overlay, Role, Targets, role_of,
};
use crate::keys::Key;

impl Model {
    /// Handles a key; returns what the caller must do, if anything.
    pub fn on_key(&mut self, key: Key) -> Option<Effect> {
        match std::mem::replace(&mut self.overlay, Overlay::None) {
            Overlay::Help => {
                // Any key closes the help; Ctrl-C still quits.
                if key == Key::Interrupt {
                    return self.on_key(key);
                }
                None
            }
            Overlay::Confirm { prompt, command } => match key {
                Key::Yes => Some(self.act(command)),
                Key::No | Key::Cancel | Key::Quit => {
                    self.notify(Level::Info, "cancelled".into());
                    None
                }
                Key::Interrupt => self.on_key(key),
                _ => {
                    self.overlay = Overlay::Confirm { prompt, command };
                    None
                }
            },
            Overlay::Quit => match key {
                Key::Yes | Key::Interrupt => Some(Effect::Quit { stop_cluster: true }),
                Key::No => Some(Effect::Quit {
                    stop_cluster: false,
                }),
                Key::Cancel | Key::Quit => None,
                _ => {
                    self.overlay = Overlay::Quit;
                    None
                }
            },
            Overlay::None => self.on_key_main(key),
        }
    }

    fn on_key_main(&mut self, key: Key) -> Option<Effect> {
        let rows = self.node_rows();
        let i = self.selected_index(&rows);
        let select = |m: &mut Model, j: usize| {
            m.selected = rows.get(j).map(|r| r.key.clone());
        };
        match key {
            Key::Up => select(self, i.saturating_sub(1)),
            Key::Down => select(self, (i + 1).min(rows.len().saturating_sub(1))),
            Key::First => select(self, 0),
            Key::Last => select(self, rows.len().saturating_sub(1)),
            Key::Kill => return self.act_on_selected(&rows, i, v1::Action::Kill, "kill"),
            Key::Terminate => {
                return self.act_on_selected(&rows, i, v1::Action::Terminate, "terminate");
            }
            Key::Drain => return self.drain_selected(&rows, i),
            Key::PauseResume => {
                let paused = rows
                    .get(i)
                    .and_then(|r| r.process)
                    .is_some_and(|p| p == NodeState::Paused);
                return if paused {
                    self.act_on_selected(&rows, i, v1::Action::Resume, "resume")
                } else {
                    self.act_on_selected(&rows, i, v1::Action::Pause, "pause")
                };
            }
            Key::Restart => return self.act_on_selected(&rows, i, v1::Action::Restart, "restart"),
            Key::CutConnect => {
                let cut = rows.get(i).is_some_and(|r| r.disconnected);
                return if cut {
                    self.act_on_selected(&rows, i, v1::Action::Connect, "connect")
                } else {
                    self.act_on_selected(&rows, i, v1::Action::Disconnect, "cut off")
                };
            }
            Key::PinMore | Key::PinFewer | Key::Unpin => return self.pin(key),
            Key::StartStandby => {
                if let Some(e) = self.require_control() {
                    self.notify(Level::Error, e);
                    return None;
                }
                return Some(self.act(ActCommand {
                    action: v1::Action::StartStandby,
                    targets: Targets::Named(Vec::new()),
                    label: "start a standby worker".into(),
                }));
            }
            Key::KillAll | Key::RestartAll => {
                if let Some(e) = self.require_control() {
                    self.notify(Level::Error, e);
                    return None;
                }
                let nodes: Vec<String> = self
                    .nodes
                    .iter()
                    .filter(|n| role_of(n) != Role::Client)
                    .map(|n| n.name.clone())
                    .collect();
                if nodes.is_empty() {
                    self.notify(Level::Error, "cluster control lists no nodes yet".into());
                    return None;
                }
                let (action, verb) = if key == Key::KillAll {
                    (v1::Action::Kill, "kill")
                } else {
                    (v1::Action::Restart, "restart")
                };
                self.overlay = Overlay::Confirm {
                    prompt: format!(
                        "{} the dispatcher and every worker ({} nodes)?",
                        capitalize(verb),
                        nodes.len()
                    ),
                    command: ActCommand {
                        action,
                        label: format!("{verb} the dispatcher and all workers"),
                        targets: Targets::Named(nodes),
                    },
                };
            }
            Key::Help => self.overlay = Overlay::Help,
            Key::Quit => match self.mode {
                Mode::Demo { .. } => self.overlay = Overlay::Quit,
                Mode::Attach => {
                    return Some(Effect::Quit {
                        stop_cluster: false,
                    });
                }
            },
            Key::Interrupt => {
                return Some(Effect::Quit {
                    stop_cluster: matches!(self.mode, Mode::Demo { .. }),
                });
            }
            Key::Yes | Key::No | Key::Cancel => {}
        }
        None
    }

    fn require_control(&self) -> Option<String> {
        match &self.control {
            Control::Available { .. } => None,
            Control::Unknown => Some(
                "cluster control is not known yet (waiting for the dispatcher's status)".into(),
            ),
            Control::Unavailable => Some(
                "no cluster control: the dispatcher advertises no control endpoint (start the \
                 cluster with `cachew-tui demo`, or pass --control HOST:PORT)"
                    .into(),
            ),
        }
    }

    fn act_on_selected(
        &mut self,
        rows: &[NodeRow],
        i: usize,
        action: v1::Action,
        verb: &str,
    ) -> Option<Effect> {
        if let Some(e) = self.require_control() {
            self.notify(Level::Error, e);
            return None;
        }
        let Some(row) = rows.get(i) else {
            self.notify(Level::Error, "no node selected".into());
            return None;
        };
        let Some(name) = row.control_name.clone() else {
            self.notify(
                Level::Error,
                format!("{} is not managed by cluster control", row.name),
            );
            return None;
        };
        Some(self.act(ActCommand {
            action,
            label: format!("{verb} {name}"),
            targets: Targets::Named(vec![name]),
        }))
    }

    /// Drain goes to the dispatcher, not to cluster control: it works on any worker the
    /// dispatcher knows, whoever launched it.
    fn drain_selected(&mut self, rows: &[NodeRow], i: usize) -> Option<Effect> {
        let Some(row) = rows.get(i) else {
            self.notify(Level::Error, "no node selected".into());
            return None;
        };
        let Some(worker_id) = row.worker_id.filter(|_| row.role == Role::Worker) else {
            self.notify(
                Level::Error,
                format!(
                    "{} is not a worker the dispatcher knows: only workers drain",
                    row.name
                ),
            );
            return None;
        };
        let label = format!("drain {} (worker {worker_id})", row.name);
        self.pending += 1;
        self.notify(Level::Info, format!("{label}…"));
        Some(Effect::Drain { worker_id, label })
    }

    /// Pins go to the dispatcher (`PinWorkers`): the count moves from what is wanted now (the
    /// target, or the active workers before any target).
    fn pin(&mut self, key: Key) -> Option<Effect> {
        let scale = self
            .status()
            .and_then(|s| s.autoscale.clone())
            .unwrap_or_default();
        let now = if scale.target > 0 {
            scale.target
        } else {
            scale.active
        };
        let workers = match key {
            Key::PinMore => Some(now + 1),
            Key::PinFewer if now <= 1 => {
                self.notify(Level::Error, "the worker count cannot go below 1".into());
                return None;
            }
            Key::PinFewer => Some(now - 1),
            _ => None,
        };
        let label = match workers {
            Some(n) => format!("pin the worker count at {n}"),
            None => "unpin the worker count (autoscaler)".to_string(),
        };
        self.pending += 1;
        self.notify(Level::Info, format!("{label}…"));
        Some(Effect::Pin { workers, label })
    }

    fn act(&mut self, command: ActCommand) -> Effect {
        self.pending += 1;
        self.notify(Level::Info, format!("{}…", command.label));
        Effect::Act(command)
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
