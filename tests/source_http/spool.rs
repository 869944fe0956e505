//! Issue 13, source side: spool files that cannot collide, be redirected
//! or be replaced, the start-up clean-up of `.part` files, models verified
//! by SHA-256 before they get their name, and secrets read per request.

use printgate::source::checksum::{hex, sha256};
use printgate::source::{
    clean_partial_files, retry_download, spool_name, Auth, QueueClient, SourceError,
    CHECKSUM_HEADER,
};

use super::server::{Reply, Server};
use super::{backoff, client, settings, Spool};

const MODEL: &[u8] = b"G28\nG1 X10 Y10 F3000\nM84\n";

/// A spool folder that exists already (for planting files in it).
fn made(name: &str) -> Spool {
    let spool = Spool::new(name);
    std::fs::create_dir_all(&spool.0).unwrap();
    spool
}

// ------------------------------------------------------------ spool files

#[test]
fn r13_two_ids_that_sanitise_alike_keep_separate_files() {
    let server = Server::start(vec![Reply::new(200, "G28\n"), Reply::new(200, "G1 X1\n")]);
    let spool = made("alike");
    let c = client(&server, &spool);
    let a = c
        .download_model("models/a.gcode", &spool_name("job.42"), None)
        .unwrap();
    let b = c
        .download_model("models/b.gcode", &spool_name("job_42-7302453c"), None)
        .unwrap();
    assert_ne!(a.path, b.path);
    assert_eq!(std::fs::read(&a.path).unwrap(), b"G28\n");
    assert_eq!(std::fs::read(&b.path).unwrap(), b"G1 X1\n");
}

#[test]
fn r13_a_symlinked_part_file_is_not_followed() {
    let server = Server::start(vec![Reply::new(200, "G28\n")]);
    let spool = made("symlink");
    let victim = spool.0.join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, spool.0.join(".job-1.part")).unwrap();
    let err = client(&server, &spool)
        .download_model("models/a.gcode", "job-1", None)
        .unwrap_err();
    assert!(matches!(err, SourceError::Exists { .. }), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(!spool.0.join("job-1.gcode").exists());
}

#[test]
fn r13_an_existing_model_file_is_never_overwritten() {
    let server = Server::start(vec![Reply::new(200, "G28\n")]);
    let spool = made("existing");
    std::fs::write(spool.0.join("job-1.gcode"), "M84\n").unwrap();
    let err = client(&server, &spool)
        .download_model("models/a.gcode", "job-1", None)
        .unwrap_err();
    assert!(matches!(err, SourceError::Exists { .. }), "{err}");
    assert_eq!(
        std::fs::read_to_string(spool.0.join("job-1.gcode")).unwrap(),
        "M84\n"
    );
    // Refused before asking the server.
    assert_eq!(server.requests().len(), 0);
    // A symlink in its place is not written through either.
    let victim = spool.0.join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, spool.0.join("job-2.gcode")).unwrap();
    let err = client(&server, &spool)
        .download_model("models/a.gcode", "job-2", None)
        .unwrap_err();
    assert!(matches!(err, SourceError::Exists { .. }), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
}

#[test]
fn r13_empty_and_path_like_names_are_refused_without_a_request() {
    let server = Server::start(vec![Reply::new(200, "G28\n")]);
    let spool = made("names");
    let c = client(&server, &spool);
    for bad in ["", ".", "..", "../x", "a/b", "job.42", "a\0b"] {
        let err = c.download_model("models/a.gcode", bad, None).unwrap_err();
        assert!(matches!(err, SourceError::Config(_)), "{bad:?}: {err}");
    }
    assert_eq!(server.requests().len(), 0);
    assert!(spool.files().is_empty());
}

#[test]
fn clean_partial_files_removes_only_part_files_and_follows_no_link() {
    let spool = made("clean");
    let victim = spool.0.join("victim.gcode");
    std::fs::write(&victim, "G28\n").unwrap();
    std::fs::write(spool.0.join(".job-1.part"), "G2").unwrap();
    std::fs::write(spool.0.join(".upload-1.part"), "G").unwrap();
    std::os::unix::fs::symlink(&victim, spool.0.join(".evil.part")).unwrap();
    std::fs::write(spool.0.join("job-2.gcode"), "G28\n").unwrap();
    assert_eq!(clean_partial_files(&spool.0).unwrap(), 3);
    assert_eq!(spool.files(), vec!["job-2.gcode", "victim.gcode"]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "G28\n");
    assert_eq!(clean_partial_files(&spool.0.join("missing")).unwrap(), 0);
}

// ------------------------------------------------------------ checksums

#[test]
fn r13_a_model_whose_sha256_does_not_match_is_never_published() {
    let server = Server::start(vec![Reply::new(200, MODEL)]);
    let spool = made("mismatch");
    let wanted = hex(&sha256(b"the model the job named\n"));
    let err = client(&server, &spool)
        .download_model("models/a.gcode", "job-1", Some(&wanted))
        .unwrap_err();
    match &err {
        SourceError::ChecksumMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &wanted);
            assert_eq!(actual, &hex(&sha256(MODEL)));
        }
        other => panic!("expected ChecksumMismatch, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&wanted) && text.contains(&hex(&sha256(MODEL))),
        "{text}"
    );
    assert!(!err.is_retryable());
    assert!(spool.files().is_empty(), "{:?}", spool.files());
}

