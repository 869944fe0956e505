//! Whole-config checks that serde cannot express: charsets, ranges,
//! duplicates, cross-references, mutually exclusive keys.
//!
//! Collects every problem as `(key path, what was expected)`; the caller
//! adds file and line. Reads nothing from disk.

use super::locate::{KeyPath, Seg};
use super::sections::PrinterSection;
use super::{MqttConfig, QueueManagerConfig, RawConfig, SerialSettings, TriggerConfig};
use std::collections::HashMap;
use std::ops::RangeInclusive;

type Problems = Vec<(KeyPath, String)>;

pub(super) fn validate(raw: &RawConfig, serial: &SerialSettings) -> Problems {
    let mut out = Problems::new();
    check_id(
        &mut out,
        KeyPath::of("gateway", None, "id"),
        &raw.gateway.id,
    );
    if raw.gateway.data_dir.as_os_str().is_empty() {
        push(
            &mut out,
            KeyPath::of("gateway", None, "data_dir"),
            "must not be empty",
        );
    }
    if let Some(group) = &raw.gateway.operator_group {
        let ok = !group.is_empty()
            && group.len() <= 32
            && group
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !ok {
            out.push((
                KeyPath::of("gateway", None, "operator_group"),
                format!("{group:?} is not a group name (as in /etc/group)"),
            ));
        }
    }
    check_serial(&mut out, serial, |key| KeyPath::of("serial", None, key));
    check_printers(&mut out, &raw.printer, serial);
    check_triggers(&mut out, &raw.trigger, &raw.printer);
    check_robots(&mut out, &raw.robot, &raw.printer);
    if raw
        .models
        .allowed_hosts
        .iter()
        .any(|h| h.trim().is_empty() || h.contains('/'))
    {
        push(
            &mut out,
            KeyPath::of("models", None, "allowed_hosts"),
            "expected host names like `files.example.com` or `files.example.com:8080`",
        );
    }
    if let Some(m) = &raw.mqtt {
        check_mqtt(&mut out, m);
    }
    if let Some(q) = &raw.queue_manager {
        check_queue_manager(&mut out, q);
    }
    let jobs = |key| KeyPath::of("jobs", None, key);
    let factor = raw.jobs.timeout_factor;
    if !(factor.is_finite() && (1.0..=100.0).contains(&factor)) {
        push(
            &mut out,
            jobs("timeout_factor"),
            "expected a number from 1.0 to 100.0",
        );
    }
    range(
        &mut out,
        jobs("max_job_hours"),
        raw.jobs.max_job_hours,
        1..=8760,
    );
    range(
        &mut out,
        jobs("retention_hours"),
        raw.jobs.retention_hours,
        0..=87600,
    );
    // Below 10 s it would be the per-tick write it exists to avoid.
    range(
        &mut out,
        jobs("progress_persist_s"),
        raw.jobs.progress_persist_s,
        10..=86400,
    );
    out
}

fn push(out: &mut Problems, key: KeyPath, msg: &str) {
    out.push((key, msg.to_owned()));
}

fn range(out: &mut Problems, key: KeyPath, value: u64, ok: RangeInclusive<u64>) {
    if !ok.contains(&value) {
        let msg = format!(
            "{value} is out of range, expected {} to {}",
            ok.start(),
            ok.end()
        );
        out.push((key, msg));
    }
}

/// Ids end up in MQTT topics and file names: no `/`, `+`, `#`, spaces.
fn check_id(out: &mut Problems, key: KeyPath, id: &str) {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        out.push((
            key,
            format!("`{id}` is not a valid id, expected 1 to 64 of A-Z a-z 0-9 _ -"),
        ));
    }
}

