//! Progress bars with rate and ETA.
//!
//! On a terminal the bar redraws in place. When stderr is a file or a pipe (a run under
//! `nohup`, a CI log, `2> train.err`), indicatif would draw nothing at all, so a multi-hour
//! training run would be silent until its first epoch ends; there the same bar is written
//! as plain lines, one every `HVQ_PROGRESS_SECONDS` seconds (default 30, 0 = every redraw).

use std::io::{self, IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

/// Seconds between two progress lines when stderr is not a terminal.
const LOG_INTERVAL_VAR: &str = "HVQ_PROGRESS_SECONDS";
const DEFAULT_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// A bar over `len` items named `what`.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(len), draw_target());
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{what:>10} [{{bar:30}}] {{pos}}/{{len}} {{per_sec}} ETA {{eta}} {{msg}}"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb
}

fn draw_target() -> ProgressDrawTarget {
    if io::stderr().is_terminal() {
        return ProgressDrawTarget::stderr();
    }
    let interval = std::env::var(LOG_INTERVAL_VAR)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(DEFAULT_LOG_INTERVAL);
    ProgressDrawTarget::term_like_with_hz(Box::new(LogLines::new(interval, io::stderr())), 1)
}

/// A "terminal" that turns redraws into log lines: cursor moves and clears are dropped and
/// a drawn bar becomes one line, at most one per `interval` (the first one at once).
struct LogLines<W> {
    interval: Duration,
    state: Mutex<(Option<Instant>, W)>,
}

impl<W> LogLines<W> {
    fn new(interval: Duration, out: W) -> Self {
        Self {
            interval,
            state: Mutex::new((None, out)),
        }
    }
}

impl<W> std::fmt::Debug for LogLines<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogLines")
            .field("interval", &self.interval)
            .finish()
    }
}

impl<W: Write + Send> LogLines<W> {
    fn emit(&self, text: &str) -> io::Result<()> {
        let text = text.trim_end();
        if text.is_empty() {
            return Ok(());
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if state
            .0
            .is_some_and(|last| now.duration_since(last) < self.interval)
        {
            return Ok(());
        }
        state.0 = Some(now);
        writeln!(state.1, "{text}")
    }
}

impl<W: Write + Send> TermLike for LogLines<W> {
    fn width(&self) -> u16 {
        120
    }
    // Tall enough that indicatif never trims a bar for lack of room.
    fn height(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> io::Result<()> {
        self.emit(s)
    }
    fn write_str(&self, s: &str) -> io::Result<()> {
        // indicatif writes "\r" to return to the line start; that is not content.
        self.emit(s.trim_start_matches('\r'))
    }
    fn clear_line(&self) -> io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shared buffer, so the test can read what the bar wrote.
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn lines(buf: &Shared) -> Vec<String> {
        String::from_utf8(buf.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn redraws_become_plain_lines_without_escape_codes() {
        let buf = Shared::default();
        let term = LogLines::new(Duration::ZERO, buf.clone());
        term.write_str("\r").unwrap();
        term.clear_line().unwrap();
        term.write_str("     train [==>   ] 3/10").unwrap();
        term.move_cursor_up(1).unwrap();
        term.write_str("\r     train [====> ] 5/10").unwrap();
        term.flush().unwrap();
        assert_eq!(
            lines(&buf),
            ["     train [==>   ] 3/10", "     train [====> ] 5/10"]
        );
        assert!(!lines(&buf).concat().contains('\x1b'));
    }

    #[test]
    fn lines_are_rate_limited_but_the_first_comes_at_once() {
        let buf = Shared::default();
        let term = LogLines::new(Duration::from_secs(3600), buf.clone());
        for i in 0..50 {
            term.write_str(&format!("step {i}")).unwrap();
        }
        assert_eq!(lines(&buf), ["step 0"]);
    }

    #[test]
    fn a_bar_drawn_through_the_target_writes_its_position() {
        let buf = Shared::default();
        let target =
            ProgressDrawTarget::term_like(Box::new(LogLines::new(Duration::ZERO, buf.clone())));
        let pb = ProgressBar::with_draw_target(Some(4), target);
        pb.set_style(ProgressStyle::with_template("{pos}/{len}").unwrap());
        for _ in 0..4 {
            pb.inc(1);
        }
        pb.finish();
        let got = lines(&buf);
        assert!(got.iter().any(|l| l == "4/4"), "{got:?}");
    }
}
