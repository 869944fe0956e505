//! The demo's queue manager: a tiny HTTP/1.1 server on 127.0.0.1 that plays
//! the farm's queue manager (`farm-protocol.md`) with built-in sample jobs.
//!
//! - `GET /prioritary_job?printerId=<id>` → `200` with the most urgent
//!   pending job (highest priority, then oldest), handed out once; `204`
//!   when none is left.
//! - `GET /models/<modelId>.gcode` → the model's G-code, generated at start
//!   with [`crate::bench::sample_job`] behind a heat-up prologue.
//!
//! One request per connection (`Connection: close`), handled on the accept
//! thread with read and write time-outs: the only client is the gateway in
//! the same process. Request paths are looked up in a table of known model
//! ids, never joined to a file path.

use crate::mqtt::payload::rfc3339;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// The built-in models: id and number of moves (a few hundred to a couple
/// of thousand lines each).
const MODELS: [(&str, usize); 6] = [
    ("phone-stand", 900),
    ("cable-clip", 300),
    ("gear-32t", 1300),
    ("calibration-cube", 500),
    ("vase-small", 2000),
    ("hinge-box", 1600),
];
/// Job priorities, cycled beside the models (higher = more urgent).
const PRIORITIES: [i64; 4] = [5, 10, 1, 8];
/// What every sample job asks for (the prologue heats to these).
const NOZZLE_TEMP: u32 = 210;
const BED_TEMP: u32 = 60;
/// Largest request head read before answering.
const MAX_HEAD: usize = 8 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// One job waiting to be handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SampleJob {
    id: String,
    model: &'static str,
    priority: i64,
}

/// The queue: pending jobs, who got which, and the model files.
#[derive(Debug)]
struct Queue {
    pending: Vec<SampleJob>,
    created: Vec<String>,
    handed_out: Vec<(String, String)>,
    models: BTreeMap<&'static str, PathBuf>,
    batch: usize,
    /// `--forever`: a new batch arrives whenever the queue runs dry.
    refill: bool,
    submitted_at: String,
}

impl Queue {
    fn add_batch(&mut self) {
        let next = self.created.len();
        let batch = MODELS.iter().cycle().zip(PRIORITIES.iter().cycle());
        for (n, ((model, _), priority)) in batch.take(self.batch).enumerate() {
            let id = format!("job-{}", next + n + 1);
            self.created.push(id.clone());
            self.pending.push(SampleJob {
                id,
                model,
                priority: *priority,
            });
        }
    }

    /// Hands out the most urgent job (highest priority, then oldest).
    fn take(&mut self, printer: &str) -> Option<SampleJob> {
        if self.pending.is_empty() && self.refill {
            self.add_batch();
        }
        let best = self
            .pending
            .iter()
            .enumerate()
            .max_by_key(|(i, j)| (j.priority, std::cmp::Reverse(*i)))
            .map(|(i, _)| i)?;
        let job = self.pending.remove(best);
        self.handed_out.push((job.id.clone(), printer.to_owned()));
        Some(job)
    }
}

