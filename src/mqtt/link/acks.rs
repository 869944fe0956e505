//! PUBACKs in the order the messages arrived. MQTT 3.1.1 §4.6 requires a
//! client to acknowledge QoS 1 PUBLISH packets in the order it received
//! them (rumqttd 0.20 disconnects on an out-of-order ack:
//! `router/iobufs.rs`, `register_ack`). The farm acknowledges a message only
//! once it has stored what it must, and some messages sooner than others,
//! so acks are sequenced here: an ack is sent when every earlier message of
//! the same connection has been acked too.
//!
//! One sequencer per connection, shared by that connection's tokens (the
//! one lock is held for a few pushes and pops, never across an await).

use rumqttc::{AsyncClient, Publish};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// The messages of one connection waiting for their turn to be acked.
#[derive(Default)]
struct Order {
    /// Sequence number of `waiting[0]`.
    head: u64,
    /// `Some(publish)` once acked (ready to send), `None` while not yet.
    waiting: VecDeque<Option<Publish>>,
    /// A token was dropped unacked: that message will be redelivered after
    /// the next reconnect, and nothing after it may be acked before.
    blocked: bool,
}

/// Hands out a token per QoS 1 message and sends acks in order.
#[derive(Clone)]
pub(crate) struct AckOrder {
    client: AsyncClient,
    order: Arc<Mutex<Order>>,
}

impl AckOrder {
    pub(crate) fn new(client: AsyncClient) -> Self {
        AckOrder {
            client,
            order: Arc::default(),
        }
    }

    /// The next message's place in line.
    pub(crate) fn enqueue(&self) -> u64 {
        let Ok(mut o) = self.order.lock() else {
            return u64::MAX;
        };
        o.waiting.push_back(None);
        o.head + o.waiting.len() as u64 - 1
    }

    /// Marks `seq` acked and sends every ack now in order.
    pub(crate) fn ack(&self, seq: u64, publish: Publish) {
        self.settle(seq, Some(publish));
    }

    /// `seq` will never be acked (its token was dropped).
    pub(crate) fn abandon(&self, seq: u64) {
        self.settle(seq, None);
    }

    fn settle(&self, seq: u64, publish: Option<Publish>) {
        let Ok(mut o) = self.order.lock() else {
            return;
        };
        let Some(index) = seq
            .checked_sub(o.head)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return;
        };
        match publish {
            Some(p) => {
                if let Some(slot) = o.waiting.get_mut(index) {
                    *slot = Some(p);
                }
            }
            None if index < o.waiting.len() => o.blocked = true,
            None => {}
        }
        while !o.blocked && o.waiting.front().is_some_and(Option::is_some) {
            if let Some(Some(p)) = o.waiting.pop_front() {
                o.head += 1;
                if let Err(err) = self.client.try_ack(&p) {
                    log::debug!("mqtt: ack for {} not sent: {err}", p.topic);
                }
            }
        }
    }
}
