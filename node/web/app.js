// Kith's web app: plain ES module, no build step, talking to the node's own API with the
// session cookie (docs/web.md). Everything a peer sent is put in the page as text
// (textContent), never as markup.

import { initCalls, onCall, onSignal, startCall } from "/app/calls.js";
import { initListen, listenTogether, onListen } from "/app/listen.js";
import { initPlans, planBody, refreshPlans, showPlans } from "/app/plans.js";
import { initInteractive, interactiveBody } from "/app/interactive.js";

const $ = (id) => document.getElementById(id);
const HISTORY_STEP = 50;

const state = {
  me: null,            // GET /v1/status
  conversations: [],   // GET /v1/conversations, with `last` and `unread` added here
  current: null,       // the conversation shown: {id, title} or {to: "@name", title}
  limit: HISTORY_STEP, // how many of its last messages are shown
  contacts: [],
  replyTo: null,       // the message the composer answers: {id, from, text}
  editing: null,       // the message the composer edits: {id}
};

// The reactions offered by the React button.
const REACTIONS = ["\u{1F44D}", "\u2764\uFE0F", "\u{1F602}", "\u{1F62E}", "\u{1F622}", "\u{1F64F}"];

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.error ? body.error : `HTTP ${status}`);
    this.status = status;
    this.code = body && body.code;
  }
}

