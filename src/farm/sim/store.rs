//! The simulation's store: what the farm core's batches leave behind, with
//! the real store's rules (lifecycle tables, the plate rule, duplicate ids,
//! all-or-nothing batches). A write the real store would refuse is a core
//! bug here, reported as a violation rather than silently rejected.

use crate::lifecycle::{
    job_transition_allowed, printer_transition_allowed, JobState, PrinterState,
};
use crate::store::{Applied, Batch, IdentityRole, IdentityRow, Job, PrinterRow, PurgedJob, Write};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default)]
pub struct ModelStore {
    pub printers: BTreeMap<String, PrinterRow>,
    pub jobs: BTreeMap<String, Job>,
    /// Firmware identities by printer and role (`known` or `held`).
    pub identities: BTreeMap<(String, bool), IdentityRow>,
    /// Insertion order of jobs (the real store orders by created_at, rowid).
    order: Vec<String>,
}

impl ModelStore {
    pub fn new(printers: &[String]) -> ModelStore {
        let mut s = ModelStore::default();
        for id in printers {
            let port = format!("/dev/sim-{id}");
            s.printers.insert(
                id.clone(),
                PrinterRow::for_tests(id, &port, PrinterState::Offline),
            );
        }
        s
    }

    /// Open jobs in arrival order (the start-up snapshot).
    pub fn open_jobs(&self) -> Vec<Job> {
        self.order
            .iter()
            .filter_map(|id| self.jobs.get(id))
            .filter(|j| !j.state.is_terminal())
            .cloned()
            .collect()
    }

    /// The stored firmware identities (the start-up snapshot).
    pub fn identities(&self) -> Vec<IdentityRow> {
        self.identities.values().cloned().collect()
    }

    /// Applies `batch` all or nothing, like one SQLite transaction. `Err`
    /// is a write the real store would refuse: a core bug.
    pub fn apply(&mut self, batch: &Batch) -> Result<Applied, String> {
        let mut next = self.clone();
        let mut answer = Applied::Done;
        for w in &batch.writes {
            if let Some(a) = next.write(w)? {
                answer = a;
            }
            if answer == Applied::Duplicate {
                return Ok(Applied::Duplicate);
            }
        }
        *self = next;
        Ok(answer)
    }

    fn write(&mut self, w: &Write) -> Result<Option<Applied>, String> {
        match w {
            Write::AddJob(new) => {
                if self.jobs.contains_key(&new.id) {
                    return Ok(Some(Applied::Duplicate));
                }
                if let Some(p) = &new.printer_id {
                    if !self.printers.contains_key(p) {
                        return Err(format!("job {} for unknown printer {p}", new.id));
                    }
                }
                let state = if new.gcode_path.is_some() {
                    JobState::Ready
                } else {
                    JobState::Queued
                };
                self.order.push(new.id.clone());
                self.jobs.insert(new.id.clone(), job_row(new, state));
            }
            Write::Job { id, to, .. } => {
                let job = self
                    .jobs
                    .get_mut(id)
                    .ok_or_else(|| format!("transition of unknown job {id}"))?;
                if !job_transition_allowed(job.state, *to) {
                    return Err(format!("job {id}: illegal {} -> {}", job.state, to));
                }
                job.state = *to;
            }
            Write::JobFile { id, path, .. } => {
                let job = self
                    .jobs
                    .get_mut(id)
                    .ok_or_else(|| format!("file of unknown job {id}"))?;
                job.gcode_path = Some(path.clone());
            }
            Write::JobProgress { id, lines_done, .. } => {
                let job = self
                    .jobs
                    .get_mut(id)
                    .ok_or_else(|| format!("progress of unknown job {id}"))?;
                job.lines_done = *lines_done;
            }
            Write::Printer {
                id,
                state,
                plate_clear,
                current_job,
            } => {
                let p = self
                    .printers
                    .get_mut(id)
                    .ok_or_else(|| format!("unknown printer {id}"))?;
                if !printer_transition_allowed(p.state, *state) {
                    return Err(format!("printer {id}: illegal {} -> {}", p.state, state));
                }
                let back_to_idle = *state == PrinterState::Idle
                    && !matches!(p.state, PrinterState::Idle | PrinterState::Offline);
                if back_to_idle && *plate_clear != Some(true) {
                    return Err(format!("printer {id}: idle without a clear plate"));
                }
                p.plate_clear =
                    if matches!(state, PrinterState::AwaitingClear | PrinterState::Printing) {
                        false
                    } else {
                        plate_clear.unwrap_or(p.plate_clear)
                    };
                p.state = *state;
                if let Some(job) = current_job {
                    p.current_job = job.clone();
                }
            }
            Write::PrinterFinished { id, job, outcome } => {
                let p = self
                    .printers
                    .get_mut(id)
                    .ok_or_else(|| format!("unknown printer {id}"))?;
                p.last_job = job.clone();
                p.last_outcome = outcome.clone();
            }
            Write::Identity {
                printer,
                role,
                identity,
            } => {
                if !self.printers.contains_key(printer) {
                    return Err(format!("identity of unknown printer {printer}"));
                }
                let key = (printer.clone(), *role == IdentityRole::Held);
                match identity {
                    Some(identity) => {
                        let row = IdentityRow {
                            printer_id: printer.clone(),
                            role: *role,
                            identity: identity.clone(),
                        };
                        self.identities.insert(key, row);
                    }
                    None => {
                        self.identities.remove(&key);
                    }
                }
            }
            Write::Purge { .. } => {
                // Retention never touches open jobs; nothing to model.
                return Ok(Some(Applied::Purged(Vec::<PurgedJob>::new())));
            }
        }
        Ok(None)
    }
}

fn job_row(new: &crate::store::NewJob, state: JobState) -> Job {
    Job {
        id: new.id.clone(),
        printer_id: new.printer_id.clone(),
        source: new.source,
        model_url: new.model_url.clone(),
        gcode_path: new.gcode_path.clone(),
        filament: new.filament.clone(),
        priority: new.priority,
        estimated_s: new.estimated_s,
        state,
        reason: None,
        lines_done: 0,
        lines_total: None,
        bytes_done: 0,
        bytes_total: None,
        progress: 0.0,
        created_at: 0,
        started_at: None,
        finished_at: None,
        updated_at: 0,
        params: new.params.clone(),
        sha256: new.sha256.clone(),
    }
}
