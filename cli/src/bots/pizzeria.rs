//! `kith bot pizzeria`: a pizzeria that takes orders (the worked example of `docs/bots.md`).
//!
//! Write to it and it shows the menu as product cards; pick a size to put a pizza in the cart;
//! "Checkout" sends the order form (name, address, a note); the filled form places the order:
//! a summary, a payment request (`pay.request`), then status updates (received, baking, out for
//! delivery, delivered, one every `--step` seconds) and, once delivered, a request for a
//! rating. An order's id is the id of the form answer that placed it, so handling that answer
//! again (after a crash) places nothing twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kith_node::bot::{Bot, Turn};
use kith_node::node::ProfileInput;
use kith_node::{Node, NodeError};
use kith_protocol::interactive::{Choice, Element, Field, FieldKind, Interactive, Product};
use kith_protocol::plan::{PayMethod, PayRequest};
use kith_protocol::profile::AccountKind;
use kith_protocol::Content;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::ratings::{self, Rating};
use super::{buttons, money, offered, GLOBAL};

/// The menu: name, description, price of the small size in cents.
pub const MENU: [(&str, &str, i64); 3] = [
    ("Margherita", "Tomato, mozzarella, basil", 850),
    ("Diavola", "Tomato, mozzarella, spicy salami", 1000),
    ("Funghi", "Tomato, mozzarella, mushrooms", 950),
];
/// What a large one costs more, in cents.
pub const LARGE_EXTRA: i64 = 250;
/// The statuses an order goes through.
pub const STATUSES: [&str; 4] = ["received", "baking", "out for delivery", "delivered"];

/// A pizza in a cart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// Which.
    pub pizza: String,
    /// `small` or `large`.
    pub size: String,
    /// Cents.
    pub price: i64,
}

/// An order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Its id (the form answer's message id).
    pub id: String,
    /// The conversation (`#id`).
    pub to: String,
    /// What.
    pub lines: Vec<Line>,
    /// Cents.
    pub total: i64,
    /// Deliver to.
    pub name: String,
    /// Address.
    pub address: String,
    /// Index into [`STATUSES`].
    pub status: usize,
    /// When the status last changed, ms.
    pub since: u64,
}

/// The pizzeria.
#[derive(Debug, Default)]
pub struct Pizzeria {
    /// Serializes changes to what is kept for all conversations (orders, ratings).
    lock: Arc<Mutex<()>>,
}

