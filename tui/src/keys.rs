//! The dashboard's keys: one table that the footer, the `?` help screen and the README list, and
//! the mapping from a key press to a [`Key`] command. Owns no state and performs no action.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// What a key press asks for, before the model decides what it means in its current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Up,
    Down,
    First,
    Last,
    Kill,
    Terminate,
    Drain,
    PauseResume,
    /// Cut the selected node off its network, or connect it again.
    CutConnect,
    Restart,
    StartStandby,
    /// Pin the worker count one higher / lower than wanted now; `Unpin`: back to the autoscaler.
    PinMore,
    PinFewer,
    Unpin,
    KillAll,
    RestartAll,
    Help,
    Quit,
    /// Ctrl-C: quit at once (a demo stops its cluster).
    Interrupt,
    Yes,
    No,
    Cancel,
}

/// One line of the key list: the keys, a short footer label, and the help text.
#[derive(Debug, Clone, Copy)]
pub struct KeyHelp {
    pub keys: &'static str,
    pub short: &'static str,
    pub long: &'static str,
    /// Keys and label in the footer when the full list does not fit (`None`: left out).
    pub compact: Option<(&'static str, &'static str)>,
}

/// Every key, in the order the footer and the help screen show them.
pub const KEYS: &[KeyHelp] = &[
    KeyHelp {
        keys: "↑↓ jk",
        short: "select",
        long: "move the selection in the node list (g / G: first / last)",
        compact: Some(("jk", "select")),
    },
    KeyHelp {
        keys: "x",
        short: "kill",
        long: "kill the selected node with SIGKILL (a crash)",
        compact: Some(("x", "kill")),
    },
    KeyHelp {
        keys: "t",
        short: "term",
        long: "terminate the selected node with SIGTERM (a graceful stop)",
        compact: Some(("t", "term")),
    },
    KeyHelp {
        keys: "d",
        short: "drain",
        long: "drain the selected worker via the dispatcher (splits move, it exits)",
        // The 80-column footer has no room left; the help screen lists it.
        compact: None,
    },
    KeyHelp {
        keys: "p",
        short: "pause",
        long: "pause (SIGSTOP) or resume (SIGCONT) the selected node, like a partition",
        compact: Some(("p", "pause")),
    },
    KeyHelp {
        keys: "c",
        short: "cut",
        long: "cut the selected node off its network, or connect it (hosts, Compose)",
        compact: None,
    },
    KeyHelp {
        keys: "r",
        short: "restart",
        long: "restart the selected node with the same address and directories",
        compact: Some(("r", "restart")),
    },
    KeyHelp {
        keys: "s",
        short: "standby",
        long: "start one more standby worker",
        compact: Some(("s", "standby")),
    },
    KeyHelp {
        keys: "+-",
        short: "pin",
        long: "pin the worker count one above / below the target (start / drain)",
        compact: None,
    },
    KeyHelp {
        keys: "a",
        short: "auto",
        long: "unpin: the autoscaler sizes the fleet again",
        compact: None,
    },
    KeyHelp {
        keys: "X",
        short: "kill all",
        long: "kill the dispatcher and every worker (asks y/n; clients keep running)",
        compact: Some(("X/R", "all")),
    },
    KeyHelp {
        keys: "R",
        short: "restart all",
        long: "restart the dispatcher and every worker (asks y/n)",
        compact: None,
    },
    KeyHelp {
        keys: "?",
        short: "help",
        long: "show or hide this help",
        compact: Some(("?", "help")),
    },
    KeyHelp {
        keys: "q",
        short: "quit",
        long: "quit (a demo asks whether to stop the cluster it launched)",
        compact: Some(("q", "quit")),
    },
];

/// The command of a key press; `None` for releases, repeats of non-movement keys and unbound keys.
pub fn key_of(event: &KeyEvent) -> Option<Key> {
    if event.kind == KeyEventKind::Release {
        return None;
    }
    if event.modifiers.contains(KeyModifiers::CONTROL) {
        return match event.code {
            KeyCode::Char('c') => Some(Key::Interrupt),
            _ => None,
        };
    }
    let key = match event.code {
        KeyCode::Up | KeyCode::Char('k') => Key::Up,
        KeyCode::Down | KeyCode::Char('j') => Key::Down,
        KeyCode::Home | KeyCode::Char('g') => Key::First,
        KeyCode::End | KeyCode::Char('G') => Key::Last,
        KeyCode::Char('x') => Key::Kill,
        KeyCode::Char('t') => Key::Terminate,
        KeyCode::Char('d') => Key::Drain,
        KeyCode::Char('p') => Key::PauseResume,
        KeyCode::Char('c') => Key::CutConnect,
        KeyCode::Char('r') => Key::Restart,
        KeyCode::Char('s') => Key::StartStandby,
        KeyCode::Char('+') | KeyCode::Char('=') => Key::PinMore,
        KeyCode::Char('-') => Key::PinFewer,
        KeyCode::Char('a') => Key::Unpin,
        KeyCode::Char('X') => Key::KillAll,
        KeyCode::Char('R') => Key::RestartAll,
        KeyCode::Char('?') | KeyCode::F(1) => Key::Help,
        KeyCode::Char('q') => Key::Quit,
        KeyCode::Char('y') | KeyCode::Char('Y') => Key::Yes,
        KeyCode::Char('n') | KeyCode::Char('N') => Key::No,
        KeyCode::Esc => Key::Cancel,
        _ => return None,
    };
    let movement = matches!(key, Key::Up | Key::Down);
    if event.kind == KeyEventKind::Repeat && !movement {
        return None;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn maps_keys_and_ignores_releases() {
        assert_eq!(key_of(&press(KeyCode::Char('j'))), Some(Key::Down));
        assert_eq!(key_of(&press(KeyCode::Up)), Some(Key::Up));
        assert_eq!(key_of(&press(KeyCode::Char('x'))), Some(Key::Kill));
        assert_eq!(key_of(&press(KeyCode::Char('X'))), Some(Key::KillAll));
        assert_eq!(key_of(&press(KeyCode::Char('z'))), None);
        assert_eq!(
            key_of(&KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Key::Interrupt)
        );
        let mut release = press(KeyCode::Char('x'));
        release.kind = KeyEventKind::Release;
        assert_eq!(key_of(&release), None);
        let mut repeat = press(KeyCode::Char('x'));
        repeat.kind = KeyEventKind::Repeat;
        assert_eq!(key_of(&repeat), None, "holding x must not kill twice");
    }
}
