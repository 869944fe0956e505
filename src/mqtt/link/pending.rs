//! The events waiting for the daemon, bounded: however fast the broker
//! sends, the link holds at most [`MAX_QUEUED_INBOUND`] inbound messages
//! and [`MAX_QUEUED_BYTES`] of their payloads.
//!
//! When full, QoS 0 messages go first (they may be lost by definition):
//! a new one is dropped, and a QoS 1 message takes the place of the oldest
//! queued QoS 0 one. With no QoS 0 left to drop, [`Pending::is_full`] tells
//! the link to stop reading the connection: QoS 1 messages then wait at the
//! broker (back-pressure), unacked, never lost. Drops are reported as one
//! [`LinkEvent::Discarded`] per reason with a count, not one event each.
//!
//! Pure data: no I/O, no clock.

use super::{InboundMessage, LinkEvent};
use std::collections::VecDeque;

/// Inbound messages queued for the daemon, at most.
pub const MAX_QUEUED_INBOUND: usize = 256;
/// Payload bytes of the queued inbound messages, at most (plus one message).
pub const MAX_QUEUED_BYTES: usize = 4 * 1024 * 1024;

/// The reason given for QoS 0 messages dropped because the queue was full.
pub const QUEUE_FULL: &str = "inbound queue full: QoS 0 message dropped";

#[derive(Debug, Default)]
pub(crate) struct Pending {
    events: VecDeque<LinkEvent>,
    inbound: usize,
    bytes: usize,
}

fn is_qos0(e: &LinkEvent) -> bool {
    matches!(e, LinkEvent::Inbound(m) if m.ack.0.is_none())
}

impl Pending {
    /// True when the link should stop reading the connection until the
    /// daemon has taken some events.
    pub(crate) fn is_full(&self) -> bool {
        self.inbound >= MAX_QUEUED_INBOUND || self.bytes >= MAX_QUEUED_BYTES
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Queues a link event (connected, delivered...). These are few: at
    /// most one per outbox message in the window, or per connection change.
    pub(crate) fn push(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Inbound(msg) => self.push_inbound(msg),
            LinkEvent::Discarded { reason, count } => self.discarded(reason, count),
            other => self.events.push_back(other),
        }
    }

    /// Queues an inbound message, making room by dropping QoS 0 ones.
    pub(crate) fn push_inbound(&mut self, msg: InboundMessage) {
        let qos0 = msg.ack.0.is_none();
        if self.is_full() {
            if qos0 {
                return self.discarded(QUEUE_FULL.to_owned(), 1);
            }
            if let Some(i) = self.events.iter().position(is_qos0) {
                if let Some(LinkEvent::Inbound(old)) = self.events.remove(i) {
                    self.inbound -= 1;
                    self.bytes -= old.payload.len();
                }
                self.discarded(QUEUE_FULL.to_owned(), 1);
            }
            // A QoS 1 message already read is kept (it is not acked yet);
            // the link reads nothing more until there is room.
        }
        self.inbound += 1;
        self.bytes += msg.payload.len();
        self.events.push_back(LinkEvent::Inbound(msg));
    }

    /// Counts a dropped message: merged into the last queued event when it
    /// is a `Discarded` with the same reason.
    pub(crate) fn discarded(&mut self, reason: String, n: u64) {
        if let Some(LinkEvent::Discarded {
            reason: last,
            count,
        }) = self.events.back_mut()
        {
            if *last == reason {
                *count = count.saturating_add(n);
                return;
            }
        }
        self.events
            .push_back(LinkEvent::Discarded { reason, count: n });
    }

    pub(crate) fn pop_front(&mut self) -> Option<LinkEvent> {
        let event = self.events.pop_front()?;
        if let LinkEvent::Inbound(m) = &event {
            self.inbound -= 1;
            self.bytes -= m.payload.len();
        }
        Some(event)
    }

    /// Everything queued, in order (shutdown hand-over).
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = LinkEvent> + '_ {
        self.inbound = 0;
        self.bytes = 0;
        self.events.drain(..)
    }

    pub(crate) fn clear(&mut self) {
        self.events.clear();
        self.inbound = 0;
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::super::AckToken;
    use super::*;

    fn msg(qos0: bool, n: usize) -> InboundMessage {
        // A QoS 1 token needs a client; the queue only looks at whether one
        // is there, so a QoS 1 message is modelled with a disconnected one.
        let ack = if qos0 {
            AckToken(None)
        } else {
            let (client, _eventloop) =
                rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("t", "127.0.0.1", 1), 1);
            let order = super::super::acks::AckOrder::new(client);
            AckToken::queued(
                &order,
                rumqttc::Publish::new("t", rumqttc::QoS::AtLeastOnce, vec![]),
            )
        };
        InboundMessage {
            topic: format!("t/{n}"),
            payload: vec![b'x'; 100],
            retain: false,
            size: 100,
            ack,
        }
    }

    /// A flood of 10,000 QoS 0 messages that nobody reads: the queue stays
    /// at its bound and says how many it dropped, in one event.
    #[test]
    fn r13_a_qos0_flood_is_bounded_and_counted_once() {
        let mut p = Pending::default();
        for n in 0..10_000 {
            p.push_inbound(msg(true, n));
        }
        assert!(p.is_full());
        assert_eq!(p.inbound, MAX_QUEUED_INBOUND);
        assert_eq!(p.events.len(), MAX_QUEUED_INBOUND + 1);
        match p.events.back() {
            Some(LinkEvent::Discarded { reason, count }) => {
                assert_eq!((reason.as_str(), *count), (QUEUE_FULL, 10_000 - 256));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn qos1_takes_the_place_of_the_oldest_qos0() {
        let mut p = Pending::default();
        for n in 0..MAX_QUEUED_INBOUND {
            p.push_inbound(msg(true, n));
        }
        p.push_inbound(msg(false, 9999));
        assert_eq!(p.inbound, MAX_QUEUED_INBOUND);
        let Some(LinkEvent::Inbound(first)) = p.pop_front() else {
            panic!("expected an inbound message")
        };
        assert_eq!(first.topic, "t/1", "t/0 was the one dropped");
    }

    #[test]
    fn qos1_is_never_dropped_and_fullness_pauses_reading() {
        let mut p = Pending::default();
        for n in 0..MAX_QUEUED_INBOUND + 3 {
            p.push_inbound(msg(false, n));
        }
        assert_eq!(p.inbound, MAX_QUEUED_INBOUND + 3);
        assert!(p.is_full());
        let mut got = 0;
        while let Some(e) = p.pop_front() {
            assert!(matches!(e, LinkEvent::Inbound(_)));
            got += 1;
        }
        assert_eq!(got, MAX_QUEUED_INBOUND + 3);
        assert!(!p.is_full() && p.bytes == 0);
    }
}
