//! Shared shopping and to-do lists: one [`automerge`] document per list, which every member's
//! devices edit on their own and merge whenever a copy arrives, in any order, any number of
//! times; every device that has seen the same edits shows the same list.
//!
//! The document's root map holds `"title"` (a string), `"kind"` (`"shopping"` or `"todo"`)
//! and `"items"`, a map from item id to the item's map: `"text"` (string), `"done"` (bool),
//! `"assignee"` (16 bytes, or null when nobody), `"added_at"` (unsigned, milliseconds) and
//! `"removed"` (bool). The title and kind are written once, when the list is created.
//!
//! - Every field is a last-writer-wins register: concurrent changes to the same field resolve
//!   by automerge's rule (the operation with the greater id wins), so every replica picks the
//!   same value, one that some device wrote.
//! - Removing an item sets `removed`, a tombstone, instead of deleting its key: a rename or a
//!   tick made concurrently on another device lands on the tombstoned item and does not bring
//!   it back, and no later write can reset `removed` (no edit writes `false` there after the
//!   item is added). A removed item still counts towards [`MAX_ITEMS`], and its id stays used.
//! - Items added concurrently on different devices all survive: their ids are different keys
//!   of `items`. Two devices that pick the same id concurrently (a 1 in 2^32 chance per pair
//!   with [`item_id`]) keep only one of the two items.
//! - A second device joins a list by [`SharedList::load`]ing a saved copy of it; two lists
//!   made by [`SharedList::new`] are different lists even with the same title, and
//!   [`SharedList::merge_bytes`] refuses to mix them ([`ListError::OtherList`]).
//! - A document comes from a peer and may be garbage or malicious. [`SharedList::load`] and
//!   [`SharedList::merge_bytes`] check its size, then walk its columns before automerge parses
//!   them: run-length encoding lets a few kilobytes describe millions of operations (seconds
//!   of CPU and hundreds of megabytes to load), so a document must be one chunk of at most
//!   [`MAX_OPS`] operations and changes, unpacking to at most [`MAX_UNPACKED`] bytes. Then
//!   automerge loads it (checking its hashes), and its whole shape is checked (types,
//!   lengths, item count). Automerge itself panics on some malformed documents (see
//!   `guarded`): such a panic is caught and becomes [`ListError::Panicked`].
//! - Each edit and each merge is made on a copy that replaces the list only once it passes the
//!   same checks, so a failed one leaves the list as it was, and what this device saves, its
//!   peers accept.
//! - The limits are checked on each replica: two devices that each stay within them can make
//!   edits whose merge does not ([`MAX_ITEMS`], [`MAX_DOC`], [`MAX_OPS`]); such a merge is
//!   refused, and the two copies stay apart until one is replaced.
//! - A document keeps its whole history (every text ever written, every tick), so it only
//!   grows: a list that reaches [`MAX_DOC`] or [`MAX_OPS`] takes no more edits, and a new list
//!   must be started from its state.
//! - Each device edits under its own automerge actor id (the `actor` bytes, e.g. its device
//!   key). A device must keep editing its newest copy: editing an older saved copy under the
//!   same actor makes changes that clash with the ones it already sent, and peers that have
//!   both refuse to merge them ([`ListError::Merge`]).
//! - Every change is committed with the timestamp 0: the document carries no wall clock beyond
//!   the `added_at` that the list shows, and the same edits give the same bytes.
//!
//! The `list` and `list.change` messages carry [`SharedList::save`]'s bytes
//! (`docs/protocol.md` 6.6); [`crate::services::plans`] merges them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{
    ActorId, AutoCommit, ObjId, ObjType, ReadDoc, ScalarValue, ScalarValueRef, Value, ValueRef,
    ROOT,
};

/// A user.
pub type User = [u8; 16];

/// Most items in a list, removed ones included.
pub const MAX_ITEMS: usize = 500;
/// Most bytes of an item's text, and of a list's title.
pub const MAX_ITEM_TEXT: usize = 256;
/// Most bytes of a saved list document.
pub const MAX_DOC: usize = 48 * 1024;
/// Most bytes of an item id.
pub const MAX_ITEM_ID: usize = 64;
/// Most bytes of the actor id a device edits under.
pub const MAX_ACTOR: usize = 64;
/// Most operations, and most changes, in a list's whole history (every edit is one change of
/// one to six operations, and stays in the document for good).
pub const MAX_OPS: u64 = 50_000;
/// Most bytes that a document's compressed columns may unpack to, all together.
pub const MAX_UNPACKED: usize = 4 << 20;

/// What a list is for; stored in the document, shown as `shopping` or `todo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ListKind {
    /// Things to buy.
    Shopping,
    /// Things to do.
    Todo,
}

impl ListKind {
    fn as_str(self) -> &'static str {
        match self {
            ListKind::Shopping => "shopping",
            ListKind::Todo => "todo",
        }
    }
}

impl fmt::Display for ListKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ListKind {
    type Err = ListError;

    fn from_str(s: &str) -> Result<Self, ListError> {
        match s {
            "shopping" => Ok(ListKind::Shopping),
            "todo" => Ok(ListKind::Todo),
            _ => Err(ListError::Kind(s.to_owned())),
        }
    }
}

/// One edit to a list, made on this device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A new item, not done.
    Add {
        /// Its id, unused in the list so far (see [`item_id`]).
        id: String,
        /// What it says.
        text: String,
        /// Who is to do or buy it, if anyone.
        assignee: Option<User>,
    },
    /// New text for an item.
    Rename {
        /// The item.
        id: String,
        /// Its new text.
        text: String,
    },
    /// An item ticked off, or unticked.
    Done {
        /// The item.
        id: String,
        /// Whether it is done.
        done: bool,
    },
    /// Someone else, or nobody, to do or buy an item.
    Assign {
        /// The item.
        id: String,
        /// Who, if anyone.
        assignee: Option<User>,
    },
    /// An item taken off the list, for good.
    Remove {
        /// The item.
        id: String,
    },
}

/// One item of a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// Its id, unique in the list.
    pub id: String,
    /// What it says.
    pub text: String,
    /// Whether it is ticked off.
    pub done: bool,
    /// Who is to do or buy it, if anyone.
    pub assignee: Option<User>,
    /// When it was added, in milliseconds, by the clock of the device that added it.
    pub added_at: u64,
    /// Whether it was removed.
    pub removed: bool,
}

/// A list as people see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListState {
    /// Its title.
    pub title: String,
    /// What it is for.
    pub kind: ListKind,
    /// The items not removed, by `added_at`, then by id.
    pub items: Vec<Item>,
}

/// Why an edit, a document or a merge is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// An actor id that is empty or over [`MAX_ACTOR`] bytes.
    #[error("an actor id must be 1 to {MAX_ACTOR} bytes, not {0}")]
    Actor(usize),
    /// A title or an item's text that is blank or over [`MAX_ITEM_TEXT`] bytes.
    #[error("a title or item text must be 1 to {MAX_ITEM_TEXT} bytes and not blank")]
    Text,
    /// Neither `shopping` nor `todo`.
    #[error("{0:?} is not a list kind (shopping or todo)")]
    Kind(String),
    /// An item id that is empty, too long, or not printable ASCII.
    #[error("{0:?} is not an item id (1 to {MAX_ITEM_ID} printable ascii characters)")]
    ItemId(String),
    /// An item id the list already has, perhaps for a removed item.
    #[error("the item id {0:?} is already used in this list")]
    IdInUse(String),
    /// No item with this id.
    #[error("no item {0:?} in this list")]
    UnknownItem(String),
    /// An edit of a removed item.
    #[error("the item {0:?} was removed")]
    Removed(String),
    /// More than [`MAX_ITEMS`] items.
    #[error("a list holds at most {MAX_ITEMS} items, removed ones included")]
    TooManyItems,
    /// A document over [`MAX_DOC`] bytes (its size, or the size it would grow to).
    #[error("a list document may be at most {MAX_DOC} bytes, not {0}")]
    TooBig(usize),
    /// A document whose history is over [`MAX_OPS`] or [`MAX_UNPACKED`].
    #[error(
        "a list's history may hold at most {MAX_OPS} operations and changes, \
         and unpack to at most {MAX_UNPACKED} bytes"
    )]
    History,
    /// Bytes that are not an automerge document.
    #[error("not an automerge document: {0}")]
    Corrupt(String),
    /// An automerge document that is not a list, or breaks a list's limits.
    #[error("not a shared list: {0}")]
    Shape(String),
    /// A document of a list other than this one.
    #[error("the document is of another list")]
    OtherList,
    /// Documents that automerge cannot merge (such as two devices editing under one actor).
    #[error("the documents do not merge: {0}")]
    Merge(String),
    /// A document on which automerge panicked (see the module doc).
    #[error("automerge failed on the document")]
    Panicked,
    /// An edit that automerge refused.
    #[error("the document refused the edit: {0}")]
    Edit(String),
}

