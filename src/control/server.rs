//! The daemon side of the control socket.

use super::{Request, Response, MAX_UPLOAD, SOCKET};
use crate::farm::FarmInput;
use log::{debug, warn};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// Listens on `<data_dir>/printgate.sock` until the farm goes away.
/// Uploaded files land in `spool_dir` (fsynced) before the farm hears of them.
pub async fn serve(
    data_dir: &Path,
    spool_dir: PathBuf,
    farm: mpsc::Sender<FarmInput>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let path = data_dir.join(SOCKET);
    // A socket left by a killed daemon: nobody is listening on it any more.
    if path.exists() && std::os::unix::net::UnixStream::connect(&path).is_err() {
        let _ = std::fs::remove_file(&path);
    }
    let listener = UnixListener::bind(&path)?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (to_farm, spool) = (farm.clone(), spool_dir.clone());
            tokio::spawn(async move {
                if let Err(e) = handle(stream, &spool, to_farm).await {
                    debug!("control connection: {e}");
                }
            });
            if farm.is_closed() {
                let _ = std::fs::remove_file(&path);
                return;
            }
        }
    }))
}

async fn handle(
    stream: UnixStream,
    spool: &Path,
    farm: mpsc::Sender<FarmInput>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let response = match serde_json::from_str::<Request>(line.trim()) {
        Err(e) => Response::err(format!("bad request: {e}")),
        Ok(Request::AddJob {
            printer,
            priority,
            id,
            size,
        }) => match receive_file(&mut reader, spool, size).await {
            Ok(path) => {
                let req = Request::AddJob {
                    printer,
                    priority,
                    id,
                    size,
                };
                ask(&farm, req, Some(path)).await
            }
            Err(e) => Response::err(format!("upload failed: {e}")),
        },
        Ok(req) => ask(&farm, req, None).await,
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    let mut stream = reader.into_inner();
    stream.write_all(&out).await?;
    stream.flush().await
}

async fn ask(farm: &mpsc::Sender<FarmInput>, req: Request, upload: Option<PathBuf>) -> Response {
    let (reply, rx) = oneshot::channel();
    if farm
        .send(FarmInput::Control { req, upload, reply })
        .await
        .is_err()
    {
        return Response::err("the daemon is shutting down");
    }
    rx.await
        .unwrap_or_else(|_| Response::err("the daemon is shutting down"))
}

/// Streams `size` bytes to a temporary file in the spool, fsynced.
async fn receive_file(
    reader: &mut BufReader<UnixStream>,
    spool: &Path,
    size: u64,
) -> std::io::Result<PathBuf> {
    if size > MAX_UPLOAD {
        return Err(std::io::Error::other(format!(
            "file is {size} bytes; the limit is {MAX_UPLOAD}"
        )));
    }
    tokio::fs::create_dir_all(spool).await?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let path = spool.join(format!(".upload-{stamp}.part"));
    let mut file = tokio::fs::File::create(&path).await?;
    let copied = tokio::io::copy(&mut reader.take(size), &mut file).await?;
    if copied != size {
        let _ = tokio::fs::remove_file(&path).await;
        warn!("control: upload cut short ({copied} of {size} bytes)");
        return Err(std::io::Error::other(format!(
            "upload cut short: {copied} of {size} bytes"
        )));
    }
    file.sync_all().await?;
    Ok(path)
}
