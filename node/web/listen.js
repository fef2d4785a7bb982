// Listening together (docs/web.md, "Listening together"): the host's node keeps the session's
// playback ("at host time `at`, track `index` was at `position_ms`"); this page plays its own
// copy of the track (the attachment's file, fetched by its node) and keeps it where the session
// says it is now, using the offset its node measured to the host's clock. Small drifts are
// corrected by playing up to 5 % faster or slower, large ones by seeking.

const $ = (id) => document.getElementById(id);

// How far off (s) before seeking instead of changing the rate, and below which nothing is done.
const SEEK_OVER = 0.25;
const NUDGE_OVER = 0.02;
const MAX_RATE_CHANGE = 0.05;

const L = {
  api: null, el: null, showError: null, currentConversation: () => null,
  sessions: new Map(),  // id -> ListenView
  active: null,         // the session this page plays
  audio: null,
  src: null,            // the track loaded
  ready: false,
  loading: false,
};

export function initListen({ api, el, showError, currentConversation }) {
  Object.assign(L, { api, el, showError, currentConversation });
  L.audio = $("listen-audio");
  L.audio.addEventListener("ended", () => {
    const v = L.sessions.get(L.active);
    if (v && v.host && !v.stopped) {
      const last = v.index + 1 >= v.queue.length;
      control(v.id, last ? { op: "pause" } : { op: "next" }).catch(showError);
    }
  });
  $("listen-join").addEventListener("click", () => joinShown().catch(showError));
  $("listen-leave").addEventListener("click", () => leave().catch(showError));
  $("listen-play").addEventListener("click", () => {
    const v = shown();
    if (v) control(v.id, { op: v.playing ? "pause" : "play" }).catch(showError);
  });
  $("listen-next").addEventListener("click", () => { const v = shown(); if (v) control(v.id, { op: "next" }).catch(showError); });
  $("listen-stop").addEventListener("click", () => { const v = shown(); if (v) control(v.id, { op: "stop" }).catch(showError); });
  $("listen-seek").addEventListener("change", (e) => {
    const v = shown();
    if (v) control(v.id, { op: "seek", position_ms: Math.round(Number(e.target.value) * 1000) }).catch(showError);
  });
  window.kith = Object.assign(window.kith || {}, { listenPosition, listenState: () => L.sessions.get(L.active) || null });
  api("/v1/listen").then((list) => list.forEach(onListen)).catch(() => {});
  setInterval(align, 200);
  setInterval(render, 1000);
}

// A session's state from the event stream or an answer of the API.
export function onListen(view) {
  const before = L.sessions.get(view.id);
  if (before && before.seq > view.seq) return;
  L.sessions.set(view.id, view);
  if (view.joined && view.host && !L.active) L.active = view.id;
  if (view.id === L.active && view.stopped) stopPlaying();
  render();
  align();
}

// "Listen together" on an audio file of the conversation: into the live session there, or a new
// one this device hosts.
export async function listenTogether(to, message) {
  const conv = L.currentConversation();
  const live = [...L.sessions.values()].find((s) => !s.stopped && (s.conversation === conv || s.to === to));
  if (live) {
    await control(live.id, { op: "add", track: message });
    if (L.active !== live.id) await join(live.id);
    return;
  }
  const v = await L.api("/v1/listen", { method: "POST", body: { to, tracks: [message] } });
  onListen(v);
  await join(v.id);
}

async function control(id, body) {
  onListen(await L.api(`/v1/listen/${id}/control`, { method: "POST", body }));
}

async function join(id) {
  if (L.active && L.active !== id) await leave();
  L.active = id;
  onListen(await L.api(`/v1/listen/${id}/join`, { method: "POST", body: {} }));
}

async function joinShown() {
  const v = shown();
  if (v) await join(v.id);
}

async function leave() {
  const id = L.active;
  stopPlaying();
  L.active = null;
  if (id) onListen(await L.api(`/v1/listen/${id}/leave`, { method: "POST", body: {} }));
}

function stopPlaying() {
  L.audio.pause();
  L.audio.playbackRate = 1;
}

// The session shown in the current conversation (the one this page plays first).
function shown() {
  const conv = L.currentConversation();
  const live = [...L.sessions.values()].filter((s) => s.conversation === conv && !s.stopped);
  return live.find((s) => s.id === L.active) || live[live.length - 1] || null;
}

