//! The outbox through the public API: one row per message and seq
//! continuity across deliveries and restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[test]
fn every_row_keeps_its_own_seq_and_goes_once() {
    // Progress is a last value published from memory now; whatever reaches
    // the outbox is an event nobody may miss: never merged, never rewritten.
    let dir = TestDir::new("rows");
    let store = open_with_printers(&dir);
    let enq = |item| store.enqueue(item).blocking().unwrap();
    assert_eq!(enq(progress("p1", 1)), 1);
    assert_eq!(enq(progress("p1", 2)), 2);
    assert_eq!(enq(event("p1", "paused")), 3);
    let rows = store.outbox_after(0, 100).blocking().unwrap();
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(rows[0].payload, b"1");
    assert!(store.outbox_delivered(1).blocking().unwrap());
    assert!(!store.outbox_delivered(1).blocking().unwrap());
    assert_eq!(store.outbox_len().blocking().unwrap(), 2);
}

#[test]
fn seqs_increase_by_one_across_deliveries_and_restarts() {
    let dir = TestDir::new("seq");
    let mut all = Vec::new();
    let mut delivered = 0;
    // 1000 rows, then two restarts with 200 more each.
    for (round, count) in [1000u32, 200, 200].into_iter().enumerate() {
        let store = open_with_printers(&dir);
        for i in 0..count {
            // Events interleaved with other rows of two printers.
            let item = match i % 3 {
                0 => event("p1", "e"),
                1 => progress("p1", i),
                _ => progress("p2", i),
            };
            let seq = store.enqueue(item).blocking().unwrap();
            if all.last() != Some(&seq) {
                all.push(seq);
            }
            let _ = store.outbox_after(seq - 1, 1).blocking().unwrap();
            if i % 4 == 0 {
                delivered += u64::from(store.outbox_delivered(seq).blocking().unwrap());
            }
        }
        if round < 2 {
            store.close().blocking().unwrap();
        }
    }
    let expected: Vec<u64> = (1..=all.len() as u64).collect();
    assert_eq!(all, expected, "strictly +1, no repeats across restarts");
    assert_eq!(all.len(), 1400);
    assert!(delivered > 0);
}