/// `key_of` says where a bad value came from (`serial.baud` or `printer[1].baud`).
fn check_serial(out: &mut Problems, s: &SerialSettings, key_of: impl Fn(&str) -> KeyPath) {
    range(out, key_of("baud"), u64::from(s.baud), 1..=4_000_000);
    range(out, key_of("rx_buffer"), u64::from(s.rx_buffer), 16..=4096);
    range(
        out,
        key_of("max_lines_in_flight"),
        u64::from(s.max_lines_in_flight),
        1..=64,
    );
    range(
        out,
        key_of("boot_timeout_ms"),
        s.boot_timeout_ms,
        100..=120_000,
    );
    range(
        out,
        key_of("ack_timeout_ms"),
        s.ack_timeout_ms,
        100..=600_000,
    );
    range(
        out,
        key_of("long_command_timeout_s"),
        s.long_command_timeout_s,
        1..=86_400,
    );
    range(out, key_of("reopen_max_s"), s.reopen_max_s, 1..=3600);
    check_end_sync(out, key_of("end_sync"), &s.end_sync);
}

/// One G-code command that frames as a line ("" = none).
fn check_end_sync(out: &mut Problems, key: KeyPath, cmd: &str) {
    if cmd.trim().is_empty() {
        return;
    }
    match crate::protocol::line::prepare(cmd) {
        Ok(Some(prepared)) if prepared.len() == cmd.trim().len() => {}
        Ok(_) => push(
            out,
            key,
            "expected one G-code command (e.g. \"M400\") or \"\" for none; comments are not allowed",
        ),
        Err(e) => out.push((key, format!("not a command a printer accepts: {e}"))),
    }
}

fn check_printers(out: &mut Problems, printers: &[PrinterSection], serial: &SerialSettings) {
    let mut ids = HashMap::new();
    let mut ports = HashMap::new();
    for (i, p) in printers.iter().enumerate() {
        let key = |k: &str| KeyPath::of("printer", Some(i), k);
        check_id(out, key("id"), &p.id);
        if let Some(first) = ids.insert(p.id.as_str(), i) {
            out.push((
                key("id"),
                format!("duplicate printer id `{}` (also printer[{first}])", p.id),
            ));
        }
        if p.port.trim().is_empty() {
            push(out, key("port"), "must not be empty");
        } else if let Some(first) = ports.insert(p.port.as_str(), i) {
            out.push((
                key("port"),
                format!("port {} is already used by printer[{first}]", p.port),
            ));
        }
        if p.filament.as_deref().is_some_and(|f| f.trim().is_empty()) {
            push(
                out,
                key("filament"),
                "must not be empty (leave it out for any filament)",
            );
        }
        // Only report keys this printer overrides; [serial]'s own are reported once.
        let resolved = serial.clone().with_printer(p);
        let mut own = Problems::new();
        check_serial(&mut own, &resolved, key);
        out.extend(own.into_iter().filter(|(k, _)| match k.0.last() {
            Some(Seg::Key(name)) => p.overrides(name),
            _ => true,
        }));
    }
}

fn check_triggers(out: &mut Problems, triggers: &[TriggerConfig], printers: &[PrinterSection]) {
    for (i, t) in triggers.iter().enumerate() {
        let key = |k: &str| KeyPath::of("trigger", Some(i), k);
        if t.topic.trim().is_empty() {
            push(out, key("topic"), "must not be empty");
        }
        if !printers.iter().any(|p| p.id == t.printer) {
            out.push((
                key("printer"),
                format!("no [[printer]] with id `{}`", t.printer),
            ));
        }
        if t.gcode.trim().is_empty() {
            push(out, key("gcode"), "must not be empty");
        }
        if let Some(c) = &t.complete_topic {
            if c.trim().is_empty() || c.contains(['+', '#']) {
                push(
                    out,
                    key("complete_topic"),
                    "expected a topic without MQTT wildcards + or #",
                );
            }
        }
    }
}

fn check_robots(out: &mut Problems, robots: &[super::RobotConfig], printers: &[PrinterSection]) {
    let mut ids = HashMap::new();
    for (i, r) in robots.iter().enumerate() {
        let key = |k: &str| KeyPath::of("robot", Some(i), k);
        check_id(out, key("id"), &r.id);
        if let Some(first) = ids.insert(r.id.as_str(), i) {
            out.push((
                key("id"),
                format!("duplicate robot id `{}` (also robot[{first}])", r.id),
            ));
        }
        for p in &r.printers {
            if !printers.iter().any(|x| &x.id == p) {
                out.push((key("printers"), format!("no [[printer]] with id `{p}`")));
            }
        }
    }
}

