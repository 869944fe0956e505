//! The demo's live view: a status table redrawn in place on a terminal
//! (ANSI cursor-up, no extra crates), or one plain line per change when
//! stdout is not a terminal or `--plain` is given; and the final summary.
//!
//! Pure formatting: [`Snapshot`] in, text out to any `Write`.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

/// Keeps a table line within 80 columns (a wrapped line would break the redraw).
const BAR_WIDTH: usize = 16;

/// One printer's line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub printer: String,
    pub state: String,
    pub job: Option<String>,
    /// 0–100.
    pub progress: f64,
    pub nozzle: Option<f64>,
    pub bed: Option<f64>,
}

/// Everything one refresh shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub rows: Vec<Row>,
    pub completed: usize,
    pub total: usize,
    /// Jobs the queue manager has not handed out yet.
    pub queued: usize,
    /// Commands the simulated printers executed.
    pub lines: u64,
    /// Resends the gateway counted (summed at each job's end).
    pub resends: u64,
    pub events: u64,
    pub elapsed: Duration,
}

/// How the snapshot is shown.
pub enum View {
    /// Redrawn in place; remembers how many lines to move up.
    Live { drawn: usize },
    /// One line per change; remembers what each printer last showed.
    Plain {
        last: BTreeMap<String, (String, Option<String>, u8)>,
        completed: Option<usize>,
    },
}

impl View {
    pub fn new(live: bool) -> View {
        if live {
            View::Live { drawn: 0 }
        } else {
            View::Plain {
                last: BTreeMap::new(),
                completed: None,
            }
        }
    }

    pub fn render(&mut self, out: &mut impl Write, snap: &Snapshot) -> std::io::Result<()> {
        match self {
            View::Live { drawn } => {
                let lines = table(snap);
                if *drawn > 0 {
                    write!(out, "\x1b[{drawn}A")?;
                }
                for line in &lines {
                    write!(out, "\r\x1b[2K{line}\n")?;
                }
                *drawn = lines.len();
            }
            View::Plain { last, completed } => {
                for row in &snap.rows {
                    // Progress is reported in quarters, state and job on every change.
                    let quarter = (row.progress.clamp(0.0, 100.0) / 25.0) as u8;
                    let now = (row.state.clone(), row.job.clone(), quarter);
                    if last.get(&row.printer) != Some(&now) {
                        writeln!(out, "{:>6.1}s {}", snap.elapsed.as_secs_f64(), plain(row))?;
                        last.insert(row.printer.clone(), now);
                    }
                }
                if *completed != Some(snap.completed) {
                    *completed = Some(snap.completed);
                    writeln!(
                        out,
                        "{:>6.1}s jobs {}/{} printed, {} queued",
                        snap.elapsed.as_secs_f64(),
                        snap.completed,
                        snap.total,
                        snap.queued
                    )?;
                }
            }
        }
        out.flush()
    }
}

/// Header, one line per printer, footer.
pub fn table(snap: &Snapshot) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<10} {:<14} {:<8} {:<24} {:>8} {:>8}",
        "PRINTER", "STATE", "JOB", "PROGRESS", "NOZZLE", "BED"
    )];
    for row in &snap.rows {
        lines.push(format!(
            "{:<10} {:<14} {:<8} {} {:>4.0}% {:>8} {:>8}",
            row.printer,
            row.state,
            row.job.as_deref().unwrap_or("-"),
            bar(row.progress),
            row.progress.clamp(0.0, 100.0),
            temp(row.nozzle),
            temp(row.bed)
        ));
    }
    lines.push(format!(
        "printed {}/{}, queued {} | lines {} | resends {} | events {} | {:.1} s",
        snap.completed,
        snap.total,
        snap.queued,
        snap.lines,
        snap.resends,
        snap.events,
        snap.elapsed.as_secs_f64()
    ));
    lines
}

fn plain(row: &Row) -> String {
    format!(
        "{:<10} {:<14} {:<8} {:>3.0}%  nozzle {} bed {}",
        row.printer,
        row.state,
        row.job.as_deref().unwrap_or("-"),
        row.progress.clamp(0.0, 100.0),
        temp(row.nozzle).trim_start(),
        temp(row.bed).trim_start()
    )
}

