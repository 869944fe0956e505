//! The operator's control requests (the CLI over the local socket): live
//! status, local jobs (checked, stored, then moved into the spool without
//! ever replacing a file), cancel, and the printer commands.

use super::model::{spool_file_name, Job};
use super::persist::Tx;
use super::writes::After;
use super::{ControlRequest, Effect, FarmCore, ReplyId};
use crate::control::{LivePrinter, Response};
use crate::lifecycle::JobState;
use crate::printer::job_file::Summary;
use crate::store::{JobSource, NewJob, Write};
use std::path::PathBuf;

/// A local job on its way in.
#[derive(Debug)]
pub(super) struct LocalAdd {
    printer: String,
    priority: i64,
    upload: PathBuf,
    reply: ReplyId,
    /// The row exists; the file is being moved into place.
    placing: bool,
}

impl FarmCore {
    pub(super) fn on_control(&mut self, req: ControlRequest, reply: ReplyId) {
        let answer = match req {
            ControlRequest::Ping => Ok(Some("printgate is running".into())),
            ControlRequest::Status => {
                let response = self.live_status();
                self.push(Effect::Reply {
                    id: reply,
                    response,
                });
                return;
            }
            ControlRequest::AddJob {
                printer,
                priority,
                id,
                upload,
            } => self.add_local(printer, priority, id, upload, reply),
            ControlRequest::CancelJob { job } => {
                let holder = self
                    .printers
                    .values()
                    .find(|p| p.held_job() == Some(job.as_str()))
                    .map(|p| p.id.clone());
                match holder {
                    Some(printer) => Ok(self.cancel_held(&printer, Some(reply), None)),
                    None => self.cancel_waiting(&job, Some(reply), None),
                }
            }
            ControlRequest::AcceptIdentity { printer } => self.accept_identity(&printer).map(Some),
            ControlRequest::Printer { printer, msg } => {
                let answer = self.command(&printer, &msg, false, Some(reply));
                if let Some(shown) = answer.clone().transpose() {
                    self.answer_command(&printer, &msg, shown);
                }
                answer
            }
        };
        let response = match answer {
            Ok(None) => return,
            Ok(Some(text)) => Response::ok(text),
            Err(text) => Response::err(text),
        };
        self.reply(reply, response);
    }

    fn live_status(&self) -> Response {
        let printers = self
            .printers
            .values()
            .map(|p| LivePrinter {
                id: p.id.clone(),
                state: self.view(p).wire.state.to_owned(),
                plate_clear: p.plate_clear,
                connected: p.connected,
                job: p.held_job().map(str::to_owned),
                percent: p.percent,
                nozzle: p.temps.nozzle,
                nozzle_target: p.temps.nozzle_target,
                bed: p.temps.bed,
                bed_target: p.temps.bed_target,
                link: p.link,
            })
            .collect();
        Response {
            printers: Some(printers),
            ..Response::ok("printgate is running")
        }
    }

    /// Checks the upload first (on a blocking thread), then stores the job,
    /// then moves the file in: the job row exists before its file, and an
    /// id that exists already never touches that job's file.
    fn add_local(
        &mut self,
        printer: String,
        priority: i64,
        id: Option<String>,
        upload: PathBuf,
        reply: ReplyId,
    ) -> Result<Option<String>, String> {
        let refuse = |core: &mut FarmCore, msg: String| {
            core.push(Effect::RemoveFile {
                path: upload.clone(),
            });
            Err(msg)
        };
        if !self.printers.contains_key(&printer) {
            return refuse(self, format!("unknown printer {printer}"));
        }
        let id = match id {
            Some(id) => id,
            None => self.new_local_id(),
        };
        if let Err(e) = crate::jobspec::check_id(&id) {
            return refuse(self, format!("job id {id:?}: {e}"));
        }
        if self.jobs.contains_key(&id) || self.local_adds.contains_key(&id) {
            return refuse(self, format!("job {id} already exists"));
        }
        self.local_adds.insert(
            id.clone(),
            LocalAdd {
                printer,
                priority,
                upload: upload.clone(),
                reply,
                placing: false,
            },
        );
        self.push(Effect::Scan {
            job: id,
            path: upload,
        });
        Ok(None)
    }

    fn new_local_id(&mut self) -> String {
        let ms = self
            .wall
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let n = self.next_order;
        self.next_order += 1;
        format!("local-{ms}-{n}")
    }

    /// The upload was checked: store the job (its file name decided now).
    /// `true` when `job` was a local add.
    pub(super) fn on_local_scanned(&mut self, job: &str, result: &Result<Summary, String>) -> bool {
        let Some(add) = self.local_adds.get(job) else {
            return false;
        };
        if add.placing {
            return false;
        }
        let Some(add) = self.local_adds.remove(job) else {
            return false;
        };
        if let Err(e) = result {
            self.push(Effect::RemoveFile { path: add.upload });
            let response = Response::err(format!("job {job} rejected: {e}"));
            self.reply(add.reply, response);
            return true;
        }
        let dest = self.s.spool_dir.join(spool_file_name(job));
        let path = dest.to_string_lossy().into_owned();
        let filament = self
            .printers
            .get(&add.printer)
            .and_then(|p| p.filament.clone());
        let order = self.next_order;
        self.next_order += 1;
        self.jobs.insert(
            job.to_owned(),
            Job {
                id: job.to_owned(),
                printer: Some(add.printer.clone()),
                source: JobSource::Local,
                model_url: None,
                gcode_path: Some(path.clone()),
                filament: filament.clone(),
                priority: add.priority,
                estimated_s: None,
                sha256: None,
                params: None,
                state: JobState::Ready,
                order,
                stored: false,
                file_pending: true,
                stop_answer: None,
                stop: None,
            },
        );
        let new = NewJob {
            id: job.to_owned(),
            printer_id: Some(add.printer.clone()),
            source: JobSource::Local,
            model_url: None,
            gcode_path: Some(path),
            filament,
            priority: add.priority,
            estimated_s: None,
            params: None,
            sha256: None,
        };
        let mut tx = Tx::default();
        tx.write(Write::AddJob(new))
            .out(
                self.msgs
                    .event(&add.printer, "job_accepted", Some(job), Some("local file")),
            )
            .out(self.progress_item(&add.printer));
        let after = After::Accepted {
            job: job.to_owned(),
            acks: Vec::new(),
            reply: Some(add.reply),
            spool: Some((add.upload.clone(), dest)),
        };
        self.local_adds.insert(
            job.to_owned(),
            LocalAdd {
                placing: true,
                ..add
            },
        );
        self.commit(tx, after);
        true
    }

    pub(super) fn on_spooled(&mut self, job: &str, result: Result<(), String>) {
        let add = self.local_adds.remove(job);
        let response = match result {
            Ok(()) => {
                if let Some(j) = self.jobs.get_mut(job) {
                    j.file_pending = false;
                }
                let printer = add.as_ref().map_or("", |a| a.printer.as_str());
                Response {
                    job_id: Some(job.to_owned()),
                    ..Response::ok(format!("job {job} queued on {printer}"))
                }
            }
            Err(e) => {
                self.fail_waiting_job(job, &format!("cannot spool the file: {e}"));
                if let Some(a) = &add {
                    self.push(Effect::RemoveFile {
                        path: a.upload.clone(),
                    });
                }
                Response::err(format!("job {job}: cannot spool the file: {e}"))
            }
        };
        if let Some(a) = add {
            self.reply(a.reply, response);
        }
    }
}
