//! The simulator's driver: owns the pseudo-terminal master, the symlink to
//! the slave, the received-command log and the timers, and runs the sans-IO
//! [`Marlin`] model on them. One std thread per simulator, with its own
//! current-thread tokio runtime.
//!
//! Host detection: while no process has the slave open, reads on the master
//! fail with EIO (`Ok(0)` on some systems: same meaning); we probe with a
//! non-blocking read every 10 ms. A probe that would block or returns data
//! means a host opened the port: board reset and banner. EIO again means it
//! closed. Output is written only while a host is there, because bytes
//! written to a master with no slave open wait for the next opener.
//!
//! Readiness: tokio keeps a "read closed" (EPOLLHUP) readiness forever, and a
//! pty master sees a hang-up every time the host closes; after that, every
//! read would be "ready" and return would-block at once, and tokio-serial's
//! `poll_read` spins on it. So the master is never registered with this
//! runtime: `SerialStream::pair()` runs in a throwaway runtime, and each host
//! session registers the raw fd afresh (`AsyncFd<RawFd>`), dropped when the
//! host leaves. A hang-up seen while reads would block means the host closed
//! and reopened between two reads: a new session (and a board reset).
//!
//! Timers: tokio sleeps have 1 ms resolution, so a deadline less than
//! [`PRECISE`] away is waited for with a short `thread::sleep` (this thread
//! runs nothing else) after a non-blocking check for I/O.

use std::fs::File;
use std::future::Future;
use std::io::{BufWriter, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;
use tokio_serial::{SerialPort, SerialStream};

use super::link::LinkGuard;
use super::marlin::Marlin;
use super::{SimConfig, SimError, SimStats};

const NO_HOST_POLL: Duration = Duration::from_millis(10);
/// Deadlines closer than this are slept for on the thread, not with tokio.
const PRECISE: Duration = Duration::from_millis(2);
/// Output a host does not read is dropped past this (a real UART would lose it).
const MAX_PENDING_OUT: usize = 1 << 20;

pub(super) struct DriverArgs {
    pub link: PathBuf,
    pub cfg: SimConfig,
    pub log: Option<File>,
    pub stats: Arc<Mutex<SimStats>>,
    pub dropped: Arc<Mutex<Vec<(i64, Instant)>>>,
    pub stop: oneshot::Receiver<()>,
}

/// Tells the spawner how the start went. The spawner waits on `ready`; if
/// it is gone (it gave up), there is nobody to tell and the thread's own
/// result says the rest.
fn report_start(ready: &mpsc::Sender<Result<(), SimError>>, result: Result<(), SimError>) {
    if ready.send(result).is_err() {
        log::debug!("sim: nobody waits for the simulator's start any more");
    }
}

/// The simulator thread: reports start-up success on `ready`, runs until
/// stopped, returns the final counters.
pub(super) fn run_thread(args: DriverArgs, ready: mpsc::Sender<Result<(), SimError>>) -> SimStats {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            report_start(&ready, Err(SimError::Thread(e)));
            return SimStats::default();
        }
    };
    let DriverArgs {
        link,
        cfg,
        log,
        stats,
        dropped,
        stop,
    } = args;
    let (master, _link_guard) = match open_pty(&link) {
        Ok(opened) => opened,
        Err(e) => {
            report_start(&ready, Err(e));
            return SimStats::default();
        }
    };
    report_start(&ready, Ok(()));
    runtime.block_on(async move {
        let mut driver = Driver {
            model: Marlin::new(&cfg, Instant::now()),
            session: None,
            master,
            out: Vec::new(),
            log: log.map(|f| BufWriter::with_capacity(64 * 1024, f)),
            log_buf: Vec::new(),
            log_dirty: false,
            shared: stats,
            dropped,
            link,
        };
        driver.run(stop).await;
        driver.finish()
    })
}

/// Creates the pty pair and the symlink to its slave. The slave itself is
/// closed at once: tokio-serial opens ports exclusively, and the host must
/// be able to open it. The pair is registered with a throwaway runtime (see
/// the module doc); only its non-blocking `try_read`/`try_write` are used.
fn open_pty(link: &Path) -> Result<(SerialStream, LinkGuard), SimError> {
    let setup = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(SimError::Pty)?;
    let pair = {
        let _enter = setup.enter();
        SerialStream::pair()
    };
    drop(setup);
    let (master, slave) = pair.map_err(|e| SimError::Pty(e.into()))?;
    let slave_path = slave
        .name()
        .map(PathBuf::from)
        .ok_or_else(|| SimError::Pty(std::io::Error::other("pty slave has no name")))?;
    drop(slave);
    let guard = LinkGuard::create(link, &slave_path)?;
    Ok((master, guard))
}

