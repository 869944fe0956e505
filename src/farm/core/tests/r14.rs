//! Issue 14: printer-initiated pauses and prompts on MQTT.

use super::*;
use crate::printer::PausedBy;

fn answer(h: &mut H, choice: u32) {
    h.feed(Input::Command {
        printer: "p1".into(),
        msg: CommandMsg {
            command: Command::PromptAnswer,
            job_id: None,
            timestamp: Some(rfc3339(h.wall())),
            choice: Some(choice),
        },
        retained: false,
        estop_sent: false,
        ack: None,
    });
}

fn prompt_messages(h: &H) -> Vec<Value> {
    h.applied
        .iter()
        .flat_map(|b| b.outbox.iter())
        .filter(|i| i.topic == "device/printer/p1/prompt")
        .map(|i| {
            assert!(i.retain, "the prompt topic is retained");
            serde_json::from_slice(&i.payload).unwrap_or(Value::Null)
        })
        .collect()
}

fn answers_sent(h: &H) -> Vec<u32> {
    h.out
        .iter()
        .filter_map(|e| match e {
            Effect::Printer {
                cmd: PrinterCommand::PromptAnswer { choice },
                ..
            } => Some(*choice),
            _ => None,
        })
        .collect()
}

#[test]
fn r14_a_runout_shows_paused_by_the_printer_with_its_reason() {
    let mut h = H::new();
    h.ready("p1");
    h.print("p1", "j1");
    h.report(
        "p1",
        ReportKind::Paused {
            job_id: "j1".into(),
            by: PausedBy::Printer,
            reason: Some("filament runout 0".into()),
        },
    );
    assert_eq!(h.state("p1"), PrinterState::Paused);
    let p = h.last_progress("p1");
    assert_eq!(p["pausedBy"], "printer");
    assert_eq!(p["pauseReason"], "filament runout 0");
    let paused = h.events("job_paused");
    assert!(
        paused.last().is_some_and(|e| e["message"]
            .as_str()
            .unwrap_or("")
            .contains("filament runout 0")),
        "{paused:?}"
    );
    h.report(
        "p1",
        ReportKind::Resumed {
            job_id: "j1".into(),
        },
    );
    assert_eq!(h.state("p1"), PrinterState::Printing);
    let p = h.last_progress("p1");
    assert!(p.get("pausedBy").is_none(), "{p}");
}

#[test]
fn r14_a_prompt_is_retained_answered_by_index_and_cleared() {
    let mut h = H::new();
    h.ready("p1");
    h.print("p1", "j1");
    // No prompt open: an answer is refused, nothing reaches the printer.
    answer(&mut h, 0);
    assert!(answers_sent(&h).is_empty());
    assert_eq!(h.events("command_rejected").len(), 1);
    h.report(
        "p1",
        ReportKind::Prompt {
            text: "Nozzle Parked".into(),
            choices: vec!["Continue".into(), "Purge more".into()],
        },
    );
    let open = prompt_messages(&h);
    assert_eq!(open.len(), 1);
    assert_eq!(open[0]["text"], "Nozzle Parked");
    assert_eq!(open[0]["choices"][1], "Purge more");
    assert_eq!(open[0]["jobId"], "j1");
    // A choice the prompt does not have is refused.
    answer(&mut h, 2);
    assert!(answers_sent(&h).is_empty());
    assert_eq!(h.events("command_rejected").len(), 2);
    answer(&mut h, 0);
    assert_eq!(answers_sent(&h), vec![0]);
    h.report("p1", ReportKind::PromptClosed);
    let all = prompt_messages(&h);
    assert_eq!(all.len(), 2);
    assert_eq!(all[1], Value::Null, "an empty retained message clears it");
}

#[test]
fn r14_a_prompt_never_outlives_its_connection() {
    let mut h = H::new();
    h.ready("p1");
    h.print("p1", "j1");
    h.report(
        "p1",
        ReportKind::Prompt {
            text: "HeaterTimeout".into(),
            choices: vec!["Reheat".into()],
        },
    );
    h.report(
        "p1",
        ReportKind::Offline {
            reason: "port gone".into(),
        },
    );
    let all = prompt_messages(&h);
    assert_eq!(all.len(), 2);
    assert_eq!(all[1], Value::Null);
    answer(&mut h, 0);
    assert!(answers_sent(&h).is_empty());
}
