//! The broker link against a real mosquitto (child process on 127.0.0.1):
//! plain, username/password (and a wrong password, refused by name), TLS
//! with a test CA, and mutual TLS. Runs only with PRINTGATE_MOSQUITTO=1
//! (see .ci/mosquitto.sh); needs `mosquitto`, `mosquitto_passwd`, `openssl`.
//! A test that cannot run says so on stderr as `SKIPPED: mqtt_mosquitto::<test>:
//! <why>` (past the test harness's capture, so plain `cargo test` shows it
//! too) and returns; `.ci/mosquitto.sh` fails when it sees one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use printgate::mqtt::link::{LinkEvent, LinkSettings, TlsSettings};
use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// Whether `test` can run; if not, reports it as skipped and why.
fn enabled(test: &str) -> bool {
    let why = if std::env::var("PRINTGATE_MOSQUITTO").as_deref() != Ok("1") {
        Some("PRINTGATE_MOSQUITTO is not 1".to_owned())
    } else {
        missing_tools()
    };
    let Some(why) = why else {
        init();
        return true;
    };
    // Straight to the process's stderr: `eprintln!` would be captured.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: mqtt_mosquitto::{test}: {why}");
    false
}

/// The programs these tests start, if any is missing.
fn missing_tools() -> Option<String> {
    let missing: Vec<&str> = [
        ("mosquitto", "-h"),
        ("mosquitto_passwd", "-h"),
        ("openssl", "version"),
    ]
    .into_iter()
    .filter(|(tool, arg)| {
        Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
    })
    .map(|(tool, _)| tool)
    .collect();
    (!missing.is_empty()).then(|| format!("not installed: {}", missing.join(", ")))
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("printgate-mosq-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    fn read(&self, file: &str) -> Vec<u8> {
        fs::read(self.path(file)).unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// mosquitto as a child process, killed on drop.
struct Mosquitto {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Mosquitto {
    /// Starts mosquitto with `listener <port> 127.0.0.1` followed by `extra`.
    fn start(dir: &Scratch, extra: &str) -> Mosquitto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let conf = dir.path("mosquitto.conf");
        let body = format!(
            "persistence false\nper_listener_settings false\nlog_dest stderr\nlog_type error\nlog_type warning\n\
             listener {port} 127.0.0.1\n{extra}\n"
        );
        fs::write(&conf, body).unwrap();
        // mosquitto started as root drops to user "mosquitto": let it read our files.
        for entry in fs::read_dir(&dir.0).unwrap() {
            let _ = fs::set_permissions(entry.unwrap().path(), fs::Permissions::from_mode(0o644));
        }
        let log = dir.path("mosquitto.log");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("mosquitto not installed (see .ci/mosquitto.sh)");
        let mut m = Mosquitto { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = m.child.try_wait().unwrap() {
                panic!(
                    "mosquitto exited ({status}): {}",
                    fs::read_to_string(&m.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &str, args: &[&str], dir: &Scratch) {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(&dir.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`<ca>.crt/.key`) and a leaf signed by it (`<leaf>.crt/.key`).
fn make_ca(dir: &Scratch, ca: &str) {
    let (key, crt) = (format!("{ca}.key"), format!("{ca}.crt"));
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &crt,
            "-days",
            "2",
            "-subj",
            &format!("/CN=printgate test {ca}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        dir,
    );
}

fn make_leaf(dir: &Scratch, ca: &str, leaf: &str, ext: &str) {
    let ext_file = format!("{leaf}.ext");
    fs::write(dir.path(&ext_file), ext).unwrap();
    run(
        "openssl",
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{leaf}.key"),
            "-out",
            &format!("{leaf}.csr"),
            "-subj",
            &format!("/CN={leaf}"),
        ],
        dir,
    );
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &format!("{leaf}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{leaf}.crt"),
            "-days",
            "2",
            "-extfile",
            &ext_file,
        ],
        dir,
    );
}

const SERVER_EXT: &str = "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n";
const CLIENT_EXT: &str = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n";

fn tls_conf(dir: &Scratch, require_certificate: bool) -> String {
    let p = |f: &str| dir.path(f).display().to_string();
    format!(
        "allow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {require_certificate}\n",
        p("ca.crt"), p("server.crt"), p("server.key")
    )
}

fn link_settings(port: u16, gw: &str) -> LinkSettings {
    let mut s = settings(port, gw, "mq");
    s.keep_alive = Duration::from_secs(5);
    s
}

/// Connects, publishes three outbox messages and expects their PUBACKs.
async fn expect_working(s: LinkSettings) {
    let mut d = Daemon::start(s);
    d.until("connected", |e| matches!(e, LinkEvent::Connected))
        .await;
    for seq in 1..=3 {
        d.outbox
            .send(outbox_msg(seq, "mq/printer/p1/event"))
            .await
            .unwrap();
    }
    d.wait_delivered(3).await;
    assert_eq!(d.delivered, vec![1, 2, 3]);
    d.stop().await;
}

/// Expects the link to fail, and returns the reason it reports.
async fn expect_refused(s: LinkSettings) -> String {
    let mut d = Daemon::start(s);
    let reason = match d.next("a disconnect").await {
        LinkEvent::Disconnected { reason } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    };
    d.stop().await;
    reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_delivery_and_inbound() {
    if !enabled("plain_delivery_and_inbound") {
        return;
    }
    let dir = Scratch::new("plain");
    let m = Mosquitto::start(&dir, "allow_anonymous true");
    let mut obs = Observer::connect(m.port, "obs", &["mq/printer/p1/event"]).await;
    let mut d = Daemon::start(link_settings(m.port, "gw-plain"));
    d.until("connected", |e| matches!(e, LinkEvent::Connected))
        .await;
    for seq in 1..=100 {
        d.outbox
            .send(outbox_msg(seq, "mq/printer/p1/event"))
            .await
            .unwrap();
    }
    d.wait_delivered(100).await;
    assert_eq!(d.delivered, (1..=100).collect::<Vec<_>>());
    for seq in 1..=100 {
        assert_eq!(seq_of(&obs.next("observed").await.payload), seq);
    }
    obs.publish("mq/printer/p1/command", br#"{"command":"pause"}"#, false)
        .await;
    let e = d
        .until("command", |e| matches!(e, LinkEvent::Inbound(_)))
        .await;
    let LinkEvent::Inbound(m) = e else {
        unreachable!()
    };
    assert_eq!(m.topic, "mq/printer/p1/command");
    m.ack.ack();
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_password_and_a_wrong_password() {
    if !enabled("username_password_and_a_wrong_password") {
        return;
    }
    let dir = Scratch::new("auth");
    run(
        "mosquitto_passwd",
        &["-c", "-b", "passwd", "printgate", "s3cret"],
        &dir,
    );
    let conf = format!(
        "allow_anonymous false\npassword_file {}",
        dir.path("passwd").display()
    );
    let m = Mosquitto::start(&dir, &conf);
    let mut good = link_settings(m.port, "gw-auth");
    good.username = Some("printgate".into());
    good.password = Some("s3cret".into());
    expect_working(good.clone()).await;
    let mut bad = good;
    bad.client_id = "link-gw-auth-bad".into();
    bad.password = Some("wrong".into());
    let reason = expect_refused(bad).await;
    println!("wrong password: {reason}");
    assert!(
        reason == "broker refused the connection: bad user name or password"
            || reason
                == "broker refused the connection: not authorized (check the user name and password)",
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_test_ca_and_an_unknown_ca() {
    if !enabled("tls_with_a_test_ca_and_an_unknown_ca") {
        return;
    }
    let dir = Scratch::new("tls");
    make_ca(&dir, "ca");
    make_ca(&dir, "other-ca");
    make_leaf(&dir, "ca", "server", SERVER_EXT);
    let m = Mosquitto::start(&dir, &tls_conf(&dir, false));
    let mut s = link_settings(m.port, "gw-tls");
    s.tls = Some(TlsSettings {
        ca_pem: dir.read("ca.crt"),
        client_auth: None,
    });
    expect_working(s.clone()).await;
    s.tls = Some(TlsSettings {
        ca_pem: dir.read("other-ca.crt"),
        client_auth: None,
    });
    let reason = expect_refused(s).await;
    println!("unknown ca: {reason}");
    assert!(reason.starts_with("tls certificate problem"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_and_without_a_client_certificate() {
    if !enabled("mutual_tls_with_and_without_a_client_certificate") {
        return;
    }
    let dir = Scratch::new("mtls");
    make_ca(&dir, "ca");
    make_leaf(&dir, "ca", "server", SERVER_EXT);
    make_leaf(&dir, "ca", "client", CLIENT_EXT);
    let m = Mosquitto::start(&dir, &tls_conf(&dir, true));
    let mut s = link_settings(m.port, "gw-mtls");
    s.tls = Some(TlsSettings {
        ca_pem: dir.read("ca.crt"),
        client_auth: Some((dir.read("client.crt"), dir.read("client.key"))),
    });
    expect_working(s.clone()).await;
    s.tls = Some(TlsSettings {
        ca_pem: dir.read("ca.crt"),
        client_auth: None,
    });
    let reason = expect_refused(s).await;
    println!("no client certificate: {reason}");
    assert!(reason.contains("certificate"), "{reason}");
}

/// The real daemon against mosquitto: birth `online` (retained), then
/// `kill -9` and another client sees the Last Will `offline`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_will_is_seen_when_the_daemon_is_killed() {
    if !enabled("last_will_is_seen_when_the_daemon_is_killed") {
        return;
    }
    let dir = Scratch::new("lwt");
    let m = Mosquitto::start(&dir, "allow_anonymous true");
    let config = dir.path("printgate.toml");
    fs::write(
        &config,
        format!(
            "[gateway]\nid = \"gw-lwt\"\ndata_dir = \"{}\"\n[mqtt]\nport = {}\nkeep_alive_s = 5\n",
            dir.path("data").display(),
            m.port
        ),
    )
    .unwrap();
    let topic = "device/gateway/gw-lwt/status";
    let mut obs = Observer::connect(m.port, "lwt-observer", &[topic]).await;
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_printgate"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = |s: &Seen| {
        serde_json::from_slice::<serde_json::Value>(&s.payload).unwrap()["status"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    obs.until("birth online", |s| {
        s.topic == topic && status(s) == "online"
    })
    .await;
    // SIGKILL: no DISCONNECT is sent, so the broker must fire the Will.
    Command::new("kill")
        .args(["-KILL", &daemon.id().to_string()])
        .status()
        .unwrap();
    let _ = daemon.wait();
    obs.until("last will offline", |s| {
        s.topic == topic && status(s) == "offline"
    })
    .await;
    // The Will is retained: a client subscribing later is told `offline`.
    let mut late = Observer::connect(m.port, "lwt-late", &[topic]).await;
    let seen = late.next("retained status").await;
    assert!(seen.retain && status(&seen) == "offline", "{seen:?}");
}
