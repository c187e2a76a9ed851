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

use ratatui::buffer::Buffer;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Clear, HighlightSpacing, LineGauge, Paragraph, Row, Sparkline, StatefulWidget,
    Table, TableState, Widget, Wrap,
};

use cachew_proto::v1;

use crate::fmt;
use crate::keys::KEYS;
use crate::model::{
    CheckpointSource, Control, DashboardEvent, EventLabel, Health, Level, Link, Mode, Model,
    NodeRow, Origin, Overlay, SplitCell,
};

/// Colours of split owners, by worker id.
const OWNER_COLOURS: [Color; 8] = [
    Color::Cyan,
    Color::Magenta,
    Color::Blue,
    Color::Yellow,
    Color::LightGreen,
    Color::LightMagenta,
    Color::LightBlue,
    Color::LightCyan,
];

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

fn health_style(h: Health) -> Style {
    match h {
        Health::Good => Style::new().fg(Color::Green),
        Health::Idle => Style::new().fg(Color::Cyan),
        Health::Warn => Style::new().fg(Color::Yellow),
        Health::Bad => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        Health::Unknown => Style::new().fg(Color::Gray),
    }
}

fn dim() -> Style {
    Style::new().fg(Color::DarkGray)
}

fn title_block(title: Line<'_>) -> Block<'_> {
    Block::new()
        .borders(Borders::TOP)
        .border_style(dim())
        .title(title)
}

fn title(text: String) -> Line<'static> {
    Line::from(Span::styled(text, Style::new().bold()))
}

// ---------------------------------------------------------------------- header and footer

