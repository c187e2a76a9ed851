//! The view: a pure function of the [`Model`] into a ratatui buffer, one `render_*` per area.
//! It reads the model and nothing else (no clock, no I/O), so snapshot tests pin it.
//!
//! ```text
//! header:  dispatcher, link state, timing, clock
//! nodes:   one row per node (selection, state, heartbeat age, PID, restarts, tasks)
//! job | splits
//! events | checkpoints
//!        | journal
//! footer:  keys
//! status:  result of the last action, or what the dashboard is attached to
//! ```
//! At 80x24 every panel gets a few lines; more rows and columns go to the node list (up to all
//! nodes), the sparkline, verdict history, split grid and event log.
//!
//! This file lays the panels out and draws the header, footer, status line and popups; each
//! panel group has its own file: `nodes`, `job` (with the trainer's time waiting for data
//! beside its throughput), `splits`, `logs` (events, checkpoints, journal).

use ratatui::buffer::Buffer;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Widget, Wrap};

use crate::fmt;
use crate::keys::KEYS;
use crate::model::{Control, Health, Level, Link, Mode, Model, Overlay};

mod job;
mod logs;
mod nodes;
mod splits;

use job::render_job;
use logs::{render_checkpoints, render_events, render_journal};
use nodes::render_nodes;
use splits::render_splits;

impl Widget for &Model {
    fn render(self, area: Rect, buf: &mut Buffer) {
        render(self, area, buf);
    }
}

/// Renders the whole dashboard into `area`.
pub fn render(model: &Model, area: Rect, buf: &mut Buffer) {
    if area.width < 40 || area.height < 12 {
        Paragraph::new("cachew-tui needs at least 40x12 (80x24 recommended)")
            .wrap(Wrap { trim: true })
            .render(area, buf);
        return;
    }
    let [header, body, footer, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    render_header(model, header, buf);
    render_body(model, body, buf);
    render_footer(footer, buf);
    render_status_line(model, status, buf);
    match model.overlay() {
        Overlay::None => {}
        Overlay::Help => render_help(area, buf),
        Overlay::Confirm { prompt, .. } => render_question(
            area,
            buf,
            " Confirm ",
            &[prompt.as_str()],
            &[("y", "yes"), ("n / Esc", "no")],
        ),
        Overlay::Quit => render_question(
            area,
            buf,
            " Quit ",
            &["Stop the local cluster this dashboard launched?"],
            &[
                ("y", "stop every node and quit"),
                (
                    "n",
                    "quit the dashboard, keep the cluster running until Ctrl-C",
                ),
                ("Esc", "stay"),
            ],
        ),
    }
}

pub(super) fn health_style(h: Health) -> Style {
    match h {
        Health::Good => Style::new().fg(Color::Green),
        Health::Idle => Style::new().fg(Color::Cyan),
        Health::Warn => Style::new().fg(Color::Yellow),
        Health::Bad => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        Health::Unknown => Style::new().fg(Color::Gray),
    }
}

pub(super) fn dim() -> Style {
    Style::new().fg(Color::DarkGray)
}

pub(super) fn title_block(title: Line<'_>) -> Block<'_> {
    Block::new()
        .borders(Borders::TOP)
        .border_style(dim())
        .title(title)
}

pub(super) fn title(text: String) -> Line<'static> {
    Line::from(Span::styled(text, Style::new().bold()))
}

// ---------------------------------------------------------------------- header and footer

pub(super) fn render_header(model: &Model, area: Rect, buf: &mut Buffer) {
    let address = model
        .status()
        .map(|s| s.dispatcher_address.as_str())
        .filter(|a| !a.is_empty())
        .unwrap_or(model.target());
    let mut spans = vec![
        Span::styled(" cachew-tui ", Style::new().bold().reversed()),
        Span::raw(" dispatcher "),
        Span::styled(address.to_string(), Style::new().bold()),
        Span::raw(" "),
    ];
    let now = model.now_ms();
    match model.link() {
        Link::Up { since_ms } => {
            spans.push(Span::styled("● up", health_style(Health::Good)));
            spans.push(Span::styled(
                format!(" {}", fmt::age_ms(now.saturating_sub(*since_ms))),
                dim(),
            ));
        }
        Link::Connecting { .. } => {
            spans.push(Span::styled("● connecting", health_style(Health::Warn)));
        }
        Link::Down {
            since_ms,
            error,
            attempt,
            retry_at_ms,
        } => {
            spans.push(Span::styled(
                format!("● DOWN {}", fmt::age_ms(now.saturating_sub(*since_ms))),
                Style::new().fg(Color::White).bg(Color::Red).bold(),
            ));
            spans.push(Span::styled(
                format!(
                    " retry #{} in {}: {error}",
                    attempt + 1,
                    fmt::age_ms(retry_at_ms.saturating_sub(now))
                ),
                Style::new().fg(Color::Red),
            ));
        }
    }
    if model.is_up() {
        let (interval, timeout) = model.timing();
        spans.push(Span::styled(
            format!(
                "  hb {} timeout {}",
                fmt::age_ms(interval),
                fmt::age_ms(timeout)
            ),
            dim(),
        ));
    }
    let clock = format!(" {} UTC ", fmt::clock_utc(now));
    let line = Line::from(spans);
    let clock_w = clock.chars().count() as u16;
    if line.width() as u16 + clock_w <= area.width {
        buf.set_string(area.right() - clock_w, area.y, clock, dim());
    }
    line.render(area, buf);
}

pub(super) fn render_footer(area: Rect, buf: &mut Buffer) {
    let key = Style::new().fg(Color::Black).bg(Color::Gray);
    let full: u16 = KEYS
        .iter()
        .map(|k| (k.keys.chars().count() + k.short.chars().count() + 3) as u16)
        .sum();
    let mut spans = Vec::new();
    for k in KEYS {
        let (keys, label) = if full <= area.width {
            (k.keys, k.short)
        } else {
            match k.compact {
                Some(c) => c,
                None => continue,
            }
        };
        spans.push(Span::styled(keys, key));
        spans.push(Span::raw(format!(" {label} ")));
    }
    Line::from(spans).render(area, buf);
}

pub(super) fn render_status_line(model: &Model, area: Rect, buf: &mut Buffer) {
    let line = match model.notice() {
        Some(n) => {
            let style = match n.level {
                Level::Info => Style::new().fg(Color::Yellow),
                Level::Ok => Style::new().fg(Color::Green),
                Level::Error => Style::new().fg(Color::Red).bold(),
            };
            Line::from(Span::styled(n.text.clone(), style))
        }
        None => {
            let control = match model.control() {
                Control::Available {
                    address,
                    error: None,
                } => format!("control {address}"),
                Control::Available {
                    address,
                    error: Some(e),
                } => format!("control {address} unreachable: {e}"),
                Control::Unknown => "control: waiting for the dispatcher".into(),
                Control::Unavailable => "no cluster control (read-only)".into(),
            };
            let text = match model.mode() {
                Mode::Demo { run_dir } => {
                    format!("demo · {control} · run dir {}", run_dir.display())
                }
                Mode::Attach => format!("attached · {control}"),
            };
            Line::from(Span::styled(text, dim()))
        }
    };
    line.render(area, buf);
}

// ---------------------------------------------------------------------- body

pub(super) fn render_body(model: &Model, area: Rect, buf: &mut Buffer) {
    let rows = model.node_rows();
    let nodes_h = (rows.len() as u16 + 2).min(area.height * 45 / 100).max(3);
    let rest = area.height.saturating_sub(nodes_h);
    let middle_h = (rest * 45 / 100).max(6).min(rest.saturating_sub(5));
    let [nodes, middle, bottom] = Layout::vertical([
        Constraint::Length(nodes_h),
        Constraint::Length(middle_h),
        Constraint::Fill(1),
    ])
    .areas(area);
    render_nodes(model, &rows, nodes, buf);
    let [job, splits] = Layout::horizontal([Constraint::Fill(1), Constraint::Fill(1)])
        .spacing(1)
        .areas(middle);
    render_job(model, job, buf);
    render_splits(model, splits, buf);
    let (events_w, side_w) = if area.width >= 120 { (3, 2) } else { (6, 5) };
    let [events, side] = Layout::horizontal([Constraint::Fill(events_w), Constraint::Fill(side_w)])
        .spacing(1)
        .areas(bottom);
    let journal_h = if side.height >= 10 { 3 } else { 2 };
    let [checkpoints, journal] =
        Layout::vertical([Constraint::Fill(1), Constraint::Length(journal_h)]).areas(side);
    render_events(model, events, buf);
    render_checkpoints(model, checkpoints, buf);
    render_journal(model, journal, buf);
}

fn popup(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width.saturating_sub(2));
    let h = height.min(area.height.saturating_sub(2));
    area.centered(Constraint::Length(w), Constraint::Length(h))
}

