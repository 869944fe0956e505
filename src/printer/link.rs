//! Drives the sans-IO protocol core over any byte stream (a serial port, a
//! pseudo-terminal, an in-memory stream in tests).
//!
//! Writes happen outside `select!` (`write_all` is not cancel-safe; `read`
//! is). Several lines are written with one `write_all`, never flushed.
//!
//! Fairness: a board that floods the line (noise, a reboot loop) must not
//! starve anything. The wait polls, in this order, the emergency stop, the
//! commands, the report channel, the job reader, the protocol's deadline and
//! only then the port; and after every read it runs the deadline check
//! itself, so a read always ready can delay nothing.

use super::handle::Urgent;
use super::job_reader::ReaderMsg;
use super::outbox::Outbox;
use super::PrinterCommand;
use crate::protocol::{self, HostProtocol};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Why the link stopped being usable.
#[derive(Debug)]
pub enum LinkError {
    /// Read returned 0 bytes or EIO: the device is gone.
    Disconnected,
    Io(std::io::Error),
}

/// What woke the driver.
pub(crate) enum Wake {
    Input,
    Timer,
    /// An emergency stop was requested (see `handle.rs`).
    Urgent,
    Command(PrinterCommand),
    /// The command channel closed: the owner is gone.
    Closed,
    /// A report went to the farm.
    Reported,
    /// The job reader spoke (`None`: its thread ended without a word).
    Job(Option<ReaderMsg>),
}

/// What the wait listens to besides the port. `None` (or `false`) leaves a
/// source out for this wait (back-pressure, or nothing wanted).
pub(crate) struct Inputs<'a> {
    pub urgent: &'a Urgent,
    pub commands: Option<&'a mut mpsc::Receiver<PrinterCommand>>,
    pub outbox: &'a mut Outbox,
    pub job: Option<&'a mut mpsc::Receiver<ReaderMsg>>,
    pub read: bool,
}

pub struct Link<S> {
    io: S,
    pub core: HostProtocol,
    cfg: protocol::Config,
    rx: Box<[u8]>,
    tx: Vec<u8>,
}

/// The protocol's clock: tokio's, so paused-time tests work.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl<S: AsyncRead + AsyncWrite + Unpin> Link<S> {
    pub fn new(io: S, cfg: protocol::Config) -> Self {
        Link {
            io,
            core: HostProtocol::new(cfg.clone(), now()),
            cfg,
            rx: vec![0u8; 4096].into_boxed_slice(),
            tx: Vec::with_capacity(1024),
        }
    }

    /// Starts a fresh protocol on the same port (after the firmware halted
    /// or reset), waiting for its banner again.
    pub fn restart_core(&mut self) {
        self.core = HostProtocol::new(self.cfg.clone(), now());
    }

    /// Writes whatever the core has for the port.
    pub async fn flush(&mut self) -> Result<(), LinkError> {
        self.tx.clear();
        if self.core.poll_transmit(now(), &mut self.tx) {
            // No `flush()`: on a serial port it is `tcdrain()`, which blocks
            // the executor thread until the UART has sent every byte (~1.5 ms
            // a line at 250000 baud), stalling the other printers. After
            // `write_all` the bytes are in the kernel's tty buffer already.
            self.io.write_all(&self.tx).await.map_err(io_error)?;
        }
        Ok(())
    }

    /// Flushes, then waits for the first of: an emergency stop, a command, room
    /// for a report, a job batch, the core's deadline, input.
    pub(crate) async fn wait(&mut self, inputs: Inputs<'_>) -> Result<Wake, LinkError> {
        self.flush().await?;
        let deadline = self.core.poll_timeout();
        let Inputs {
            urgent,
            commands,
            outbox,
            job,
            read,
        } = inputs;
        let has_commands = commands.is_some();
        let has_reports = !outbox.is_empty();
        let has_job = job.is_some();
        tokio::select! {
            biased;
            _ = urgent.requested() => Ok(Wake::Urgent),
            cmd = recv_or_pend(commands), if has_commands => Ok(match cmd {
                Some(c) => Wake::Command(c),
                None => Wake::Closed,
            }),
            _ = outbox.send_one(), if has_reports => Ok(Wake::Reported),
            msg = recv_or_pend(job), if has_job => Ok(Wake::Job(msg)),
            _ = sleep_until_opt(deadline) => {
                self.core.handle_timeout(now());
                Ok(Wake::Timer)
            }
            read = self.io.read(&mut self.rx), if read => {
                let n = read.map_err(io_error)?;
                if n == 0 {
                    return Err(LinkError::Disconnected);
                }
                let at = now();
                self.core.handle_bytes(at, self.rx.get(..n).unwrap_or(&[]));
                if deadline.is_some_and(|d| at >= d) {
                    // Input that never stops must not hold the deadline off.
                    self.core.handle_timeout(at);
                }
                Ok(Wake::Input)
            }
        }
    }
}

async fn recv_or_pend<T>(rx: Option<&mut mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// EIO after the other side of a pseudo-terminal closed, or after a USB
/// adapter was unplugged, means the device is gone.
fn io_error(e: std::io::Error) -> LinkError {
    if e.raw_os_error() == Some(5) || e.kind() == std::io::ErrorKind::BrokenPipe {
        LinkError::Disconnected
    } else {
        LinkError::Io(e)
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::ReadBuf;

    /// A port that always has input (line noise, a board in a reboot loop)
    /// and records what the host writes.
    struct Noisy {
        written: Vec<u8>,
    }

    impl AsyncRead for Noisy {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let noise = b"echo:noise\n";
            while buf.remaining() >= noise.len() {
                buf.put_slice(noise);
            }
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Noisy {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.written.extend_from_slice(data);
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Issue 12 #6: with input always ready, commands and the protocol's
    /// timers must still be served (the old `biased` select read first and
    /// starved both).
    #[tokio::test(start_paused = true)]
    async fn r12_6_reads_do_not_starve_commands_or_timers() {
        let cfg = protocol::Config {
            boot_timeout: std::time::Duration::from_millis(10),
            ..protocol::Config::default()
        };
        let mut link = Link::new(
            Noisy {
                written: Vec::new(),
            },
            cfg,
        );
        let (tx, mut rx) = mpsc::channel(4);
        tx.send(PrinterCommand::Pause).await.unwrap();
        let urgent = Urgent::default();
        let (report_tx, _reports) = mpsc::channel(4);
        let mut outbox = Outbox::new("p1".into(), report_tx);
        let mut got_command = false;
        tokio::time::advance(std::time::Duration::from_millis(20)).await;
        for _ in 0..1000 {
            let inputs = Inputs {
                urgent: &urgent,
                commands: Some(&mut rx),
                outbox: &mut outbox,
                job: None,
                read: true,
            };
            if let Wake::Command(PrinterCommand::Pause) = link.wait(inputs).await.unwrap() {
                got_command = true;
            }
            while link.core.poll_event().is_some() {}
            if got_command && !link.io.written.is_empty() {
                break;
            }
        }
        assert!(got_command, "the queued command was never served");
        assert!(
            link.io.written.starts_with(b"N0 M110 N0*125\n"),
            "the boot time-out never fired: the handshake did not start"
        );
    }
}