// Where the session's track is now, in seconds, by the host's clock.
function expected(v) {
  const hostNow = Date.now() + (v.offset_ms || 0);
  const ms = v.playing ? v.position_ms + Math.max(0, hostNow - v.at) : v.position_ms;
  return ms / 1000;
}

// Loads the session's current track (its node fetches the file first if it must).
async function load(v) {
  const track = v.queue[v.index];
  if (!track) return;
  const src = `/v1/messages/${track.message}/file`;
  if (L.src === src || L.loading) return;
  L.loading = true;
  L.ready = false;
  try {
    let m = await L.api(`/v1/messages/${track.message}`);
    if (!m.attachment || m.attachment.state !== "complete") {
      await L.api(`/v1/messages/${track.message}/download`, { method: "POST", body: {} });
      for (let i = 0; i < 600; i++) {
        await new Promise((r) => setTimeout(r, 300));
        m = await L.api(`/v1/messages/${track.message}`);
        if (m.attachment && m.attachment.state === "complete") break;
        if (m.attachment && m.attachment.state === "failed") throw new Error(`the track could not be fetched: ${m.attachment.error || "failed"}`);
      }
    }
    await new Promise((resolve, reject) => {
      L.audio.addEventListener("loadedmetadata", resolve, { once: true });
      L.audio.addEventListener("error", () => reject(new Error("this browser cannot play the track")), { once: true });
      L.audio.src = src;
    });
    L.src = src;
    L.ready = true;
  } finally {
    L.loading = false;
  }
}

// Keeps this page's playback where the session says it is.
function align() {
  const v = L.sessions.get(L.active);
  const a = L.audio;
  if (!v || !v.joined || v.stopped) return;
  if (!v.host && v.offset_ms === null) return; // the clock is being measured
  const track = v.queue[v.index];
  if (!track || L.src !== `/v1/messages/${track.message}/file` || !L.ready) {
    load(v).catch(L.showError);
    return;
  }
  const want = expected(v);
  if (!v.playing) {
    if (!a.paused) a.pause();
    if (Math.abs(a.currentTime - want) > 0.05) a.currentTime = want;
    a.playbackRate = 1;
    return;
  }
  if (a.duration && want >= a.duration) return; // the track is over here; the host moves on
  if (a.paused) {
    a.currentTime = want;
    a.play().catch(() => {});
    return;
  }
  const ahead = a.currentTime - want;
  if (Math.abs(ahead) > SEEK_OVER) {
    a.currentTime = want;
    a.playbackRate = 1;
  } else if (Math.abs(ahead) > NUDGE_OVER) {
    a.playbackRate = 1 - Math.max(-MAX_RATE_CHANGE, Math.min(MAX_RATE_CHANGE, ahead / 2));
  } else {
    a.playbackRate = 1;
  }
}

function clock(s) {
  if (!isFinite(s)) return "0:00";
  const t = Math.max(0, Math.floor(s));
  return `${Math.floor(t / 60)}:${String(t % 60).padStart(2, "0")}`;
}

function render() {
  const v = shown();
  const bar = $("listen-bar");
  bar.hidden = !v;
  if (!v) return;
  const track = v.queue[v.index] || {};
  const playingHere = v.id === L.active && v.joined;
  const at = expected(v);
  const length = track.duration_ms ? track.duration_ms / 1000 : (playingHere && L.audio.duration) || 0;
  $("listen-title").textContent =
    `Listening together: ${track.name || "a track"} (${v.index + 1} of ${v.queue.length}) · ${clock(at)}${length ? ` / ${clock(length)}` : ""}${v.playing ? "" : " · paused"}`;
  const sync = playingHere && !v.host && v.offset_ms !== null ? `clock offset ${v.offset_ms} ms (round trip ${v.rtt_ms} ms)` : "";
  $("listen-sync").textContent = sync;
  $("listen-join").hidden = playingHere;
  $("listen-leave").hidden = !playingHere;
  $("listen-play").textContent = v.playing ? "Pause" : "Play";
  $("listen-next").disabled = v.index + 1 >= v.queue.length;
  $("listen-stop").hidden = !v.host;
  const seek = $("listen-seek");
  if (document.activeElement !== seek) {
    seek.max = String(Math.max(length, at, 1));
    seek.value = String(at);
  }
}

// This page's playback position and its clock, for the browser test and diagnostics.
function listenPosition() {
  const a = L.audio;
  return { position_ms: a.currentTime * 1000, now: Date.now(), playing: !a.paused, rate: a.playbackRate, src: L.src, ready: L.ready };
}
