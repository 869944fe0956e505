//! The link under hostile input (issue 13), against an embedded rumqttd on
//! 127.0.0.1 that lets 4 MiB messages through: an oversized QoS 1 message
//! must reach the daemon once (cut, for its parser to reject and ack),
//! never break the connection and never come back.
#![cfg(feature = "embedded-broker")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use printgate::broker::{free_port, start_embedded_with_limit};
use printgate::mqtt::link::{LinkEvent, MAX_INBOUND_PAYLOAD};
use std::sync::OnceLock;
use support::*;

fn big_broker() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        init();
        let port = free_port().unwrap();
        start_embedded_with_limit(port, 4 << 20).unwrap();
        port
    })
}

/// One MiB and one byte: above the link's old 1 MiB limit.
const OVERSIZE: usize = (1 << 20) + 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r13_an_oversized_qos1_message_is_handed_over_once_and_never_loops() {
    const TOPIC: &str = "tz/printer/p1/assignement";
    let port = big_broker();
    let proxy = Proxy::start(port).await;
    let mut farm_options = rumqttc::MqttOptions::new("farm-z", "127.0.0.1", port);
    farm_options.set_max_packet_size(8 << 20, 8 << 20);
    let farm = Observer::connect_with(farm_options, &[]).await;
    let mut d = Daemon::start(settings(proxy.port, "gwz", "tz"));
    d.until("connected", |e| matches!(e, LinkEvent::Connected))
        .await;

    farm.publish(TOPIC, &vec![b'x'; OVERSIZE], false).await;
    farm.publish(TOPIC, b"marker-1", false).await;
    // The link did not drop the connection over it: the daemon gets the big
    // message, cut (its parser rejects it as too large), then the marker.
    let mut got = Vec::new();
    for what in ["the big message", "marker-1"] {
        let e = d
            .until(what, |e| {
                matches!(e, LinkEvent::Inbound(_) | LinkEvent::Disconnected { .. })
            })
            .await;
        let LinkEvent::Inbound(m) = e else {
            panic!("expected {what}, got {e:?}")
        };
        got.push((m.size, m.payload.len()));
        // Acked in order, as the daemon does after storing the rejection.
        m.ack.ack();
    }
    assert_eq!(
        got,
        [(OVERSIZE, MAX_INBOUND_PAYLOAD + 1), (8, 8)],
        "(size, bytes held)"
    );
    // The PUBACK is queued before this publish: its delivery proves the ack left.
    d.outbox
        .send(outbox_msg(1, "tz/printer/p1/event"))
        .await
        .unwrap();
    d.until("marker delivered", |e| {
        matches!(e, LinkEvent::Delivered { seq: 1 })
    })
    .await;

    // After a reconnect the big message does not come back.
    proxy.cut();
    d.until("disconnected", |e| {
        matches!(e, LinkEvent::Disconnected { .. })
    })
    .await;
    proxy.restore();
    d.until("reconnected", |e| matches!(e, LinkEvent::Connected))
        .await;
    farm.publish(TOPIC, b"marker-2", false).await;
    let e = d
        .until("marker-2", |e| {
            matches!(e, LinkEvent::Inbound(_) | LinkEvent::Discarded { .. })
        })
        .await;
    let LinkEvent::Inbound(m) = e else {
        panic!("the big message came back: {e:?}")
    };
    assert_eq!(m.payload, b"marker-2", "an old message came back");
    m.ack.ack();
    d.stop().await;
}
