//! Accounts: this user's public profile (kind, display name, hours, domain …, carried in the
//! name record), other accounts' profiles with their domain checked, consent between people and
//! businesses or bots ([`crate::rules::consent`]), the per-sender inbound rate limit, muted
//! conversations and reports.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kith_protocol::message::ConsentNote;
use kith_protocol::profile::{self, AccountKind, Avatar, Profile, Rating};
use kith_protocol::{Content, UserId, VerifiedNameRecord};
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use crate::ctx::Ctx;
use crate::error::{NodeError, OrWarn};
use crate::rfc3339;
use crate::rules::consent::{self, Act};
use crate::rules::mailbox::RateTable;
use crate::services::messaging::Messaging;
use crate::services::records::Records;
use crate::store::{ConsentEntry, ReportEntry};

/// How long a domain found to list the account is taken as verified before it is checked
/// again: 1 hour.
pub const VERIFIED_FOR_MS: u64 = 60 * 60 * 1000;
/// How long a failed check stands before it is tried again: 5 minutes.
pub const FAILED_FOR_MS: u64 = 5 * 60 * 1000;
/// How long a check may take: 5 seconds.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest `kith.json` read, in bytes.
pub const MAX_WELL_KNOWN: u64 = 64 * 1024;
/// Most domain checks cached.
pub const MAX_CHECKS: usize = 1024;
/// Default per-sender limit on direct envelopes received, per minute.
pub const DEFAULT_INBOUND_PER_MINUTE: u32 = 300;

/// Accounts' settings.
#[derive(Clone, Debug)]
pub struct AccountsConfig {
    /// Direct envelopes accepted from one user per minute (`None`: no limit; the simulator's
    /// benchmarks). Beyond it the sender is told `busy` and retries later: nothing is lost.
    pub inbound_per_minute: Option<u32>,
    /// Where a domain's `kith.json` is read, with `{domain}` in place of the domain; `None` is
    /// `https://{domain}/.well-known/kith.json`. Tests point it at a server on 127.0.0.1.
    pub well_known_url: Option<String>,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            inbound_per_minute: Some(DEFAULT_INBOUND_PER_MINUTE),
            well_known_url: None,
        }
    }
}

/// A profile as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ProfileView {
    /// `person`, `business` or `bot`.
    pub kind: String,
    /// Display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Category.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Opening hours as `mon 11:00-22:00, …`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hours: Option<String>,
    /// Address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Website.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub website: Option<String>,
    /// The avatar blob: hash (hex), size, type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar: Option<AvatarView>,
    /// The domain claimed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// What checking the domain found (other accounts' profiles only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationView>,
    /// The ratings it published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rating: Option<RatingView>,
}

/// An avatar, as shown.
#[derive(Clone, Debug, Serialize)]
pub struct AvatarView {
    /// The blob's hash, hex.
    pub hash: String,
    /// Bytes.
    pub size: u64,
    /// Type.
    pub mime: String,
}

/// A rating aggregate, as shown.
#[derive(Clone, Debug, Serialize)]
pub struct RatingView {
    /// How many ratings.
    pub count: u32,
    /// Their average, 1.0 to 5.0 stars.
    pub average: f64,
}

/// What a domain check found.
#[derive(Clone, Debug, Serialize)]
pub struct VerificationView {
    /// The domain.
    pub domain: String,
    /// `verified` (the domain lists this account's user id), `failed`.
    pub status: String,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it was checked, RFC 3339.
    pub checked_at: String,
    /// What was read.
    pub url: String,
}

/// A profile as the API takes it (`PUT /v1/profile`); absent fields are left out.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileInput {
    /// `person`, `business` or `bot`.
    pub kind: AccountKind,
    /// Display name.
    pub display_name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Category.
    pub category: Option<String>,
    /// Opening hours as `mon-fri 11:00-22:00, sat 12:00-23:00`.
    pub hours: Option<String>,
    /// Address.
    pub address: Option<String>,
    /// Website.
    pub website: Option<String>,
    /// The domain claimed.
    pub domain: Option<String>,
    /// A rating aggregate: how many, and their average in stars (1–5).
    pub rating: Option<(u32, f64)>,
}