async function api(path, { method = "GET", body, headers = {} } = {}) {
  const init = { method, headers: { ...headers }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (res.status === 401) {
    showLogin();
    throw new ApiError(401, { error: "not logged in" });
  }
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

function showLogin() {
  $("app").hidden = true;
  $("login").hidden = false;
}

function showError(e) {
  $("error").textContent = e ? String(e.message || e) : "";
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function title(conv) {
  const others = conv.members.filter((m) => !state.me || m !== state.me.name);
  if (conv.kind === "group") return others.length ? `${others.join(", ")} (group)` : "group";
  return others[0] || conv.members[0] || conv.id.slice(0, 8);
}

function size(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB"];
  let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < units.length - 1);
  return `${n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

function time(at) {
  const d = new Date(at);
  return isNaN(d) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function summary(m) {
  if (!m) return "";
  if (m.kind === "text") return m.text || "";
  if (m.kind === "attachment" && m.attachment) return `File: ${m.attachment.name || "unnamed"}`;
  if (m.kind === "group.leave") return `${m.from} left`;
  if (m.kind === "group.remove") return `${m.from} removed a member`;
  if (m.kind === "call.log") return m.text || "Call";
  if (m.kind === "reply") return m.deleted ? "deleted" : m.text || "";
  if (m.kind === "location") return m.text || "Location";
  if (planBody(m) || m.kind === "interactive") return m.text || m.kind;
  return `[${m.kind}]`;
}

// The conversation list, newest first, with each one's last message and unread count (the
// node counts them among its last 100 messages).
async function loadConversations() {
  // Contacts change as conversations do (a first message resolves and pins a name).
  loadContacts().catch(() => {});
  state.conversations = await api("/v1/conversations");
  // A chat opened by name gets its id once it has a first message (a call's entry, say).
  const c = state.current;
  if (c && !c.id && c.to) {
    const found = state.conversations.find((k) => k.kind === "direct" && k.members.includes(c.to.slice(1)));
    if (found) state.current = { ...c, id: found.id };
  }
  renderConversations();
}

function renderConversations() {
  const list = $("conversations");
  list.replaceChildren(...state.conversations.map((c) => {
    const current = state.current && state.current.id === c.id;
    return el("li", {},
      el("button", {
        type: "button", "aria-current": current ? "true" : "false",
        onclick: () => openConversation({ id: c.id, title: title(c), kind: c.kind }),
      },
      el("span", { class: "conv-title" }, title(c), c.active ? "" : " (left)"),
      c.unread ? el("span", { class: c.muted ? "unread muted" : "unread", "aria-label": `${c.unread} unread${c.muted ? ", muted" : ""}` }, c.unread) : el("span"),
      el("span", { class: "conv-last" }, summary(c.last))));
  }));
}

async function openConversation(conv) {
  state.current = conv;
  state.limit = HISTORY_STEP;
  $("app").classList.add("in-chat");
  $("composer").hidden = false;
  renderConversations();
  await loadMessages();
  $("text").focus();
}

function target() {
  const c = state.current;
  return c.id ? "#" + c.id : c.to;
}

async function loadMessages({ keepScroll = false } = {}) {
  const c = state.current;
  if (!c) return;
  const head = $("chat-head");
  head.replaceChildren(el("span", {}, c.title),
    el("span", { class: "call-buttons" },
      el("button", { type: "button", class: "plain", onclick: () => call(false) }, "Call"),
      el("button", { type: "button", class: "plain", onclick: () => call(true) }, "Video call"),
      el("button", { type: "button", class: "plain", onclick: () => showPlans().catch(showError) }, "Plans")));
  if (c.kind === "group") {
    api(`/v1/conversations/${c.id}/members`).then((members) => {
      if (state.current !== c) return;
      head.append(el("small", {}, `${members.length} members`),
        el("button", { type: "button", class: "plain", onclick: () => showMembers(c).catch(showError) }, "Members"));
    }).catch(() => {});
  }
  let msgs = [];
  if (c.id) {
    msgs = await api(`/v1/messages?with=${encodeURIComponent("#" + c.id)}&limit=${state.limit}`);
  }
  const box = $("drop");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const before = box.scrollHeight - box.scrollTop;
  $("messages").replaceChildren(...msgs.map(renderMessage));
  $("older").hidden = msgs.length < state.limit;
  // A reader at the bottom follows new messages; one reading older ones stays where they are.
  if (!keepScroll || atBottom) box.scrollTop = box.scrollHeight;
  else box.scrollTop = box.scrollHeight - before;
  if (c.id && msgs.some((m) => m.direction === "in" && m.status === "received")) {
    api("/v1/read", { method: "POST", body: { with: "#" + c.id } }).then(loadConversations).catch(() => {});
  }
}

const STATUS_TEXT = {
  waiting: "waiting for the name", queued: "queued", sent: "sent", stored: "stored at a mailbox",
  delivered: "delivered", read: "read", cancelled: "cancelled", failed: "failed",
};

function renderMessage(m) {
  const out = m.direction === "out";
  const meta = el("div", { class: "meta" + (m.status === "failed" ? " failed" : "") },
    time(m.sent_at), out ? ` · ${STATUS_TEXT[m.status] || m.status}` : "");
  if (out && m.pending_reason && m.status !== "delivered" && m.status !== "read") {
    meta.title = m.pending_reason;
  }
  if (m.edited) meta.append(" · edited");
  const who = !out && state.current && state.current.kind === "group" ? el("div", { class: "who" }, m.from) : null;
  const quote = m.reply_to ? el("div", { class: "quote" }, el("strong", {}, m.reply_to.from), " ", m.reply_to.text || "a message") : null;
  let body;
  if (m.deleted) body = el("div", { class: "event" }, "This message was deleted.");
  else if (m.kind === "text" || m.kind === "reply") body = el("div", { class: "body" }, m.text || "");
  else if (m.kind === "location" && m.location) {
    const p = m.location;
    body = el("div", { class: "body" },
      el("div", {}, p.label || "A location"),
      el("div", { class: "meta" }, `${p.lat.toFixed(5)}, ${p.lon.toFixed(5)}${p.accuracy_m ? ` (within ${Math.round(p.accuracy_m)} m)` : ""}`),
      el("a", { href: p.map_url, target: "_blank", rel: "noopener noreferrer" }, "Open in a map"));
  }
  else if (m.kind === "attachment" && m.attachment) body = renderAttachment(m);
  else if (m.kind === "group.leave") body = el("div", { class: "event" }, `${m.from} left the group`);
  else if (m.kind === "group.remove") body = el("div", { class: "event" }, `${m.from} removed a member`);
  else if (m.kind === "call.log") {
    body = el("div", { class: "event call-log" }, m.text || "Call",
      el("button", { type: "button", class: "plain", onclick: () => call(/video/i.test(m.text || "")) }, "Call back"));
  }
  else body = planBody(m) || interactiveBody(m) || el("div", { class: "placeholder" }, `A message of a kind this app cannot show yet (${m.kind}).`);
  const reactions = (m.reactions || []).length ? el("div", { class: "reactions" }, m.reactions.map((r) =>
    el("button", {
      type: "button", class: "chip" + (r.mine ? " mine" : ""), title: r.by.join(", "),
      "aria-pressed": r.mine ? "true" : "false",
      onclick: () => react(m.id, r.emoji, r.mine),
    }, `${r.emoji} ${r.count}`))) : null;
  return el("li", { class: "msg " + (out ? "out" : "in"), "data-id": m.id }, who, quote, body, reactions, meta, actions(m));
}

// Reply, react, edit and delete: under each message, shown on hover and on keyboard focus.
function actions(m) {
  if (m.deleted || !["text", "reply", "attachment"].includes(m.kind) || m.status === "waiting") return null;
  const own = m.direction === "out";
  const picker = el("span", { class: "picker", hidden: true }, REACTIONS.map((e) =>
    el("button", { type: "button", class: "plain", "aria-label": `React with ${e}`, onclick: () => react(m.id, e, false) }, e)));
  return el("div", { class: "actions" },
    el("button", { type: "button", class: "plain", onclick: () => startReply(m) }, "Reply"),
    el("button", { type: "button", class: "plain", "aria-expanded": "false", onclick: (e) => {
      picker.hidden = !picker.hidden;
      e.currentTarget.setAttribute("aria-expanded", String(!picker.hidden));
    } }, "React"),
    picker,
    own && m.kind !== "attachment" ? el("button", { type: "button", class: "plain", onclick: () => startEdit(m) }, "Edit") : null,
    own ? el("button", { type: "button", class: "plain", onclick: () => remove(m) }, "Delete") : null);
}

async function react(id, emoji, remove) {
  try {
    await api(`/v1/messages/${id}/react`, { method: "POST", body: { emoji, remove } });
    await loadMessages({ keepScroll: true });
  } catch (e) { showError(e); }
}

function startReply(m) {
  state.editing = null;
  state.replyTo = { id: m.id, from: m.from, text: m.text || summary(m) };
  composing();
}

function startEdit(m) {
  state.replyTo = null;
  state.editing = { id: m.id };
  $("text").value = m.text || "";
  composing();
}

// The line above the composer saying what it answers or edits.
function composing() {
  const box = $("composing");
  const what = state.editing ? ["Editing your message"] : state.replyTo ? ["Replying to ", el("strong", {}, state.replyTo.from), `: ${state.replyTo.text.slice(0, 80)}`] : null;
  box.hidden = !what;
  if (what) {
    box.replaceChildren(el("span", {}, what), el("button", { type: "button", class: "plain", onclick: () => {
      state.replyTo = null;
      if (state.editing) $("text").value = "";
      state.editing = null;
      composing();
    } }, "Cancel"));
  }
  $("text").focus();
}

async function remove(m) {
  if (!confirm("Delete this message for everyone? Their devices will show it as deleted.")) return;
  try {
    await api(`/v1/messages/${m.id}/delete`, { method: "POST", body: {} });
    await loadMessages({ keepScroll: true });
  } catch (e) { showError(e); }
}

function renderAttachment(m) {
  const a = m.attachment;
  const file = `/v1/messages/${m.id}/file`;
  const parts = [];
  const kind = (a.mime || "").split("/")[0];
  if (a.state === "complete" && kind === "image") {
    parts.push(el("a", { href: file, target: "_blank", rel: "noopener" },
      el("img", { class: "preview", src: file, alt: a.name || "picture", loading: "lazy" })));
  } else if (a.state === "complete" && kind === "video") {
    parts.push(el("video", { src: file, controls: true, preload: "metadata",
      poster: a.preview ? `/v1/messages/${m.id}/preview` : undefined }));
  } else if (a.state === "complete" && kind === "audio") {
    parts.push(el("audio", { src: file, controls: true, preload: "metadata" }));
  } else if (a.preview) {
    parts.push(el("img", { class: "preview", src: `/v1/messages/${m.id}/preview`, alt: a.name || "preview" }));
  }
  const line = el("div", { class: "file-line" }, el("span", {}, `File: ${a.name || "unnamed"}, ${size(a.size)}`));
  if (kind === "audio") {
    line.append(el("button", { type: "button", class: "plain", onclick: () => listenTogether(target(), m.id).catch(showError) }, "Listen together"));
  }
  if (a.state === "complete") {
    line.append(el("a", { href: file, download: a.name || "file" }, "Save"));
  } else if (a.state === "downloading") {
    const held = a.bytes_held || 0;
    line.append(el("progress", { max: a.size || 1, value: held }), `${Math.floor((100 * held) / (a.size || 1))} %`);
  } else {
    line.append(el("button", { type: "button", class: "plain", onclick: () => download(m.id) },
      a.state === "failed" ? "Try again" : "Download"));
    if (a.error) line.append(el("span", { class: "meta failed" }, a.error));
  }
  parts.push(line);
  if (a.caption) parts.push(el("div", { class: "body" }, a.caption));
  return el("div", {}, parts);
}

function call(video) {
  if (!state.current) return;
  startCall(target(), video).then(() => showError(null)).catch(showError);
}

async function download(id) {
  try {
    await api(`/v1/messages/${id}/download`, { method: "POST", body: {} });
    await loadMessages({ keepScroll: true });
  } catch (e) { showError(e); }
}

async function send(text) {
  const to = target();
  if (state.editing) {
    await api(`/v1/messages/${state.editing.id}/edit`, { method: "POST", body: { text } });
    state.editing = null;
    composing();
    await loadMessages({ keepScroll: true });
    return;
  }
  const body = { to, text };
  if (state.replyTo) body.reply_to = state.replyTo.id;
  const res = await api("/v1/messages", {
    method: "POST", body, headers: { "Idempotency-Key": crypto.randomUUID() },
  });
  state.replyTo = null;
  composing();
  if (!state.current.id && res.conversation && res.status !== "waiting") {
    state.current = { ...state.current, id: res.conversation };
  }
  await loadConversations();
  await loadMessages();
}

// Uploads a file with a progress bar (XMLHttpRequest reports upload progress; fetch does not).
function upload(file) {
  const q = new URLSearchParams({ to: target(), name: file.name, mime: file.type || "application/octet-stream" });
  const bar = el("progress", { max: file.size || 1, value: 0 });
  const row = el("div", {}, `Sending ${file.name} (${size(file.size)}) `, bar);
  $("uploads").append(row);
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/v1/attachments?${q}`);
    xhr.withCredentials = true;
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = e.loaded; };
    xhr.onload = () => {
      row.remove();
      if (xhr.status >= 300) {
        let msg = `HTTP ${xhr.status}`;
        try { msg = JSON.parse(xhr.responseText).error || msg; } catch (_) {}
        showError(new Error(`${file.name}: ${msg}`));
      }
      loadConversations().then(loadMessages).catch(showError);
      resolve();
    };
    xhr.onerror = () => { row.remove(); showError(new Error(`${file.name}: the upload failed`)); resolve(); };
    xhr.send(file);
  });
}

