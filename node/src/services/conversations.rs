//! Conversations as the user names them (`@name` or `#id-prefix`): listing them and their
//! members, the history, marking read (here and on the user's other devices).

use kith_protocol::{normalize_name, Content, ConversationId, MessageId, Text, UserId};
use tracing::debug;

use crate::ctx::Ctx;
use crate::error::NodeError;
use crate::rules::consent::Act;
use crate::store::{Direction, Status};
use crate::views::{self, ConversationView, MessageView, NotInvitedView, SentView};

/// Most messages one history request returns.
pub const MAX_HISTORY: usize = 10_000;

/// A conversation named by the user: `@name` or `#id-prefix`.
#[derive(Clone, Debug)]
pub enum Conversation {
    /// A direct chat with this name.
    Direct(String),
    /// A group.
    Group([u8; 16]),
}

/// Names mentioned in a text (`@name`, normalized; invalid ones are skipped).
pub fn mentions(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        let Some(rest) = word.strip_prefix('@') else { continue };
        let rest =
            rest.trim_end_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'));
        if let Ok(n) = normalize_name(rest) {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

/// Whether a send to a name that failed to resolve with `e` is kept until the name resolves:
/// a name not registered yet, a DHT or network that did not answer. A changed key is not (the
/// user must check it first), nor is anything else.
fn waits(e: &NodeError) -> bool {
    matches!(
        e,
        NodeError::NameNotFound(_) | NodeError::Dht(_) | NodeError::Network(_) | NodeError::Busy(_)
    )
}

/// The conversations service.
#[derive(Clone, Debug)]
pub(crate) struct Conversations {
    pub(crate) ctx: Ctx,
    pub(crate) messaging: super::messaging::Messaging,
    pub(crate) groups: super::groups::Groups,
    pub(crate) records: super::records::Records,
    pub(crate) accounts: super::accounts::Accounts,
}

impl Conversations {
    /// Parses `@name` or `#id-prefix` (a unique prefix of a conversation id).
    pub(crate) fn target(&self, to: &str) -> Result<Conversation, NodeError> {
        let to = to.trim();
        let Some(prefix) = to.strip_prefix('#') else {
            return Ok(Conversation::Direct(normalize_name(to.trim_start_matches('@'))?));
        };
        let prefix = prefix.to_ascii_lowercase();
        if prefix.is_empty() {
            return Err(NodeError::NotFound("empty conversation id".into()));
        }
        let found: Vec<ConversationView> =
            self.conversations()?.into_iter().filter(|c| c.id.starts_with(&prefix)).collect();
        match found.as_slice() {
            [one] if one.kind == "group" => Ok(Conversation::Group(
                ConversationId::parse(&one.id).map_err(|e| NodeError::NotFound(e.to_string()))?.0,
            )),
            [one] => Ok(Conversation::Direct(
                one.members
                    .iter()
                    .find(|m| Some(m.as_str()) != self.ctx.name().as_deref())
                    .cloned()
                    .unwrap_or_default(),
            )),
            // A whole group id not known here: a group whose state has not reached this device
            // yet (a send to it waits for the state).
            [] if prefix.len() == 32 => Ok(Conversation::Group(
                ConversationId::parse(&prefix).map_err(|e| NodeError::NotFound(e.to_string()))?.0,
            )),
            [] => Err(NodeError::NotFound(format!("no conversation starts with #{prefix}"))),
            _ => Err(NodeError::NotFound(format!(
                "#{prefix} matches {} conversations; give more digits",
                found.len()
            ))),
        }
    }

    /// Direct conversations (one per contact) and groups.
    pub(crate) fn conversations(&self) -> Result<Vec<ConversationView>, NodeError> {
        let me = self.ctx.user_id();
        let my_name = self.ctx.name().unwrap_or_else(|| me.to_string());
        let mut out: Vec<ConversationView> = self
            .ctx
            .store
            .contacts()?
            .into_iter()
            .filter(|c| c.user_id != me.0)
            .map(|c| ConversationView {
                id: ConversationId::direct(&me, &UserId(c.user_id)).to_string(),
                kind: "direct",
                members: vec![my_name.clone(), c.name],
                active: true,
                missing: None,
            })
            .collect();
        for g in self.ctx.store.groups()? {
            out.push(ConversationView {
                id: ConversationId(g.id).to_string(),
                kind: "group",
                members: g
                    .members
                    .iter()
                    .map(|m| m.name.clone().unwrap_or_else(|| UserId(m.user).to_string()))
                    .collect(),
                active: g.active,
                missing: Some(
                    self.ctx.store.group_gaps(&g.id, self.ctx.now())?.iter().map(|(_, n)| n).sum(),
                ),
            });
        }
        Ok(out)
    }

    /// Every conversation with its last message and its unread count (among its last
    /// [`views::UNREAD_WINDOW`] messages), newest first; those with no message yet last.
    pub(crate) fn summaries(&self) -> Result<Vec<views::ConversationSummary>, NodeError> {
        let names = views::names(&self.ctx.store, self.ctx.user_id())?;
        let mut out = Vec::new();
        for conversation in self.conversations()? {
            let mut id = [0u8; 16];
            hex::decode_to_slice(&conversation.id, &mut id)
                .map_err(|e| NodeError::Internal(format!("a conversation id: {e}")))?;
            let recent = self.ctx.store.messages(Some(&id), views::UNREAD_WINDOW)?;
            let unread = recent
                .iter()
                .filter(|m| m.direction == Direction::In && m.status == Status::Received)
                .filter(|m| !views::ANNOTATIONS.contains(&m.kind.as_str()))
                .count();
            // The last message as the history shows it (edited, deleted), not a reaction.
            let last = views::page(&self.ctx.store, self.ctx.user_id(), &recent, &names).pop();
            let muted = self.ctx.store.is_muted(&id, self.ctx.now())?;
            out.push(views::ConversationSummary { conversation, last, unread, muted });
        }
        out.sort_by(|a, b| {
            let at = |s: &views::ConversationSummary| s.last.as_ref().map(|m| m.sent_at.clone());
            at(b).cmp(&at(a))
        });
        Ok(out)
    }

    /// The members of a conversation.
    pub(crate) fn members(&self, to: &str) -> Result<Vec<String>, NodeError> {
        let id = match self.target(to)? {
            Conversation::Group(id) => id,
            Conversation::Direct(name) => {
                return Ok(vec![
                    self.ctx.name().unwrap_or_else(|| self.ctx.user_id().to_string()),
                    name,
                ]);
            }
        };
        let g = self.groups.group_state(&id)?;
        Ok(g.members
            .iter()
            .map(|m| m.name.clone().unwrap_or_else(|| UserId(m.user).to_string()))
            .collect())
    }

    /// The history, oldest first: the direct conversation with `with`, or everything.
    pub(crate) fn messages(
        &self,
        with: Option<&str>,
        limit: usize,
    ) -> Result<Vec<MessageView>, NodeError> {
        let limit = limit.clamp(1, MAX_HISTORY);
        let conv = match with {
            Some(w) => match self.conversation_of(w)? {
                Some(c) => Some(c),
                // Someone never talked to has an empty conversation, not an error.
                None => return Ok(Vec::new()),
            },
            None => None,
        };
        let names = views::names(&self.ctx.store, self.ctx.user_id())?;
        let stored = self.ctx.store.messages(conv.as_ref(), limit)?;
        Ok(views::page(&self.ctx.store, self.ctx.user_id(), &stored, &names))
    }

    /// The conversation id of `@name` or `#id`; for a name never talked to, the placeholder
    /// conversation of messages waiting for it to resolve.
    pub(crate) fn conversation_of(&self, with: &str) -> Result<Option<[u8; 16]>, NodeError> {
        if with.trim().starts_with('#') {
            return Ok(Some(match self.target(with)? {
                Conversation::Group(id) => id,
                Conversation::Direct(name) => {
                    let c = self.ctx.store.contact(&name)?.ok_or_else(|| {
                        NodeError::NotFound(format!("no conversation with {name}"))
                    })?;
                    ConversationId::direct(&self.ctx.user_id(), &UserId(c.user_id)).0
                }
            }));
        }
        let name = normalize_name(with.trim().trim_start_matches('@'))?;
        // Someone never talked to: only messages waiting for the name to resolve, if any.
        let Some(c) = self.ctx.store.contact(&name)? else {
            return Ok(Some(super::messaging::waiting_conversation(&name)));
        };
        Ok(Some(ConversationId::direct(&self.ctx.user_id(), &UserId(c.user_id)).0))
    }

    /// Marks the conversation with `@name` or `#id` read, here and on this user's other
    /// devices; returns how many messages became read here.
    pub(crate) async fn mark_read(&self, with: &str) -> Result<usize, NodeError> {
        let Some(conv) = self.conversation_of(with)? else { return Ok(0) };
        let Some(until) = self.ctx.store.messages(Some(&conv), 1)?.last().map(|m| m.sent_at) else {
            return Ok(0);
        };
        let n = self.mark_read_here(&conv, until)?;
        self.ctx.store.flush().await?;
        self.messaging
            .send_to_own(Content::SyncRead { conversation: ConversationId(conv), until })
            .await;
        Ok(n)
    }

    /// Marks incoming messages of `conv` sent at or before `until` read on this device.
    pub(crate) fn mark_read_here(&self, conv: &[u8; 16], until: u64) -> Result<usize, NodeError> {
        let mut n = 0;
        for m in self.ctx.store.messages(Some(conv), MAX_HISTORY)? {
            if m.direction == Direction::In && m.status == Status::Received && m.sent_at <= until {
                self.ctx.set_status(&m.id, Status::Read);
                n += 1;
            }
        }
        Ok(n)
    }

    /// One message by id (32 hex digits).
    pub(crate) fn message(&self, id: &str) -> Result<MessageView, NodeError> {
        let id = MessageId::parse(id).map_err(|e| NodeError::NotFound(e.to_string()))?;
        let m = self
            .ctx
            .store
            .message(&id.0)?
            .ok_or_else(|| NodeError::NotFound(format!("message {id}")))?;
        Ok(views::view(
            &self.ctx.store,
            self.ctx.user_id(),
            &m,
            &views::names(&self.ctx.store, self.ctx.user_id())?,
        ))
    }

    /// The stored group envelopes (ciphertext, as published) of a group, oldest first.
    pub(crate) fn group_envelopes(
        &self,
        to: &str,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, NodeError> {
        let Conversation::Group(id) = self.target(to)? else {
            return Err(NodeError::BadInput("not a group".into()));
        };
        Ok(self
            .ctx
            .store
            .messages(Some(&id), limit)?
            .into_iter()
            .filter(|m| m.status != Status::Waiting)
            .map(|m| m.raw)
            .collect())
    }
}

impl Conversations {
    /// The one send path: `content` to a conversation. To a person, it is sealed to each of
    /// their devices and queued durably (a copy goes to this user's other devices); to a group,
    /// it is sealed with the epoch key, stored and published.
    pub(crate) async fn send(
        &self,
        to: &Conversation,
        content: Content,
    ) -> Result<MessageView, NodeError> {
        if let Conversation::Direct(name) = to {
            if let Some(c) = self.ctx.store.contact(name)? {
                if self.ctx.store.is_blocked(&c.user_id)? {
                    return Err(NodeError::NotAllowed(format!(
                        "you blocked @{name}; unblock them first (kith unblock @{name})"
                    )));
                }
            }
        }
        match to {
            Conversation::Direct(name) => match self.records.resolve_record(name).await {
                Ok(record) => {
                    let user = record.user_id.0;
                    self.accounts.check_send(name, user)?;
                    let view = self.messaging.queue(&record, content, true).await?;
                    self.accounts.note(user, Act::Sent, self.ctx.now())?;
                    Ok(view)
                }
                // A business or bot must know whom it writes to, to check consent.
                Err(e) if waits(&e) && self.accounts.my_kind().needs_consent() => {
                    Err(NodeError::NotAllowed(format!(
                        "@{name} cannot be looked up now ({e}); a {} writes only to people who \
                         consented, which needs their record",
                        self.accounts.my_kind().as_str()
                    )))
                }
                // Not found yet, or not reachable now: stored, and delivered once it resolves.
                Err(e) if waits(&e) => self.messaging.queue_waiting(name, content, &e).await,
                Err(e) => Err(e),
            },
            Conversation::Group(id) => {
                let Some(g) = self.ctx.store.group(id)? else {
                    // Not known here yet: the message waits for the group's state.
                    return self.groups.queue_waiting(*id, content).await;
                };
                if !g.active {
                    return Err(NodeError::NotAllowed(
                        "you are no longer a member of this group".into(),
                    ));
                }
                self.groups.post(&g, content).await
            }
        }
    }

    /// Sends `text` to a conversation. In a direct chat, mentioning people who are not in it
    /// forms a group; in a group, it adds them. Mentions that do not resolve are reported, with
    /// why, in [`SentView::not_invited`].
    pub(crate) async fn send_mentioning(
        &self,
        to: Conversation,
        text: &str,
    ) -> Result<SentView, NodeError> {
        let named = mentions(text);
        let body = || Content::Text(Text { body: text.to_owned() });
        let mut not_invited = Vec::new();
        let message = match to {
            Conversation::Direct(name) => {
                let me = self.ctx.name();
                let others: Vec<String> =
                    named.into_iter().filter(|n| *n != name && Some(n) != me.as_ref()).collect();
                let mut invited = Vec::new();
                for (n, r) in self.records.resolve_many(others).await {
                    match r {
                        Ok(r) if r.user_id != self.ctx.user_id() => invited.push(r),
                        Ok(_) => {}
                        Err(e) => {
                            not_invited.push(NotInvitedView { name: n, reason: e.to_string() })
                        }
                    }
                }
                if invited.is_empty() {
                    self.send(&Conversation::Direct(name), body()).await?
                } else {
                    let peer = self.records.resolve_record(&name).await?;
                    let g = self.groups.form_group(&peer, &invited).await?;
                    self.groups.post(&g, body()).await?
                }
            }
            Conversation::Group(id) => {
                let Some(mut g) = self.ctx.store.group(&id)? else {
                    // Not known here yet: mentions cannot add anyone before the state arrives.
                    let message = self.groups.queue_waiting(id, body()).await?;
                    let reason = "the group's state has not reached this device yet".to_owned();
                    let not_invited = named
                        .into_iter()
                        .map(|name| NotInvitedView { name, reason: reason.clone() })
                        .collect();
                    return Ok(SentView { message, not_invited });
                };
                if !g.active {
                    return Err(NodeError::NotAllowed(
                        "you are no longer a member of this group".into(),
                    ));
                }
                let mut new = Vec::new();
                let named: Vec<String> = named
                    .into_iter()
                    .filter(|n| !g.members.iter().any(|m| m.name.as_deref() == Some(n.as_str())))
                    .collect();
                for (n, r) in self.records.resolve_many(named).await {
                    match r {
                        Ok(r) if !g.members.iter().any(|m| m.user == r.user_id.0) => new.push(r),
                        Ok(_) => {}
                        Err(e) => {
                            not_invited.push(NotInvitedView { name: n, reason: e.to_string() })
                        }
                    }
                }
                if !new.is_empty() {
                    g = self.groups.change_members(g, &new, &[]).await?;
                }
                self.groups.post(&g, body()).await?
            }
        };
        for n in &not_invited {
            debug!(name = %n.name, "mention does not resolve: {}", n.reason);
        }
        Ok(SentView { message, not_invited })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_found_and_normalized() {
        assert_eq!(
            mentions("hi @Carol, meet @dave! and @bob@x @ab"),
            vec!["carol".to_owned(), "dave".to_owned()]
        );
        assert!(mentions("no mentions here").is_empty());
    }
}
