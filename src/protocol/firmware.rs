//! What a printer says about itself at every connect (`M115`), and the few
//! protocol decisions the host takes from it. No I/O, no clock.
//!
//! The host has no per-firmware setting: it reads `FIRMWARE_NAME` and the
//! `Cap:` lines and adapts where the firmwares differ in ways that matter for
//! exactly-once streaming. Facts, with their sources:
//! - Klipper (`klippy/gcode.py`) skips `N` and the checksum, never asks for
//!   a resend and answers `M115` inside the `ok` line; RepRapFirmware
//!   (`src/GCodes/GCodeBuffer/StringParser.cpp`) drops a line with a bad
//!   checksum without any answer and does not check line numbers. Sending a
//!   line again could run it twice there, so the host never resends to them.
//! - Repetier-Firmware (`gcode.cpp`, `checkAndPushCommand`) acknowledges a
//!   line when it is stored, with its number (`ok <n>`), not when it runs.
//! - Marlin 2.x (`gcode/queue.cpp`, `flush_and_request_resend`) sends no
//!   `ok` after `Resend:`; Marlin 1.1 (`FlushSerialRequestResend`),
//!   Prusa-Firmware (`Marlin_main.cpp`) and Repetier (`requestResend`) do.
//! - Marlin's default `UUID` (`cede2a2f-…`, `Version.h`) is the same on every
//!   stock build and Prusa's MK3 reports all zeros: neither names a machine.

use std::fmt;

/// Firmware families the host tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FirmwareKind {
    #[default]
    Unknown,
    Marlin,
    /// Prusa-Firmware 3.x (MK3, MK3S, MK2.5).
    Prusa,
    /// Prusa-Firmware-Buddy (MINI, MK4, XL, CORE One).
    PrusaBuddy,
    Repetier,
    RepRap,
    Klipper,
}

impl FirmwareKind {
    fn from_name(name: &str) -> FirmwareKind {
        let lower = name.to_ascii_lowercase();
        let table: [(&str, FirmwareKind); 6] = [
            ("klipper", FirmwareKind::Klipper),
            ("reprapfirmware", FirmwareKind::RepRap),
            ("repetier", FirmwareKind::Repetier),
            ("prusa-firmware-buddy", FirmwareKind::PrusaBuddy),
            ("prusa-firmware", FirmwareKind::Prusa),
            ("marlin", FirmwareKind::Marlin),
        ];
        table
            .iter()
            .find(|(key, _)| lower.contains(key))
            .map_or(FirmwareKind::Unknown, |(_, kind)| *kind)
    }
}

/// One `Cap:NAME:0|1` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    pub name: String,
    pub enabled: bool,
}

/// What `M115` told us, refreshed at every connect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Firmware {
    /// `FIRMWARE_NAME` as reported (`Marlin 2.1.2.4 (Github)`, `Klipper`).
    pub name: String,
    pub kind: FirmwareKind,
    /// `FIRMWARE_VERSION` (Klipper, RepRapFirmware) when reported.
    pub version: Option<String>,
    /// `MACHINE_TYPE` when reported.
    pub machine_type: Option<String>,
    /// `UUID` as reported (see [`Firmware::unique_uuid`]).
    pub uuid: Option<String>,
    /// Every `Cap:` line, in order.
    pub caps: Vec<Capability>,
    pub autoreport_temp: bool,
    pub emergency_parser: bool,
    /// From `Cap:ADVANCED_OK` or from the first `ok N.. P.. B..` seen.
    pub advanced_ok: bool,
    /// `Cap:PROMPT_SUPPORT` (M876 answers host prompts).
    pub prompt_support: bool,
    /// `Cap:THERMAL_PROTECTION`, when the firmware reports it.
    pub thermal_protection: Option<bool>,
}

/// Known UUIDs that many machines share, so they identify none.
const SHARED_UUIDS: [&str; 2] = [
    // Marlin's default in Version.h.
    "cede2a2f-41a2-4748-9b12-c55c62f367ff",
    "00000000-0000-0000-0000-000000000000",
];