let refreshing = null;
function refreshSoon() {
  if (refreshing) return;
  refreshing = setTimeout(async () => {
    refreshing = null;
    try {
      await loadConversations();
      await loadMessages({ keepScroll: true });
      refreshPlans();
    } catch (e) { showError(e); }
  }, 150);
}

function listen() {
  const events = new EventSource("/v1/events");
  events.addEventListener("message", (e) => {
    refreshSoon();
    let m;
    try { m = JSON.parse(e.data); } catch (_) { return; }
    // A muted conversation (kith mute) keeps its messages but makes no notification.
    const muted = state.conversations.some((c) => c.id === m.conversation && c.muted);
    if (m.direction === "in" && !m.hidden && !muted && document.hidden && "Notification" in window && Notification.permission === "granted") {
      new Notification(`Kith: ${m.from}`, { body: summary(m) });
    }
  });
  events.addEventListener("status", refreshSoon);
  events.addEventListener("transfer", refreshSoon);
  events.addEventListener("call", (e) => {
    let c;
    try { c = JSON.parse(e.data); } catch (_) { return; }
    onCall(c);
    if (c.state === "ended") refreshSoon();
  });
  events.addEventListener("listen", (e) => {
    try { onListen(JSON.parse(e.data)); } catch (_) { /* a malformed event is skipped */ }
  });
  events.addEventListener("call_signal", (e) => {
    let s;
    try { s = JSON.parse(e.data); } catch (_) { return; }
    onSignal(s);
  });
  events.onerror = () => { $("net").textContent = "reconnecting…"; };
  events.onopen = () => { status().catch(() => {}); };
}

