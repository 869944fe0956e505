//! Store-and-forward accounting: which outbox rows (read from SQLite while
//! the broker was unreachable) reached the farm, how many times, and in
//! which order.
//!
//! Every outbox row gets a per-gateway `seq`, which the daemon writes into
//! JSON objects. The seed's `<prefix>printers` payload is a bare JSON list,
//! so it cannot carry one: those rows are matched by position and payload.
//! QoS 1 may repeat a message; a repeat is counted, never a loss.

use super::mirror::Msg;
use super::rig::Row;
use super::shapes::{kind_of, Kind};
use std::collections::BTreeSet;

/// One outbox message as the farm saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Seq(u64),
    List(Vec<u8>),
}

/// The outbox messages among `msgs` (volatile heartbeats, the gateway
/// status and the test's own publishes carry no seq and are left out).
pub fn items(prefix: &str, msgs: &[Msg]) -> Vec<Item> {
    msgs.iter()
        .filter_map(|m| match kind_of(prefix, &m.topic)? {
            Kind::Printers => Some(Item::List(m.payload.clone())),
            Kind::Inbound | Kind::GatewayStatus => None,
            _ => m.seq().map(Item::Seq),
        })
        .collect()
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Accounting {
    /// Rows the outbox held.
    pub produced: usize,
    /// Of those, rows the farm saw at least once.
    pub delivered: usize,
    /// Extra copies of those rows (QoS 1 redelivery).
    pub duplicates: usize,
    pub lost: usize,
    /// Of `produced`, rows that are events.
    pub events: usize,
}

/// Accounts for the `held` outbox rows given what the farm saw `before` the
/// link came back and `after` it. Rows must arrive in seq order (repeats
/// aside); anything else is an error naming the message.
pub fn account(
    prefix: &str,
    held: &[Row],
    before: &[Msg],
    after: &[Msg],
) -> Result<Accounting, String> {
    let list_topic = format!("{prefix}printers");
    let is_list = |r: &Row| r.topic == list_topic;
    let seen_before: BTreeSet<u64> = items(prefix, before)
        .into_iter()
        .filter_map(|i| match i {
            Item::Seq(n) => Some(n),
            Item::List(_) => None,
        })
        .collect();
    let last = held.last().map_or(0, |r| r.seq);
    let mut acc = Accounting {
        produced: held.len(),
        events: held
            .iter()
            .filter(|r| kind_of(prefix, &r.topic) == Some(Kind::Event))
            .count(),
        ..Accounting::default()
    };
    let mut matched_seqs = BTreeSet::new();
    let mut matched_lists: Vec<&[u8]> = Vec::new();
    let mut next = 0;
    // Rows the farm already had when the link came back (acked too late).
    let skip = |next: &mut usize, acc: &mut Accounting| {
        while let Some(r) = held.get(*next) {
            if is_list(r) || !seen_before.contains(&r.seq) {
                break;
            }
            acc.delivered += 1;
            *next += 1;
        }
    };
    skip(&mut next, &mut acc);
    for item in items(prefix, after) {
        let expected = held.get(next);
        let hit = match (&item, expected) {
            (Item::Seq(n), Some(r)) => !is_list(r) && r.seq == *n,
            (Item::List(p), Some(r)) => is_list(r) && r.payload == *p,
            (_, None) => false,
        };
        if hit {
            if let Item::Seq(n) = item {
                matched_seqs.insert(n);
            } else if let Some(r) = expected {
                matched_lists.push(&r.payload);
            }
            acc.delivered += 1;
            next += 1;
            skip(&mut next, &mut acc);
            continue;
        }
        let repeat = match &item {
            Item::Seq(n) => seen_before.contains(n) || matched_seqs.contains(n),
            Item::List(p) => matched_lists.iter().any(|l| l == p),
        };
        let later = next == held.len()
            && match &item {
                Item::Seq(n) => *n > last,
                Item::List(_) => true,
            };
        if repeat {
            acc.duplicates += 1;
        } else if !later {
            return Err(format!(
                "{item:?} arrived while row {:?} was still missing",
                expected.map(|r| (r.seq, &r.topic))
            ));
        }
    }
    acc.lost = acc.produced - acc.delivered;
    Ok(acc)
}

/// Checks the whole stream the farm saw: each seq's first copy comes after
/// every smaller seq's, and every seq from 1 to the highest arrived, except
/// where `<prefix>printers` messages (no seq) sat in the gap, one per
/// missing seq at least. Returns (distinct seqs, repeats).
pub fn check_stream(prefix: &str, msgs: &[Msg]) -> (usize, usize) {
    let mut seen = BTreeSet::new();
    let (mut repeats, mut highest, mut lists) = (0, 0, 0);
    for item in items(prefix, msgs) {
        let Item::Seq(n) = item else {
            lists += 1;
            continue;
        };
        if !seen.insert(n) {
            repeats += 1;
            continue;
        }
        assert!(n > highest, "seq {n} first arrived after seq {highest}");
        assert!(
            n - highest - 1 <= lists,
            "seqs {}..{n} never arrived ({lists} list messages in between)",
            highest + 1
        );
        (highest, lists) = (n, 0);
    }
    (seen.len(), repeats)
}
