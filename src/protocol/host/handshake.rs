//! Connecting: reset the line counter (`M110 N0`), ask who the printer is
//! (`M115`), turn on temperature autoreport where offered (`M155`), learn
//! the resend style, and ping once with `M105` to learn whether its `ok`
//! carries the temperatures (then `M105` can serve as a marker that names
//! its own `ok`, see `recovery.rs`).
//!
//! The resend style (is `Resend:` followed by an `ok`?) differs between
//! firmware versions and cannot be read reliably from a stream: a plain
//! `ok` names no line. So the host asks once, while nothing else is in
//! flight: it sends the next line number with a wrong checksum (an `M105`,
//! harmless even to a firmware that does not check), the printer refuses
//! it with `Resend:`, and whether an `ok` follows is the answer.

use super::{HostProtocol, State, MARKER};
use crate::protocol::firmware::Firmware;
use crate::protocol::line;
use crate::protocol::motion::MotionModel;
use crate::protocol::planned::{PLANNER_DEPTH, RECEIPT_BUFFER};
use crate::protocol::reply::{ErrorKind, Reply};
use crate::protocol::Event;
use std::time::{Duration, Instant};

/// How long the printer may take to refuse the style-check line.
const STYLE_WAIT: Duration = Duration::from_millis(1000);
/// How long an `ok` may take to follow `Resend:` (Marlin prints them back to
/// back).
const STYLE_OK_WAIT: Duration = Duration::from_millis(100);

/// Style checks per connection before giving up (line noise can hit the
/// check line itself).
const STYLE_TRIES: u8 = 3;

/// The connect-time resend-style check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StyleCheck {
    Idle,
    /// The bad line went out (attempt `try_n`); waiting for its `Resend:`.
    Sent {
        until: Instant,
        try_n: u8,
    },
    /// `Resend:` came; the next line (an `ok` or not) is the answer.
    SawResend {
        until: Instant,
    },
    Done,
}

impl StyleCheck {
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self {
            StyleCheck::Sent { until, .. } | StyleCheck::SawResend { until } => Some(*until),
            StyleCheck::Idle | StyleCheck::Done => None,
        }
    }
}

/// Handshake attempts after `Resend:` for a line we never sent.
pub(super) const MAX_HANDSHAKES: u32 = 5;

impl HostProtocol {
    pub(super) fn begin_handshake(&mut self, now: Instant) {
        if self.handshakes > 0 {
            // Line numbers start again from 0: a new session.
            self.events.push_back(Event::Reset);
        }
        self.handshakes += 1;
        self.acked_high = 0;
        self.state = State::AwaitingFirmwareInfo;
        self.queue.reset(0);
        self.firmware = Firmware::default();
        self.learned_slots = None;
        self.autoreport_requested = false;
        self.ping_sent = false;
        self.markers = false;
        self.stale = None;
        self.probe = None;
        self.expect_resend_ok = false;
        self.expect_skip_ok = false;
        self.resend_ok = None;
        self.style_check = StyleCheck::Idle;
        self.busy = false;
        self.timeouts_in_row = 0;
        self.last_progress = now;
        self.next_temp_poll = None;
        self.motion = MotionModel::default();
        self.planned.clear();
        self.raw_oks.clear();
        // `N0 M110 N0`: the next line the printer expects is 1.
        self.push_host("M110 N0");
        self.handshake_last = self.push_host("M115");
    }

    /// The last handshake line was acknowledged: send the next one, or
    /// declare the printer ready.
    pub(super) fn continue_handshake(&mut self, now: Instant) {
        if self.firmware.autoreport_temp && !self.autoreport_requested {
            self.autoreport_requested = true;
            let cmd = format!("M155 S{}", self.cfg.autoreport_interval_s);
            self.handshake_last = self.push_host(&cmd);
            return;
        }
        if self.style_check == StyleCheck::Idle && self.firmware.checks_line_numbers() {
            self.send_style_check(now, 1);
            return;
        }
        if !self.ping_sent {
            self.ping_sent = true;
            self.handshake_last = self.push_host(MARKER);
            return;
        }
        if self.resend_ok.is_none() {
            self.resend_ok = self.firmware.resend_ok_prior();
        }
        let depth = if self.firmware.acks_on_receipt() {
            PLANNER_DEPTH + RECEIPT_BUFFER
        } else {
            PLANNER_DEPTH
        };
        self.planned.set_depth(depth);
        self.state = State::Ready;
        self.next_temp_poll =
            (!self.firmware.autoreport_temp).then(|| now + self.cfg.temp_poll_interval);
        self.events.push_back(Event::Ready(self.firmware.clone()));
    }

    /// A reply during the style check; true when it was consumed.
    pub(super) fn on_style_check_reply(&mut self, now: Instant, reply: &Reply<'_>) -> bool {
        match (self.style_check, reply) {
            (StyleCheck::Sent { .. }, Reply::Resend(_)) => {
                self.style_check = StyleCheck::SawResend {
                    until: now + STYLE_OK_WAIT,
                };
                true
            }
            (
                StyleCheck::Sent { .. },
                Reply::Error {
                    kind: ErrorKind::LineCheck { .. },
                    ..
                },
            ) => true,
            (StyleCheck::Sent { .. }, Reply::Ok(_)) => {
                // The firmware ran the line: it checks nothing.
                self.finish_style_check(now, None);
                true
            }
            (StyleCheck::SawResend { .. }, Reply::Ok(_)) => {
                self.finish_style_check(now, Some(true));
                true
            }
            (StyleCheck::SawResend { .. }, _) => {
                self.finish_style_check(now, Some(false));
                false
            }
            _ => false,
        }
    }

    pub(super) fn style_check_timed_out(&mut self, now: Instant) {
        match self.style_check {
            StyleCheck::SawResend { .. } => self.finish_style_check(now, Some(false)),
            // No `Resend:` at all: the check line itself was garbled. Again.
            StyleCheck::Sent { try_n, .. } if try_n < STYLE_TRIES => {
                self.send_style_check(now, try_n + 1)
            }
            _ => self.finish_style_check(now, None),
        }
    }

    /// The next line number with a wrong checksum, unnumbered in our queue
    /// (the printer refuses it, so the number stays free).
    fn send_style_check(&mut self, now: Instant, try_n: u8) {
        let n = self.queue.next_n();
        let body = format!("N{n} {MARKER}");
        let bad = line::checksum(body.as_bytes()) ^ 0x5a;
        self.raw_out
            .extend_from_slice(format!("{body}*{bad}\n").as_bytes());
        self.style_check = StyleCheck::Sent {
            until: now + STYLE_WAIT,
            try_n,
        };
    }

    fn finish_style_check(&mut self, now: Instant, resend_ok: Option<bool>) {
        self.style_check = StyleCheck::Done;
        self.resend_ok = resend_ok;
        self.continue_handshake(now);
    }

    pub(super) fn on_start(&mut self, now: Instant) {
        match self.state {
            State::Ready if self.job.active || self.queue.has_job_lines() => {
                self.fail(crate::protocol::PrinterError::ResetMidPrint);
            }
            State::Ready => self.begin_handshake(now),
            _ => self.begin_handshake(now),
        }
    }
}