impl ProfileInput {
    /// The profile it describes, checked.
    pub fn into_profile(self, avatar: Option<Avatar>) -> Result<Profile, NodeError> {
        let bad = NodeError::BadInput;
        let hours = match self.hours.as_deref().map(str::trim).filter(|h| !h.is_empty()) {
            Some(h) => profile::parse_hours(h).map_err(bad)?,
            None => Vec::new(),
        };
        let rating = match self.rating {
            Some((count, avg)) if count > 0 && (1.0..=5.0).contains(&avg) => {
                Some(Rating { count, average: (avg * 100.0).round() as u16 })
            }
            Some(_) => {
                return Err(bad("a rating is a count above 0 and an average of 1 to 5".into()))
            }
            None => None,
        };
        let clean = |s: Option<String>| s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let p = Profile {
            kind: self.kind,
            display_name: clean(self.display_name),
            description: clean(self.description),
            category: clean(self.category),
            hours,
            address: clean(self.address),
            website: clean(self.website),
            avatar,
            domain: clean(self.domain).map(|d| d.to_ascii_lowercase()),
            rating,
        };
        p.check().map_err(|e| bad(e.to_string()))?;
        Ok(p)
    }
}

/// A consent decision, as shown.
#[derive(Clone, Debug, Serialize)]
pub struct ConsentView {
    /// The other account's name.
    pub name: String,
    /// Its user id.
    pub user_id: String,
    /// Whether it may write to this user (on a person's node), or this user to them (on a
    /// business's or bot's node).
    pub granted: bool,
    /// `wrote`, `subscribed`, `unsubscribed`.
    pub how: String,
    /// When, RFC 3339.
    pub since: String,
}

/// A muted conversation, as shown.
#[derive(Clone, Debug, Serialize)]
pub struct MuteView {
    /// The conversation id, hex.
    pub conversation: String,
    /// Until when, RFC 3339; absent: until unmuted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// A report, as shown.
#[derive(Clone, Debug, Serialize)]
pub struct ReportView {
    /// The reported user id.
    pub user_id: String,
    /// Its name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Why.
    pub reason: String,
    /// When, RFC 3339.
    pub at: String,
    /// Its latest messages' ids.
    pub messages: Vec<String>,
    /// Whether it was blocked too.
    pub blocked: bool,
}

impl From<&ReportEntry> for ReportView {
    fn from(r: &ReportEntry) -> Self {
        ReportView {
            user_id: hex::encode(r.user),
            name: r.name.clone(),
            reason: r.reason.clone(),
            at: rfc3339(r.at),
            messages: r.messages.clone(),
            blocked: r.blocked,
        }
    }
}

/// The result of one domain check, cached.
#[derive(Clone, Debug)]
struct Check {
    at: u64,
    result: Result<(), String>,
    url: String,
}

/// Domain checks by (domain, user id).
type Checks = HashMap<(String, [u8; 16]), Check>;

/// The accounts service. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Accounts {
    pub(crate) ctx: Ctx,
    pub(crate) records: Records,
    pub(crate) messaging: Messaging,
    pub(crate) media: crate::services::media::Media,
    config: AccountsConfig,
    checks: Arc<Mutex<Checks>>,
    inbound: Arc<Mutex<Option<RateTable<[u8; 16]>>>>,
}

/// A profile as shown, without the domain check.
pub fn profile_view(p: &Profile) -> ProfileView {
    ProfileView {
        kind: p.kind.as_str().to_owned(),
        display_name: p.display_name.clone(),
        description: p.description.clone(),
        category: p.category.clone(),
        hours: (!p.hours.is_empty()).then(|| profile::format_hours(&p.hours)),
        address: p.address.clone(),
        website: p.website.clone(),
        avatar: p.avatar.as_ref().map(|a| AvatarView {
            hash: hex::encode(a.hash),
            size: a.size,
            mime: a.mime.clone(),
        }),
        domain: p.domain.clone(),
        verification: None,
        rating: p
            .rating
            .map(|r| RatingView { count: r.count, average: f64::from(r.average) / 100.0 }),
    }
}

/// Whether `doc` (a `kith.json`) lists `user`: `{"users": ["<32 hex digits>", …]}`.
pub(crate) fn lists_user(doc: &[u8], user: &UserId) -> Result<(), String> {
    #[derive(Deserialize)]
    struct WellKnown {
        users: Vec<String>,
    }
    let doc: WellKnown = serde_json::from_slice(doc)
        .map_err(|e| format!("not a kith.json of the form {{\"users\": [...]}}: {e}"))?;
    let me = user.to_string();
    if doc.users.iter().any(|u| u.trim().eq_ignore_ascii_case(&me)) {
        Ok(())
    } else {
        Err(format!("the domain lists {} other account(s), not this one", doc.users.len()))
    }
}

