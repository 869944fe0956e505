//! `printgate check-config` as an operator runs it: exit codes and output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn check_config(file: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_printgate"))
        .arg("check-config")
        .arg(file)
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (
        out.status.code().unwrap(),
        text(out.stdout),
        text(out.stderr),
    )
}

#[test]
fn example_config_is_ok() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("printgate.example.toml");
    let (code, stdout, _) = check_config(&example);
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        "ok: 2 printers, mode: push + pull, mqtt: 127.0.0.1:1883, queue manager: http://127.0.0.1:8080"
    );
}

#[test]
fn bad_config_lists_every_problem_and_exits_1() {
    let file = std::env::temp_dir().join(format!("printgate-bad-{}.toml", std::process::id()));
    std::fs::write(
        &file,
        "[gateway]\nid = \"gw/1\"\n[[printer]]\nid = \"p\"\nport = \"/dev/x\"\nrx_buffer = 5\n",
    )
    .unwrap();
    let (code, _, stderr) = check_config(&file);
    std::fs::remove_file(&file).unwrap();
    assert_eq!(code, 1);
    let name = file.display();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("{name}:2: gateway.id: ")),
        "{stderr}"
    );
    assert!(lines[1].starts_with(&format!(
        "{name}:6: printer[0].rx_buffer: 5 is out of range"
    )));
}

fn temp_config(name: &str, text: &str) -> std::path::PathBuf {
    let file = std::env::temp_dir().join(format!("printgate-{name}-{}.toml", std::process::id()));
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn plaintext_traffic_is_a_warning_and_plaintext_credentials_an_error() {
    let file = temp_config(
        "plain",
        "[gateway]\nid = \"gw\"\n[mqtt]\nhost = \"broker.farm\"\n\
         [queue_manager]\nurl = \"http://q.farm\"\n",
    );
    let (code, stdout, stderr) = check_config(&file);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("ok: "), "{stdout}");
    let name = file.display();
    assert!(
        stderr.contains(&format!(
            "{name}: warning: mqtt: no TLS to broker.farm:1883"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: queue_manager: http://q.farm is not https://"),
        "{stderr}"
    );
    std::fs::write(
        &file,
        "[gateway]\nid = \"gw\"\n[queue_manager]\nurl = \"http://q.farm\"\ntoken = \"s3cret-t0ken\"\n",
    )
    .unwrap();
    let (code, stdout, stderr) = check_config(&file);
    std::fs::remove_file(&file).unwrap();
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stderr.contains("queue_manager.url: credentials would cross the network in clear text"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret-t0ken") && !stdout.contains("s3cret-t0ken"));
}

#[test]
fn a_password_in_the_url_is_refused_and_never_printed() {
    let file = temp_config(
        "userinfo",
        "[gateway]\nid = \"gw\"\n[queue_manager]\nurl = \"https://farm:hunter2@q.farm/api\"\n",
    );
    let (code, stdout, stderr) = check_config(&file);
    std::fs::remove_file(&file).unwrap();
    assert_eq!(code, 1);
    assert!(stderr.contains("has user info"), "{stderr}");
    assert!(
        !stderr.contains("hunter2") && !stdout.contains("hunter2"),
        "{stdout}{stderr}"
    );
}
