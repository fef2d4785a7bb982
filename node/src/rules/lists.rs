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
//! - A document comes from a peer and may be garbage or malicious: [`SharedList::load`] and
//!   [`SharedList::merge_bytes`] check its size before parsing it, then its whole shape
//!   (types, lengths, item count), and keep nothing of a document that fails. Each edit and
//!   each merge is made on a copy that replaces the list only once it passes the same checks,
//!   so a failed one leaves the list as it was.
//! - The limits are checked on each replica: two devices that each stay within them can make
//!   edits whose merge does not ([`MAX_ITEMS`], [`MAX_DOC`]); such a merge is refused, and
//!   the two copies stay apart until one is replaced.
//! - Each device edits under its own automerge actor id (the `actor` bytes, e.g. its device
//!   key). A device must keep editing its newest copy: editing an older saved copy under the
//!   same actor makes changes that clash with the ones it already sent, and peers that have
//!   both refuse to merge them ([`ListError::Merge`]).
//! - Every change is committed with the timestamp 0: the document carries no wall clock beyond
//!   the `added_at` that the list shows, and the same edits give the same bytes.
//!
//! Nothing in the node uses it yet: the list messages that carry [`SharedList::save`]'s bytes
//! are still to come.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, AutoCommit, ObjId, ObjType, ReadDoc, ScalarValue, Value, ValueRef, ROOT};

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
        let mut list = open(bytes)?;
        list.doc.set_actor(actor);
        Ok(list)
    }

    /// Merges another saved document of the same list into this one; merging is commutative
    /// and idempotent. Refuses, leaving this list as it was, a document that fails
    /// [`load`](Self::load)'s checks, one of another list, or one whose merge would break
    /// [`MAX_ITEMS`] or [`MAX_DOC`] or change the title or kind.
    pub fn merge_bytes(&mut self, bytes: &[u8]) -> Result<(), ListError> {
        let mut other = open(bytes)?;
        if other.view.items_obj != self.view.items_obj {
            return Err(ListError::OtherList);
        }
        let mut doc = self.doc.clone();
        let new = doc.merge(&mut other.doc).map_err(|e| ListError::Merge(e.to_string()))?;
        if new.is_empty() {
            return Ok(());
        }
        self.replace(doc)
    }

    /// Applies one edit made on this device at `now_ms` (the time an added item records).
    /// Refuses, leaving the list as it was: an unknown or removed item (for all but
    /// [`Op::Add`]), an id already used or malformed ([`Op::Add`]), a blank or too long text,
    /// a list of [`MAX_ITEMS`] already, a document that would grow over [`MAX_DOC`].
    pub fn apply(&mut self, op: &Op, now_ms: u64) -> Result<(), ListError> {
        let mut doc = self.doc.clone();
        let edit = |e: automerge::AutomergeError| ListError::Edit(e.to_string());
        match op {
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
                    doc.put(&obj, "removed", false)
                })();
                added.map_err(edit)?;
            }
            Op::Rename { id, text } => {
                let obj = self.live(id)?;
                check_text(text)?;
                doc.put(obj, "text", text.as_str()).map_err(edit)?;
            }
            Op::Done { id, done } => {
                let obj = self.live(id)?;
                doc.put(obj, "done", *done).map_err(edit)?;
            }
            Op::Assign { id, assignee } => {
                let obj = self.live(id)?;
                doc.put(obj, "assignee", assignee_value(assignee)).map_err(edit)?;
            }
            Op::Remove { id } => {
                let obj = self.live(id)?;
                doc.put(obj, "removed", true).map_err(edit)?;
            }
        }
        commit(&mut doc);
        self.replace(doc)
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

    /// The map of an item that is there and not removed.
    fn live(&self, id: &str) -> Result<&ObjId, ListError> {
        match self.view.items.get(id) {
            None => Err(ListError::UnknownItem(id.to_owned())),
            Some((_, item)) if item.removed => Err(ListError::Removed(id.to_owned())),
            Some((obj, _)) => Ok(obj),
        }
    }

    /// Takes `doc` for this list's document if it is within the limits and still the same
    /// list, with the same title and kind.
    fn replace(&mut self, mut doc: AutoCommit) -> Result<(), ListError> {
        let size = doc.save().len();
        if size > MAX_DOC {
            return Err(ListError::TooBig(size));
        }
        let view = read(&doc)?;
        if view.items_obj != self.view.items_obj {
            return Err(ListError::OtherList);
        }
        if view.title != self.view.title || view.kind != self.view.kind {
            return Err(ListError::Shape("the title or kind changed".into()));
        }
        self.doc = doc;
        self.view = view;
        Ok(())
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
    let doc = AutoCommit::load(bytes).map_err(|e| ListError::Corrupt(e.to_string()))?;
    let view = read(&doc)?;
    Ok(SharedList { doc, view })
}

fn shape(what: impl Into<String>) -> ListError {
    ListError::Shape(what.into())
}

/// The winning value at `key` of `obj`, if any.
fn field<'a>(doc: &'a AutoCommit, obj: &ObjId, key: &str) -> Result<Option<Value<'a>>, ListError> {
    doc.get(obj, key).map(|v| v.map(|(value, _)| value)).map_err(|e| shape(e.to_string()))
}

fn scalar<'a>(
    doc: &'a AutoCommit,
    obj: &ObjId,
    key: &str,
) -> Result<Option<ScalarValue>, ListError> {
    match field(doc, obj, key)? {
        None => Ok(None),
        Some(Value::Scalar(s)) => Ok(Some(s.into_owned())),
        Some(Value::Object(_)) => Err(shape(format!("{key} is an object"))),
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

fn read_item(doc: &AutoCommit, obj: &ObjId, id: String) -> Result<Item, ListError> {
    let bad = |what: &str| shape(format!("item {id:?} has {what}"));
    let text = match scalar(doc, obj, "text")? {
        Some(ScalarValue::Str(t)) if text_ok(&t) => t.to_string(),
        _ => return Err(bad("no text, or a blank or too long one")),
    };
    let done = match scalar(doc, obj, "done")? {
        Some(ScalarValue::Boolean(b)) => b,
        _ => return Err(bad("no done flag")),
    };
    let removed = match scalar(doc, obj, "removed")? {
        Some(ScalarValue::Boolean(b)) => b,
        _ => return Err(bad("no removed flag")),
    };
    let added_at = match scalar(doc, obj, "added_at")? {
        Some(ScalarValue::Uint(t)) => t,
        Some(ScalarValue::Int(t)) if t >= 0 => t.unsigned_abs(),
        _ => return Err(bad("no time it was added")),
    };
    let assignee = match scalar(doc, obj, "assignee")? {
        None | Some(ScalarValue::Null) => None,
        Some(ScalarValue::Bytes(b)) => {
            Some(User::try_from(b.as_slice()).map_err(|_| bad("an assignee of the wrong size"))?)
        }
        Some(_) => return Err(bad("an assignee that is not a user")),
    };
    Ok(Item { id, text, done, assignee, added_at, removed })
}
