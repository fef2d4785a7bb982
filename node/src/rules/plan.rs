//! Planning together, as rules: a conversation's planning messages (`docs/protocol.md` 6.6),
//! in any order, folded into its events with their answers, its live locations, its lists
//! (their documents, merged by the caller with [`super::lists`]) and its book of expenses,
//! payments and requests with balances and the transfers that settle them.
//!
//! Pure: the caller passes the entries and the people of the conversation. Every member's
//! device folds the same entries the same way, so they agree. An entry that breaks a rule
//! (a change of someone else's event, a payment confirmed by someone other than the one paid,
//! an expense naming someone outside the conversation, an unknown currency, a payment method
//! that does not check out) is left out and listed in [`Board::rejected`] with the reason.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kith_protocol::plan::{Answer, EventChange, Expense, PayMethod, PayRequest, Payment, Split};
use kith_protocol::Content;

use super::settle::{self, Balances};
use super::{currency, payment};

/// A user.
pub type User = [u8; 16];

/// One planning message of the conversation.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Its message id.
    pub id: [u8; 16],
    /// Who sent it.
    pub sender: User,
    /// The sender's clock when sent (ms).
    pub sent_at: u64,
    /// What it says.
    pub content: Content,
}

/// An event as its messages leave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventState {
    /// The `event` message.
    pub id: [u8; 16],
    /// Who proposed it (only they change it).
    pub by: User,
    /// Title.
    pub title: String,
    /// Start, ms since the epoch.
    pub start: u64,
    /// The proposer's offset from UTC, minutes.
    pub zone: i16,
    /// Place.
    pub place: Option<String>,
    /// Note.
    pub note: Option<String>,
    /// Called off.
    pub cancelled: bool,
    /// How many changes were applied.
    pub changes: u32,
    /// Each member's latest answer.
    pub answers: BTreeMap<User, Answer>,
}

/// One position of a live location.
#[derive(Clone, Debug, PartialEq)]
pub struct Fix {
    /// Update number.
    pub seq: u32,
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
    /// Accuracy radius, metres.
    pub accuracy_m: Option<f32>,
    /// When it was sent (sharer's clock, ms).
    pub at: u64,
}

/// A live-location session.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveState {
    /// The session id.
    pub session: [u8; 16],
    /// Who shares.
    pub sharer: User,
    /// The first message of the session seen (the one the history shows).
    pub message: [u8; 16],
    /// When it ends (ms); after that it is over even if no stop arrived.
    pub until: u64,
    /// The sharer stopped it.
    pub stopped: bool,
    /// The positions, by update number.
    pub track: Vec<Fix>,
}

impl LiveState {
    /// Whether it is over at `now`.
    pub fn ended(&self, now: u64) -> bool {
        self.stopped || now >= self.until
    }

    /// The newest position.
    pub fn latest(&self) -> Option<&Fix> {
        self.track.last()
    }
}

/// A shared list: who made it and every document of it seen, to be merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListEntry {
    /// The `list` message.
    pub id: [u8; 16],
    /// Who made it.
    pub by: User,
    /// Its title.
    pub title: String,
    /// The documents: the first, then each change's, in message order.
    pub docs: Vec<Vec<u8>>,
}

/// A recorded expense.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpenseEntry {
    /// Its message.
    pub id: [u8; 16],
    /// Who recorded it.
    pub by: User,
    /// When.
    pub sent_at: u64,
    /// What it says.
    pub expense: Expense,
    /// Each person's part.
    pub parts: Vec<(User, i64)>,
}

/// A recorded payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentEntry {
    /// Its message.
    pub id: [u8; 16],
    /// Who paid (its sender).
    pub from: User,
    /// When.
    pub sent_at: u64,
    /// What it says.
    pub payment: Payment,
    /// The one paid confirmed it; only then does it count.
    pub confirmed: bool,
}

/// A payment request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestEntry {
    /// Its message.
    pub id: [u8; 16],
    /// Who asks to be paid.
    pub from: User,
    /// When.
    pub sent_at: u64,
    /// What it says.
    pub request: PayRequest,
    /// The payments recorded against it.
    pub payments: Vec<[u8; 16]>,
}

