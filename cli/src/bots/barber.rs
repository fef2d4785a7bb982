//! `kith bot barber`: an appointment book. Write to it and it offers the next free slots as
//! buttons; pressing one books it (one booking per person: pressing another moves it), unless
//! someone took it a moment before (bookings are decided one at a time, so a slot is never
//! given twice); "cancel" frees it; a reminder goes `--step` minutes (60 by default) before
//! the appointment.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Local, TimeZone, Timelike};
use kith_node::bot::{Bot, Turn};
use kith_node::node::ProfileInput;
use kith_node::{Node, NodeError};
use kith_protocol::interactive::Element;
use kith_protocol::profile::AccountKind;
use kith_protocol::{Content, Text};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{buttons, offered, GLOBAL};

/// Free slots offered at once.
pub const OFFERED: usize = 8;

/// Opening: slots of `slot_min` minutes from `open` to `close` (minutes after midnight, local
/// time), every day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opening {
    /// First slot's start.
    pub open: u32,
    /// No slot starts at or after this.
    pub close: u32,
    /// Slot length, minutes.
    pub slot_min: u32,
}

/// A booking.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Booking {
    /// The conversation (`#id`).
    pub to: String,
    /// Reminded already.
    pub reminded: bool,
}

/// The next `n` free slot starts (minutes since the Unix epoch) after `now_min`, given the
/// local offset of each minute (`offset_min`) and the slots taken.
pub fn free_slots(
    now_min: u64,
    opening: Opening,
    offset_min: impl Fn(u64) -> i64,
    taken: &BTreeMap<u64, Booking>,
    n: usize,
) -> Vec<u64> {
    let mut out = Vec::new();
    let slot = u64::from(opening.slot_min.max(1));
    let mut t = (now_min / slot + 1) * slot;
    // At most two weeks ahead.
    let end = now_min + 14 * 24 * 60;
    while out.len() < n && t < end {
        let local = (t as i64 + offset_min(t)).rem_euclid(24 * 60) as u32;
        if local >= opening.open && local < opening.close && !taken.contains_key(&t) {
            out.push(t);
        }
        t += slot;
    }
    out
}

/// The bookings whose reminder is due at `now_min`: not reminded, starting within `lead_min`.
pub fn due_reminders(bookings: &BTreeMap<u64, Booking>, now_min: u64, lead_min: u64) -> Vec<u64> {
    bookings
        .iter()
        .filter(|(t, b)| !b.reminded && **t >= now_min && **t <= now_min + lead_min)
        .map(|(t, _)| *t)
        .collect()
}

fn now_min() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

fn offset_min(t: u64) -> i64 {
    Local
        .timestamp_opt(t as i64 * 60, 0)
        .single()
        .map_or(0, |d| i64::from(d.offset().local_minus_utc()) / 60)
}

/// A slot as people read it: `Tue 10:30`.
pub fn show(t: u64) -> String {
    match Local.timestamp_opt(t as i64 * 60, 0).single() {
        Some(d) => format!("{} {:02}:{:02}", d.format("%a"), d.hour(), d.minute()),
        None => t.to_string(),
    }
}

/// The barber.
#[derive(Debug)]
pub struct Barber {
    lock: Arc<Mutex<()>>,
    opening: Opening,
}

/// The barber's public profile.
pub fn profile() -> ProfileInput {
    ProfileInput {
        kind: AccountKind::Business,
        display_name: Some("Tony's Barbershop".into()),
        description: Some("Cuts and shaves. Write to book.".into()),
        category: Some("barber".into()),
        hours: Some("mon-sat 09:00-18:00".into()),
        ..ProfileInput::default()
    }
}

impl Barber {
    /// A book with `opening`.
    pub fn new(opening: Opening) -> Self {
        Barber { lock: Arc::default(), opening }
    }

    /// The lock bookings are decided under.
    pub fn lock(&self) -> Arc<Mutex<()>> {
        self.lock.clone()
    }

    fn offer(&self, node: &Node, text: &str) -> Result<Content, NodeError> {
        let bookings: BTreeMap<u64, Booking> =
            node.bot_state(&GLOBAL, "bookings")?.unwrap_or_default();
        let slots = free_slots(now_min(), self.opening, offset_min, &bookings, OFFERED);
        let ids: Vec<(String, String)> =
            slots.iter().map(|t| (format!("slot:{t}"), show(*t))).collect();
        let mut choices: Vec<(&str, &str)> =
            ids.iter().map(|(i, l)| (i.as_str(), l.as_str())).collect();
        choices.push(("cancel", "Cancel my booking"));
        Ok(buttons(text, &choices))
    }

