//! Model downloads and their retries, against the scripted server.

use std::time::Duration;

use printgate::source::{retry_download, Auth, QueueClient, SourceError};

use super::server::{End, Reply, Server};
use super::{backoff, client, gcode, settings, Spool};

// ---------------------------------------------------------------- models

#[test]
fn a_one_megabyte_model_is_downloaded_checked_and_renamed() {
    let model = gcode(1024 * 1024);
    let server = Server::start(vec![Reply::new(200, model.clone())]);
    let spool = Spool::new("download-1mb");
    let got = client(&server, &spool)
        .download_model("models/model-456.gcode", "job-123", None)
        .unwrap();
    assert_eq!(got.bytes, model.len() as u64);
    assert_eq!(
        got.lines,
        model.iter().filter(|b| **b == b'\n').count() as u64
    );
    assert_eq!(got.path, spool.0.join("job-123.gcode"));
    assert_eq!(std::fs::read(&got.path).unwrap(), model);
    assert_eq!(spool.files(), vec!["job-123.gcode"]);
    assert_eq!(
        server.requests()[0].line,
        "GET /models/model-456.gcode HTTP/1.1"
    );
}

#[test]
fn a_stalled_body_times_out_and_leaves_nothing() {
    let model = gcode(64 * 1024);
    let server = Server::start(vec![Reply::new(200, model).end(End::StallAfter(20_000))]);
    let spool = Spool::new("stall");
    let mut s = settings(&server.url(), &spool);
    s.read_timeout = Duration::from_millis(300);
    let err = QueueClient::new(s)
        .unwrap()
        .download_model("models/m.gcode", "job-1", None)
        .unwrap_err();
    assert!(
        matches!(err, SourceError::Timeout { what: "read", .. }),
        "{err}"
    );
    assert!(err.is_retryable());
    assert!(spool.files().is_empty(), "{:?}", spool.files());
}

#[test]
fn chunked_models_download_and_a_cut_chunked_body_is_truncated() {
    let model = gcode(30_000);
    let mut chunked = Vec::new();
    for piece in model.chunks(7_000) {
        chunked.extend(format!("{:x}\r\n", piece.len()).bytes());
        chunked.extend(piece);
        chunked.extend(b"\r\n");
    }
    chunked.extend(b"0\r\n\r\n");
    let cut = chunked.len() / 2;
    let reply = Reply::new(200, chunked)
        .content_length(None)
        .header("Transfer-Encoding", "chunked");
    let server = Server::start(vec![reply.clone(), reply.end(End::CloseAfter(cut))]);
    let spool = Spool::new("chunked");
    let client = client(&server, &spool);
    let got = client
        .download_model("models/m.gcode", "job-1", None)
        .unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), model);
    let err = client
        .download_model("models/m.gcode", "job-2", None)
        .unwrap_err();
    assert!(
        matches!(err, SourceError::Truncated { expected: None, .. }),
        "{err}"
    );
    assert_eq!(spool.files(), vec!["job-1.gcode"]);
}

#[test]
fn a_body_cut_before_its_content_length_is_truncated() {
    let model = gcode(100_000);
    let server = Server::start(vec![
        Reply::new(200, model.clone()).end(End::CloseAfter(40_000))
    ]);
    let spool = Spool::new("truncated");
    let err = client(&server, &spool)
        .download_model("models/m.gcode", "job-1", None)
        .unwrap_err();
    match &err {
        SourceError::Truncated { expected, got, .. } => {
            assert_eq!(*expected, Some(model.len() as u64));
            assert!(*got <= 40_000, "{err}");
        }
        other => panic!("expected Truncated, got {other}"),
    }
    assert!(err.is_retryable());
    assert!(spool.files().is_empty());
}

