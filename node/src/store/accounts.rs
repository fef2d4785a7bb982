//! What this user decided about other accounts: consent (tree `consent`, by user id), muted
//! conversations and reports (in `meta`), and the state a bot keeps per conversation (tree
//! `bot_state`).

use kith_protocol::profile::{AccountKind, Profile};
use serde::{Deserialize, Serialize};

use super::{enc, Store};
use crate::error::NodeError;

/// Whether a business or bot may write to a person, as this node knows it (`docs/bots.md`,
/// "Consent"): on a person's node, granted by the person's own messages to it and by
/// subscribing; on a business's or bot's node, by the person's messages and subscription.
/// Unsubscribing withdraws it; the later decision wins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentEntry {
    /// Granted (else withdrawn).
    pub granted: bool,
    /// When it was decided, milliseconds since the Unix epoch.
    pub at: u64,
    /// How: `wrote`, `subscribed`, `unsubscribed`.
    pub how: String,
}

/// A report of an account: what the user said and the messages it names, kept on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportEntry {
    /// The reported user.
    #[serde(with = "serde_bytes")]
    pub user: [u8; 16],
    /// Its name, when known.
    pub name: Option<String>,
    /// Why.
    pub reason: String,
    /// When.
    pub at: u64,
    /// The ids of its latest messages, as evidence (at most 20).
    pub messages: Vec<String>,
    /// Whether the report also blocked it.
    pub blocked: bool,
}

/// Most reports kept; the oldest go first.
pub const MAX_REPORTS: usize = 1000;
/// Largest value a bot may keep under one key, in bytes.
pub const MAX_BOT_VALUE: usize = 64 * 1024;

