//! The link's bookkeeping of outbox messages taken but not yet PUBACKed,
//! and the mapping from rumqttc's packet ids back to outbox `seq`s.
//!
//! rumqttc hands out no packet id when a publish is queued; it reports
//! `Outgoing::Publish(pkid)` when the packet is written, in queue order, and
//! `Incoming::PubAck(pkid)` when the broker acknowledges it. So every QoS 1
//! publish the link queues is remembered in a FIFO, matched to the next
//! `Outgoing::Publish`, and then to its `PubAck`. No I/O, no clock.

use super::OutboxMessage;
use std::collections::{HashMap, VecDeque};

/// What a queued QoS 1 publish was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Outbox(u64),
    /// Birth or offline status: acked, but not an outbox row.
    Status,
}

#[derive(Debug)]
struct Entry {
    msg: OutboxMessage,
    /// Queued to the current connection. Always a prefix of `entries`.
    queued: bool,
}

#[derive(Debug)]
pub(crate) struct Window {
    limit: usize,
    entries: VecDeque<Entry>,
    /// Queued QoS 1 publishes waiting for their `Outgoing::Publish(pkid)`.
    queued: VecDeque<Sent>,
    /// Written publishes waiting for their `PubAck`, by packet id. A list,
    /// because rumqttc may reuse an id before the old one is acked (collision).
    written: HashMap<u16, VecDeque<Sent>>,
}

impl Window {
    pub(crate) fn new(limit: usize) -> Self {
        Window {
            limit: limit.max(1),
            entries: VecDeque::new(),
            queued: VecDeque::new(),
            written: HashMap::new(),
        }
    }

    /// True while fewer than `limit` messages are unacked.
    pub(crate) fn has_room(&self) -> bool {
        self.entries.len() < self.limit
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Takes a message from the outbox; it is sent after all earlier ones.
    pub(crate) fn push(&mut self, msg: OutboxMessage) {
        self.entries.push_back(Entry { msg, queued: false });
    }

    /// The oldest message not yet queued on this connection.
    pub(crate) fn next_unqueued(&self) -> Option<&OutboxMessage> {
        self.entries.iter().find(|e| !e.queued).map(|e| &e.msg)
    }

    /// The message returned by `next_unqueued` was accepted by rumqttc.
    pub(crate) fn mark_queued(&mut self) {
        if let Some(e) = self.entries.iter_mut().find(|e| !e.queued) {
            e.queued = true;
            self.queued.push_back(Sent::Outbox(e.msg.seq));
        }
    }

    /// A QoS 1 status publish (birth, offline) was accepted by rumqttc.
    pub(crate) fn status_queued(&mut self) {
        self.queued.push_back(Sent::Status);
    }

    /// rumqttc wrote a publish. Packet id 0 is QoS 0 and is not tracked.
    pub(crate) fn on_written(&mut self, pkid: u16) {
        if pkid == 0 {
            return;
        }
        match self.queued.pop_front() {
            Some(sent) => self.written.entry(pkid).or_default().push_back(sent),
            None => log::warn!("mqtt: publish {pkid} written but none was queued"),
        }
    }

    /// The broker acked `pkid`. Returns the delivered outbox `seq`, if it was one.
    pub(crate) fn on_puback(&mut self, pkid: u16) -> Option<u64> {
        let list = self.written.get_mut(&pkid)?;
        let sent = list.pop_front();
        if list.is_empty() {
            self.written.remove(&pkid);
        }
        match sent? {
            Sent::Status => None,
            Sent::Outbox(seq) => {
                let at = self.entries.iter().position(|e| e.msg.seq == seq)?;
                self.entries.remove(at);
                Some(seq)
            }
        }
    }

    /// True when nothing queued or written is waiting for an ack.
    pub(crate) fn all_acked(&self) -> bool {
        self.queued.is_empty() && self.written.is_empty()
    }

    /// The connection is gone: everything unacked is sent again, in order,
    /// on the next one (rumqttc drops it on a new session).
    pub(crate) fn reset(&mut self) {
        self.queued.clear();
        self.written.clear();
        for e in &mut self.entries {
            e.queued = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64) -> OutboxMessage {
        OutboxMessage {
            seq,
            topic: "t".into(),
            payload: vec![],
            retain: false,
        }
    }

    fn queue_all(w: &mut Window) -> Vec<u64> {
        let mut out = vec![];
        while let Some(m) = w.next_unqueued() {
            out.push(m.seq);
            w.mark_queued();
        }
        out
    }

    #[test]
    fn maps_packet_ids_in_fifo_order() {
        let mut w = Window::new(8);
        w.status_queued(); // birth goes first
        (1..=3).for_each(|s| w.push(msg(s)));
        assert_eq!(queue_all(&mut w), vec![1, 2, 3]);
        w.on_written(0); // a QoS 0 heartbeat in between
        for pkid in [1, 2, 3, 4] {
            w.on_written(pkid);
        }
        assert_eq!(w.on_puback(1), None); // the birth
        assert_eq!(w.on_puback(3), Some(2));
        assert_eq!(w.on_puback(2), Some(1));
        assert_eq!(w.on_puback(9), None); // unsolicited
        assert_eq!(w.on_puback(4), Some(3));
        assert_eq!(w.len(), 0);
        assert!(w.all_acked());
    }

    #[test]
    fn reused_packet_id_acks_the_older_first() {
        let mut w = Window::new(8);
        (1..=2).for_each(|s| w.push(msg(s)));
        queue_all(&mut w);
        w.on_written(5);
        w.on_written(5);
        assert_eq!(w.on_puback(5), Some(1));
        assert_eq!(w.on_puback(5), Some(2));
    }

    #[test]
    fn reset_requeues_everything_unacked_in_order() {
        let mut w = Window::new(3);
        (1..=3).for_each(|s| w.push(msg(s)));
        assert!(!w.has_room());
        queue_all(&mut w);
        w.on_written(1);
        w.on_written(2);
        assert_eq!(w.on_puback(1), Some(1));
        assert!(w.has_room());
        w.reset();
        w.push(msg(4));
        assert_eq!(queue_all(&mut w), vec![2, 3, 4]);
        // Acks from the old connection's ids no longer match anything.
        assert_eq!(w.on_puback(2), None);
        w.on_written(1);
        assert_eq!(w.on_puback(1), Some(2));
    }
}
