//! Messages from the MQTT dispatcher and the control socket as core
//! inputs; their acknowledgements and answer channels stay here.

use super::Driver;
use crate::control::Request;
use crate::farm::core::{AckId, ControlRequest, Input};
use crate::farm::FarmInput;
use crate::mqtt::link::AckToken;
use crate::mqtt::payload::{Command, CommandMsg};
use std::path::PathBuf;

impl Driver {
    /// Turns a message from the MQTT dispatcher or the control socket into
    /// a core input, keeping its acknowledgement or answer channel here.
    pub(super) fn convert(&mut self, input: FarmInput) -> Input {
        match input {
            FarmInput::Assignment {
                printer,
                assignment,
                warnings,
                ack,
            } => Input::Assignment {
                printer,
                assignment,
                warnings,
                ack: ack.map(|t| self.keep_ack(t)),
            },
            FarmInput::Robot { progress, retained } => Input::Robot { progress, retained },
            FarmInput::Command {
                printer,
                msg,
                retained,
                estop_sent,
                ack,
            } => Input::Command {
                printer,
                msg,
                retained,
                estop_sent,
                ack: ack.map(|t| self.keep_ack(t)),
            },
            FarmInput::Trigger { topic, retained } => Input::Trigger { topic, retained },
            FarmInput::BrokerConnected => Input::BrokerConnected,
            FarmInput::PeerProgress {
                printer,
                gateway,
                claimed_at,
            } => Input::PeerProgress {
                printer,
                gateway,
                claimed_at: claimed_at
                    .as_deref()
                    .and_then(crate::mqtt::payload::parse_rfc3339),
            },
            FarmInput::Invalid {
                printer,
                kind,
                problem,
                ack,
            } => Input::Invalid {
                printer,
                kind,
                problem,
                ack: ack.map(|t| self.keep_ack(t)),
            },
            FarmInput::Control { req, upload, reply } => {
                let id = self.next_id;
                self.next_id += 1;
                self.replies.insert(id, reply);
                Input::Control {
                    req: control_request(req, upload),
                    reply: id,
                }
            }
        }
    }

    pub(super) fn keep_ack(&mut self, token: AckToken) -> AckId {
        let id = self.next_id;
        self.next_id += 1;
        self.acks.insert(id, token);
        id
    }
}

/// The core's view of a control request.
pub(super) fn control_request(req: Request, upload: Option<PathBuf>) -> ControlRequest {
    let printer_cmd = |printer: String, command| ControlRequest::Printer {
        printer,
        msg: CommandMsg {
            command,
            job_id: None,
            timestamp: None,
            choice: None,
        },
    };
    match req {
        Request::Ping => ControlRequest::Ping,
        Request::Status => ControlRequest::Status,
        Request::AddJob {
            printer,
            priority,
            id,
            ..
        } => match upload {
            Some(upload) => ControlRequest::AddJob {
                printer,
                priority,
                id,
                upload,
            },
            None => ControlRequest::Ping,
        },
        Request::CancelJob { job } => ControlRequest::CancelJob { job },
        Request::Clear { printer } => printer_cmd(printer, Command::ClearPlate),
        Request::AcceptIdentity { printer } => ControlRequest::AcceptIdentity { printer },
        Request::Pause { printer } => printer_cmd(printer, Command::Pause),
        Request::Resume { printer } => printer_cmd(printer, Command::Resume),
        Request::EmergencyStop { printer } => printer_cmd(printer, Command::EmergencyStop),
        Request::PromptAnswer { printer, choice } => ControlRequest::Printer {
            printer,
            msg: CommandMsg {
                command: Command::PromptAnswer,
                job_id: None,
                timestamp: None,
                choice: Some(choice),
            },
        },
    }
}
