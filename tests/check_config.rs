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
