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
        "ok: 2 printers, mode: push + pull, mqtt: 127.0.0.1:1883, queue manager: http://127.0.0.1:8080"
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
        "ok: 0 printers, mode: local only, mqtt: off, queue manager: off"
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
        "http://u:p@h/x",
    ] {
        assert!(validate::check_url(bad).is_err(), "{bad}");
    }
}

#[test]
fn url_user_info_is_refused_without_echoing_the_password() {
    for url in [
        "http://farm:hunter2@q.farm/api",
        "ftp://farm:hunter2@q",
        "http://farm:hunter2@",
    ] {
        let errs = errors(&format!("{MIN}[queue_manager]\nurl = \"{url}\"\n"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(!errs[0].contains("hunter2"), "{}", errs[0]);
        assert!(errs[0].contains("***@"), "{}", errs[0]);
    }
    let errs = errors(&format!(
        "{MIN}[queue_manager]\nurl = \"http://farm:hunter2@q/\"\n"
    ));
    assert!(errs[0].contains("user info"), "{}", errs[0]);
}

#[test]
fn credentials_in_clear_text_are_refused_unless_allowed() {
    let mqtt = format!(
        "{MIN}[mqtt]\nhost = \"broker.farm\"\nusername = \"gw\"\npassword_file = \"/run/pw\"\n"
    );
    let errs = errors(&mqtt);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("mqtt.username: credentials would cross the network"),
        "{}",
        errs[0]
    );
    parse(
        &format!("{mqtt}allow_plaintext_credentials = true\n"),
        Path::new("pg.toml"),
    )
    .unwrap();
    parse(
        &format!("{mqtt}ca_file = \"/etc/ca.pem\"\n"),
        Path::new("pg.toml"),
    )
    .unwrap();
    parse(
        &mqtt.replace("broker.farm", "127.0.0.1"),
        Path::new("pg.toml"),
    )
    .unwrap();

    let qm = format!("{MIN}[queue_manager]\nurl = \"http://q.farm\"\ntoken_file = \"/run/t\"\n");
    let errs = errors(&qm);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("queue_manager.url: credentials would cross"),
        "{}",
        errs[0]
    );
    parse(
        &format!("{qm}allow_plaintext_credentials = true\n"),
        Path::new("pg.toml"),
    )
    .unwrap();
    parse(&qm.replace("http://", "https://"), Path::new("pg.toml")).unwrap();
    parse(
        &qm.replace("q.farm", "localhost:8080"),
        Path::new("pg.toml"),
    )
    .unwrap();
}

#[test]
fn each_secret_has_one_source_and_credentials_are_named_properly() {
    let errs = errors(&format!(
        "{MIN}[queue_manager]\nurl = \"https://q\"\ntoken = \"a\"\ntoken_file = \"/t\"\n\
         username = \"u\"\npassword_credential = \"bad/name\"\n"
    ));
    for want in [
        "queue_manager.token: set only one of token, token_file, token_credential",
        "queue_manager.token: use either a token or username + password",
        "queue_manager.password_credential: \"bad/name\" is not a credential name",
    ] {
        assert!(errs.iter().any(|e| e.contains(want)), "{want} in {errs:#?}");
    }
    let errs = errors(&format!(
        "{MIN}[queue_manager]\nurl = \"https://q\"\nusername = \"u\"\n"
    ));
    assert!(errs[0].contains("username and a password"), "{errs:?}");
}

#[test]
fn a_secret_of_the_wrong_type_is_not_echoed() {
    let errs = errors(&format!("{MIN}[mqtt]\npassword = 987654321\n"));
    assert!(
        errs[0].contains("mqtt.password: invalid value (not shown"),
        "{}",
        errs[0]
    );
    assert!(!errs[0].contains("987654321"), "{}", errs[0]);
}

#[test]
fn debug_of_the_config_shows_no_secret() {
    let text = format!(
        "{MIN}[mqtt]\nhost = \"127.0.0.1\"\nusername = \"u\"\npassword = \"hunter2\"\n\
         [queue_manager]\nurl = \"http://127.0.0.1\"\ntoken = \"t0ken-s3cret\"\n"
    );
    let cfg = parse(&text, Path::new("pg.toml")).unwrap();
    let shown = format!("{cfg:?} {cfg:#?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("t0ken-s3cret"),
        "{shown}"
    );
    assert_eq!(
        cfg.mqtt.unwrap().password().unwrap().as_deref(),
        Some("hunter2")
    );
}

#[test]
fn warnings_name_plaintext_traffic_and_readable_secret_files() {
    use std::os::unix::fs::PermissionsExt;
    let secret = std::env::temp_dir().join(format!("printgate-warn-{}", std::process::id()));
    std::fs::write(&secret, "pw\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = format!(
        "{MIN}[mqtt]\nhost = \"broker.farm\"\nusername = \"u\"\npassword_file = \"{}\"\n\
         allow_plaintext_credentials = true\n[queue_manager]\nurl = \"http://q.farm\"\n",
        secret.display()
    );
    let warnings = parse(&text, Path::new("pg.toml")).unwrap().warnings();
    std::fs::remove_file(&secret).unwrap();
    for want in [
        "mqtt: no TLS to broker.farm:1883",
        "mqtt: allow_plaintext_credentials",
        "is readable by all users (mode 644)",
        "queue_manager: http://q.farm is not https://",
    ] {
        assert!(
            warnings.iter().any(|w| w.contains(want)),
            "{want} in {warnings:#?}"
        );
    }
    assert!(parse(MIN, Path::new("pg.toml"))
        .unwrap()
        .warnings()
        .is_empty());
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
    let err = mqtt.password().unwrap_err().to_string();
    assert!(
        err.contains("mqtt.password: cannot read secret file"),
        "{err}"
    );

    let mqtt = MqttConfig {
        password_env: Some("PRINTGATE_TEST_SURELY_UNSET_VAR".into()),
        ..MqttConfig::default()
    };
    let err = mqtt.password().unwrap_err().to_string();
    assert!(
        err.contains("mqtt.password: environment variable PRINTGATE_TEST"),
        "{err}"
    );
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
