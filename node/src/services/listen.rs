//! Listening together (`docs/protocol.md` 6.5): sessions in a chat or group where every member's
//! page plays its own copy of the same audio attachments, aligned to the host's clock. The host's
//! device keeps the playback (`rules::listen::Playback`) and sends it to every member device on
//! each change; a member's controls go to the host; a member that joins measures its clock
//! against the host's (`rules::listen::ClockSync`) and again every 30 s while joined.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kith_protocol::listen::{ListenOp, ListenSignal, ListenState};
use kith_protocol::message::SessionId;
use kith_protocol::{Content, ConversationId, MessageId, SenderDevice};
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::debug;

use crate::ctx::Ctx;
use crate::error::NodeError;
use crate::rules::call::To;
use crate::rules::listen::{self as rule, ClockSync, Control, Playback};
use crate::services::conversations::Conversation;
use crate::services::signals::{fresh, Origin, Outgoing, Signals};
use crate::views::NodeEvent;

/// Most listening sessions held at once (older ended ones go first).
pub const MAX_SESSIONS: usize = 16;
/// Time between the pings a listener sends when it joins.
const PING_SPACING: Duration = Duration::from_millis(150);

/// A track of a session, as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrackView {
    /// The attachment message, hex.
    pub message: String,
    /// Its file name.
    pub name: Option<String>,
    /// Its MIME type.
    pub mime: Option<String>,
    /// Its length, when the sender gave it.
    pub duration_ms: Option<u64>,
}

/// A listening session as the API and the event stream show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ListenView {
    /// The session id, hex.
    pub id: String,
    /// The conversation id, hex.
    pub conversation: String,
    /// The conversation as `@name` or `#group-id`.
    pub to: String,
    /// The host's device, hex.
    pub host_device: String,
    /// This device hosts it.
    pub host: bool,
    /// The tracks.
    pub queue: Vec<TrackView>,
    /// The current track's place in the queue.
    pub index: u32,
    /// Playing, else paused.
    pub playing: bool,
    /// The current track's position at host time `at`, ms.
    pub position_ms: u64,
    /// The host's clock when the position was true, ms since the Unix epoch.
    pub at: u64,
    /// The state's sequence number.
    pub seq: u64,
    /// The session has ended.
    pub stopped: bool,
    /// This device's page takes part.
    pub joined: bool,
    /// The host's clock minus this device's, ms (0 on the host; `None` until measured).
    pub offset_ms: Option<i64>,
    /// The median round trip of the offset's samples, ms.
    pub rtt_ms: Option<u64>,
    /// Round trips measured.
    pub samples: usize,
}

struct Session {
    conversation: [u8; 16],
    group: Option<[u8; 16]>,
    to: String,
    host: [u8; 32],
    playback: Playback,
    joined: bool,
    sync: ClockSync,
    /// Pings out: nonce → when sent.
    pings: HashMap<u64, u64>,
    last_sync: u64,
    out: mpsc::Sender<Outgoing>,
}

/// The listening service.
#[derive(Clone)]
pub(crate) struct Listen {
    ctx: Ctx,
    signals: Signals,
    sessions: Arc<Mutex<BTreeMap<[u8; 16], Session>>>,
}

impl std::fmt::Debug for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listen").finish_non_exhaustive()
    }
}

fn parse_id(id: &str) -> Result<[u8; 16], NodeError> {
    SessionId::parse(id)
        .map(|s| s.0)
        .map_err(|_| NodeError::NotFound(format!("listening session {id:?} (32 hex digits)")))
}

impl Listen {
    pub(crate) fn new(ctx: Ctx, signals: Signals) -> Self {
        Listen { ctx, signals, sessions: Arc::default() }
    }

