//! The job panel: the focused job's epoch progress, throughput, consumers and verdicts.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{LineGauge, Paragraph, Sparkline, Widget};

use crate::fmt;
use crate::model::{Health, Model};

use super::{dim, health_style, title, title_block};

pub(super) fn render_job(model: &Model, area: Rect, buf: &mut Buffer) {
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
    // The input-bound signal: the share of time the most starved attached trainer waits for
    // data (shown once a client reports it).
    let waiting = job
        .consumers
        .iter()
        .filter(|c| c.attached && c.wait_seconds_total > 0.0)
        .map(|c| c.input_wait_ratio)
        .reduce(f64::max);
    if let Some(w) = waiting {
        let percent = (w.clamp(0.0, 1.0) * 100.0).round();
        let style = if w >= 0.25 {
            health_style(Health::Warn)
        } else {
            Style::new()
        };
        spans.push(Span::styled(" · waiting ", dim()));
        spans.push(Span::styled(format!("{percent:.0}%"), style));
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
