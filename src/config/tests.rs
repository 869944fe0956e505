//! Config parsing and validation tests.

use super::*;

const MIN: &str = "[gateway]\nid = \"gw-1\"\n";

fn errors(text: &str) -> Vec<String> {
    parse_all(text, Path::new("pg.toml"))
        .unwrap_err()
        .into_iter()
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn example_config_parses_with_every_section() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("printgate.example.toml");
    let cfg = load(&path).unwrap();
    assert_eq!(cfg.gateway.id, "gw-1");
    assert_eq!(cfg.printers().len(), 2);
    assert_eq!(cfg.printers()[1].serial.baud, 115_200);
    assert_eq!(cfg.printers()[0].serial, SerialSettings::default());
    let mqtt = cfg.mqtt.as_ref().unwrap();
    assert_eq!(mqtt.client_id, "printgate-gw-1");
    assert_eq!(mqtt.password().unwrap(), None);
    assert_eq!(cfg.triggers[0].gcode, "G28\nM104 S0");
    assert_eq!(
        cfg.summary(),
        "ok: 2 printers, mqtt: 127.0.0.1:1883, queue manager: http://127.0.0.1:8080"
    );
}

#[test]
fn minimal_config_gets_defaults_and_optional_sections_are_off() {
    let cfg = parse(MIN, Path::new("pg.toml")).unwrap();
    assert_eq!(cfg.gateway.data_dir, PathBuf::from("/var/lib/printgate"));
    assert_eq!(cfg.jobs, JobsConfig::default());
    assert!(cfg.mqtt.is_none() && cfg.queue_manager.is_none());
    assert_eq!(
        cfg.summary(),
        "ok: 0 printers, mqtt: off, queue manager: off"
    );
}

#[test]
fn serial_defaults_apply_and_printers_override() {
    let text = format!(
        "{MIN}[serial]\nbaud = 115200\nrx_buffer = 64\n\
         [[printer]]\nid = \"a\"\nport = \"/dev/a\"\n\
         [[printer]]\nid = \"b\"\nport = \"/dev/b\"\nbaud = 57600\nping_pong = true\n"
    );
    let cfg = parse(&text, Path::new("pg.toml")).unwrap();
    let [a, b] = cfg.printers() else {
        panic!("two printers")
    };
    assert_eq!((a.serial.baud, a.serial.rx_buffer), (115_200, 64));
    assert_eq!(
        (b.serial.baud, b.serial.rx_buffer, b.serial.ping_pong),
        (57_600, 64, true)
    );
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let text = format!("{MIN}[[printer]]\nid = \"a\"\nport = \"/dev/a\"\nbuad = 1\n");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("pg.toml:6: printer[0].buad: unknown field `buad`"),
        "{}",
        errs[0]
    );
}

#[test]
fn wrong_type_and_syntax_errors_have_lines() {
    let errs = errors(&format!("{MIN}[serial]\nbaud = \"fast\"\n"));
    assert!(
        errs[0].starts_with("pg.toml:4: serial.baud: invalid type"),
        "{}",
        errs[0]
    );
    let errs = errors("[gateway\nid = 1\n");
    assert!(errs[0].starts_with("pg.toml:1: "), "{}", errs[0]);
    let errs = errors("[serial]\nbaud = 1\n");
    assert!(errs[0].contains("missing field `gateway`"), "{}", errs[0]);
}

#[test]
fn check_reports_every_problem_at_its_line() {
    let text = "[gateway]\nid = \"gw 1\"\n\
        [serial]\nrx_buffer = 8\n\
        [[printer]]\nid = \"a\"\nport = \"/dev/a\"\nbaud = 0\n\
        [[printer]]\nid = \"a\"\nport = \"/dev/a\"\n\
        [[trigger]]\ntopic = \"t\"\nprinter = \"ghost\"\ngcode = \"G28\"\n\
        [mqtt]\nkeep_alive_s = 1\npassword = \"x\"\npassword_env = \"Y\"\n\
        [queue_manager]\nurl = \"ftp://qm\"\n\
        [jobs]\ntimeout_factor = 0.5\n";
    let errs = errors(text);
    let expected = [
        "pg.toml:2: gateway.id: `gw 1` is not a valid id",
        "pg.toml:4: serial.rx_buffer: 8 is out of range, expected 16 to 4096",
        "pg.toml:8: printer[0].baud: 0 is out of range",
        "pg.toml:10: printer[1].id: duplicate printer id `a` (also printer[0])",
        "pg.toml:11: printer[1].port: port /dev/a is already used by printer[0]",
        "pg.toml:14: trigger[0].printer: no [[printer]] with id `ghost`",
        "pg.toml:18: mqtt.password: set only one of",
        "pg.toml:17: mqtt.keep_alive_s: 1 is out of range",
        "pg.toml:21: queue_manager.url: `ftp://qm` is not a URL",
        "pg.toml:23: jobs.timeout_factor: expected a number",
    ];
    for want in expected {
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in {errs:#?}"
        );
    }
    assert_eq!(errs.len(), expected.len(), "{errs:#?}");
}

#[test]
fn urls_are_checked_for_scheme_host_and_port() {
    for good in [
        "http://qm",
        "https://qm.local:8443/api",
        "http://[::1]:8080",
        "http://u:p@h/x",
    ] {
        assert!(validate::check_url(good).is_ok(), "{good}");
    }
    for bad in [
        "qm:8080",
        "http://",
        "http://:80",
        "http://h:0",
        "http://h:x",
        "http://a b",
    ] {
        assert!(validate::check_url(bad).is_err(), "{bad}");
    }
}

#[test]
fn password_comes_from_file_or_env() {
    let file = std::env::temp_dir().join(format!("printgate-pw-{}", std::process::id()));
    std::fs::write(&file, "s3cret\n").unwrap();
    let mqtt = MqttConfig {
        password_file: Some(file.clone()),
        ..MqttConfig::default()
    };
    assert_eq!(mqtt.password().unwrap().as_deref(), Some("s3cret"));
    std::fs::remove_file(&file).unwrap();
    assert!(matches!(mqtt.password(), Err(ConfigError::Read { .. })));

    let mqtt = MqttConfig {
        password_env: Some("PRINTGATE_TEST_SURELY_UNSET_VAR".into()),
        ..MqttConfig::default()
    };
    let err = mqtt.password().unwrap_err().to_string();
    assert!(err.contains("mqtt.password_env"), "{err}");
}

#[test]
fn missing_file_is_a_read_error_naming_it() {
    let errs = check(Path::new("/nonexistent/printgate.toml")).unwrap_err();
    assert!(errs[0]
        .to_string()
        .starts_with("/nonexistent/printgate.toml: cannot read config"));
}

#[test]
fn progress_persist_defaults_to_five_minutes_and_refuses_per_tick_saves() {
    let cfg = parse(MIN, Path::new("pg.toml")).unwrap();
    assert_eq!(cfg.jobs.progress_persist_s, 300);
    let cfg = parse(
        &format!("{MIN}[jobs]\nprogress_persist_s = 60\n"),
        Path::new("pg.toml"),
    )
    .unwrap();
    assert_eq!(cfg.jobs.progress_persist_s, 60);
    let errs = errors(&format!("{MIN}[jobs]\nprogress_persist_s = 1\n"));
    assert!(
        errs[0].starts_with("pg.toml:4: jobs.progress_persist_s: 1 is out of range, expected 10"),
        "{errs:?}"
    );
}
