//! A deterministic simulation of the whole gateway around the farm core
//! (FoundationDB's simulator and TigerBeetle's VOPR, at printgate's scale).
//!
//! One seed decides everything: the virtual clock, which input comes next,
//! and every fault: printers unplugged, reset, silent or refusing, running
//! out of filament, or swapped for another board on their port; store
//! writes failing (a full disk) or answering late; a broker that duplicates,
//! replays retained messages and delivers stale ones; a queue manager that
//! errs or is empty; robots that are late, duplicated or about the wrong
//! print; operators cancelling, e-stopping, pausing, clearing and accepting
//! swapped boards at any moment; and the gateway crashing at any step,
//! restarting from what was durable. After every step [`check`] verifies the invariants; a failure
//! prints a short trace and the seed, and `SEED=n` replays exactly that run.

mod check;
mod plan;
mod printer;
mod store;
#[cfg(test)]
mod tests;
mod traffic;

use super::core::{AckId, Effect, FarmCore, Input, PersistError, ReplyId, Snapshot};
use super::messages::Messages;
use crate::mqtt::topics::Topics;
use crate::rng::Xorshift64;
use plan::settings;
pub use plan::{Failure, Faults, Outcome, Plan};
use printer::PrinterModel;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use store::ModelStore;

/// What a pending answer will be, and when it is due.
struct Pending {
    due: u64,
    input: Input,
}

/// What an acknowledgement or reply stands for.
#[derive(Debug, Clone)]
enum Promise {
    Job(String),
    Cancel(String),
    /// An operator accepts the board the core holds `printer` for (`None`:
    /// the printer was not held, so it must be refused).
    Accept {
        printer: String,
        board: Option<u8>,
    },
}

pub struct World {
    seed: u64,
    plan: Plan,
    rng: Xorshift64,
    /// Runouts and prompt answers (see `Faults::runout`).
    runout_rng: Xorshift64,
    /// Port swaps and operators accepting them (see `Faults::swap`).
    swap_rng: Xorshift64,
    step: u64,
    secs: u64,
    base: Instant,
    core: FarmCore,
    store: ModelStore,
    printers: BTreeMap<String, PrinterModel>,
    answers: Vec<Pending>,
    acks: BTreeMap<AckId, Promise>,
    replies: BTreeMap<ReplyId, Promise>,
    next_id: u64,
    /// Jobs whose durable acceptance was promised (acked or inserted).
    promised: BTreeSet<String>,
    /// Assignments delivered but never acked: the broker redelivers them.
    unacked: BTreeMap<AckId, (String, crate::mqtt::payload::Assignment)>,
    traffic: traffic::Traffic,
    trace: VecDeque<String>,
    outcome: Outcome,
    faults_on: bool,
    /// Broken invariants found while executing effects.
    violations: Vec<String>,
}

impl World {
    pub fn new(seed: u64, plan: Plan) -> World {
        let mut rng = Xorshift64::seeded(seed);
        let ids: Vec<String> = (0..plan.printers).map(|i| format!("p{i}")).collect();
        let store = ModelStore::new(&ids);
        let printers = ids
            .iter()
            .map(|id| (id.clone(), PrinterModel::new(id, rng.chance(0.5))))
            .collect();
        let base = Instant::now();
        let core = Self::boot(&plan, &store, base, 0);
        let mut w = World {
            seed,
            traffic: traffic::Traffic::new(&ids),
            plan,
            rng,
            runout_rng: Xorshift64::seeded(seed ^ 0x5255_4e4f_5554),
            swap_rng: Xorshift64::seeded(seed ^ 0x5357_4150),
            step: 0,
            secs: 0,
            base,
            core,
            store,
            printers,
            answers: Vec::new(),
            acks: BTreeMap::new(),
            replies: BTreeMap::new(),
            next_id: 1,
            promised: BTreeSet::new(),
            unacked: BTreeMap::new(),
            trace: VecDeque::new(),
            outcome: Outcome::default(),
            faults_on: true,
            violations: Vec::new(),
        };
        w.drain();
        w
    }

