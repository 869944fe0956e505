//! Home Assistant MQTT discovery: the retained config messages that make
//! each printer's status, progress and temperatures appear as sensors.
//!
//! Owns the config shapes only. Never publishes: the daemon sends these
//! (retained) on connect and again when `homeassistant/status` says `online`.

use super::topics::Topics;
use serde_json::{json, Value};

/// What the sensors' `device` block says about the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// printgate's version, shown as the device's software version.
    pub sw_version: String,
    /// The printer's model as configured (e.g. "Prusa MK3S"), if known.
    pub model: Option<String>,
}

/// One retained discovery message.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryConfig {
    pub topic: String,
    pub payload: Value,
}

impl DiscoveryConfig {
    pub fn payload_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.payload).unwrap_or_default()
    }
}

/// One sensor: object id, display name, the progress field it shows, unit,
/// device class.
struct Sensor(
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

const SENSORS: [Sensor; 4] = [
    // `state`, not `status`: the seed's two words hide what an operator wants to see.
    Sensor("status", "Status", "state", None, None),
    Sensor("progress", "Progress", "progress", Some("%"), None),
    Sensor(
        "nozzle_temp",
        "Nozzle temperature",
        "nozzleTemp",
        Some("°C"),
        Some("temperature"),
    ),
    Sensor(
        "bed_temp",
        "Bed temperature",
        "bedTemp",
        Some("°C"),
        Some("temperature"),
    ),
];

/// The four sensor configs for `printer`, at
/// `<discovery_prefix>/sensor/printgate_<gw>_<printer>/<object>/config`.
pub fn printer_configs(
    topics: &Topics,
    printer: &str,
    device: &DeviceInfo,
) -> Vec<DiscoveryConfig> {
    let node = node_id(topics.gateway_id(), printer);
    let device_block = json!({
        "identifiers": [node],
        "name": format!("Printer {printer}"),
        "manufacturer": "printgate",
        "model": device.model.as_deref().unwrap_or("Marlin printer"),
        "sw_version": device.sw_version,
    });
    SENSORS
        .iter()
        .map(|Sensor(object, name, field, unit, class)| {
            let mut payload = json!({
                "name": name,
                "unique_id": format!("{node}_{object}"),
                "object_id": format!("{node}_{object}"),
                "state_topic": topics.progress(printer),
                "value_template": format!("{{{{ value_json.{field} }}}}"),
                "availability_topic": topics.gateway_status(),
                "availability_template": "{{ value_json.status }}",
                "payload_available": "online",
                "payload_not_available": "offline",
                "device": device_block,
            });
            if let Some(obj) = payload.as_object_mut() {
                if let Some(unit) = unit {
                    obj.insert("unit_of_measurement".into(), json!(unit));
                    obj.insert("state_class".into(), json!("measurement"));
                }
                if let Some(class) = class {
                    obj.insert("device_class".into(), json!(class));
                }
            }
            DiscoveryConfig {
                topic: format!(
                    "{}/sensor/{node}/{object}/config",
                    topics.discovery_prefix()
                ),
                payload,
            }
        })
        .collect()
}

/// `printgate_<gw>_<printer>`, restricted to what Home Assistant accepts in
/// a node id (`[a-zA-Z0-9_-]`); anything else becomes `_`.
pub fn node_id(gateway_id: &str, printer: &str) -> String {
    format!("printgate_{}_{}", sanitize(gateway_id), sanitize(printer))
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs() -> Vec<DiscoveryConfig> {
        let info = DeviceInfo {
            sw_version: "0.1.0".into(),
            model: None,
        };
        printer_configs(&Topics::new("gw1"), "printer-1", &info)
    }

    #[test]
    fn one_config_per_sensor_with_the_expected_topics() {
        let topics: Vec<String> = configs().into_iter().map(|c| c.topic).collect();
        assert_eq!(
            topics,
            [
                "homeassistant/sensor/printgate_gw1_printer-1/status/config",
                "homeassistant/sensor/printgate_gw1_printer-1/progress/config",
                "homeassistant/sensor/printgate_gw1_printer-1/nozzle_temp/config",
                "homeassistant/sensor/printgate_gw1_printer-1/bed_temp/config",
            ]
        );
    }

    #[test]
    fn progress_sensor_json() {
        let c = &configs()[1];
        let v: Value = serde_json::from_slice(&c.payload_bytes()).unwrap();
        assert_eq!(v["unique_id"], "printgate_gw1_printer-1_progress");
        assert_eq!(v["state_topic"], "device/printer/printer-1/progress");
        assert_eq!(v["value_template"], "{{ value_json.progress }}");
        assert_eq!(v["unit_of_measurement"], "%");
        assert_eq!(v["availability_topic"], "device/gateway/gw1/status");
        assert_eq!(v["availability_template"], "{{ value_json.status }}");
        assert_eq!(v["payload_available"], "online");
        assert_eq!(v["device"]["identifiers"][0], "printgate_gw1_printer-1");
        assert_eq!(v["device"]["sw_version"], "0.1.0");
    }

    #[test]
    fn temperature_and_status_sensors() {
        let all = configs();
        let nozzle = &all[2].payload;
        assert_eq!(nozzle["value_template"], "{{ value_json.nozzleTemp }}");
        assert_eq!(nozzle["unit_of_measurement"], "°C");
        assert_eq!(nozzle["device_class"], "temperature");
        assert_eq!(all[3].payload["value_template"], "{{ value_json.bedTemp }}");
        let status = &all[0].payload;
        assert_eq!(status["value_template"], "{{ value_json.state }}");
        assert!(status.get("unit_of_measurement").is_none());
        assert!(status.get("device_class").is_none());
    }

    #[test]
    fn node_ids_are_sanitized_and_prefix_is_configurable() {
        assert_eq!(node_id("gw 1", "p/1+#"), "printgate_gw_1_p_1__");
        let t = Topics::new("g").with_discovery_prefix("ha/");
        let info = DeviceInfo {
            sw_version: "x".into(),
            model: Some("MK3S".into()),
        };
        let c = printer_configs(&t, "p", &info);
        assert_eq!(c[0].topic, "ha/sensor/printgate_g_p/status/config");
        assert_eq!(c[0].payload["device"]["model"], "MK3S");
    }
}
