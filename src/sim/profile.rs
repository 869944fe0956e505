//! What each simulated firmware says and how it checks lines: the facts the
//! board (`marlin.rs`) follows, one profile per firmware, with the source of
//! each fact. Read from the firmwares' own code, never copied. No I/O.

use std::fmt;
use std::str::FromStr;

/// The firmwares `printgate sim --firmware` can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Firmware {
    /// Stock Marlin 2.1 with host actions and prompts.
    #[default]
    Marlin,
    /// The same with `ADVANCED_OK`.
    MarlinAdvanced,
    /// Prusa-Firmware 3.x on an MK3S (8-bit, Marlin 1.0 heritage).
    PrusaMk3,
    /// Prusa-Firmware-Buddy on an MK4 over USB.
    PrusaBuddy,
    /// Creality's stock Marlin 1.1 build (Ender-3).
    Creality,
    Repetier,
    /// RepRapFirmware 3 over USB.
    RepRap,
    /// Klipper's `/tmp/printer` pseudo-terminal.
    Klipper,
}

pub const FIRMWARES: [(&str, Firmware); 8] = [
    ("marlin", Firmware::Marlin),
    ("marlin-advanced", Firmware::MarlinAdvanced),
    ("prusa-mk3", Firmware::PrusaMk3),
    ("prusa-buddy", Firmware::PrusaBuddy),
    ("creality", Firmware::Creality),
    ("repetier", Firmware::Repetier),
    ("reprap", Firmware::RepRap),
    ("klipper", Firmware::Klipper),
];

impl FromStr for Firmware {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        FIRMWARES
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, f)| *f)
            .ok_or_else(|| {
                let names: Vec<&str> = FIRMWARES.iter().map(|(n, _)| *n).collect();
                format!(
                    "unknown firmware `{s}` (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

impl fmt::Display for Firmware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = FIRMWARES
            .iter()
            .find(|(_, fw)| fw == self)
            .map_or("?", |(n, _)| *n);
        write!(f, "{name}")
    }
}

/// How a received line is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineCheck {
    /// Marlin `gcode/queue.cpp`: number, then checksum, then missing
    /// checksum; `*` without `N` is reported without a resend.
    Marlin,
    /// Prusa `cmdqueue.cpp`: as Marlin, but `*` without `N` also asks for a
    /// resend.
    Prusa,
    /// Repetier `gcode.cpp` `checkAndPushCommand`: a line seen in the last 40
    /// is skipped (`skip <n>` + `ok`), and so is garbage after a resend
    /// request; `ok <n>` as soon as a line is stored.
    Repetier,
    /// RepRapFirmware `StringParser.cpp` `LineFinished`: a bad checksum
    /// drops the line without a word; numbers are not checked.
    ChecksumOnly,
    /// Klipper `gcode.py`: `N` and `*` are skipped, nothing is checked.
    Nothing,
}

/// How the firmware pauses for a filament runout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PauseFlow {
    /// Marlin `feature/runout.cpp` + `feature/pause.cpp`: host prompts,
    /// `M600` parks and waits; answers by `M876`.
    MarlinPrompts,
    /// Prusa `Filament_sensor.cpp` `filRunout`: `M600` in front of the queue,
    /// `busy: paused for user` until someone presses the knob.
    PrusaKnob,
    /// Klipper `extras/pause_resume.py`, Repetier `Communication.cpp`:
    /// `// action:pause`; the host stops and resumes.
    HostPause,
    /// No runout sensor.
    None,
}

