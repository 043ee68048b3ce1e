//! What `oar exec` writes to the terminal: the jobs' output lines and, on a terminal, a live
//! footer with one line per running job (its name, stage and time so far), redrawn below the
//! output as it scrolls. Without a terminal (or with `NO_COLOR`) only the lines are written,
//! plain.

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Default)]
struct State {
    /// Running jobs: (name, stage, since).
    running: Vec<(String, String, Instant)>,
    /// How many footer lines are on the screen now.
    drawn: usize,
}

/// The terminal, shared by the jobs' printers and the run loop.
#[derive(Clone)]
pub struct Terminal {
    live: bool,
    state: Arc<Mutex<State>>,
}

impl Terminal {
    /// With `live`, a footer of running jobs is kept under the output.
    pub fn new(live: bool) -> Terminal {
        Terminal {
            live,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State, &mut Vec<u8>) -> R) -> R {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        let r = f(&mut state, &mut out);
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(&out);
        let _ = stdout.flush();
        r
    }

    /// Erases the footer (cursor back up over it, clear to the end of the screen).
    fn erase(state: &mut State, out: &mut Vec<u8>) {
        if state.drawn > 0 {
            let _ = write!(out, "\x1b[{}F\x1b[J", state.drawn);
            state.drawn = 0;
        }
    }

    fn draw(&self, state: &mut State, out: &mut Vec<u8>) {
        if !self.live {
            return;
        }
        for (name, stage, since) in &state.running {
            let _ = writeln!(
                out,
                "\x1b[2m  ⏵ {name} ({stage}) {}s\x1b[0m",
                since.elapsed().as_secs()
            );
        }
        state.drawn = state.running.len();
    }

    /// Writes whole lines (each ending in a newline) above the footer.
    pub fn print(&self, lines: &str) {
        if lines.is_empty() {
            return;
        }
        self.with(|state, out| {
            Self::erase(state, out);
            out.extend_from_slice(lines.as_bytes());
            self.draw(state, out);
        });
    }

    /// A job started.
    pub fn started(&self, name: &str, stage: &str) {
        self.with(|state, out| {
            Self::erase(state, out);
            state
                .running
                .push((name.to_string(), stage.to_string(), Instant::now()));
            self.draw(state, out);
        });
    }

    /// A job ended.
    pub fn ended(&self, name: &str) {
        self.with(|state, out| {
            Self::erase(state, out);
            state.running.retain(|(n, _, _)| n != name);
            self.draw(state, out);
        });
    }

    /// Redraws the footer every second (its times), until dropped; nothing without `live`.
    pub fn ticker(&self) -> Option<tokio::task::JoinHandle<()>> {
        if !self.live {
            return None;
        }
        let me = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                me.with(|state, out| {
                    Self::erase(state, out);
                    me.draw(state, out);
                });
            }
        }))
    }

    /// Removes the footer (before the summary).
    pub fn finish(&self) {
        self.with(|state, out| {
            state.running.clear();
            Self::erase(state, out);
        });
    }
}