/// `[#########-----------]` for 0–100.
pub fn bar(percent: f64) -> String {
    let filled = ((percent.clamp(0.0, 100.0) / 100.0) * BAR_WIDTH as f64).round() as usize;
    format!(
        "[{}{}]",
        "#".repeat(filled),
        "-".repeat(BAR_WIDTH.saturating_sub(filled))
    )
}

fn temp(t: Option<f64>) -> String {
    t.map_or_else(|| "-".to_owned(), |t| format!("{t:.1}°C"))
}

/// The final numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub completed: usize,
    pub total: usize,
    pub printers: usize,
    pub lines: u64,
    /// The host's counters (see `crate::control::LinkCounters`).
    pub resends: u64,
    pub line_errors: u64,
    pub timeouts: u64,
    pub recovered_oks: u64,
    /// What the simulators did on purpose (`--fault-rate`), for comparison.
    pub injected_corrupt: u64,
    pub injected_lost_oks: u64,
    pub events: u64,
    pub elapsed: Duration,
}

pub fn summary(s: &Summary) -> String {
    format!(
        "summary\n  jobs printed: {}/{}\n  lines sent: {} (executed by {} printers)\n  \
         resends: {} ({} line errors; {} lines corrupted on purpose)\n  \
         lost oks recovered: {} ({} oks withheld on purpose)\n  time-outs: {}\n  \
         events published: {} (seen on device/printer/+/event)\n  elapsed: {:.1} s\n",
        s.completed,
        s.total,
        s.lines,
        s.printers,
        s.resends,
        s.line_errors,
        s.injected_corrupt,
        s.recovered_oks,
        s.injected_lost_oks,
        s.timeouts,
        s.events,
        s.elapsed.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(state: &str, progress: f64) -> Snapshot {
        Snapshot {
            rows: vec![Row {
                printer: "printer-1".into(),
                state: state.into(),
                job: Some("job-2".into()),
                progress,
                nozzle: Some(210.0),
                bed: None,
            }],
            total: 6,
            ..Snapshot::default()
        }
    }

    #[test]
    fn bar_is_fixed_width_and_clamped() {
        assert_eq!(bar(0.0), format!("[{}]", "-".repeat(16)));
        assert_eq!(bar(50.0), format!("[{}{}]", "#".repeat(8), "-".repeat(8)));
        assert_eq!(bar(250.0), format!("[{}]", "#".repeat(16)));
        assert_eq!(bar(f64::NAN).len(), 18);
    }

    #[test]
    fn table_lines_fit_80_columns() {
        let mut s = snap("awaiting_clear", 100.0);
        s.rows[0].printer = "printer-16".into();
        s.rows[0].job = Some("job-1000".into());
        s.rows[0].bed = Some(110.0);
        for line in table(&s) {
            assert!(line.chars().count() <= 80, "{line}");
        }
    }

    #[test]
    fn live_view_moves_up_over_what_it_drew() {
        let mut view = View::new(true);
        let mut out = Vec::new();
        view.render(&mut out, &snap("printing", 40.0)).unwrap();
        let first = String::from_utf8(out.clone()).unwrap();
        assert!(!first.contains("\x1b[3A"));
        assert!(first.contains("PRINTER") && first.contains("[######----------]"));
        assert!(first.contains("210.0°C"));
        out.clear();
        view.render(&mut out, &snap("printing", 45.0)).unwrap();
        assert!(String::from_utf8(out).unwrap().starts_with("\x1b[3A"));
    }

    #[test]
    fn plain_view_prints_only_changes() {
        let mut view = View::new(false);
        let mut out = Vec::new();
        view.render(&mut out, &snap("printing", 10.0)).unwrap();
        view.render(&mut out, &snap("printing", 20.0)).unwrap();
        view.render(&mut out, &snap("printing", 30.0)).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains("printer-1  printing       job-2     10%"));
        assert!(lines[1].contains("jobs 0/6 printed"));
        assert!(lines[2].contains(" 30%"));
    }
}
