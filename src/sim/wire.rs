//! The serial wire in both directions, in virtual time: 8N1 carries baud/10
//! bytes per second. Host→printer bytes get an arrival time each; printer→host
//! output is released chunk by chunk when its last byte has left. `baud` 0 is
//! an unpaced wire: everything arrives and leaves at once. No I/O, no clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Time on an 8N1 wire for `bytes` bytes: 10 bits each.
fn wire_time(baud: u32, bytes: usize) -> Duration {
    if baud == 0 {
        return Duration::ZERO;
    }
    let nanos = (bytes as u128 * 10_000_000_000) / u128::from(baud);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[derive(Debug)]
struct Segment {
    /// When the wire started carrying this segment; byte k lands at
    /// `start + wire_time(k + 1)`.
    start: Instant,
    bytes: Vec<u8>,
    next: usize,
}

/// Host→printer: bytes read from the pty, not yet landed in the RX buffer.
#[derive(Debug)]
pub(crate) struct WireIn {
    baud: u32,
    segments: VecDeque<Segment>,
    /// When the last byte put on the wire lands.
    last_arrival: Option<Instant>,
}

impl WireIn {
    pub(crate) fn new(baud: u32) -> Self {
        WireIn {
            baud,
            segments: VecDeque::new(),
            last_arrival: None,
        }
    }

    /// Puts bytes read at `now` on the wire: byte i lands at
    /// `max(previous arrival, now) + 10/baud s`.
    pub(crate) fn push(&mut self, now: Instant, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let start = self.last_arrival.map_or(now, |last| last.max(now));
        self.last_arrival = Some(start + wire_time(self.baud, bytes.len()));
        self.segments.push_back(Segment {
            start,
            bytes: bytes.to_vec(),
            next: 0,
        });
    }

    /// When the next byte lands, if any is on the wire.
    pub(crate) fn next_arrival(&self) -> Option<Instant> {
        let seg = self.segments.front()?;
        Some(seg.start + wire_time(self.baud, seg.next + 1))
    }

    /// Takes the next byte with its arrival time.
    pub(crate) fn pop(&mut self) -> Option<(Instant, u8)> {
        let at = self.next_arrival()?;
        let seg = self.segments.front_mut()?;
        let byte = *seg.bytes.get(seg.next)?;
        seg.next += 1;
        if seg.next >= seg.bytes.len() {
            self.segments.pop_front();
        }
        Some((at, byte))
    }

    /// When everything on the wire will have landed (nothing can land
    /// earlier than this from input not read yet).
    pub(crate) fn horizon(&self) -> Option<Instant> {
        self.segments.back().and(self.last_arrival)
    }

    /// Forgets the bytes in flight (the board was rebooting while they
    /// arrived); the wire itself stays busy until they would have landed.
    pub(crate) fn clear(&mut self) {
        self.segments.clear();
    }

    /// A new connection: nothing in flight, the wire is idle.
    pub(crate) fn restart(&mut self) {
        self.segments.clear();
        self.last_arrival = None;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }
}

/// Printer→host: output lines with the time their last byte leaves the wire.
#[derive(Debug)]
pub(crate) struct WireOut {
    baud: u32,
    chunks: VecDeque<(Instant, Vec<u8>)>,
    busy_until: Option<Instant>,
}

impl WireOut {
    pub(crate) fn new(baud: u32) -> Self {
        WireOut {
            baud,
            chunks: VecDeque::new(),
            busy_until: None,
        }
    }

    /// Sends `text` and a newline, starting at virtual time `at` or when the
    /// wire is free.
    pub(crate) fn line(&mut self, at: Instant, text: &str) {
        let start = self.busy_until.map_or(at, |busy| busy.max(at));
        let done = start + wire_time(self.baud, text.len() + 1);
        self.busy_until = Some(done);
        match self.chunks.back_mut() {
            // Unpaced output released at the same instant: one write.
            Some((when, bytes)) if *when == done => {
                bytes.extend_from_slice(text.as_bytes());
                bytes.push(b'\n');
            }
            _ => {
                let mut bytes = Vec::with_capacity(text.len() + 1);
                bytes.extend_from_slice(text.as_bytes());
                bytes.push(b'\n');
                self.chunks.push_back((done, bytes));
            }
        }
    }

    /// Appends to `buf` every chunk whose last byte has left by `now`.
    pub(crate) fn poll(&mut self, now: Instant, buf: &mut Vec<u8>) -> usize {
        let mut moved = 0;
        while let Some((when, _)) = self.chunks.front() {
            if *when > now {
                break;
            }
            if let Some((_, bytes)) = self.chunks.pop_front() {
                moved += bytes.len();
                buf.extend_from_slice(&bytes);
            }
        }
        moved
    }

    /// When the next chunk is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.chunks.front().map(|(when, _)| *when)
    }

    /// Drops output nobody will read (the port was reopened).
    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
        self.busy_until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_bytes_are_spaced_by_ten_bits() {
        let t0 = Instant::now();
        let mut w = WireIn::new(250_000); // 40 µs per byte
        w.push(t0, b"ab");
        w.push(t0, b"c");
        let times: Vec<_> = std::iter::from_fn(|| w.pop())
            .map(|(t, b)| (t - t0, b))
            .collect();
        assert_eq!(
            times,
            vec![
                (Duration::from_micros(40), b'a'),
                (Duration::from_micros(80), b'b'),
                (Duration::from_micros(120), b'c')
            ]
        );
        // An idle wire starts again from the read time.
        w.push(t0 + Duration::from_millis(1), b"d");
        assert_eq!(w.next_arrival(), Some(t0 + Duration::from_micros(1040)));
    }

    #[test]
    fn output_leaves_at_baud_over_ten() {
        let t0 = Instant::now();
        let mut w = WireOut::new(115_200);
        w.line(t0, "ok"); // 3 bytes: 260.4 µs
        w.line(t0, "ok");
        let mut buf = Vec::new();
        assert_eq!(w.poll(t0 + Duration::from_micros(260), &mut buf), 0);
        assert_eq!(w.poll(t0 + Duration::from_micros(261), &mut buf), 3);
        assert_eq!(w.next_due(), Some(t0 + Duration::from_nanos(2 * 260_416)));
        let mut unpaced = WireOut::new(0);
        unpaced.line(t0, "a");
        unpaced.line(t0, "b");
        assert_eq!(unpaced.poll(t0, &mut buf), 4);
        assert_eq!(buf, b"ok\na\nb\n");
    }
}
