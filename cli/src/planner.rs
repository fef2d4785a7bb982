//! `kith bot planner`: the planning assistant (issue 21's example bot), a client of this
//! home's daemon over the local API and event stream, as a bot in any language would be.
//! Mention it into a group ("@planner barbecue saturday 18:00 Stadtpark") and it proposes the
//! event and starts a shopping list and a to-do list there.
//!
//! Understanding the request is a [`Understand`] implementation: [`Rules`] here, by rules and no
//! language model; another (a model) plugs in with the same signature.

use anyhow::{Context, Result};
use chrono::{DateTime, Datelike, Duration, Local, NaiveDate, NaiveTime, TimeZone, Weekday};
use kith_node::home::Home;
use serde_json::{json, Value};

use crate::client::Client;
use crate::commands::emit;

/// What the assistant understood a request to plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// What ("Barbecue").
    pub title: String,
    /// When, in the bot's time zone.
    pub at: DateTime<chrono::FixedOffset>,
    /// Where, if said.
    pub place: Option<String>,
}

/// Turns a message into a [`Request`], or says what is missing.
pub trait Understand {
    /// `text` is the message (the mention included); `now` the bot's time.
    fn understand(&self, text: &str, now: DateTime<Local>) -> Result<Request, String>;
}

/// The rule-based reading: "@planner TITLE [DAY] HH:MM [PLACE]", DAY a weekday (the next one),
/// `today`, `tomorrow` or a date (2027-06-12); without a day, today if the time is still to
/// come, else tomorrow.
#[derive(Debug, Default)]
pub struct Rules;

fn weekday(w: &str) -> Option<Weekday> {
    Some(match w {
        "monday" | "mon" => Weekday::Mon,
        "tuesday" | "tue" => Weekday::Tue,
        "wednesday" | "wed" => Weekday::Wed,
        "thursday" | "thu" => Weekday::Thu,
        "friday" | "fri" => Weekday::Fri,
        "saturday" | "sat" => Weekday::Sat,
        "sunday" | "sun" => Weekday::Sun,
        _ => return None,
    })
}