#[test]
fn a_huge_content_length_is_refused_unread() {
    let server = Server::start(vec![Reply::new(200, gcode(1000))
        .content_length(Some(2_147_483_648))
        .end(End::StallAfter(1000))]);
    let spool = Spool::new("too-large");
    let err = client(&server, &spool)
        .download_model("models/m.gcode", "job-1", None)
        .unwrap_err();
    assert!(
        matches!(
            err,
            SourceError::TooLarge {
                announced: Some(2_147_483_648),
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert!(spool.files().is_empty());
}

#[test]
fn a_body_without_length_stops_at_the_limit() {
    let server = Server::start(vec![Reply::new(200, gcode(50_000)).content_length(None)]);
    let spool = Spool::new("no-length");
    let mut s = settings(&server.url(), &spool);
    s.max_model_bytes = 10_000;
    let err = QueueClient::new(s)
        .unwrap()
        .download_model("models/m.gcode", "job-1", None)
        .unwrap_err();
    assert!(
        matches!(
            err,
            SourceError::TooLarge {
                limit: 10_000,
                announced: None,
                ..
            }
        ),
        "{err}"
    );
    assert!(spool.files().is_empty());
}

#[test]
fn unsafe_model_urls_make_no_request() {
    let server = Server::start(vec![Reply::new(200, gcode(100))]);
    let spool = Spool::new("unsafe");
    let client = client(&server, &spool);
    for url in [
        "../../etc/passwd",
        "%2e%2e/",
        "models/%2e%2e/x",
        "file:///etc/passwd",
        "//evil.com/x",
    ] {
        let err = client.download_model(url, "job-1", None).unwrap_err();
        assert!(
            matches!(err, SourceError::UnsafeModelUrl { .. }),
            "{url}: {err}"
        );
        assert!(!err.is_retryable());
    }
    assert_eq!(server.requests().len(), 0);
}

#[test]
fn credentials_stay_home_when_the_model_is_elsewhere() {
    let queue = Server::start(vec![Reply::new(204, "")]);
    let files = Server::start(vec![Reply::new(200, gcode(100))]);
    let spool = Spool::new("foreign-host");
    let mut s = settings(&queue.url(), &spool);
    s.auth = Auth::Bearer("tok".into());
    s.allowed_hosts = vec![files.addr.to_string()];
    let got = QueueClient::new(s)
        .unwrap()
        .download_model(&format!("{}/x.gcode", files.url()), "j", None)
        .unwrap();
    assert!(got.bytes >= 100);
    assert_eq!(files.requests()[0].header("authorization"), None);
}

#[test]
fn a_redirect_is_not_followed() {
    let server = Server::start(vec![Reply::new(302, "").header("Location", "/etc/passwd")]);
    let spool = Spool::new("redirect");
    let err = client(&server, &spool)
        .download_model("models/m.gcode", "job-1", None)
        .unwrap_err();
    assert!(
        matches!(err, SourceError::Http { status: 302, .. }),
        "{err}"
    );
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_binary_model_is_not_gcode() {
    let mut model = b"G28\n".to_vec();
    model.extend((0..=255u8).cycle().take(10_000));
    let server = Server::start(vec![Reply::new(200, model)]);
    let spool = Spool::new("binary");
    let err = client(&server, &spool)
        .download_model("models/m.gcode", "job-1", None)
        .unwrap_err();
    assert!(matches!(err, SourceError::NotGcode { .. }), "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("line 2"), "{err}");
    assert!(spool.files().is_empty());
}

#[test]
fn a_long_command_is_not_gcode_and_names_its_line() {
    let mut model = gcode(5_000);
    let line = model.iter().filter(|b| **b == b'\n').count() + 1;
    model.extend(b"M117 ");
    model.extend(std::iter::repeat_n(b'X', 195));
    model.extend(b"\nG28\n");
    let server = Server::start(vec![Reply::new(200, model)]);
    let spool = Spool::new("long-command");
    let err = client(&server, &spool)
        .download_model("models/m.gcode", "job-1", None)
        .unwrap_err();
    assert!(matches!(err, SourceError::NotGcode { .. }), "{err}");
    assert!(err.to_string().contains(&format!("line {line}:")), "{err}");
    assert!(spool.files().is_empty());
}

// ---------------------------------------------------------------- retries

#[test]
fn retry_download_survives_two_server_errors() {
    let model = gcode(10_000);
    let server = Server::start(vec![
        Reply::new(500, ""),
        Reply::new(500, ""),
        Reply::new(200, model.clone()),
    ]);
    let spool = Spool::new("retry-ok");
    let mut slept = Vec::new();
    let got = retry_download(
        &client(&server, &spool),
        "models/m.gcode",
        "job-9",
        None,
        5,
        &mut backoff(),
        |e, d| slept.push((e.to_string(), d)),
    )
    .unwrap();
    assert_eq!(got.bytes, model.len() as u64);
    assert_eq!(slept.len(), 2);
    assert!(
        slept.iter().all(|(e, _)| e.ends_with("http status 500")),
        "{slept:?}"
    );
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn retry_download_gives_up_after_max_retries() {
    let server = Server::start(vec![Reply::new(503, "")]);
    let spool = Spool::new("retry-give-up");
    let mut slept = 0;
    let err = retry_download(
        &client(&server, &spool),
        "models/m.gcode",
        "job-9",
        None,
        3,
        &mut backoff(),
        |_, _| slept += 1,
    )
    .unwrap_err();
    assert!(
        matches!(err, SourceError::Http { status: 503, .. }),
        "{err}"
    );
    assert_eq!(slept, 3);
    assert_eq!(server.requests().len(), 4);
    assert!(spool.files().is_empty());
}

#[test]
fn retry_download_stops_at_once_on_not_found() {
    let server = Server::start(vec![Reply::new(404, "")]);
    let spool = Spool::new("retry-404");
    let mut slept = 0;
    let err = retry_download(
        &client(&server, &spool),
        "models/m.gcode",
        "job-9",
        None,
        5,
        &mut backoff(),
        |_, _| slept += 1,
    )
    .unwrap_err();
    assert!(
        matches!(err, SourceError::Http { status: 404, .. }),
        "{err}"
    );
    assert_eq!((slept, server.requests().len()), (0, 1));
}
