//! The job source against a real HTTP/1.1 server on 127.0.0.1
//! (`source_http/server.rs`). This file: the queue (statuses, bad bodies,
//! refused and silent servers, auth, TLS, the poller) and shared helpers;
//! `source_http/models.rs`: downloads (stalls, early closes, huge lengths,
//! unsafe URLs, content checks) and `retry_download`; `source_http/spool.rs`:
//! spool file safety, checksums and rotated secrets (issue 13).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "source_http/models.rs"]
mod models;
#[path = "source_http/server.rs"]
mod server;
#[path = "source_http/spool.rs"]
mod spool;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use printgate::backoff::Backoff;
use printgate::source::{Auth, QueueClient, QueueSettings, SourceError};
use server::{End, Reply, Server};

// ---------------------------------------------------------------- helpers

/// A fresh spool folder under cargo's per-target temp dir, removed on drop.
struct Spool(PathBuf);

impl Spool {
    fn new(name: &str) -> Spool {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("source-http-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Spool(dir)
    }
    /// File names in the folder (empty if it does not exist).
    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn settings(base: &str, spool: &Spool) -> QueueSettings {
    let _ = rustls::crypto::ring::default_provider().install_default();
    QueueSettings {
        base_url: base.to_owned(),
        auth: Auth::None,
        ca_pem: None,
        allowed_hosts: Vec::new(),
        max_model_bytes: 4 * 1024 * 1024,
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(10),
        total_timeout: Duration::from_secs(60),
        spool_dir: spool.0.clone(),
        require_checksum: false,
    }
}

fn client(server: &Server, spool: &Spool) -> QueueClient {
    QueueClient::new(settings(&server.url(), spool)).unwrap()
}

fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(5), 0.2, 1)
}

/// Valid G-code of at least `size` bytes.
fn gcode(size: usize) -> Vec<u8> {
    let mut out = b"; generated\nG28\nM104 S210\n".to_vec();
    let mut i = 0u64;
    while out.len() < size {
        out.extend(
            format!(
                "G1 X{}.{} Y{} E{}.5 ; move {i}\n",
                i % 200,
                i % 10,
                i % 180,
                i
            )
            .bytes(),
        );
        i += 1;
    }
    out
}

const JOB: &str = r#"{"id":"job-123","modelId":"model-456","assignedPrinterId":null,"priority":10,"status":"pending","submittedAt":"2025-06-15T08:30:00Z","updatedAt":"2025-06-15T08:30:00Z"}"#;

// ---------------------------------------------------------------- the queue

#[test]
fn fetch_job_returns_the_job_and_encodes_the_printer_id() {
    let server = Server::start(vec![
        Reply::new(200, JOB).header("Content-Type", "application/json")
    ]);
    let spool = Spool::new("fetch-200");
    let client = QueueClient::new(settings(&format!("{}/api", server.url()), &spool)).unwrap();
    let job = client.fetch_job("printer 1/a").unwrap().unwrap();
    assert_eq!(
        (job.id.as_str(), job.model_id.as_str(), job.priority),
        ("job-123", "model-456", 10)
    );
    assert_eq!(job.model_url(), "models/model-456.gcode");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].line,
        "GET /api/prioritary_job?printerId=printer%201%2Fa HTTP/1.1"
    );
    assert_eq!(reqs[0].header("authorization"), None);
}