impl Store {
    /// The consent decision about `user`, if any.
    pub fn consent(&self, user: &[u8; 16]) -> Result<Option<ConsentEntry>, NodeError> {
        match self.consent.get(user).map_err(|e| self.err(e))? {
            Some(v) => Ok(Some(self.decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Records a consent decision about `user`, unless a later one is held; answers whether it
    /// was taken.
    pub fn put_consent(&self, user: &[u8; 16], entry: &ConsentEntry) -> Result<bool, NodeError> {
        if self.consent(user)?.is_some_and(|c| c.at > entry.at) {
            return Ok(false);
        }
        self.consent.insert(user, enc(entry)).map_err(|e| self.err(e))?;
        Ok(true)
    }

    /// Muted conversations (hex id) and until when (0: until unmuted).
    pub fn mutes(&self) -> Result<std::collections::BTreeMap<String, u64>, NodeError> {
        Ok(self.meta_get("mutes")?.unwrap_or_default())
    }

    /// Whether `conversation` is muted at `now`.
    pub fn is_muted(&self, conversation: &[u8; 16], now: u64) -> Result<bool, NodeError> {
        Ok(self
            .mutes()?
            .get(&hex::encode(conversation))
            .is_some_and(|until| *until == 0 || *until > now))
    }

    /// Mutes `conversation` until `until` (0: until unmuted), or unmutes it (`None`).
    pub fn set_mute(&self, conversation: &[u8; 16], until: Option<u64>) -> Result<(), NodeError> {
        let mut all = self.mutes()?;
        match until {
            Some(u) => all.insert(hex::encode(conversation), u),
            None => all.remove(&hex::encode(conversation)),
        };
        self.meta_set("mutes", &all)
    }

    /// Reports made here, oldest first.
    pub fn reports(&self) -> Result<Vec<ReportEntry>, NodeError> {
        Ok(self.meta_get("reports")?.unwrap_or_default())
    }

    /// Keeps a report (the oldest beyond [`MAX_REPORTS`] are dropped).
    pub fn add_report(&self, r: ReportEntry) -> Result<(), NodeError> {
        let mut all = self.reports()?;
        all.push(r);
        let extra = all.len().saturating_sub(MAX_REPORTS);
        all.drain(..extra);
        self.meta_set("reports", &all)
    }

    /// A bot's value under `key` in `conversation`.
    pub fn bot_get(
        &self,
        conversation: &[u8; 16],
        key: &str,
    ) -> Result<Option<Vec<u8>>, NodeError> {
        let k = bot_key(conversation, key);
        Ok(self.bot_state.get(k).map_err(|e| self.err(e))?.map(|v| v.to_vec()))
    }

    /// A bot's values in `conversation` whose keys start with `prefix`, in key order: at most
    /// `limit` of them.
    pub fn bot_scan(
        &self,
        conversation: &[u8; 16],
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, NodeError> {
        let mut found = Vec::new();
        for kv in self.bot_state.scan_prefix(bot_key(conversation, prefix)).take(limit) {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let key = String::from_utf8_lossy(&k[conversation.len()..]).into_owned();
            found.push((key, v.to_vec()));
        }
        Ok(found)
    }

    /// Sets (or with `None` removes) a bot's value under `key` in `conversation`.
    pub fn bot_set(
        &self,
        conversation: &[u8; 16],
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<(), NodeError> {
        let k = bot_key(conversation, key);
        match value {
            Some(v) if v.len() > MAX_BOT_VALUE => Err(NodeError::BadInput(format!(
                "a value of {} bytes is over the limit of {MAX_BOT_VALUE}",
                v.len()
            ))),
            Some(v) => self.bot_state.insert(k, v).map(|_| ()).map_err(|e| self.err(e)),
            None => self.bot_state.remove(k).map(|_| ()).map_err(|e| self.err(e)),
        }
    }
}

impl Store {
    /// Whether incoming messages also enter the bot inbox.
    pub fn inbox_on(&self) -> bool {
        self.inbox_on.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Turns the bot inbox on (a business's or bot's node) or off; what it holds stays.
    /// [`Store::set_own_profile`] sets it from the profile's kind.
    pub fn set_inbox(&self, on: bool) {
        self.inbox_on.store(on, std::sync::atomic::Ordering::Release);
    }

    /// This user's profile, as set on this device or adopted from the newest own record.
    pub fn own_profile(&self) -> Result<Option<Profile>, NodeError> {
        Ok(self.meta_get::<Option<Profile>>("profile")?.flatten())
    }

    /// Keeps this user's profile (`None`: none), and with it the kind [`Store::own_kind`]
    /// answers and whether the bot inbox is on: wherever the profile comes from (set here, or
    /// signed on another device of this user), the inbox follows it.
    pub fn set_own_profile(&self, profile: &Option<Profile>) -> Result<(), NodeError> {
        let mut kind = self.own_kind.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.meta_set("profile", profile)?;
        let k = profile.as_ref().map(|p| p.kind).unwrap_or_default();
        *kind = Some(k);
        self.set_inbox(k.needs_consent());
        Ok(())
    }

    /// The kind of account this user declared (a person without a profile), read once and then
    /// kept in memory: every message sent and received asks it.
    pub fn own_kind(&self) -> Result<AccountKind, NodeError> {
        let mut kind = self.own_kind.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(k) = *kind {
            return Ok(k);
        }
        let k = self.own_profile()?.map(|p| p.kind).unwrap_or_default();
        *kind = Some(k);
        Ok(k)
    }

    /// Woken when a message enters the inbox.
    pub fn inbox_notify(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.inbox_notify.clone()
    }

    /// Up to `limit` inbox entries after key `after` (all from the start with `None`), oldest
    /// first: (key, message id).
    pub fn inbox_after(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, [u8; 16])>, NodeError> {
        let start = after.map_or(0, |a| a.saturating_add(1));
        let mut out = Vec::new();
        for kv in self.bot_inbox.range(start.to_be_bytes()..) {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let (Ok(k), Ok(id)) =
                (<[u8; 8]>::try_from(k.as_ref()), <[u8; 16]>::try_from(v.as_ref()))
            else {
                return Err(self.err("a damaged inbox entry"));
            };
            out.push((u64::from_be_bytes(k), id));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Removes an inbox entry (handled); answers whether it was there.
    pub fn inbox_done(&self, key: u64) -> Result<bool, NodeError> {
        Ok(self.bot_inbox.remove(key.to_be_bytes()).map_err(|e| self.err(e))?.is_some())
    }

    /// How many entries the inbox holds.
    pub fn inbox_len(&self) -> usize {
        self.bot_inbox.len()
    }
}

fn bot_key(conversation: &[u8; 16], key: &str) -> Vec<u8> {
    let mut k = conversation.to_vec();
    k.extend_from_slice(key.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inbox and the kind follow the profile however it is written (set here, or adopted
    /// from a record signed on another device), and a reopened store reads the kind again.
    #[test]
    fn the_inbox_follows_the_own_profile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        assert_eq!(s.own_kind().expect("kind"), AccountKind::Person);
        assert!(!s.inbox_on());
        let bot = Profile { kind: AccountKind::Bot, ..Profile::default() };
        s.set_own_profile(&Some(bot.clone())).expect("set");
        assert_eq!(s.own_kind().expect("kind"), AccountKind::Bot);
        assert!(s.inbox_on());
        assert_eq!(s.own_profile().expect("profile"), Some(bot));
        drop(s);
        let s = Store::open(dir.path()).expect("reopen");
        assert_eq!(s.own_kind().expect("kind"), AccountKind::Bot);
        s.set_own_profile(&None).expect("clear");
        assert_eq!(s.own_kind().expect("kind"), AccountKind::Person);
        assert!(!s.inbox_on());
    }
}
