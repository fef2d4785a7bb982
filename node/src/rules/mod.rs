//! The node's rules as pure functions and small state machines of their inputs and `now`:
//! no network, no store, no clock, no randomness of their own (time and random numbers are
//! arguments). The services run them; the unit tests here drive them by hand, and
//! [`harness`] replays random sequences of events from a seed.
//!
//! - [`annotations`]: what reactions, edits and deletes make of the message they name.
//! - [`blob_evict`]: which saved blobs to drop, oldest first, when the blob store needs room.
//! - [`blob_seed`]: how often the sender of a group's file serves each chunk.
//! - [`blob_fetch`]: which chunk of a blob to ask which peer for next (window, sources,
//!   retries).
//! - [`call`]: one call on this device: ringing, who takes it, who offers to whom, when it
//!   ends, what its history entry says.
//! - [`listen`]: a listening session's playback state and a listener's clock offset to its
//!   host (median of round trips).
//! - [`outbox`]: when to retry a device, what an attempt, a receipt or a new device list
//!   changes.
//! - [`trust`]: resolving a name against the pinned key (trust on first use).
//! - [`devices`]: whether a message from a device is accepted (device lists, revocation).
//! - [`group`]: group membership: who may remove whom, which state to adopt, which epoch's
//!   messages to accept, who rekeys after a leave, states arriving in parts.
//! - [`group_seq`]: which group messages of a device a member holds, and which it can prove
//!   it lacks (gaps in the device's sequence numbers).
//! - [`mailbox`]: the mailbox service's deposit rate limit.
//! - [`names`]: what a name's holder makes of reading its record back from the DHT.
//! - [`prekeys`]: prekey rotation.
//! - [`settle`]: splitting bills: each person's part, balances per currency, the transfers
//!   that settle them.
//! - [`interactive`]: what an interactive message offers now, and whether an answer fits it.
//! - [`plan`]: a conversation's planning messages folded into its events and answers, live
//!   locations, lists and book, and who may do what there.
//! - [`lists`]: shared lists as an Automerge document: edits, merging, limits.
//! - [`currency`]: ISO 4217 codes, their minor units, amounts as text.
//! - [`payment`]: how to be paid: IBAN, BIC, Lightning, links, the EPC "GiroCode" payload.
//! - [`consent`]: whether a business or bot may write to a person (the person wrote to it,
//!   subscribed, or unsubscribed since).
//! - [`redial`]: when a node with too few connections dials known peers again.

pub mod annotations;
pub mod blob_evict;
pub mod blob_fetch;
pub mod blob_seed;
pub mod call;
pub mod consent;
pub mod currency;
pub mod devices;
pub mod group;
pub mod group_seq;
pub mod interactive;
pub mod listen;
pub mod lists;
pub mod mailbox;
pub mod names;
pub mod outbox;
pub mod payment;
pub mod plan;
pub mod prekeys;
pub mod redial;
pub mod settle;
pub mod trust;

#[cfg(test)]
pub(crate) mod harness;
