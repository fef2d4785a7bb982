// Planning together in the web app (docs/web.md): a Plans panel per conversation with its
// events and answers, shared lists, bills, payment requests and shared locations, and live
// location from this browser. Everything goes through the node's API (/v1/plans/*,
// /v1/locations*); what a peer sent is put in the page as text, never as markup.

let ctx = null; // { api, el, openPanel, qr, showError, target, refresh }
const live = { session: null, watch: null, to: null };

export function initPlans(c) {
  ctx = c;
}

const PLAN_KINDS = ["event", "event.change", "list", "expense", "payment", "pay.request", "live_location"];

// The body of a planning message in the chat, or null for other kinds.
export function planBody(m) {
  if (!PLAN_KINDS.includes(m.kind)) return null;
  const { el } = ctx;
  return el("div", { class: "event plan" }, m.text || m.kind, " ",
    el("button", { type: "button", class: "plain", onclick: () => showPlans().catch(ctx.showError) }, "Plans"));
}

const enc = encodeURIComponent;

async function act(promise) {
  try {
    await promise;
    await showPlans();
    ctx.refresh();
  } catch (e) { ctx.showError(e); }
}

function field(id, label, attrs = {}) {
  const { el } = ctx;
  return [el("label", { for: id, class: "sr" }, label), el("input", { id, placeholder: label, autocomplete: "off", ...attrs })];
}

const val = (id) => document.getElementById(id).value.trim();

function eventCard(e, me) {
  const { el, api } = ctx;
  const when = new Date(e.start_ms).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  const answers = ["yes", "maybe", "no"].map((a) => {
    const who = (e.answers && e.answers[a]) || [];
    return who.length ? `${{ yes: "Going", maybe: "Maybe", no: "Not going" }[a]}: ${who.join(", ")}` : null;
  }).filter(Boolean).join(" · ");
  const answer = (a, label) => el("button", {
    type: "button", class: e.mine === a ? "" : "plain", "aria-pressed": e.mine === a ? "true" : "false",
    onclick: () => act(api(`/v1/plans/events/${e.id}/rsvp`, { method: "POST", body: { answer: a } })),
  }, label);
  const mine = e.by === me;
  const moveId = `move-${e.id}`;
  return el("div", { class: "card plan-event", "data-id": e.id },
    el("strong", {}, e.title), e.cancelled ? " (cancelled)" : "",
    el("div", {}, when, e.place ? ` · ${e.place}` : ""),
    el("div", { class: "meta" }, `proposed by ${e.by}`, e.changes ? ` · changed ${e.changes}×` : ""),
    el("div", { class: "answers" }, answers || "No answers yet"),
    e.cancelled ? null : el("div", {}, answer("yes", "Going"), answer("maybe", "Maybe"), answer("no", "Not going")),
    mine && !e.cancelled ? el("div", {},
      el("label", { for: moveId, class: "sr" }, "New time"),
      el("input", { id: moveId, type: "datetime-local" }),
      el("button", { type: "button", class: "plain", onclick: () => {
        const v = document.getElementById(moveId).value;
        if (v) act(api(`/v1/plans/events/${e.id}`, { method: "POST", body: { at: isoWithOffset(v) } }));
      } }, "Move"),
      el("button", { type: "button", class: "plain bad", onclick: () => act(api(`/v1/plans/events/${e.id}`, { method: "POST", body: { cancelled: true } })) }, "Cancel event"))
      : null);
}

// A datetime-local value ("2027-06-12T18:00") as RFC 3339 in this browser's offset.
function isoWithOffset(local) {
  const d = new Date(local);
  const off = -d.getTimezoneOffset();
  const sign = off >= 0 ? "+" : "-";
  const pad = (n) => String(Math.floor(Math.abs(n))).padStart(2, "0");
  return `${local.length === 16 ? local + ":00" : local}${sign}${pad(off / 60)}:${pad(off % 60)}`;
}

