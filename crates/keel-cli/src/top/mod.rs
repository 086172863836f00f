//! `keel top`: a live view of the fleet in the terminal. It follows the journal as it grows (file
//! events through `notify`, polling where they are unavailable), reads only what was appended
//! since its last look, writes nothing, and quits on `q`, `Esc` or Ctrl-C.
//!
//! [`model`] is what it knows, folded from records with time as an argument; [`view`] draws it;
//! this module is the thin loop between the journal, the model and the terminal.

pub mod model;
#[cfg(test)]
mod tests;
pub mod view;

use std::io::{self, IsTerminal as _};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use keel_journal::follow::{Follower, noted, standing};
use keel_journal::{Clock, Journal, JournalOptions, LeaseBackend, Workspace};
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::{DefaultTerminal, Terminal};

use crate::{Failure, Status};
use model::Model;
use view::Context;

/// Bytes of the journal read at most per refresh: a long journal is caught up over several
/// refreshes (the view says so meanwhile) instead of freezing the screen.
pub const REFRESH_BYTES_MAX: u64 = 1024 * 1024;
/// Refreshes at most to catch up before a one-shot frame is printed (4 GiB of journal).
const CATCH_UP_REFRESHES_MAX: usize = 4096;
/// Longest wait for a key before file events and the timer are looked at again.
const KEY_WAIT_MAX: Duration = Duration::from_millis(50);
/// Columns of a one-shot frame when stdout is not a terminal.
const ONCE_COLUMNS: u16 = 120;

// Flattened into `keel top` (a plain comment: a doc comment would replace its help line).
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// Milliseconds between redraws (ages tick), and between reads of the journal where file
    /// events are unavailable (50 to 60000).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    interval_ms: u64,
    /// Print one frame as plain text and exit, as `keel top` does whenever stdout is not a
    /// terminal.
    #[arg(long)]
    once: bool,
}

/// Runs `keel top` on `workspace`'s journal, judging leases with `options`.
pub fn run(args: &TopArgs, workspace: &Workspace, options: JournalOptions) -> Result<Status, Failure> {
    let clock = options.clock.clone();
    let mut source = Source::open(workspace.journal(), options);
    let mut model = Model::new();
    let mut context = Context {
        workspace: workspace.root().display().to_string(),
        journal: workspace.journal().display().to_string(),
        following: String::new(),
        problem: None,
    };
    if args.once || !io::stdout().is_terminal() {
        source.catch_up(&mut model)?;
        "one frame (--once, or stdout is not a terminal)".clone_into(&mut context.following);
        let columns = if io::stdout().is_terminal() {
            ratatui::crossterm::terminal::size().map_or(ONCE_COLUMNS, |(columns, _)| columns)
        } else {
            ONCE_COLUMNS
        };
        for line in frame_text(&model, &context, now_unix_s(&clock), columns) {
            outln!("{line}")?;
        }
        return Ok(Status::Ok);
    }
    live(args, source, model, context, &clock)
}

/// The journal as `keel top` reads it: the records appended since the last refresh, and the
/// live set from the lease service, whose fold also resumes where it left off.
pub struct Source {
    journal: Journal,
    follower: Follower,
}

impl Source {
    /// Follows the journal at `path`; nothing is read yet.
    pub fn open(path: &Path, options: JournalOptions) -> Self {
        Self { follower: Follower::new(path), journal: Journal::open(path, options) }
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        self.journal.path()
    }

    /// Reads what the journal gained (at most [`REFRESH_BYTES_MAX`]) into `model`, then the live
    /// set as of now.
    pub fn refresh(&mut self, model: &mut Model) -> Result<(), Failure> {
        self.read_records(model)?;
        self.read_live(model)
    }

    /// Reads the whole journal into `model` (bounded by [`CATCH_UP_REFRESHES_MAX`]), then the
    /// live set.
    pub fn catch_up(&mut self, model: &mut Model) -> Result<(), Failure> {
        for _ in 0..CATCH_UP_REFRESHES_MAX {
            self.read_records(model)?;
            if model.caught_up() {
                break;
            }
        }
        self.read_live(model)
    }

    fn read_records(&mut self, model: &mut Model) -> Result<(), Failure> {
        let appended = self.follower.poll(REFRESH_BYTES_MAX).map_err(Failure::io)?;
        if appended.restarted {
            model.restart();
        }
        for line in appended.bytes.split_inclusive(|&b| b == b'\n') {
            model.note(noted(line));
        }
        model.set_caught_up(appended.caught_up);
        Ok(())
    }

    fn read_live(&mut self, model: &mut Model) -> Result<(), Failure> {
        let view = self.journal.live_view().map_err(crate::failure)?;
        let options = self.journal.options();
        model.set_live(
            view.leases.into_iter().map(|lease| {
                let standing = standing(options, &lease);
                (lease, standing)
            }),
            view.grants_stopped,
        );
        Ok(())
    }
}

