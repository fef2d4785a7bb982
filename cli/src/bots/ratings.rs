//! Ratings, for any business bot: after an order (or an appointment) it asks for 1 to 5 stars
//! and a comment, keeps each rating, and publishes the aggregate in its profile (the `rating`
//! of the name record), at most once every [`PUBLISH_EVERY`].

use std::sync::Arc;
use std::time::Duration;

use kith_node::node::ProfileInput;
use kith_node::{Node, NodeError};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{buttons, GLOBAL};

/// How often, at most, a changed aggregate is published.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(5);

/// The aggregate, as kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Ratings.
    pub count: u32,
    /// Stars in all.
    pub stars: u64,
    /// Published as it stands.
    pub published: bool,
}

/// One rating.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rating {
    /// What was rated (an order id).
    pub about: String,
    /// 1 to 5.
    pub stars: u8,
    /// A comment, if given.
    pub comment: Option<String>,
}

/// The question: five buttons, `stars:1` … `stars:5`.
pub fn question(what: &str) -> kith_protocol::Content {
    buttons(
        &format!("How was {what}? Rate it, then write a comment if you like."),
        &[
            ("stars:1", "★"),
            ("stars:2", "★★"),
            ("stars:3", "★★★"),
            ("stars:4", "★★★★"),
            ("stars:5", "★★★★★"),
        ],
    )
}

/// The stars a choice id stands for.
pub fn stars_of(choice: &str) -> Option<u8> {
    choice.strip_prefix("stars:")?.parse().ok().filter(|s| (1..=5).contains(s))
}

/// Keeps a rating of `about` (once: a second rating of the same thing replaces the first)
/// and counts it.
pub async fn record(
    node: &Node,
    lock: &Mutex<()>,
    conversation: &[u8; 16],
    rating: Rating,
) -> Result<(), NodeError> {
    let _one = lock.lock().await;
    let key = format!("rating:{}", rating.about);
    let before: Option<Rating> = node.bot_state(conversation, &key)?;
    let mut totals: Totals = node.bot_state(&GLOBAL, "ratings")?.unwrap_or_default();
    if let Some(b) = &before {
        totals.count -= 1;
        totals.stars -= u64::from(b.stars);
    }
    totals.count += 1;
    totals.stars += u64::from(rating.stars);
    totals.published = false;
    node.set_bot_state(conversation, &key, Some(&rating))?;
    node.set_bot_state(&GLOBAL, "ratings", Some(&totals))
}

/// Publishes the aggregate in `profile` whenever it changed, until the node stops.
pub fn publish_task(node: Node, lock: Arc<Mutex<()>>, profile: ProfileInput) {
    tokio::spawn(async move {
        let mut stopping = node.stopping();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(PUBLISH_EVERY) => {}
                _ = stopping.changed() => return,
            }
            let totals = {
                let _one = lock.lock().await;
                match node.bot_state::<Totals>(&GLOBAL, "ratings") {
                    Ok(Some(t)) if !t.published && t.count > 0 => t,
                    _ => continue,
                }
            };
            let average = totals.stars as f64 / f64::from(totals.count);
            let p = ProfileInput { rating: Some((totals.count, average)), ..profile.clone() };
            match node.set_profile(Some(p)).await {
                Ok(_) => {
                    let _one = lock.lock().await;
                    if let Ok(Some(mut now)) = node.bot_state::<Totals>(&GLOBAL, "ratings") {
                        if now.count == totals.count && now.stars == totals.stars {
                            now.published = true;
                            let _ = node.set_bot_state(&GLOBAL, "ratings", Some(&now));
                        }
                    }
                    tracing::info!(count = totals.count, average, "rating published");
                }
                Err(e) => tracing::warn!("cannot publish the rating: {e}"),
            }
        }
    });
}
