//! The daemon side of the control socket: binding it with its mode, the
//! accept loop (connection cap, back-off on accept errors) and the
//! per-connection task (peer check, bounded request line, read time-out).
//!
//! Owns the listener and the connection tasks; uploads are `upload.rs`'s,
//! the access rule `peer.rs`'s. Decides nothing about jobs or printers:
//! every accepted request goes to the farm as is.

use super::peer::{self, Peer, Policy};
use super::upload::{receive_file, PartFile};
use super::{Request, Response, MAX_UPLOAD, SOCKET};
use crate::config::GatewayConfig;
use crate::farm::FarmInput;
use log::{debug, warn};
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Longest request line, newline included.
pub const MAX_REQUEST_LINE: usize = 4096;
/// The socket's mode, set after bind whatever the umask.
pub const SOCKET_MODE: u32 = 0o660;

/// How the control socket is guarded. [`ServeOptions::for_gateway`] builds
/// the daemon's from the config; tests shorten the time-out or pass their
/// own group file.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `[gateway] operator_group`: its members may use the socket too.
    pub operator_group: Option<String>,
    pub group_file: PathBuf,
    pub passwd_file: PathBuf,
    /// A client must send each part (request line, each upload chunk)
    /// within this time, or it is dropped.
    pub read_timeout: Duration,
    /// Connections served at once; more are turned away with an answer.
    pub max_connections: usize,
    /// Largest upload (also bounded by the spool's free space).
    pub max_upload: u64,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            operator_group: None,
            group_file: PathBuf::from("/etc/group"),
            passwd_file: PathBuf::from("/etc/passwd"),
            read_timeout: Duration::from_secs(10),
            max_connections: 8,
            max_upload: MAX_UPLOAD,
        }
    }
}

impl ServeOptions {
    /// The daemon's options: defaults plus `[gateway] operator_group`.
    pub fn for_gateway(gateway: &GatewayConfig) -> Self {
        ServeOptions {
            operator_group: gateway.operator_group.clone(),
            ..ServeOptions::default()
        }
    }
}

/// [`serve_with`] with the default options (root and the daemon's user only).
pub async fn serve(
    data_dir: &Path,
    spool_dir: PathBuf,
    farm: mpsc::Sender<FarmInput>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    serve_with(data_dir, spool_dir, farm, ServeOptions::default()).await
}

/// Listens on `<data_dir>/printgate.sock` (mode 0660, handed to the
/// operator group when the daemon may do so) until the farm goes away.
/// Uploaded files land in `spool_dir` (fsynced) before the farm hears of them.
pub async fn serve_with(
    data_dir: &Path,
    spool_dir: PathBuf,
    farm: mpsc::Sender<FarmInput>,
    options: ServeOptions,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let path = data_dir.join(SOCKET);
    // A socket left by a killed daemon: nobody is listening on it any more.
    if path.exists() && std::os::unix::net::UnixStream::connect(&path).is_err() {
        std::fs::remove_file(&path)?;
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(SOCKET_MODE))?;
    let policy = Arc::new(Policy {
        own_uid: peer::owner(&path)?,
        operator_group: options.operator_group.clone(),
        group_file: options.group_file.clone(),
        passwd_file: options.passwd_file.clone(),
    });
    give_to_group(&path, &options);
    let conns = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let options = Arc::new(options);
    Ok(tokio::spawn(async move {
        accept_loop(
            || listener.accept(),
            |(stream, _)| {
                let Ok(permit) = conns.clone().try_acquire_owned() else {
                    tokio::spawn(turn_away(stream));
                    return;
                };
                let (to_farm, spool) = (farm.clone(), spool_dir.clone());
                let (policy, options) = (policy.clone(), options.clone());
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, &spool, to_farm, &policy, &options).await {
                        debug!("control connection: {e}");
                    }
                    drop(permit);
                });
            },
            || farm.is_closed(),
            tokio::time::sleep,
        )
        .await;
        if let Err(e) = std::fs::remove_file(&path) {
            debug!("control: cannot remove {}: {e}", path.display());
        }
    }))
}