/// A fresh item id: 8 lowercase hex digits from `seed`, which should be random (two devices
/// that pass the same seed get the same id).
pub fn item_id(seed: u64) -> String {
    // splitmix64's finaliser, so that seeds that differ little give unrelated ids.
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    format!("{:08x}", z >> 32)
}

/// A shared list: its automerge document, and the list it holds.
#[derive(Clone, Debug)]
pub struct SharedList {
    doc: AutoCommit,
    view: View,
}

/// What a document holds, read and checked whenever it changes.
#[derive(Clone, Debug)]
struct View {
    title: String,
    kind: ListKind,
    /// The `items` map: the same object in every copy of the same list.
    items_obj: ObjId,
    /// Every item, removed ones included, with the id of its map.
    items: BTreeMap<String, (ObjId, Item)>,
}

impl SharedList {
    /// A new list; `actor` identifies this device (any 1 to [`MAX_ACTOR`] bytes, e.g. a
    /// 32-byte device key; must differ between devices).
    pub fn new(actor: &[u8], title: &str, kind: ListKind, now_ms: u64) -> Result<Self, ListError> {
        let actor = actor_id(actor)?;
        check_text(title)?;
        let _ = now_ms; // The title and kind carry no time; items carry theirs.
        let mut doc = AutoCommit::new().with_actor(actor);
        let made = (|| {
            doc.put(ROOT, "title", title)?;
            doc.put(ROOT, "kind", kind.as_str())?;
            doc.put_object(ROOT, "items", ObjType::Map).map(drop)
        })();
        made.map_err(|e| ListError::Edit(e.to_string()))?;
        commit(&mut doc);
        let view = read(&doc)?;
        Ok(SharedList { doc, view })
    }

    /// A list from a saved document (from this device or a peer), edited from now on under
    /// `actor`. Refuses bytes over [`MAX_DOC`], that do not load, or whose shape is not a
    /// list's: a string title of 1 to [`MAX_ITEM_TEXT`] bytes, a known kind, an items map of
    /// at most [`MAX_ITEMS`] items each with the right fields (see the module doc).
    pub fn load(bytes: &[u8], actor: &[u8]) -> Result<Self, ListError> {
        let actor = actor_id(actor)?;
        let mut list = guarded(|| {
            let mut list = open(bytes)?;
            // Every document a list holds has been saved once (edits and merges save theirs
            // too), so that a later `save` of it does not panic.
            list.doc.save();
            Ok(list)
        })?;
        list.doc.set_actor(actor);
        Ok(list)
    }

    /// Merges another saved document of the same list into this one; merging is commutative
    /// and idempotent. Refuses, leaving this list as it was, a document that fails
    /// [`load`](Self::load)'s checks, one of another list, or one whose merge would break
    /// [`MAX_ITEMS`] or [`MAX_DOC`] or change the title or kind.
    pub fn merge_bytes(&mut self, bytes: &[u8]) -> Result<(), ListError> {
        if let Some((doc, view)) = guarded(|| self.merged(bytes))? {
            self.doc = doc;
            self.view = view;
        }
        Ok(())
    }

    /// This list's document with `bytes` merged in, and what it holds; `None` if `bytes` hold
    /// nothing new.
    fn merged(&self, bytes: &[u8]) -> Result<Option<(AutoCommit, View)>, ListError> {
        let mut other = open(bytes)?;
        if other.view.items_obj != self.view.items_obj {
            return Err(ListError::OtherList);
        }
        let mut doc = self.doc.clone();
        let new = doc.merge(&mut other.doc).map_err(|e| ListError::Merge(e.to_string()))?;
        if new.is_empty() {
            return Ok(None);
        }
        check_saved(&mut doc)?;
        let view = read(&doc)?;
        if view.items_obj != self.view.items_obj {
            return Err(ListError::OtherList);
        }
        if view.title != self.view.title || view.kind != self.view.kind {
            return Err(ListError::Shape("the title or kind changed".into()));
        }
        Ok(Some((doc, view)))
    }

    /// Applies one edit made on this device at `now_ms` (the time an added item records).
    /// Refuses, leaving the list as it was: an unknown or removed item (for all but
    /// [`Op::Add`]), an id already used or malformed ([`Op::Add`]), a blank or too long text,
    /// a list of [`MAX_ITEMS`] already, a document that would grow over [`MAX_DOC`] or
    /// [`MAX_OPS`].
    pub fn apply(&mut self, op: &Op, now_ms: u64) -> Result<(), ListError> {
        let (doc, id, entry) = guarded(|| self.edited(op, now_ms))?;
        self.doc = doc;
        self.view.items.insert(id, entry);
        Ok(())
    }

    /// This list's document with `op` made, and the item it made or changed.
    fn edited(
        &self,
        op: &Op,
        now_ms: u64,
    ) -> Result<(AutoCommit, String, (ObjId, Item)), ListError> {
        let mut doc = self.doc.clone();
        let edit = |e: automerge::AutomergeError| ListError::Edit(e.to_string());
        // The item as it will be: this edit's values win over every value the document has,
        // so the view is updated without reading the document again.
        let (id, obj, item) = match op {
            Op::Add { id, text, assignee } => {
                check_id(id)?;
                if self.view.items.contains_key(id) {
                    return Err(ListError::IdInUse(id.clone()));
                }
                check_text(text)?;
                if self.view.items.len() >= MAX_ITEMS {
                    return Err(ListError::TooManyItems);
                }
                let added = (|| {
                    let obj = doc.put_object(&self.view.items_obj, id.as_str(), ObjType::Map)?;
                    doc.put(&obj, "text", text.as_str())?;
                    doc.put(&obj, "done", false)?;
                    doc.put(&obj, "assignee", assignee_value(assignee))?;
                    doc.put(&obj, "added_at", ScalarValue::Uint(now_ms))?;
                    doc.put(&obj, "removed", false)?;
                    Ok(obj)
                })();
                let item = Item {
                    id: id.clone(),
                    text: text.clone(),
                    done: false,
                    assignee: *assignee,
                    added_at: now_ms,
                    removed: false,
                };
                (id, added.map_err(edit)?, item)
            }
            Op::Rename { id, text } => {
                let (obj, mut item) = self.live(id)?;
                check_text(text)?;
                doc.put(&obj, "text", text.as_str()).map_err(edit)?;
                item.text.clone_from(text);
                (id, obj, item)
            }
            Op::Done { id, done } => {
                let (obj, mut item) = self.live(id)?;
                doc.put(&obj, "done", *done).map_err(edit)?;
                item.done = *done;
                (id, obj, item)
            }
            Op::Assign { id, assignee } => {
                let (obj, mut item) = self.live(id)?;
                doc.put(&obj, "assignee", assignee_value(assignee)).map_err(edit)?;
                item.assignee = *assignee;
                (id, obj, item)
            }
            Op::Remove { id } => {
                let (obj, mut item) = self.live(id)?;
                doc.put(&obj, "removed", true).map_err(edit)?;
                item.removed = true;
                (id, obj, item)
            }
        };
        commit(&mut doc);
        check_saved(&mut doc)?;
        Ok((doc, id.clone(), (obj, item)))
    }

    /// The whole document, saved: what a message carries, and what [`load`](Self::load) and
    /// [`merge_bytes`](Self::merge_bytes) take.
    pub fn save(&mut self) -> Vec<u8> {
        self.doc.save()
    }