async function status() {
  state.me = await api("/v1/status");
  $("me").textContent = state.me.name ? `@${state.me.name}` : "no name yet:";
  $("register").hidden = !!state.me.name;
  $("net").textContent = `${state.me.connected_peers} peers`;
}

async function loadContacts() {
  state.contacts = await api("/v1/contacts");
  $("contact-list").replaceChildren(...state.contacts.map((c) => el("option", { value: "@" + c.name })));
}

// Panels (a modal dialog: Escape closes it, focus stays inside).
function openPanel(heading, ...content) {
  $("panel-title").textContent = heading;
  $("panel-body").replaceChildren(...content.flat());
  if (!$("panel").open) $("panel").showModal();
}

function qr(text, alt) {
  return el("img", { class: "qr", src: `/v1/qr?text=${encodeURIComponent(text)}`, alt });
}

async function showPeople() {
  const contacts = await api("/v1/contacts");
  const cards = contacts.map((c) => el("section", { class: "card" },
    el("h3", {}, `@${c.name}`),
    el("p", {}, "Safety number: ", el("code", {}, c.fingerprint)),
    qr(c.fingerprint, `QR code of the safety number of @${c.name}`),
    c.key_changed ? el("p", { class: "warn" },
      `@${c.name} now resolves to a different key than the one you accepted. Check the new safety number with them before trusting it. `,
      el("button", { type: "button", onclick: () => trust(c.name) }, "Trust the new key")) : null,
    el("button", { type: "button", class: "plain", onclick: () => { $("panel").close(); startChat(`@${c.name}`); } }, "Chat")));
  openPanel("People",
    el("p", {}, "Compare a safety number with its owner in person or on a call: the same digits on both sides mean no one is in between. Yours: ",
      el("code", {}, state.me.fingerprint)),
    cards.length ? cards : el("p", {}, "No contacts yet: write to @someone."));
}