fn check_mqtt(out: &mut Problems, m: &MqttConfig) {
    let key = |k: &str| KeyPath::of("mqtt", None, k);
    if m.host.trim().is_empty() {
        push(out, key("host"), "must not be empty");
    }
    if m.port == 0 {
        push(out, key("port"), "expected 1 to 65535");
    }
    super::security::check_mqtt(out, m);
    if m.client_cert.is_some() != m.client_key.is_some() {
        push(
            out,
            key("client_cert"),
            "client_cert and client_key go together",
        );
    }
    // rumqttc refuses keep-alives under 5 s.
    range(out, key("keep_alive_s"), m.keep_alive_s, 5..=3600);
    range(
        out,
        key("progress_interval_s"),
        m.progress_interval_s,
        1..=3600,
    );
    // The farm's job_handler listens for idle printers for 30 s.
    range(out, key("idle_announce_s"), m.idle_announce_s, 1..=29);
    for (name, value) in [
        ("topic_prefix", &m.topic_prefix),
        ("discovery_prefix", &m.discovery_prefix),
    ] {
        if value.contains(['+', '#']) {
            out.push((
                key(name),
                format!("`{value}` must not contain MQTT wildcards + or #"),
            ));
        }
    }
    if m.discovery_prefix.is_empty() {
        push(out, key("discovery_prefix"), "must not be empty");
    }
    range(
        out,
        key("max_message_age_s"),
        m.max_message_age_s,
        5..=86_400,
    );
    range(out, key("clock_skew_s"), m.clock_skew_s, 0..=3600);
}

fn check_queue_manager(out: &mut Problems, q: &QueueManagerConfig) {
    let key = |k: &str| KeyPath::of("queue_manager", None, k);
    if let Err(msg) = check_url(&q.url) {
        out.push((key("url"), msg));
    }
    super::security::check_queue_manager(out, q);
    if q.allowed_hosts
        .iter()
        .any(|h| h.trim().is_empty() || h.contains('/'))
    {
        push(
            out,
            key("allowed_hosts"),
            "expected host names like `files.example.com`",
        );
    }
    range(out, key("poll_interval_s"), q.poll_interval_s, 1..=3600);
    range(out, key("max_model_bytes"), q.max_model_bytes, 1..=u64::MAX);
    range(out, key("connect_timeout_s"), q.connect_timeout_s, 1..=600);
    range(out, key("read_timeout_s"), q.read_timeout_s, 1..=3600);
    range(out, key("max_retries"), u64::from(q.max_retries), 0..=100);
}

/// Enough of URL syntax to catch typos: scheme, a host, no spaces. User
/// info (`user:password@`) is refused, and no message ever shows it.
pub(super) fn check_url(url: &str) -> Result<(), String> {
    let shown = redact_user_info(url);
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| {
            format!("`{shown}` is not a URL, expected http://host[:port][/path] or https://...")
        })?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(format!(
            "`{shown}` has user info (user:password@): put the credentials in username and \
             password (or token), never in the URL"
        ));
    }
    let (name, port) = match authority.strip_prefix('[').and_then(|h| h.split_once(']')) {
        Some((v6, after)) => (v6, after.strip_prefix(':')),
        None => match authority.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (authority, None),
        },
    };
    if name.is_empty() || url.chars().any(char::is_whitespace) {
        return Err(format!("`{shown}` has no host or contains spaces"));
    }
    if let Some(port) = port {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("`{shown}` has an invalid port `{port}`"));
        }
    }
    Ok(())
}

/// `url` with any `user:password@` of its authority replaced by `***@`.
pub(super) fn redact_user_info(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_owned(),
    };
    match scheme {
        Some(s) => format!("{s}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}