    /// The list as people see it.
    pub fn state(&self) -> ListState {
        let mut items: Vec<Item> = self
            .view
            .items
            .values()
            .filter(|(_, item)| !item.removed)
            .map(|(_, item)| item.clone())
            .collect();
        items.sort_by(|a, b| a.added_at.cmp(&b.added_at).then_with(|| a.id.cmp(&b.id)));
        ListState { title: self.view.title.clone(), kind: self.view.kind, items }
    }

    /// Whether the list has an item with this id, removed or not (an id [`Op::Add`] refuses).
    pub fn contains(&self, id: &str) -> bool {
        self.view.items.contains_key(id)
    }

    /// An item that is there and not removed, and its map.
    fn live(&self, id: &str) -> Result<(ObjId, Item), ListError> {
        match self.view.items.get(id) {
            None => Err(ListError::UnknownItem(id.to_owned())),
            Some((_, item)) if item.removed => Err(ListError::Removed(id.to_owned())),
            Some((obj, item)) => Ok((obj.clone(), item.clone())),
        }
    }
}

fn actor_id(actor: &[u8]) -> Result<ActorId, ListError> {
    if actor.is_empty() || actor.len() > MAX_ACTOR {
        return Err(ListError::Actor(actor.len()));
    }
    Ok(ActorId::from(actor))
}

fn text_ok(text: &str) -> bool {
    text.len() <= MAX_ITEM_TEXT && !text.trim().is_empty()
}

fn check_text(text: &str) -> Result<(), ListError> {
    if text_ok(text) {
        Ok(())
    } else {
        Err(ListError::Text)
    }
}

fn id_ok(id: &str) -> bool {
    (1..=MAX_ITEM_ID).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

fn check_id(id: &str) -> Result<(), ListError> {
    if id_ok(id) {
        Ok(())
    } else {
        Err(ListError::ItemId(id.to_owned()))
    }
}

fn assignee_value(assignee: &Option<User>) -> ScalarValue {
    match assignee {
        Some(user) => ScalarValue::Bytes(user.to_vec()),
        None => ScalarValue::Null,
    }
}

/// Runs `f`, which works on a copy of a document, and turns a panic inside it into an error.
/// Automerge 0.12 (and 0.6) panics on some malformed documents whose checksum is right, which
/// anyone can make: an index out of bounds or a failed assertion in its column decoders,
/// while loading or merging. `f` touches nothing that outlives it, so what it leaves behind
/// after a panic is dropped; this needs `panic = "unwind"` (the default), and the panic hook
/// still reports each one.
fn guarded<T>(f: impl FnOnce() -> Result<T, ListError>) -> Result<T, ListError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(Err(ListError::Panicked))
}

/// Checks that `doc`, saved, is within [`MAX_DOC`] and [`MAX_OPS`]: what peers accept.
fn check_saved(doc: &mut AutoCommit) -> Result<(), ListError> {
    let saved = doc.save();
    if saved.len() > MAX_DOC {
        return Err(ListError::TooBig(saved.len()));
    }
    precheck(&saved)
}

/// Ends the edit in progress as one change, with the timestamp 0 (see the module doc).
fn commit(doc: &mut AutoCommit) {
    doc.commit_with(CommitOptions::default().with_time(0));
}

/// A document loaded from `bytes` and checked, under automerge's throwaway actor (it is not
/// edited before [`SharedList::load`] sets one).
fn open(bytes: &[u8]) -> Result<SharedList, ListError> {
    if bytes.len() > MAX_DOC {
        return Err(ListError::TooBig(bytes.len()));
    }
    precheck(bytes)?;
    let doc = AutoCommit::load(bytes).map_err(|e| ListError::Corrupt(e.to_string()))?;
    let view = read(&doc)?;
    Ok(SharedList { doc, view })
}

fn shape(what: impl Into<String>) -> ListError {
    ListError::Shape(what.into())
}

/// The winning value at `key` of `obj`, if any, which must not be an object.
fn scalar(doc: &AutoCommit, obj: &ObjId, key: &str) -> Result<Option<ScalarValue>, ListError> {
    match doc.get(obj, key).map_err(|e| shape(e.to_string()))? {
        None => Ok(None),
        Some((Value::Scalar(s), _)) => Ok(Some(s.into_owned())),
        Some((Value::Object(_), _)) => Err(shape(format!("the {key} is an object"))),
    }
}

/// Reads the whole list out of `doc`, checking its shape and limits.
fn read(doc: &AutoCommit) -> Result<View, ListError> {
    let title = match scalar(doc, &ROOT, "title")? {
        Some(ScalarValue::Str(t)) if text_ok(&t) => t.to_string(),
        Some(ScalarValue::Str(_)) => return Err(shape("the title is blank or too long")),
        _ => return Err(shape("no title")),
    };
    let kind = match scalar(doc, &ROOT, "kind")? {
        Some(ScalarValue::Str(k)) => {
            k.parse().map_err(|_| shape(format!("{:?} is not a list kind", k.as_str())))?
        }
        _ => return Err(shape("no kind")),
    };
    let items_obj = match doc.get(ROOT, "items").map_err(|e| shape(e.to_string()))? {
        Some((Value::Object(ObjType::Map), id)) => id,
        _ => return Err(shape("no items map")),
    };
    let mut items = BTreeMap::new();
    for entry in doc.map_range(&items_obj, ..) {
        if items.len() >= MAX_ITEMS {
            return Err(ListError::TooManyItems);
        }
        let id = entry.key.to_string();
        if !id_ok(&id) {
            return Err(shape(format!("{id:?} is not an item id")));
        }
        if !matches!(entry.value, ValueRef::Object(ObjType::Map)) {
            return Err(shape(format!("item {id:?} is not a map")));
        }
        let obj = entry.id();
        let item = read_item(doc, &obj, id.clone())?;
        items.insert(id, (obj, item));
    }
    Ok(View { title, kind, items_obj, items })
}

/// The fields of an item.
const KEYS: [&str; 5] = ["text", "done", "assignee", "added_at", "removed"];

fn read_item(doc: &AutoCommit, obj: &ObjId, id: String) -> Result<Item, ListError> {
    let bad = |what: &str| shape(format!("item {id:?} has {what}"));
    let (mut text, mut done, mut removed, mut added_at, mut assignee) =
        (None, None, None, None, None);
    // One pass over the item's map is several times faster than a `get` per field. Keys
    // other than these five are left alone (a later version may add some).
    for entry in doc.map_range(obj, ..) {
        let key = entry.key.as_ref();
        let value = match entry.value {
            ValueRef::Scalar(value) => value,
            ValueRef::Object(_) if KEYS.contains(&key) => {
                return Err(bad(&format!("a {key} object")))
            }
            ValueRef::Object(_) => continue,
        };
        match (key, value) {
            ("text", ScalarValueRef::Str(t)) if text_ok(&t) => text = Some(t.into_owned()),
            ("done", ScalarValueRef::Boolean(b)) => done = Some(b),
            ("removed", ScalarValueRef::Boolean(b)) => removed = Some(b),
            ("added_at", ScalarValueRef::Uint(t)) => added_at = Some(t),
            ("added_at", ScalarValueRef::Int(t)) if t >= 0 => added_at = Some(t.unsigned_abs()),
            ("assignee", ScalarValueRef::Null) => assignee = Some(None),
            ("assignee", ScalarValueRef::Bytes(b)) if b.len() == 16 => {
                assignee = Some(User::try_from(b.as_ref()).ok())
            }
            (key, _) if KEYS.contains(&key) => return Err(bad(&format!("a wrong {key}"))),
            _ => {}
        }
    }
    Ok(Item {
        text: text.ok_or_else(|| bad("no text"))?,
        done: done.ok_or_else(|| bad("no done flag"))?,
        removed: removed.ok_or_else(|| bad("no removed flag"))?,
        added_at: added_at.ok_or_else(|| bad("no time it was added"))?,
        assignee: assignee.unwrap_or(None),
        id,
    })
}

