//! The scripted HTTP/1.1 (and HTTPS) server of `tests/source_http.rs`: a
//! thread on 127.0.0.1:0 that answers each connection with the next scripted
//! reply (status, headers, body, then close, cut short or stall) and records
//! every request it read. One request per connection (`Connection: close`),
//! so counting recorded requests counts what the client sent.
//!
//! [`Server::start_routed`] serves replies chosen by a handler from each
//! request instead, one thread per connection (a stalled reply does not hold
//! up the others): `tests/queue_e2e.rs` builds its queue manager on it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a reply ends after its headers.
#[derive(Clone, Copy)]
pub enum End {
    /// The whole body, then close.
    Full,
    /// The first n body bytes, then close (before Content-Length is reached).
    CloseAfter(usize),
    /// The first n body bytes, then hold the connection until the server drops.
    StallAfter(usize),
    /// Nothing at all, not even the status line, until the server drops.
    Silent,
}

#[derive(Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    content_length: Option<u64>,
    end: End,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        let body = body.into();
        Reply {
            status,
            headers: Vec::new(),
            content_length: Some(body.len() as u64),
            body,
            end: End::Full,
        }
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    pub fn content_length(mut self, n: Option<u64>) -> Self {
        self.content_length = n;
        self
    }
    pub fn end(mut self, end: End) -> Self {
        self.end = end;
        self
    }
}

#[derive(Clone, Debug)]
pub struct Request {
    pub line: String,
    pub headers: Vec<(String, String)>,
    /// When its head had been read.
    pub at: Instant,
}

impl Request {
    /// The request target without its query: `/models/m.gcode`.
    pub fn path(&self) -> &str {
        let target = self.line.split(' ').nth(1).unwrap_or("");
        target.split('?').next().unwrap_or("")
    }
    /// The value of `name` in the query string, undecoded.
    pub fn query(&self, name: &str) -> Option<&str> {
        let target = self.line.split(' ').nth(1)?;
        let (_, query) = target.split_once('?')?;
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Chooses the reply to each request (routed mode).
pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// Held replies (stalls, silence) wait on this until the server drops.
#[derive(Default)]
struct Release {
    done: Mutex<bool>,
    cond: Condvar,
}

impl Release {
    /// Waits until released, at most `limit`.
    fn wait(&self, limit: Duration) {
        let guard = self.done.lock().unwrap();
        let _ = self.cond.wait_timeout_while(guard, limit, |done| !*done);
    }
    fn release(&self) {
        *self.done.lock().unwrap() = true;
        self.cond.notify_all();
    }
}

/// Scripted: replies are served in order and the last one repeats.
/// Routed: a handler picks each reply.
pub struct Server {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    release: Arc<Release>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(script: Vec<Reply>) -> Server {
        Server::start_with(script, None)
    }

    /// The same over TLS, with the test certificate for 127.0.0.1.
    pub fn start_tls(script: Vec<Reply>) -> Server {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certs = CertificateDer::pem_slice_iter(include_bytes!("../testdata/server.pem"))
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(include_bytes!("../testdata/server.key")).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Server::start_with(script, Some(Arc::new(config)))
    }

    fn start_with(script: Vec<Reply>, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Server::spawn(listener, move |stream, served, log, release| {
            let reply = script.get(served).or(script.last()).cloned().unwrap();
            match &tls {
                None => exchange(stream, |_| reply, log, release),
                Some(config) => {
                    let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                        return;
                    };
                    let tls = rustls::StreamOwned::new(conn, stream);
                    exchange(tls, |_| reply, log, release);
                }
            }
        })
    }

    /// Plain HTTP on `addr` (`127.0.0.1:0` for any port; a port used before
    /// restarts a server there), each reply chosen by `handler` and served on
    /// its own thread.
    pub fn start_routed(addr: SocketAddr, handler: Handler) -> Server {
        let listener = TcpListener::bind(addr).unwrap();
        Server::spawn(listener, move |stream, _, log, release| {
            let (handler, log, release) = (handler.clone(), log.clone(), release.clone());
            std::thread::spawn(move || exchange(stream, |r| handler(r), &log, &release));
        })
    }

    /// Accepts connections until dropped; `serve` gets each one with the
    /// count of earlier connections.
    fn spawn(
        listener: TcpListener,
        mut serve: impl FnMut(TcpStream, usize, &Arc<Mutex<Vec<Request>>>, &Arc<Release>)
            + Send
            + 'static,
    ) -> Server {
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let release = Arc::new(Release::default());
        let (log, stop2, release2) = (requests.clone(), stop.clone(), release.clone());
        let thread = std::thread::spawn(move || {
            for (served, stream) in listener.incoming().enumerate() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                serve(stream, served, &log, &release2);
            }
        });
        Server {
            addr,
            requests,
            stop,
            release,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.release.release(); // wakes stalled replies
        let _ = TcpStream::connect(self.addr); // wakes accept()
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request, records it, answers with `reply(request)`.
fn exchange(
    mut stream: impl Read + Write,
    reply: impl FnOnce(&Request) -> Reply,
    log: &Mutex<Vec<Request>>,
    release: &Release,
) {
    if let Some(request) = read_request(&mut stream) {
        log.lock().unwrap().push(request.clone());
        serve(stream, &reply(&request), release);
    }
}

fn read_request(stream: &mut impl Read) -> Option<Request> {
    // GET requests have no body, so reading ahead past the headers loses nothing.
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 || h == "\r\n" || headers.len() > 100 {
            break;
        }
        if let Some((n, v)) = h.trim_end().split_once(':') {
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
    }
    (!line.is_empty()).then(|| Request {
        line: line.trim_end().to_owned(),
        headers,
        at: Instant::now(),
    })
}

fn serve(mut stream: impl Write, reply: &Reply, release: &Release) {
    if let End::Silent = reply.end {
        release.wait(Duration::from_secs(30));
        return;
    }
    let mut head = format!(
        "HTTP/1.1 {} Scripted\r\nConnection: close\r\n",
        reply.status
    );
    if let Some(n) = reply.content_length {
        head.push_str(&format!("Content-Length: {n}\r\n"));
    }
    for (n, v) in &reply.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let body = match reply.end {
        End::Full | End::Silent => &reply.body[..],
        End::CloseAfter(n) | End::StallAfter(n) => &reply.body[..n.min(reply.body.len())],
    };
    // The client may hang up first (TooLarge, Timeout): write errors are fine.
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|_| stream.write_all(body));
    let _ = stream.flush();
    if let End::StallAfter(_) = reply.end {
        // Until the test drops the server (bounded, in case it never does).
        release.wait(Duration::from_secs(30));
    }
}
