//! A printer that pauses itself (issue 14): the simulated Marlin runs out of
//! filament mid-job and asks a person through `//action:prompt_*`. The farm
//! sees `paused` with `pausedBy: "printer"` and the reason, a retained
//! prompt with its buttons, answers each prompt with `prompt_answer`, and
//! the job completes exactly once; the prompt topic is emptied at the end.

use super::e2e_support::executed_moves;
use super::mirror::{Mirror, Msg};
use super::rig::{wait_for, Rig, Spec};
use super::{broker, check_all};

/// The most prompts one runout may raise before the test gives up.
const MAX_PROMPTS: usize = 12;

#[test]
fn a_runout_pauses_prompts_and_is_answered_over_mqtt() {
    let rig = one_printer("prm", &["--baud", "115200", "--runout-after", "400"]);
    let m = &rig.mirror;
    let (progress, prompt, command) = (
        rig.topic("printer/p1/progress"),
        rig.topic("printer/p1/prompt"),
        rig.topic("printer/p1/command"),
    );
    // Paused by the printer, with its reason, while the job holds.
    let (moves, _, paused) = print_until_paused(&rig, "job-r", 5, 1500);
    assert_eq!(paused.json["jobId"], "job-r");
    assert!(
        paused.json["pauseReason"]
            .as_str()
            .is_some_and(|r| r.contains("runout")),
        "{:?}",
        paused.json
    );

    // Answer every prompt that has buttons, as an operator would.
    let mut from = 0;
    let mut answered = Vec::new();
    loop {
        let (at, msg) = m.wait_msg("a prompt or the job's end", from, |m| {
            (m.topic == prompt && !m.payload.is_empty())
                || (m.topic == progress && m.json["state"] == "awaiting_clear")
        });
        from = at + 1;
        if msg.topic == progress {
            break;
        }
        assert_eq!(msg.json["jobId"], "job-r");
        let choices: Vec<&str> = msg.json["choices"]
            .as_array()
            .map(|c| c.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let Some(choice) = ["Continue", "Reheat"]
            .iter()
            .find_map(|want| choices.iter().position(|c| c == want))
            .or_else(|| (!choices.is_empty()).then_some(0))
        else {
            continue;
        };
        let text = msg.json["text"].as_str().unwrap_or_default().to_owned();
        if answered.is_empty() {
            // Retained: an operator's screen that connects now sees it.
            let late = Mirror::connect(&rig.rt, broker(), "prm-late", &[prompt.as_str()]);
            let (_, seen) = late.wait_msg("the retained prompt", 0, |m| m.topic == prompt);
            assert!(seen.retain, "{seen:?}");
            assert_eq!(seen.json["text"], msg.json["text"]);
        }
        answer(&rig, choice, &text);
        answered.push(text);
        assert!(answered.len() <= MAX_PROMPTS, "prompts: {answered:?}");
    }
    assert!(!answered.is_empty(), "no prompt had a button to press");
    wait_for("job-r completed", || {
        (rig.job_state("job-r").as_deref() == Some("completed")).then_some(())
    });
    let printed = executed_moves(&rig.sim_log("p1"));
    assert_eq!(printed, moves, "every move exactly once, in order");

    // The prompt topic ends empty (nothing stale for the next operator).
    let last_prompt: Option<Msg> = m.since(0).into_iter().rfind(|m| m.topic == prompt);
    assert!(
        last_prompt.as_ref().is_some_and(|p| p.payload.is_empty()),
        "{last_prompt:?}"
    );
    // An answer with no prompt open is refused, not sent.
    let mark = m.len();
    m.publish(&command, br#"{"command":"prompt_answer","choice":0}"#);
    m.wait_msg("prompt_answer refused", mark, |m| {
        m.topic.ends_with("/p1/event")
            && m.json["type"] == "command_rejected"
            && m.json["message"]
                .as_str()
                .is_some_and(|t| t.contains("no open prompt"))
    });
    let counts = check_all(&rig, &m.since(0));
    eprintln!(
        "mqtt prompts: runout paused job-r ({}), answered {answered:?}, {} moves once; {counts:?}",
        paused.json["pauseReason"],
        printed.len()
    );
}

/// A gateway `gw-<tag>` with one simulated printer `p1`, topics under `<tag>/`.
fn one_printer(tag: &str, sim_args: &[&str]) -> Rig {
    let (prefix, gateway, discovery) =
        (format!("{tag}/"), format!("gw-{tag}"), format!("ha-{tag}"));
    Rig::start(
        broker(),
        Spec {
            name: tag,
            prefix: &prefix,
            gateway: &gateway,
            discovery: &discovery,
            printers: &["p1"],
            sim_args,
            queue_manager: None,
            triggers: &[],
        },
    )
}

/// Clears p1's plate over MQTT, adds job `id` once p1 says idle, and waits
/// until the printer itself pauses it. Returns the job's moves and the
/// pause (its index in the mirror, and the progress message).
fn print_until_paused(rig: &Rig, id: &str, tag: u32, moves: usize) -> (Vec<String>, usize, Msg) {
    let m = &rig.mirror;
    let progress = rig.topic("printer/p1/progress");
    m.publish(
        &rig.topic("printer/p1/command"),
        br#"{"command":"clear_plate"}"#,
    );
    m.wait_msg("p1 idle", 0, |m| {
        m.topic == progress && m.json["state"] == "idle"
    });
    let moves = rig.add_job("p1", id, tag, moves);
    let (at, paused) = m.wait_msg("p1 paused by the printer", 0, |m| {
        m.topic == progress && m.json["state"] == "paused"
    });
    assert_eq!(paused.json["pausedBy"], "printer", "{:?}", paused.json);
    (moves, at, paused)
}

/// Publishes a `prompt_answer` and waits for it to be accepted.
fn answer(rig: &Rig, choice: usize, text: &str) {
    let m = &rig.mirror;
    let mark = m.len();
    let payload = format!(r#"{{"command":"prompt_answer","choice":{choice}}}"#);
    m.publish(&rig.topic("printer/p1/command"), payload.as_bytes());
    let (_, a) = m.wait_msg(&format!("the answer to {text:?}"), mark, |m| {
        m.topic.ends_with("/p1/event")
            && matches!(
                m.json["type"].as_str(),
                Some("command_accepted" | "command_rejected")
            )
    });
    assert_eq!(a.json["type"], "command_accepted", "{text}: {:?}", a.json);
}

/// Klipper through its pseudo-terminal (issue 14, item 5): the same job,
/// states and MQTT flow as Marlin. Its runout is `// action:pause` (a pause
/// the host must end): `paused` by the printer, then the farm's `resume`
/// sends `RESUME`, and the job completes exactly once.
#[test]
fn klipper_prints_pauses_and_resumes_like_marlin() {
    let rig = one_printer(
        "klp",
        &[
            "--firmware",
            "klipper",
            "--baud",
            "115200",
            "--runout-after",
            "300",
        ],
    );
    let m = &rig.mirror;
    let (progress, command) = (
        rig.topic("printer/p1/progress"),
        rig.topic("printer/p1/command"),
    );
    let (moves, at, _) = print_until_paused(&rig, "job-k", 6, 1200);
    let now = printgate::mqtt::payload::rfc3339(std::time::SystemTime::now());
    m.publish(
        &command,
        format!(r#"{{"command":"resume","timestamp":"{now}"}}"#).as_bytes(),
    );
    m.wait_msg("p1 printing again", at, |m| {
        m.topic == progress && m.json["state"] == "printing"
    });
    let (_, done) = m.wait_msg("job-k ended", at, |m| {
        m.topic == progress && m.json["state"] == "awaiting_clear"
    });
    assert_eq!(done.json["outcome"], "completed", "{:?}", done.json);
    assert_eq!(done.json["status"], "idle");
    assert_eq!(done.json["progress"], 100);
    let printed = executed_moves(&rig.sim_log("p1"));
    assert_eq!(printed, moves, "every move exactly once, in order");
    let counts = check_all(&rig, &m.since(0));
    eprintln!(
        "mqtt klipper: {} moves once, paused and resumed; {counts:?}",
        printed.len()
    );
}