/// Hands the socket to the operator group (chgrp), so its members can
/// connect through mode 0660. The daemon must itself be in that group for
/// the kernel to allow it; otherwise it says how to fix it.
fn give_to_group(path: &Path, options: &ServeOptions) {
    let Some(group) = &options.operator_group else {
        return;
    };
    let Some(gid) = peer::group_gid(&options.group_file, group) else {
        warn!(
            "control: operator_group {group:?} is not in {}",
            options.group_file.display()
        );
        return;
    };
    if let Err(e) = std::os::unix::fs::chown(path, None, Some(gid)) {
        warn!(
            "control: cannot give {} to group {group:?} ({e}); its members can connect only \
             if the daemon's user is in that group, or operator_group is the daemon's own group",
            path.display()
        );
    }
}

/// Accepts until `stop()` is true after a connection, passing each to
/// `on_conn`. After an accept error (EMFILE, ENFILE, ENOMEM...) it waits
/// through `sleep`, 10 ms doubling to 1 s, so a full file table does not
/// spin a core.
pub(crate) async fn accept_loop<S, F, Z>(
    mut accept: impl FnMut() -> F,
    mut on_conn: impl FnMut(S),
    stop: impl Fn() -> bool,
    mut sleep: impl FnMut(Duration) -> Z,
) where
    F: Future<Output = std::io::Result<S>>,
    Z: Future<Output = ()>,
{
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);
    let mut delay = FIRST;
    let mut errors: u64 = 0;
    loop {
        match accept().await {
            Ok(conn) => {
                if errors > 0 {
                    warn!("control: accepting again after {errors} accept errors");
                }
                (delay, errors) = (FIRST, 0);
                on_conn(conn);
                if stop() {
                    return;
                }
            }
            Err(e) => {
                if errors == 0 {
                    warn!("control: accept failed: {e}; backing off");
                }
                errors += 1;
                sleep(delay).await;
                delay = (delay * 2).min(MAX);
                if stop() {
                    return;
                }
            }
        }
    }
}

/// Over the connection cap: one answer, then close (bounded in time).
async fn turn_away(mut stream: UnixStream) {
    let answer = answer_bytes(&Response::err("too many control connections; try again"));
    let write = async {
        stream.write_all(&answer).await?;
        stream.shutdown().await
    };
    if let Err(e) = tokio::time::timeout(Duration::from_secs(1), write)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "write timed out",
            ))
        })
    {
        debug!("control: turning a connection away: {e}");
    }
}

fn answer_bytes(response: &Response) -> Vec<u8> {
    let mut out = serde_json::to_vec(response).unwrap_or_default();
    out.push(b'\n');
    out
}

async fn handle(
    stream: UnixStream,
    spool: &Path,
    farm: mpsc::Sender<FarmInput>,
    policy: &Arc<Policy>,
    options: &ServeOptions,
) -> std::io::Result<()> {
    let response = match check_peer(&stream, policy).await {
        Err(refusal) => Response::err(refusal),
        Ok(()) => {
            let mut reader = BufReader::new(stream);
            let response = serve_request(&mut reader, spool, &farm, options).await;
            return reply(reader.into_inner(), &response, options).await;
        }
    };
    reply(stream, &response, options).await
}

async fn reply(
    mut stream: UnixStream,
    response: &Response,
    options: &ServeOptions,
) -> std::io::Result<()> {
    let out = answer_bytes(response);
    let write = async {
        stream.write_all(&out).await?;
        stream.flush().await
    };
    match tokio::time::timeout(options.read_timeout, write).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "client does not read its answer",
        )),
    }
}

async fn check_peer(stream: &UnixStream, policy: &Arc<Policy>) -> Result<(), String> {
    let cred = stream
        .peer_cred()
        .map_err(|e| format!("not allowed: cannot tell who is connecting ({e})"))?;
    let peer = Peer {
        uid: cred.uid(),
        gid: cred.gid(),
    };
    let policy = policy.clone();
    // Reads /etc/group and /etc/passwd: off the async workers.
    let verdict = tokio::task::spawn_blocking(move || policy.check(peer))
        .await
        .unwrap_or_else(|e| Err(format!("not allowed: check failed ({e})")));
    if let Err(refusal) = &verdict {
        warn!("control: refused a connection: {refusal}");
    }
    verdict
}