impl Accounts {
    pub(crate) fn new(
        ctx: Ctx,
        records: Records,
        messaging: Messaging,
        media: crate::services::media::Media,
        config: AccountsConfig,
    ) -> Self {
        let inbound = config.inbound_per_minute.map(RateTable::new);
        let kind = ctx.store.own_kind().or_warn("cannot read the profile").unwrap_or_default();
        ctx.store.set_inbox(kind.needs_consent());
        Accounts {
            ctx,
            records,
            messaging,
            media,
            config,
            checks: Arc::default(),
            inbound: Arc::new(Mutex::new(inbound)),
        }
    }

    /// This user's profile, as set here or in the newest own record.
    pub(crate) fn own_profile(&self) -> Option<Profile> {
        self.ctx.store.own_profile().or_warn("cannot read the profile").flatten()
    }

    /// The kind of account this user declared.
    pub(crate) fn my_kind(&self) -> AccountKind {
        self.ctx.store.own_kind().or_warn("cannot read the profile").unwrap_or_default()
    }

    /// The kind a user declared in the newest record this node holds of it (a person when it
    /// holds none).
    pub(crate) fn kind_of(&self, user: [u8; 16]) -> AccountKind {
        self.records
            .known_record(user, self.ctx.now())
            .and_then(|(_, _, r)| r)
            .and_then(|r| r.profile)
            .map(|p| p.kind)
            .unwrap_or_default()
    }

    /// Sets this user's profile and publishes it.
    pub(crate) async fn set_profile(
        &self,
        input: Option<ProfileInput>,
    ) -> Result<ProfileView, NodeError> {
        let avatar = self.own_profile().and_then(|p| p.avatar);
        let profile = input.map(|i| i.into_profile(avatar)).transpose()?;
        let record = self.records.set_profile(profile).await?;
        // A business's or bot's messages go to its inbox too (`crate::bot`).
        info!(kind = %self.my_kind().as_str(), "profile published");
        Ok(record.profile.as_ref().map_or_else(|| profile_view(&Profile::default()), profile_view))
    }

    /// Makes the picture at `path` (JPEG, PNG or WebP, at most 2 MiB) this user's avatar: seals
    /// it as a blob that any peer may fetch, and publishes the profile carrying it.
    pub(crate) async fn set_avatar(
        &self,
        path: &std::path::Path,
    ) -> Result<ProfileView, NodeError> {
        let head = {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(|e| NodeError::io(path, e))?;
            let mut head = [0u8; 12];
            let n = f.read(&mut head).map_err(|e| NodeError::io(path, e))?;
            head[..n].to_vec()
        };
        let mime = picture_type(&head).ok_or_else(|| {
            NodeError::BadInput("an avatar is a JPEG, PNG or WebP picture".into())
        })?;
        let size = std::fs::metadata(path).map_err(|e| NodeError::io(path, e))?.len();
        if size == 0 || size > profile::MAX_AVATAR {
            return Err(NodeError::BadInput(format!(
                "an avatar is at most {} bytes; this one is {size}",
                profile::MAX_AVATAR
            )));
        }
        let meta = crate::services::media::FileMeta {
            name: Some("avatar".into()),
            mime: mime.into(),
            caption: None,
            size_px: None,
            duration_ms: None,
            poster: None,
        };
        let a = self.media.seal(path, meta).await?;
        let me = self.ctx.user_id();
        self.media.record_avatar(
            avatar_id(&a.hash),
            [0; 16],
            me.0,
            &a,
            self.ctx.peer_id(),
            true,
        )?;
        let mut p = self.own_profile().unwrap_or_default();
        p.avatar = Some(Avatar { hash: a.hash, key: a.key, size: a.size, mime: a.mime.clone() });
        let record = self.records.set_profile(Some(p)).await?;
        Ok(record.profile.as_ref().map_or_else(|| profile_view(&Profile::default()), profile_view))
    }

