//! The numbered-line queue: history, in-flight window and unsent lines, in
//! one ring of fixed-size slots (no allocation per line once warmed up).
//!
//! Line numbers are contiguous: `[first .. acked)` is history kept for
//! resends, `[acked .. send_next)` is in flight, `[send_next .. next_n)` is
//! framed but not yet sent.

use super::line::{frame, MAX_FRAMED_LEN};
use super::motion::Cost;
use super::LineKind;
use std::collections::VecDeque;

/// Acknowledged lines kept for a printer that asks for them again.
const HISTORY: usize = 64;
/// Framed line plus newline, with room to spare.
const SLOT: usize = MAX_FRAMED_LEN + 5;

#[derive(Clone)]
pub(crate) struct Entry {
    pub n: u64,
    pub kind: LineKind,
    /// How long the printer may take over it.
    pub cost: Cost,
    /// An `M105`: its `ok T:…` names it among the oks (see `host.rs`).
    pub marker: bool,
    len: u8,
    bytes: [u8; SLOT],
}

/// What the host learns about a line when it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AckedLine {
    pub n: u64,
    pub kind: LineKind,
    pub cost: Cost,
}

impl Entry {
    pub fn bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }
}

pub(crate) struct LineQueue {
    entries: VecDeque<Entry>,
    acked: u64,
    send_next: u64,
    next_n: u64,
    /// One past the highest line ever sent: a printer may ask for any line
    /// below it, even after we rewound further back.
    sent_high: u64,
    in_flight_bytes: usize,
    scratch: Vec<u8>,
}

impl LineQueue {
    pub fn new(first: u64) -> Self {
        LineQueue {
            entries: VecDeque::with_capacity(HISTORY + 64),
            acked: first,
            send_next: first,
            next_n: first,
            sent_high: first,
            in_flight_bytes: 0,
            scratch: Vec::with_capacity(SLOT),
        }
    }

    /// Frames `cmd` with the next line number. `cmd` comes from
    /// `line::prepare`, so it always fits a slot.
    pub fn push(&mut self, cmd: &str, kind: LineKind, cost: Cost) -> u64 {
        let n = self.next_n;
        self.scratch.clear();
        let len = frame(n, cmd, &mut self.scratch).min(SLOT);
        let mut bytes = [0u8; SLOT];
        if let (Some(dst), Some(src)) = (bytes.get_mut(..len), self.scratch.get(..len)) {
            dst.copy_from_slice(src);
        }
        self.entries.push_back(Entry {
            n,
            kind,
            cost,
            marker: is_marker(cmd),
            len: len as u8,
            bytes,
        });
        self.next_n += 1;
        n
    }

    pub fn get(&self, n: u64) -> Option<&Entry> {
        let first = self.entries.front()?.n;
        let idx = usize::try_from(n.checked_sub(first)?).ok()?;
        self.entries.get(idx)
    }

    /// The oldest line number still held (for resends).
    pub fn first(&self) -> u64 {
        self.entries.front().map_or(self.acked, |e| e.n)
    }
    pub fn acked(&self) -> u64 {
        self.acked
    }
    #[cfg(test)]
    pub fn send_next(&self) -> u64 {
        self.send_next
    }
    /// The next line to send (one past the newest in flight).
    pub fn send_next_line(&self) -> u64 {
        self.send_next
    }
    /// The number the next pushed line gets.
    pub fn next_n(&self) -> u64 {
        self.next_n
    }
    pub fn sent_high(&self) -> u64 {
        self.sent_high
    }
    #[cfg(test)]
    pub fn next_n_for_tests(&self) -> u64 {
        self.next_n
    }
    pub fn in_flight_lines(&self) -> u64 {
        self.send_next - self.acked
    }
    pub fn in_flight_bytes(&self) -> usize {
        self.in_flight_bytes
    }
    pub fn unsent(&self) -> u64 {
        self.next_n - self.send_next
    }
    pub fn next_unsent(&self) -> Option<&Entry> {
        self.get(self.send_next)
            .filter(|_| self.send_next < self.next_n)
    }
    pub fn oldest_in_flight(&self) -> Option<&Entry> {
        self.get(self.acked).filter(|_| self.acked < self.send_next)
    }
    /// Lines in flight, oldest first.
    pub fn in_flight(&self) -> impl Iterator<Item = &Entry> {
        (self.acked..self.send_next).filter_map(|n| self.get(n))
    }
    pub fn long_in_flight(&self) -> bool {
        self.in_flight().any(|e| e.cost == Cost::Long)
    }
    /// The first `M105` in flight that is not the oldest line.
    pub fn marker_after_oldest(&self) -> Option<u64> {
        self.in_flight().skip(1).find(|e| e.marker).map(|e| e.n)
    }
    /// The first `M105` in flight, the oldest line included.
    pub fn first_marker_in_flight(&self) -> Option<u64> {
        self.in_flight().find(|e| e.marker).map(|e| e.n)
    }
    /// An `M105` queued but not sent yet.
    pub fn marker_unsent(&self) -> bool {
        (self.send_next..self.next_n).any(|n| self.get(n).is_some_and(|e| e.marker))
    }
    pub fn marker_unacked(&self) -> bool {
        (self.acked..self.next_n).any(|n| self.get(n).is_some_and(|e| e.marker))
    }