/// Checks, before automerge parses them, that `bytes` are one automerge document chunk whose
/// columns hold at most [`MAX_OPS`] operations and changes and unpack to at most
/// [`MAX_UNPACKED`] bytes. Automerge's columns are run-length encoded, so a document of a few
/// kilobytes can describe millions of operations, and loading those takes seconds and
/// hundreds of megabytes: this counts them first, from the run lengths, in time linear in the
/// (unpacked) bytes.
///
/// The layout (automerge's binary format): magic bytes, a 4-byte checksum, the chunk type
/// (0: document), the chunk's length; then the actors and heads, the change columns' and the
/// operation columns' specs and lengths, the change columns' data, the operation columns'
/// data, and the heads' indexes.
fn precheck(bytes: &[u8]) -> Result<(), ListError> {
    let corrupt = |what: &str| ListError::Corrupt(what.to_owned());
    let mut input = Reader(bytes);
    if input.take(4) != Some(&MAGIC[..]) {
        return Err(corrupt("no automerge magic bytes"));
    }
    input.take(4).ok_or_else(|| corrupt("no checksum"))?;
    if input.take(1) != Some(&[0][..]) {
        return Err(corrupt("not a document chunk"));
    }
    let len = input.uleb().ok_or_else(|| corrupt("no chunk length"))?;
    let mut chunk = Reader(input.take_n(len).ok_or_else(|| corrupt("a chunk cut short"))?);
    if !input.0.is_empty() {
        return Err(corrupt("more than one chunk"));
    }
    let malformed = || corrupt("malformed columns");
    let actors = chunk.uleb().ok_or_else(malformed)?;
    for _ in 0..actors {
        let n = chunk.uleb().ok_or_else(malformed)?;
        chunk.take_n(n).ok_or_else(malformed)?;
    }
    let heads = chunk.uleb().ok_or_else(malformed)?;
    for _ in 0..heads {
        chunk.take(32).ok_or_else(malformed)?;
    }
    let change_specs = column_specs(&mut chunk).ok_or_else(malformed)?;
    let op_specs = column_specs(&mut chunk).ok_or_else(malformed)?;
    let mut budget = MAX_UNPACKED;
    for specs in [change_specs, op_specs] {
        let mut rows = 0;
        for (spec, len) in specs {
            let data = chunk.take_n(len).ok_or_else(malformed)?;
            let unpacked;
            let data = if spec & DEFLATE != 0 {
                unpacked = inflate(data, &mut budget)?;
                &unpacked[..]
            } else {
                data
            };
            rows = rows.max(column_rows(spec, data).ok_or_else(malformed)?);
            if rows > u128::from(MAX_OPS) {
                return Err(ListError::History);
            }
        }
    }
    Ok(())
}

/// The first bytes of every automerge chunk.
const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// The bit of a column spec that marks a DEFLATE-compressed column.
const DEFLATE: u64 = 0b1000;
/// More columns than any automerge document has (it has 16 kinds of operation column).
const MAX_COLUMNS: u64 = 64;

/// A list of column specs and lengths.
fn column_specs(input: &mut Reader<'_>) -> Option<Vec<(u64, u64)>> {
    let n = input.uleb()?;
    if n > MAX_COLUMNS as u128 {
        return None;
    }
    (0..n)
        .map(|_| Some((u64::try_from(input.uleb()?).ok()?, u64::try_from(input.uleb()?).ok()?)))
        .collect()
}

/// The column unpacked, from what is left of `budget`.
fn inflate(data: &[u8], budget: &mut usize) -> Result<Vec<u8>, ListError> {
    use std::io::Read;
    let mut out = Vec::new();
    let limit = u64::try_from(*budget).unwrap_or(u64::MAX).saturating_add(1);
    flate2::bufread::DeflateDecoder::new(data)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|_| ListError::Corrupt("a compressed column does not unpack".into()))?;
    *budget = budget.checked_sub(out.len()).ok_or(ListError::History)?;
    Ok(out)
}

/// How many rows (values) a column holds, by its type (the spec's low three bits); `None` if
/// it is malformed. Counts may be far over [`MAX_OPS`] (the caller refuses them) but each
/// step reads at least one byte.
fn column_rows(spec: u64, data: &[u8]) -> Option<u128> {
    let mut input = Reader(data);
    let mut rows: u128 = 0;
    match spec & 0b111 {
        // Boolean: alternating run lengths of false and true.
        4 => {
            while !input.0.is_empty() {
                rows = rows.saturating_add(input.uleb()?);
            }
        }
        // Raw values, whose lengths are in the metadata column beside it.
        7 => {}
        // Run-length encoded: strings (5), or numbers (all other types).
        kind => {
            let value = |input: &mut Reader<'_>| -> Option<()> {
                let n = input.uleb()?;
                if kind == 5 {
                    input.take_n(n)?;
                }
                Some(())
            };
            while !input.0.is_empty() {
                let count = input.sleb()?;
                if count > 0 {
                    value(&mut input)?;
                    rows = rows.saturating_add(count.unsigned_abs());
                } else if count < 0 {
                    rows = rows.saturating_add(count.unsigned_abs());
                    if rows > u128::from(MAX_OPS) {
                        return Some(rows);
                    }
                    for _ in 0..count.unsigned_abs() {
                        value(&mut input)?;
                    }
                } else {
                    rows = rows.saturating_add(input.uleb()?);
                }
                if rows > u128::from(MAX_OPS) {
                    return Some(rows);
                }
            }
        }
    }
    Some(rows)
}

