//! Start-up recovery, decided here and written as one batch: jobs caught
//! printing become `interrupted` (never resumed: the part's state is
//! unknown) and their printers wait for a clear plate; interrupted downloads
//! start over; every other printer is offline until its task reports a
//! handshake.

use super::model::{Finished, Printer};
use super::persist::{event_kind, Tx};
use super::writes::After;
use super::{FarmCore, Snapshot};
use crate::lifecycle::{JobState, PrinterState};
use crate::store::Write;
use log::warn;
use std::time::Duration;

impl FarmCore {
    /// See [`FarmCore::new`].
    pub(super) fn recover(&mut self, snapshot: Snapshot) {
        let mut tx = Tx::default();
        for (id, filament, row) in snapshot.printers {
            let (state, plate) = row
                .as_ref()
                .map_or((PrinterState::Offline, false), |r| (r.state, r.plate_clear));
            let mut p = Printer::new(&id, filament, state, plate);
            p.port = row.as_ref().map(|r| r.port.clone());
            p.claimed_at = row
                .as_ref()
                .and_then(|r| r.claimed_at)
                .and_then(|s| u64::try_from(s).ok())
                .map_or(self.wall, |s| {
                    std::time::UNIX_EPOCH + Duration::from_secs(s)
                });
            p.listening =
                super::claims::listening_at_start(p.claimed_at, self.wall, self.s.claim_listen);
            if let Some(r) = &row {
                if r.state == PrinterState::AwaitingClear || r.last_job.is_some() {
                    p.finished = Some(Finished {
                        job: r.last_job.clone(),
                        outcome: outcome_name(r.last_outcome.as_deref()),
                    });
                }
            }
            self.printers.insert(id, p);
        }
        let mut interrupted = Vec::new();
        for row in snapshot.jobs {
            let mut state = row.state;
            let reason = match state {
                JobState::Printing | JobState::Paused => {
                    Some((JobState::Interrupted, "gateway restarted during the print"))
                }
                JobState::Downloading => Some((JobState::Queued, "download starts over")),
                _ => None,
            };
            if let Some((to, why)) = reason {
                let printer = row.printer_id.as_deref();
                tx.job(&row.id, to, Some(why));
                tx.out(match printer {
                    Some(p) => self
                        .msgs
                        .event(p, &event_kind(to), Some(&row.id), Some(why)),
                    None => self
                        .msgs
                        .gateway_event(&event_kind(to), Some(&row.id), Some(why)),
                });
                warn!("job {}: {}: now {}", row.id, why, to.as_str());
                state = to;
                if to == JobState::Interrupted {
                    if let Some(p) = printer.and_then(|p| self.printers.get_mut(p)) {
                        // The printer row is moved below, with the others.
                        interrupted.push(p.id.clone());
                        p.finished = Some(Finished {
                            job: Some(row.id.clone()),
                            outcome: Some("interrupted"),
                        });
                    }
                    continue;
                }
            }
            let order = self.next_order;
            self.next_order += 1;
            self.jobs
                .insert(row.id.clone(), job_from_row(row, state, order));
        }
        // Printers caught mid-print wait for a clear plate; the others are
        // offline until their task reports a handshake.
        for p in self.printers.values_mut() {
            let caught = interrupted.contains(&p.id);
            let to = match p.state {
                _ if caught => PrinterState::AwaitingClear,
                PrinterState::Printing | PrinterState::Paused | PrinterState::AwaitingClear => {
                    PrinterState::AwaitingClear
                }
                _ => PrinterState::Offline,
            };
            if to == PrinterState::AwaitingClear {
                p.plate_clear = false;
            }
            let finished = p.finished.clone().unwrap_or(Finished {
                job: None,
                outcome: None,
            });
            if to == PrinterState::AwaitingClear {
                tx.write(Write::PrinterFinished {
                    id: p.id.clone(),
                    job: finished.job.clone(),
                    outcome: finished.outcome.map(str::to_owned),
                });
                p.finished = Some(finished);
            }
            if p.state != to {
                tx.write(Write::Printer {
                    id: p.id.clone(),
                    state: to,
                    plate_clear: None,
                    current_job: Some(None),
                });
                p.state = to;
            }
        }
        self.restore_identities(snapshot.identities, &mut tx);
        if !tx.writes.is_empty() {
            self.commit(tx, After::Nothing);
        }
        self.publish_awaiting();
    }
}

fn outcome_name(s: Option<&str>) -> Option<&'static str> {
    match s? {
        "completed" => Some("completed"),
        "failed" => Some("failed"),
        "cancelled" => Some("cancelled"),
        "interrupted" => Some("interrupted"),
        _ => None,
    }
}

fn job_from_row(row: crate::store::Job, state: JobState, order: u64) -> super::model::Job {
    super::model::Job {
        id: row.id,
        printer: row.printer_id,
        source: row.source,
        model_url: row.model_url,
        gcode_path: row.gcode_path,
        filament: row.filament,
        priority: row.priority,
        estimated_s: row.estimated_s.and_then(|s| u64::try_from(s).ok()),
        sha256: row.sha256,
        params: row.params,
        state,
        order,
        stored: true,
        file_pending: false,
        stop_answer: None,
        stop: None,
    }
}
