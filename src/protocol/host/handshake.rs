//! Connecting: reset the line counter (`M110 N0`), ask who the printer is
//! (`M115`), turn on temperature autoreport where offered (`M155`), and ping
//! once with `M105` to learn whether its `ok` carries the temperatures (then
//! `M105` can serve as a marker that names its own `ok`, see `recovery.rs`).

use super::{HostProtocol, State, MARKER};
use crate::protocol::firmware::Firmware;
use crate::protocol::motion::MotionModel;
use crate::protocol::Event;
use std::time::Instant;

/// Handshake attempts after `Resend:` for a line we never sent.
pub(super) const MAX_HANDSHAKES: u32 = 5;

impl HostProtocol {
    pub(super) fn begin_handshake(&mut self, now: Instant) {
        self.handshakes += 1;
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
        self.busy = false;
        self.timeouts_in_row = 0;
        self.last_progress = now;
        self.next_temp_poll = None;
        self.motion = MotionModel::default();
        self.motion_until = None;
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
        if !self.ping_sent {
            self.ping_sent = true;
            self.handshake_last = self.push_host(MARKER);
            return;
        }
        self.resend_ok = self.firmware.resend_ok_prior();
        self.state = State::Ready;
        self.next_temp_poll =
            (!self.firmware.autoreport_temp).then(|| now + self.cfg.temp_poll_interval);
        self.events.push_back(Event::Ready(self.firmware.clone()));
    }

    pub(super) fn on_start(&mut self, now: Instant) {
        match self.state {
            State::Ready if self.job.active || self.queue.has_job_lines() => {
                self.fail(crate::protocol::PrinterError::ResetMidPrint);
            }
            State::Ready => {
                self.events.push_back(Event::Reset);
                self.begin_handshake(now);
            }
            _ => self.begin_handshake(now),
        }
    }
}
