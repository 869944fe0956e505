//! Opening a serial port, with errors an operator can act on.

use std::path::{Path, PathBuf};
use tokio_serial::{SerialPortBuilderExt, SerialStream};

#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    #[error("serial port {port} does not exist (is the printer plugged in and powered? see ls -l /dev/serial/by-id/)")]
    NotFound { port: PathBuf },
    #[error("no permission to open {port} (add the user to the 'dialout' group)")]
    PermissionDenied { port: PathBuf },
    #[error(
        "serial port {port} is in use by another program (OctoPrint, a second printgate, screen?)"
    )]
    Busy { port: PathBuf },
    #[error("serial port {port}: {detail}")]
    Open { port: PathBuf, detail: String },
    #[error("serial port {port} disconnected")]
    Disconnected { port: PathBuf },
    #[error("serial port {port}: {source}")]
    Io {
        port: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Opens `path` (a device, a `/dev/serial/by-id/` link or a pseudo-terminal
/// link) raw at `baud`, locked against a second opener.
pub fn open(path: &Path, baud: u32) -> Result<SerialStream, SerialError> {
    let port = path.to_path_buf();
    if !path.exists() {
        return Err(SerialError::NotFound { port });
    }
    let name = path.to_string_lossy().into_owned();
    tokio_serial::new(name, baud)
        .timeout(std::time::Duration::from_millis(100))
        .open_native_async()
        .map_err(|e| classify(port, e))
}

fn classify(port: PathBuf, e: tokio_serial::Error) -> SerialError {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    match e.kind() {
        tokio_serial::ErrorKind::NoDevice => SerialError::NotFound { port },
        tokio_serial::ErrorKind::Io(std::io::ErrorKind::NotFound) => SerialError::NotFound { port },
        tokio_serial::ErrorKind::Io(std::io::ErrorKind::PermissionDenied) => {
            SerialError::PermissionDenied { port }
        }
        _ if lower.contains("permission denied") => SerialError::PermissionDenied { port },
        _ if lower.contains("exclusive") || lower.contains("busy") => SerialError::Busy { port },
        _ => SerialError::Open { port, detail: text },
    }
}
