//! The event log, checkpoint and journal panels.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Table, Widget};

use cachew_proto::v1;

use crate::fmt;
use crate::model::{CheckpointSource, DashboardEvent, EventLabel, Model, Origin};

use super::{dim, title, title_block};

/// The colour of an event kind. Every kind is listed: a new one does not compile until it
/// has a style.
fn event_style(kind: EventLabel) -> Style {
    use v1::EventKind as K;
    let good = Style::new().fg(Color::Green);
    let warn = Style::new().fg(Color::Yellow);
    let bad = Style::new().fg(Color::Red).bold();
    let moved = Style::new().fg(Color::Magenta).bold();
    let membership = Style::new().fg(Color::Cyan);
    let progress = Style::new().fg(Color::Blue);
    match kind {
        EventLabel::Cluster(k) => match k {
            K::Registered
            | K::Reregistered
            | K::Recovered
            | K::HeartbeatResumed
            | K::StandbyPromoted
            | K::VerdictOk
            | K::DiskRecovered
            | K::JournalRecovered
            | K::CacheComplete => good,
            K::HeartbeatMissed | K::DispatcherStalled | K::CacheRepaired => warn,
            K::HeartbeatTimeout
            | K::DeclaredDead
            | K::Fenced
            | K::VerdictFailed
            | K::DiskFailing
            | K::JournalUnavailable
            | K::ConsumerTimeout
            | K::ScaleCommandFailed => bad,
            K::Failover => moved,
            K::JobCreated
            | K::ConsumerAttached
            | K::ConsumerReleased
            | K::JobFinished
            | K::JournalReplayed
            | K::CacheDecision
            | K::WorkerDraining
            | K::WorkerLeft
            | K::ScaleUp
            | K::ScaleDown
            | K::ScalePinned
            | K::Expired => membership,
            K::EpochDone | K::EpochReport => progress,
            K::Unspecified => Style::new(),
        },
        EventLabel::Dashboard(DashboardEvent::LinkUp | DashboardEvent::Action) => good,
        EventLabel::Dashboard(DashboardEvent::LinkDown | DashboardEvent::ActionFailed) => bad,
    }
}

pub(super) fn render_events(model: &Model, area: Rect, buf: &mut Buffer) {
    let block = title_block(title(format!(" Events ({}) ", model.events().len())));
    let inner = block.inner(area);
    block.render(area, buf);
    for (i, e) in model.events().rev().take(inner.height as usize).enumerate() {
        let mut kind = Span::styled(e.kind.name(), event_style(e.kind));
        if e.origin == Origin::Dashboard {
            kind = kind.italic();
        }
        let line = Line::from(vec![
            Span::styled(fmt::clock_utc(e.unix_ms), dim()),
            Span::raw(" "),
            kind,
            Span::raw(" "),
            Span::raw(e.message.clone()),
        ]);
        line.render(Rect::new(inner.x, inner.y + i as u16, inner.width, 1), buf);
    }
}

pub(super) fn render_checkpoints(model: &Model, area: Rect, buf: &mut Buffer) {
    let stale = !model.is_up()
        && model
            .checkpoints()
            .values()
            .any(|r| r.source == CheckpointSource::Heartbeat);
    let heading = if stale {
        " Checkpoints · last reported "
    } else {
        " Checkpoints "
    };
    let block = title_block(title(heading.into()));
    let inner = block.inner(area);
    let wide = inner.width >= 44;
    let now = model.now_ms();
    let rows: Vec<Row> = model
        .checkpoints()
        .iter()
        .map(|(address, row)| {
            let info = &row.info;
            let name = model.address_name(address);
            if info.count == 0 || info.last_unix_ms == 0 {
                return Row::new(vec![
                    Span::raw(name),
                    Span::styled("—", dim()),
                    Span::raw("#0"),
                ]);
            }
            let age = now.saturating_sub(info.last_unix_ms);
            let size = if wide {
                fmt::bytes(info.last_bytes)
            } else {
                fmt::bytes_short(info.last_bytes)
            };
            Row::new(vec![
                Span::raw(name),
                Span::styled(fmt::age_ms(age), if stale { dim() } else { Style::new() }),
                Span::raw(format!("#{}", info.count)),
                Span::raw(size),
                Span::raw(fmt::duration_us(info.last_duration_us)),
            ])
        })
        .collect();
    if rows.is_empty() {
        block.render(area, buf);
        Paragraph::new(Span::styled("no worker has reported one", dim())).render(inner, buf);
        return;
    }
    let widths = if wide {
        [
            Constraint::Length(10),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(9),
            Constraint::Length(7),
        ]
    } else {
        [
            Constraint::Length(9),
            Constraint::Length(5),
            Constraint::Length(5),
            Constraint::Length(5),
            Constraint::Length(6),
        ]
    };
    let header = inner.height as usize > rows.len();
    let mut table = Table::new(rows, widths).column_spacing(1).block(block);
    if header {
        table = table.header(
            Row::new(["worker", "age", "count", "size", "took"])
                .style(dim().add_modifier(Modifier::UNDERLINED)),
        );
    }
    Widget::render(table, area, buf);
}

pub(super) fn render_journal(model: &Model, area: Rect, buf: &mut Buffer) {
    let block = title_block(title(" Journal ".into()));
    let inner = block.inner(area);
    block.render(area, buf);
    let journal = model.status().and_then(|s| s.journal).filter(|j| j.enabled);
    let lines = match journal {
        None => vec![Line::from(vec![
            Span::raw("—"),
            Span::styled(
                if model.status().is_some() {
                    "  not journaling"
                } else {
                    "  no status yet"
                },
                dim(),
            ),
        ])],
        Some(j) => {
            let snapshot = if j.last_snapshot_unix_ms == 0 {
                "no snapshot".to_string()
            } else {
                format!(
                    "snapshot @{} {} ago",
                    fmt::thousands(j.last_snapshot_seq),
                    fmt::age_ms(model.now_ms().saturating_sub(j.last_snapshot_unix_ms))
                )
            };
            let main = Line::from(vec![
                Span::raw(fmt::thousands(j.records)),
                Span::styled(" records · last seq ", dim()),
                Span::raw(fmt::thousands(j.last_seq)),
            ]);
            if inner.height >= 2 {
                vec![main, Line::from(snapshot)]
            } else {
                let snap = if j.last_snapshot_unix_ms == 0 {
                    "no snap".to_string()
                } else {
                    format!(
                        "snap {} ago",
                        fmt::age_ms(model.now_ms().saturating_sub(j.last_snapshot_unix_ms))
                    )
                };
                vec![Line::from(format!(
                    "{} rec · seq {} · {snap}",
                    fmt::thousands(j.records),
                    fmt::thousands(j.last_seq)
                ))]
            }
        }
    };
    Paragraph::new(lines).render(inner, buf);
}

// ---------------------------------------------------------------------- overlays