impl Firmware {
    /// Reads an `M115` report line (`FIRMWARE_NAME:… MACHINE_TYPE:… UUID:…`),
    /// from its own line or from the rest of Klipper's `ok`.
    pub fn absorb_report(&mut self, line: &str) {
        for (key, value) in report_fields(line) {
            let value = value.trim();
            match key {
                "FIRMWARE_NAME" => {
                    self.name = value.to_owned();
                    self.kind = FirmwareKind::from_name(value);
                }
                "FIRMWARE_VERSION" => self.version = Some(value.to_owned()),
                "MACHINE_TYPE" => self.machine_type = Some(value.to_owned()),
                "UUID" if !value.is_empty() => self.uuid = Some(value.to_owned()),
                _ => {}
            }
        }
    }

    /// Records one `Cap:` line.
    pub fn set_capability(&mut self, name: &str, enabled: bool) {
        match name {
            "AUTOREPORT_TEMP" => self.autoreport_temp = enabled,
            "EMERGENCY_PARSER" => self.emergency_parser = enabled,
            "ADVANCED_OK" => self.advanced_ok |= enabled,
            "PROMPT_SUPPORT" => self.prompt_support = enabled,
            "THERMAL_PROTECTION" => self.thermal_protection = Some(enabled),
            _ => {}
        }
        match self.caps.iter_mut().find(|c| c.name == name) {
            Some(cap) => cap.enabled = enabled,
            None => self.caps.push(Capability {
                name: name.to_owned(),
                enabled,
            }),
        }
    }

    /// The reported value of `Cap:<name>`, if the firmware reported it.
    pub fn capability(&self, name: &str) -> Option<bool> {
        self.caps.iter().find(|c| c.name == name).map(|c| c.enabled)
    }

    /// The UUID when it can tell one machine from another (not a default
    /// shared by every stock build).
    pub fn unique_uuid(&self) -> Option<&str> {
        self.uuid
            .as_deref()
            .filter(|u| !SHARED_UUIDS.iter().any(|s| s.eq_ignore_ascii_case(u)))
    }

    /// Whether the firmware refuses a line whose number is not last+1. Only
    /// then may a line be sent again (a duplicate is refused, not run).
    pub fn checks_line_numbers(&self) -> bool {
        !matches!(self.kind, FirmwareKind::Klipper | FirmwareKind::RepRap)
    }

    /// Whether an `ok` means "stored" rather than "done" (Repetier).
    pub fn acks_on_receipt(&self) -> bool {
        self.kind == FirmwareKind::Repetier
    }

    /// What the firmware is expected to print after `Resend:` before the
    /// host has seen it do so (it learns from the first clean resend).
    pub(crate) fn resend_ok_prior(&self) -> Option<bool> {
        match self.kind {
            FirmwareKind::Marlin | FirmwareKind::PrusaBuddy => {
                let version = self.name.trim_start_matches(|c: char| !c.is_ascii_digit());
                (!version.starts_with('1')).then_some(false)
            }
            FirmwareKind::Prusa | FirmwareKind::Repetier => Some(true),
            _ => None,
        }
    }
}

impl fmt::Display for Firmware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.name.is_empty() {
            "unknown firmware"
        } else {
            &self.name
        };
        write!(f, "{name}")?;
        if let Some(m) = &self.machine_type {
            write!(f, " on {m}")?;
        }
        Ok(())
    }
}

