//! Double Ratchet sessions with other devices (`sessions`: session id → [`StoredSession`];
//! `session_for`: device key → [`DeviceSessions`]). The rules of which session to use live in
//! `services::sessions`; this is their storage. Writes are not flushed here: a session's change
//! is flushed with what it produced (the outbox entry of a sealed message, or the stored
//! message an opened one became).

use serde::{Deserialize, Serialize};

use super::{enc, Store};
use crate::error::NodeError;
use kith_protocol::session::Session;

/// Most sessions kept with one device; the oldest go first.
pub const MAX_SESSIONS_PER_DEVICE: usize = 4;

/// A session with one device of a user (another user's, or this user's own other device).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredSession {
    /// The other side's user id.
    #[serde(with = "serde_bytes")]
    pub peer_user: [u8; 16],
    /// The other side's identity key.
    #[serde(with = "serde_bytes")]
    pub peer_identity: [u8; 32],
    /// The other side's device key.
    #[serde(with = "serde_bytes")]
    pub peer_device: [u8; 32],
    /// The other side's binary libp2p peer id.
    #[serde(with = "serde_bytes")]
    pub peer_id: Vec<u8>,
    /// When the other side's device certificate was issued.
    pub certified_at: u64,
    /// Whether the other side holds the session (it started it, acknowledged the envelope that
    /// started it, or sent a message in it): only then are messages sealed in it.
    pub confirmed: bool,
    /// Counts the writes of this session, so a change computed without the lock is kept only
    /// if nothing changed it meanwhile.
    pub version: u64,
    /// The ratchet state.
    pub session: Session,
}

/// The sessions with one device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSessions {
    /// The session messages to the device are sealed in (once confirmed).
    pub send: Option<[u8; 16]>,
    /// Every session kept with the device, oldest first.
    pub all: Vec<[u8; 16]>,
}

impl Store {
    /// A session by id.
    pub fn session(&self, id: &[u8; 16]) -> Result<Option<StoredSession>, NodeError> {
        match self.sessions.get(id).map_err(|e| self.err(e))? {
            Some(v) => Ok(Some(self.decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Writes a session's new state (its `version` is counted up here).
    pub fn put_session(&self, s: &mut StoredSession) -> Result<(), NodeError> {
        s.version = s.version.wrapping_add(1);
        let id = s.session.id();
        self.sessions.insert(id, enc(&*s)).map(|_| ()).map_err(|e| self.err(e))
    }

    /// The sessions with `device`.
    pub fn device_sessions(&self, device: &[u8; 32]) -> Result<DeviceSessions, NodeError> {
        match self.session_for.get(device).map_err(|e| self.err(e))? {
            Some(v) => self.decode(&v),
            None => Ok(DeviceSessions::default()),
        }
    }

    fn put_device_sessions(&self, device: &[u8; 32], d: &DeviceSessions) -> Result<(), NodeError> {
        if d.all.is_empty() {
            return self.session_for.remove(device).map(|_| ()).map_err(|e| self.err(e));
        }
        self.session_for.insert(device, enc(d)).map(|_| ()).map_err(|e| self.err(e))
    }

    /// Adds a new session with its device, used from now on to seal to it; the oldest beyond
    /// [`MAX_SESSIONS_PER_DEVICE`] are deleted.
    pub fn add_session(&self, s: &mut StoredSession) -> Result<(), NodeError> {
        let id = s.session.id();
        let mut d = self.device_sessions(&s.peer_device)?;
        d.all.retain(|x| *x != id);
        d.all.push(id);
        d.send = Some(id);
        while d.all.len() > MAX_SESSIONS_PER_DEVICE {
            let old = d.all.remove(0);
            self.sessions.remove(old).map_err(|e| self.err(e))?;
        }
        self.put_session(s)?;
        self.put_device_sessions(&s.peer_device, &d)
    }

    /// Makes `id` the session messages to `device` are sealed in.
    pub fn use_session(&self, device: &[u8; 32], id: &[u8; 16]) -> Result<(), NodeError> {
        let mut d = self.device_sessions(device)?;
        if d.send.as_ref() != Some(id) && d.all.contains(id) {
            d.send = Some(*id);
            self.put_device_sessions(device, &d)?;
        }
        Ok(())
    }

    /// Deletes a session.
    pub fn forget_session(&self, device: &[u8; 32], id: &[u8; 16]) -> Result<(), NodeError> {
        let mut d = self.device_sessions(device)?;
        d.all.retain(|x| x != id);
        if d.send.as_ref() == Some(id) {
            d.send = d.all.last().copied();
        }
        self.sessions.remove(id).map_err(|e| self.err(e))?;
        self.put_device_sessions(device, &d)
    }

    /// Deletes a session whose state does not decode. Its device is not known then: the
    /// device's list keeps naming it until newer sessions push it out, and a session not found
    /// is skipped.
    pub fn forget_damaged_session(&self, id: &[u8; 16]) -> Result<(), NodeError> {
        self.sessions.remove(id).map(|_| ()).map_err(|e| self.err(e))
    }

    /// Writes raw bytes as a session's state (tests of damaged states).
    #[cfg(test)]
    pub(crate) fn put_raw_session(&self, id: &[u8; 16], bytes: &[u8]) -> Result<(), NodeError> {
        self.sessions.insert(id, bytes).map(|_| ()).map_err(|e| self.err(e))
    }

    /// Deletes every session with a device of `user` not in `keep` (revoked or replaced);
    /// how many.
    pub fn drop_sessions(&self, user: &[u8; 16], keep: &[[u8; 32]]) -> Result<usize, NodeError> {
        let mut gone = Vec::new();
        for item in self.sessions.iter() {
            let (_, v) = item.map_err(|e| self.err(e))?;
            // A damaged state is skipped here (it is forgotten when it is next used).
            let Ok(s) = self.decode::<StoredSession>(&v) else { continue };
            if s.peer_user == *user && !keep.contains(&s.peer_device) {
                gone.push((s.peer_device, s.session.id()));
            }
        }
        for (device, id) in &gone {
            self.forget_session(device, id)?;
        }
        Ok(gone.len())
    }
}
