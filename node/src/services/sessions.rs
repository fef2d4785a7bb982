//! Double Ratchet sessions with other devices: which one seals a message, starting one, opening
//! session envelopes, and what acknowledgements and revocations change. The ratchet itself is
//! `kith_protocol::session`; the states live in the store (`store::sessions`).
//!
//! The rules:
//! - a message to a device is sealed in the device's current session once that device holds it
//!   (it started it, acknowledged the envelope that started it, or sent a message in it);
//! - otherwise it is sealed with Noise `X` to the device's prekey, and the first such envelope
//!   starts a session (another one only after [`RESTART_UNCONFIRMED_MS`] without an answer);
//! - a device that receives a session envelope it cannot place answers `no_session`, and the
//!   sender seals that message again with Noise, starting a new session;
//! - sessions with a revoked device are deleted with its targets.

use std::sync::{Arc, Mutex};

use kith_protocol::envelope::{Opened, Recipient, SenderDevice};
use kith_protocol::name::RecordDevice;
use kith_protocol::session::SessionError;
use kith_protocol::{Envelope, EnvelopeError, IdentityPublic, Message, UserId, X25519Secret};
use libp2p::PeerId;
use tracing::{debug, warn};

use crate::ctx::Ctx;
use crate::error::NodeError;
use crate::store::StoredSession;

/// How long a started session may go without an answer before the next message to the device
/// starts another (the first envelope may have been lost, or may wait in a mailbox).
pub const RESTART_UNCONFIRMED_MS: u64 = 10 * 60 * 1000;

/// The sessions service.
#[derive(Clone, Debug)]
pub(crate) struct Sessions {
    ctx: Ctx,
    /// Serializes read-modify-write of session states: two messages sealed from one state
    /// would reuse a message key.
    lock: Arc<Mutex<()>>,
}

/// What opening an envelope changed of the sessions, to keep once the message is stored.
#[derive(Debug)]
pub(crate) enum SessionChange {
    /// The envelope started a session with its sender.
    Started(Box<StoredSession>),
    /// It opened in session `id` at `version`; `state` is the session after it.
    Advanced { id: [u8; 16], version: u64, state: Box<StoredSession> },
}

impl SessionChange {
    /// The session the recipient now holds with the sender.
    pub(crate) fn id(&self) -> [u8; 16] {
        match self {
            SessionChange::Started(s) => s.session.id(),
            SessionChange::Advanced { id, .. } => *id,
        }
    }
}

/// Why an envelope did not open.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// It was sealed in a session this device does not hold.
    NoSession,
    /// Its message key was used already: the message was opened before.
    Opened,
    /// Anything else (it does not decrypt, is malformed, or names the wrong sender).
    Bad(String),
}

