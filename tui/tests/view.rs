//! Snapshot tests of the view: model states fed from real status-stream and cluster-control
//! messages (see `common`), rendered on ratatui's `TestBackend` at 80x24 and 140x40. The text
//! snapshots pin layout and content; the style checks below pin the colours that carry meaning.

#![allow(clippy::unwrap_used)]

mod common;

use cachew_tui::keys::Key;
use cachew_tui::model::Model;
use common::*;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Color;

fn render(model: &Model, width: u16, height: u16) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal
        .draw(|frame| frame.render_widget(model, frame.area()))
        .unwrap();
    terminal
}

fn snapshot(name: &str, model: &Model) {
    for (w, h) in [(80, 24), (140, 40)] {
        let terminal = render(model, w, h);
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), terminal.backend());
    }
}

/// The screen's text, one string per row.
fn rows(buf: &Buffer) -> Vec<String> {
    (0..buf.area.height)
        .map(|y| {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol())
                .collect::<String>()
        })
        .collect()
}

/// The foreground colour of the first cell of `needle` on the row that contains `row_key`.
fn colour_of(buf: &Buffer, row_key: &str, needle: &str) -> Color {
    let rows = rows(buf);
    let (y, line) = rows
        .iter()
        .enumerate()
        .find(|(_, r)| {
            r.find(row_key)
                .is_some_and(|i| row_key == needle || r[i + row_key.len()..].contains(needle))
        })
        .unwrap_or_else(|| {
            panic!(
                "no row with {row_key:?} and {needle:?}:\n{}",
                rows.join("\n")
            )
        });
    // The needle after the row key (unless it is the key), by characters, not bytes (the
    // screen holds multi-byte symbols).
    let from = if row_key == needle {
        0
    } else {
        line.find(row_key).unwrap() + row_key.len()
    };
    let byte = from + line[from..].find(needle).unwrap();
    let x = line[..byte].chars().count() as u16;
    buf[(x, y as u16)].fg
}

#[test]
fn healthy() {
    snapshot("healthy", &common::healthy());
}

/// The job panel shows the trainer's time waiting for data beside its throughput.
#[test]
fn input_bound() {
    let model = common::input_bound();
    snapshot("input_bound", &model);
    let text = rows(render(&model, 80, 24).backend().buffer()).join("\n");
    assert!(text.contains("· waiting 37%"), "{text}");
    let healthy = rows(render(&common::healthy(), 80, 24).backend().buffer()).join("\n");
    assert!(!healthy.contains("waiting"), "{healthy}");
}

#[test]
fn worker_dead() {
    snapshot("worker_dead", &common::worker_dead());
}

#[test]
fn dispatcher_down() {
    snapshot("dispatcher_down", &common::dispatcher_down());
}

#[test]
fn failover_in_progress() {
    snapshot("failover_in_progress", &common::failover_in_progress());
}

#[test]
fn help_and_questions_fit_80x24() {
    let mut model = common::healthy();
    model.on_key(Key::Help);
    insta::assert_snapshot!("help_80x24", render(&model, 80, 24).backend());
    model.on_key(Key::Cancel);
    model.on_key(Key::KillAll);
    insta::assert_snapshot!("confirm_kill_all_80x24", render(&model, 80, 24).backend());
    model.on_key(Key::No);
    model.on_key(Key::Quit);
    insta::assert_snapshot!("quit_demo_80x24", render(&model, 80, 24).backend());
}

#[test]
fn colours_carry_state() {
    let healthy = render(&common::healthy(), 80, 24);
    let buf = healthy.backend().buffer();
    assert_eq!(colour_of(buf, "worker-1", "alive"), Color::Green);
    assert_eq!(colour_of(buf, "standby-1", "standby"), Color::Cyan);
    // Heartbeat ages within two intervals are green.
    assert_eq!(colour_of(buf, "worker-1", "120ms"), Color::Green);

    let dead = render(&common::worker_dead(), 80, 24);
    let buf = dead.backend().buffer();
    assert_eq!(colour_of(buf, "worker-2", "dead (killed)"), Color::Red);
    assert_eq!(colour_of(buf, "declared_dead", "declared_dead"), Color::Red);
    assert_eq!(colour_of(buf, "failover", "failover"), Color::Magenta);

    let failover = render(&common::failover_in_progress(), 140, 40);
    let buf = failover.backend().buffer();
    assert_eq!(colour_of(buf, "standby-1", "alive"), Color::Green);
    assert_eq!(
        colour_of(buf, "standby_promoted", "standby_promoted"),
        Color::Green
    );

    let down = render(&common::dispatcher_down(), 80, 24);
    let buf = down.backend().buffer();
    assert_eq!(colour_of(buf, "dispatcher", "down (killed)"), Color::Red);
    // The workers' states come from a snapshot taken before the dispatcher died: dimmed.
    assert_eq!(colour_of(buf, "worker-1", "alive"), Color::DarkGray);
}

#[test]
fn suspect_heartbeats_turn_yellow_then_red() {
    use cachew_tui::model::{Health, heartbeat_health};
    assert_eq!(
        heartbeat_health(400, HEARTBEAT_MS, TIMEOUT_MS),
        Health::Good
    );
    assert_eq!(
        heartbeat_health(401, HEARTBEAT_MS, TIMEOUT_MS),
        Health::Warn
    );
    assert_eq!(
        heartbeat_health(2000, HEARTBEAT_MS, TIMEOUT_MS),
        Health::Warn
    );
    assert_eq!(
        heartbeat_health(2001, HEARTBEAT_MS, TIMEOUT_MS),
        Health::Bad
    );
}

#[test]
fn tiny_terminals_get_a_message_not_a_panic() {
    let model = common::healthy();
    for (w, h) in [(1, 1), (20, 5), (39, 30), (80, 11), (40, 12)] {
        let terminal = render(&model, w, h);
        let text = rows(terminal.backend().buffer()).join("");
        assert!(!text.trim().is_empty(), "{w}x{h} rendered nothing");
    }
}
