//! Voice and video calls: the signalling between devices (`docs/protocol.md` 6.4), as
//! `rules::call` decides it. The media runs in a client (the web app's WebRTC); this service
//! carries the client's offers and answers to the other devices as sealed direct messages,
//! rings, times calls out, and writes each call's history entry and this device's call list.
//!
//! Signals are ephemeral: each is sent once, straight to the device (no outbox, no mailbox);
//! a device that cannot be reached misses the call, and its user finds the `call.log` entry
//! the caller sends when the call ends, which is queued like any message.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kith_protocol::call::{CallLog, CallSignal, Signal, MAX_SDP};
use kith_protocol::message::SessionId;
use kith_protocol::{Content, ConversationId, SenderDevice, UserId};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, warn};

use crate::ctx::Ctx;
use crate::error::{NodeError, OrWarn};
use crate::rules::call::{self as rule, Effect, Phase, To};
use crate::services::conversations::{Conversation, Conversations};
use crate::services::signals::{fresh, Origin, Outgoing, Signals, Target};
use crate::views::NodeEvent;

/// Most members of a group whose devices a group call rings.
pub const MAX_CALL_GROUP: usize = 16;
/// Calls this device lists in its history (`GET /v1/calls`), newest first.
pub const MAX_HISTORY: usize = 100;
/// Most calls held at once (ringing, running or ended within 30 s); rings beyond are ignored.
pub const MAX_CALLS: usize = 32;
/// How long an ended call stays in the list of current calls.
const KEEP_ENDED_MS: u64 = 30_000;

/// A STUN or TURN server the web app's WebRTC may use (`RTCIceServer`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:host:port`, `turn:host:port?transport=udp`, `turns:...`.
    pub urls: Vec<String>,
    /// TURN user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// What calls are configured with (`config.toml`: `call_ring_seconds`, `[[ice_servers]]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallConfig {
    /// How long a call rings before it is missed, in ms.
    pub ring_ms: u64,
    /// STUN and TURN servers handed to the client (none: direct connections only).
    pub ice_servers: Vec<IceServer>,
}

impl Default for CallConfig {
    fn default() -> Self {
        CallConfig { ring_ms: rule::DEFAULT_RING_MS, ice_servers: Vec::new() }
    }
}

/// A device in a call, as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantView {
    /// The device key, hex.
    pub device: String,
    /// Its user's name, else user id.
    pub user: String,
}

/// A call as the API and the event stream show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallView {
    /// The call id, hex.
    pub id: String,
    /// The conversation id, hex.
    pub conversation: String,
    /// The conversation as `@name` or `#group-id`.
    pub to: String,
    /// A group call.
    pub group: bool,
    /// A video call (else voice).
    pub video: bool,
    /// `out` (this device called) or `in`.
    pub direction: String,
    /// `calling`, `ringing`, `active` or `ended`.
    pub state: String,
    /// Why it ended: `hung_up`, `left`, `missed`, `cancelled`, `declined`,
    /// `answered_elsewhere`, `declined_elsewhere`, `busy`, `unreachable`, `refused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    /// For a person: why it was refused, and the like.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The caller's name, else user id.
    pub caller: String,
    /// This device's key, hex.
    pub device: String,
    /// The other devices in the call.
    pub participants: Vec<ParticipantView>,
    /// The devices this device makes the WebRTC offer to (the larger keys).
    pub offers_to: Vec<String>,
    /// When it started ringing here, RFC 3339.
    pub started_at: String,
    /// When this device's call first had someone in it with this device.
    #[serde(default)]
    pub answered_at: Option<String>,
    /// When it ended here.
    #[serde(default)]
    pub ended_at: Option<String>,
    /// From the answer to the end (or now), in ms.
    pub duration_ms: u64,
}

/// An offer or answer from another device, for the client running the call's media.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CallSignalView {
    /// The call id, hex.
    pub call: String,
    /// The sending device, hex.
    pub from_device: String,
    /// `offer` or `answer`.
    pub kind: &'static str,
    /// The session description.
    pub sdp: String,
}

