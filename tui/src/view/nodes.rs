//! The nodes panel: one row per node (selection, state, heartbeat age, PID, restarts, tasks).

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{HighlightSpacing, Row, StatefulWidget, Table, TableState};

use crate::fmt;
use crate::model::{Link, Model, NodeRow};

use super::{dim, health_style, title, title_block};

/// The fleet size in the nodes panel's title: active workers, what is wanted and by whom.
fn fleet(a: &cachew_proto::v1::Autoscale) -> String {
    let draining = if a.draining > 0 {
        format!(", {} draining", a.draining)
    } else {
        String::new()
    };
    match (a.pinned, a.target, a.enabled) {
        (Some(n), _, _) => format!(
            "workers {} of {n} pinned{draining} (a: autoscale)",
            a.active
        ),
        (None, 0, true) => format!("workers {} · autoscale measuring{draining}", a.active),
        (None, 0, false) => format!("workers {}{draining}", a.active),
        (None, t, true) => format!("workers {} of {t} autoscaled{draining}", a.active),
        (None, t, false) => format!("workers {} of {t}{draining}", a.active),
    }
}

pub(super) fn render_nodes(model: &Model, rows: &[NodeRow], area: Rect, buf: &mut Buffer) {
    let heading = match (model.link(), model.last_status_ms()) {
        (Link::Up { .. }, _) => match model.status().and_then(|s| s.autoscale.as_ref()) {
            Some(a) => format!(" Nodes · {} ", fleet(a)),
            None => " Nodes ".to_string(),
        },
        (_, Some(t)) => format!(
            " Nodes · dispatcher down: worker states as of {} ago ",
            fmt::age_ms(model.now_ms().saturating_sub(t))
        ),
        (_, None) => " Nodes · no status yet ".to_string(),
    };
    let block = title_block(title(heading));
    let wide = area.width >= 110;
    let mut widths = vec![
        Constraint::Length(10),
        Constraint::Length(if wide { 10 } else { 6 }),
        Constraint::Length(15),
        Constraint::Length(16),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(3),
        Constraint::Length(5),
    ];
    let mut header = vec![
        "node", "role", "address", "state", "hb", "pid", "rst", "tasks",
    ];
    if wide {
        widths.extend([Constraint::Length(4), Constraint::Length(4)]);
        header.extend(["id", "inc"]);
    }
    let body: Vec<Row> = rows
        .iter()
        .map(|r| {
            let state_style = if r.stale {
                dim()
            } else {
                health_style(r.health)
            };
            let hb_style = if r.stale || !model.is_up() && r.role != crate::model::Role::Dispatcher
            {
                dim()
            } else {
                health_style(r.heartbeat_health)
            };
            let opt = |v: Option<String>| v.unwrap_or_else(|| "—".into());
            let role = match (r.role, wide) {
                (crate::model::Role::Dispatcher, false) => "disp",
                (role, _) => role.name(),
            };
            let mut cells = vec![
                Span::raw(r.name.clone()),
                Span::styled(role, dim()),
                Span::styled(r.address.clone(), dim()),
                match &r.disks {
                    // A failing disk outranks the lifecycle: the node says what it cannot do.
                    Some(d) => Span::styled(
                        format!("{} · {d}", r.state),
                        Style::new().fg(Color::Red).bold(),
                    ),
                    None => Span::styled(r.state.clone(), state_style),
                },
                Span::styled(opt(r.heartbeat_ms.map(fmt::age_ms)), hb_style),
                Span::raw(opt(r.pid.map(|p| p.to_string()))),
                Span::raw(opt(r.restarts.map(|n| n.to_string()))),
                Span::raw(opt(r.tasks.map(|n| n.to_string()))),
            ];
            if wide {
                cells.extend([
                    Span::raw(opt(r.worker_id.map(|n| n.to_string()))),
                    Span::raw(opt(r.incarnation.map(|n| n.to_string()))),
                ]);
            }
            Row::new(cells)
        })
        .collect();
    let table = Table::new(body, widths)
        .header(Row::new(header).style(dim().add_modifier(Modifier::UNDERLINED)))
        .block(block)
        .column_spacing(1)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("› ")
        .highlight_spacing(HighlightSpacing::Always);
    let mut state = TableState::default().with_selected(Some(model.selected_index(rows)));
    StatefulWidget::render(table, area, buf, &mut state);
}