/// One frame of `columns`, as tall as the fleet needs, as lines of plain text.
pub fn frame_text(model: &Model, context: &Context, now_unix_s: i64, columns: u16) -> Vec<String> {
    let height = view::height_for(model);
    let mut terminal = match Terminal::new(TestBackend::new(columns.max(40), height)) {
        Ok(terminal) => terminal,
        Err(never) => match never {},
    };
    let drawn = terminal.draw(|frame| view::draw(frame, model, context, now_unix_s));
    if let Err(never) = drawn {
        match never {}
    }
    let buffer = terminal.backend().buffer();
    let area = buffer.area;
    (area.top()..area.bottom())
        .map(|y| {
            let line: String = (area.left()..area.right()).map(|x| buffer[(x, y)].symbol()).collect();
            line.trim_end().to_owned()
        })
        .collect()
}

fn now_unix_s(clock: &Clock) -> i64 {
    clock().floor() as i64
}

/// The terminal in raw mode on the alternate screen, given back as it was when dropped: on a
/// normal exit, on an error, and (ratatui's panic hook) on a panic.
struct Screen(DefaultTerminal);

impl Screen {
    fn enter() -> Result<Self, Failure> {
        match ratatui::try_init() {
            Ok(terminal) => Ok(Self(terminal)),
            Err(error) => {
                // Raw mode may be on although the alternate screen failed.
                ratatui::restore();
                Err(Failure::io(anyhow!("setting up the terminal: {error}")))
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

fn live(
    args: &TopArgs,
    mut source: Source,
    mut model: Model,
    mut context: Context,
    clock: &Clock,
) -> Result<Status, Failure> {
    let interval = Duration::from_millis(args.interval_ms);
    let (wake, woken) = sync_channel(1);
    let watcher = watch(source.path(), wake);
    context.following = match &watcher {
        Ok(_) => format!("q quit · following the journal by file events, redrawn every {} ms", args.interval_ms),
        Err(why) => format!("q quit · polling the journal every {} ms ({why})", args.interval_ms),
    };
    let terminal_failed = |e: io::Error| Failure::io(anyhow!("drawing on the terminal: {e}"));
    let mut screen = Screen::enter()?;
    let mut due = Instant::now();
    loop {
        if woken_up(&woken) || Instant::now() >= due {
            context.problem = source.refresh(&mut model).err().map(|failure| failure.to_string());
            // Still catching up with a long journal: read on at once.
            due = Instant::now() + if model.caught_up() { interval } else { Duration::ZERO };
            screen.0.draw(|frame| view::draw(frame, &model, &context, now_unix_s(clock))).map_err(terminal_failed)?;
        }
        let wait = due.saturating_duration_since(Instant::now()).min(KEY_WAIT_MAX);
        if event::poll(wait).map_err(terminal_failed)? {
            match event::read().map_err(terminal_failed)? {
                Event::Key(key) if quits(key) => break,
                Event::Resize(..) => due = Instant::now(),
                _ => {}
            }
        }
    }
    drop(screen);
    drop(watcher);
    Ok(Status::Ok)
}

/// `q`, `Esc` and Ctrl-C (raw mode delivers it as a key, not a signal).
fn quits(key: KeyEvent) -> bool {
    key.kind == KeyEventKind::Press
        && match key.code {
            KeyCode::Char('q') | KeyCode::Esc => true,
            KeyCode::Char('c') => key.modifiers.contains(KeyModifiers::CONTROL),
            _ => false,
        }
}

/// Whether a file event arrived since the last look (the channel holds at most one: a burst of
/// appends is one refresh).
fn woken_up(woken: &Receiver<()>) -> bool {
    match woken.try_recv() {
        Ok(()) => true,
        Err(TryRecvError::Empty | TryRecvError::Disconnected) => false,
    }
}

/// A watcher of the journal's directory (compaction renames a new file over the journal, so the
/// file itself cannot be watched) that wakes the loop on any event naming the journal. `Err`
/// says why there is none (no inotify, a directory that does not exist yet): then the loop polls.
fn watch(journal: &Path, wake: SyncSender<()>) -> Result<notify::RecommendedWatcher, String> {
    use notify::Watcher as _;
    let dir: PathBuf = journal.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_owned();
    let name = journal.file_name().map(ToOwned::to_owned);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let ours = match &event {
            Ok(event) => event.paths.is_empty() || event.paths.iter().any(|p| p.file_name() == name.as_deref()),
            Err(_) => true,
        };
        if ours {
            // Full: a refresh is due already.
            let _ = wake.try_send(());
        }
    })
    .map_err(|e| format!("no file events: {e}"))?;
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .map_err(|e| format!("no file events for {}: {e}", dir.display()))?;
    Ok(watcher)
}