function listCard(l) {
  const { el, api } = ctx;
  const edit = (body) => act(api(`/v1/plans/lists/${l.id}`, { method: "POST", body }));
  const addId = `add-${l.id}`;
  return el("div", { class: "card plan-list", "data-id": l.id },
    el("strong", {}, l.title), el("small", {}, ` ${l.kind}`),
    el("ul", { class: "items" }, l.items.map((i) => el("li", { "data-item": i.id },
      el("label", {},
        el("input", { type: "checkbox", checked: i.done, onchange: (ev) => edit({ op: "done", item: i.id, done: ev.target.checked }) }),
        " ", i.text, i.for ? el("small", {}, ` for ${i.for}`) : null),
      el("button", { type: "button", class: "plain", "aria-label": `Remove ${i.text}`, onclick: () => edit({ op: "remove", item: i.id }) }, "×")))),
    el("form", { class: "inline", onsubmit: (ev) => {
      ev.preventDefault();
      const text = val(addId);
      if (text) edit({ op: "add", text });
    } }, field(addId, "Add an item"), el("button", { type: "submit" }, "Add")));
}

function billsCard(b, me) {
  const { el, api, qr } = ctx;
  const rows = [];
  for (const c of b.currencies) {
    const transfers = c.transfers.map((t) => el("li", { class: "transfer" }, `${t.from} pays ${t.to} ${t.amount.text}`));
    rows.push(el("div", { class: "currency" }, el("strong", {}, c.currency),
      transfers.length ? el("ul", {}, transfers) : el("div", { class: "settled" }, "Settled")));
  }
  const pending = b.payments.filter((p) => !p.confirmed).map((p) => el("li", {},
    `${p.from} paid ${p.to} ${p.amount.text}`,
    p.to === me
      ? el("button", { type: "button", onclick: () => act(api(`/v1/plans/payments/${p.id}/confirm`, { method: "POST", body: {} })) }, "Confirm")
      : el("small", {}, ` (waiting for ${p.to} to confirm)`)));
  const requests = b.requests.map((r) => el("div", { class: "card request", "data-id": r.id },
    el("div", {}, `${r.from} asks to be paid`, r.amount ? ` ${r.amount.text}` : ` in ${r.currency}`, r.reference ? ` (${r.reference})` : ""),
    r.methods.map((m) => el("div", {},
      el("div", {}, m.uri ? el("a", { href: m.uri, rel: "noopener noreferrer", target: "_blank" }, m.text) : m.text),
      m.qr ? qr(m.qr, `${m.kind} QR code`) : null)),
    r.from !== me ? el("button", { type: "button", onclick: () => act(api(`/v1/plans/requests/${r.id}/pay`, { method: "POST", body: {} })) }, "Mark as paid") : null));
  return el("div", { class: "card plan-bills" },
    rows.length ? rows : el("div", {}, "No expenses yet"),
    pending.length ? el("ul", { class: "pending" }, pending) : null,
    requests);
}

function locationsCard(locs) {
  const { el } = ctx;
  return el("ul", { class: "locations" }, locs.map((l) => el("li", {},
    `${l.sharer}: ${l.latest.lat.toFixed(5)}, ${l.latest.lon.toFixed(5)} · `,
    l.session ? (l.ended ? "live, ended · " : "live · ") : "",
    `${Math.round(l.age_s / 60)} min ago · `,
    el("a", { href: l.map_url, target: "_blank", rel: "noopener noreferrer" }, "map"))));
}

// Live location from this browser: watchPosition feeds the session; the node sends at most one
// position every 5 s.
async function shareLive(seconds) {
  const { api, target, showError } = ctx;
  if (!navigator.geolocation) { showError(new Error("this browser cannot tell where you are")); return; }
  stopLive();
  live.to = target();
  live.watch = navigator.geolocation.watchPosition(async (pos) => {
    const at = { lat: pos.coords.latitude, lon: pos.coords.longitude, accuracy_m: pos.coords.accuracy };
    try {
      if (!live.session) {
        const r = await api("/v1/locations/live", { method: "POST", body: { to: live.to, seconds, ...at } });
        live.session = r.session;
        showPlans().catch(() => {});
      } else {
        await api(`/v1/locations/live/${live.session}`, { method: "POST", body: at });
      }
    } catch (e) {
      if (e.status === 404) stopLive(); else showError(e);
    }
  }, (e) => showError(new Error(`no location: ${e.message}`)), { enableHighAccuracy: true, timeout: 20000 });
}