#[test]
fn a_matching_sha256_of_either_case_is_accepted_and_reported() {
    let server = Server::start(vec![Reply::new(200, MODEL)]);
    let spool = made("match");
    let want = hex(&sha256(MODEL)).to_uppercase();
    let got = client(&server, &spool)
        .download_model("models/a.gcode", "job-1", Some(&want))
        .unwrap();
    assert_eq!(got.sha256, want.to_lowercase());
    assert_eq!(std::fs::read(&got.path).unwrap(), MODEL);
}

#[test]
fn a_malformed_expected_sha256_fails_before_the_request() {
    let server = Server::start(vec![Reply::new(200, MODEL)]);
    let spool = made("malformed");
    let err = client(&server, &spool)
        .download_model("models/a.gcode", "job-1", Some("abc"))
        .unwrap_err();
    assert!(matches!(err, SourceError::Checksum { .. }), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(server.requests().len(), 0);
}

#[test]
fn the_checksum_header_is_verified() {
    let bad = hex(&sha256(b"other"));
    let good = hex(&sha256(MODEL));
    let server = Server::start(vec![
        Reply::new(200, MODEL).header(CHECKSUM_HEADER, &bad),
        Reply::new(200, MODEL).header(CHECKSUM_HEADER, &good),
    ]);
    let spool = made("header");
    let c = client(&server, &spool);
    let err = c
        .download_model("models/a.gcode", "job-1", None)
        .unwrap_err();
    assert!(matches!(err, SourceError::ChecksumMismatch { .. }), "{err}");
    assert!(spool.files().is_empty());
    c.download_model("models/a.gcode", "job-1", None).unwrap();
    assert_eq!(spool.files(), vec!["job-1.gcode"]);
}

#[test]
fn require_model_checksum_refuses_a_model_without_one() {
    let server = Server::start(vec![
        Reply::new(200, MODEL),
        Reply::new(200, MODEL).header(CHECKSUM_HEADER, &hex(&sha256(MODEL))),
        Reply::new(200, MODEL),
    ]);
    let spool = made("require");
    let mut s = settings(&server.url(), &spool);
    s.require_checksum = true;
    let c = QueueClient::new(s).unwrap();
    let err = c
        .download_model("models/a.gcode", "job-1", None)
        .unwrap_err();
    assert!(
        matches!(err, SourceError::Checksum { .. }) && !err.is_retryable(),
        "{err}"
    );
    assert!(err.to_string().contains("require_model_checksum"), "{err}");
    assert!(spool.files().is_empty());
    // The queue manager's own header is enough; so is the job's value.
    c.download_model("models/a.gcode", "job-2", None).unwrap();
    c.download_model("models/a.gcode", "job-3", Some(&hex(&sha256(MODEL))))
        .unwrap();
    assert_eq!(spool.files(), vec!["job-2.gcode", "job-3.gcode"]);
}

#[test]
fn a_header_from_another_host_does_not_satisfy_require_model_checksum() {
    let queue = Server::start(vec![]);
    let files = Server::start(vec![
        Reply::new(200, MODEL).header(CHECKSUM_HEADER, &hex(&sha256(MODEL)))
    ]);
    let spool = made("foreign-header");
    let mut s = settings(&queue.url(), &spool);
    s.require_checksum = true;
    s.allowed_hosts = vec![files.addr.to_string()];
    let err = QueueClient::new(s)
        .unwrap()
        .download_model(&format!("{}/x.gcode", files.url()), "job-1", None)
        .unwrap_err();
    assert!(matches!(err, SourceError::Checksum { .. }), "{err}");
}

#[test]
fn retry_download_does_not_retry_a_mismatch() {
    let server = Server::start(vec![Reply::new(200, MODEL)]);
    let spool = made("retry-mismatch");
    let mut slept = 0;
    let err = retry_download(
        &client(&server, &spool),
        "models/a.gcode",
        "job-1",
        Some(&hex(&sha256(b"x"))),
        5,
        &mut backoff(),
        |_, _| slept += 1,
    )
    .unwrap_err();
    assert!(matches!(err, SourceError::ChecksumMismatch { .. }), "{err}");
    assert_eq!((slept, server.requests().len()), (0, 1));
}

#[test]
fn a_rotated_token_file_is_read_for_every_request() {
    let server = Server::start(vec![Reply::new(204, ""), Reply::new(204, "")]);
    let spool = made("token-file");
    let token = spool.0.join("token");
    std::fs::write(&token, "first\n").unwrap();
    let mut s = settings(&server.url(), &spool);
    s.auth = Auth::Bearer(printgate::config::Secret::File(token.clone()));
    let c = QueueClient::new(s).unwrap();
    c.fetch_job("p1").unwrap();
    std::fs::write(&token, "second\n").unwrap();
    c.fetch_job("p1").unwrap();
    let reqs = server.requests();
    assert_eq!(reqs[0].header("authorization"), Some("Bearer first"));
    assert_eq!(reqs[1].header("authorization"), Some("Bearer second"));
    std::fs::remove_file(&token).unwrap();
    let err = c.fetch_job("p1").unwrap_err();
    assert!(matches!(err, SourceError::Config(_)), "{err}");
    assert!(!format!("{c:?}").contains("second"));
}
