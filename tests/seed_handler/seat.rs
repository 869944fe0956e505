//! Where the job handler believes each printer is, and how a progress or
//! robot message moves it: seed 000's rules, plus the two guards any handler
//! on a real broker needs (see [`Seats::on_progress`]). Pure: no clock, no
//! I/O; the handler stamps and records what these functions return.

use std::collections::BTreeMap;
use std::fmt;

/// The handler's view of one printer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seat {
    /// Can take a job now.
    Available,
    /// The handler published this job and marked the printer busy; the
    /// printer has not yet said `printing` for it.
    Assigned(String),
    /// The printer said `printing` (with this job id, if it gave one).
    Printing(Option<String>),
    /// `idle` + `progress: 100` (for this job): the plate waits for a robot.
    AwaitingCleaning(Option<String>),
}

impl fmt::Display for Seat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let job = |j: &Option<String>| j.clone().unwrap_or_else(|| "-".into());
        match self {
            Seat::Available => write!(f, "available"),
            Seat::Assigned(j) => write!(f, "assigned({j})"),
            Seat::Printing(j) => write!(f, "printing({})", job(j)),
            Seat::AwaitingCleaning(j) => write!(f, "awaiting_cleaning({})", job(j)),
        }
    }
}

/// Why a printer moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// First heard during discovery.
    Discovered,
    /// The handler assigned it this job.
    Assigned,
    /// It said `printing`.
    Printing,
    /// `idle` + 100 for this job: printed (the seed's completion signal).
    Completed(Option<String>),
    /// `idle` below 100 after `printing`: the job ended before the plate
    /// (e.g. its model could not be downloaded).
    EndedBeforePlate(Option<String>),
    /// A robot reported `pick` `completed`.
    Cleared,
}

/// A move of one printer's seat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub from: Option<Seat>,
    pub to: Seat,
    pub why: Why,
}

#[derive(Clone, Debug)]
struct Slot {
    seat: Seat,
    /// When it last became available (a counter): the longest waiting
    /// printer gets the next job.
    since: u64,
    /// The job whose plate a robot cleared last (`Some(None)`: a plate
    /// with no job known, e.g. at the gateway's first start).
    last_cleared: Option<Option<String>>,
}

/// Every printer the handler knows.
#[derive(Default)]
pub struct Seats {
    slots: BTreeMap<String, Slot>,
    /// Printers are registered only while this holds (the seed's discovery
    /// phase); later newcomers are refused.
    pub discovering: bool,
    clock: u64,
}

impl Seats {
    pub fn new() -> Seats {
        Seats {
            discovering: true,
            ..Seats::default()
        }
    }

    pub fn seat(&self, printer: &str) -> Option<&Seat> {
        self.slots.get(printer).map(|s| &s.seat)
    }

    pub fn all(&self) -> BTreeMap<String, Seat> {
        self.slots
            .iter()
            .map(|(p, s)| (p.clone(), s.seat.clone()))
            .collect()
    }

    pub fn any_available(&self) -> bool {
        self.slots.values().any(|s| s.seat == Seat::Available)
    }