/// Reads one request (and its upload) and gets the farm's answer.
async fn serve_request(
    reader: &mut BufReader<UnixStream>,
    spool: &Path,
    farm: &mpsc::Sender<FarmInput>,
    options: &ServeOptions,
) -> Response {
    let mut line = Vec::new();
    let mut bounded = (&mut *reader).take(MAX_REQUEST_LINE as u64);
    let read = bounded.read_until(b'\n', &mut line);
    match tokio::time::timeout(options.read_timeout, read).await {
        Err(_) => return Response::err("timed out waiting for the request line"),
        Ok(Err(e)) => return Response::err(format!("cannot read the request: {e}")),
        Ok(Ok(_)) if !line.ends_with(b"\n") && line.len() >= MAX_REQUEST_LINE => {
            return Response::err(format!("request line longer than {MAX_REQUEST_LINE} bytes"))
        }
        Ok(Ok(_)) => {}
    }
    let req = match serde_json::from_slice::<Request>(line.trim_ascii()) {
        Ok(req) => req,
        Err(e) => return Response::err(format!("bad request: {e}")),
    };
    let Request::AddJob { id, size, .. } = &req else {
        return ask(farm, req, None).await;
    };
    if let Some(id) = id.as_deref().filter(|id| !valid_job_id(id)) {
        // Before the upload: `--id ""` must never become `spool/.gcode`.
        return Response::err(format!(
            "job id {:?}: use 1 to 64 of letters, digits, '-' and '_'",
            id.chars().take(80).collect::<String>()
        ));
    }
    match receive_file(reader, spool, *size, options).await {
        Ok(part) => ask(farm, req, Some(part)).await,
        Err(e) => Response::err(format!("upload failed: {e}")),
    }
}

/// The farm's rule for job ids, checked before any byte is stored.
fn valid_job_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Hands a request (and the upload, now the farm's to keep or remove) to
/// the farm and waits for its answer. If the farm is gone the upload is
/// removed here.
async fn ask(farm: &mpsc::Sender<FarmInput>, req: Request, upload: Option<PartFile>) -> Response {
    let (reply, rx) = oneshot::channel();
    let path = upload.as_ref().map(|p| p.path().to_owned());
    match farm
        .send(FarmInput::Control {
            req,
            upload: path,
            reply,
        })
        .await
    {
        Ok(()) => {
            // Delivered: from now on the farm owns the file.
            if let Some(part) = upload {
                part.keep();
            }
        }
        // Dropping `upload` removes the file.
        Err(_) => return Response::err("the daemon is shutting down"),
    }
    rx.await
        .unwrap_or_else(|_| Response::err("the daemon is shutting down"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// EMFILE from every accept: the loop must wait between attempts, with
    /// growing delays, instead of spinning. The waits are recorded, not slept.
    #[tokio::test]
    async fn r13_accept_errors_back_off_instead_of_spinning() {
        let calls = Cell::new(0u32);
        let waits = std::cell::RefCell::new(Vec::new());
        let accept = || {
            calls.set(calls.get() + 1);
            std::future::ready(Err::<(), _>(std::io::Error::from_raw_os_error(24)))
        };
        let stop = || calls.get() >= 12;
        let sleep = |d| {
            waits.borrow_mut().push(d);
            std::future::ready(())
        };
        accept_loop(accept, |_| {}, stop, sleep).await;
        let ms: Vec<u128> = waits.borrow().iter().map(Duration::as_millis).collect();
        assert_eq!(
            ms,
            [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000, 1000, 1000]
        );
    }

    #[tokio::test]
    async fn a_connection_resets_the_back_off() {
        let calls = Cell::new(0u32);
        let waits = std::cell::RefCell::new(Vec::new());
        let accept = || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            std::future::ready(if n == 3 {
                Ok(n)
            } else {
                Err(std::io::Error::from_raw_os_error(24))
            })
        };
        let served = Cell::new(0);
        let stop = || calls.get() >= 5;
        let sleep = |d| {
            waits.borrow_mut().push(d);
            std::future::ready(())
        };
        accept_loop(accept, |_| served.set(served.get() + 1), stop, sleep).await;
        let ms: Vec<u128> = waits.borrow().iter().map(Duration::as_millis).collect();
        assert_eq!((ms, served.get()), (vec![10, 20, 10, 20], 1));
    }
}
