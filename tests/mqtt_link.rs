//! The broker link against an embedded rumqttd on 127.0.0.1, with a cuttable
//! proxy between link and broker to simulate outages.
#![cfg(feature = "embedded-broker")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use printgate::broker::{free_port, start_embedded, start_embedded_with_limit};
use printgate::mqtt::link::{LinkEvent, OutboxMessage};
use std::sync::OnceLock;
use std::time::Instant;
use support::*;

/// One broker for the whole binary (rumqttd cannot be stopped), and a second
/// one that plays "the broker after a restart" (no session for us).
fn broker() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(start)
}

fn other_broker() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(start)
}

/// A broker that lets 4 MiB messages through (the others stop at 257 KiB).
fn big_broker() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        init();
        let port = free_port().unwrap();
        start_embedded_with_limit(port, 4 << 20).unwrap();
        port
    })
}

fn start() -> u16 {
    init();
    let port = free_port().unwrap();
    start_embedded(port).unwrap();
    port
}

const ASSIGNMENT: &[u8] = br#"{"jobId":"job-1","modelUrl":"models/m.gcode","filamentType":"PLA"}"#;

fn is_connected(e: &LinkEvent) -> bool {
    matches!(e, LinkEvent::Connected)
}

fn is_disconnected(e: &LinkEvent) -> bool {
    matches!(e, LinkEvent::Disconnected { .. })
}

fn inbound_on(topic: &'static str) -> impl Fn(&LinkEvent) -> bool {
    move |e| matches!(e, LinkEvent::Inbound(m) if m.topic == topic)
}

/// Publishes outbox message `seq` on `topic` and waits for its PUBACK: the
/// PUBACKs queued before it have then left too.
async fn acks_have_left(d: &mut Daemon, seq: u64, topic: &str) {
    d.outbox.send(outbox_msg(seq, topic)).await.unwrap();
    d.until(
        "marker delivered",
        |e| matches!(e, LinkEvent::Delivered { seq: s } if *s == seq),
    )
    .await;
}

/// Feeds seq 1..=n into the outbox from its own task.
fn produce(d: &Daemon, n: u64, topic: &'static str) {
    let tx = d.outbox.clone();
    tokio::spawn(async move {
        for seq in 1..=n {
            tx.send(outbox_msg(seq, topic)).await.unwrap();
        }
    });
}

