//! `printgate run`: the gateway daemon. Wires the parts together and owns
//! the order of start-up and shut-down; decides nothing itself (the farm does).
//!
//! Start: config → store (integrity, migrations) → recovery (jobs caught
//! printing become `interrupted`) → printer tasks → MQTT link and outbox
//! pump → queue-manager client → control socket → READY.
//! Stop (SIGTERM/SIGINT): the farm stops taking jobs and leaves every
//! printer safe, the link publishes `offline`, the store flushes and closes.

mod dispatch;
pub(crate) mod wiring;

use crate::config::Config;
use crate::farm::messages::Messages;
use crate::farm::{Driver, FarmCore, Parts, PrinterLink, Snapshot};
use crate::printer::{self, PrinterSettings};
use crate::store::{PrinterSeed, Store};
use anyhow::Context;
use log::{debug, error, info, warn};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
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
    let result = runtime.block_on(async {
        let shutdown = wiring::shutdown_signal().context("cannot install signal handlers")?;
        run_daemon(config, shutdown).await
    });
    // Blocking work still running (a download stuck in a read) must not hold
    // the stop past systemd's TimeoutStopSec: its partial file is removed at
    // the next start.
    runtime.shutdown_timeout(Duration::from_secs(2));
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Runs the gateway until `shutdown` completes. Errors are start-up errors
/// (lock, store, socket); everything after start-up is handled and logged.
pub async fn run_daemon(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let data_dir = config.gateway.data_dir.clone();
    // Before anything else: a second daemon on this folder would recover
    // (interrupt) the first one's running jobs and fight over its ports.
    let _lock = wiring::lock_data_dir(&data_dir)?;
    // Benchmarks only (see crate::timescale); real time unless set.
    let scale = crate::timescale::TimeScale::from_env().map_err(anyhow::Error::msg)?;
    if !scale.is_real_time() {
        warn!(
            "{}: intervals run {}x faster (benchmarks only)",
            crate::timescale::ENV,
            scale.factor()
        );
    }
    let store = Store::open(&data_dir)
        .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
    let spool_dir = data_dir.join("spool");
    std::fs::create_dir_all(&spool_dir)
        .with_context(|| format!("cannot create {}", spool_dir.display()))?;
    // Downloads and uploads a crash cut short (the jobs start over).
    match crate::source::clean_partial_files(&spool_dir) {
        Ok(0) => {}
        Ok(n) => info!("removed {n} partial file(s) from {}", spool_dir.display()),
        Err(e) => warn!("cannot clean {}: {e}", spool_dir.display()),
    }
    for warning in config.warnings() {
        warn!("{warning}");
    }

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
    let rows = store.list_printers().await?;
    let snapshot = Snapshot {
        printers: config
            .printers()
            .iter()
            .map(|p| {
                let row = rows.iter().find(|r| r.id == p.id).cloned();
                (p.id.clone(), p.filament.clone(), row)
            })
            .collect(),
        jobs: store.open_jobs().await?,
        identities: store.identities().await?,
    };
    let wall = SystemTime::now();
    let msgs = Messages::new(crate::mqtt::settings::topics(&config));
    let settings = wiring::core_settings(&config, &spool_dir, wall, scale);
    let jitter_seed = settings.jitter_seed;
    let core = FarmCore::new(settings, msgs, snapshot, Instant::now(), wall);

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (report_tx, report_rx) = mpsc::channel(1024);
    let (farm_tx, farm_rx) = mpsc::channel(256);
    let progress_interval = scale.apply(Duration::from_secs(
        config
            .mqtt
            .as_ref()
            .map_or(10, |m| m.progress_interval_s.max(1)),
    ));
    let mut links = BTreeMap::new();
    let mut estop = BTreeMap::new();
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
        estop.insert(p.id.clone(), handle.clone());
        links.insert(p.id.clone(), PrinterLink::new(handle));
    }
    drop(report_tx);

    let outbox_ready = Arc::new(Notify::new());
    let mqtt = wiring::start_mqtt(
        &config,
        store.clone(),
        outbox_ready.clone(),
        farm_tx.clone(),
        estop,
        shutdown_rx.clone(),
    )?;
    let queue = wiring::queue_client(&config, &spool_dir)?;
    let models = wiring::model_source(&config, queue.as_ref(), &spool_dir)?;
    let guard = crate::control::ServeOptions::for_gateway(&config.gateway);
    let control = crate::control::serve_with(&data_dir, spool_dir.clone(), farm_tx.clone(), guard)
        .await
        .with_context(|| format!("cannot open the control socket in {}", data_dir.display()))?;
    drop(farm_tx);

    let parts = Parts {
        store: store.clone(),
        printers: links,
        queue,
        models,
        spool_dir: spool_dir.clone(),
        volatile: mqtt.as_ref().map(|m| m.volatile.clone()),
        outbox_ready,
        max_download_retries: config.queue_manager.as_ref().map_or(3, |q| q.max_retries),
        jitter_seed,
    };
    let farm_task = tokio::spawn(Driver::new(core, parts).run(report_rx, farm_rx, shutdown_rx));
    info!(
        "printgate {} running: gateway {}, {} printer(s), {}, data in {}",
        env!("CARGO_PKG_VERSION"),
        config.gateway.id,
        config.printers().len(),
        config.mode(),
        data_dir.display()
    );
    wiring::notify_ready(&config);

    shutdown.await;
    info!("stopping");
    wiring::notify_stopping();
    if shutdown_tx.send(true).is_err() {
        warn!("the farm had already stopped");
    }
    if let Err(e) = farm_task.await {
        error!("the farm task failed: {e}");
    }
    // Downloads the stop aborted (a thread may still sit in a slow read:
    // the runtime does not wait for it) leave no partial file behind.
    match crate::source::clean_partial_files(&spool_dir) {
        Ok(0) => {}
        Ok(n) => info!("removed {n} partial download(s)"),
        Err(e) => warn!("cannot clean {}: {e}", spool_dir.display()),
    }
    for task in tasks {
        if tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .is_err()
        {
            warn!("a printer task did not end in time");
        }
    }
    if let Some(m) = mqtt {
        m.stop().await;
    }
    control.abort();
    if let Err(e) = std::fs::remove_file(crate::control::socket_path(&data_dir)) {
        debug!("control socket not removed: {e}");
    }
    store.close().await?;
    info!("stopped");
    Ok(())
}