    /// A gateway process starting from what the store holds.
    fn boot(plan: &Plan, store: &ModelStore, base: Instant, secs: u64) -> FarmCore {
        let snapshot = Snapshot {
            printers: store
                .printers
                .values()
                .map(|r| (r.id.clone(), None, Some(r.clone())))
                .collect(),
            jobs: store.open_jobs(),
            identities: store.identities(),
        };
        let wall = UNIX_EPOCH + Duration::from_secs(1_750_000_000 + secs);
        let msgs = Messages::new(Some(Topics::new("gw-sim")));
        FarmCore::new(
            settings(plan),
            msgs,
            snapshot,
            base + Duration::from_secs(secs),
            wall,
        )
    }

    fn now(&self) -> (Instant, SystemTime) {
        (
            self.base + Duration::from_secs(self.secs),
            UNIX_EPOCH + Duration::from_secs(1_750_000_000 + self.secs),
        )
    }

    fn note(&mut self, line: String) {
        let keep = if std::env::var_os("SIM_TRACE").is_some() {
            usize::MAX
        } else {
            60
        };
        if self.trace.len() >= keep {
            self.trace.pop_front();
        }
        self.trace
            .push_back(format!("#{} t={}s {line}", self.step, self.secs));
    }

    fn fault(&mut self, kind: &'static str, p: f64) -> bool {
        let hit = self.faults_on && self.rng.chance(p);
        if hit {
            *self.outcome.faults.entry(kind).or_default() += 1;
        }
        hit
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Feeds one input to the core and carries out what it asks.
    fn feed(&mut self, input: Input) {
        let label = describe(&input);
        self.note(label);
        let (now, wall) = self.now();
        self.core.handle(now, wall, input);
        self.drain();
    }

    fn answer_in(&mut self, steps: u64, input: Input) {
        self.answers.push(Pending {
            due: self.step + steps,
            input,
        });
    }

    fn drain(&mut self) {
        while let Some(effect) = self.core.poll_effect() {
            self.execute(effect);
        }
    }

    fn execute(&mut self, effect: Effect) {
        match effect {
            Effect::Persist { op, batch } => {
                let result = if self.fault("store_fail", self.plan.faults.store_fail) {
                    Err(PersistError {
                        message: "disk full".into(),
                        retry: true,
                    })
                } else {
                    match self.store.apply(&batch) {
                        Ok(a) => {
                            self.traffic.observe(&batch.outbox);
                            Ok(a)
                        }
                        Err(e) => {
                            self.violations.push(format!("illegal store write: {e}"));
                            Err(PersistError {
                                message: e,
                                retry: false,
                            })
                        }
                    }
                };
                self.note(format!("persist {op}: {:?}", result.as_ref().map(|_| ())));
                let slow = self.fault("store_slow", self.plan.faults.store_slow);
                let delay = if slow { 1 + self.rng.below(5) } else { 0 };
                let input = Input::Persisted { op, result };
                if delay == 0 {
                    let (now, wall) = self.now();
                    self.core.handle(now, wall, input);
                } else {
                    self.answer_in(delay, input);
                }
            }
            Effect::Printer { printer, cmd } => {
                // 5: the farm never tells a printer to start a job whose
                // cancel or e-stop it acknowledged.
                if let crate::printer::PrinterCommand::StartJob { job_id, .. } = &cmd {
                    if self.traffic.stopped.contains(job_id) {
                        self.violations.push(format!(
                            "{printer}: told to start job {job_id} after its cancel or e-stop was acknowledged"
                        ));
                    }
                }
                if let Some(p) = self.printers.get_mut(&printer) {
                    if matches!(cmd, crate::printer::PrinterCommand::EmergencyStop) {
                        p.estops_from_core += 1;
                    }
                    p.commands.push_back(cmd);
                }
            }
            Effect::Ack(id) => {
                self.unacked.remove(&id);
                if let Some(Promise::Job(job)) = self.acks.remove(&id) {
                    self.promised.insert(job);
                }
            }
            Effect::Reply { id, response } => {
                if let Some(promise) = self.replies.remove(&id) {
                    self.traffic
                        .on_reply(&promise, &response, &mut self.printers);
                    match (&promise, response.ok) {
                        (Promise::Job(job), true) => {
                            self.promised.insert(job.clone());
                        }
                        (Promise::Accept { printer, board }, ok) => {
                            self.note(format!("accept {printer} as board {board:?}: ok={ok}"));
                            if let Some(p) = self.printers.get_mut(printer) {
                                p.accepting = None;
                                match (board, ok) {
                                    (Some(b), true) => {
                                        p.accepted = *b;
                                        *self.outcome.faults.entry("swap_accepted").or_default() +=
                                            1;
                                    }
                                    (None, true) => self.violations.push(format!(
                                        "{printer}: an accept of a printer not held was answered ok"
                                    )),
                                    (_, false) => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            Effect::Publish { payload, .. } => self.traffic.observe_payload(&payload),
            other => {
                let mut sink = AnswerSink {
                    step: self.step,
                    answers: &mut self.answers,
                    faults_on: self.faults_on,
                    faults: self.plan.faults,
                    outcome: &mut self.outcome,
                };
                self.traffic.external(other, &mut self.rng, &mut sink);
            }
        }
    }

    /// A gateway crash: everything in memory and in flight is gone; the
    /// printers keep their plates; the broker will redeliver unacked messages.
    fn crash(&mut self) {
        self.outcome.crashes += 1;
        self.note("CRASH: gateway killed and restarted".into());
        self.answers.clear();
        self.acks.clear();
        self.replies.clear();
        for p in self.printers.values_mut() {
            let known = self
                .store
                .identities
                .get(&(p.id.clone(), false))
                .map(|row| printer::board_of(&row.identity.firmware));
            // An accept whose answer the crash cut off may have landed: the
            // store tells (the operator would see the printer released).
            if p.accepting.is_some() && p.accepting == known {
                p.accepted = p.accepting.unwrap_or(p.accepted);
            }
            p.gateway_crashed();
            // A first sight not yet stored is made again after the restart.
            p.first_heard &= known.is_some();
        }
        self.traffic.gateway_crashed();
        self.core = Self::boot(&self.plan, &self.store, self.base, self.secs);
        self.drain();
        // Redelivery of what was never acknowledged.
        let redeliver: Vec<(String, crate::mqtt::payload::Assignment)> =
            std::mem::take(&mut self.unacked).into_values().collect();
        for (printer, a) in redeliver {
            self.deliver_assignment(printer, a);
        }
    }

    fn deliver_assignment(&mut self, printer: String, a: crate::mqtt::payload::Assignment) {
        let ack = self.id();
        self.acks.insert(ack, Promise::Job(a.job_id.clone()));
        self.unacked.insert(ack, (printer.clone(), a.clone()));
        self.feed(Input::Assignment {
            printer,
            assignment: a,
            warnings: Vec::new(),
            ack: Some(ack),
        });
    }

    /// One step: the seed picks what happens.
    fn tick_once(&mut self) -> Result<(), String> {
        self.step += 1;
        let roll = self.rng.below(100);
        match roll {
            0..=19 => {
                self.secs += 1 + self.rng.below(3);
                self.feed(Input::Tick);
            }
            20..=44 => self.printer_step(),
            45..=59 => self.deliver_due_answer(),
            60..=74 => self.deliver_report(),
            75..=94 if !self.faults_on && self.rng.chance(0.2) => self.resume_paused(),
            75..=94 => self.traffic_step(),
            _ => self.fault_step(),
        }
        check::after_step(self)
    }

    /// After the faults: the operator resumes what was left paused.
    fn resume_paused(&mut self) {
        let paused: Vec<String> = self
            .core
            .printers()
            .filter(|p| p.phase() == Some(super::core::model::Phase::Paused))
            .map(|p| p.id.clone())
            .collect();
        for printer in paused {
            let msg = crate::mqtt::payload::CommandMsg {
                command: crate::mqtt::payload::Command::Resume,
                job_id: None,
                timestamp: None,
                choice: None,
            };
            self.feed(Input::Command {
                printer,
                msg,
                retained: false,
                estop_sent: false,
                ack: None,
            });
        }
    }

    fn printer_step(&mut self) {
        let ids: Vec<String> = self.printers.keys().cloned().collect();
        let id = &ids[self.rng.index(ids.len())];
        let lines = 1 + self.rng.below(6);
        if let Some(p) = self.printers.get_mut(id) {
            p.step(lines);
        }
    }

    fn deliver_report(&mut self) {
        let ready: Vec<String> = self
            .printers
            .iter()
            .filter(|(_, p)| !p.reports.is_empty())
            .map(|(id, _)| id.clone())
            .collect();
        if ready.is_empty() {
            return;
        }
        let id = ready[self.rng.index(ready.len())].clone();
        let Some(p) = self.printers.get_mut(&id) else {
            return;
        };
        if let Some(r) = p.reports.pop_front() {
            if let crate::printer::ReportKind::Connected(fw) = &r.kind {
                // The first board the farm hears is the printer's.
                if !std::mem::replace(&mut p.first_heard, true) {
                    p.accepted = printer::board_of(&fw.name);
                }
            }
            self.feed(Input::Report(r));
        }
    }

    fn deliver_due_answer(&mut self) {
        let due: Vec<usize> = self
            .answers
            .iter()
            .enumerate()
            .filter(|(_, a)| a.due <= self.step)
            .map(|(i, _)| i)
            .collect();
        if due.is_empty() {
            return;
        }
        let pick = due[self.rng.index(due.len())];
        let answer = self.answers.swap_remove(pick);
        self.feed(answer.input);
    }

    fn traffic_step(&mut self) {
        let mut traffic = std::mem::take(&mut self.traffic);
        let inputs = traffic.generate(self);
        self.traffic = traffic;
        for input in inputs {
            match input {
                traffic::Inject::Assignment(printer, a) => self.deliver_assignment(printer, a),
                traffic::Inject::Control(req, promise) => {
                    let reply = self.id();
                    self.replies.insert(reply, promise);
                    self.feed(Input::Control { req, reply });
                }
                traffic::Inject::Input(input) => self.feed(input),
                traffic::Inject::Command {
                    printer,
                    msg,
                    retained,
                    estop_sent,
                    job,
                } => {
                    let stops = matches!(
                        msg.command,
                        crate::mqtt::payload::Command::Cancel
                            | crate::mqtt::payload::Command::EmergencyStop
                    );
                    self.traffic.take_accepted(&printer);
                    self.feed(Input::Command {
                        printer: printer.clone(),
                        msg,
                        retained,
                        estop_sent,
                        ack: None,
                    });
                    if stops && self.traffic.take_accepted(&printer) {
                        if let Some(job) = job {
                            self.traffic.stopped.insert(job);
                        }
                    }
                }
            }
        }
    }

    fn fault_step(&mut self) {
        let f = self.plan.faults;
        let ids: Vec<String> = self.printers.keys().cloned().collect();
        let id = ids[self.rng.index(ids.len())].clone();
        if self.fault("crash", f.crash) {
            self.crash();
            return;
        }
        let (unplug, reset, silent) = (
            self.fault("unplug", f.unplug * 10.0),
            self.fault("reset", f.reset * 10.0),
            self.fault("silent", f.silent * 10.0),
        );
        self.runout_step();
        self.swap_step();
        if let Some(p) = self.printers.get_mut(&id) {
            if unplug {
                p.unplug();
            } else if reset {
                p.reset();
            } else if silent {
                p.silent = 5;
            } else {
                p.replug();
            }
        }
    }

    /// A printer runs out of filament and asks a person; an operator
    /// answers an open prompt over MQTT (sometimes with a button the
    /// prompt does not have).
    fn runout_step(&mut self) {
        let rate = self.plan.faults.runout * 10.0;
        if !self.faults_on || rate <= 0.0 {
            return;
        }
        let ids: Vec<String> = self.printers.keys().cloned().collect();
        let id = ids[self.runout_rng.index(ids.len())].clone();
        if self.runout_rng.chance(rate) {
            if let Some(p) = self.printers.get_mut(&id) {
                if p.runout() {
                    *self.outcome.faults.entry("runout").or_default() += 1;
                }
            }
        }
        let open = self.printers.get(&id).is_some_and(|p| p.prompt_open);
        if open && self.runout_rng.chance(0.5) {
            let choice = u32::from(self.runout_rng.chance(0.2));
            let msg = crate::mqtt::payload::CommandMsg {
                command: crate::mqtt::payload::Command::PromptAnswer,
                job_id: None,
                timestamp: Some(crate::mqtt::payload::rfc3339(
                    UNIX_EPOCH + Duration::from_secs(1_750_000_000 + self.secs),
                )),
                choice: Some(choice),
            };
            self.feed(Input::Command {
                printer: id,
                msg,
                retained: false,
                estop_sent: false,
                ack: None,
            });
        }
    }

    /// Two boards swap ports; an operator who sees a printer held for its
    /// identity accepts what its port answers now (and now and then one
    /// accepts a printer that is not held: refused).
    fn swap_step(&mut self) {
        let rate = self.plan.faults.swap * 10.0;
        if rate <= 0.0 {
            return;
        }
        let ids: Vec<String> = self.printers.keys().cloned().collect();
        let id = ids[self.swap_rng.index(ids.len())].clone();
        if self.faults_on && self.swap_rng.chance(rate) {
            if let Some(p) = self.printers.get_mut(&id) {
                p.swap_board();
                let board = p.board;
                *self.outcome.faults.entry("swap").or_default() += 1;
                self.note(format!("SWAP: board {board} now answers on {id}'s port"));
            }
        }
        let held = self
            .core
            .printers()
            .find(|p| p.id == id)
            .and_then(|p| p.identity.held.as_ref())
            .map(|h| h.firmware.clone());
        let accept = match held {
            Some(_) => self.swap_rng.chance(0.3),
            None => self.faults_on && self.swap_rng.chance(0.02),
        };
        if !accept {
            return;
        }
        let board = held.as_deref().map(printer::board_of);
        if let Some(p) = self.printers.get_mut(&id) {
            p.accepting = board;
        }
        let reply = self.id();
        self.replies.insert(
            reply,
            Promise::Accept {
                printer: id.clone(),
                board,
            },
        );
        self.feed(Input::Control {
            req: super::core::ControlRequest::AcceptIdentity { printer: id },
            reply,
        });
    }

    /// Runs the plan; `Err` on the first broken invariant.
    pub fn run(self) -> Result<Outcome, Failure> {
        self.run_keep().map(|(o, _)| o)
    }

    /// [`World::run`], also giving back the store for closer checks.
    pub fn run_keep(mut self) -> Result<(Outcome, ModelStore), Failure> {
        for _ in 0..self.plan.steps {
            self.guarded_step()?;
        }
        // After the faults everything must settle, within a bound: each
        // queued job needs a few hundred steps on its printer.
        self.quiesce();
        let mut settled = check::at_end(&self);
        let mut left = self.plan.quiesce * 20;
        while settled.is_err() && left > 0 {
            for _ in 0..self.plan.quiesce.min(left) {
                self.guarded_step()?;
            }
            left = left.saturating_sub(self.plan.quiesce);
            settled = check::at_end(&self);
        }
        if let Err(v) = settled {
            return Err(self.failure(v));
        }
        self.outcome.jobs_ended = self
            .store
            .jobs
            .values()
            .filter(|j| j.state.is_terminal())
            .count();
        self.outcome.jobs_completed = self
            .store
            .jobs
            .values()
            .filter(|j| j.state == crate::lifecycle::JobState::Completed)
            .count();
        Ok((self.outcome, self.store))
    }

    fn guarded_step(&mut self) -> Result<(), Failure> {
        let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.tick_once()));
        let broken = match step {
            Ok(Ok(())) => None,
            Ok(Err(v)) => Some(v),
            Err(panic) => Some(format!("panic: {}", panic_text(&panic))),
        };
        match broken {
            Some(violation) => Err(self.failure(violation)),
            None => Ok(()),
        }
    }

    /// The end of the faults: everything plugged in, no more new work.
    fn quiesce(&mut self) {
        self.faults_on = false;
        self.note("QUIESCE: no more faults or new jobs".into());
        self.traffic.stop_new_work();
        for p in self.printers.values_mut() {
            p.replug();
            p.silent = 0;
        }
    }

    fn failure(&self, violation: String) -> Failure {
        Failure {
            seed: self.seed,
            violation,
            trace: self.trace.iter().cloned().collect(),
        }
    }
}

/// Where external effects put their answers.
pub struct AnswerSink<'a> {
    step: u64,
    answers: &'a mut Vec<Pending>,
    faults_on: bool,
    faults: Faults,
    outcome: &'a mut Outcome,
}

impl AnswerSink<'_> {
    fn push(&mut self, delay: u64, input: Input) {
        self.answers.push(Pending {
            due: self.step + delay,
            input,
        });
    }

    fn fault(&mut self, rng: &mut Xorshift64, kind: &'static str, p: f64) -> bool {
        let hit = self.faults_on && rng.chance(p);
        if hit {
            *self.outcome.faults.entry(kind).or_default() += 1;
        }
        hit
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// A short line for the trace.
fn describe(input: &Input) -> String {
    let text = format!("{input:?}");
    let text: String = text.chars().take(160).collect();
    format!("in: {text}")
}