    fn device(&self) -> [u8; 32] {
        self.ctx.keys.device.public_bytes()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<[u8; 16], Session>>, NodeError> {
        self.sessions.lock().map_err(|_| NodeError::Internal("the session list is poisoned".into()))
    }

    fn track(&self, id: &[u8; 16]) -> TrackView {
        let a = self.ctx.store.attachment(id).ok().flatten().and_then(|e| e.attachment().ok());
        TrackView {
            message: hex::encode(id),
            name: a.as_ref().and_then(|a| a.name.clone()),
            mime: a.as_ref().map(|a| a.mime.clone()),
            duration_ms: a.and_then(|a| a.duration_ms),
        }
    }

    fn view(&self, id: &[u8; 16], s: &Session) -> ListenView {
        let p = &s.playback;
        let host = s.host == self.device();
        let estimate = if host { Some((0, 0)) } else { s.sync.estimate() };
        ListenView {
            id: hex::encode(id),
            conversation: hex::encode(s.conversation),
            to: s.to.clone(),
            host_device: hex::encode(s.host),
            host,
            queue: p.queue.iter().map(|t| self.track(t)).collect(),
            index: p.index,
            playing: p.playing,
            position_ms: p.position_ms,
            at: p.at,
            seq: p.seq,
            stopped: p.stopped,
            joined: s.joined,
            offset_ms: estimate.map(|e| e.0),
            rtt_ms: estimate.map(|e| e.1),
            samples: if host { 0 } else { s.sync.len() },
        }
    }

    fn announce(&self, id: &[u8; 16], s: &Session) {
        let _ = self.ctx.events.send(NodeEvent::Listen(Box::new(self.view(id, s))));
    }

    /// The sessions this device knows.
    pub(crate) fn list(&self) -> Result<Vec<ListenView>, NodeError> {
        let sessions = self.lock()?;
        Ok(sessions.iter().map(|(id, s)| self.view(id, s)).collect())
    }

    /// One session.
    pub(crate) fn get(&self, id: &str) -> Result<ListenView, NodeError> {
        let key = parse_id(id)?;
        let sessions = self.lock()?;
        let s = sessions
            .get(&key)
            .ok_or_else(|| NodeError::NotFound(format!("listening session {id}")))?;
        Ok(self.view(&key, s))
    }

    fn state(&self, s: &Session) -> ListenState {
        let p = &s.playback;
        ListenState {
            host: s.host,
            queue: p.queue.iter().map(|t| MessageId(*t)).collect(),
            index: p.index,
            playing: p.playing,
            position_ms: p.position_ms,
            at: p.at,
            seq: p.seq,
            stopped: p.stopped,
        }
    }

    fn signal(id: [u8; 16], group: Option<[u8; 16]>, op: ListenOp) -> Content {
        Content::Listen(Box::new(ListenSignal {
            session: SessionId(id),
            group: group.map(ConversationId),
            op,
        }))
    }

    /// Starts a session in a conversation (`@name` or `#group`) with attachment messages of
    /// it as the queue; this device hosts it. It starts paused.
    pub(crate) async fn start(&self, to: &str, tracks: &[String]) -> Result<ListenView, NodeError> {
        let conversations = &self.signals.conversations;
        let target = conversations.target(to)?;
        let me = self.ctx.user_id();
        let (group, conversation, shown, members) = match &target {
            Conversation::Direct(name) => {
                let r = conversations.records.pinned_or_resolved(name).await?;
                let conv = ConversationId::direct(&me, &r.user_id).0;
                (None, conv, format!("@{name}"), vec![(r.user_id.0, Some(name.clone()))])
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
                if g.members.len() > crate::services::calls::MAX_CALL_GROUP {
                    return Err(NodeError::BadInput(format!(
                        "listening sessions are for groups of at most {} members",
                        crate::services::calls::MAX_CALL_GROUP
                    )));
                }
                let members = g.members.iter().map(|m| (m.user, m.name.clone())).collect();
                (Some(*id), *id, format!("#{}", ConversationId(*id)), members)
            }
        };
        let mut queue = Vec::with_capacity(tracks.len());
        for t in tracks {
            queue.push(self.check_track(t, &conversation)?);
        }
        let now = self.ctx.now();
        let playback = Playback::new(queue, now).map_err(|e| NodeError::BadInput(e.into()))?;
        let targets = self.signals.member_targets(&members).await;
        let id = SessionId::random(&mut rand::rngs::OsRng).0;
        let session = Session {
            conversation,
            group,
            to: shown,
            host: self.device(),
            playback,
            joined: true,
            sync: ClockSync::default(),
            pings: HashMap::new(),
            last_sync: now,
            out: self.signals.sender(targets),
        };
        let mut sessions = self.lock()?;
        Self::make_room(&mut sessions);
        sessions.insert(id, session);
        self.broadcast(&sessions, id);
        let s = &sessions[&id];
        Ok(self.view(&id, s))
    }

    /// Message `id` (hex) must be an attachment of `conversation`.
    fn check_track(&self, id: &str, conversation: &[u8; 16]) -> Result<[u8; 16], NodeError> {
        let key = MessageId::parse(id).map_err(|e| NodeError::BadInput(e.to_string()))?.0;
        let m = self
            .ctx
            .store
            .message(&key)?
            .filter(|m| &m.conversation == conversation)
            .ok_or_else(|| NodeError::NotFound(format!("message {id} in this conversation")))?;
        if m.kind != "attachment" {
            return Err(NodeError::BadInput(format!("message {id} is not a file")));
        }
        Ok(key)
    }

    fn make_room(sessions: &mut BTreeMap<[u8; 16], Session>) {
        while sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| (!s.playback.stopped, s.playback.at))
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => sessions.remove(&k),
                None => return,
            };
        }
    }

    /// Sends session `id`'s state to every member device and tells subscribers.
    fn broadcast(&self, sessions: &BTreeMap<[u8; 16], Session>, id: [u8; 16]) {
        let Some(s) = sessions.get(&id) else { return };
        let content = Self::signal(id, s.group, ListenOp::State(self.state(s)));
        if s.out.try_send(Outgoing::new(To::Everyone, content)).is_err() {
            debug!("a listening session's signal queue is full");
        }
        self.announce(&id, s);
    }

    /// A control from this device's page: applied here when this device hosts the session,
    /// else sent to the host.
    pub(crate) fn control(&self, id: &str, control: Control) -> Result<ListenView, NodeError> {
        let key = parse_id(id)?;
        let mut sessions = self.lock()?;
        let s = sessions
            .get_mut(&key)
            .ok_or_else(|| NodeError::NotFound(format!("listening session {id}")))?;
        if let Control::Add { track } = &control {
            self.check_track(&track.to_string(), &s.conversation)?;
        }
        if s.host == self.device() {
            s.playback
                .apply(&control, self.ctx.now())
                .map_err(|e| NodeError::NotAllowed(e.into()))?;
            self.broadcast(&sessions, key);
        } else {
            let content = Self::signal(key, s.group, ListenOp::Control(control.clone()));
            s.out
                .try_send(Outgoing::new(To::Device(s.host), content))
                .map_err(|_| NodeError::Busy("too many signals waiting to be sent".into()))?;
        }
        let s = &sessions[&key];
        Ok(self.view(&key, s))
    }

    /// This device's page joins (or leaves) the session: a joined listener measures its clock
    /// against the host's.
    pub(crate) fn join(&self, id: &str, joined: bool) -> Result<ListenView, NodeError> {
        let key = parse_id(id)?;
        let view = {
            let mut sessions = self.lock()?;
            let s = sessions
                .get_mut(&key)
                .ok_or_else(|| NodeError::NotFound(format!("listening session {id}")))?;
            s.joined = joined;
            self.view(&key, s)
        };
        if joined && !view.host {
            self.sync_now(key, rule::PINGS_ON_JOIN);
        }
        Ok(view)
    }

    /// Sends `n` pings to the host of session `id`, spaced out.
    fn sync_now(&self, id: [u8; 16], n: usize) {
        let listen = self.clone();
        self.ctx.spawn(async move {
            for _ in 0..n {
                {
                    let Ok(mut sessions) = listen.sessions.lock() else { return };
                    let Some(s) = sessions.get_mut(&id) else { return };
                    let nonce: u64 = rand::random();
                    let now = listen.ctx.now();
                    if s.pings.len() >= 64 {
                        s.pings.clear();
                    }
                    s.pings.insert(nonce, now);
                    s.last_sync = now;
                    let content = Self::signal(id, s.group, ListenOp::Ping { nonce });
                    let _ = s.out.try_send(Outgoing::new(To::Device(s.host), content));
                }
                tokio::time::sleep(PING_SPACING).await;
            }
        });
    }

    /// A listening signal from another device (the inbound path).
    pub(crate) fn receive(
        &self,
        sender: &SenderDevice,
        claimed: Option<&str>,
        sent_at: u64,
        signal: &ListenSignal,
    ) {
        let now = self.ctx.now();
        if !fresh(sent_at, now) {
            return;
        }
        let id = signal.session.0;
        let Ok(mut sessions) = self.sessions.lock() else { return };
        let group = signal.group.map(|g| g.0);
        match &signal.op {
            ListenOp::State(state) => {
                if state.host != sender.device {
                    return;
                }
                let playback = Playback {
                    queue: state.queue.iter().map(|m| m.0).collect(),
                    index: state.index,
                    playing: state.playing,
                    position_ms: state.position_ms,
                    at: state.at,
                    seq: state.seq,
                    stopped: state.stopped,
                };
                if let Some(s) = sessions.get_mut(&id) {
                    if s.group != group || s.host != sender.device {
                        return;
                    }
                    if !s.playback.replaced_by(&playback) {
                        return;
                    }
                    s.playback = playback;
                    self.announce(&id, s);
                    return;
                }
                let Some(Origin { conversation, to, members }) =
                    self.signals.origin(sender, claimed, group)
                else {
                    return;
                };
                Self::make_room(&mut sessions);
                let s = Session {
                    conversation,
                    group,
                    to,
                    host: sender.device,
                    playback,
                    joined: false,
                    sync: ClockSync::default(),
                    pings: HashMap::new(),
                    last_sync: 0,
                    out: self.signals.sender_resolving(members),
                };
                self.announce(&id, &s);
                sessions.insert(id, s);
            }
            ListenOp::Control(c) => {
                let Some(s) = sessions.get_mut(&id) else { return };
                if s.host != self.device() || s.group != group || !self.is_member(sender, s) {
                    return;
                }
                if let Err(e) = s.playback.apply(c, now) {
                    debug!("a listening control was refused: {e}");
                    return;
                }
                self.broadcast(&sessions, id);
            }
            ListenOp::Ping { nonce } => {
                let Some(s) = sessions.get(&id) else { return };
                if s.host != self.device() || !self.is_member(sender, s) {
                    return;
                }
                let pong = ListenOp::Pong { nonce: *nonce, host_time: now };
                let _ = s.out.try_send(Outgoing::new(
                    To::Device(sender.device),
                    Self::signal(id, s.group, pong),
                ));
            }
            ListenOp::Pong { nonce, host_time } => {
                let Some(s) = sessions.get_mut(&id) else { return };
                if s.host != sender.device {
                    return;
                }
                let Some(t0) = s.pings.remove(nonce) else { return };
                s.sync.add(t0, *host_time, now);
                self.announce(&id, s);
            }
        }
    }

    /// Whether `sender` may control session `s`: a member of its group, the other user of its
    /// direct chat, or this user.
    fn is_member(&self, sender: &SenderDevice, s: &Session) -> bool {
        let me = self.ctx.user_id();
        if sender.user_id == me {
            return true;
        }
        match s.group {
            Some(g) => self
                .ctx
                .store
                .group_shared(&g)
                .is_some_and(|g| g.members.iter().any(|m| m.user == sender.user_id.0)),
            None => ConversationId::direct(&me, &sender.user_id).0 == s.conversation,
        }
    }

    /// The listening task: a joined listener measures its clock again every 30 s.
    pub(crate) async fn listen_task(self) {
        loop {
            let now = self.ctx.now();
            let due: Vec<[u8; 16]> = match self.sessions.lock() {
                Ok(sessions) => sessions
                    .iter()
                    .filter(|(_, s)| {
                        s.joined
                            && !s.playback.stopped
                            && s.host != self.device()
                            && s.last_sync + rule::RESYNC_MS <= now
                    })
                    .map(|(k, _)| *k)
                    .collect(),
                Err(_) => return,
            };
            for id in due {
                self.sync_now(id, 2);
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }
}