/// The pizzeria's public profile.
pub fn profile() -> ProfileInput {
    ProfileInput {
        kind: AccountKind::Business,
        display_name: Some("Pizzeria Napoli".into()),
        description: Some("Wood-fired pizza, delivered. Write to order.".into()),
        category: Some("pizzeria".into()),
        hours: Some("tue-sun 11:00-22:00".into()),
        ..ProfileInput::default()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn menu_card(name: &str, description: &str, price: i64) -> Content {
    Content::Interactive(Box::new(Interactive {
        text: format!("{name}: {}", description),
        element: Element::Product(Box::new(Product {
            title: name.into(),
            description: Some(description.into()),
            image: None,
            price,
            currency: "EUR".into(),
            options: vec![
                Choice { id: "small".into(), label: format!("Small {}", money(price)) },
                Choice {
                    id: "large".into(),
                    label: format!("Large {}", money(price + LARGE_EXTRA)),
                },
            ],
        })),
        expires: None,
    }))
}

fn order_form() -> Content {
    let text = |key: &str, label: &str, required: bool| Field {
        key: key.into(),
        label: label.into(),
        kind: FieldKind::Text { max_len: 200 },
        required,
    };
    Content::Interactive(Box::new(Interactive {
        text: "Where should it go?".into(),
        element: Element::Form {
            fields: vec![
                text("name", "Name", true),
                text("address", "Address", true),
                text("note", "A note for the kitchen", false),
            ],
            submit: "Place the order".into(),
        },
        expires: None,
    }))
}

fn cart_text(cart: &[Line]) -> String {
    let total: i64 = cart.iter().map(|l| l.price).sum();
    let lines: Vec<String> =
        cart.iter().map(|l| format!("{} ({}) {}", l.pizza, l.size, money(l.price))).collect();
    format!("{}; total EUR {}", lines.join(", "), money(total))
}

impl Pizzeria {
    /// A pizzeria.
    pub fn new() -> Self {
        Pizzeria { lock: Arc::default() }
    }

    /// The lock of what is kept for all conversations.
    pub fn lock(&self) -> Arc<Mutex<()>> {
        self.lock.clone()
    }

    async fn menu(&self, turn: &Turn) -> Result<(), NodeError> {
        turn.reply("Welcome to Pizzeria Napoli! Pick a size to add a pizza:").await?;
        for (name, description, price) in MENU {
            turn.reply_content(menu_card(name, description, price)).await?;
        }
        turn.reply_content(buttons(
            "When you are ready:",
            &[("checkout", "Checkout"), ("cart", "Show the cart")],
        ))
        .await?;
        Ok(())
    }

    async fn place(&self, turn: &Turn, fields: &[(String, String)]) -> Result<(), NodeError> {
        let cart: Vec<Line> = turn.state("cart")?.unwrap_or_default();
        if cart.is_empty() {
            turn.reply("Your cart is empty: pick a pizza first.").await?;
            return Ok(());
        }
        let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.clone());
        let order = Order {
            id: turn.message().id.clone(),
            to: turn.target()?,
            total: cart.iter().map(|l| l.price).sum(),
            lines: cart,
            name: get("name").unwrap_or_default(),
            address: get("address").unwrap_or_default(),
            status: 0,
            since: now_ms(),
        };
        {
            let _one = self.lock.lock().await;
            let key = order_key(&order.id);
            // Placed already (this answer handled before a crash): keep it as it is.
            if turn.node().bot_state::<Order>(&GLOBAL, &key)?.is_none() {
                turn.node().set_bot_state(&GLOBAL, &key, Some(&order))?;
            }
        }
        turn.set_state::<Vec<Line>>("cart", None)?;
        let short = &order.id[..8];
        turn.reply(&format!(
            "Order {short} received: {} to {}, {}. Status: received.",
            cart_text(&order.lines),
            order.name,
            order.address
        ))
        .await?;
        turn.reply_content(Content::PayRequest(Box::new(PayRequest {
            payer: None,
            amount: Some(order.total),
            currency: "EUR".into(),
            reference: format!("Order {short}"),
            methods: vec![PayMethod::Iban {
                iban: "DE89370400440532013000".into(),
                name: "Pizzeria Napoli".into(),
                bic: None,
            }],
        })))
        .await?;
        Ok(())
    }
}

impl Bot for Pizzeria {
    async fn handle(&self, turn: Turn) -> Result<(), NodeError> {
        // Only what others sent.
        if turn.message().direction != "in" {
            return Ok(());
        }
        if let Some(answer) = turn.answer() {
            let Some(asked) = offered(turn.node(), &answer.to) else { return Ok(()) };
            let choice = answer.choices.first().map(String::as_str).unwrap_or("");
            return match asked.element {
                Element::Product(p) => {
                    let large = choice == "large";
                    let mut cart: Vec<Line> = turn.state("cart")?.unwrap_or_default();
                    // Keyed by the answer, so handling it again adds nothing.
                    let added: Option<bool> =
                        turn.state(&format!("added:{}", turn.message().id))?;
                    if added.is_none() {
                        cart.push(Line {
                            pizza: p.title.clone(),
                            size: if large { "large" } else { "small" }.into(),
                            price: p.price + if large { LARGE_EXTRA } else { 0 },
                        });
                        turn.set_state("cart", Some(&cart))?;
                        turn.set_state(&format!("added:{}", turn.message().id), Some(&true))?;
                    }
                    turn.reply(&format!("Added. Cart: {}", cart_text(&cart))).await?;
                    Ok(())
                }
                Element::Buttons(_) if choice == "checkout" => {
                    let cart: Vec<Line> = turn.state("cart")?.unwrap_or_default();
                    if cart.is_empty() {
                        turn.reply("Your cart is empty: pick a pizza first.").await?;
                    } else {
                        turn.reply_content(order_form()).await?;
                    }
                    Ok(())
                }
                Element::Buttons(_) if choice == "cart" => {
                    let cart: Vec<Line> = turn.state("cart")?.unwrap_or_default();
                    let text = if cart.is_empty() {
                        "Your cart is empty.".into()
                    } else {
                        cart_text(&cart)
                    };
                    turn.reply(&text).await?;
                    Ok(())
                }
                Element::Buttons(_) => match ratings::stars_of(choice) {
                    Some(stars) => {
                        let about: String = turn.state("rating_for")?.unwrap_or_default();
                        let rating = Rating { about: about.clone(), stars, comment: None };
                        ratings::record(turn.node(), &self.lock, &conversation(&turn)?, rating)
                            .await?;
                        turn.set_state("awaiting_comment", Some(&about))?;
                        turn.reply("Thank you! Anything to add? Just write it.").await?;
                        Ok(())
                    }
                    None => Ok(()),
                },
                Element::Form { .. } => self.place(&turn, &answer.fields).await,
                Element::Pick { .. } => Ok(()),
            };
        }
        let text = turn.message().text.clone().unwrap_or_default();
        if let Some(about) = turn.state::<String>("awaiting_comment")? {
            let key = format!("rating:{about}");
            let conv = conversation(&turn)?;
            if let Some(mut r) = turn.node().bot_state::<Rating>(&conv, &key)? {
                r.comment = Some(text);
                ratings::record(turn.node(), &self.lock, &conv, r).await?;
            }
            turn.set_state::<String>("awaiting_comment", None)?;
            turn.reply("Noted, thank you. See you soon!").await?;
            return Ok(());
        }
        self.menu(&turn).await
    }
}

fn conversation(turn: &Turn) -> Result<[u8; 16], NodeError> {
    kith_protocol::ConversationId::parse(&turn.message().conversation)
        .map(|c| c.0)
        .map_err(|e| NodeError::BadInput(format!("conversation id: {e}")))
}

/// Moves orders on, one status every `step`, each update sent once; a delivered order gets
/// the rating question. Runs until the node stops.
pub fn status_task(node: Node, lock: Arc<Mutex<()>>, step: Duration) {
    tokio::spawn(async move {
        let mut stopping = node.stopping();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stopping.changed() => return,
            }
            if let Err(e) = advance(&node, &lock, step).await {
                tracing::warn!("order updates: {e}");
            }
        }
    });
}