struct Entry {
    call: rule::Call,
    group: Option<[u8; 16]>,
    conversation: [u8; 16],
    to: String,
    /// Signals to send, in order, by this call's sender task.
    out: mpsc::Sender<Outgoing>,
    /// The note shown with an end (a refusal's reason).
    note: Option<String>,
}

/// The calls service.
#[derive(Clone)]
pub(crate) struct Calls {
    ctx: Ctx,
    conversations: Conversations,
    signals: Signals,
    config: Arc<CallConfig>,
    calls: Arc<Mutex<BTreeMap<[u8; 16], Entry>>>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Calls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calls").finish_non_exhaustive()
    }
}

fn hex32(d: &[u8; 32]) -> String {
    hex::encode(d)
}

impl Calls {
    pub(crate) fn new(ctx: Ctx, signals: Signals, config: CallConfig) -> Self {
        Calls {
            ctx,
            conversations: signals.conversations.clone(),
            signals,
            config: Arc::new(config),
            calls: Arc::default(),
            wake: Arc::default(),
        }
    }

    pub(crate) fn config(&self) -> &CallConfig {
        &self.config
    }

    fn device(&self) -> [u8; 32] {
        self.ctx.keys.device.public_bytes()
    }

    fn known_name(&self, user: [u8; 16]) -> Option<String> {
        crate::views::names_for(&self.ctx.store, self.ctx.user_id(), &[user])
            .ok()
            .and_then(|n| n.get(&user).cloned())
    }

    fn name_of(&self, user: [u8; 16]) -> String {
        self.known_name(user).unwrap_or_else(|| UserId(user).to_string())
    }

    fn view(&self, id: &[u8; 16], e: &Entry, now: u64) -> CallView {
        let c = &e.call;
        CallView {
            id: hex::encode(id),
            conversation: hex::encode(e.conversation),
            to: e.to.clone(),
            group: e.group.is_some(),
            video: c.video,
            direction: if c.outgoing { "out" } else { "in" }.into(),
            state: c.phase.as_str().into(),
            end_reason: c.end.as_ref().map(|r| r.as_str().to_owned()),
            note: e.note.clone().or_else(|| match &c.end {
                Some(rule::EndReason::Refused(why)) => Some(why.clone()),
                _ => None,
            }),
            caller: self.name_of(c.caller),
            device: hex32(&c.device),
            participants: c
                .participants
                .iter()
                .map(|(d, p)| ParticipantView { device: hex32(d), user: self.name_of(p.user) })
                .collect(),
            offers_to: c.offers_to().iter().map(hex32).collect(),
            started_at: crate::rfc3339(c.started_at),
            answered_at: c.answered_at.map(crate::rfc3339),
            ended_at: c.ended_at.map(crate::rfc3339),
            duration_ms: c.duration(now),
        }
    }

    /// The calls ringing or running here, and this device's call history (ended calls).
    pub(crate) fn list(&self) -> Result<(Vec<CallView>, Vec<CallView>), NodeError> {
        let now = self.ctx.now();
        let current = match self.calls.lock() {
            Ok(calls) => calls
                .iter()
                .filter(|(_, e)| e.call.phase != Phase::Ended)
                .map(|(id, e)| self.view(id, e, now))
                .collect(),
            Err(_) => Vec::new(),
        };
        let history: Vec<CallView> = self.ctx.store.meta_get("call_history")?.unwrap_or_default();
        Ok((current, history))
    }

    /// One call, current or in the history.
    pub(crate) fn get(&self, id: &str) -> Result<CallView, NodeError> {
        let (current, history) = self.list()?;
        current
            .into_iter()
            .chain(history)
            .find(|c| c.id == id)
            .ok_or_else(|| NodeError::NotFound(format!("call {id}")))
    }

    fn busy_here(calls: &BTreeMap<[u8; 16], Entry>) -> bool {
        calls.values().any(|e| e.call.joined())
    }