fn render_header(model: &Model, area: Rect, buf: &mut Buffer) {
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

fn render_footer(area: Rect, buf: &mut Buffer) {
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

fn render_status_line(model: &Model, area: Rect, buf: &mut Buffer) {
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

fn render_body(model: &Model, area: Rect, buf: &mut Buffer) {
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

fn render_nodes(model: &Model, rows: &[NodeRow], area: Rect, buf: &mut Buffer) {
    let heading = match (model.link(), model.last_status_ms()) {
        (Link::Up { .. }, _) => " Nodes ".to_string(),
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

fn render_job(model: &Model, area: Rect, buf: &mut Buffer) {
    let Some(job) = model.focus_job() else {
        let block = title_block(title(" Job ".into()));
        let inner = block.inner(area);
        block.render(area, buf);
        Paragraph::new(Span::styled("no job yet: waiting for a client", dim())).render(inner, buf);
        return;
    };
    let jobs = model.status().map_or(0, |s| s.jobs.len());
    let mut heading = format!(" Job {} #{} ", job.name, job.job_id);
    if jobs > 1 {
        heading.push_str(&format!("(+{} more) ", jobs - 1));
    }
    if job.finished {
        heading.push_str("finished ");
    }
    let block = title_block(title(heading));
    let inner = block.inner(area);
    block.render(area, buf);
    if inner.height == 0 {
        return;
    }
    let epoch = Model::current_epoch(job);
    let epoch_status = job.epochs.iter().find(|e| e.epoch == epoch);
    let (delivered, total, assigned) = epoch_status.map_or((0, job.num_splits, 0), |e| {
        (e.splits_delivered, e.splits_total, e.splits_assigned)
    });
    let ratio = if total == 0 {
        0.0
    } else {
        f64::from(delivered) / f64::from(total)
    };
    let of = if job.num_epochs == 0 {
        "∞".to_string()
    } else {
        job.num_epochs.to_string()
    };
    let mut y = inner.y;
    let line = |y: u16| Rect::new(inner.x, y, inner.width, 1);
    LineGauge::default()
        .ratio(ratio.clamp(0.0, 1.0))
        .label(Line::from(vec![
            Span::styled(format!("epoch {epoch}"), Style::new().bold()),
            Span::styled(format!("/{of} "), dim()),
            Span::raw(format!("{delivered}/{total} ")),
        ]))
        .filled_style(Style::new().fg(Color::Green))
        .unfilled_style(dim())
        .render(line(y), buf);
    y += 1;
    let examples: u64 = job.consumers.iter().map(|c| c.delivered_examples).sum();
    let rate = model.throughput(job.job_id).and_then(|t| t.latest());
    let mut spans = vec![
        Span::raw(fmt::thousands(examples)),
        Span::styled(" delivered", dim()),
    ];
    if let Some(r) = rate {
        spans.push(Span::styled(" · ", dim()));
        spans.push(Span::raw(fmt::thousands(r)));
        spans.push(Span::styled("/s", dim()));
    }
    if assigned > 0 {
        spans.push(Span::styled(format!(" · {assigned} in flight"), dim()));
    }
    if y < inner.bottom() {
        Line::from(spans).render(line(y), buf);
        y += 1;
    }
    // Per-epoch split counts, when there is room for them and a verdict or two.
    if inner.height >= 8 && job.epochs.len() > 1 {
        let mut spans = vec![Span::styled("splits", dim())];
        for e in &job.epochs {
            spans.push(Span::raw(format!(
                " e{} {}/{}",
                e.epoch, e.splits_delivered, e.splits_total
            )));
            if e.splits_assigned > 0 {
                spans.push(Span::styled(
                    format!(" +{} assigned", e.splits_assigned),
                    dim(),
                ));
            }
        }
        Line::from(spans).render(line(y), buf);
        y += 1;
    }
    let verdicts = Model::verdicts(job);
    let remaining = inner.bottom().saturating_sub(y);
    // Sparkline: a quarter of the rest, 1..=3 rows, if a row is left for a verdict.
    let spark_h = (remaining / 4).clamp(1, 3).min(remaining.saturating_sub(1));
    if spark_h > 0 {
        let width = inner.width as usize;
        let data: Vec<u64> = model
            .throughput(job.job_id)
            .map(|t| {
                let skip = t.rates().len().saturating_sub(width);
                t.rates().skip(skip).collect()
            })
            .unwrap_or_default();
        Sparkline::default()
            .data(&data)
            .style(Style::new().fg(Color::Cyan))
            .render(Rect::new(inner.x, y, inner.width, spark_h), buf);
        y += spark_h;
    }
    if y < inner.bottom() && verdicts.is_empty() {
        Line::from(Span::styled("no finished epoch yet", dim())).render(line(y), buf);
    }
    let several = job.consumers.len() > 1;
    for v in verdicts {
        if y >= inner.bottom() {
            break;
        }
        let r = &v.report;
        let mut spans = vec![Span::styled(format!("e{} ", r.epoch), Style::new().bold())];
        if several {
            spans.push(Span::styled(format!("c{} ", v.consumer), dim()));
        }
        match v.passed() {
            Some(true) => {
                spans.push(Span::styled("✓ ", health_style(Health::Good)));
                spans.push(Span::styled(
                    r.verdict.clone(),
                    Style::new().fg(Color::Green),
                ));
            }
            Some(false) => {
                spans.push(Span::styled("✗ ", health_style(Health::Bad)));
                spans.push(Span::styled(r.verdict.clone(), health_style(Health::Bad)));
            }
            None => {
                spans.push(Span::styled("· ", dim()));
                spans.push(Span::raw(format!(
                    "{} examples, not verified",
                    fmt::thousands(r.examples)
                )));
            }
        }
        spans.push(Span::styled(
            format!(
                " · {} img/s",
                fmt::thousands(r.images_per_sec.max(0.0) as u64)
            ),
            dim(),
        ));
        if r.skipped > 0 {
            spans.push(Span::styled(format!(" · {} skipped", r.skipped), dim()));
        }
        Line::from(spans).render(line(y), buf);
        y += 1;
    }
}

/// The character that stands for a worker in the split grid (see [`Model::worker_marks`]).
fn owner_char(marks: &[(u64, char)], worker_id: u64) -> char {
    marks
        .iter()
        .find(|(id, _)| *id == worker_id)
        .map_or('#', |(_, c)| *c)
}

fn owner_colour(worker_id: u64) -> Color {
    OWNER_COLOURS[(worker_id as usize) % OWNER_COLOURS.len()]
}

fn render_splits(model: &Model, area: Rect, buf: &mut Buffer) {
    let Some(job) = model.focus_job() else {
        title_block(title(" Splits ".into())).render(area, buf);
        return;
    };
    let epoch = Model::current_epoch(job);
    let cells = model.split_cells(job, epoch);
    let block = title_block(title(format!(" Splits · epoch {epoch} ")));
    let inner = block.inner(area);
    block.render(area, buf);
    if inner.height == 0 || inner.width == 0 || cells.is_empty() {
        return;
    }
    let mut owners: Vec<(u64, bool)> = Vec::new();
    for c in &cells {
        if let SplitCell::Assigned {
            worker_id,
            owner_ok,
            ..
        } = *c
            && !owners.iter().any(|(w, _)| *w == worker_id)
        {
            owners.push((worker_id, owner_ok));
        }
    }
    let marks = model.worker_marks();
    owners.sort_by_key(|(id, _)| owner_char(&marks, *id));
    let mut legend = legend_line(Some(model), &marks, &owners);
    if legend.width() > inner.width as usize {
        legend = legend_line(None, &marks, &owners);
    }
    let legend_h = u16::from(inner.height >= 2);
    let grid_h = inner.height - legend_h;
    let capacity = inner.width as usize * grid_h as usize;
    let step = if cells.len() * 2 <= capacity { 2 } else { 1 };
    let per_row = (inner.width as usize / step).max(1);
    let shown = cells.len().min(per_row * grid_h as usize);
    for (i, cell) in cells.iter().take(shown).enumerate() {
        let x = inner.x + ((i % per_row) * step) as u16;
        let y = inner.y + (i / per_row) as u16;
        let (symbol, style) = match *cell {
            SplitCell::Delivered => ("█".to_string(), Style::new().fg(Color::Green)),
            SplitCell::Unassigned => ("·".to_string(), dim()),
            SplitCell::Assigned {
                worker_id,
                owner_ok: true,
                ..
            } => (
                owner_char(&marks, worker_id).to_string(),
                Style::new().fg(owner_colour(worker_id)).bold(),
            ),
            SplitCell::Assigned {
                worker_id,
                owner_ok: false,
                ..
            } => (
                owner_char(&marks, worker_id).to_string(),
                Style::new().fg(Color::White).bg(Color::Red).bold(),
            ),
        };
        buf.set_string(x, y, symbol, style);
    }
    if shown < cells.len()
        && let Some(last) = shown.checked_sub(1)
    {
        let x = inner.x + ((last % per_row) * step) as u16;
        let y = inner.y + (last / per_row) as u16;
        buf.set_string(x, y, "+", Style::new().bold());
    }
    if legend_h > 0 {
        legend.render(Rect::new(inner.x, inner.bottom() - 1, inner.width, 1), buf);
    }
}

/// The split grid's legend. With `names`, each owner's mark is followed by its worker's name;
/// without (a narrow panel), the marks follow the node list's order.
fn legend_line(
    names: Option<&Model>,
    marks: &[(u64, char)],
    owners: &[(u64, bool)],
) -> Line<'static> {
    let mut spans = vec![
        Span::styled("█", Style::new().fg(Color::Green)),
        Span::styled(" done ", dim()),
        Span::styled("·", dim()),
        Span::styled(" free ", dim()),
    ];
    for &(id, ok) in owners {
        let style = if ok {
            Style::new().fg(owner_colour(id)).bold()
        } else {
            Style::new().fg(Color::White).bg(Color::Red).bold()
        };
        spans.push(Span::styled(owner_char(marks, id).to_string(), style));
        match names {
            Some(model) => spans.push(Span::styled(format!(" {} ", model.worker_name(id)), dim())),
            None => spans.push(Span::raw(" ")),
        }
    }
    if names.is_none() && !owners.is_empty() {
        spans.push(Span::styled("owners", dim()));
    }
    Line::from(spans)
}

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
            | K::ConsumerTimeout => bad,
            K::Failover => moved,
            K::JobCreated
            | K::ConsumerAttached
            | K::ConsumerReleased
            | K::JobFinished
            | K::JournalReplayed
            | K::CacheDecision
            | K::WorkerDraining
            | K::WorkerLeft
            | K::Expired => membership,
            K::EpochDone | K::EpochReport => progress,
            K::Unspecified => Style::new(),
        },
        EventLabel::Dashboard(DashboardEvent::LinkUp | DashboardEvent::Action) => good,
        EventLabel::Dashboard(DashboardEvent::LinkDown | DashboardEvent::ActionFailed) => bad,
    }
}

fn render_events(model: &Model, area: Rect, buf: &mut Buffer) {
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

fn render_checkpoints(model: &Model, area: Rect, buf: &mut Buffer) {
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

fn render_journal(model: &Model, area: Rect, buf: &mut Buffer) {
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

fn popup(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width.saturating_sub(2));
    let h = height.min(area.height.saturating_sub(2));
    area.centered(Constraint::Length(w), Constraint::Length(h))
}

fn render_help(area: Rect, buf: &mut Buffer) {
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

fn render_question(
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
