//! How `keel top` draws the fleet: a header, whether grants flow, the live leases and the recent
//! refusals. Pure: a model, a time and an area in, cells out; a `TestBackend` draws it as well as
//! a terminal does.

use std::fmt::Write as _;

use keel_journal::follow::{Standing, stamp};
use keel_kernel::expiry::Verdict;
use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table, Widget};

use super::model::{Lease, Model, Refusal, Via};

/// What the view says about where it looks, beside what the model holds.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The workspace root.
    pub workspace: String,
    /// The journal followed.
    pub journal: String,
    /// How the journal is followed (file events, or polling and why), and how to quit.
    pub following: String,
    /// The last refresh's failure, if it failed; the view keeps showing what it had.
    pub problem: Option<String>,
}

/// Refusal rows drawn at most (the model keeps more; the newest are drawn).
const REFUSAL_ROWS_MAX: usize = 8;
/// Lines the header takes.
const HEADER_LINES: u16 = 4;

/// Draws the fleet on the whole frame.
pub fn draw(frame: &mut Frame<'_>, model: &Model, context: &Context, now_unix_s: i64) {
    render(model, context, now_unix_s, frame.area(), frame.buffer_mut());
}

/// The height that shows every lease and every drawn refusal (for a one-shot print).
pub fn height_for(model: &Model) -> u16 {
    let leases = u16::try_from(model.leases().len().max(1)).unwrap_or(u16::MAX);
    let refusals = u16::try_from(model.refusals().take(REFUSAL_ROWS_MAX).count().max(1)).unwrap_or(u16::MAX);
    HEADER_LINES.saturating_add(leases + 3).saturating_add(refusals + 3).saturating_add(1)
}

/// Draws the fleet into `area` of `buf`.
pub fn render(model: &Model, context: &Context, now_unix_s: i64, area: Rect, buf: &mut Buffer) {
    let refusals_shown = model.refusals().take(REFUSAL_ROWS_MAX).count().max(1);
    let [header, leases, refusals, footer] = Layout::vertical([
        Constraint::Length(HEADER_LINES),
        Constraint::Min(4),
        Constraint::Length(u16::try_from(refusals_shown).unwrap_or(1) + 3),
        Constraint::Length(1),
    ])
    .areas(area);
    header_lines(model, context, now_unix_s).render(header, buf);
    lease_table(model, now_unix_s, leases).render(leases, buf);
    refusal_table(model, now_unix_s, refusals).render(refusals, buf);
    footer_line(model, context).render(footer, buf);
}

fn header_lines(model: &Model, context: &Context, now_unix_s: i64) -> Paragraph<'static> {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let title = Line::from(vec![
        Span::styled("keel top", bold),
        Span::raw(format!("  {}  journal {}  {}", context.workspace, context.journal, stamp(now_unix_s))),
    ]);
    let count = |standing: Standing| model.leases().iter().filter(|l| l.standing == standing).count();
    let mut figures = format!(
        "{} live: {} alive, {} idle, {} holder gone, {} clock skew, {} reclaimable · {} grants/min · {} refused",
        model.leases_total(),
        count(Standing::Alive),
        count(Standing::Idle),
        count(Standing::HolderGone),
        count(Standing::ClockSkew),
        count(Standing::Reclaimable),
        model.grants_per_minute(now_unix_s),
        model.refusals_total(),
    );
    if !model.caught_up() {
        figures.push_str(" · reading the journal…");
    }
    let (grants, way_out) = match model.stopped() {
        Some(stopped) => (
            Line::styled(
                format!(
                    "GRANTS STOPPED: journal line {} is damaged and unreviewed ({} more): {:?}",
                    stopped.line_number, stopped.more, stopped.raw
                ),
                Style::new().fg(Color::White).bg(Color::Red).add_modifier(Modifier::BOLD),
            ),
            Line::raw(
                "  see `keel journal verify`, then `keel journal review --accept --by NAME`; releases still work",
            ),
        ),
        None => (
            Line::styled("grants flow: no unreviewed damage in the journal", Style::new().fg(Color::Green)),
            Line::raw(""),
        ),
    };
    Paragraph::new(vec![title, Line::raw(figures), grants, way_out])
}

fn lease_table(model: &Model, now_unix_s: i64, area: Rect) -> Table<'static> {
    // Borders and the header row take three lines; what does not fit is counted in the title.
    let fit = usize::from(area.height.saturating_sub(3));
    let shown = model.leases().len().min(fit);
    let title = if shown < model.leases_total() {
        format!(" live leases: {shown} of {} shown ", model.leases_total())
    } else {
        format!(" live leases ({}) ", model.leases_total())
    };
    if model.leases_total() == 0 {
        return nothing("no live leases", title);
    }
    let rows: Vec<Row<'static>> = model.leases().iter().take(shown).map(|lease| lease_row(lease, now_unix_s)).collect();
    let widths = [
        Constraint::Length(14),
        Constraint::Length(18),
        Constraint::Fill(1),
        Constraint::Length(7),
        Constraint::Length(10),
        Constraint::Length(24),
        Constraint::Length(5),
    ];
    Table::new(rows, widths)
        .header(
            Row::new(["HOLDER", "LANE", "REGION", "AGE", "LAST SIGN", "VERDICT", "GEN"])
                .style(Style::new().add_modifier(Modifier::BOLD)),
        )
        .block(Block::bordered().title(title))
}

