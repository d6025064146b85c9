//! Progress bars with rate and ETA.
//!
//! On a terminal the bar redraws in place. When stderr is a file or a pipe (a run under
//! `nohup`, a CI log, `2> train.err`), indicatif would draw nothing at all, so a multi-hour
//! training run would be silent until its first epoch ends; there the same bar is written
//! as plain lines, one every `HVQ_PROGRESS_SECONDS` seconds (default 30, 0 = every redraw).

use std::io::{self, IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::style::ProgressTracker;
use indicatif::{
    HumanDuration, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle, TermLike,
};

/// Seconds between two progress lines when stderr is not a terminal.
const LOG_INTERVAL_VAR: &str = "HVQ_PROGRESS_SECONDS";
const DEFAULT_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// How long a bar must have run before it states a rate and an ETA.
const MIN_RATE_WINDOW: Duration = Duration::from_secs(1);

/// A bar over `len` items named `what`.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(len), draw_target());
    pb.set_style(style(what, MIN_RATE_WINDOW));
    pb
}

fn style(what: &str, min_window: Duration) -> ProgressStyle {
    ProgressStyle::with_template(&format!(
        "{what:>10} [{{bar:30}}] {{pos}}/{{len}} {{throughput}} {{msg}}"
    ))
    .expect("valid template")
    .with_key("throughput", Throughput::new(min_window))
    .progress_chars("=> ")
}

/// "rate ETA time-left", from the average since the bar's first update. indicatif's own `{per_sec}`/`{eta}`
/// come from an estimator that, in a bar's first moments or after a jump (a resumed run's
/// `set_position` to the work already done), reported rates like "52,505/s ETA 0s". Here the
/// first update is the baseline (a jump to resumed work is not counted as speed), and nothing
/// is claimed ("–") until the bar has run `min_window`.
#[derive(Clone, Debug)]
struct Throughput {
    min_window: Duration,
    /// (time, position) of the first and of the latest update.
    first: Option<(Instant, u64)>,
    latest: Option<(Instant, u64)>,
}

impl Throughput {
    fn new(min_window: Duration) -> Self {
        Self {
            min_window,
            first: None,
            latest: None,
        }
    }
}

/// Items per second between two updates, when they are at least `min_window` apart and the
/// position moved; None otherwise (too early to say).
fn average_rate(
    first: (Instant, u64),
    latest: (Instant, u64),
    min_window: Duration,
) -> Option<f64> {
    let seconds = latest.0.saturating_duration_since(first.0);
    let items = latest.1.checked_sub(first.1).filter(|&n| n > 0)?;
    (seconds >= min_window && !seconds.is_zero()).then(|| items as f64 / seconds.as_secs_f64())
}

impl ProgressTracker for Throughput {
    fn clone_box(&self) -> Box<dyn ProgressTracker> {
        Box::new(self.clone())
    }

    fn tick(&mut self, state: &ProgressState, now: Instant) {
        let seen = (now, state.pos());
        // A position that went back (a bar reused from 0) starts a new average.
        if self.first.is_none_or(|(_, p)| seen.1 < p) {
            self.first = Some(seen);
        }
        self.latest = Some(seen);
    }

    fn reset(&mut self, _: &ProgressState, _: Instant) {
        self.first = None;
        self.latest = None;
    }

    fn write(&self, state: &ProgressState, w: &mut dyn std::fmt::Write) {
        let rate = self
            .first
            .zip(self.latest)
            .and_then(|(first, latest)| average_rate(first, latest, self.min_window));
        let Some(r) = rate else {
            let left = if state.is_finished() { "0s" } else { "–" };
            let _ = write!(w, "–/s ETA {left}");
            return;
        };
        let _ = match r {
            r if r >= 10.0 => write!(w, "{r:.0}/s"),
            r if r >= 1.0 => write!(w, "{r:.1}/s"),
            r => write!(w, "{:.1}s/item", 1.0 / r),
        };
        let _ = if state.is_finished() {
            write!(w, " ETA 0s")
        } else {
            let items = state.len().unwrap_or(0).saturating_sub(state.pos());
            let left = Duration::from_secs_f64(items as f64 / r);
            write!(w, " ETA {:#}", HumanDuration(left))
        };
    }
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

    #[test]
    fn the_rate_is_the_average_since_the_first_update_once_the_window_has_passed() {
        let t0 = Instant::now();
        let at = |s: f64, pos: u64| (t0 + Duration::from_secs_f64(s), pos);
        let window = Duration::from_secs(1);
        // A resumed run jumps to 1000 at its first update; 20 items in the next 4 s: 5/s.
        assert_eq!(
            average_rate(at(0.0, 1000), at(4.0, 1020), window),
            Some(5.0)
        );
        // Too early, or nothing done since the first update: no claim.
        assert_eq!(average_rate(at(0.0, 0), at(0.5, 300), window), None);
        assert_eq!(average_rate(at(0.0, 7), at(9.0, 7), window), None);
        assert_eq!(average_rate(at(0.0, 0), at(0.0, 5), Duration::ZERO), None);
    }

    /// The bar's text with the given window, after `updates` (pause before, position) pairs.
    fn drawn(window: Duration, len: u64, updates: &[(Duration, u64)]) -> Vec<String> {
        let buf = Shared::default();
        let target =
            ProgressDrawTarget::term_like(Box::new(LogLines::new(Duration::ZERO, buf.clone())));
        let pb = ProgressBar::with_draw_target(Some(len), target);
        pb.set_style(style("train", window));
        for &(pause, pos) in updates {
            std::thread::sleep(pause);
            pb.set_position(pos);
        }
        // Drawn while running (a finished bar's ETA is 0s whatever the rate).
        pb.force_draw();
        let got = lines(&buf);
        pb.abandon();
        got
    }

    #[test]
    fn a_bar_claims_no_rate_before_its_window_and_ignores_a_resumed_jump() {
        // A resumed run's jump to 900 of 1000 at once: with an hour's window, no rate, no ETA.
        let got = drawn(Duration::from_secs(3600), 1000, &[(Duration::ZERO, 900)]);
        let last = got.last().expect("a line");
        assert!(last.contains("900/1000 –/s ETA –"), "{got:?}");
        // With a short window: the jump is the baseline, and 10 items over ≥ 50 ms is at most
        // 200/s, never the jump's 900 items in no time.
        let got = drawn(
            Duration::from_millis(50),
            1000,
            &[(Duration::ZERO, 900), (Duration::from_millis(60), 910)],
        );
        let last = got.last().expect("a line");
        let rate: f64 = last
            .split_whitespace()
            .find_map(|w| w.strip_suffix("/s").and_then(|r| r.parse().ok()))
            .unwrap_or_else(|| panic!("no rate in {last:?}"));
        assert!(rate > 0.0 && rate <= 10.0 / 0.06 + 1.0, "{last:?}");
        assert!(!last.contains("ETA –"), "{last:?}");
    }
}
