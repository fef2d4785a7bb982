//! Account kinds and public profiles, carried in the signed name record.
//!
//! A name record may carry a [`Profile`]: what kind of account holds the name (a person, a
//! business or a bot), a display name, a description, a category, opening hours, an address, a
//! website, an avatar (a blob, readable by anyone who has the record), the domain a business
//! claims, and the aggregate of the ratings it collected. The identity key signs it with the
//! rest of the record, so a profile cannot be changed by anyone but its holder; what the holder
//! writes in it (a rating, a domain) is a claim, checked only where `docs/security.md` says.

use serde::{Deserialize, Serialize};

use crate::error::RecordError;

/// Longest display name or category, in characters.
pub const MAX_LABEL_CHARS: usize = 64;
/// Longest description, in bytes.
pub const MAX_DESCRIPTION: usize = 1024;
/// Longest address or website, in bytes.
pub const MAX_ADDRESS: usize = 256;
/// Longest domain, in bytes (RFC 1035).
pub const MAX_DOMAIN: usize = 253;
/// Most opening-hours entries.
pub const MAX_HOURS: usize = 21;
/// Largest avatar, in bytes.
pub const MAX_AVATAR: u64 = 2 * 1024 * 1024;

/// Who holds a name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountKind {
    /// A person (the default).
    #[default]
    Person,
    /// A business: a shop, a restaurant, a maker.
    Business,
    /// A program that answers messages.
    Bot,
}

impl AccountKind {
    /// The kind's name as written in the record and shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Person => "person",
            AccountKind::Business => "business",
            AccountKind::Bot => "bot",
        }
    }

    /// Whether it is a business or a bot, the accounts that may write to a person only with
    /// that person's consent.
    pub fn needs_consent(self) -> bool {
        !matches!(self, AccountKind::Person)
    }
}

/// One opening span: a weekday (1 = Monday … 7 = Sunday) and minutes after midnight, in the
/// business's local time. A span past midnight is written as two.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hours {
    /// 1 = Monday … 7 = Sunday.
    pub day: u8,
    /// Opening time, minutes after midnight (0–1439).
    pub open: u16,
    /// Closing time, minutes after midnight, after `open` (at most 1440).
    pub close: u16,
}

/// The avatar: a blob in the format of `docs/protocol.md` 6.3, with its key (so public).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Avatar {
    /// The blob's hash.
    #[serde(with = "serde_bytes")]
    pub hash: [u8; 32],
    /// The blob's key.
    #[serde(with = "serde_bytes")]
    pub key: [u8; 32],
    /// Plaintext size, at most [`MAX_AVATAR`].
    pub size: u64,
    /// `image/jpeg`, `image/png` or `image/webp`.
    pub mime: String,
}

/// The aggregate of the ratings a business collected, as it publishes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rating {
    /// How many ratings.
    pub count: u32,
    /// Their average in hundredths of a star (100–500).
    pub average: u16,
}

/// A public profile.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Who holds the name.
    pub kind: AccountKind,
    /// The name to show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// What the account is or does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A category ("pizzeria", "barber").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Opening hours.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hours: Vec<Hours>,
    /// A postal address, one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// A web site (`https://` or `http://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub website: Option<String>,
    /// A picture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<Avatar>,
    /// The domain the account claims (businesses); clients check it (`docs/security.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The ratings it collected, as it counts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<Rating>,
}

fn bad(what: &'static str) -> RecordError {
    RecordError::BadProfile { what }
}

fn one_line(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(char::is_control)
}

/// Whether `domain` is a lowercase DNS name of at least two labels (letters, digits, hyphens;
/// no label starting or ending with a hyphen; 1–63 bytes a label, 253 in all).
pub fn valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    domain.len() <= MAX_DOMAIN
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

impl Profile {
    /// Checks every field against its limit and form (`docs/protocol.md` 4.2).
    pub fn check(&self) -> Result<(), RecordError> {
        let label = |s: &Option<String>| {
            s.as_deref().is_none_or(|s| one_line(s) && s.chars().count() <= MAX_LABEL_CHARS)
        };
        if !label(&self.display_name) {
            return Err(bad("display name: one line of 1 to 64 characters"));
        }
        if !label(&self.category) {
            return Err(bad("category: one line of 1 to 64 characters"));
        }
        if self.description.as_deref().is_some_and(|d| d.is_empty() || d.len() > MAX_DESCRIPTION) {
            return Err(bad("description: 1 to 1024 bytes"));
        }
        if self.address.as_deref().is_some_and(|a| !one_line(a) || a.len() > MAX_ADDRESS) {
            return Err(bad("address: one line of 1 to 256 bytes"));
        }
        if self.website.as_deref().is_some_and(|w| {
            !one_line(w)
                || w.len() > MAX_ADDRESS
                || w.contains(' ')
                || !(w.starts_with("https://") || w.starts_with("http://"))
        }) {
            return Err(bad("website: an http:// or https:// address of at most 256 bytes"));
        }
        if self.domain.as_deref().is_some_and(|d| !valid_domain(d)) {
            return Err(bad("domain: a lowercase DNS name such as shop.example"));
        }
        if self.hours.len() > MAX_HOURS
            || self.hours.iter().any(|h| {
                !(1..=7).contains(&h.day) || h.open >= 1440 || h.close <= h.open || h.close > 1440
            })
        {
            return Err(bad("hours: at most 21 spans, day 1-7, opening before closing"));
        }
        if let Some(a) = &self.avatar {
            if a.size == 0
                || a.size > MAX_AVATAR
                || !matches!(a.mime.as_str(), "image/jpeg" | "image/png" | "image/webp")
            {
                return Err(bad("avatar: a JPEG, PNG or WebP picture of at most 2 MiB"));
            }
        }
        if let Some(r) = self.rating {
            if r.count == 0 || !(100..=500).contains(&r.average) {
                return Err(bad("rating: a count above 0 and an average of 100 to 500"));
            }
        }
        Ok(())
    }
}