enum Io {
    Stop,
    Read(std::io::Result<usize>),
    Wrote(std::io::Result<usize>),
    /// The host closed and reopened the port between two reads.
    Reopened,
    Timer,
}

struct Driver {
    model: Marlin,
    /// The master registered with this runtime while a host has the port
    /// open. Declared before `master`: dropped first.
    session: Option<AsyncFd<RawFd>>,
    /// Owns the master fd; used only for non-blocking reads and writes.
    master: SerialStream,
    /// Released output not yet written to the master.
    out: Vec<u8>,
    log: Option<BufWriter<File>>,
    log_buf: Vec<u8>,
    log_dirty: bool,
    shared: Arc<Mutex<SimStats>>,
    dropped: Arc<Mutex<Vec<(i64, Instant)>>>,
    link: PathBuf,
}

impl Driver {
    async fn run(&mut self, mut stop: oneshot::Receiver<()>) {
        let mut buf = vec![0u8; 4096];
        loop {
            let now = Instant::now();
            self.model.handle_timeout(now);
            self.collect(now);
            let Some(session) = &self.session else {
                let wake = self
                    .model
                    .poll_timeout()
                    .map_or(now + NO_HOST_POLL, |d| d.min(now + NO_HOST_POLL));
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep_until(wake.into()) => {}
                }
                self.probe(&mut buf);
                continue;
            };
            let deadline = self.model.poll_timeout();
            let near = deadline.filter(|d| d.saturating_duration_since(now) <= PRECISE);
            let (master, out) = (&mut self.master, &self.out);
            let io = if let Some(deadline) = near {
                // Let the runtime poll epoll (without blocking) so readiness is current.
                tokio::task::yield_now().await;
                let io =
                    poll_once(|cx| poll_io(cx, master, session, out, &mut buf, &mut stop, None))
                        .await;
                if io.is_none() {
                    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                }
                io
            } else {
                let sleep = deadline
                    .map(|d| tokio::time::sleep_until(d.checked_sub(PRECISE).unwrap_or(d).into()));
                tokio::pin!(sleep);
                let io = std::future::poll_fn(|cx| {
                    poll_io(
                        cx,
                        master,
                        session,
                        out,
                        &mut buf,
                        &mut stop,
                        sleep.as_mut().as_pin_mut(),
                    )
                })
                .await;
                Some(io)
            };
            match io {
                Some(Io::Stop) => return,
                Some(Io::Read(Ok(n))) if n > 0 => {
                    self.model
                        .handle_bytes(Instant::now(), buf.get(..n).unwrap_or_default());
                }
                Some(Io::Read(Err(e)) | Io::Wrote(Err(e))) if is_transient(&e) => {}
                Some(Io::Read(_) | Io::Wrote(Err(_))) => self.host_closed(),
                Some(Io::Reopened) => {
                    self.host_closed();
                    self.host_opened();
                }
                Some(Io::Wrote(Ok(n))) => {
                    self.out.drain(..n.min(self.out.len()));
                }
                Some(Io::Timer) | None => {}
            }
        }
    }

    /// One non-blocking read with no host: EIO (or 0) = still none,
    /// would-block or data = a host opened the port.
    fn probe(&mut self, buf: &mut [u8]) {
        match self.master.try_read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.host_opened(),
            Ok(n) if n > 0 => {
                self.host_opened();
                self.model
                    .handle_bytes(Instant::now(), buf.get(..n).unwrap_or_default());
            }
            _ => {}
        }
    }

    fn host_opened(&mut self) {
        // `AsyncFd::new` over a borrowed raw fd is deprecated because nothing
        // ties the fd's lifetime to the registration. Here the master outlives
        // every session: `session` is declared (so dropped) before `master`,
        // and cleared before `master` closes in `finish`.
        #[allow(deprecated)]
        let registered = AsyncFd::new(self.master.as_raw_fd());
        match registered {
            Ok(session) => {
                log::info!(
                    "sim {}: host opened the port (board reset)",
                    self.link.display()
                );
                self.session = Some(session);
                self.out.clear();
                self.model.handle_open(Instant::now());
            }
            Err(e) => log::warn!("sim {}: cannot watch the pty: {e}", self.link.display()),
        }
    }

    fn host_closed(&mut self) {
        log::info!("sim {}: host closed the port", self.link.display());
        self.session = None;
        self.out.clear();
    }

    /// Takes released output, writes the log (flushed when the board is
    /// idle, before the last ok goes out), publishes the counters.
    fn collect(&mut self, now: Instant) {
        if self.model.poll_transmit(now, &mut self.out) && self.session.is_none() {
            self.out.clear();
        }
        if self.out.len() > MAX_PENDING_OUT {
            log::warn!(
                "sim {}: host is not reading; dropping {} bytes",
                self.link.display(),
                self.out.len()
            );
            self.out.clear();
        }
        if self.model.poll_log(&mut self.log_buf) {
            if let Some(w) = &mut self.log {
                let written = w.write_all(&self.log_buf);
                self.log_dirty = true;
                self.check_log(written);
            }
            self.log_buf.clear();
        }
        if self.log_dirty && self.model.is_idle() {
            self.flush_log();
        }
        if let Ok(mut shared) = self.shared.lock() {
            shared.clone_from(self.model.stats());
        }
        if let Ok(mut dropped) = self.dropped.lock() {
            self.model.poll_dropped_oks(&mut dropped);
        }
    }

    fn flush_log(&mut self) {
        if let Some(w) = &mut self.log {
            let flushed = w.flush();
            self.check_log(flushed);
        }
        self.log_dirty = false;
    }

    fn check_log(&mut self, result: std::io::Result<()>) {
        if let Err(e) = result {
            log::warn!(
                "sim {}: received log write failed, log disabled: {e}",
                self.link.display()
            );
            self.log = None;
        }
    }

    fn finish(mut self) -> SimStats {
        self.session = None; // deregister before the master fd closes
        self.collect(Instant::now());
        self.flush_log();
        let stats = self.model.stats().clone();
        if let Ok(mut shared) = self.shared.lock() {
            shared.clone_from(&stats);
        }
        stats
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
    )
}

