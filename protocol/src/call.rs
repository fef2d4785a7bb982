//! Calls: the signalling of voice and video calls (`call`) and the entry a call leaves in the
//! history (`call.log`), `docs/protocol.md` 6.4.
//!
//! Signals travel as sealed direct messages between the participants' devices, so the WebRTC
//! session descriptions they carry (and the DTLS fingerprints in them) are as authentic and as
//! confidential as any direct message. The media itself goes between the browsers, encrypted by
//! WebRTC (DTLS-SRTP); nothing here touches it.

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::message::{ConversationId, SessionId};

/// Longest session description (SDP) an `offer` or `answer` carries, in bytes.
pub const MAX_SDP: usize = 16 * 1024;

/// One call signal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallSignal {
    /// The call, chosen at random by the device that starts it.
    pub call: SessionId,
    /// The group of a group call; `None` for a call in the direct chat of the two users.
    pub group: Option<ConversationId>,
    /// What happens.
    pub signal: Signal,
}

/// What a call signal says. Every signal is sent by one device; the receiver knows which from
/// the envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// A call starts: every device that receives it rings (sent by the caller to every device
    /// of the other members).
    Ring {
        /// A video call (else voice only).
        video: bool,
    },
    /// The sending device takes part in the call: it accepted, or it is the caller. Sent to
    /// every device of every member, the sender's own other devices included (they stop
    /// ringing).
    Join,
    /// The sending device is in the call: the answer to a `join` from a device that is to
    /// make the WebRTC offer to it.
    Present,
    /// The sending user declines (every device of that user stops ringing).
    Decline,
    /// The sending device is in another call.
    Busy,
    /// A `join` refused: another device of the same user is already in the call, or the call
    /// is full.
    Refused {
        /// Why, for a person.
        reason: String,
    },
    /// A WebRTC offer to one device.
    Offer {
        /// The device it is for.
        #[serde(with = "serde_bytes")]
        to: [u8; 32],
        /// The session description.
        sdp: String,
    },
    /// A WebRTC answer to one device's offer.
    Answer {
        /// The device it is for.
        #[serde(with = "serde_bytes")]
        to: [u8; 32],
        /// The session description.
        sdp: String,
    },
    /// The sending device leaves the call (hangs up; from the caller before anyone joined, the
    /// call is cancelled).
    Leave,
}

impl Signal {
    /// The signal's name, as the API and docs call it.
    pub fn name(&self) -> &'static str {
        match self {
            Signal::Ring { .. } => "ring",
            Signal::Join => "join",
            Signal::Present => "present",
            Signal::Decline => "decline",
            Signal::Busy => "busy",
            Signal::Refused { .. } => "refused",
            Signal::Offer { .. } => "offer",
            Signal::Answer { .. } => "answer",
            Signal::Leave => "leave",
        }
    }
}

impl CallSignal {
    /// Checks sizes.
    pub fn validate(&self) -> Result<(), DecodeError> {
        match &self.signal {
            Signal::Offer { sdp, .. } | Signal::Answer { sdp, .. } if sdp.len() > MAX_SDP => {
                Err(DecodeError::Invalid(format!("a session description over {MAX_SDP} bytes")))
            }
            Signal::Refused { reason } if reason.len() > crate::message::MAX_SHORT => {
                Err(DecodeError::Invalid("a refusal reason over 256 bytes".into()))
            }
            _ => Ok(()),
        }
    }
}

/// How a call ended, as its history entry says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// Nobody answered in time, or nobody could be reached.
    Missed,
    /// The callee declined.
    Declined,
    /// The callee's devices were all in other calls.
    Busy,
    /// Someone answered; the call ran, then ended.
    Ended,
}

impl CallOutcome {
    /// The outcome's name.
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Missed => "missed",
            CallOutcome::Declined => "declined",
            CallOutcome::Busy => "busy",
            CallOutcome::Ended => "ended",
        }
    }
}

/// The history entry of a call (`call.log`), sent by the device that started the call when it
/// ends, to the conversation it was placed in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallLog {
    /// The call.
    pub call: SessionId,
    /// A video call (else voice).
    pub video: bool,
    /// How it ended.
    pub outcome: CallOutcome,
    /// When it started to ring (the caller's clock, ms since the Unix epoch).
    pub started_at: u64,
    /// How long it ran from the first answer to the end (0 unless `ended`), in ms.
    pub duration_ms: u64,
}

impl CallLog {
    /// A line for the history: "Missed video call", "Voice call, 2:05".
    pub fn summary(&self) -> String {
        let kind = if self.video { "video call" } else { "voice call" };
        match self.outcome {
            CallOutcome::Missed => format!("Missed {kind}"),
            CallOutcome::Declined => format!("Declined {kind}"),
            CallOutcome::Busy => format!("Busy: {kind} not answered"),
            CallOutcome::Ended => {
                let s = self.duration_ms / 1000;
                let mut line = String::new();
                line.push_str(if self.video { "Video call, " } else { "Voice call, " });
                if s >= 3600 {
                    line.push_str(&format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60));
                } else {
                    line.push_str(&format!("{}:{:02}", s / 60, s % 60));
                }
                line
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_read_as_a_person_expects() {
        let mut log = CallLog {
            call: SessionId([1; 16]),
            video: true,
            outcome: CallOutcome::Missed,
            started_at: 0,
            duration_ms: 0,
        };
        assert_eq!(log.summary(), "Missed video call");
        log.outcome = CallOutcome::Ended;
        log.video = false;
        log.duration_ms = 125_400;
        assert_eq!(log.summary(), "Voice call, 2:05");
        log.duration_ms = 3_725_000;
        assert_eq!(log.summary(), "Voice call, 1:02:05");
    }

    #[test]
    fn an_oversized_description_is_refused() {
        let s = CallSignal {
            call: SessionId([1; 16]),
            group: None,
            signal: Signal::Offer { to: [2; 32], sdp: "v".repeat(MAX_SDP + 1) },
        };
        assert!(s.validate().is_err());
        let s = CallSignal { signal: Signal::Offer { to: [2; 32], sdp: "v=0".into() }, ..s };
        assert!(s.validate().is_ok());
    }
}
