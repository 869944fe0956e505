//! Issue 16: farm-unique printer ids.

use super::*;

fn claim_of(h: &H) -> SystemTime {
    h.core
        .printers()
        .find(|p| p.id == "p1")
        .map(|p| p.claimed_at)
        .unwrap()
}

#[test]
fn r16_the_earlier_claimant_keeps_serving_and_says_so() {
    let mut h = H::new();
    h.ready("p1");
    let later = claim_of(&h) + Duration::from_secs(60);
    peer(&mut h, "gw-07", later);
    let errors: Vec<Value> = h
        .messages()
        .into_iter()
        .filter(|(t, v)| t == "device/gateway/gw/event" && v["type"] == "error")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let text = errors[0]["message"].as_str().unwrap();
    assert!(
        text.contains("printer id p1 is also claimed by gateway gw-07"),
        "{text}"
    );
    assert!(text.contains("keeps serving"), "{text}");
    h.assign("p1", "j1", 1);
    assert_eq!(h.acks(), [1]);
    assert!(
        h.last_download().is_some(),
        "the earlier claimant keeps serving"
    );
    // Hearing it again is not news.
    peer(&mut h, "gw-07", later);
    assert_eq!(h.events("error").len(), 1, "reported once");
}

#[test]
fn r16_a_later_claim_yields_until_the_other_claimant_is_gone() {
    let mut h = H::new();
    h.ready("p1");
    let earlier = claim_of(&h) - Duration::from_secs(3600);
    peer(&mut h, "gw-07", earlier);
    h.assign("p1", "j1", 3);
    // Refused (and acknowledged: the other gateway takes it), with the event
    // on this gateway's own topic.
    assert_eq!(h.acks(), [3]);
    assert!(h.last_download().is_none());
    let refused: Vec<(String, Value)> = h
        .messages()
        .into_iter()
        .filter(|(_, v)| v["type"] == "assignment_rejected")
        .collect();
    assert_eq!(refused.len(), 1, "{:?}", h.messages());
    assert_eq!(refused[0].0, "device/gateway/gw/event");
    assert!(refused[0].1["message"].as_str().unwrap().contains("gw-07"));
    // Silent about p1 meanwhile: no progress for it from this gateway.
    let count = |h: &H| {
        h.messages()
            .iter()
            .filter(|(t, _)| t == "device/printer/p1/progress")
            .count()
    };
    let mark = count(&h);
    h.tick(10);
    peer(&mut h, "gw-07", earlier);
    h.tick(10);
    assert_eq!(count(&h), mark, "published for an id it yields");
    // The retained gateway status names the conflict.
    let status = h.gateway_status().expect("a retained status");
    assert_eq!(status["conflicts"]["p1"]["gateway"], "gw-07");
    assert_eq!(status["gatewayId"], "gw");
    // The other claimant goes quiet: after three heartbeat intervals the id
    // is served here again.
    h.tick(31);
    assert_eq!(h.events("claim_resolved").len(), 1, "the conflict is gone");
    h.assign("p1", "j2", 4);
    assert!(h.last_download().is_some_and(|(j, _)| j == "j2"));
}