/// The facts of one firmware.
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    pub firmware: Firmware,
    pub rx_buffer: usize,
    pub slots: usize,
    pub check: LineCheck,
    /// `Resend: ` (Marlin, Prusa) or `Resend:` (Repetier `tResend`).
    pub resend_prefix: &'static str,
    pub ok_after_resend: bool,
    pub advanced_ok: bool,
    /// `busy:` keep-alive prefix (`echo:busy: ` Marlin `HOST_KEEPALIVE`,
    /// `busy:` Repetier `keepAlive`); `None` where the build omits it.
    pub busy_prefix: Option<&'static str>,
    /// Marlin's `EMERGENCY_PARSER`: `M108`, `M112`, `M876` act as the
    /// bytes arrive.
    pub emergency_parser: bool,
    /// DTR resets the board when the port opens (USB-serial chips); native
    /// USB and ptys do not.
    pub resets_on_open: bool,
    /// Repetier prints `wait` each second it idles with an empty buffer.
    pub idle_wait: bool,
    pub pause: PauseFlow,
    /// Marlin `PAUSE_PARK_NOZZLE_TIMEOUT` (45 s), Prusa `M600_TIMEOUT`
    /// (600 s, `variants/*.h`): the nozzle heater goes off while waiting.
    pub nozzle_timeout_s: Option<f64>,
}

impl Profile {
    pub(crate) fn of(firmware: Firmware) -> Profile {
        let marlin = Profile {
            firmware,
            rx_buffer: 128,
            slots: 4,
            check: LineCheck::Marlin,
            resend_prefix: "Resend: ",
            // Marlin 2.x flush_and_request_resend: no ok after the resend.
            ok_after_resend: false,
            advanced_ok: false,
            busy_prefix: Some("echo:busy: "),
            emergency_parser: true,
            resets_on_open: true,
            idle_wait: false,
            pause: PauseFlow::MarlinPrompts,
            nozzle_timeout_s: Some(45.0),
        };
        match firmware {
            Firmware::Marlin => marlin,
            Firmware::MarlinAdvanced => Profile {
                advanced_ok: true,
                ..marlin
            },
            Firmware::Creality => Profile {
                // Marlin 1.1 FlushSerialRequestResend: Resend, then ok_to_send.
                ok_after_resend: true,
                // Stock builds without HOST_KEEPALIVE_FEATURE or a sensor.
                busy_prefix: None,
                emergency_parser: false,
                pause: PauseFlow::None,
                nozzle_timeout_s: None,
                ..marlin
            },
            Firmware::PrusaMk3 => Profile {
                check: LineCheck::Prusa,
                // Marlin_main.cpp FlushSerialRequestResend: "Resend: n\nok".
                ok_after_resend: true,
                // cmdqueue.cpp get_command acts on M112 when it reads it.
                emergency_parser: false,
                pause: PauseFlow::PrusaKnob,
                nozzle_timeout_s: Some(600.0),
                ..marlin
            },
            Firmware::PrusaBuddy => Profile {
                // src/marlin_stubs/host/M115.cpp: Cap:EMERGENCY_PARSER:0,
                // Cap:PROMPT_SUPPORT:1. src/marlin_stubs/M876.cpp: the answer
                // is an ordinary G-code, and
                // lib/Marlin/Marlin/src/gcode/queue.cpp get_serial_commands
                // acts early only on M108, M112 and M410 (no M876) and stops
                // reading while the command ring is full: an answer waits
                // behind a blocking M600, which ends at the printer's screen.
                emergency_parser: false,
                resets_on_open: false,
                rx_buffer: 4096,
                ..marlin
            },
            Firmware::Repetier => Profile {
                check: LineCheck::Repetier,
                // Configuration.h GCODE_BUFFER_SIZE 2 ("cache size for
                // incoming commands"); moves go on into the planner.
                slots: 2,
                resend_prefix: "Resend:",
                ok_after_resend: true,
                busy_prefix: Some("busy:"),
                emergency_parser: false,
                idle_wait: true,
                pause: PauseFlow::HostPause,
                nozzle_timeout_s: None,
                ..marlin
            },
            Firmware::RepRap => Profile {
                check: LineCheck::ChecksumOnly,
                rx_buffer: 4096,
                slots: 8,
                busy_prefix: None,
                emergency_parser: false,
                resets_on_open: false,
                pause: PauseFlow::None,
                nozzle_timeout_s: None,
                ..marlin
            },
            Firmware::Klipper => Profile {
                check: LineCheck::Nothing,
                rx_buffer: 4096,
                // gcode.py GCodeIO: stops reading at 20 pending commands.
                slots: 20,
                busy_prefix: None,
                emergency_parser: false,
                resets_on_open: false,
                pause: PauseFlow::HostPause,
                nozzle_timeout_s: None,
                ..marlin
            },
        }
    }