function stopLive() {
  if (live.watch !== null) navigator.geolocation.clearWatch(live.watch);
  if (live.session) ctx.api("/v1/locations/stop", { method: "POST", body: { session: live.session } }).catch(() => {});
  live.watch = null;
  live.session = null;
}

// Shows the conversation's plans anew when the Plans panel is open and nothing is being typed
// into it (called on every event of the node).
export function refreshPlans() {
  const panel = document.getElementById("panel");
  if (!panel.open || document.getElementById("panel-title").textContent !== "Plans") return;
  const typing = [...panel.querySelectorAll("input")].some((i) =>
    i.type !== "checkbox" && i.value !== i.defaultValue);
  if (!typing) showPlans().catch(() => {});
}

// The Plans panel of the current conversation.
export async function showPlans() {
  const { api, el, openPanel, target } = ctx;
  const to = target();
  const w = `with=${enc(to)}`;
  const [status, events, lists, bills, locs] = await Promise.all([
    api("/v1/status"), api(`/v1/plans/events?${w}`), api(`/v1/plans/lists?${w}`),
    api(`/v1/plans/bills?${w}`), api(`/v1/locations?${w}`),
  ]);
  const me = status.name;
  const newEvent = el("form", { class: "inline", onsubmit: (ev) => {
    ev.preventDefault();
    const at = val("ev-at");
    if (!val("ev-title") || !at) return;
    act(api("/v1/plans/events", { method: "POST", body: { to, title: val("ev-title"), at: isoWithOffset(at), place: val("ev-place") || null } }));
  } }, field("ev-title", "What"), el("label", { for: "ev-at", class: "sr" }, "When"),
  el("input", { id: "ev-at", type: "datetime-local" }), field("ev-place", "Where"), el("button", { type: "submit" }, "Propose"));
  const newList = el("form", { class: "inline", onsubmit: (ev) => {
    ev.preventDefault();
    if (val("list-title")) act(api("/v1/plans/lists", { method: "POST", body: { to, title: val("list-title"), kind: val("list-kind") } }));
  } }, field("list-title", "New list"),
  el("label", { for: "list-kind", class: "sr" }, "Kind"),
  el("select", { id: "list-kind" }, el("option", { value: "shopping" }, "Shopping"), el("option", { value: "todo" }, "To-do")),
  el("button", { type: "submit" }, "Make"));
  const expense = el("form", { class: "inline", onsubmit: (ev) => {
    ev.preventDefault();
    act(api("/v1/plans/expenses", { method: "POST", body: { to, description: val("ex-what"), amount: val("ex-amount"), currency: val("ex-cur") || "EUR" } }));
  } }, field("ex-what", "I paid for"), field("ex-amount", "Amount", { inputmode: "decimal", size: 7 }),
  field("ex-cur", "EUR", { size: 4, value: "EUR" }), el("button", { type: "submit" }, "Add, split equally"));
  const request = el("form", { class: "inline", onsubmit: (ev) => {
    ev.preventDefault();
    const body = { to, currency: "EUR", reference: val("rq-ref") };
    if (val("rq-iban")) Object.assign(body, { iban: val("rq-iban"), name: val("rq-name") });
    if (val("rq-link")) body.link = val("rq-link");
    act(api("/v1/plans/requests", { method: "POST", body }));
  } }, field("rq-iban", "Your IBAN"), field("rq-name", "Account holder"), field("rq-link", "or a payment link"),
  field("rq-ref", "Reference"), el("button", { type: "submit" }, "Ask to be paid"));
  const sharing = el("div", { class: "inline" },
    [[900, "15 min"], [3600, "1 h"], [28800, "8 h"]].map(([s, label]) =>
      el("button", { type: "button", class: "plain", onclick: () => shareLive(s) }, `Share live ${label}`)),
    live.session ? el("button", { type: "button", class: "bad", onclick: () => { stopLive(); showPlans().catch(() => {}); } }, "Stop sharing") : null);
  openPanel("Plans",
    el("h3", {}, "Events"), events.map((e) => eventCard(e, me)), newEvent,
    el("h3", {}, "Lists"), lists.map(listCard), newList,
    el("h3", {}, "Bills"), billsCard(bills, me), expense, request,
    el("h3", {}, "Locations"), locationsCard(locs), sharing);
}