    fn mine(&self, node: &Node, to: &str) -> Result<Option<u64>, NodeError> {
        let bookings: BTreeMap<u64, Booking> =
            node.bot_state(&GLOBAL, "bookings")?.unwrap_or_default();
        Ok(bookings.iter().find(|(_, b)| b.to == to).map(|(t, _)| *t))
    }

    async fn book(&self, turn: &Turn, slot: u64) -> Result<(), NodeError> {
        let to = turn.target()?;
        let outcome = {
            let _one = self.lock.lock().await;
            let node = turn.node();
            let mut bookings: BTreeMap<u64, Booking> =
                node.bot_state(&GLOBAL, "bookings")?.unwrap_or_default();
            match bookings.get(&slot) {
                Some(b) if b.to == to => Ok(false),
                Some(_) => Err(()),
                None if slot <= now_min() => Err(()),
                None => {
                    bookings.retain(|_, b| b.to != to);
                    bookings.insert(slot, Booking { to: to.clone(), reminded: false });
                    node.set_bot_state(&GLOBAL, "bookings", Some(&bookings))?;
                    Ok(true)
                }
            }
        };
        match outcome {
            Ok(_) => {
                turn.reply(&format!(
                    "Booked: {}. See you then! Write \"cancel\" to cancel.",
                    show(slot)
                ))
                .await?;
            }
            Err(()) => {
                let offer =
                    self.offer(turn.node(), "Sorry, that slot was just taken. Free now:")?;
                turn.reply_content(offer).await?;
            }
        }
        Ok(())
    }

    async fn cancel(&self, turn: &Turn) -> Result<(), NodeError> {
        let to = turn.target()?;
        let freed = {
            let _one = self.lock.lock().await;
            let node = turn.node();
            let mut bookings: BTreeMap<u64, Booking> =
                node.bot_state(&GLOBAL, "bookings")?.unwrap_or_default();
            let mine = bookings.iter().find(|(_, b)| b.to == to).map(|(t, _)| *t);
            if let Some(t) = mine {
                bookings.remove(&t);
                node.set_bot_state(&GLOBAL, "bookings", Some(&bookings))?;
            }
            mine
        };
        let text = match freed {
            Some(t) => format!("Cancelled your booking of {}.", show(t)),
            None => "You have no booking.".into(),
        };
        turn.reply(&text).await?;
        Ok(())
    }
}

impl Bot for Barber {
    async fn handle(&self, turn: Turn) -> Result<(), NodeError> {
        if turn.message().direction != "in" {
            return Ok(());
        }
        if let Some(answer) = turn.answer() {
            let Some(asked) = offered(turn.node(), &answer.to) else { return Ok(()) };
            if !matches!(asked.element, Element::Buttons(_)) {
                return Ok(());
            }
            let choice = answer.choices.first().map(String::as_str).unwrap_or("");
            if choice == "cancel" {
                return self.cancel(&turn).await;
            }
            if let Some(t) = choice.strip_prefix("slot:").and_then(|t| t.parse().ok()) {
                return self.book(&turn, t).await;
            }
            return Ok(());
        }
        let text = turn.message().text.clone().unwrap_or_default();
        if text.trim().eq_ignore_ascii_case("cancel") {
            return self.cancel(&turn).await;
        }
        let greeting = match self.mine(turn.node(), &turn.target()?)? {
            Some(t) => format!("You are booked for {}. Pick another slot to move it:", show(t)),
            None => "Hello! Pick a free slot:".into(),
        };
        let offer = self.offer(turn.node(), &greeting)?;
        turn.reply_content(offer).await?;
        Ok(())
    }
}

/// Sends each reminder once, `lead_min` before its appointment; forgets past bookings.
pub fn reminder_task(node: Node, lock: Arc<Mutex<()>>, lead_min: u64) {
    tokio::spawn(async move {
        let mut stopping = node.stopping();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stopping.changed() => return,
            }
            if let Err(e) = remind(&node, &lock, lead_min).await {
                tracing::warn!("reminders: {e}");
            }
        }
    });
}