/// Parses opening hours written as `mon-fri 11:00-22:00, sat 12:00-23:00` (days `mon` … `sun`,
/// a single day or a range; times `HH:MM`, the closing time `24:00` at most).
pub fn parse_hours(text: &str) -> Result<Vec<Hours>, String> {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let day = |d: &str| {
        DAYS.iter()
            .position(|x| d.eq_ignore_ascii_case(x))
            .map(|i| i as u8 + 1)
            .ok_or_else(|| format!("unknown day {d:?}: use mon, tue, wed, thu, fri, sat, sun"))
    };
    let time = |t: &str| -> Result<u16, String> {
        let (h, m) = t.split_once(':').ok_or_else(|| format!("time {t:?}: write HH:MM"))?;
        let (h, m): (u16, u16) = (
            h.parse().map_err(|_| format!("time {t:?}: write HH:MM"))?,
            m.parse().map_err(|_| format!("time {t:?}: write HH:MM"))?,
        );
        if m >= 60 || h * 60 + m > 1440 {
            return Err(format!("time {t:?} is not a time of day"));
        }
        Ok(h * 60 + m)
    };
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (days, span) =
            part.split_once(' ').ok_or_else(|| format!("{part:?}: write DAYS HH:MM-HH:MM"))?;
        let (first, last) = match days.split_once('-') {
            Some((a, b)) => (day(a)?, day(b)?),
            None => (day(days)?, day(days)?),
        };
        let (open, close) =
            span.trim().split_once('-').ok_or_else(|| format!("{span:?}: write HH:MM-HH:MM"))?;
        let (open, close) = (time(open)?, time(close)?);
        if close <= open {
            return Err(format!("{part:?}: closing must come after opening"));
        }
        let mut d = first;
        loop {
            out.push(Hours { day: d, open, close });
            if d == last {
                break;
            }
            d = d % 7 + 1;
        }
    }
    if out.len() > MAX_HOURS {
        return Err(format!("at most {MAX_HOURS} opening spans"));
    }
    Ok(out)
}

/// Writes opening hours as [`parse_hours`] reads them, one span per day.
pub fn format_hours(hours: &[Hours]) -> String {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    hours
        .iter()
        .map(|h| {
            format!(
                "{} {:02}:{:02}-{:02}:{:02}",
                DAYS.get(usize::from(h.day.saturating_sub(1))).unwrap_or(&"?"),
                h.open / 60,
                h.open % 60,
                h.close / 60,
                h.close % 60
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_parse_ranges_and_wrap_around_the_week() {
        let h = parse_hours("mon-fri 11:00-22:00, sat 12:00-24:00").unwrap();
        assert_eq!(h.len(), 6);
        assert_eq!(h[0], Hours { day: 1, open: 660, close: 1320 });
        assert_eq!(h[5], Hours { day: 6, open: 720, close: 1440 });
        assert_eq!(parse_hours("sat-mon 10:00-12:00").unwrap().len(), 3);
        assert!(parse_hours("mon 12:00-11:00").is_err());
        assert!(parse_hours("moon 12:00-13:00").is_err());
        assert!(parse_hours("mon 25:00-26:00").is_err());
        assert_eq!(format_hours(&h[..1]), "mon 11:00-22:00");
    }

    #[test]
    fn profiles_are_checked() {
        let ok = Profile {
            kind: AccountKind::Business,
            display_name: Some("Pizzeria Napoli".into()),
            domain: Some("napoli.example".into()),
            website: Some("https://napoli.example".into()),
            rating: Some(Rating { count: 3, average: 433 }),
            ..Profile::default()
        };
        ok.check().unwrap();
        for bad in [
            Profile { display_name: Some("two\nlines".into()), ..ok.clone() },
            Profile { domain: Some("Napoli.example".into()), ..ok.clone() },
            Profile { domain: Some("localhost".into()), ..ok.clone() },
            Profile { website: Some("javascript:alert(1)".into()), ..ok.clone() },
            Profile { rating: Some(Rating { count: 1, average: 600 }), ..ok.clone() },
            Profile { hours: vec![Hours { day: 8, open: 0, close: 10 }], ..ok.clone() },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
        assert!(valid_domain("a-b.c0.example"));
        assert!(!valid_domain("-a.example"));
    }
}
