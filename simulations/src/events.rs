//! What the nodes of a simulation report, one JSON object per line. `kith-sim run` writes them
//! for all its nodes into `events.jsonl`; each `kith-sim node` of a Shadow run writes its own.
//! Times are milliseconds since the workload started.

use serde::{Deserialize, Serialize};

/// One event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub(crate) enum Event {
    /// A user registered its name (before the workload: `t` is negative then).
    Register {
        t: i64,
        node: usize,
        ok: bool,
        ms: f64,
    },
    /// A workload message was handed to the node (`send_text` or `send_to` returned).
    Sent {
        t: i64,
        node: usize,
        id: u64,
    },
    /// Sending failed at once (the node refused it).
    SendFailed {
        t: i64,
        node: usize,
        id: u64,
        error: String,
    },
    /// A workload message was shown to the user of `node` (an incoming message event).
    Received {
        t: i64,
        node: usize,
        id: u64,
    },
    /// A name lookup finished.
    Lookup {
        t: i64,
        node: usize,
        ok: bool,
        ms: f64,
    },
    /// A group was formed (every member knows every other), or not in time.
    GroupFormed {
        t: i64,
        group: usize,
        ok: bool,
        ms: f64,
    },
    /// A node left (churn) or came back.
    Down {
        t: i64,
        node: usize,
    },
    Up {
        t: i64,
        node: usize,
    },
    /// A node's traffic over the run, and its DHT lookups (the network's own counters).
    Traffic {
        node: usize,
        sent: u64,
        received: u64,
        dht_lookups: u64,
        dht_lookup_requests: u64,
    },
    /// How many peers a node was connected to at the end of the run.
    Connections {
        t: i64,
        node: usize,
        peers: usize,
    },
    /// How many group messages a node could prove it lacked at the end of the run (numbers
    /// missing in a member device's sequence), over all its groups.
    Missing {
        t: i64,
        node: usize,
        messages: u64,
    },
    /// Something went wrong that the metrics do not show.
    Error {
        t: i64,
        node: usize,
        what: String,
    },
}

impl Event {
    /// Encodes as one line (without the newline).
    pub fn line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Reads events from JSON lines; a bad line is an error naming it.
pub(crate) fn parse(text: &str, origin: &str) -> Result<Vec<Event>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let e: Event = serde_json::from_str(line)
            .map_err(|e| format!("{origin}:{}: not an event: {e}", i + 1))?;
        out.push(e);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_bad_lines_are_named() {
        let evs = vec![
            Event::Sent { t: 5, node: 1, id: 9 },
            Event::Received { t: 7, node: 2, id: 9 },
            Event::Traffic {
                node: 2,
                sent: 1,
                received: 2,
                dht_lookups: 3,
                dht_lookup_requests: 4,
            },
        ];
        let text: String = evs.iter().map(|e| e.line() + "\n").collect();
        assert_eq!(parse(&text, "x").unwrap(), evs);
        let e = parse("{\"ev\":\"sent\"}\n", "log.jsonl").unwrap_err();
        assert!(e.starts_with("log.jsonl:1:"), "{e}");
    }
}
