//! Progress display: indicatif bars on a terminal, plain periodic lines otherwise (CI logs, pipes).
//!
//! Log lines go through the same `MultiProgress` while bars are shown, so they never tear a bar apart.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::stages::{Progress, ProgressFactory};

static BARS: OnceLock<MultiProgress> = OnceLock::new();
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The shared bar area when stderr is a terminal (and not quiet).
pub fn bars() -> Option<&'static MultiProgress> {
    BARS.get()
}

/// Turns bars on if stderr is a terminal.
pub fn init(quiet: bool) {
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
    if !quiet && std::io::stderr().is_terminal() {
        let _ = BARS.set(MultiProgress::with_draw_target(
            ProgressDrawTarget::stderr_with_hz(8),
        ));
    }
}

/// Prints a line above the bars (or plainly); nothing when quiet.
pub fn println(line: &str) {
    if QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    match bars() {
        Some(mp) => {
            let _ = mp.println(line);
        }
        None => {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{line}");
        }
    }
}

/// A `tracing_subscriber` writer that prints through the bar area.
#[derive(Clone, Copy, Default)]
pub struct BarWriter;

impl Write for BarWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        println(text.trim_end_matches('\n'));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BarWriter {
    type Writer = BarWriter;
    fn make_writer(&'a self) -> Self::Writer {
        BarWriter
    }
}

/// The factory stages get: bars or lines, silent when quiet.
pub struct Display {
    /// No progress output at all.
    pub quiet: bool,
}

impl ProgressFactory for Display {
    fn create(&self, stage: &str, total: u64, what: &str) -> Box<dyn Progress> {
        if self.quiet {
            return Box::new(Silent);
        }
        match bars() {
            Some(mp) => {
                let pb = mp.add(ProgressBar::new(total));
                pb.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>16.cyan} {bar:30} {pos}/{len} {wide_msg} [{elapsed} < {eta}]",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                pb.set_prefix(format!("{stage} {what}"));
                Box::new(Bar(pb))
            }
            None => Box::new(Lines(Arc::new(Mutex::new(LineState {
                label: format!("{stage}: {what}"),
                total,
                pos: 0,
                msg: String::new(),
                last: Instant::now(),
                started: Instant::now(),
            })))),
        }
    }
}

struct Silent;
impl Progress for Silent {
    fn inc(&self, _: u64) {}
    fn message(&self, _: String) {}
    fn finish(&self) {}
}

struct Bar(ProgressBar);
impl Progress for Bar {
    fn inc(&self, n: u64) {
        self.0.inc(n);
    }
    fn message(&self, msg: String) {
        self.0.set_message(msg);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

struct LineState {
    label: String,
    total: u64,
    pos: u64,
    msg: String,
    last: Instant,
    started: Instant,
}

struct Lines(Arc<Mutex<LineState>>);
impl Progress for Lines {
    fn inc(&self, n: u64) {
        let mut s = self.0.lock().expect("progress lock");
        s.pos += n;
        // One line every 10 s at most: enough to see life in a CI log without flooding it.
        if s.last.elapsed() >= Duration::from_secs(10) {
            s.last = Instant::now();
            println(&format!(
                "  {} {}/{} {} ({:.0} s)",
                s.label,
                s.pos,
                s.total,
                s.msg,
                s.started.elapsed().as_secs_f64()
            ));
        }
    }
    fn message(&self, msg: String) {
        self.0.lock().expect("progress lock").msg = msg;
    }
    fn finish(&self) {}
}