/// A running queue manager; [`QueueManager::stop`] (or drop) ends it.
pub struct QueueManager {
    addr: SocketAddr,
    queue: Arc<Mutex<Queue>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl QueueManager {
    /// Writes the models into `dir`, queues `jobs` sample jobs and starts
    /// serving on a free port of 127.0.0.1.
    pub fn start(dir: &Path, jobs: usize, refill: bool) -> std::io::Result<QueueManager> {
        let mut models = BTreeMap::new();
        for (model, moves) in MODELS.iter().take(jobs.max(1)) {
            models.insert(*model, write_model(dir, model, *moves)?);
        }
        let mut queue = Queue {
            pending: Vec::new(),
            created: Vec::new(),
            handed_out: Vec::new(),
            models,
            batch: jobs,
            refill,
            submitted_at: rfc3339(SystemTime::now()),
        };
        queue.add_batch();
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let queue = Arc::new(Mutex::new(queue));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (queue, stop) = (Arc::clone(&queue), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("demo-queue-manager".into())
                .spawn(move || serve(&listener, &queue, &stop))?
        };
        Ok(QueueManager {
            addr,
            queue,
            stop,
            thread: Some(thread),
        })
    }

    /// The base URL for `[queue_manager] url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Ids of every job created so far (all of them, without `--forever`).
    pub fn created(&self) -> Vec<String> {
        lock(&self.queue).created.clone()
    }

    /// Jobs not handed out yet.
    pub fn pending(&self) -> usize {
        lock(&self.queue).pending.len()
    }

    /// (job, printer) in the order the jobs were handed out.
    pub fn handed_out(&self) -> Vec<(String, String)> {
        lock(&self.queue).handed_out.clone()
    }

    /// Stops accepting and joins the server thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept; it sees the flag and returns.
        let _ = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for QueueManager {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A poisoned lock only means another thread panicked mid-update of plain
/// data; the queue is still usable for a demo.
fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(|e| e.into_inner())
}

/// `M190`/`M109` before the slicer-like body, so the printers heat up on
/// screen like real ones.
fn write_model(dir: &Path, model: &str, moves: usize) -> std::io::Result<PathBuf> {
    let body = crate::bench::sample_job(dir, &format!("{model}.body"), moves)?;
    let text = std::fs::read_to_string(&body)?;
    std::fs::remove_file(&body)?;
    let path = dir.join(format!("{model}.gcode"));
    let prologue = format!(
        "; model {model}\nM140 S{BED_TEMP}\nM104 S{NOZZLE_TEMP}\nM190 S{BED_TEMP}\nM109 S{NOZZLE_TEMP}\n"
    );
    std::fs::write(&path, prologue + &text)?;
    Ok(path)
}

/// The accept loop: one request per connection, until `stop` is set.
fn serve(listener: &TcpListener, queue: &Mutex<Queue>, stop: &AtomicBool) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match conn {
            Ok(stream) => {
                if let Err(e) = answer(stream, queue) {
                    log::debug!("demo queue manager: {e}");
                }
            }
            Err(e) => {
                log::warn!("demo queue manager: accept failed: {e}");
                // Out of descriptors, typically: do not spin on it.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn answer(mut stream: TcpStream, queue: &Mutex<Queue>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let response = respond(&head, queue);
    stream.write_all(&response)?;
    stream.flush()
}

/// Reads up to the blank line that ends the request head (bounded).
fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Err(std::io::Error::other("request head too large"));
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// The whole response (status line, headers, body) for one request head.
fn respond(head: &str, queue: &Mutex<Queue>) -> Vec<u8> {
    let mut words = head.lines().next().unwrap_or_default().split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if method != "GET" {
        return response(405, "Method Not Allowed", "text/plain", b"GET only\n");
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path == "/prioritary_job" {
        let printer = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("printerId="))
            .unwrap_or("");
        let mut queue = lock(queue);
        return match queue.take(printer) {
            Some(job) => {
                let body = job_json(&job, &queue.submitted_at);
                response(200, "OK", "application/json", body.as_bytes())
            }
            None => response(204, "No Content", "", b""),
        };
    }
    let model = path
        .strip_prefix("/models/")
        .and_then(|rest| rest.strip_suffix(".gcode"));
    let file = model.and_then(|m| lock(queue).models.get(m).cloned());
    match file.map(std::fs::read) {
        Some(Ok(bytes)) => response(200, "OK", "text/x-gcode", &bytes),
        Some(Err(e)) => response(
            500,
            "Internal Server Error",
            "text/plain",
            e.to_string().as_bytes(),
        ),
        None => response(404, "Not Found", "text/plain", b"no such resource\n"),
    }
}

/// The seed's job object, plus the filament and slicer parameters.
fn job_json(job: &SampleJob, submitted_at: &str) -> String {
    json!({
        "id": job.id,
        "modelId": job.model,
        "assignedPrinterId": null,
        "priority": job.priority,
        "status": "pending",
        "submittedAt": submitted_at,
        "updatedAt": submitted_at,
        "filamentType": "PLA",
        "parameters": {
            "layerHeight": 0.2, "infill": 20, "nozzleTemp": NOZZLE_TEMP, "bedTemp": BED_TEMP,
        },
    })
    .to_string()
}

fn response(status: u16, reason: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {reason}\r\nConnection: close\r\n");
    if status != 204 {
        out.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::TempDir;
    use crate::source::QueueJob;

    fn get(qm: &QueueManager, path: &str) -> (String, Vec<u8>) {
        let mut s = TcpStream::connect(qm.addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let at = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&out[..at]).into_owned();
        (head, out[at + 4..].to_vec())
    }

    #[test]
    fn hands_out_each_job_once_most_urgent_first_then_204() {
        let dir = TempDir::new("demo-qm").unwrap();
        let qm = QueueManager::start(dir.path(), 4, false).unwrap();
        let mut seen = Vec::new();
        for _ in 0..4 {
            let (head, body) = get(&qm, "/prioritary_job?printerId=p1");
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let job = QueueJob::from_body(&body).unwrap().unwrap();
            let (_, model) = get(&qm, &format!("/{}", job.model_url()));
            assert!(String::from_utf8_lossy(&model).contains("M109 S210"));
            seen.push((job.priority, job.id));
        }
        assert_eq!(
            seen,
            [(10, "job-2"), (8, "job-4"), (5, "job-1"), (1, "job-3")]
                .map(|(p, id)| (p, id.to_owned()))
        );
        let (head, body) = get(&qm, "/prioritary_job?printerId=p1");
        assert!(head.starts_with("HTTP/1.1 204"), "{head}");
        assert!(body.is_empty());
        assert_eq!(qm.pending(), 0);
        assert_eq!(qm.handed_out().len(), 4);
        qm.stop();
    }

    #[test]
    fn unknown_paths_and_traversal_are_404() {
        let dir = TempDir::new("demo-qm-404").unwrap();
        let qm = QueueManager::start(dir.path(), 1, false).unwrap();
        for path in ["/models/../x.gcode", "/models/gear-32t.gcode", "/nope"] {
            let (head, _) = get(&qm, path);
            assert!(head.starts_with("HTTP/1.1 404"), "{path}: {head}");
        }
    }

    #[test]
    fn forever_refills_when_dry() {
        let dir = TempDir::new("demo-qm-refill").unwrap();
        let qm = QueueManager::start(dir.path(), 2, true).unwrap();
        for _ in 0..5 {
            let (head, _) = get(&qm, "/prioritary_job?printerId=p1");
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        }
        assert_eq!(qm.created().len(), 6);
    }
}
