//! The control socket as a local attacker meets it (issue 13): mode, peer
//! credentials (a client running as another uid), bounded request lines,
//! read time-outs, the connection cap, uploads bounded and cleaned up.
//!
//! A stand-in farm answers every request and records it, so a test can
//! tell "refused by the socket" from "refused by the farm". The tests run
//! as root (CI and developers here); the other-uid client is the
//! `printgate` binary started with `CommandExt::uid`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use printgate::control::{Request, Response, ServeOptions};
use printgate::farm::FarmInput;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Uid and gid of the unprivileged test client (`nobody` / `nogroup`).
const OTHER: u32 = 65534;

struct Rig {
    dir: PathBuf,
    seen: Arc<Mutex<Vec<Request>>>,
    /// Keeps the server and the stand-in farm running.
    _rt: tokio::runtime::Runtime,
    _farm: mpsc::Sender<FarmInput>,
}

impl Rig {
    /// A data folder under /tmp that every user may traverse (so the
    /// socket's own checks are what is tested, not the folder's mode).
    fn start(name: &str, options: ServeOptions) -> Rig {
        let dir = std::env::temp_dir().join(format!("pg-control-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("spool")).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (tx, mut rx) = mpsc::channel::<FarmInput>(16);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        rt.spawn(async move {
            while let Some(input) = rx.recv().await {
                if let FarmInput::Control { req, upload, reply } = input {
                    if let Some(path) = upload {
                        let _ = std::fs::remove_file(path);
                    }
                    log.lock().unwrap().push(req);
                    let _ = reply.send(Response::ok("done"));
                }
            }
        });
        let (d, spool, farm) = (dir.clone(), dir.join("spool"), tx.clone());
        let _server = rt
            .block_on(printgate::control::serve_with(&d, spool, farm, options))
            .unwrap();
        Rig {
            dir,
            seen,
            _rt: rt,
            _farm: tx,
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("printgate.sock")
    }

    fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(self.socket()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// Sends raw bytes, returns the answer line (empty if none came).
    fn raw(&self, bytes: &[u8]) -> String {
        let mut s = self.connect();
        // The server may answer and close before reading everything.
        let _ = s.write_all(bytes);
        let mut answer = String::new();
        let _ = BufReader::new(&s).read_line(&mut answer);
        answer
    }

    fn spool_files(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.join("spool"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `printgate pause p1 --data-dir <dir>` as `uid`:`gid`.
fn pause_as(dir: &Path, uid: u32, gid: u32) -> (bool, String) {
    let exe = Path::new(env!("CARGO_BIN_EXE_printgate"));
    let out = std::process::Command::new(exe)
        .args(["pause", "p1", "--data-dir"])
        .arg(dir)
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn line(req: &Request) -> Vec<u8> {
    let mut v = serde_json::to_vec(req).unwrap();
    v.push(b'\n');
    v
}

#[test]
fn r13_the_socket_is_0660_after_bind() {
    let rig = Rig::start("mode", ServeOptions::default());
    let mode = std::fs::metadata(rig.socket())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660, "{mode:o}");
}

#[test]
fn r13_another_uid_is_refused_by_the_socket() {
    let rig = Rig::start("peer", ServeOptions::default());
    // As if the socket's mode had been left open (run by hand, odd umask):
    // the peer check must hold on its own.
    std::fs::set_permissions(rig.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let (ok, text) = pause_as(&rig.dir, OTHER, OTHER);
    assert!(!ok, "{text}");
    assert!(text.contains("not allowed"), "{text}");
    assert!(
        rig.seen.lock().unwrap().is_empty(),
        "the farm got a request"
    );
    // Root still is.
    let (ok, text) = pause_as(&rig.dir, 0, 0);
    assert!(ok, "{text}");
    assert_eq!(rig.seen.lock().unwrap().len(), 1);
}

#[test]
fn members_of_the_operator_group_are_allowed() {
    let groups = std::env::temp_dir().join(format!("pg-group-{}", std::process::id()));
    std::fs::write(
        &groups,
        "root:x:0:\n# comment\nbroken line\nprintops:x:4242:alice,bob\n",
    )
    .unwrap();
    let options = ServeOptions {
        operator_group: Some("printops".into()),
        group_file: groups.clone(),
        ..ServeOptions::default()
    };
    let rig = Rig::start("operators", options);
    std::fs::set_permissions(rig.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    // Primary group printops.
    let (ok, text) = pause_as(&rig.dir, OTHER, 4242);
    assert!(ok, "{text}");
    // Another group: refused.
    let (ok, text) = pause_as(&rig.dir, OTHER, OTHER);
    assert!(!ok && text.contains("not allowed"), "{text}");
    std::fs::remove_file(&groups).unwrap();
    assert_eq!(rig.seen.lock().unwrap().len(), 1);
}

#[test]
fn r13_a_request_line_over_4_kib_is_refused() {
    let rig = Rig::start("long-line", ServeOptions::default());
    let mut long = vec![b'{'; 1 << 20];
    long.push(b'\n');
    let answer = rig.raw(&long);
    assert!(answer.contains("longer than 4096"), "{answer:?}");
    assert!(rig.seen.lock().unwrap().is_empty());
}

#[test]
fn r13_a_silent_client_is_dropped_after_the_read_timeout() {
    let options = ServeOptions {
        read_timeout: Duration::from_millis(300),
        ..ServeOptions::default()
    };
    let rig = Rig::start("silent", options);
    let s = rig.connect();
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).unwrap();
    assert!(answer.contains("timed out"), "{answer:?}");
}

#[test]
fn r13_connections_over_the_cap_are_turned_away() {
    let options = ServeOptions {
        max_connections: 2,
        ..ServeOptions::default()
    };
    let rig = Rig::start("cap", options);
    let held: Vec<UnixStream> = (0..2).map(|_| rig.connect()).collect();
    // The held ones are counted once the server has accepted them: retry
    // (bounded) until a third connection is turned away.
    let mut answer = String::new();
    for _ in 0..200 {
        answer = rig.raw(&line(&Request::Ping));
        if answer.contains("too many") {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        answer.contains("too many control connections"),
        "{answer:?}"
    );
    drop(held);
    // Freed slots are usable again.
    let mut ok = false;
    for _ in 0..200 {
        if rig.raw(&line(&Request::Ping)).contains("done") {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(ok);
}

#[test]
fn r13_a_cut_upload_leaves_no_part_file() {
    let rig = Rig::start("cut-upload", ServeOptions::default());
    let req = Request::AddJob {
        printer: "p1".into(),
        priority: 0,
        id: Some("job-1".into()),
        size: 1000,
    };
    let mut bytes = line(&req);
    bytes.extend(b"G28\n");
    {
        let mut s = rig.connect();
        s.write_all(&bytes).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(answer.contains("cut short"), "{answer:?}");
    }
    assert!(rig.spool_files().is_empty(), "{:?}", rig.spool_files());
    assert!(rig.seen.lock().unwrap().is_empty());
}

#[test]
fn r13_an_upload_larger_than_the_limit_or_free_space_is_refused_unread() {
    let options = ServeOptions {
        max_upload: 1000,
        ..ServeOptions::default()
    };
    let rig = Rig::start("big-upload", options);
    let req = |size| Request::AddJob {
        printer: "p1".into(),
        priority: 0,
        id: None,
        size,
    };
    let answer = rig.raw(&line(&req(1001)));
    assert!(answer.contains("limit is 1000"), "{answer:?}");
    assert!(rig.seen.lock().unwrap().is_empty());
    // Without a configured limit, free space bounds it: 4 EiB is more
    // than any disk here has free.
    let options = ServeOptions {
        max_upload: u64::MAX,
        ..ServeOptions::default()
    };
    let rig = Rig::start("huge-upload", options);
    let answer = rig.raw(&line(&req(1 << 62)));
    assert!(answer.contains("free"), "{answer:?}");
    assert!(rig.spool_files().is_empty());
    assert!(rig.seen.lock().unwrap().is_empty());
}

#[test]
fn r13_an_empty_or_path_like_job_id_is_refused_before_the_upload() {
    let rig = Rig::start("empty-id", ServeOptions::default());
    for id in ["", "../x", "a.b"] {
        let req = Request::AddJob {
            printer: "p1".into(),
            priority: 0,
            id: Some(id.into()),
            size: 4,
        };
        let mut bytes = line(&req);
        bytes.extend(b"G28\n");
        let answer = rig.raw(&bytes);
        assert!(answer.contains("job id"), "{id:?}: {answer:?}");
    }
    assert!(rig.seen.lock().unwrap().is_empty());
    assert!(rig.spool_files().is_empty());
}