impl Sessions {
    pub(crate) fn new(ctx: Ctx) -> Self {
        Sessions { ctx, lock: Arc::default() }
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seals `message` to device `d` of `user` (see the module's rules). The session's change
    /// is written, not flushed: the caller flushes it with the outbox entry before the
    /// envelope leaves.
    pub(crate) fn seal(
        &self,
        to: &SealTo,
        message: &Message,
        name: Option<&str>,
    ) -> Result<Envelope, NodeError> {
        let store = &self.ctx.store;
        let keys = &self.ctx.keys;
        let device = to.device;
        let seal_err =
            |e: EnvelopeError| NodeError::Internal(format!("cannot seal a message: {e}"));
        let now = self.ctx.now();
        let _guard = self.guard();
        let current = match store.device_sessions(&device)?.send {
            Some(id) => self.readable(&device, &id)?,
            None => None,
        };
        if let Some(mut s) = current.filter(|s| s.peer_user == to.user) {
            if s.confirmed {
                match Envelope::seal_in_session(&mut s.session, &device, message, name) {
                    Ok(env) => {
                        store.put_session(&mut s)?;
                        self.ctx.counters.sealed_session.inc();
                        return Ok(env);
                    }
                    // An exhausted session (2^32 messages) gives way to a new one.
                    Err(EnvelopeError::Session(SessionError::Exhausted)) => {}
                    Err(e) => return Err(seal_err(e)),
                }
            } else if now < s.session.created_at().saturating_add(RESTART_UNCONFIRMED_MS) {
                self.ctx.counters.sealed_noise.inc();
                return Envelope::seal(
                    &keys.cert,
                    &keys.static_key,
                    &to.recipient(),
                    message,
                    name,
                )
                .map_err(seal_err);
            }
        }
        let (env, session) = Envelope::seal_starting_session(
            &mut rand::rngs::OsRng,
            &keys.cert,
            &keys.static_key,
            &to.recipient(),
            message,
            name,
            now,
        )
        .map_err(seal_err)?;
        let mut s = StoredSession {
            peer_user: to.user,
            peer_identity: to.identity,
            peer_device: device,
            peer_id: to.peer_id.clone(),
            certified_at: to.certified_at,
            confirmed: false,
            version: 0,
            session,
        };
        store.add_session(&mut s)?;
        self.ctx.counters.sealed_noise.inc();
        Ok(env)
    }

    /// Opens an envelope to this device: with Noise (accepting the session it may start) or in
    /// its session. Nothing is written: [`Sessions::keep`] writes the change once the message
    /// is stored.
    pub(crate) fn open(
        &self,
        env: &Envelope,
    ) -> Result<(Opened, Option<SessionChange>), OpenError> {
        let store = &self.ctx.store;
        let own = self.ctx.keys.device.public_bytes();
        let now = self.ctx.now();
        let Some(id) = env.session_id() else {
            let prekey =
                |id| store.prekey(id).ok().flatten().map(|p| X25519Secret::from_bytes(p.secret));
            let (opened, session) = env
                .open_accepting_session(&mut rand::rngs::OsRng, &own, prekey, now)
                .map_err(|e| OpenError::Bad(e.to_string()))?;
            let change = session.map(|session| {
                let s = &opened.sender;
                Box::new(StoredSession {
                    peer_user: s.user_id.0,
                    peer_identity: s.identity.to_bytes(),
                    peer_device: s.device,
                    peer_id: s.peer_id.to_bytes(),
                    certified_at: s.certified_at,
                    confirmed: true,
                    version: 0,
                    session,
                })
            });
            return Ok((opened, change.map(SessionChange::Started)));
        };
        let mut s = {
            let _guard = self.guard();
            let found = store.session(&id);
            if let Err(e) = &found {
                // A damaged state is a lost one: the sender seals the message again.
                warn!("a session's stored state is damaged, forgetting it: {e}");
                if let Err(e) = store.forget_damaged_session(&id) {
                    warn!("cannot forget a damaged session: {e}");
                }
            }
            found.ok().flatten().ok_or(OpenError::NoSession)?
        };
        let version = s.version;
        let (message, sender_name) =
            match env.open_in_session(&mut rand::rngs::OsRng, &own, &mut s.session, now) {
                Ok(m) => m,
                Err(EnvelopeError::Session(SessionError::KeyGone)) => {
                    return Err(OpenError::Opened)
                }
                Err(e) => return Err(OpenError::Bad(e.to_string())),
            };
        let sender = sender_of(&s).map_err(OpenError::Bad)?;
        if message.sender != sender.user_id {
            return Err(OpenError::Bad(EnvelopeError::SenderMismatch.to_string()));
        }
        let opened = Opened { sender, message, sender_name };
        let change = SessionChange::Advanced { id, version, state: Box::new(s) };
        Ok((opened, Some(change)))
    }

    /// Writes what opening envelope `env` changed, now that its message is stored (written
    /// before this, so a crash that keeps the session's step keeps the message too).
    pub(crate) fn keep(&self, change: SessionChange, env: &Envelope) -> Result<(), NodeError> {
        let store = &self.ctx.store;
        let _guard = self.guard();
        match change {
            // A replayed first envelope must not reset the session it started.
            SessionChange::Started(mut s) => match store.session(&s.session.id())? {
                Some(_) => Ok(()),
                None => store.add_session(&mut s),
            },
            SessionChange::Advanced { id, version, mut state } => {
                let Some(mut current) = store.session(&id)? else { return Ok(()) };
                if current.version == version {
                    state.confirmed = true;
                    store.put_session(&mut state)?;
                } else {
                    // Changed meanwhile (a message sealed or opened in it): step it again.
                    let own = self.ctx.keys.device.public_bytes();
                    let now = self.ctx.now();
                    let rng = &mut rand::rngs::OsRng;
                    if env.open_in_session(rng, &own, &mut current.session, now).is_ok() {
                        current.confirmed = true;
                        store.put_session(&mut current)?;
                    }
                }
                store.use_session(&state.peer_device, &id)
            }
        }
    }

    /// Session `id` with `device`, or `None` if it is gone or its stored state is damaged (then
    /// it is forgotten, and the next message starts a new one). The caller holds the lock.
    fn readable(
        &self,
        device: &[u8; 32],
        id: &[u8; 16],
    ) -> Result<Option<StoredSession>, NodeError> {
        match self.ctx.store.session(id) {
            Ok(s) => Ok(s),
            Err(e) => {
                warn!("a session's stored state is damaged, starting a new one: {e}");
                self.ctx.store.forget_session(device, id)?;
                Ok(None)
            }
        }
    }

    /// `device` acknowledged an envelope and holds session `id` with this device.
    pub(crate) fn acknowledged(&self, device: &[u8; 32], id: &[u8; 16]) {
        let store = &self.ctx.store;
        let _guard = self.guard();
        let result = (|| {
            let Some(mut s) = store.session(id)? else { return Ok(()) };
            if s.peer_device != *device {
                return Ok(());
            }
            if !s.confirmed {
                s.confirmed = true;
                store.put_session(&mut s)?;
            }
            Ok::<_, NodeError>(())
        })();
        if let Err(e) = result {
            debug!("cannot record an acknowledged session: {e}");
        }
    }

    /// `device` does not hold the session the envelope `env` was sealed in: forget that
    /// session, and answer where to seal the envelope's message again (`prekey`: the device's
    /// prekey when it was sealed). `None` if `env` was not sealed in a session this device
    /// holds.
    pub(crate) fn lost(
        &self,
        device: &[u8; 32],
        env: &Envelope,
        prekey: (u32, [u8; 32]),
    ) -> Result<Option<SealTo>, NodeError> {
        let Some(id) = env.session_id() else { return Ok(None) };
        let store = &self.ctx.store;
        let _guard = self.guard();
        let Some(s) = store.session(&id)? else { return Ok(None) };
        if s.peer_device != *device {
            return Ok(None);
        }
        store.forget_session(device, &id)?;
        self.ctx.counters.sessions_lost.inc();
        Ok(Some(SealTo {
            user: s.peer_user,
            identity: s.peer_identity,
            device: s.peer_device,
            peer_id: s.peer_id.clone(),
            certified_at: s.certified_at,
            prekey_id: prekey.0,
            prekey: prekey.1,
        }))
    }

    /// Deletes the sessions with `user`'s devices not in `keep`.
    pub(crate) fn drop_devices(
        &self,
        user: &[u8; 16],
        keep: &[[u8; 32]],
    ) -> Result<usize, NodeError> {
        let _guard = self.guard();
        self.ctx.store.drop_sessions(user, keep)
    }
}

/// A device to seal to, as its user's record lists it.
#[derive(Clone, Debug)]
pub(crate) struct SealTo {
    pub(crate) user: [u8; 16],
    pub(crate) identity: [u8; 32],
    pub(crate) device: [u8; 32],
    pub(crate) peer_id: Vec<u8>,
    pub(crate) certified_at: u64,
    pub(crate) prekey_id: u32,
    pub(crate) prekey: [u8; 32],
}

impl SealTo {
    /// Device `d` of `user`.
    pub(crate) fn of(user: UserId, d: &RecordDevice) -> Self {
        SealTo {
            user: user.0,
            identity: d.device.identity.to_bytes(),
            device: d.device.device,
            peer_id: d.device.peer_id.to_bytes(),
            certified_at: d.device.created_at,
            prekey_id: d.prekey.id,
            prekey: d.prekey.key,
        }
    }

    fn recipient(&self) -> Recipient {
        Recipient { device: self.device, prekey_id: self.prekey_id, prekey: self.prekey }
    }
}

fn sender_of(s: &StoredSession) -> Result<SenderDevice, String> {
    let identity = IdentityPublic::from_bytes(&s.peer_identity).map_err(|e| e.to_string())?;
    let peer_id = PeerId::from_bytes(&s.peer_id).map_err(|e| e.to_string())?;
    Ok(SenderDevice {
        user_id: identity.user_id(),
        identity,
        device: s.peer_device,
        peer_id,
        certified_at: s.certified_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{lone_node, Node};
    use kith_protocol::name::DeviceEntry;
    use kith_protocol::{Content, ConversationId, MessageId, Text, VERSION};

    async fn node(dir: &std::path::Path) -> Node {
        Node::start(lone_node(dir, false)).await.expect("node starts")
    }

    /// Where `n`'s device is sealed to, as its record would list it.
    fn target(n: &Node) -> SealTo {
        let s = n.services();
        let prekey = s.records.current_prekey().expect("a prekey").0;
        let entry = DeviceEntry { cert: s.ctx.keys.cert.clone(), prekey };
        let d = s.records.verify_entry(&entry, s.ctx.now()).expect("a valid entry");
        SealTo::of(s.ctx.user_id(), &d)
    }

    fn text(from: &Node, to: &SealTo, body: &str) -> Message {
        Message {
            v: VERSION,
            id: MessageId::random(&mut rand::rngs::OsRng),
            conversation: ConversationId::direct(&from.user_id(), &UserId(to.user)),
            sender: from.user_id(),
            sent_at: crate::now_ms(),
            content: Content::Text(Text { body: body.into() }),
        }
    }

    /// The first envelope starts a session, the acknowledgement confirms it, the next is sealed
    /// in it; a damaged stored state, on either side, counts as a lost session (no refusal, no
    /// failed send); a revoked device's sessions are deleted.
    #[tokio::test]
    async fn damaged_and_revoked_sessions_are_replaced() {
        let (da, db) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
        let (alice, bob) = (node(da.path()).await, node(db.path()).await);
        let (a, b) = (&alice.services().outbox.sessions, &bob.services().outbox.sessions);
        let to = target(&bob);
        let first = a.seal(&to, &text(&alice, &to, "one"), None).expect("seals");
        assert!(first.session.is_none(), "the first is sealed with Noise");
        let (opened, change) = b.open(&first).expect("opens");
        assert_eq!(opened.message.content.text(), Some("one"));
        let change = change.expect("it starts a session");
        let id = change.id();
        b.keep(change, &first).expect("kept");
        // Until bob acknowledges, alice keeps sealing with Noise (and starts nothing new).
        let again = a.seal(&to, &text(&alice, &to, "two"), None).expect("seals");
        assert!(again.session.is_none());
        let (_, change) = b.open(&again).expect("opens");
        assert!(change.is_none(), "no second session");
        a.acknowledged(&to.device, &id);
        let second = a.seal(&to, &text(&alice, &to, "three"), None).expect("seals");
        assert_eq!(second.session_id(), Some(id));

        // Bob's stored state is damaged: the envelope answers as a lost session.
        bob.services().ctx.store.put_raw_session(&id, b"not a session").expect("written");
        assert!(matches!(b.open(&second), Err(OpenError::NoSession)));
        assert!(bob.services().ctx.store.session(&id).expect("reads").is_none(), "forgotten");

        // Alice's is damaged: her next message starts a new session instead of failing.
        alice.services().ctx.store.put_raw_session(&id, b"\xff").expect("written");
        let fresh = a.seal(&to, &text(&alice, &to, "four"), None).expect("seals");
        assert!(fresh.session.is_none(), "sealed with Noise, starting a new session");
        let (_, change) = b.open(&fresh).expect("opens");
        let new_id = change.as_ref().expect("a new session").id();
        assert_ne!(new_id, id);
        b.keep(change.expect("a new session"), &fresh).expect("kept");

        // Bob's device is revoked: alice deletes its sessions.
        assert_eq!(a.drop_devices(&to.user, &[]).expect("dropped"), 1);
        assert!(alice
            .services()
            .ctx
            .store
            .device_sessions(&to.device)
            .expect("reads")
            .all
            .is_empty());
        alice.shutdown().await.expect("stops");
        bob.shutdown().await.expect("stops");
    }
}