async function trust(name) {
  try {
    await api("/v1/trust", { method: "POST", body: { name } });
    await showPeople();
  } catch (e) { showError(e); }
}

async function showDevices() {
  const devices = await api("/v1/devices");
  const items = devices.map((d) => el("li", {},
    el("span", {}, d.label, " ", el("code", {}, `${d.peer_id.slice(0, 12)}…`), d.this_device ? " (this device)" : ""),
    d.this_device ? el("span") : el("button", { type: "button", class: "plain", onclick: () => revoke(d) }, "Revoke")));
  openPanel("Devices",
    el("p", {}, "Your safety number: ", el("code", {}, state.me.fingerprint)),
    qr(state.me.fingerprint, "QR code of your safety number"),
    el("ul", { class: "members" }, items),
    el("button", { type: "button", onclick: () => linkDevice().catch(showError) }, "Link a new device"),
    el("div", { id: "link-area" }));
}

async function linkDevice() {
  const link = await api("/v1/devices/link", { method: "POST", body: {} });
  const line = el("p", { role: "status" }, `Waiting for the new device (until ${time(link.expires_at)}).`);
  $("link-area").replaceChildren(
    el("p", {}, "On the new device, run ", el("code", {}, `kith init --link ${link.code}`), " (or scan the code):"),
    qr(link.code, "QR code of the link code"), line);
  const poll = async () => {
    if (!$("panel").open || !document.body.contains(line)) return;
    const now = await api(`/v1/devices/link/${link.id}`);
    if (now.state === "pending") { setTimeout(poll, 2000); return; }
    line.textContent = now.state === "linked" ? `Linked: ${now.device}` : "The code expired.";
    if (now.state === "linked") setTimeout(() => showDevices().catch(showError), 1500);
  };
  setTimeout(poll, 2000);
}

async function revoke(d) {
  if (!confirm(`Revoke "${d.label}"? It will no longer get your messages, and your groups move to a new key.`)) return;
  try {
    await api(`/v1/devices/${d.peer_id}/revoke`, { method: "POST", body: {} });
    await showDevices();
  } catch (e) { showError(e); }
}

async function showMembers(c) {
  const members = await api(`/v1/conversations/${c.id}/members`);
  openPanel(`Members of ${c.title}`,
    el("ul", { class: "members" }, members.map((m) => el("li", {}, m,
      state.me && m === state.me.name ? el("span", {}, "you")
        : el("button", { type: "button", class: "plain", onclick: () => removeMember(c, m) }, "Remove")))),
    el("p", {}, "To add someone, mention @name in a message to the group. You may remove only members who joined after you."),
    el("button", { type: "button", onclick: () => leave(c) }, "Leave the group"));
}

async function removeMember(c, name) {
  if (!confirm(`Remove ${name} from the group?`)) return;
  try {
    await api(`/v1/conversations/${c.id}/remove`, { method: "POST", body: { name } });
    await showMembers(c);
    refreshSoon();
  } catch (e) { showError(e); $("panel").close(); }
}

async function leave(c) {
  if (!confirm("Leave this group? You keep its history but get no new messages.")) return;
  try {
    await api(`/v1/conversations/${c.id}/leave`, { method: "POST", body: {} });
    $("panel").close();
    refreshSoon();
  } catch (e) { showError(e); }
}