    /// The avatar `r`'s profile names, fetched from its holder's devices when not held here:
    /// its type and bytes.
    pub(crate) async fn avatar_of(
        &self,
        r: &VerifiedNameRecord,
    ) -> Result<(String, Vec<u8>), NodeError> {
        let av = r
            .profile
            .as_ref()
            .and_then(|p| p.avatar.clone())
            .ok_or_else(|| NodeError::NotFound(format!("@{} has no avatar", r.name)))?;
        let id = avatar_id(&av.hash);
        if self.ctx.store.attachment(&id)?.is_none() {
            let device = r
                .devices
                .first()
                .ok_or_else(|| NodeError::NotFound(format!("@{} lists no device", r.name)))?;
            let a = kith_protocol::blob::Attachment {
                hash: av.hash,
                size: av.size,
                mime: av.mime.clone(),
                name: Some("avatar".into()),
                key: av.key,
                caption: None,
                preview: None,
                width: None,
                height: None,
                duration_ms: None,
                holders: Vec::new(),
            };
            let conversation =
                kith_protocol::ConversationId::direct(&self.ctx.user_id(), &r.user_id).0;
            self.media.record_avatar(
                id,
                conversation,
                r.user_id.0,
                &a,
                device.device.peer_id,
                false,
            )?;
        }
        self.media.download(&id).await?;
        let tmp = std::env::temp_dir().join(format!("kith-avatar-{}.tmp", hex::encode(id)));
        self.media.save_to(&id, tmp.clone()).await?;
        let bytes = std::fs::read(&tmp).map_err(|e| NodeError::io(&tmp, e));
        let _ = std::fs::remove_file(&tmp);
        Ok((av.mime, bytes?))
    }

    fn url_of(&self, domain: &str) -> String {
        match &self.config.well_known_url {
            Some(t) => t.replace("{domain}", domain),
            None => format!("https://{domain}/.well-known/kith.json"),
        }
    }

    /// Whether `domain` lists `user`, from the cache while it is fresh, else read now.
    pub(crate) async fn verification(&self, domain: &str, user: UserId) -> VerificationView {
        let now = self.ctx.now();
        let key = (domain.to_owned(), user.0);
        let cached = self.checks.lock().ok().and_then(|c| c.get(&key).cloned());
        let fresh = cached.filter(|c| {
            let ttl = if c.result.is_ok() { VERIFIED_FOR_MS } else { FAILED_FOR_MS };
            now < c.at + ttl
        });
        let check = match fresh {
            Some(c) => c,
            None => {
                let url = self.url_of(domain);
                let result =
                    fetch_well_known(url.clone()).await.and_then(|doc| lists_user(&doc, &user));
                if let Err(e) = &result {
                    debug!(%domain, "domain check failed: {e}");
                }
                let c = Check { at: now, result, url };
                if let Ok(mut all) = self.checks.lock() {
                    if all.len() >= MAX_CHECKS {
                        all.clear();
                    }
                    all.insert(key, c.clone());
                }
                c
            }
        };
        VerificationView {
            domain: domain.to_owned(),
            status: if check.result.is_ok() { "verified" } else { "failed" }.into(),
            error: check.result.err(),
            checked_at: rfc3339(check.at),
            url: check.url,
        }
    }

    /// Records what `act` about `user` at `at` says of consent, by this node's rule.
    pub(crate) fn note(&self, user: [u8; 16], act: Act, at: u64) -> Result<(), NodeError> {
        if user == self.ctx.user_id().0 {
            return Ok(());
        }
        if let Some(entry) = consent::decide(self.my_kind(), act, at) {
            self.ctx.store.put_consent(&user, &entry)?;
        }
        Ok(())
    }

    /// Refuses a message shown in the history from a business or bot this user has not
    /// consented to (as far as this node knows its kind).
    pub(crate) fn check_receive(&self, sender: [u8; 16]) -> Result<(), NodeError> {
        let kind = self.kind_of(sender);
        if !kind.needs_consent() {
            return Ok(());
        }
        let held = self.ctx.store.consent(&sender)?;
        consent::may_receive(kind, held.as_ref()).map_err(NodeError::Refused)
    }

    /// Refuses a direct message from this user, a business or bot, to a person who has not
    /// consented.
    pub(crate) fn check_send(&self, name: &str, to: [u8; 16]) -> Result<(), NodeError> {
        let me = self.my_kind();
        if !me.needs_consent() || self.kind_of(to).needs_consent() {
            return Ok(());
        }
        let held = self.ctx.store.consent(&to)?;
        consent::may_send(me, name, held.as_ref()).map_err(NodeError::NotAllowed)
    }