/// Reads the observer until it has seen seq 1..=n; each new seq must be the
/// next one, repeats must be seqs already seen. Returns (distinct, repeats).
async fn observe_in_order(mut obs: Observer, n: u64) -> (u64, u64) {
    let (mut next, mut repeats) = (1, 0);
    while next <= n {
        let seq = seq_of(&obs.next("observed message").await.payload);
        assert!(
            seq <= next,
            "observer saw {seq} while expecting {next}: out of order"
        );
        if seq == next {
            next += 1;
        } else {
            repeats += 1;
        }
    }
    (next - 1, repeats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_2000_messages_in_order() {
    const N: u64 = 2000;
    const TOPIC: &str = "ta/printer/p1/event";
    let port = broker();
    let obs = Observer::connect(port, "obs-a", &[TOPIC]).await;
    let mut d = Daemon::start(settings(port, "gwa", "ta"));
    d.until("connected", is_connected).await;
    let started = Instant::now();
    produce(&d, N, TOPIC);
    d.wait_delivered(N as usize).await;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(d.delivered, (1..=N).collect::<Vec<_>>());
    let (seen, repeats) = within("observer", observe_in_order(obs, N)).await;
    println!("in order: {N} delivered in {secs:.2} s ({:.0} msg/s); observer saw {seen} (+{repeats} repeats)", N as f64 / secs);
    assert_eq!((seen, repeats), (N, 0));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_loses_nothing_and_keeps_order() {
    const N: u64 = 3000;
    const TOPIC: &str = "tb/printer/p1/event";
    let port = broker();
    let mut proxy = Proxy::start(port).await;
    let obs = Observer::connect(port, "obs-b", &[TOPIC]).await;
    let observer = tokio::spawn(observe_in_order(obs, N));
    let mut d = Daemon::start(settings(proxy.port, "gwb", "tb"));
    d.until("connected", is_connected).await;
    produce(&d, N, TOPIC);
    // Three outages mid-stream, each long enough for refused reconnects.
    for cut_at in [500, 1500, 2500] {
        d.wait_delivered(cut_at).await;
        proxy.cut();
        d.until("disconnected", is_disconnected).await;
        proxy.wait_refused(3).await;
        proxy.restore();
    }
    d.wait_delivered(N as usize).await;
    let (seen, repeats) = within("observer", observer).await.unwrap();
    let lost = N - seen;
    println!("outage: produced {N}, delivered {}, observer saw {seen} distinct (+{repeats} repeats), lost {lost}", d.delivered.len());
    assert_eq!(d.delivered, (1..=N).collect::<Vec<_>>());
    assert_eq!(lost, 0);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_inbound_is_redelivered_after_reconnect() {
    const TOPIC: &str = "tc/printer/p1/assignement";
    let port = broker();
    let proxy = Proxy::start(port).await;
    let farm = Observer::connect(port, "farm-c", &[]).await;
    let mut d = Daemon::start(settings(proxy.port, "gwc", "tc"));
    d.until("connected", is_connected).await;
    farm.publish(TOPIC, ASSIGNMENT, false).await;
    let LinkEvent::Inbound(first) = d.until("assignment", inbound_on(TOPIC)).await else {
        unreachable!()
    };
    assert_eq!(first.payload, ASSIGNMENT);

    // Not acked (the job was not stored yet) when the link drops.
    proxy.cut();
    d.until("disconnected", is_disconnected).await;
    proxy.restore();
    let LinkEvent::Inbound(again) = d.until("redelivery", inbound_on(TOPIC)).await else {
        unreachable!()
    };
    assert_eq!(again.payload, ASSIGNMENT);
    first.ack.ack(); // stale: belongs to the dead connection, harmless
    again.ack.ack();
    acks_have_left(&mut d, 1, "tc/printer/p1/event").await;

    // Acked now: after another reconnect only new messages arrive.
    proxy.cut();
    d.until("disconnected", is_disconnected).await;
    proxy.restore();
    d.until("reconnected", is_connected).await;
    farm.publish(TOPIC, b"marker", false).await;
    let LinkEvent::Inbound(next) = d.until("marker", inbound_on(TOPIC)).await else {
        unreachable!()
    };
    assert_eq!(next.payload, b"marker", "the acked assignment came back");
    next.ack.ack();
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_will_on_abrupt_loss_and_birth_after_reconnect() {
    const STATUS: &str = "td/gateway/gwd/status";
    let s = settings(0, "gwd", "td");
    let (birth, will) = (s.birth.clone(), s.will.clone());
    let port = broker();
    let proxy = Proxy::start(port).await;
    let mut obs = Observer::connect(port, "obs-d", &[STATUS]).await;
    let mut d = Daemon::start(support::LinkSettingsExt::port(s, proxy.port));
    obs.until("birth", |m| m.payload == birth).await;
    proxy.cut();
    obs.until("last will", |m| m.payload == will).await;
    proxy.restore();
    obs.until("birth again", |m| m.payload == birth).await;
    d.until("connected", is_connected).await;
    // New status payloads: the next birth, and the will at shutdown.
    let (birth2, will2) = (b"online-2".to_vec(), b"offline-2".to_vec());
    d.handle.set_status(birth2.clone(), will2.clone());
    proxy.cut();
    obs.until("will of that connection", |m| m.payload == will)
        .await;
    proxy.restore();
    obs.until("new birth", |m| m.payload == birth2).await;
    d.until("connected", is_connected).await;
    d.stop().await;
    obs.until("new offline at shutdown", |m| m.payload == will2)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribes_when_the_broker_lost_the_session() {
    const COMMAND: &str = "te/printer/p2/command";
    let (a, b) = (broker(), other_broker());
    let proxy = Proxy::start(a).await;
    let farm_a = Observer::connect(a, "farm-e-a", &[]).await;
    let mut d = Daemon::start(settings(proxy.port, "gwe", "te"));
    d.until("connected", is_connected).await;
    farm_a
        .publish(COMMAND, br#"{"command":"pause"}"#, false)
        .await;
    let LinkEvent::Inbound(m) = d.until("command on a", inbound_on(COMMAND)).await else {
        unreachable!()
    };
    m.ack.ack();

    // "Broker restart": the link comes back to a broker that never saw it.
    proxy.cut();
    d.until("disconnected", is_disconnected).await;
    proxy.set_upstream(b);
    proxy.restore();
    d.until("connected to b", is_connected).await;
    let mut farm_b = Observer::connect(b, "farm-e-b", &["te/gateway/gwe/status"]).await;
    farm_b.until("retained birth on b", |m| m.retain).await;
    farm_b
        .publish(COMMAND, br#"{"command":"resume"}"#, false)
        .await;
    let LinkEvent::Inbound(m) = d.until("command on b", inbound_on(COMMAND)).await else {
        unreachable!()
    };
    assert_eq!(m.payload, br#"{"command":"resume"}"#);
    m.ack.ack();
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_is_rejected_and_skipped_volatile_goes_out() {
    const TOPIC: &str = "tf/printer/p1/event";
    let port = broker();
    let mut obs = Observer::connect(port, "obs-f", &[TOPIC, "tf/printer/p1/progress"]).await;
    let mut d = Daemon::start(settings(port, "gwf", "tf"));
    d.until("connected", is_connected).await;
    let huge = OutboxMessage {
        seq: 1,
        topic: TOPIC.into(),
        payload: vec![b'x'; 300 * 1024],
        retain: false,
    };
    d.outbox.send(huge).await.unwrap();
    d.outbox.send(outbox_msg(2, TOPIC)).await.unwrap();
    match d
        .until("rejection", |e| !matches!(e, LinkEvent::Inbound(_)))
        .await
    {
        LinkEvent::Rejected { seq: 1, reason } => assert!(reason.contains("too large"), "{reason}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(matches!(
        d.next("delivery").await,
        LinkEvent::Delivered { seq: 2 }
    ));
    assert_eq!(seq_of(&obs.next("seq 2").await.payload), 2);
    d.handle.publish_volatile(
        "tf/printer/p1/progress".into(),
        b"{\"seq\":7}".to_vec(),
        false,
    );
    assert_eq!(seq_of(&obs.next("volatile").await.payload), 7);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_is_named_and_shutdown_still_returns() {
    init();
    let nobody = free_port().unwrap();
    let mut d = Daemon::start(settings(nobody, "gwg", "tg"));
    d.outbox
        .send(outbox_msg(1, "tg/printer/p1/event"))
        .await
        .unwrap();
    match d.next("a disconnect").await {
        LinkEvent::Disconnected { reason } => {
            assert!(reason.starts_with("connection refused"), "{reason}")
        }
        other => panic!("expected a disconnect, got {other:?}"),
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_goes_through_validation_end_to_end() {
    use printgate::mqtt::inbound::{parse_inbound, Inbound, InboundErrorKind};
    const TOPIC: &str = "th/printer/p1/assignement";
    let port = broker();
    let farm = Observer::connect(port, "farm-h", &[]).await;
    let s = settings(port, "gwh", "th");
    let (topics, printers) = (s.topics.clone(), s.printers.clone());
    let mut d = Daemon::start(s);
    d.until("connected", is_connected).await;
    // Over the 64 KiB inbound limit: it reaches the daemon cut to the limit
    // plus one byte, validation rejects it, the daemon acks it.
    farm.publish(TOPIC, &vec![b' '; 100 * 1024], false).await;
    farm.publish(TOPIC, ASSIGNMENT, false).await;
    let LinkEvent::Inbound(big) = d.until("big", inbound_on(TOPIC)).await else {
        unreachable!()
    };
    assert_eq!(
        (big.size, big.payload.len()),
        (100 * 1024, printgate::mqtt::link::MAX_INBOUND_PAYLOAD + 1)
    );
    let err = parse_inbound(&topics, &big.topic, &big.payload, &printers).unwrap_err();
    assert!(
        matches!(err.kind, InboundErrorKind::TooLarge { .. }),
        "{err}"
    );
    big.ack.ack();
    let LinkEvent::Inbound(ok) = d.until("assignment", inbound_on(TOPIC)).await else {
        unreachable!()
    };
    match parse_inbound(&topics, &ok.topic, &ok.payload, &printers).unwrap() {
        Inbound::Assignment {
            printer,
            assignment,
            ..
        } => {
            assert_eq!(
                (printer.as_str(), assignment.job_id.as_str()),
                ("p1", "job-1")
            )
        }
        other => panic!("{other:?}"),
    }
    ok.ack.ack();
    d.stop().await;
}

/// One MiB and one byte: above the link's old 1 MiB limit. An oversized
/// QoS 1 message must reach the daemon once (cut, for its parser to reject
/// and ack), never break the connection and never come back (issue 13).
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
        [
            (OVERSIZE, printgate::mqtt::link::MAX_INBOUND_PAYLOAD + 1),
            (8, 8)
        ],
        "(size, bytes held)"
    );
    acks_have_left(&mut d, 1, "tz/printer/p1/event").await;

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