function startChat(name) {
  const known = state.conversations.find((c) => c.kind === "direct" && c.members.includes(name.slice(1)));
  if (known) openConversation({ id: known.id, title: title(known), kind: "direct" }).catch(showError);
  else openConversation({ to: name, title: name.slice(1), kind: "direct" }).catch(showError);
}

// Typing @ suggests contacts: Tab (or a click) takes the first (or the one clicked).
function suggest() {
  const box = $("text");
  const before = box.value.slice(0, box.selectionStart);
  const m = /(^|\s)@([a-z0-9-]*)$/i.exec(before);
  const found = m ? state.contacts.filter((c) => c.name.startsWith(m[2].toLowerCase()) && c.name !== (state.me && state.me.name)).slice(0, 6) : [];
  $("suggest").replaceChildren(...found.map((c, i) => el("button", {
    type: "button", role: "option", "aria-selected": i === 0 ? "true" : "false",
    onclick: () => complete(c.name),
  }, `@${c.name}`)));
}

function complete(name) {
  const box = $("text");
  const at = box.selectionStart;
  const before = box.value.slice(0, at).replace(/@([a-z0-9-]*)$/i, `@${name} `);
  box.value = before + box.value.slice(at);
  box.selectionStart = box.selectionEnd = before.length;
  $("suggest").replaceChildren();
  box.focus();
}

function wire() {
  $("people").addEventListener("click", () => showPeople().catch(showError));
  $("devices").addEventListener("click", () => showDevices().catch(showError));
  $("panel-close").addEventListener("click", () => $("panel").close());
  $("register").addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = $("register-name").value.trim().replace(/^@/, "");
    if (!name) return;
    $("me").textContent = `claiming @${name}…`;
    try {
      await api("/v1/register", { method: "POST", body: { name } });
      showError(null);
    } catch (err) { showError(err); }
    await status().catch(showError);
  });
  $("text").addEventListener("input", suggest);
  $("composer").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = $("text").value;
    if (!text.trim() || !state.current) return;
    $("text").value = "";
    try { await send(text); showError(null); } catch (err) { $("text").value = text; showError(err); }
  });
  $("text").addEventListener("keydown", (e) => {
    const first = $("suggest").querySelector("button");
    if (e.key === "Tab" && first) {
      e.preventDefault();
      first.click();
      return;
    }
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      $("suggest").replaceChildren();
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("share-location").addEventListener("click", () => {
    if (!state.current) return;
    if (!navigator.geolocation) { showError(new Error("this browser cannot tell where you are")); return; }
    navigator.geolocation.getCurrentPosition(async (pos) => {
      try {
        await api("/v1/locations", { method: "POST", body: {
          to: target(), lat: pos.coords.latitude, lon: pos.coords.longitude, accuracy_m: pos.coords.accuracy,
        } });
        await loadConversations();
        await loadMessages();
      } catch (e) { showError(e); }
    }, (e) => showError(new Error(`no location: ${e.message}`)), { enableHighAccuracy: true, timeout: 20000 });
  });
  $("file").addEventListener("change", async (e) => {
    for (const f of [...e.target.files]) await upload(f);
    e.target.value = "";
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { if (state.current) { e.preventDefault(); drop.classList.add("dragging"); } });
  drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", async (e) => {
    e.preventDefault();
    drop.classList.remove("dragging");
    if (!state.current) return;
    for (const f of [...e.dataTransfer.files]) await upload(f);
  });
  $("older").addEventListener("click", () => {
    state.limit += HISTORY_STEP;
    loadMessages({ keepScroll: true }).catch(showError);
  });
  $("new-chat").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $("new-to").value.trim().replace(/^@?/, "@");
    if (name.length < 2) return;
    $("new-to").value = "";
    startChat(name);
  });
  $("back").addEventListener("click", () => {
    $("app").classList.remove("in-chat");
    state.current = null;
    renderConversations();
  });
  if ("Notification" in window && Notification.permission === "default") {
    $("notify").hidden = false;
    $("notify").addEventListener("click", () => Notification.requestPermission().then(() => { $("notify").hidden = true; }));
  }
}

async function main() {
  try {
    await status();
  } catch (e) {
    if (e.status !== 401) showError(e);
    return;
  }
  $("login").hidden = true;
  $("app").hidden = false;
  wire();
  initCalls({ api, el, showError });
  initListen({ api, el, showError, currentConversation: () => state.current && state.current.id });
  initPlans({ api, el, openPanel, qr, showError, target, refresh: refreshSoon });
  initInteractive({ api, el, showError, refresh: refreshSoon });
  await loadConversations().catch(showError);
  listen();
}

main();