/// Polls `f` once: `Some` if it was ready, `None` if it would wait.
async fn poll_once<T>(mut f: impl FnMut(&mut Context<'_>) -> Poll<T>) -> Option<T> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match f(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    })
    .await
}

/// Waits for the first of: stop, a write done (if output is pending), a
/// read, the timer. Writing first keeps replies flowing while input floods.
fn poll_io(
    cx: &mut Context<'_>,
    master: &mut SerialStream,
    session: &AsyncFd<RawFd>,
    out: &[u8],
    buf: &mut [u8],
    stop: &mut oneshot::Receiver<()>,
    sleep: Option<Pin<&mut tokio::time::Sleep>>,
) -> Poll<Io> {
    if Pin::new(&mut *stop).poll(cx).is_ready() {
        return Poll::Ready(Io::Stop);
    }
    while !out.is_empty() {
        let mut guard = match session.poll_write_ready(cx) {
            Poll::Ready(Ok(guard)) => guard,
            Poll::Ready(Err(e)) => return Poll::Ready(Io::Wrote(Err(e))),
            Poll::Pending => break,
        };
        let hung_up = guard.ready().is_write_closed();
        match guard.try_io(|_| master.try_write(out)) {
            Ok(written) => return Poll::Ready(Io::Wrote(written)),
            Err(_would_block) if hung_up => return Poll::Ready(Io::Reopened),
            Err(_would_block) => {}
        }
    }
    loop {
        let mut guard = match session.poll_read_ready(cx) {
            Poll::Ready(Ok(guard)) => guard,
            Poll::Ready(Err(e)) => return Poll::Ready(Io::Read(Err(e))),
            Poll::Pending => break,
        };
        let hung_up = guard.ready().is_read_closed();
        match guard.try_io(|_| master.try_read(buf)) {
            Ok(read) => return Poll::Ready(Io::Read(read)),
            Err(_would_block) if hung_up => return Poll::Ready(Io::Reopened),
            Err(_would_block) => {}
        }
    }
    if let Some(sleep) = sleep {
        if sleep.poll(cx).is_ready() {
            return Poll::Ready(Io::Timer);
        }
    }
    Poll::Pending
}
