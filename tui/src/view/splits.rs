//! The splits panel: the current epoch's split grid coloured by owner, and its legend.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Widget;

use crate::model::{Model, SplitCell};

use super::{dim, title, title_block};

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

pub(super) fn render_splits(model: &Model, area: Rect, buf: &mut Buffer) {
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