    /// Records that the next unsent line went out.
    pub fn mark_sent(&mut self) {
        if let Some(len) = self.next_unsent().map(Entry::len) {
            self.in_flight_bytes += len;
            self.send_next += 1;
            self.sent_high = self.sent_high.max(self.send_next);
        }
    }

    /// The oldest in-flight line was executed.
    pub fn ack_oldest(&mut self) -> Option<AckedLine> {
        let (acked, len) = self.oldest_in_flight().map(|e| {
            (
                AckedLine {
                    n: e.n,
                    kind: e.kind,
                    cost: e.cost,
                },
                e.len(),
            )
        })?;
        self.acked += 1;
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(len);
        while self.acked.saturating_sub(self.first()) > HISTORY as u64 {
            self.entries.pop_front();
        }
        Some(acked)
    }

    /// Makes `k` the next line to send. Lines `[k, send_next)` leave the
    /// window; returns their count and bytes. `k` below `acked` reopens
    /// history (the printer never got lines we counted as done); `k` above
    /// `send_next` (we rewound too far, the printer already has those lines)
    /// moves forward and counts them in flight again.
    pub fn rewind(&mut self, k: u64) -> Option<(u64, usize)> {
        if k < self.first() || k > self.sent_high {
            return None;
        }
        while self.send_next < k {
            self.mark_sent();
        }
        let mut lines = 0;
        let mut bytes = 0;
        for n in k.max(self.acked)..self.send_next {
            lines += 1;
            bytes += self.get(n).map_or(0, Entry::len);
        }
        if k < self.acked {
            self.acked = k;
            self.in_flight_bytes = 0;
        } else {
            self.in_flight_bytes = self.in_flight_bytes.saturating_sub(bytes);
        }
        self.send_next = k;
        Some((lines, bytes))
    }

    /// Forgets framed lines that were never sent (cancel): their numbers are
    /// reused, so the printer never sees a gap.
    pub fn drop_unsent(&mut self) {
        let keep = self.send_next.max(self.sent_high);
        while self.entries.back().is_some_and(|e| e.n >= keep) {
            self.entries.pop_back();
        }
        self.next_n = keep;
    }

    /// Starts numbering afresh at `first` (after `M110`).
    pub fn reset(&mut self, first: u64) {
        self.entries.clear();
        self.acked = first;
        self.send_next = first;
        self.next_n = first;
        self.sent_high = first;
        self.in_flight_bytes = 0;
    }

    /// Any job line in flight or waiting to be sent.
    pub fn has_job_lines(&self) -> bool {
        (self.acked..self.next_n).any(|n| {
            self.get(n)
                .is_some_and(|e| matches!(e.kind, LineKind::Job(_)))
        })
    }
}

/// `M105` (temperature report): Marlin, Prusa-Firmware and Klipper answer it
/// with `ok T:…`, an ok that says which line it belongs to.
fn is_marker(cmd: &str) -> bool {
    // Case-insensitive without allocating: this runs for every line.
    cmd.split_ascii_whitespace()
        .next()
        .is_some_and(|w| w.eq_ignore_ascii_case("M105"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_accounting_and_history() {
        let mut q = LineQueue::new(1);
        for i in 0..100 {
            q.push("G1 X1", LineKind::Job(i), Cost::Move(0));
        }
        let len = q.get(1).unwrap().len();
        q.mark_sent();
        q.mark_sent();
        assert_eq!((q.in_flight_lines(), q.in_flight_bytes()), (2, 2 * len));
        assert_eq!(
            q.ack_oldest(),
            Some(AckedLine {
                n: 1,
                kind: LineKind::Job(0),
                cost: Cost::Move(0)
            })
        );
        assert_eq!(q.rewind(2), Some((1, len)));
        assert_eq!(
            (q.in_flight_lines(), q.in_flight_bytes(), q.send_next()),
            (0, 0, 2)
        );
        for _ in 0..99 {
            q.mark_sent();
            q.ack_oldest();
        }
        assert_eq!(q.acked(), 101);
        assert_eq!(q.first(), 101 - HISTORY as u64);
        assert!(q.rewind(10).is_none(), "beyond history");
        assert!(q.rewind(90).is_some(), "within history");
        assert_eq!((q.acked(), q.send_next()), (90, 90));
    }

    #[test]
    fn markers_are_recognised_in_any_case() {
        assert!(is_marker("M105"));
        assert!(is_marker("m105 T0"));
        assert!(!is_marker("M1050"));
        let mut q = LineQueue::new(1);
        q.push("G1 X1", LineKind::Job(0), Cost::Move(0));
        q.push("M105", LineKind::Host, Cost::Instant);
        q.mark_sent();
        assert_eq!(q.marker_after_oldest(), None, "not sent yet");
        assert!(q.marker_unacked());
        q.mark_sent();
        assert_eq!(q.marker_after_oldest(), Some(2));
    }

    #[test]
    fn drop_unsent_reuses_numbers() {
        let mut q = LineQueue::new(5);
        q.push("G1 X1", LineKind::Job(0), Cost::Move(0));
        q.push("G1 X2", LineKind::Job(1), Cost::Move(0));
        q.mark_sent();
        q.drop_unsent();
        assert_eq!(q.next_n_for_tests(), 6);
        assert_eq!(q.push("M104 S0", LineKind::Host, Cost::Instant), 6);
        assert!(q.get(6).unwrap().bytes().starts_with(b"N6 M104 S0*"));
        assert!(!q.long_in_flight());
    }
}