    /// Whether one more direct envelope from `user` fits its rate now.
    pub(crate) fn allow_inbound(&self, user: [u8; 16]) -> bool {
        if user == self.ctx.user_id().0 {
            return true;
        }
        let now = self.ctx.now();
        match self.inbound.lock() {
            Ok(mut t) => t.as_mut().is_none_or(|t| t.allow(user, now)),
            Err(_) => true,
        }
    }

    /// Subscribes to (or unsubscribes from) a business or bot: records the decision and tells
    /// it (and this user's other devices, through the history copy).
    pub(crate) async fn subscribe(
        &self,
        record: &VerifiedNameRecord,
        subscribed: bool,
    ) -> Result<ConsentView, NodeError> {
        let at = self.ctx.now();
        self.note(record.user_id.0, Act::Note(subscribed), at)?;
        self.messaging.queue(record, Content::Consent(ConsentNote { subscribed }), true).await?;
        let entry = self.ctx.store.consent(&record.user_id.0)?.unwrap_or(ConsentEntry {
            granted: subscribed,
            at,
            how: String::new(),
        });
        Ok(ConsentView {
            name: record.name.clone(),
            user_id: record.user_id.to_string(),
            granted: entry.granted,
            how: entry.how,
            since: rfc3339(entry.at),
        })
    }
}

/// The id under which an avatar blob is recorded (no message carries it):
/// `SHA-256("kith/v1/avatar" || hash)`, its first 16 bytes.
pub(crate) fn avatar_id(hash: &[u8; 32]) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let h = Sha256::new().chain_update(b"kith/v1/avatar").chain_update(hash).finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&h[..16]);
    id
}

/// The type of a JPEG, PNG or WebP picture, from its first bytes.
pub(crate) fn picture_type(head: &[u8]) -> Option<&'static str> {
    match head {
        [0xff, 0xd8, 0xff, ..] => Some("image/jpeg"),
        [0x89, b'P', b'N', b'G', ..] => Some("image/png"),
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => Some("image/webp"),
        _ => None,
    }
}

/// Reads `url` (at most [`MAX_WELL_KNOWN`] bytes, within [`CHECK_TIMEOUT`], no redirects).
async fn fetch_well_known(url: String) -> Result<Vec<u8>, String> {
    let read = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(CHECK_TIMEOUT))
            .max_redirects(0)
            .http_status_as_error(false)
            .build()
            .into();
        let mut answer = agent.get(&url).call().map_err(|e| format!("cannot read {url}: {e}"))?;
        let status = answer.status();
        if !status.is_success() {
            return Err(format!("{url} answered {status}"));
        }
        answer
            .body_mut()
            .with_config()
            .limit(MAX_WELL_KNOWN)
            .read_to_vec()
            .map_err(|e| format!("cannot read {url}: {e}"))
    });
    match tokio::time::timeout(CHECK_TIMEOUT + Duration::from_secs(1), read).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(format!("the check failed: {e}")),
        Err(_) => Err("the check timed out".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_known_file_lists_the_account_or_not() {
        let me = UserId([7; 16]);
        let doc = format!("{{\"users\": [\"{me}\"]}}");
        assert!(lists_user(doc.as_bytes(), &me).is_ok());
        assert!(lists_user(br#"{"users": ["00"]}"#, &me).unwrap_err().contains("not this one"));
        assert!(lists_user(b"<html>", &me).unwrap_err().contains("not a kith.json"));
    }

    #[test]
    fn profile_input_is_checked_and_normalised() {
        let p = ProfileInput {
            kind: AccountKind::Business,
            display_name: Some(" Napoli ".into()),
            hours: Some("mon-fri 11:00-22:00".into()),
            domain: Some("Napoli.Example".into()),
            rating: Some((3, 4.333)),
            ..ProfileInput::default()
        }
        .into_profile(None)
        .unwrap();
        assert_eq!(p.display_name.as_deref(), Some("Napoli"));
        assert_eq!(p.domain.as_deref(), Some("napoli.example"));
        assert_eq!(p.hours.len(), 5);
        assert_eq!(p.rating, Some(Rating { count: 3, average: 433 }));
        let bad = ProfileInput { hours: Some("someday".into()), ..ProfileInput::default() };
        assert!(bad.into_profile(None).is_err());
        let bad = ProfileInput { rating: Some((1, 9.0)), ..ProfileInput::default() };
        assert!(bad.into_profile(None).is_err());
    }
}