async fn remind(node: &Node, lock: &Mutex<()>, lead_min: u64) -> Result<(), NodeError> {
    let now = now_min();
    let due: Vec<(u64, String)> = {
        let _one = lock.lock().await;
        let mut bookings: BTreeMap<u64, Booking> =
            node.bot_state(&GLOBAL, "bookings")?.unwrap_or_default();
        let before = bookings.len();
        bookings.retain(|t, _| *t + 60 > now);
        if bookings.len() != before {
            node.set_bot_state(&GLOBAL, "bookings", Some(&bookings))?;
        }
        due_reminders(&bookings, now, lead_min)
            .into_iter()
            .filter_map(|t| bookings.get(&t).map(|b| (t, b.to.clone())))
            .collect()
    };
    for (t, to) in due {
        let text = format!("Reminder: your appointment is at {}.", show(t));
        node.send_content_once(
            &format!("remind:{t}:{to}"),
            &to,
            Content::Text(Text { body: text }),
        )
        .await?;
        let _one = lock.lock().await;
        let mut bookings: BTreeMap<u64, Booking> =
            node.bot_state(&GLOBAL, "bookings")?.unwrap_or_default();
        if let Some(b) = bookings.get_mut(&t).filter(|b| b.to == to) {
            b.reminded = true;
        }
        node.set_bot_state(&GLOBAL, "bookings", Some(&bookings))?;
    }
    Ok(())
}

/// What `kith bot barber` takes besides [`super::BotArgs`].
#[derive(Debug, clap::Args)]
pub struct BarberArgs {
    /// Opening hours every day, local time
    #[arg(long, value_name = "HH:MM-HH:MM", default_value = "09:00-18:00")]
    pub open: String,
    /// Slot length in minutes
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub slot_minutes: u32,
}

/// Parses `HH:MM-HH:MM` into minutes after midnight.
pub fn parse_open(s: &str) -> anyhow::Result<(u32, u32)> {
    let m = |t: &str| -> anyhow::Result<u32> {
        let (h, m) =
            t.trim().split_once(':').ok_or_else(|| anyhow::anyhow!("{t:?}: write HH:MM"))?;
        let v = h.parse::<u32>()? * 60 + m.parse::<u32>()?;
        anyhow::ensure!(v <= 24 * 60, "{t:?} is not a time of day");
        Ok(v)
    };
    let (a, b) = s.split_once('-').ok_or_else(|| anyhow::anyhow!("{s:?}: write HH:MM-HH:MM"))?;
    let (a, b) = (m(a)?, m(b)?);
    anyhow::ensure!(a < b, "{s:?}: closing must come after opening");
    Ok((a, b))
}

/// `kith bot barber`.
pub fn run(
    home: &kith_node::home::Home,
    args: super::BotArgs,
    extra: BarberArgs,
) -> anyhow::Result<()> {
    let (open, close) = parse_open(&extra.open)?;
    anyhow::ensure!((1..=24 * 60).contains(&extra.slot_minutes), "a slot is 1 to 1440 minutes");
    let lead = args.step.unwrap_or(60);
    let bot = Arc::new(Barber::new(Opening { open, close, slot_min: extra.slot_minutes }));
    let lock = bot.lock();
    super::run_embedded(home, args, profile(), bot, move |node| reminder_task(node, lock, lead))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_slots_skip_closed_hours_and_taken_ones() {
        let opening = Opening { open: 9 * 60, close: 10 * 60, slot_min: 30 };
        // 08:50 UTC on day 0, local time = UTC.
        let now = 8 * 60 + 50;
        let mut taken = BTreeMap::new();
        taken.insert(9 * 60, Booking { to: "#a".into(), reminded: false });
        let slots = free_slots(now, opening, |_| 0, &taken, 3);
        assert_eq!(slots, vec![9 * 60 + 30, 24 * 60 + 9 * 60, 24 * 60 + 9 * 60 + 30]);
        // Two hours east of UTC: 09:00 local is 07:00 UTC.
        let slots = free_slots(0, opening, |_| 120, &BTreeMap::new(), 1);
        assert_eq!(slots, vec![7 * 60]);
    }

    #[test]
    fn a_reminder_is_due_once_within_the_lead() {
        let mut b = BTreeMap::new();
        b.insert(600, Booking { to: "#a".into(), reminded: false });
        b.insert(700, Booking { to: "#b".into(), reminded: false });
        b.insert(610, Booking { to: "#c".into(), reminded: true });
        assert_eq!(due_reminders(&b, 540, 60), vec![600]);
        assert_eq!(due_reminders(&b, 539, 60), Vec::<u64>::new());
        assert_eq!(due_reminders(&b, 650, 60), vec![700]);
    }

    #[test]
    fn opening_hours_parse() {
        assert_eq!(parse_open("09:00-18:30").unwrap(), (540, 1110));
        assert!(parse_open("18:00-09:00").is_err());
        assert!(parse_open("9-18").is_err());
    }
}