    /// Printers whose plate waits for a robot (the `device/printers` list).
    pub fn awaiting_cleaning(&self) -> Vec<String> {
        self.slots
            .iter()
            .filter(|(_, s)| matches!(s.seat, Seat::AwaitingCleaning(_)))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// The printer that has been available longest, now busy with `job`.
    pub fn assign_next(&mut self, job: &str) -> Option<(String, Change)> {
        let (printer, _) = self
            .slots
            .iter()
            .filter(|(_, s)| s.seat == Seat::Available)
            .min_by_key(|(_, s)| s.since)?;
        let printer = printer.clone();
        let change = self.set(&printer, Seat::Assigned(job.to_owned()), Why::Assigned);
        Some((printer, change))
    }

    /// A progress message: `Ok(None)` when nothing changes, `Err(reason)`
    /// when the handler sets the message aside.
    ///
    /// The seed's rules (`idle` → available at discovery, `printing` → busy,
    /// `idle` + 100 → awaiting cleaning, robot → available) plus two guards,
    /// because a message can cross an assignment on the broker: a heartbeat
    /// sent just before the printer received its job says `idle`, and a
    /// repeat of an earlier completion says `idle` + 100 with the earlier
    /// job's id. So, once assigned, `idle` below 100 counts only after the
    /// printer said `printing`, and `idle` + 100 only with the assigned
    /// job's id (or, for a printer that is available, any job but the one
    /// whose plate was just cleared, `null` included).
    pub fn on_progress(
        &mut self,
        printer: &str,
        status: &str,
        progress: f64,
        job: Option<&str>,
    ) -> Result<Option<Change>, String> {
        let done = progress >= 100.0;
        let job_owned = job.map(str::to_owned);
        let Some(slot) = self.slots.get(printer) else {
            if !self.discovering {
                return Err("not discovered during the discovery phase".into());
            }
            let seat = match (status, done) {
                ("idle", false) => Seat::Available,
                ("idle", true) => Seat::AwaitingCleaning(job_owned),
                ("printing", _) => Seat::Printing(job_owned),
                _ => return Err(format!("status {status:?} is not one of the seed's")),
            };
            return Ok(Some(self.set(printer, seat, Why::Discovered)));
        };
        let seat = slot.seat.clone();
        let same = |j: &String| job == Some(j.as_str());
        let to = match (status, done, &seat) {
            ("printing", _, Seat::Assigned(y)) if same(y) => {
                (Seat::Printing(Some(y.clone())), Why::Printing)
            }
            ("printing", _, Seat::Assigned(y)) => {
                return Err(format!("printing {job:?} while {y} is assigned"))
            }
            ("printing", _, Seat::Printing(_)) => return Ok(None),
            ("printing", _, Seat::Available | Seat::AwaitingCleaning(_)) => {
                (Seat::Printing(job_owned), Why::Printing)
            }
            ("idle", true, Seat::Assigned(y) | Seat::Printing(Some(y))) if same(y) => (
                Seat::AwaitingCleaning(job_owned.clone()),
                Why::Completed(job_owned),
            ),
            ("idle", true, Seat::Printing(None)) => (
                Seat::AwaitingCleaning(job_owned.clone()),
                Why::Completed(job_owned),
            ),
            ("idle", true, Seat::Assigned(y) | Seat::Printing(Some(y))) => {
                return Err(format!("completion of {job:?} while {y} is on it"))
            }
            ("idle", true, Seat::Available) if slot.last_cleared.as_ref() == Some(&job_owned) => {
                return Err(format!("repeat of {job:?}, whose plate was cleared"))
            }
            ("idle", true, Seat::Available) => (
                Seat::AwaitingCleaning(job_owned.clone()),
                Why::Completed(job_owned),
            ),
            ("idle", true, Seat::AwaitingCleaning(_)) => return Ok(None),
            ("idle", false, Seat::Assigned(y)) => {
                return Err(format!("idle before it said printing for {y}"))
            }
            ("idle", false, Seat::Printing(j)) => {
                (Seat::Available, Why::EndedBeforePlate(j.clone()))
            }
            ("idle", false, Seat::Available) => return Ok(None),
            ("idle", false, Seat::AwaitingCleaning(_)) => {
                return Err("idle while its plate awaits a robot".into())
            }
            _ => return Err(format!("status {status:?} is not one of the seed's")),
        };
        Ok(Some(self.set(printer, to.0, to.1)))
    }

    /// A robot's `pick` `completed` for `printer`.
    pub fn on_robot(&mut self, printer: &str) -> Result<Change, String> {
        match self.slots.get(printer).map(|s| s.seat.clone()) {
            Some(Seat::AwaitingCleaning(job)) => {
                let change = self.set(printer, Seat::Available, Why::Cleared);
                if let Some(slot) = self.slots.get_mut(printer) {
                    slot.last_cleared = Some(job);
                }
                Ok(change)
            }
            Some(seat) => Err(format!("robot clear while {seat}")),
            None => Err("robot clear of an unknown printer".into()),
        }
    }

    fn set(&mut self, printer: &str, to: Seat, why: Why) -> Change {
        self.clock += 1;
        let since = self.clock;
        let slot = self.slots.entry(printer.to_owned()).or_insert(Slot {
            seat: to.clone(),
            since,
            last_cleared: None,
        });
        let from = (why != Why::Discovered).then(|| slot.seat.clone());
        if to == Seat::Available && slot.seat != Seat::Available {
            slot.since = since;
        }
        slot.seat = to.clone();
        Change { from, to, why }
    }
}