/// The book of a conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Book {
    /// Expenses, in order.
    pub expenses: Vec<ExpenseEntry>,
    /// Payments, in order.
    pub payments: Vec<PaymentEntry>,
    /// Requests, in order.
    pub requests: Vec<RequestEntry>,
    /// What each person is owed (+) or owes (-), per currency, from the expenses and the
    /// confirmed payments.
    pub balances: Balances,
    /// Per currency, the fewest transfers (from, to, amount) the greedy rule finds that settle
    /// every balance.
    pub transfers: BTreeMap<String, Vec<(User, User, i128)>>,
}

/// Everything a conversation planned.
#[derive(Clone, Debug, Default)]
pub struct Board {
    /// Events, in order.
    pub events: Vec<EventState>,
    /// Live-location sessions, in order of their first update.
    pub lives: Vec<LiveState>,
    /// Lists, in order.
    pub lists: Vec<ListEntry>,
    /// The book.
    pub book: Book,
    /// Entries left out, with why.
    pub rejected: Vec<([u8; 16], String)>,
}

/// Checks a payment method's own form (IBAN checksum, invoice, link).
pub fn check_method(m: &PayMethod) -> Result<(), String> {
    match m {
        PayMethod::Iban { iban, name, bic } => {
            payment::check_iban(iban).map_err(|e| e.to_string())?;
            payment::check_name(name).map_err(|e| e.to_string())?;
            if let Some(b) = bic {
                payment::check_bic(b).map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        PayMethod::Lightning(l) => payment::check_lightning(l).map(drop).map_err(|e| e.to_string()),
        PayMethod::Link(l) => payment::check_link(l).map(drop).map_err(|e| e.to_string()),
    }
}

fn split_users(s: &Split) -> Vec<User> {
    match s {
        Split::Equal(u) => u.iter().map(|u| u.0).collect(),
        Split::Shares(v) => v.iter().map(|(u, _)| u.0).collect(),
        Split::Exact(v) => v.iter().map(|(u, _)| u.0).collect(),
    }
}

/// The settle rule's form of a split.
pub fn settle_split(s: &Split) -> settle::Split {
    match s {
        Split::Equal(u) => settle::Split::Equal(u.iter().map(|u| u.0).collect()),
        Split::Shares(v) => settle::Split::Shares(v.iter().map(|(u, n)| (u.0, *n)).collect()),
        Split::Exact(v) => settle::Split::Exact(v.iter().map(|(u, a)| (u.0, *a)).collect()),
    }
}

/// Checks an expense against the conversation: the payer and everyone it is split among are
/// among `people`, the currency is one ISO 4217 knows, and the split adds up; answers the parts.
pub fn check_expense(e: &Expense, people: &BTreeSet<User>) -> Result<Vec<(User, i64)>, String> {
    currency::check(&e.currency).map_err(|e| e.to_string())?;
    if !people.contains(&e.payer.0) {
        return Err("the payer is not in the conversation".into());
    }
    if split_users(&e.split).iter().any(|u| !people.contains(u)) {
        return Err("the split names someone who is not in the conversation".into());
    }
    settle::parts(e.amount, &settle_split(&e.split)).map_err(|e| e.to_string())
}

/// Checks a payment by `from` against the conversation.
pub fn check_payment(p: &Payment, from: User, people: &BTreeSet<User>) -> Result<(), String> {
    currency::check(&p.currency).map_err(|e| e.to_string())?;
    if p.to.0 == from {
        return Err("a payment must go to someone else".into());
    }
    if !people.contains(&p.to.0) {
        return Err("the one paid is not in the conversation".into());
    }
    Ok(())
}

/// Checks a payment request against the conversation.
pub fn check_request(r: &PayRequest, from: User, people: &BTreeSet<User>) -> Result<(), String> {
    currency::check(&r.currency).map_err(|e| e.to_string())?;
    payment::check_reference(&r.reference).map_err(|e| e.to_string())?;
    if r.payer.is_some_and(|p| p.0 == from || !people.contains(&p.0)) {
        return Err("the one asked is not someone else in the conversation".into());
    }
    r.methods.iter().try_for_each(check_method)
}

/// The longest a live location lasts, whatever its updates say (8 hours, in ms).
pub const MAX_LIVE_MS: u64 = 8 * 3600 * 1000;

/// Entries that refer to another come after every entry that may be referred to, whatever the
/// senders' clocks say: an answer sent on a clock behind the event's still finds it.
fn phase(c: &Content) -> u8 {
    match c {
        Content::EventChange(_)
        | Content::Rsvp(_)
        | Content::ListChange(_)
        | Content::PaymentConfirm(_) => 1,
        _ => 0,
    }
}

/// Folds a conversation's planning entries, in any order, into its board. `people` are the
/// users of the conversation (members, and for a group anyone who was one). An entry its own
/// sender deleted (a `delete` entry naming it) is withdrawn: left out as if never sent.
pub fn fold(entries: &[Entry], people: &BTreeSet<User>) -> Board {
    let senders: HashMap<[u8; 16], User> = entries.iter().map(|e| (e.id, e.sender)).collect();
    let withdrawn: std::collections::HashSet<[u8; 16]> = entries
        .iter()
        .filter_map(|e| match &e.content {
            Content::Delete { to } if senders.get(&to.0) == Some(&e.sender) => Some(to.0),
            _ => None,
        })
        .collect();
    let mut order: Vec<&Entry> = entries
        .iter()
        .filter(|e| !withdrawn.contains(&e.id) && !matches!(e.content, Content::Delete { .. }))
        .collect();
    order.sort_by_key(|e| (phase(&e.content), e.sent_at, e.id));
    order.dedup_by_key(|e| e.id);
    let mut b = Board::default();
    let mut events: HashMap<[u8; 16], usize> = HashMap::new();
    let mut lives: HashMap<(User, [u8; 16]), usize> = HashMap::new();
    let mut lists: HashMap<[u8; 16], usize> = HashMap::new();
    let mut payments: HashMap<[u8; 16], usize> = HashMap::new();
    let mut requests: HashMap<[u8; 16], usize> = HashMap::new();
    let mut confirms: Vec<(&Entry, [u8; 16])> = Vec::new();
    for e in order {
        let mut reject = |why: &str| b.rejected.push((e.id, why.to_owned()));
        if !people.contains(&e.sender) {
            reject("the sender is not in the conversation");
            continue;
        }
        match &e.content {
            Content::Event(ev) => {
                events.insert(e.id, b.events.len());
                b.events.push(EventState {
                    id: e.id,
                    by: e.sender,
                    title: ev.title.clone(),
                    start: ev.start,
                    zone: ev.zone,
                    place: ev.place.clone(),
                    note: ev.note.clone(),
                    cancelled: false,
                    changes: 0,
                    answers: BTreeMap::new(),
                });
            }
            Content::EventChange(c) => match events.get(&c.to.0).map(|&i| &mut b.events[i]) {
                None => reject("a change of an event not known here"),
                Some(ev) if ev.by != e.sender => reject("only the proposer changes an event"),
                Some(ev) => apply_change(ev, c),
            },
            Content::Rsvp(r) => match events.get(&r.to.0).map(|&i| &mut b.events[i]) {
                None => reject("an answer to an event not known here"),
                Some(ev) => {
                    ev.answers.insert(e.sender, r.answer);
                }
            },
            Content::LiveLocation { session, seq, lat, lon, accuracy_m, until, stopped } => {
                let key = (e.sender, session.0);
                let i = *lives.entry(key).or_insert_with(|| {
                    b.lives.push(LiveState {
                        session: session.0,
                        sharer: e.sender,
                        message: e.id,
                        until: e.sent_at.saturating_add(MAX_LIVE_MS),
                        stopped: false,
                        track: Vec::new(),
                    });
                    b.lives.len() - 1
                });
                let live = &mut b.lives[i];
                if *seq == 0 {
                    live.message = e.id;
                }
                let fix =
                    Fix { seq: *seq, lat: *lat, lon: *lon, accuracy_m: *accuracy_m, at: e.sent_at };
                match live.track.binary_search_by_key(seq, |f| f.seq) {
                    Ok(_) => {}
                    Err(at) => live.track.insert(at, fix),
                }
                // An update may end it sooner, never later; and 8 hours after it began at most.
                live.until = live.until.min(*until);
                live.stopped |= *stopped;
            }
            Content::List(l) => match lists.get(&e.id) {
                // A change came first (a sender's clock behind): this is where it began.
                Some(&i) => {
                    let list = &mut b.lists[i];
                    (list.by, list.title) = (e.sender, l.title.clone());
                    list.docs.insert(0, l.doc.clone());
                }
                None => {
                    lists.insert(e.id, b.lists.len());
                    b.lists.push(ListEntry {
                        id: e.id,
                        by: e.sender,
                        title: l.title.clone(),
                        docs: vec![l.doc.clone()],
                    });
                }
            },
            // A change of a list not known here (made before this member joined, handed over
            // since) makes it known: the document holds all of it.
            Content::ListChange(c) => match lists.get(&c.to.0) {
                None => {
                    lists.insert(c.to.0, b.lists.len());
                    b.lists.push(ListEntry {
                        id: c.to.0,
                        by: e.sender,
                        title: String::new(),
                        docs: vec![c.doc.clone()],
                    });
                }
                Some(&i) => b.lists[i].docs.push(c.doc.clone()),
            },
            Content::Expense(x) => match check_expense(x, people) {
                Err(why) => reject(&why),
                Ok(parts) => b.book.expenses.push(ExpenseEntry {
                    id: e.id,
                    by: e.sender,
                    sent_at: e.sent_at,
                    expense: (**x).clone(),
                    parts,
                }),
            },
            Content::Payment(p) => match check_payment(p, e.sender, people) {
                Err(why) => reject(&why),
                Ok(()) => {
                    payments.insert(e.id, b.book.payments.len());
                    b.book.payments.push(PaymentEntry {
                        id: e.id,
                        from: e.sender,
                        sent_at: e.sent_at,
                        payment: (**p).clone(),
                        confirmed: false,
                    });
                }
            },
            Content::PaymentConfirm(c) => confirms.push((e, c.to.0)),
            Content::PayRequest(r) => match check_request(r, e.sender, people) {
                Err(why) => reject(&why),
                Ok(()) => {
                    requests.insert(e.id, b.book.requests.len());
                    b.book.requests.push(RequestEntry {
                        id: e.id,
                        from: e.sender,
                        sent_at: e.sent_at,
                        request: (**r).clone(),
                        payments: Vec::new(),
                    });
                }
            },
            // Other kinds kept alongside (interactive messages) are not the fold's.
            _ => {}
        }
    }
    // A payment may be dated before its request (a clock behind).
    for p in &b.book.payments {
        if let Some(r) = p.payment.request.and_then(|r| requests.get(&r.0)) {
            b.book.requests[*r].payments.push(p.id);
        }
    }
    // A confirmation may arrive (or be sent, on a skewed clock) before its payment.
    for (e, to) in confirms {
        match payments.get(&to).map(|&i| &mut b.book.payments[i]) {
            None => b.rejected.push((e.id, "a confirmation of a payment not known here".into())),
            Some(p) if p.payment.to.0 != e.sender => {
                b.rejected.push((e.id, "only the one paid confirms a payment".into()))
            }
            Some(p) => p.confirmed = true,
        }
    }
    let book = &mut b.book;
    let expenses: Vec<settle::Expense> = book
        .expenses
        .iter()
        .map(|x| settle::Expense {
            payer: x.expense.payer.0,
            currency: x.expense.currency.clone(),
            amount: x.expense.amount,
            split: settle_split(&x.expense.split),
        })
        .collect();
    let paid: Vec<settle::Payment> = book
        .payments
        .iter()
        .filter(|p| p.confirmed)
        .map(|p| settle::Payment {
            from: p.from,
            to: p.payment.to.0,
            currency: p.payment.currency.clone(),
            amount: p.payment.amount,
        })
        .collect();
    // Every entry passed its own check above, which is all `balances` checks.
    let balances = settle::balances(&expenses, &paid).unwrap_or_default();
    for (cur, people) in &balances {
        book.transfers.insert(cur.clone(), settle::settle(people));
    }
    book.balances = balances;
    b
}

fn apply_change(ev: &mut EventState, c: &EventChange) {
    if let Some(t) = &c.title {
        ev.title = t.clone();
    }
    if let Some((start, zone)) = c.start {
        ev.start = start;
        ev.zone = zone;
    }
    if let Some(p) = &c.place {
        ev.place = Some(p.clone());
    }
    ev.cancelled |= c.cancelled;
    ev.changes += 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use kith_protocol::plan::{Event, PaymentConfirm, Rsvp};
    use kith_protocol::{MessageId, UserId};

    const A: User = [1; 16];
    const B: User = [2; 16];
    const C: User = [3; 16];

    fn people() -> BTreeSet<User> {
        [A, B, C].into_iter().collect()
    }

    fn entry(n: u8, sender: User, sent_at: u64, content: Content) -> Entry {
        Entry { id: [n; 16], sender, sent_at, content }
    }

    fn event(title: &str) -> Content {
        Content::Event(Box::new(Event {
            title: title.into(),
            start: 1_000,
            zone: 120,
            place: Some("Stadtpark".into()),
            note: None,
        }))
    }

    fn change(to: u8, place: &str) -> Content {
        Content::EventChange(Box::new(EventChange {
            to: MessageId([to; 16]),
            title: None,
            start: Some((2_000, 60)),
            place: Some(place.into()),
            cancelled: false,
        }))
    }

    #[test]
    fn only_the_proposer_changes_an_event_and_the_last_answer_counts() {
        let rsvp = |answer| Content::Rsvp(Rsvp { to: MessageId([10; 16]), answer });
        let entries = vec![
            entry(14, B, 50, rsvp(Answer::No)),
            entry(10, A, 10, event("Barbecue")),
            entry(11, B, 20, change(10, "B's garden")),
            entry(12, A, 30, change(10, "Elbstrand")),
            entry(13, B, 40, rsvp(Answer::Maybe)),
            entry(15, C, 45, rsvp(Answer::Yes)),
        ];
        let b = fold(&entries, &people());
        let ev = &b.events[0];
        assert_eq!(ev.place.as_deref(), Some("Elbstrand"));
        assert_eq!((ev.start, ev.zone, ev.changes), (2_000, 60, 1));
        assert_eq!(ev.answers.get(&B), Some(&Answer::No));
        assert_eq!(ev.answers.get(&C), Some(&Answer::Yes));
        assert_eq!(b.rejected, vec![([11; 16], "only the proposer changes an event".into())]);
    }

    #[test]
    fn answers_on_a_clock_behind_the_event_and_withdrawn_entries() {
        let entries = vec![
            entry(10, A, 100, event("Barbecue")),
            // B's clock is behind: his answer is dated before the event.
            entry(11, B, 50, Content::Rsvp(Rsvp { to: MessageId([10; 16]), answer: Answer::Yes })),
            entry(12, B, 60, expense(B, 100, "EUR", &[A, B])),
            entry(13, B, 70, Content::Delete { to: MessageId([12; 16]) }),
            // A cannot withdraw B's expense.
            entry(14, A, 80, expense(A, 300, "EUR", &[A, B, C])),
            entry(15, B, 90, Content::Delete { to: MessageId([14; 16]) }),
        ];
        let b = fold(&entries, &people());
        assert_eq!(b.events[0].answers.get(&B), Some(&Answer::Yes));
        assert_eq!(b.book.expenses.len(), 1);
        assert_eq!(b.book.expenses[0].id, [14; 16]);
        assert!(b.rejected.is_empty(), "{:?}", b.rejected);
    }

    #[test]
    fn a_live_location_cannot_be_kept_alive_by_its_updates() {
        let live = |seq, until| Content::LiveLocation {
            session: kith_protocol::message::SessionId([7; 16]),
            seq,
            lat: 1.0,
            lon: 1.0,
            accuracy_m: None,
            until,
            stopped: false,
        };
        let entries =
            vec![entry(1, A, 1_000, live(0, 60_000)), entry(2, A, 2_000, live(1, u64::MAX))];
        assert_eq!(fold(&entries, &people()).lives[0].until, 60_000);
        let greedy = vec![entry(1, A, 1_000, live(0, u64::MAX))];
        assert_eq!(fold(&greedy, &people()).lives[0].until, 1_000 + MAX_LIVE_MS);
    }

    #[test]
    fn a_live_location_ends_on_time_or_when_stopped() {
        let live = |seq, stopped| Content::LiveLocation {
            session: kith_protocol::message::SessionId([7; 16]),
            seq,
            lat: 53.5 + f64::from(seq) / 1000.0,
            lon: 10.0,
            accuracy_m: Some(5.0),
            until: 10_000,
            stopped,
        };
        let entries = vec![entry(2, A, 200, live(1, false)), entry(1, A, 100, live(0, false))];
        let b = fold(&entries, &people());
        let l = &b.lives[0];
        assert_eq!((l.message, l.track.len()), ([1; 16], 2));
        assert_eq!(l.latest().map(|f| f.seq), Some(1));
        assert!(!l.ended(9_999));
        assert!(l.ended(10_000), "over at its end time without a stop");
        let mut more = entries.clone();
        more.push(entry(3, A, 300, live(2, true)));
        assert!(fold(&more, &people()).lives[0].ended(500));
    }

    fn expense(payer: User, amount: i64, currency: &str, among: &[User]) -> Content {
        Content::Expense(Box::new(Expense {
            description: "food".into(),
            payer: UserId(payer),
            amount,
            currency: currency.into(),
            split: Split::Equal(among.iter().map(|u| UserId(*u)).collect()),
        }))
    }

    fn pay(to: User, amount: i64) -> Content {
        Content::Payment(Box::new(Payment {
            to: UserId(to),
            amount,
            currency: "EUR".into(),
            request: None,
        }))
    }

    #[test]
    fn payments_count_once_the_one_paid_confirms_them() {
        let confirm = |n| Content::PaymentConfirm(PaymentConfirm { to: MessageId([n; 16]) });
        let mut entries = vec![
            entry(1, A, 1, expense(A, 9_00, "EUR", &[A, B, C])),
            entry(2, B, 2, pay(A, 3_00)),
            entry(3, C, 3, pay(A, 3_00)),
            // C confirms its own payment: not the one paid.
            entry(4, C, 4, confirm(3)),
        ];
        let b = fold(&entries, &people());
        assert_eq!(b.book.balances["EUR"][&A], 6_00);
        assert_eq!(b.rejected.len(), 1);
        assert_eq!(b.book.transfers["EUR"].len(), 2);
        entries.push(entry(5, A, 5, confirm(2)));
        entries.push(entry(6, A, 0, confirm(3)));
        let b = fold(&entries, &people());
        assert!(b.book.balances["EUR"].values().all(|v| *v == 0));
        assert!(b.book.transfers["EUR"].is_empty());
    }

    #[test]
    fn expenses_outside_the_conversation_or_in_unknown_currencies_are_left_out() {
        let entries = vec![
            entry(1, A, 1, expense(A, 100, "EUR", &[A, [9; 16]])),
            entry(2, A, 2, expense([9; 16], 100, "EUR", &[A])),
            entry(3, A, 3, expense(A, 100, "XYZ", &[A, B])),
            entry(4, [9; 16], 4, expense(A, 100, "EUR", &[A, B])),
            entry(5, B, 5, pay(B, 100)),
            entry(6, A, 6, expense(A, 100, "JPY", &[A, B])),
        ];
        let b = fold(&entries, &people());
        assert_eq!(b.rejected.len(), 5);
        assert_eq!(b.book.expenses.len(), 1);
        assert_eq!(b.book.balances["JPY"][&B], -50);
    }

    #[test]
    fn the_order_entries_come_in_does_not_matter() {
        let entries = vec![
            entry(1, A, 1, expense(A, 10_00, "EUR", &[A, B, C])),
            entry(2, B, 2, expense(B, 7_01, "EUR", &[A, B])),
            entry(3, C, 3, expense(C, 500, "JPY", &[A, C])),
            entry(4, B, 4, pay(A, 1_00)),
            entry(5, A, 5, Content::PaymentConfirm(PaymentConfirm { to: MessageId([4; 16]) })),
        ];
        let forward = fold(&entries, &people()).book;
        let mut reversed = entries.clone();
        reversed.reverse();
        assert_eq!(fold(&reversed, &people()).book, forward);
        for cur in forward.balances.values() {
            assert_eq!(cur.values().sum::<i128>(), 0);
        }
    }
}