/// Splits `KEY:value KEY2:value with spaces` into pairs. A key is a word of
/// capitals, digits and `_` followed by `:` (RepRapFirmware puts a space
/// after the colon, Marlin does not).
fn report_fields(line: &str) -> Vec<(&str, &str)> {
    let mut starts = Vec::new();
    let mut at = 0;
    for word in line.split(' ') {
        if let Some((key, _)) = word.split_once(':') {
            let is_key = key.len() >= 2
                && key.starts_with(|c: char| c.is_ascii_uppercase())
                && key
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if is_key {
                starts.push((at, key.len()));
            }
        }
        at += word.len() + 1;
    }
    let mut out = Vec::with_capacity(starts.len());
    for (i, &(start, key_len)) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(line.len(), |&(s, _)| s);
        let key = line.get(start..start + key_len).unwrap_or("");
        let value = line.get(start + key_len + 1..end).unwrap_or("");
        out.push((key, value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marlin_report_with_spaces_in_values() {
        let mut fw = Firmware::default();
        fw.absorb_report(
            "FIRMWARE_NAME:Marlin 2.1.2.4 (Github) SOURCE_CODE_URL:github.com/MarlinFirmware/Marlin \
             PROTOCOL_VERSION:1.0 MACHINE_TYPE:Ender-3 V2 EXTRUDER_COUNT:1 UUID:cede2a2f-41a2-4748-9b12-c55c62f367ff",
        );
        assert_eq!(fw.name, "Marlin 2.1.2.4 (Github)");
        assert_eq!(fw.kind, FirmwareKind::Marlin);
        assert_eq!(fw.machine_type.as_deref(), Some("Ender-3 V2"));
        assert!(fw.uuid.is_some());
        assert_eq!(
            fw.unique_uuid(),
            None,
            "Marlin's default UUID names no machine"
        );
        assert_eq!(fw.resend_ok_prior(), Some(false));
        assert!(fw.checks_line_numbers());
    }

    #[test]
    fn other_firmwares_are_recognised() {
        let cases = [
            ("FIRMWARE_NAME:Klipper FIRMWARE_VERSION:v0.12.0-1", FirmwareKind::Klipper),
            (
                "FIRMWARE_NAME: RepRapFirmware for Duet 3 MB6HC FIRMWARE_VERSION: 3.5.1 ELECTRONICS: Duet 3",
                FirmwareKind::RepRap,
            ),
            ("FIRMWARE_NAME:Repetier_1.0.4 COMPILED:Jan 1 2024 FIRMWARE_URL:https://github.com/repetier/Repetier-Firmware/ PROTOCOL_VERSION:1.0 MACHINE_TYPE:Mendel EXTRUDER_COUNT:1 REPETIER_PROTOCOL:4", FirmwareKind::Repetier),
            ("FIRMWARE_NAME:Prusa-Firmware-Buddy 6.1.3+8283 (Github) SOURCE_CODE_URL:https://github.com/prusa3d/Prusa-Firmware-Buddy PROTOCOL_VERSION:1.0 MACHINE_TYPE:Prusa-MK4 EXTRUDER_COUNT:1 UUID:3e0b2b5e-0000-4000-8000-000000000001", FirmwareKind::PrusaBuddy),
            ("FIRMWARE_NAME:Prusa-Firmware 3.14.1 based on Marlin FIRMWARE_URL:https://github.com/prusa3d/Prusa-Firmware PROTOCOL_VERSION:1.0 MACHINE_TYPE:Prusa i3 MK3S EXTRUDER_COUNT:1 UUID:00000000-0000-0000-0000-000000000000", FirmwareKind::Prusa),
        ];
        for (line, kind) in cases {
            let mut fw = Firmware::default();
            fw.absorb_report(line);
            assert_eq!(fw.kind, kind, "{line}");
        }
        let mut rrf = Firmware::default();
        rrf.absorb_report(cases[1].0);
        assert_eq!(rrf.name, "RepRapFirmware for Duet 3 MB6HC");
        assert_eq!(rrf.version.as_deref(), Some("3.5.1"));
        assert!(!rrf.checks_line_numbers());
        let mut prusa = Firmware::default();
        prusa.absorb_report(cases[4].0);
        assert_eq!(prusa.machine_type.as_deref(), Some("Prusa i3 MK3S"));
        assert_eq!(prusa.unique_uuid(), None);
        let mut buddy = Firmware::default();
        buddy.absorb_report(cases[3].0);
        assert_eq!(
            buddy.unique_uuid(),
            Some("3e0b2b5e-0000-4000-8000-000000000001")
        );
    }

    #[test]
    fn capabilities_are_kept_in_order_and_mapped() {
        let mut fw = Firmware::default();
        fw.set_capability("EMERGENCY_PARSER", false);
        fw.set_capability("THERMAL_PROTECTION", false);
        fw.set_capability("PROMPT_SUPPORT", true);
        fw.set_capability("EMERGENCY_PARSER", true);
        assert_eq!(fw.caps.len(), 3);
        assert!(fw.emergency_parser && fw.prompt_support);
        assert_eq!(fw.thermal_protection, Some(false));
        assert_eq!(fw.capability("THERMAL_PROTECTION"), Some(false));
        assert_eq!(fw.capability("AUTOLEVEL"), None);
    }
}
