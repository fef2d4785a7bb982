//! Listening together (`listen`, `docs/protocol.md` 6.5): the signals of a listening session.
//! The host's device holds the session's playback state and sends it to every member device
//! on each change; members send it their controls and measure their clock against it with
//! pings. Like call signals, they are sealed direct messages sent once, never queued.

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::message::{ConversationId, MessageId, SessionId};

/// Most tracks in a session's queue.
pub const MAX_QUEUE: usize = 64;

/// One signal of a listening session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenSignal {
    /// The session, chosen at random by its host.
    pub session: SessionId,
    /// The group it plays in; `None` for the direct chat of the two users.
    pub group: Option<ConversationId>,
    /// What happens.
    pub op: ListenOp,
}

/// What a listening signal says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenOp {
    /// The session's playback, from its host's device to every member device.
    State(ListenState),
    /// A member asks the host to change the playback.
    Control(ListenControl),
    /// A member measures its clock against the host's.
    Ping {
        /// Matches the answer to the question.
        nonce: u64,
    },
    /// The host's answer to a ping.
    Pong {
        /// The ping's nonce.
        nonce: u64,
        /// The host's clock when the ping arrived (ms since the Unix epoch).
        host_time: u64,
    },
}

/// A session's playback: "at host time `at`, track `index` of `queue` was at `position_ms`".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenState {
    /// The host's device key; only that device may send the state.
    #[serde(with = "serde_bytes")]
    pub host: [u8; 32],
    /// The tracks: attachment messages of the conversation, in order (1 to [`MAX_QUEUE`]).
    pub queue: Vec<MessageId>,
    /// The current track's place in the queue.
    pub index: u32,
    /// Playing, else paused.
    pub playing: bool,
    /// The current track's position at `at`, in ms.
    pub position_ms: u64,
    /// The host's clock when the position was true (ms since the Unix epoch).
    pub at: u64,
    /// Increases with every change; a receiver keeps the highest.
    pub seq: u64,
    /// The session has ended.
    pub stopped: bool,
}

/// A control a member sends to the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenControl {
    /// Play, from where it is or from `at_ms`.
    Play {
        /// Where to start, if not where it is.
        at_ms: Option<u64>,
    },
    /// Pause.
    Pause,
    /// Go to a position of the current track.
    Seek {
        /// The position, ms.
        position_ms: u64,
    },
    /// The next track.
    Next,
    /// Add a track to the end of the queue.
    Add {
        /// An attachment message of the conversation.
        track: MessageId,
    },
    /// End the session.
    Stop,
}

impl ListenSignal {
    /// Checks sizes and ranges.
    pub fn validate(&self) -> Result<(), DecodeError> {
        if let ListenOp::State(s) = &self.op {
            if s.queue.is_empty() || s.queue.len() > MAX_QUEUE {
                return Err(DecodeError::Invalid(format!(
                    "a listening queue of {} tracks (1 to {MAX_QUEUE})",
                    s.queue.len()
                )));
            }
            if s.index as usize >= s.queue.len() {
                return Err(DecodeError::Invalid("a track index past the queue".into()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_names_a_track_of_its_queue() {
        let state = |queue: Vec<MessageId>, index| ListenSignal {
            session: SessionId([1; 16]),
            group: None,
            op: ListenOp::State(ListenState {
                host: [2; 32],
                queue,
                index,
                playing: true,
                position_ms: 0,
                at: 0,
                seq: 1,
                stopped: false,
            }),
        };
        assert!(state(vec![MessageId([3; 16])], 0).validate().is_ok());
        assert!(state(vec![MessageId([3; 16])], 1).validate().is_err());
        assert!(state(vec![], 0).validate().is_err());
        assert!(state(vec![MessageId([3; 16]); MAX_QUEUE + 1], 0).validate().is_err());
    }
}