impl Understand for Rules {
    fn understand(&self, text: &str, now: DateTime<Local>) -> Result<Request, String> {
        let words: Vec<&str> = text.split_whitespace().filter(|w| !w.starts_with('@')).collect();
        let time_at = words
            .iter()
            .position(|w| NaiveTime::parse_from_str(w, "%H:%M").is_ok())
            .ok_or("say when, as HH:MM (\"@planner barbecue saturday 18:00 Stadtpark\")")?;
        let time = NaiveTime::parse_from_str(words[time_at], "%H:%M").map_err(|e| e.to_string())?;
        let today = now.date_naive();
        let mut title_end = time_at;
        let mut day: Option<NaiveDate> = None;
        if time_at > 0 {
            let w = words[time_at - 1].to_lowercase();
            let found = if let Some(wd) = weekday(&w) {
                let ahead =
                    (7 + wd.num_days_from_monday() - today.weekday().num_days_from_monday()) % 7;
                Some(today + Duration::days(i64::from(ahead)))
            } else if w == "today" {
                Some(today)
            } else if w == "tomorrow" {
                Some(today + Duration::days(1))
            } else {
                NaiveDate::parse_from_str(&w, "%Y-%m-%d").ok()
            };
            if found.is_some() {
                day = found;
                title_end = time_at - 1;
            }
        }
        let day = day.unwrap_or(if time > now.time() { today } else { today + Duration::days(1) });
        let title: String = words[..title_end].join(" ");
        if title.is_empty() {
            return Err(
                "say what to plan before when (\"@planner barbecue saturday 18:00\")".into()
            );
        }
        let mut chars = title.chars();
        let title = chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or(title);
        let place = words[time_at + 1..].join(" ");
        let at = Local
            .from_local_datetime(&day.and_time(time))
            .earliest()
            .ok_or("that time does not exist here (a clock change)")?;
        Ok(Request { title, at: at.fixed_offset(), place: (!place.is_empty()).then_some(place) })
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// Plans what `m` asks for in its group.
fn handle(client: &Client, me: &str, understand: &dyn Understand, m: &Value) -> Result<()> {
    let to = s(m, "to");
    let text = s(m, "text");
    let mention = format!("@{me}");
    if s(m, "direction") != "in" || s(m, "kind") != "text" || !to.starts_with('#') {
        return Ok(());
    }
    if !text.split_whitespace().any(|w| w.trim_end_matches([',', '.', ':', '!', '?']) == mention) {
        return Ok(());
    }
    let reply = |text: String| client.post("/v1/messages", &json!({ "to": to, "text": text }));
    let req = match understand.understand(text, Local::now()) {
        Ok(r) => r,
        Err(why) => {
            reply(format!("Sorry, I did not get that: {why}."))?;
            return Ok(());
        }
    };
    client.post(
        "/v1/plans/events",
        &json!({ "to": to, "title": req.title, "at": req.at.to_rfc3339(), "place": req.place }),
    )?;
    for (title, kind) in [("Shopping", "shopping"), ("To do", "todo")] {
        client.post(
            "/v1/plans/lists",
            &json!({ "to": to, "title": format!("{title}: {}", req.title), "kind": kind }),
        )?;
    }
    let when = req.at.format("%A %e %B, %H:%M");
    let place = req.place.map(|p| format!(" at {p}")).unwrap_or_default();
    reply(format!(
        "{} on {when}{place}: answer the event, and fill in the shopping and to-do lists (kith events, kith lists, or the Plans panel).",
        req.title
    ))?;
    Ok(())
}

/// `kith bot planner`: runs until the daemon's event stream ends.
pub fn run(home: &Home) -> Result<()> {
    let client = Client::from_home(home)?;
    let status = client.get("/v1/status", &[])?;
    let me = status
        .get("name")
        .and_then(Value::as_str)
        .context("register a name for the bot first (kith register planner)")?
        .to_owned();
    let events = client.events()?;
    emit(format_args!("@{me} is listening: mention it in a group to plan something"))?;
    for event in events {
        let event = event?;
        if event.kind != "message" {
            continue;
        }
        let m = event.json()?;
        if let Err(e) = handle(&client, &me, &Rules, &m) {
            eprintln!("kith: {}", crate::client::one_line(&format!("{e:#}")));
        }
    }
    anyhow::bail!("the daemon closed the event stream (has it stopped?)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Local> {
        // A Wednesday, 10:00 local time.
        Local.with_ymd_and_hms(2027, 6, 9, 10, 0, 0).single().expect("a time")
    }

    #[test]
    fn a_weekday_time_and_place() {
        let r = Rules
            .understand("@planner barbecue saturday 18:00 Stadtpark, Hamburg", now())
            .expect("understood");
        assert_eq!(r.title, "Barbecue");
        assert_eq!(r.at.date_naive(), NaiveDate::from_ymd_opt(2027, 6, 12).expect("date"));
        assert_eq!(r.at.time(), NaiveTime::from_hms_opt(18, 0, 0).expect("time"));
        assert_eq!(r.place.as_deref(), Some("Stadtpark, Hamburg"));
    }

    #[test]
    fn days_and_missing_parts() {
        let r = Rules.understand("@planner team lunch tomorrow 12:30", now()).expect("understood");
        assert_eq!((r.title.as_str(), r.at.day(), r.place), ("Team lunch", 10, None));
        let r = Rules.understand("@planner coffee 09:00", now()).expect("understood");
        assert_eq!(r.at.day(), 10, "a time already past today is tomorrow's");
        let r = Rules.understand("@planner picnic 2027-07-01 13:00 Elbstrand", now()).expect("ok");
        assert_eq!((r.at.month(), r.at.day()), (7, 1));
        assert!(Rules.understand("@planner barbecue saturday", now()).is_err());
        assert!(Rules.understand("@planner saturday 18:00", now()).is_err());
    }
}
