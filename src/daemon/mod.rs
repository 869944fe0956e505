//! `printgate run`: the gateway daemon. Wires the parts together and owns
//! the order of start-up and shut-down; decides nothing itself (the farm does).
//!
//! Start: config → store (integrity, migrations) → recovery (jobs caught
//! printing become `interrupted`) → printer tasks → MQTT link and outbox
//! pump → queue-manager client → control socket → READY.
//! Stop (SIGTERM/SIGINT): the farm stops taking jobs and leaves every
//! printer safe, the link publishes `offline`, the store flushes and closes.

pub(crate) mod wiring;

use crate::config::Config;
use crate::farm::messages::Messages;
use crate::farm::{Farm, FarmSettings, Slot, Trigger};
use crate::lifecycle::PrinterState;
use crate::printer::{self, PrinterSettings};
use crate::store::{PrinterSeed, Store};
use anyhow::Context;
use log::{info, warn};
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The configuration file.
    #[arg(long, default_value = "/etc/printgate/printgate.toml")]
    pub config: PathBuf,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = crate::config::load(&args.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let shutdown = wiring::shutdown_signal().context("cannot install signal handlers")?;
        run_daemon(config, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Runs the gateway until `shutdown` completes. Errors are start-up errors
/// (store, socket); everything after start-up is handled and logged.
pub async fn run_daemon(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let data_dir = config.gateway.data_dir.clone();
    let store = Store::open(&data_dir)
        .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
    let spool_dir = data_dir.join("spool");
    std::fs::create_dir_all(&spool_dir)
        .with_context(|| format!("cannot create {}", spool_dir.display()))?;

    let seeds: Vec<PrinterSeed> = config
        .printers()
        .iter()
        .map(|p| PrinterSeed {
            id: p.id.clone(),
            port: p.port.clone(),
            filament: p.filament.clone(),
        })
        .collect();
    store.sync_printers(&seeds).await?;
    let topics = crate::mqtt::settings::topics(&config);
    let msgs = Messages::new(topics.clone());
    let announce = Messages::new(topics.clone());
    let recovery = store
        .recover_on_start(move |job| {
            let printer = job.printer_id.as_deref().unwrap_or("gateway");
            let reason = format!("gateway restarted while the job was {}", job.from.as_str());
            let kind = format!("job_{}", job.to.as_str());
            announce
                .event(printer, &kind, Some(&job.job_id), Some(&reason))
                .into_iter()
                .collect()
        })
        .await?;
    for job in &recovery.interrupted {
        warn!("job {} was {} when the gateway stopped: now interrupted; its printer waits for a clear plate", job.job_id, job.from.as_str());
    }
    for job in &recovery.requeued {
        info!("job {}: download starts over", job.job_id);
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (report_tx, report_rx) = mpsc::channel(1024);
    let (farm_tx, farm_rx) = mpsc::channel(256);
    let rows = store.list_printers().await?;
    let progress_interval = Duration::from_secs(
        config
            .mqtt
            .as_ref()
            .map_or(10, |m| m.progress_interval_s.max(1)),
    );
    let mut slots = Vec::new();
    let mut tasks = Vec::new();
    for p in config.printers() {
        let settings = PrinterSettings {
            id: p.id.clone(),
            port: PathBuf::from(&p.port),
            baud: p.serial.baud,
            protocol: wiring::protocol_config(&p.serial),
            reopen_max: Some(Duration::from_secs(p.serial.reopen_max_s.max(1))),
            progress_interval,
            end_sync: wiring::end_sync(&p.serial),
        };
        let (handle, task) = printer::spawn(settings, report_tx.clone());
        tasks.push(task);
        let cmd_tx = handle.sender();
        let row = rows.iter().find(|r| r.id == p.id);
        slots.push(Slot::new(
            p.id.clone(),
            p.filament.clone(),
            cmd_tx,
            row.map_or(PrinterState::Offline, |r| r.state),
            row.is_some_and(|r| r.plate_clear),
        ));
    }
    drop(report_tx);

    let outbox_ready = Arc::new(Notify::new());
    let mqtt = wiring::start_mqtt(
        &config,
        store.clone(),
        outbox_ready.clone(),
        farm_tx.clone(),
        shutdown_rx.clone(),
    )?;
    let queue = wiring::queue_client(&config, &spool_dir)?;
    let control = crate::control::serve(&data_dir, spool_dir.clone(), farm_tx.clone())
        .await
        .with_context(|| format!("cannot open the control socket in {}", data_dir.display()))?;

    let settings = FarmSettings {
        spool_dir,
        idle_announce: Duration::from_secs(
            config
                .mqtt
                .as_ref()
                .map_or(10, |m| m.idle_announce_s.max(1)),
        ),
        poll_interval: Duration::from_secs(
            config
                .queue_manager
                .as_ref()
                .map_or(5, |q| q.poll_interval_s.max(1)),
        ),
        timeout_factor: config.jobs.timeout_factor,
        max_job: Duration::from_secs(config.jobs.max_job_hours.max(1) * 3600),
        retention: Duration::from_secs(config.jobs.retention_hours * 3600),
        max_download_retries: config.queue_manager.as_ref().map_or(3, |q| q.max_retries),
        triggers: config
            .triggers
            .iter()
            .map(|t| Trigger {
                topic: t.topic.clone(),
                printer: t.printer.clone(),
                gcode: t.gcode.clone(),
            })
            .collect(),
    };
    let volatile = mqtt.as_ref().map(|m| m.volatile.clone());
    let farm = Farm::new(
        settings,
        store.clone(),
        msgs,
        slots,
        queue,
        outbox_ready,
        volatile,
        farm_tx,
    );
    let farm_task = tokio::spawn(farm.run(report_rx, farm_rx, shutdown_rx));
    info!(
        "printgate {} running: gateway {}, {} printer(s), data in {}",
        env!("CARGO_PKG_VERSION"),
        config.gateway.id,
        config.printers().len(),
        data_dir.display()
    );
    wiring::notify_ready(&config);
    let watchdog = wiring::spawn_watchdog(store.clone());

    shutdown.await;
    info!("stopping");
    wiring::notify_stopping();
    let _ = shutdown_tx.send(true);
    let _ = farm_task.await;
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    if let Some(m) = mqtt {
        m.stop().await;
    }
    control.abort();
    watchdog.abort();
    let _ = std::fs::remove_file(crate::control::socket_path(&data_dir));
    store.close().await?;
    info!("stopped");
    Ok(())
}