#[test]
fn no_content_not_found_and_null_mean_no_job() {
    let server = Server::start(vec![
        Reply::new(204, ""),
        Reply::new(404, "no job"),
        Reply::new(200, "null"),
    ]);
    let spool = Spool::new("fetch-none");
    let client = client(&server, &spool);
    for _ in 0..3 {
        assert!(client.fetch_job("p1").unwrap().is_none());
    }
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn server_error_is_retryable() {
    let server = Server::start(vec![Reply::new(500, "boom")]);
    let spool = Spool::new("fetch-500");
    let err = client(&server, &spool).fetch_job("p1").unwrap_err();
    assert!(
        matches!(err, SourceError::Http { status: 500, .. }),
        "{err}"
    );
    assert!(err.is_retryable());
}

#[test]
fn html_and_half_json_are_bad_bodies() {
    let server = Server::start(vec![
        Reply::new(200, "<html><body>502 Bad Gateway</body></html>"),
        Reply::new(200, r#"{"id":"job-1","modelId":"m"#),
    ]);
    let spool = Spool::new("fetch-bad");
    let client = client(&server, &spool);
    let html = client.fetch_job("p1").unwrap_err();
    assert!(
        matches!(html, SourceError::BadBody { .. }) && html.is_retryable(),
        "{html}"
    );
    assert!(html.to_string().contains("<html>"), "{html}");
    let half = client.fetch_job("p1").unwrap_err();
    assert!(
        matches!(half, SourceError::BadBody { .. }) && half.is_retryable(),
        "{half}"
    );
}

#[test]
fn refused_connection_is_retryable_transport() {
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = dead.local_addr().unwrap();
    drop(dead);
    let spool = Spool::new("refused");
    let client = QueueClient::new(settings(&format!("http://{addr}"), &spool)).unwrap();
    let err = client.fetch_job("p1").unwrap_err();
    assert!(matches!(err, SourceError::Transport { .. }), "{err}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[test]
fn bearer_and_basic_credentials_reach_the_queue() {
    let server = Server::start(vec![Reply::new(204, "")]);
    let spool = Spool::new("auth");
    let mut s = settings(&server.url(), &spool);
    s.auth = Auth::Bearer("tok-42".into());
    QueueClient::new(s.clone())
        .unwrap()
        .fetch_job("p1")
        .unwrap();
    s.auth = Auth::Basic {
        user: "farm".into(),
        password: "s3cret".into(),
    };
    QueueClient::new(s).unwrap().fetch_job("p1").unwrap();
    let reqs = server.requests();
    assert_eq!(reqs[0].header("authorization"), Some("Bearer tok-42"));
    assert_eq!(
        reqs[1].header("authorization"),
        Some("Basic ZmFybTpzM2NyZXQ=")
    ); // farm:s3cret
}

#[test]
fn tls_with_the_configured_ca() {
    let server = Server::start_tls(vec![Reply::new(200, JOB)]);
    let spool = Spool::new("tls");
    let base = format!("https://{}", server.addr);
    let mut s = settings(&base, &spool);
    s.ca_pem = Some(include_bytes!("testdata/ca.pem").to_vec());
    let job = QueueClient::new(s)
        .unwrap()
        .fetch_job("p1")
        .unwrap()
        .unwrap();
    assert_eq!(job.id, "job-123");

    // The web PKI roots do not know the test CA.
    let err = QueueClient::new(settings(&base, &spool))
        .unwrap()
        .fetch_job("p1")
        .unwrap_err();
    assert!(matches!(err, SourceError::Transport { .. }), "{err}");
}

#[test]
fn bad_settings_are_config_errors() {
    let spool = Spool::new("bad-settings");
    let mut s = settings("http://127.0.0.1:1", &spool);
    s.ca_pem = Some(b"not a pem".to_vec());
    assert!(matches!(QueueClient::new(s), Err(SourceError::Config(_))));
    let mut s = settings("http://127.0.0.1:1", &spool);
    s.read_timeout = Duration::ZERO;
    assert!(matches!(QueueClient::new(s), Err(SourceError::Config(_))));
    let err = QueueClient::new(settings("queue.farm/api", &spool)).unwrap_err();
    assert!(
        matches!(err, SourceError::Config(_)) && !err.is_retryable(),
        "{err}"
    );
}

#[test]
fn a_server_that_never_answers_times_out() {
    let server = Server::start(vec![Reply::new(200, JOB).end(End::Silent)]);
    let spool = Spool::new("silent");
    let mut s = settings(&server.url(), &spool);
    s.read_timeout = Duration::from_millis(300);
    let err = QueueClient::new(s).unwrap().fetch_job("p1").unwrap_err();
    assert!(matches!(err, SourceError::Timeout { .. }), "{err}");
    assert!(err.is_retryable());
}
