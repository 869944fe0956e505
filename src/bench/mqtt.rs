//! MQTT throughput through the real outbox path: a backlog built while the
//! broker is "away" (no link), then the link and pump started against the
//! embedded broker and timed until the broker has acknowledged every row.

use crate::daemon::wiring;
use crate::store::{OutboxItem, OutboxKind, Store};
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};

#[derive(Debug, Serialize)]
pub struct MqttReport {
    pub backlog: usize,
    pub enqueue_per_second: f64,
    pub drain_seconds: f64,
    pub delivered_per_second: f64,
}

fn event(i: usize) -> OutboxItem {
    let payload = format!(
        r#"{{"seq":0,"type":"printing","printerId":"p{}","jobId":"job-{i}","message":"bench","timestamp":"2026-01-01T00:00:00Z"}}"#,
        i % 16
    );
    OutboxItem {
        topic: format!("device/printer/p{}/event", i % 16),
        payload: payload.into_bytes(),
        retain: false,
        kind: OutboxKind::Event,
        printer_id: Some(format!("p{}", i % 16)),
    }
}

pub fn run(dir: &Path, backlog: usize) -> anyhow::Result<MqttReport> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let port = crate::broker::free_port()?;
        crate::broker::start_embedded(port)?;
        let data = dir.join("mqtt-data");
        let store = Store::open(&data)?;
        let t = Instant::now();
        for i in 0..backlog {
            store.enqueue(event(i)).await?;
        }
        let enqueue_s = t.elapsed().as_secs_f64();
        let text = format!(
            "[gateway]\nid = \"bench\"\ndata_dir = \"{}\"\n[mqtt]\nport = {port}\nhomeassistant = false\n",
            data.display()
        );
        let config = crate::config::parse(&text, Path::new("bench.toml"))?;
        let (farm_tx, _farm_rx) = mpsc::channel(16);
        let (stop_tx, stop_rx) = watch::channel(false);
        let t = Instant::now();
        let Some(mqtt) = wiring::start_mqtt(&config, store.clone(), Arc::new(Notify::new()), farm_tx, Default::default(), stop_rx)? else {
            anyhow::bail!("bench: the generated config has no [mqtt]");
        };
        let deadline = Instant::now() + Duration::from_secs(300);
        while store.outbox_len().await? > 0 {
            if Instant::now() > deadline {
                anyhow::bail!("bench: the backlog did not drain in 300 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let drain = t.elapsed().as_secs_f64();
        if stop_tx.send(true).is_err() {
            log::debug!("bench: the link had already stopped");
        }
        mqtt.stop().await;
        store.close().await?;
        Ok(MqttReport {
            backlog,
            enqueue_per_second: backlog as f64 / enqueue_s.max(1e-9),
            drain_seconds: drain,
            delivered_per_second: backlog as f64 / drain.max(1e-9),
        })
    })
}