fn lease_row(lease: &Lease, now_unix_s: i64) -> Row<'static> {
    let age = lease.acquired_unix_s.map_or_else(|| "?".to_owned(), |at| span(now_unix_s.saturating_sub(at)));
    let idle_s = match lease.verdict {
        Verdict::Alive { idle_s, .. } | Verdict::Expired { idle_s, .. } | Verdict::HolderGone { idle_s } => {
            Some(idle_s)
        }
        Verdict::ClockSkew { idle_s, .. } => idle_s,
        Verdict::NoTimestamp => None,
    };
    let last_sign =
        idle_s.map_or_else(|| "none".to_owned(), |s| format!("{} ago", span(i64::try_from(s).unwrap_or(i64::MAX))));
    let verdict = match (lease.standing, lease.verdict) {
        (Standing::ClockSkew, verdict) if verdict.is_dead() => "clock skew, reclaimable".to_owned(),
        (Standing::HolderGone, _) => "holder gone, reclaimable".to_owned(),
        (Standing::Reclaimable, Verdict::NoTimestamp) => "reclaimable: no stamp".to_owned(),
        (Standing::Reclaimable, _) => "reclaimable: past ttl".to_owned(),
        (standing, _) => standing.as_str().to_owned(),
    };
    let colour = match lease.standing {
        Standing::Alive => Color::Green,
        Standing::Idle => Color::Yellow,
        Standing::ClockSkew => Color::Magenta,
        Standing::HolderGone | Standing::Reclaimable => Color::Red,
    };
    Row::new(vec![
        ratatui::widgets::Cell::from(lease.holder.clone()),
        lease.lane.clone().into(),
        lease.region.clone().into(),
        age.into(),
        last_sign.into(),
        ratatui::widgets::Cell::from(verdict).style(Style::new().fg(colour)),
        lease.generation.map_or_else(|| "-".to_owned(), |g| g.to_string()).into(),
    ])
}

fn refusal_table(model: &Model, now_unix_s: i64, area: Rect) -> Table<'static> {
    let fit = usize::from(area.height.saturating_sub(3)).min(REFUSAL_ROWS_MAX);
    let title = " recent refusals, newest first (hook denials that leave no record are not here) ";
    if model.refusals_total() == 0 {
        return nothing("none recorded", title.to_owned());
    }
    let rows: Vec<Row<'static>> = model.refusals().take(fit).map(|refusal| refusal_row(refusal, now_unix_s)).collect();
    let widths = [
        Constraint::Length(10),
        Constraint::Length(5),
        Constraint::Length(14),
        Constraint::Length(14),
        Constraint::Length(22),
        Constraint::Fill(1),
    ];
    Table::new(rows, widths)
        .header(
            Row::new(["WHEN", "VIA", "STOPPED", "BY", "LANE", "WHY"]).style(Style::new().add_modifier(Modifier::BOLD)),
        )
        .block(Block::bordered().title(title))
}

/// A bordered table of one line that says there is nothing to show.
fn nothing(text: &'static str, title: String) -> Table<'static> {
    Table::new([Row::new([text])], [Constraint::Fill(1)]).block(Block::bordered().title(title))
}

fn refusal_row(refusal: &Refusal, now_unix_s: i64) -> Row<'static> {
    let when =
        refusal.at_unix_s.map_or_else(|| "?".to_owned(), |at| format!("{} ago", span(now_unix_s.saturating_sub(at))));
    let via = match refusal.via {
        Via::Hook => "hook",
        Via::Lease => "lease",
    };
    // What was asked and what it collides with; the holder in the way is the BY column already.
    let why = refusal.reason.split("; the holder is not reclaimable").next().unwrap_or_default();
    let why = if refusal.blocker.is_some() { why.split(" held by lane ").next().unwrap_or_default() } else { why };
    Row::new(vec![
        when,
        via.to_owned(),
        refusal.requester.clone(),
        refusal.blocker.clone().unwrap_or_else(|| "-".to_owned()),
        refusal.lane.clone(),
        why.to_owned(),
    ])
}

fn footer_line(model: &Model, context: &Context) -> Paragraph<'static> {
    let mut text = format!("{} · {} records read", context.following, model.records_read());
    if model.restarts() > 0 {
        let _ = write!(text, " · journal replaced {} times (compaction)", model.restarts());
    }
    match &context.problem {
        Some(problem) => Paragraph::new(Line::styled(format!("{text} · {problem}"), Style::new().fg(Color::Red))),
        None => Paragraph::new(Line::styled(text, Style::new().add_modifier(Modifier::DIM))),
    }
}

/// A duration for people: `42s`, `12m05s`, `3h04m`, `2d03h`.
fn span(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}