    /// Lines printed after a reset.
    pub(crate) fn banner(&self) -> &'static [&'static str] {
        match self.firmware {
            Firmware::Marlin | Firmware::MarlinAdvanced | Firmware::PrusaBuddy => &[
                "start",
                "echo:Marlin 2.1.2.4",
                "echo: Last Updated: 2024-01-01 | Author: (printgate sim)",
                "echo:Compiled: Jan  1 2024",
                "echo: Free Memory: 2048  PlannerBufferBytes: 1232",
                "echo:SD card ok",
            ],
            Firmware::Creality => &["start", "echo:Marlin 1.1.6", "echo:SD card ok"],
            Firmware::PrusaMk3 => &["start", "echo:SD card ok"],
            Firmware::Repetier => &["start", "Info:External Reset"],
            Firmware::RepRap | Firmware::Klipper => &[],
        }
    }

    /// The `M115` report lines (Klipper: the text inside its `ok`).
    pub(crate) fn m115(&self, id: &Identity) -> Vec<String> {
        let uuid = id.uuid.as_deref();
        let uuid_or = |default: &str| uuid.unwrap_or(default).to_owned();
        let machine = |default: &str| id.machine_type.clone().unwrap_or_else(|| default.into());
        let caps = |list: &[(&str, bool)]| {
            list.iter()
                .map(|(name, on)| format!("Cap:{name}:{}", u8::from(*on)))
                .collect::<Vec<_>>()
        };
        match self.firmware {
            Firmware::Marlin | Firmware::MarlinAdvanced => {
                let mut out = vec![format!(
                    "FIRMWARE_NAME:Marlin 2.1.2.4 (printgate sim) SOURCE_CODE_URL:github.com/MarlinFirmware/Marlin \
                     PROTOCOL_VERSION:1.0 MACHINE_TYPE:{} EXTRUDER_COUNT:1 UUID:{}",
                    machine("printgate-sim"),
                    uuid_or(MARLIN_DEFAULT_UUID)
                )];
                // gcode/host/M115.cpp, in its order.
                out.extend(caps(&[
                    ("SERIAL_XON_XOFF", false),
                    ("BINARY_FILE_TRANSFER", false),
                    ("EEPROM", false),
                    ("VOLUMETRIC", true),
                    ("AUTOREPORT_POS", false),
                    ("AUTOREPORT_TEMP", true),
                    ("PROGRESS", false),
                    ("PRINT_JOB", true),
                    ("EMERGENCY_PARSER", true),
                    ("HOST_ACTION_COMMANDS", true),
                    ("PROMPT_SUPPORT", true),
                    ("THERMAL_PROTECTION", true),
                    ("ADVANCED_OK", self.advanced_ok),
                ]));
                out
            }
            Firmware::Creality => {
                let mut out = vec![format!(
                    "FIRMWARE_NAME:Marlin 1.1.6 (Github) SOURCE_CODE_URL:https://github.com/MarlinFirmware/Marlin \
                     PROTOCOL_VERSION:1.0 MACHINE_TYPE:{} EXTRUDER_COUNT:1 UUID:{}",
                    machine("Ender-3"),
                    uuid_or(MARLIN_DEFAULT_UUID)
                )];
                out.extend(caps(&[
                    ("SERIAL_XON_XOFF", false),
                    ("EEPROM", true),
                    ("AUTOREPORT_TEMP", false),
                    ("PROGRESS", false),
                    ("PRINT_JOB", true),
                    ("EMERGENCY_PARSER", false),
                ]));
                out
            }
            Firmware::PrusaMk3 => {
                // Marlin_main.cpp M115: no Cap: lines in this build; the
                // UUID is all zeros (MACHINE_UUID).
                vec![format!(
                    "FIRMWARE_NAME:Prusa-Firmware 3.14.1 based on Marlin FIRMWARE_URL:https://github.com/prusa3d/Prusa-Firmware \
                     PROTOCOL_VERSION:1.0 MACHINE_TYPE:{} EXTRUDER_COUNT:1 UUID:{}",
                    machine("Prusa i3 MK3S"),
                    uuid_or("00000000-0000-0000-0000-000000000000")
                )]
            }
            Firmware::PrusaBuddy => {
                // src/marlin_stubs/host/M115.cpp.
                let mut out = vec![format!(
                    "FIRMWARE_NAME:Prusa-Firmware-Buddy 6.1.3+8283 (Github) SOURCE_CODE_URL:https://github.com/prusa3d/Prusa-Firmware-Buddy \
                     PROTOCOL_VERSION:1.0 MACHINE_TYPE:{} EXTRUDER_COUNT:1 UUID:{}",
                    machine("Prusa-MK4"),
                    uuid_or(MARLIN_DEFAULT_UUID)
                )];
                out.extend(caps(&[
                    ("SERIAL_XON_XOFF", false),
                    ("BINARY_FILE_TRANSFER", false),
                    ("EEPROM", true),
                    ("VOLUMETRIC", true),
                    ("AUTOREPORT_TEMP", true),
                    ("PROGRESS", false),
                    ("PRINT_JOB", true),
                    ("AUTOLEVEL", true),
                    ("EMERGENCY_PARSER", false),
                    ("PROMPT_SUPPORT", true),
                    ("AUTOREPORT_SD_STATUS", false),
                    ("THERMAL_PROTECTION", true),
                ]));
                out
            }
            Firmware::Repetier => {
                // Communication.cpp tFirmware: no UUID.
                let mut out = vec![format!(
                    "FIRMWARE_NAME:Repetier_1.0.4 COMPILED:Jan 1 2024 FIRMWARE_URL:https://github.com/repetier/Repetier-Firmware/ \
                     PROTOCOL_VERSION:1.0 MACHINE_TYPE:{} EXTRUDER_COUNT:1 REPETIER_PROTOCOL:4",
                    machine("Mendel")
                )];
                out.extend(caps(&[("EEPROM", true), ("AUTOREPORT_TEMP", false)]));
                out
            }
            Firmware::RepRap => vec![format!(
                "FIRMWARE_NAME: RepRapFirmware for Duet 3 MB6HC FIRMWARE_VERSION: 3.5.1 ELECTRONICS: {} \
                 FIRMWARE_DATE: 2024-04-19 14:40:00",
                machine("Duet 3 MB6HC v1.01")
            )],
            // gcode.py cmd_M115: inside the ok.
            Firmware::Klipper => vec!["FIRMWARE_NAME:Klipper FIRMWARE_VERSION:v0.12.0-302-gfb9c6f2c".into()],
        }
    }
}

/// Marlin's `Version.h` default: the same on every stock build.
pub(crate) const MARLIN_DEFAULT_UUID: &str = "cede2a2f-41a2-4748-9b12-c55c62f367ff";

/// Who the simulated printer says it is (knobs to swap identities).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub uuid: Option<String>,
    pub machine_type: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for (name, fw) in FIRMWARES {
            assert_eq!(name.parse::<Firmware>().unwrap(), fw);
            assert_eq!(fw.to_string(), name);
        }
        let err = "smoothie".parse::<Firmware>().unwrap_err();
        assert!(
            err.contains("marlin-advanced") && err.contains("klipper"),
            "{err}"
        );
    }

    #[test]
    fn identity_knobs_change_the_report() {
        let id = Identity {
            uuid: Some("11111111-2222-3333-4444-555555555555".into()),
            machine_type: Some("Farm Printer 7".into()),
        };
        let m115 = Profile::of(Firmware::Marlin).m115(&id);
        assert!(m115[0].contains("MACHINE_TYPE:Farm Printer 7 "));
        assert!(m115[0].ends_with("UUID:11111111-2222-3333-4444-555555555555"));
        assert!(m115.contains(&"Cap:THERMAL_PROTECTION:1".to_string()));
    }
}