/// Where an order is kept: one value each, so a busy evening's orders never meet the 64 KiB
/// limit of one value.
fn order_key(id: &str) -> String {
    format!("order:{id}")
}

/// Moves orders kept by an earlier version (all in one value, `orders`) to a value each.
pub fn migrate(node: &Node) -> Result<(), NodeError> {
    let Some(orders) = node.bot_state::<BTreeMap<String, Order>>(&GLOBAL, "orders")? else {
        return Ok(());
    };
    for o in orders.values() {
        node.set_bot_state(&GLOBAL, &order_key(&o.id), Some(o))?;
    }
    node.set_bot_state::<()>(&GLOBAL, "orders", None)
}

async fn advance(node: &Node, lock: &Mutex<()>, step: Duration) -> Result<(), NodeError> {
    let due: Vec<Order> = {
        let _one = lock.lock().await;
        let orders: Vec<(String, Order)> = node.bot_states(&GLOBAL, "order:")?;
        let now = now_ms();
        orders
            .into_iter()
            .map(|(_, o)| o)
            .filter(|o| o.status + 1 < STATUSES.len() && now >= o.since + step.as_millis() as u64)
            .collect()
    };
    for mut o in due {
        o.status += 1;
        let status = STATUSES[o.status];
        let key = format!("order:{}:{}", o.id, o.status);
        let text = format!("Order {}: {status}.", &o.id[..8]);
        node.send_content_once(&key, &o.to, Content::Text(kith_protocol::Text { body: text }))
            .await?;
        if o.status + 1 == STATUSES.len() {
            if let Ok(c) = kith_protocol::ConversationId::parse(o.to.trim_start_matches('#')) {
                node.set_bot_state(&c.0, "rating_for", Some(&o.id))?;
            }
            node.send_content_once(
                &format!("order:{}:rate", o.id),
                &o.to,
                ratings::question("your pizza"),
            )
            .await?;
        }
        let _one = lock.lock().await;
        let key = order_key(&o.id);
        if o.status + 1 == STATUSES.len() {
            node.set_bot_state::<Order>(&GLOBAL, &key, None)?;
            let mut done: u64 = node.bot_state(&GLOBAL, "delivered")?.unwrap_or(0);
            done += 1;
            node.set_bot_state(&GLOBAL, "delivered", Some(&done))?;
        } else if node.bot_state::<Order>(&GLOBAL, &key)?.is_some() {
            o.since = now_ms();
            node.set_bot_state(&GLOBAL, &key, Some(&o))?;
        }
    }
    Ok(())
}

/// `kith bot pizzeria`.
pub fn run(home: &kith_node::home::Home, args: super::BotArgs) -> anyhow::Result<()> {
    let step = Duration::from_secs(args.step.unwrap_or(60));
    let bot = Arc::new(Pizzeria::new());
    let lock = bot.lock();
    super::run_embedded(home, args, profile(), bot, move |node| {
        if let Err(e) = migrate(&node) {
            tracing::warn!("cannot move the orders kept by an earlier version: {e}");
        }
        status_task(node.clone(), lock.clone(), step);
        ratings::publish_task(node, lock, profile());
    })
}