    /// Starts a call in a conversation (`@name` or `#group`); every device of the others
    /// rings.
    pub(crate) async fn start(&self, to: &str, video: bool) -> Result<CallView, NodeError> {
        let target = self.conversations.target(to)?;
        let me = self.ctx.user_id();
        let (group, conversation, shown, targets) = match &target {
            Conversation::Direct(name) => {
                let r = self.conversations.records.pinned_or_resolved(name).await?;
                if r.user_id == me {
                    return Err(NodeError::BadInput("you cannot call yourself".into()));
                }
                let conv = ConversationId::direct(&me, &r.user_id).0;
                (
                    None,
                    conv,
                    format!("@{name}"),
                    vec![Target { user: r.user_id, devices: r.devices }],
                )
            }
            Conversation::Group(id) => {
                let g = self.ctx.store.group(id)?.ok_or_else(|| {
                    NodeError::NotFound("that group is not known here yet".into())
                })?;
                if !g.active {
                    return Err(NodeError::NotAllowed(
                        "you are no longer a member of this group".into(),
                    ));
                }
                if g.members.len() > MAX_CALL_GROUP {
                    return Err(NodeError::BadInput(format!(
                        "group calls ring groups of at most {MAX_CALL_GROUP} members; this one has {}",
                        g.members.len()
                    )));
                }
                let members: Vec<_> = g.members.iter().map(|m| (m.user, m.name.clone())).collect();
                let targets = self.signals.member_targets(&members).await;
                (Some(*id), *id, format!("#{}", ConversationId(*id)), targets)
            }
        };
        let id = SessionId::random(&mut rand::rngs::OsRng).0;
        let now = self.ctx.now();
        let (mut call, effects) = rule::Call::outgoing(
            me.0,
            self.device(),
            video,
            group.is_some(),
            now,
            self.config.ring_ms,
        );
        let rung: Vec<[u8; 32]> = targets
            .iter()
            .filter(|t| t.user != me)
            .flat_map(|t| t.devices.iter().map(|d| d.device.device))
            .collect();
        if rung.is_empty() {
            return Err(NodeError::NotFound("nobody to call: no device of theirs is known".into()));
        }
        call.rang(rung);
        {
            let mut calls = self.lock()?;
            if Self::busy_here(&calls) {
                return Err(NodeError::Busy("you are in another call; hang up first".into()));
            }
            let out = self.signals.sender(targets);
            calls.insert(id, Entry { call, group, conversation, to: shown, out, note: None });
            self.apply(&mut calls, id, effects);
        }
        self.wake.notify_one();
        self.get(&hex::encode(id))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<[u8; 16], Entry>>, NodeError> {
        self.calls.lock().map_err(|_| NodeError::Internal("the call list is poisoned".into()))
    }

    /// Carries out what the rule decided for call `id` (the lock held).
    fn apply(&self, calls: &mut BTreeMap<[u8; 16], Entry>, id: [u8; 16], effects: Vec<Effect>) {
        let Some(e) = calls.get(&id) else { return };
        for effect in effects {
            match effect {
                Effect::Send(to, signal) => {
                    let ring = matches!(signal, Signal::Ring { .. });
                    let content = Content::Call(Box::new(CallSignal {
                        call: SessionId(id),
                        group: e.group.map(ConversationId),
                        signal,
                    }));
                    let mut out = Outgoing::new(to, content);
                    if ring {
                        // This user's own devices do not ring for its own call; a device the
                        // ring cannot reach does not count as ringing.
                        out.skip_own = true;
                        let calls = self.clone();
                        out.unreachable = Some(Arc::new(move |d| calls.unreachable(id, d)));
                    }
                    if e.out.try_send(out).is_err() {
                        warn!("a call's signal queue is full; a signal was dropped");
                    }
                }
                Effect::Relay(from, signal) => {
                    let (kind, sdp) = match signal {
                        Signal::Offer { sdp, .. } => ("offer", sdp),
                        Signal::Answer { sdp, .. } => ("answer", sdp),
                        _ => continue,
                    };
                    let _ = self.ctx.events.send(NodeEvent::CallSignal(CallSignalView {
                        call: hex::encode(id),
                        from_device: hex32(&from),
                        kind,
                        sdp,
                    }));
                }
                Effect::Changed => {
                    let view = self.view(&id, e, self.ctx.now());
                    if e.call.phase == Phase::Ended {
                        self.remember(&view);
                    }
                    let _ = self.ctx.events.send(NodeEvent::Call(Box::new(view)));
                }
                Effect::Log(outcome) => {
                    let log = CallLog {
                        call: SessionId(id),
                        video: e.call.video,
                        outcome,
                        started_at: e.call.started_at,
                        duration_ms: e.call.duration(self.ctx.now()),
                    };
                    let (conversations, to) = (self.conversations.clone(), e.to.clone());
                    self.ctx.spawn(async move {
                        let sent = match conversations.target(&to) {
                            Ok(t) => conversations.send(&t, Content::CallLog(log)).await,
                            Err(e) => Err(e),
                        };
                        if let Err(e) = sent {
                            warn!(%to, "cannot send a call's history entry: {e}");
                        }
                    });
                }
            }
        }
    }

    /// Adds an ended call to this device's history.
    fn remember(&self, view: &CallView) {
        let store = &self.ctx.store;
        let mut history: Vec<CallView> = store
            .meta_get("call_history")
            .or_warn("cannot read the call history")
            .flatten()
            .unwrap_or_default();
        history.retain(|c| c.id != view.id);
        history.insert(0, view.clone());
        history.truncate(MAX_HISTORY);
        store.meta_set("call_history", &history).or_warn("cannot write the call history");
    }

    /// Runs `f` on call `id` and carries out its effects.
    fn act(
        &self,
        id: &str,
        f: impl FnOnce(&mut rule::Call, u64) -> Result<Vec<Effect>, &'static str>,
    ) -> Result<CallView, NodeError> {
        let key = parse_id(id)?;
        {
            let mut calls = self.lock()?;
            let e = calls.get_mut(&key).ok_or_else(|| NodeError::NotFound(format!("call {id}")))?;
            let effects =
                f(&mut e.call, self.ctx.now()).map_err(|m| NodeError::NotAllowed(m.into()))?;
            self.apply(&mut calls, key, effects);
        }
        self.get(id)
    }

    /// Answers a call ringing here.
    pub(crate) fn accept(&self, id: &str) -> Result<CallView, NodeError> {
        {
            let calls = self.lock()?;
            let key = parse_id(id)?;
            if calls.iter().any(|(k, e)| *k != key && e.call.joined()) {
                return Err(NodeError::Busy("you are in another call; hang up first".into()));
            }
        }
        self.act(id, |c, now| c.join(now))
    }

    /// Declines a call ringing here (every device of this user stops ringing).
    pub(crate) fn decline(&self, id: &str) -> Result<CallView, NodeError> {
        self.act(id, |c, now| c.decline(now))
    }

    /// Leaves a call (cancels it if nobody answered yet).
    pub(crate) fn hang_up(&self, id: &str) -> Result<CallView, NodeError> {
        self.act(id, |c, now| c.hang_up(now))
    }

    /// Sends the client's offer or answer to a device in the call.
    pub(crate) fn relay(
        &self,
        id: &str,
        to: &str,
        kind: &str,
        sdp: String,
    ) -> Result<(), NodeError> {
        let key = parse_id(id)?;
        let mut device = [0u8; 32];
        hex::decode_to_slice(to, &mut device).map_err(|_| {
            NodeError::BadInput(format!("{to:?} is not a device key (64 hex digits)"))
        })?;
        if sdp.len() > MAX_SDP {
            return Err(NodeError::BadInput(format!(
                "the session description is over {MAX_SDP} bytes"
            )));
        }
        let signal = match kind {
            "offer" => Signal::Offer { to: device, sdp },
            "answer" => Signal::Answer { to: device, sdp },
            other => {
                return Err(NodeError::BadInput(format!(
                    "kind must be offer or answer, not {other:?}"
                )))
            }
        };
        let calls = self.lock()?;
        let e = calls.get(&key).ok_or_else(|| NodeError::NotFound(format!("call {id}")))?;
        if !e.call.joined() {
            return Err(NodeError::NotAllowed("this device is not in the call".into()));
        }
        if !e.call.participants.contains_key(&device) {
            return Err(NodeError::NotFound(format!("device {to} is not in the call")));
        }
        let content = Content::Call(Box::new(CallSignal {
            call: SessionId(key),
            group: e.group.map(ConversationId),
            signal,
        }));
        e.out
            .try_send(Outgoing::new(To::Device(device), content))
            .map_err(|_| NodeError::Busy("too many signals waiting to be sent".into()))
    }

    /// A ring could not reach `device`.
    fn unreachable(&self, id: [u8; 16], device: [u8; 32]) {
        let Ok(mut calls) = self.calls.lock() else { return };
        let Some(e) = calls.get_mut(&id) else { return };
        let effects = e.call.unreachable(device, self.ctx.now());
        self.apply(&mut calls, id, effects);
    }

    /// A call signal from another device (the inbound path).
    /// `claimed` is the name the sender's envelope gives (checked by looking it up: its record
    /// must be the sender's).
    pub(crate) fn receive(
        &self,
        sender: &SenderDevice,
        claimed: Option<&str>,
        sent_at: u64,
        signal: &CallSignal,
    ) {
        let now = self.ctx.now();
        if !fresh(sent_at, now) {
            debug!("ignoring a call signal sent {} ms ago", now - sent_at);
            return;
        }
        let id = signal.call.0;
        let Ok(mut calls) = self.calls.lock() else { return };
        if let Some(e) = calls.get_mut(&id) {
            if e.group != signal.group.map(|g| g.0) {
                return;
            }
            let effects =
                e.call.on_signal(sender.user_id.0, sender.device, signal.signal.clone(), now);
            self.apply(&mut calls, id, effects);
            return;
        }
        let Signal::Ring { video } = signal.signal else { return };
        let me = self.ctx.user_id();
        if sender.user_id == me {
            return;
        }
        let group = signal.group.map(|g| g.0);
        let Some(Origin { conversation, to, members }) =
            self.signals.origin(sender, claimed, group)
        else {
            return;
        };
        // The list is full (rings flooding in): this one is not held at all, so a peer cannot
        // grow the list, nor start a lookup per ring.
        if calls.len() >= MAX_CALLS {
            debug!("ignoring a ring: {MAX_CALLS} calls are held already");
            return;
        }
        let busy = Self::busy_here(&calls);
        let (mut call, mut effects) = rule::Call::incoming(
            me.0,
            self.device(),
            sender.user_id.0,
            sender.device,
            video,
            group.is_some(),
            now,
            self.config.ring_ms,
        );
        if busy {
            effects = call.busy_here(now);
        }
        // The targets are resolved by the call's sender task before its first signal.
        let out = self.signals.sender_resolving(members);
        calls.insert(id, Entry { call, group, conversation, to, out, note: None });
        self.apply(&mut calls, id, effects);
        drop(calls);
        self.wake.notify_one();
    }

    /// The calls task: rings time out, ended calls leave the current list.
    pub(crate) async fn calls_task(self) {
        loop {
            let now = self.ctx.now();
            let mut next = now + 60_000;
            if let Ok(mut calls) = self.calls.lock() {
                let ids: Vec<[u8; 16]> = calls.keys().copied().collect();
                for id in ids {
                    let Some(e) = calls.get_mut(&id) else { continue };
                    let effects = e.call.tick(now);
                    self.apply(&mut calls, id, effects);
                    let Some(e) = calls.get(&id) else { continue };
                    match e.call.ended_at {
                        Some(t) if t + KEEP_ENDED_MS <= now => {
                            calls.remove(&id);
                        }
                        Some(t) => next = next.min(t + KEEP_ENDED_MS),
                        None if matches!(e.call.phase, Phase::Ringing | Phase::Calling) => {
                            next = next.min(e.call.ring_until)
                        }
                        None => {}
                    }
                }
            }
            let sleep = Duration::from_millis(next.saturating_sub(now).max(50));
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.wake.notified() => {}
            }
        }
    }
}

fn parse_id(id: &str) -> Result<[u8; 16], NodeError> {
    let mut key = [0u8; 16];
    hex::decode_to_slice(id, &mut key)
        .map_err(|_| NodeError::NotFound(format!("call {id:?} (a call id is 32 hex digits)")))?;
    Ok(key)
}
