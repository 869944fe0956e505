//! systemd readiness and watchdog notifications (`sd_notify(3)`), as thin glue
//! over the `sd-notify` crate.
//!
//! The unit file runs printgate as `Type=notify` with `WatchdogSec=`:
//!
//! - [`ready`] once the store is open and the printers are being opened;
//!   until then `systemctl start` waits, and dependent units do not start.
//! - [`status`] for the one-line text shown by `systemctl status`.
//! - [`watchdog_ping`] every [`watchdog_interval`] from a loop that proves
//!   progress (the farm supervisor's tick, not a timer task of its own: a
//!   wedged supervisor must stop the pings so systemd restarts us).
//! - [`stopping`] when a shutdown begins.
//!
//! Every function is a no-op when the process is not started by systemd
//! (`NOTIFY_SOCKET` unset), so `printgate run` behaves the same from a
//! terminal. A failed notification is logged at debug level and otherwise
//! ignored: telling systemd is never a reason to stop printing.
//!
//! ```no_run
//! use printgate::notify;
//! use std::time::Instant;
//!
//! // ... store opened, printer tasks spawned ...
//! notify::ready();
//! notify::status("2 printers, 0 jobs");
//! let ping_every = notify::watchdog_interval();
//! let mut last_ping = Instant::now();
//! loop {
//!     // ... one supervisor pass ...
//!     if ping_every.is_some_and(|every| last_ping.elapsed() >= every) {
//!         notify::watchdog_ping();
//!         last_ping = Instant::now();
//!     }
//!     # break;
//! }
//! notify::stopping();
//! ```

use sd_notify::NotifyState;
use std::time::Duration;

/// Tells systemd that start-up is finished (`READY=1`).
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// Sets the free-form status line shown by `systemctl status` (`STATUS=...`).
pub fn status(msg: &str) {
    // A newline would end the field early and start a bogus assignment.
    let line = msg.replace('\n', " ");
    send(&[NotifyState::Status(&line)]);
}

/// Tells systemd that a shutdown has begun (`STOPPING=1`), so that the stop
/// is not mistaken for a crash while the jobs are parked.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Sends one watchdog keep-alive (`WATCHDOG=1`).
pub fn watchdog_ping() {
    send(&[NotifyState::Watchdog]);
}

/// How often to call [`watchdog_ping`]: half of the unit's `WatchdogSec=`
/// (systemd's advice), or `None` when no watchdog is armed for this process.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().and_then(half_period)
}

/// Half of the watchdog timeout; `None` for a zero timeout (disabled).
fn half_period(timeout: Duration) -> Option<Duration> {
    if timeout.is_zero() {
        None
    } else {
        Some(timeout / 2)
    }
}

fn send(states: &[NotifyState]) {
    // sd_notify::notify is itself a no-op without NOTIFY_SOCKET; checking
    // here too keeps the debug log quiet outside systemd.
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(err) = sd_notify::notify(states) {
        log::debug!("sd_notify {states:?} failed: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use std::sync::Mutex;

    /// The tests change process-wide environment variables; only one of
    /// them may run at a time.
    static ENV: Mutex<()> = Mutex::new(());

    fn scratch_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("printgate-notify-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_states_to_notify_socket() {
        let _guard = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let dir = scratch_dir("send");
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);

        ready();
        assert_eq!(recv(&sock), "READY=1\n");
        status("printing 2 of 3\nWATCHDOG=1");
        assert_eq!(recv(&sock), "STATUS=printing 2 of 3 WATCHDOG=1\n");
        watchdog_ping();
        assert_eq!(recv(&sock), "WATCHDOG=1\n");
        stopping();
        assert_eq!(recv(&sock), "STOPPING=1\n");

        std::env::remove_var("NOTIFY_SOCKET");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_op_without_systemd_and_not_fatal_on_dead_socket() {
        let _guard = ENV.lock().unwrap_or_else(|e| e.into_inner());
        std::env::remove_var("NOTIFY_SOCKET");
        ready();
        status("idle");
        stopping();
        watchdog_ping();

        // A socket path nobody listens on: the error is logged, not raised.
        let dir = scratch_dir("dead");
        std::env::set_var("NOTIFY_SOCKET", dir.join("nobody.sock"));
        ready();
        watchdog_ping();
        std::env::remove_var("NOTIFY_SOCKET");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn watchdog_interval_is_half_the_timeout_for_this_pid() {
        let _guard = ENV.lock().unwrap_or_else(|e| e.into_inner());
        std::env::remove_var("WATCHDOG_PID");
        std::env::remove_var("WATCHDOG_USEC");
        assert_eq!(watchdog_interval(), None);

        std::env::set_var("WATCHDOG_USEC", "30000000");
        assert_eq!(watchdog_interval(), Some(Duration::from_secs(15)));

        // Meant for another process (e.g. our parent): not ours to feed.
        std::env::set_var("WATCHDOG_PID", "1");
        assert_eq!(watchdog_interval(), None);
        std::env::set_var("WATCHDOG_PID", std::process::id().to_string());
        assert_eq!(watchdog_interval(), Some(Duration::from_secs(15)));

        std::env::remove_var("WATCHDOG_PID");
        std::env::remove_var("WATCHDOG_USEC");
        assert_eq!(half_period(Duration::ZERO), None);
    }
}