/// A cursor over untrusted bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn take_n(&mut self, n: impl TryInto<usize>) -> Option<&'a [u8]> {
        self.take(n.try_into().ok()?)
    }

    /// An unsigned LEB128 number of at most 10 bytes (70 bits, hence `u128`).
    fn uleb(&mut self) -> Option<u128> {
        let mut out: u128 = 0;
        for i in 0..10 {
            let b = *self.take(1)?.first()?;
            out |= u128::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(out);
            }
        }
        None
    }

    /// A signed LEB128 number of at most 10 bytes.
    fn sleb(&mut self) -> Option<i128> {
        let mut out: i128 = 0;
        for i in 0..10 {
            let b = *self.take(1)?.first()?;
            out |= i128::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if b & 0x40 != 0 {
                    out |= -1i128 << (7 * (i + 1));
                }
                return Some(out);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    const A: &[u8] = &[0xa; 32];
    const B: &[u8] = &[0xb; 32];
    const C: &[u8] = &[0xc; 32];
    const ANN: User = [1; 16];
    const BOB: User = [2; 16];

    fn add(id: &str, text: &str) -> Op {
        Op::Add { id: id.into(), text: text.into(), assignee: None }
    }

    fn rename(id: &str, text: &str) -> Op {
        Op::Rename { id: id.into(), text: text.into() }
    }

    fn done(id: &str, done: bool) -> Op {
        Op::Done { id: id.into(), done }
    }

    fn remove(id: &str) -> Op {
        Op::Remove { id: id.into() }
    }

    fn texts(list: &SharedList) -> Vec<String> {
        list.state().items.into_iter().map(|i| i.text).collect()
    }

    fn groceries() -> SharedList {
        SharedList::new(A, "Groceries", ListKind::Shopping, 1).unwrap()
    }

    /// What a list holds that a failed call must leave alone.
    fn snapshot(list: &mut SharedList) -> (ListState, Vec<automerge::ChangeHash>, Vec<u8>) {
        (list.state(), list.doc.get_heads(), list.save())
    }

    #[test]
    fn edits_show_in_the_state() {
        let mut list = groceries();
        list.apply(&add("m", "milk"), 10).unwrap();
        list.apply(&Op::Add { id: "b".into(), text: "bread".into(), assignee: Some(ANN) }, 20)
            .unwrap();
        list.apply(&add("e", "eggs"), 30).unwrap();
        list.apply(&rename("m", "oat milk"), 40).unwrap();
        list.apply(&done("b", true), 50).unwrap();
        list.apply(&Op::Assign { id: "e".into(), assignee: Some(BOB) }, 60).unwrap();
        list.apply(&Op::Assign { id: "b".into(), assignee: None }, 70).unwrap();
        list.apply(&remove("e"), 80).unwrap();
        let want = ListState {
            title: "Groceries".into(),
            kind: ListKind::Shopping,
            items: vec![
                Item {
                    id: "m".into(),
                    text: "oat milk".into(),
                    done: false,
                    assignee: None,
                    added_at: 10,
                    removed: false,
                },
                Item {
                    id: "b".into(),
                    text: "bread".into(),
                    done: true,
                    assignee: None,
                    added_at: 20,
                    removed: false,
                },
            ],
        };
        assert_eq!(list.state(), want);
        assert!(list.contains("e") && !list.contains("x"));
        // What another device loads is the same list, and what the view kept is what the
        // document holds.
        let bytes = list.save();
        assert_eq!(SharedList::load(&bytes, B).unwrap().state(), want);
        assert_eq!(read(&list.doc).unwrap().items, list.view.items);
    }

    #[test]
    fn items_are_in_the_order_they_were_added_then_by_id() {
        let mut list = SharedList::new(A, "Chores", ListKind::Todo, 1).unwrap();
        list.apply(&add("z", "later"), 300).unwrap();
        list.apply(&add("y", "first"), 100).unwrap();
        list.apply(&add("x", "tie b"), 200).unwrap();
        list.apply(&add("w", "tie a"), 200).unwrap();
        assert_eq!(texts(&list), ["first", "tie a", "tie b", "later"]);
        assert_eq!(list.state().kind, ListKind::Todo);
    }

    #[test]
    fn kinds_read_and_write_as_words() {
        for kind in [ListKind::Shopping, ListKind::Todo] {
            assert_eq!(kind.to_string().parse::<ListKind>(), Ok(kind));
        }
        assert_eq!("todo".parse(), Ok(ListKind::Todo));
        assert_eq!("Todo".parse::<ListKind>(), Err(ListError::Kind("Todo".into())));
    }

    #[test]
    fn item_ids_are_eight_hex_digits_and_spread() {
        let ids: BTreeSet<String> = (0..1000).map(item_id).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 8);
            assert!(id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            assert!(id_ok(id));
        }
        assert_eq!(item_id(7), item_id(7));
    }

    #[test]
    fn bad_edits_are_refused_and_change_nothing() {
        let mut list = groceries();
        list.apply(&add("m", "milk"), 10).unwrap();
        list.apply(&add("gone", "tea"), 11).unwrap();
        list.apply(&remove("gone"), 12).unwrap();
        let before = snapshot(&mut list);
        let long = "x".repeat(MAX_ITEM_TEXT + 1);
        let cases = [
            (add("n", ""), ListError::Text),
            (add("n", " \n\t"), ListError::Text),
            (add("n", &long), ListError::Text),
            (add("", "x"), ListError::ItemId("".into())),
            (add("a b", "x"), ListError::ItemId("a b".into())),
            (add("é", "x"), ListError::ItemId("é".into())),
            (add(&"i".repeat(65), "x"), ListError::ItemId("i".repeat(65))),
            (add("m", "more milk"), ListError::IdInUse("m".into())),
            (add("gone", "tea again"), ListError::IdInUse("gone".into())),
            (rename("m", ""), ListError::Text),
            (rename("m", &long), ListError::Text),
            (rename("nope", "x"), ListError::UnknownItem("nope".into())),
            (done("nope", true), ListError::UnknownItem("nope".into())),
            (
                Op::Assign { id: "nope".into(), assignee: Some(ANN) },
                ListError::UnknownItem("nope".into()),
            ),
            (remove("nope"), ListError::UnknownItem("nope".into())),
            (rename("gone", "x"), ListError::Removed("gone".into())),
            (done("gone", true), ListError::Removed("gone".into())),
            (Op::Assign { id: "gone".into(), assignee: None }, ListError::Removed("gone".into())),
            (remove("gone"), ListError::Removed("gone".into())),
        ];
        for (op, err) in cases {
            assert_eq!(list.apply(&op, 99), Err(err), "{op:?}");
            assert_eq!(snapshot(&mut list), before, "{op:?}");
        }
        // The longest text there may be is fine.
        list.apply(&rename("m", &"y".repeat(MAX_ITEM_TEXT)), 100).unwrap();
        list.apply(&add(&"i".repeat(MAX_ITEM_ID), "x"), 100).unwrap();
    }

    #[test]
    fn bad_lists_and_actors_are_refused() {
        assert_eq!(SharedList::new(&[], "x", ListKind::Todo, 0).err(), Some(ListError::Actor(0)));
        assert_eq!(
            SharedList::new(&[1; 65], "x", ListKind::Todo, 0).err(),
            Some(ListError::Actor(65))
        );
        assert_eq!(SharedList::new(A, " ", ListKind::Todo, 0).err(), Some(ListError::Text));
        let long = "t".repeat(MAX_ITEM_TEXT + 1);
        assert_eq!(SharedList::new(A, &long, ListKind::Todo, 0).err(), Some(ListError::Text));
        let bytes = groceries().save();
        assert_eq!(SharedList::load(&bytes, &[]).err(), Some(ListError::Actor(0)));
    }

    #[test]
    fn a_list_is_full_at_max_items_removed_ones_included() {
        let mut list = groceries();
        for i in 0..MAX_ITEMS {
            list.apply(&add(&i.to_string(), "x"), i as u64).unwrap();
        }
        list.apply(&remove("0"), 1000).unwrap();
        let before = snapshot(&mut list);
        assert_eq!(list.apply(&add("new", "x"), 1001), Err(ListError::TooManyItems));
        assert_eq!(snapshot(&mut list), before);
        // A full list still loads and takes other edits.
        let mut other = SharedList::load(&list.save(), B).unwrap();
        other.apply(&rename("1", "y"), 1002).unwrap();
        list.merge_bytes(&other.save()).unwrap();
        assert_eq!(list.state().items.len(), MAX_ITEMS - 1);
    }

    /// Text that does not compress: 256 bytes from a counter.
    fn noise(seed: u64) -> String {
        (0..MAX_ITEM_TEXT as u64 / 8).map(|i| item_id(seed * 1000 + i)).collect()
    }

    #[test]
    fn a_document_grows_to_max_doc_and_no_further() {
        let mut list = groceries();
        let mut n = 0;
        let err = loop {
            match list.apply(&add(&n.to_string(), &noise(n)), n) {
                Ok(()) => n += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, ListError::TooBig(size) if size > MAX_DOC), "{err:?}");
        let before = snapshot(&mut list);
        assert!(before.2.len() <= MAX_DOC);
        let err = list.apply(&add("last", &noise(n)), n);
        assert!(matches!(err, Err(ListError::TooBig(size)) if size > MAX_DOC), "{err:?}");
        assert_eq!(snapshot(&mut list), before);
        // Bytes over the limit are refused before they are parsed, by load and merge alike.
        let over = vec![0; MAX_DOC + 1];
        assert_eq!(SharedList::load(&over, B).err(), Some(ListError::TooBig(MAX_DOC + 1)));
        assert_eq!(list.merge_bytes(&over), Err(ListError::TooBig(MAX_DOC + 1)));
        // And so is a valid automerge document over the limit.
        let mut big = AutoCommit::new();
        big.put(ROOT, "title", "Groceries").unwrap();
        big.put(ROOT, "blob", (0..400).map(noise).collect::<String>()).unwrap();
        let big = big.save();
        assert!(big.len() > MAX_DOC);
        assert_eq!(SharedList::load(&big, B).err(), Some(ListError::TooBig(big.len())));
    }

    #[test]
    fn a_merge_past_the_limits_is_refused() {
        let mut a = groceries();
        let mut b = SharedList::load(&a.save(), B).unwrap();
        for i in 0..MAX_ITEMS / 2 {
            a.apply(&add(&format!("a{i}"), "x"), i as u64).unwrap();
        }
        for i in 0..=MAX_ITEMS / 2 {
            b.apply(&add(&format!("b{i}"), "x"), i as u64).unwrap();
        }
        let before = snapshot(&mut a);
        assert_eq!(a.merge_bytes(&b.save()), Err(ListError::TooManyItems));
        assert_eq!(snapshot(&mut a), before);
        // Two halves of the largest document merge into one over it.
        let mut a = groceries();
        let mut b = SharedList::load(&a.save(), B).unwrap();
        for (list, name, seed) in [(&mut a, "a", 0), (&mut b, "b", 100_000)] {
            let mut i = 0;
            while list.save().len() < MAX_DOC / 2 + 1024 {
                list.apply(&add(&format!("{name}{i}"), &noise(seed + i)), i).unwrap();
                i += 1;
            }
        }
        let before = snapshot(&mut a);
        assert!(matches!(a.merge_bytes(&b.save()), Err(ListError::TooBig(_))));
        assert_eq!(snapshot(&mut a), before);
    }

    #[test]
    fn garbage_is_refused() {
        let mut list = groceries();
        list.apply(&add("m", "milk"), 10).unwrap();
        let good = list.save();
        let before = snapshot(&mut list);
        let mut flipped = good.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x55;
        let mut two = good.clone();
        two.extend_from_slice(&good);
        let garbage: [&[u8]; 7] = [
            b"",
            b"hello, world",
            &[0x85, 0x6f, 0x4a, 0x83],
            &good[..good.len() - 3],
            &good[..20],
            &flipped,
            &two,
        ];
        for bytes in garbage {
            let err = SharedList::load(bytes, B).err();
            assert!(matches!(err, Some(ListError::Corrupt(_))), "{bytes:?}: {err:?}");
            assert!(matches!(list.merge_bytes(bytes), Err(ListError::Corrupt(_))));
            assert_eq!(snapshot(&mut list), before);
        }
    }

    /// A saved automerge document that `edit` made from an empty one.
    fn raw(edit: impl FnOnce(&mut AutoCommit) -> Result<(), automerge::AutomergeError>) -> Vec<u8> {
        let mut doc = AutoCommit::new();
        edit(&mut doc).unwrap();
        doc.save()
    }

    /// A saved copy of `list` that `edit` changed behind the module's back.
    fn tampered(
        list: &mut SharedList,
        edit: impl FnOnce(&mut AutoCommit, &ObjId) -> Result<(), automerge::AutomergeError>,
    ) -> Vec<u8> {
        let mut doc = AutoCommit::load(&list.save()).unwrap();
        let (_, item) = doc.get(&list.view.items_obj, "m").unwrap().unwrap();
        edit(&mut doc, &item).unwrap();
        doc.save()
    }

    #[test]
    fn documents_of_the_wrong_shape_are_refused() {
        let root = |doc: &mut AutoCommit, title: ScalarValue, kind: &str| {
            doc.put(ROOT, "title", title)?;
            doc.put(ROOT, "kind", kind)
        };
        let item = |doc: &mut AutoCommit, fields: &[(&str, ScalarValue)]| {
            root(doc, "List".into(), "todo")?;
            let items = doc.put_object(ROOT, "items", ObjType::Map)?;
            let item = doc.put_object(&items, "i", ObjType::Map)?;
            for (key, value) in fields {
                doc.put(&item, *key, value.clone())?;
            }
            Ok(())
        };
        let ok_fields = || {
            vec![
                ("text", ScalarValue::from("milk")),
                ("done", false.into()),
                ("added_at", 5u64.into()),
                ("removed", false.into()),
            ]
        };
        let with = |key: &'static str, value: Option<ScalarValue>| {
            let mut fields = ok_fields();
            fields.retain(|(k, _)| *k != key);
            fields.extend(value.map(|v| (key, v)));
            raw(|d| item(d, &fields))
        };
        // The right shape loads (with no assignee field at all, and an Int time as JS writes).
        assert!(SharedList::load(&raw(|d| item(d, &ok_fields())), B).is_ok());
        assert!(SharedList::load(&with("added_at", Some(ScalarValue::Int(5))), B).is_ok());
        assert!(SharedList::load(&with("assignee", Some(ScalarValue::Null)), B).is_ok());
        assert!(SharedList::load(&with("assignee", Some(ANN.to_vec().into())), B).is_ok());
        let wrong = [
            raw(|_| Ok(())),
            raw(|d| d.put(ROOT, "title", "List")),
            raw(|d| root(d, 5u64.into(), "todo")),
            raw(|d| root(d, " ".into(), "todo")),
            raw(|d| root(d, "List".into(), "groceries")),
            raw(|d| {
                root(d, "List".into(), "todo")?;
                d.put_object(ROOT, "items", ObjType::List).map(drop)
            }),
            raw(|d| {
                root(d, "List".into(), "todo")?;
                d.put(ROOT, "items", "none")
            }),
            raw(|d| {
                root(d, "List".into(), "todo")?;
                let items = d.put_object(ROOT, "items", ObjType::Map)?;
                d.put(&items, "i", "milk")
            }),
            raw(|d| {
                root(d, "List".into(), "todo")?;
                let items = d.put_object(ROOT, "items", ObjType::Map)?;
                d.put_object(&items, "a b", ObjType::Map).map(drop)
            }),
            with("text", None),
            with("text", Some(5u64.into())),
            with("text", Some("".into())),
            with("text", Some("x".repeat(MAX_ITEM_TEXT + 1).as_str().into())),
            with("done", None),
            with("done", Some("yes".into())),
            with("removed", None),
            with("removed", Some(ScalarValue::Uint(0))),
            with("added_at", None),
            with("added_at", Some(ScalarValue::Int(-1))),
            with("added_at", Some(ScalarValue::F64(1.5))),
            with("assignee", Some(vec![1, 2, 3].into())),
            with("assignee", Some("ann".into())),
            raw(|d| {
                item(d, &ok_fields())?;
                let (_, items) = d.get(ROOT, "items")?.ok_or(automerge::AutomergeError::Fail)?;
                let (_, item) = d.get(&items, "i")?.ok_or(automerge::AutomergeError::Fail)?;
                d.put_object(&item, "done", ObjType::Map).map(drop)
            }),
        ];
        let mut list = groceries();
        let before = snapshot(&mut list);
        for (n, bytes) in wrong.iter().enumerate() {
            let err = SharedList::load(bytes, B).err();
            assert!(matches!(err, Some(ListError::Shape(_))), "case {n}: {err:?}");
            assert!(matches!(list.merge_bytes(bytes), Err(ListError::Shape(_))), "case {n}");
            assert_eq!(snapshot(&mut list), before, "case {n}");
        }
        let too_many = raw(|d| {
            root(d, "List".into(), "todo")?;
            let items = d.put_object(ROOT, "items", ObjType::Map)?;
            for i in 0..=MAX_ITEMS {
                let item = d.put_object(&items, i.to_string().as_str(), ObjType::Map)?;
                for (key, value) in ok_fields() {
                    d.put(&item, key, value)?;
                }
            }
            Ok(())
        });
        assert_eq!(SharedList::load(&too_many, B).err(), Some(ListError::TooManyItems));
    }

    #[test]
    fn tampered_copies_of_the_same_list_are_refused() {
        let mut list = groceries();
        list.apply(&add("m", "milk"), 10).unwrap();
        let before = snapshot(&mut list);
        let bad = [
            tampered(&mut list, |d, item| d.put(item, "text", 5u64)),
            tampered(&mut list, |d, item| d.put(item, "assignee", vec![0u8; 17])),
            tampered(&mut list, |d, _| d.delete(ROOT, "items")),
            tampered(&mut list, |d, _| d.put(ROOT, "kind", "party")),
        ];
        for (n, bytes) in bad.iter().enumerate() {
            assert!(matches!(list.merge_bytes(bytes), Err(ListError::Shape(_))), "case {n}");
            assert_eq!(snapshot(&mut list), before, "case {n}");
        }
        // A new title loads as a list of its own, but is no edit a merge takes.
        let retitled = tampered(&mut list, |d, _| d.put(ROOT, "title", "Party"));
        assert_eq!(SharedList::load(&retitled, B).unwrap().state().title, "Party");
        assert_eq!(
            list.merge_bytes(&retitled),
            Err(ListError::Shape("the title or kind changed".into()))
        );
        // So is a new items map, which makes it another list.
        let emptied =
            tampered(&mut list, |d, _| d.put_object(ROOT, "items", ObjType::Map).map(drop));
        assert_eq!(list.merge_bytes(&emptied), Err(ListError::OtherList));
        assert_eq!(snapshot(&mut list), before);
    }

    #[test]
    fn lists_made_apart_do_not_merge() {
        let mut a = groceries();
        let mut b = SharedList::new(B, "Groceries", ListKind::Shopping, 1).unwrap();
        b.apply(&add("m", "milk"), 10).unwrap();
        let before = snapshot(&mut a);
        assert_eq!(a.merge_bytes(&b.save()), Err(ListError::OtherList));
        assert_eq!(snapshot(&mut a), before);
    }

    #[test]
    fn concurrent_edits_merge_the_same_on_both_devices() {
        let mut a = groceries();
        a.apply(&add("m", "milk"), 10).unwrap();
        a.apply(&add("t", "tea"), 11).unwrap();
        let mut b = SharedList::load(&a.save(), B).unwrap();
        // Apart: both add, one removes what the other renames, both tick the same item.
        a.apply(&add("a1", "apples"), 20).unwrap();
        b.apply(&add("b1", "bananas"), 21).unwrap();
        a.apply(&remove("m"), 22).unwrap();
        b.apply(&rename("m", "oat milk"), 23).unwrap();
        b.apply(&done("m", true), 24).unwrap();
        a.apply(&done("t", true), 25).unwrap();
        b.apply(&done("t", false), 26).unwrap();
        a.apply(&rename("t", "green tea"), 27).unwrap();
        b.apply(&rename("t", "black tea"), 28).unwrap();
        let (bytes_a, bytes_b) = (a.save(), b.save());
        a.merge_bytes(&bytes_b).unwrap();
        b.merge_bytes(&bytes_a).unwrap();
        assert_eq!(a.state(), b.state());
        let ids: Vec<String> = a.state().items.into_iter().map(|i| i.id).collect();
        assert_eq!(ids, ["t", "a1", "b1"], "the removed item stays removed");
        let tea = &a.state().items[0];
        assert!(["green tea", "black tea"].contains(&tea.text.as_str()));
        // Merging again, or a third device merging in the other order, changes nothing.
        let state = a.state();
        a.merge_bytes(&bytes_a).unwrap();
        a.merge_bytes(&bytes_b).unwrap();
        assert_eq!(a.state(), state);
        let mut c = SharedList::load(&bytes_b, C).unwrap();
        c.merge_bytes(&bytes_a).unwrap();
        assert_eq!(c.state(), state);
        // And edits go on from the merged list.
        b.apply(&rename("a1", "red apples"), 30).unwrap();
        a.merge_bytes(&b.save()).unwrap();
        assert_eq!(a.state().items[1].text, "red apples");
    }

    #[test]
    fn changes_carry_their_device_and_no_clock() {
        let mut a = groceries();
        a.apply(&add("m", "milk"), 1_700_000_000_000).unwrap();
        let mut b = SharedList::load(&a.save(), B).unwrap();
        b.apply(&done("m", true), 1_700_000_000_001).unwrap();
        let changes = b.doc.get_changes(&[]);
        assert_eq!(changes.len(), 3);
        for change in &changes {
            assert_eq!(change.timestamp(), 0);
        }
        let actors: Vec<Vec<u8>> =
            changes.iter().map(|c| c.actor_id().to_bytes().to_vec()).collect();
        assert_eq!(actors, [A.to_vec(), A.to_vec(), B.to_vec()]);
        // The same edits make the same bytes.
        let mut again = groceries();
        again.apply(&add("m", "milk"), 1_700_000_000_000).unwrap();
        assert_eq!(again.save(), a.save());
    }

    #[test]
    fn a_device_that_edits_an_old_copy_is_refused_by_peers() {
        let mut a = groceries();
        let old = a.save();
        a.apply(&add("m", "milk"), 10).unwrap();
        // The device lost its newest copy, and edits the old one under the same actor.
        let mut again = SharedList::load(&old, A).unwrap();
        again.apply(&add("t", "tea"), 11).unwrap();
        let mut peer = SharedList::load(&a.save(), B).unwrap();
        let before = snapshot(&mut peer);
        assert!(matches!(peer.merge_bytes(&again.save()), Err(ListError::Merge(_))));
        assert_eq!(snapshot(&mut peer), before);
    }

    #[test]
    fn documents_that_unpack_to_too_much_are_refused_before_loading() {
        // Millions of operations in a few kilobytes: run lengths make them cheap to send.
        let ops = raw(|d| {
            let list = d.put_object(ROOT, "l", ObjType::List)?;
            d.splice(&list, 0, 0, std::iter::repeat_n(1u64, MAX_OPS as usize + 1))
        });
        assert!(ops.len() < 1024, "{}", ops.len());
        assert_eq!(SharedList::load(&ops, B).err(), Some(ListError::History));
        // Megabytes of DEFLATE in a few kilobytes.
        let packed = raw(|d| d.put(ROOT, "blob", vec![0u8; MAX_UNPACKED + 1]));
        assert!(packed.len() < MAX_DOC, "{}", packed.len());
        assert_eq!(SharedList::load(&packed, B).err(), Some(ListError::History));
        let mut list = groceries();
        assert_eq!(list.merge_bytes(&ops), Err(ListError::History));
        assert_eq!(list.merge_bytes(&packed), Err(ListError::History));
    }

    #[test]
    fn a_long_history_ends_at_max_ops() {
        // A list whose history is one operation short of the limit, made in one change rather
        // than in 50 000 edits (which take minutes in a debug build): a field that a later
        // version might add to an item.
        let mut list = groceries();
        list.apply(&add("m", "milk"), 1).unwrap();
        let stats = list.doc.stats().num_ops;
        let near = tampered(&mut list, |d, item| {
            let extra = d.put_object(item, "extra", ObjType::List)?;
            d.splice(&extra, 0, 0, std::iter::repeat_n(1u64, (MAX_OPS - 2 - stats) as usize))
        });
        let mut list = SharedList::load(&near, A).unwrap();
        assert_eq!(list.doc.stats().num_ops, MAX_OPS - 1);
        list.apply(&done("m", true), 2).unwrap();
        let before = snapshot(&mut list);
        assert_eq!(list.apply(&done("m", false), 3), Err(ListError::History));
        assert_eq!(snapshot(&mut list), before);
        let mut over = SharedList::load(&near, B).unwrap();
        over.doc.put(&list.view.items_obj, "x", 1u64).unwrap();
        over.doc.put(&list.view.items_obj, "y", 1u64).unwrap();
        assert_eq!(SharedList::load(&over.doc.save(), C).err(), Some(ListError::History));
    }

    #[test]
    fn precheck_counts_our_own_documents() {
        let mut list = groceries();
        for i in 0..30 {
            list.apply(&add(&i.to_string(), &noise(i)), i).unwrap();
        }
        precheck(&list.save()).unwrap();
        // Documents saved without compression load too, resealed or not.
        let mut plain = AutoCommit::load(&list.save()).unwrap().save_nocompress();
        assert_eq!(SharedList::load(&plain, B).unwrap().state(), list.state());
        reseal(&mut plain);
        assert_eq!(SharedList::load(&plain, B).unwrap().state(), list.state());
        assert_eq!(Reader(&[0x7f]).sleb(), Some(-1));
        assert_eq!(Reader(&[0x80, 0x01]).uleb(), Some(128));
        assert_eq!(Reader(&[0x80; 11]).uleb(), None);
        assert_eq!(column_rows(2, &[0x03, 0x05, 0x7e, 0x01, 0x02, 0x00, 0x04]), Some(9));
        assert_eq!(column_rows(4, &[0x02, 0x03]), Some(5));
        assert_eq!(column_rows(5, &[0x02, 0x01, b'x']), Some(2));
        assert_eq!(column_rows(2, &[0x7e, 0x01]), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever bytes a peer sends, loading and merging them returns, never panics; what
        /// loads is a list. The bytes are changed inside a document chunk whose checksum is
        /// then made right again, as an attacker would, so that they reach automerge's
        /// parser.
        #[test]
        fn mangled_documents_never_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut list = groceries();
            list.apply(&add("m", "milk"), 10).unwrap();
            list.apply(&Op::Add { id: "t".into(), text: "tea".into(), assignee: Some(ANN) }, 11)
                .unwrap();
            list.apply(&done("m", true), 12).unwrap();
            let mut peer = SharedList::load(&list.save(), B).unwrap();
            peer.apply(&remove("t"), 13).unwrap();
            list.merge_bytes(&peer.save()).unwrap();
            let mut bytes = AutoCommit::load(&list.save()).unwrap().save_nocompress();
            // Magic bytes, checksum, chunk type, then the chunk's length and its data.
            let mut header = Reader(&bytes[9..]);
            header.uleb();
            let data = bytes.len() - header.0.len();
            prop_assert!(data < bytes.len());
            for (at, x) in flips {
                let i = data + at.index(bytes.len() - data);
                bytes[i] ^= x;
            }
            reseal(&mut bytes);
            let before = snapshot(&mut list);
            for bytes in [&bytes[..], &bytes[..cut.index(bytes.len())]] {
                if let Ok(other) = SharedList::load(bytes, C) {
                    prop_assert_eq!(other.state().title, "Groceries");
                }
                if list.merge_bytes(bytes).is_err() {
                    prop_assert_eq!(&snapshot(&mut list), &before);
                }
            }
        }
    }

    /// Makes the checksum of a document chunk right for its (changed) contents: the first four
    /// bytes of the SHA-256 of its type, length and data.
    fn reseal(bytes: &mut [u8]) {
        use sha2::{Digest, Sha256};
        if bytes.len() > 9 {
            let sum = Sha256::digest(&bytes[8..]);
            bytes[4..8].copy_from_slice(&sum[..4]);
        }
    }

    /// One step of a random history: an edit on one replica, or a merge between two.
    #[derive(Clone, Debug)]
    enum Step {
        Add { on: usize, text: u8, assignee: Option<u8> },
        Rename { on: usize, pick: usize, text: u8 },
        Done { on: usize, pick: usize, done: bool },
        Assign { on: usize, pick: usize, assignee: Option<u8> },
        Remove { on: usize, pick: usize },
        Merge { into: usize, from: usize },
    }

    fn step() -> impl Strategy<Value = Step> {
        let on = || 0usize..3;
        let pick = || 0usize..64;
        let user = || proptest::option::of(1u8..4);
        prop_oneof![
            3 => (on(), 0u8..6, user()).prop_map(|(on, text, assignee)| Step::Add { on, text, assignee }),
            2 => (on(), pick(), 0u8..6).prop_map(|(on, pick, text)| Step::Rename { on, pick, text }),
            2 => (on(), pick(), any::<bool>()).prop_map(|(on, pick, done)| Step::Done { on, pick, done }),
            1 => (on(), pick(), user()).prop_map(|(on, pick, assignee)| Step::Assign { on, pick, assignee }),
            1 => (on(), pick()).prop_map(|(on, pick)| Step::Remove { on, pick }),
            2 => (on(), on()).prop_map(|(into, from)| Step::Merge { into, from }),
        ]
    }

    /// Every value some replica wrote, per item.
    #[derive(Default)]
    struct Written {
        added: BTreeMap<String, u64>,
        removed: BTreeSet<String>,
        texts: BTreeMap<String, BTreeSet<String>>,
        done: BTreeMap<String, BTreeSet<bool>>,
        assignees: BTreeMap<String, BTreeSet<Option<User>>>,
    }

    fn permutations(n: usize) -> Vec<Vec<usize>> {
        if n == 0 {
            return vec![vec![]];
        }
        let mut out = Vec::new();
        for p in permutations(n - 1) {
            for at in 0..=p.len() {
                let mut q = p.clone();
                q.insert(at, n - 1);
                out.push(q);
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Any order of the same edits gives the same list: replicas edit apart and merge
        /// now and then; in the end every order of merging their documents, with repeats,
        /// gives one state, with every item added and not removed, and each field a value
        /// that some replica wrote.
        #[test]
        fn any_order_of_the_same_edits_gives_the_same_list(
            n in 2usize..=3,
            steps in proptest::collection::vec(step(), 1..40),
        ) {
            let mut first = SharedList::new(&[0], "Groceries", ListKind::Shopping, 0).unwrap();
            let start = first.save();
            let mut replicas = vec![first];
            for r in 1..n {
                replicas.push(SharedList::load(&start, &[r as u8]).unwrap());
            }
            let mut w = Written::default();
            for (t, step) in steps.into_iter().enumerate() {
                let now = 100 + t as u64;
                // An item that replica `on` sees, not removed.
                let pick = |list: &SharedList, pick: usize| {
                    let items = list.state().items;
                    (!items.is_empty()).then(|| items[pick % items.len()].id.clone())
                };
                let user = |u: Option<u8>| u.map(|u| [u; 16]);
                match step {
                    Step::Add { on, text, assignee } => {
                        let on = on % n;
                        let id = format!("r{on}i{t}");
                        let text = format!("thing {text}");
                        let op = Op::Add { id: id.clone(), text: text.clone(), assignee: user(assignee) };
                        replicas[on].apply(&op, now).unwrap();
                        w.added.insert(id.clone(), now);
                        w.texts.entry(id.clone()).or_default().insert(text);
                        w.done.entry(id.clone()).or_default().insert(false);
                        w.assignees.entry(id).or_default().insert(user(assignee));
                    }
                    Step::Rename { on, pick: p, text } => {
                        let on = on % n;
                        if let Some(id) = pick(&replicas[on], p) {
                            let text = format!("renamed {text}");
                            replicas[on].apply(&Op::Rename { id: id.clone(), text: text.clone() }, now).unwrap();
                            w.texts.entry(id).or_default().insert(text);
                        }
                    }
                    Step::Done { on, pick: p, done } => {
                        let on = on % n;
                        if let Some(id) = pick(&replicas[on], p) {
                            replicas[on].apply(&Op::Done { id: id.clone(), done }, now).unwrap();
                            w.done.entry(id).or_default().insert(done);
                        }
                    }
                    Step::Assign { on, pick: p, assignee } => {
                        let on = on % n;
                        if let Some(id) = pick(&replicas[on], p) {
                            let op = Op::Assign { id: id.clone(), assignee: user(assignee) };
                            replicas[on].apply(&op, now).unwrap();
                            w.assignees.entry(id).or_default().insert(user(assignee));
                        }
                    }
                    Step::Remove { on, pick: p } => {
                        let on = on % n;
                        if let Some(id) = pick(&replicas[on], p) {
                            replicas[on].apply(&Op::Remove { id: id.clone() }, now).unwrap();
                            w.removed.insert(id);
                        }
                    }
                    Step::Merge { into, from } => {
                        let bytes = replicas[from % n].save();
                        replicas[into % n].merge_bytes(&bytes).unwrap();
                    }
                }
            }
            let saved: Vec<Vec<u8>> = replicas.iter_mut().map(SharedList::save).collect();
            let mut states = Vec::new();
            for order in permutations(n) {
                let mut list = SharedList::load(&saved[order[0]], &[9]).unwrap();
                for &r in &order[1..] {
                    list.merge_bytes(&saved[r]).unwrap();
                }
                // Repeats change nothing.
                list.merge_bytes(&saved[order[0]]).unwrap();
                list.merge_bytes(&saved[order[n - 1]]).unwrap();
                prop_assert_eq!(read(&list.doc).unwrap().items, list.view.items.clone());
                states.push(list.state());
            }
            // So does merging into the replicas themselves.
            for replica in &mut replicas {
                for bytes in &saved {
                    replica.merge_bytes(bytes).unwrap();
                }
                states.push(replica.state());
            }
            let state = &states[0];
            for other in &states[1..] {
                prop_assert_eq!(other, state);
            }
            prop_assert_eq!(&state.title, "Groceries");
            let ids: BTreeSet<&String> = state.items.iter().map(|i| &i.id).collect();
            let want: BTreeSet<&String> =
                w.added.keys().filter(|id| !w.removed.contains(*id)).collect();
            prop_assert_eq!(ids, want);
            for item in &state.items {
                prop_assert_eq!(item.added_at, w.added[&item.id]);
                prop_assert!(w.texts[&item.id].contains(&item.text), "{:?}", item);
                prop_assert!(w.done[&item.id].contains(&item.done), "{:?}", item);
                prop_assert!(w.assignees[&item.id].contains(&item.assignee), "{:?}", item);
                prop_assert!(!item.removed);
            }
            let mut sorted = state.items.clone();
            sorted.sort_by_key(|i| (i.added_at, i.id.clone()));
            prop_assert_eq!(&sorted, &state.items);
        }
    }
}