pub(super) fn render_help(area: Rect, buf: &mut Buffer) {
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|k| {
            Line::from(vec![
                Span::styled(format!(" {:<6}", k.keys), Style::new().bold()),
                Span::raw(k.long),
            ])
        })
        .collect();
    lines.push(Line::raw(""));
    for note in [
        "state: alive, suspect, standby, draining, left or dead (dispatcher's view)",
        "  with the process state in brackets (paused, killed, exited)",
        "hb: heartbeat age; green within 2 intervals, yellow up to the",
        "  timeout, red beyond (dispatcher: time since its last status)",
        "splits: █ delivered, 1-9a-z owner (its place among the workers",
        "  above; red: owner down), · not assigned. Times are UTC.",
        "Any key closes this help.",
    ] {
        lines.push(Line::styled(format!(" {note}"), dim()));
    }
    let height = lines.len() as u16 + 2;
    let rect = popup(area, 78, height);
    Clear.render(rect, buf);
    Paragraph::new(lines)
        .block(Block::bordered().title(title(" Keys ".into())))
        .render(rect, buf);
}

pub(super) fn render_question(
    area: Rect,
    buf: &mut Buffer,
    heading: &str,
    prompt: &[&str],
    answers: &[(&str, &str)],
) {
    let mut lines: Vec<Line> = prompt
        .iter()
        .map(|p| Line::styled(format!(" {p}"), Style::new().bold()))
        .collect();
    lines.push(Line::raw(""));
    for (k, what) in answers {
        lines.push(Line::from(vec![
            Span::styled(format!(" {k:<8}"), Style::new().bold()),
            Span::raw(*what),
        ]));
    }
    let width = lines.iter().map(Line::width).max().unwrap_or(20) as u16 + 4;
    let rect = popup(area, width, lines.len() as u16 + 2);
    Clear.render(rect, buf);
    Paragraph::new(lines)
        .alignment(Alignment::Left)
        .block(
            Block::bordered()
                .border_style(Style::new().fg(Color::Yellow))
                .title(title(heading.to_string())),
        )
        .render(rect, buf);
}
