// Calls in the web app (docs/web.md, "Calls"): the node rings, carries the signalling and keeps
// the history; this page runs the media with the browser's WebRTC, one RTCPeerConnection per
// other device in the call (a full mesh of at most 4 devices). Offers and answers are sent
// once ICE gathering is complete (no trickle), through POST /v1/calls/{id}/signal.

const $ = (id) => document.getElementById(id);

const calls = {
  api: null, el: null, showError: null,
  config: null,         // GET /v1/calls/config
  current: null,        // the CallView shown
  mine: false,          // this tab runs the call's media (it started or answered it)
  local: null,          // this page's MediaStream
  pcs: new Map(),       // device -> RTCPeerConnection
  streams: new Map(),   // device -> remote MediaStream
  offered: new Set(),   // devices this page sent an offer to
  ring: null,           // the ring tone's AudioContext
  hideTimer: null,
};

export function initCalls({ api, el, showError }) {
  Object.assign(calls, { api, el, showError });
  $("call-accept").addEventListener("click", () => accept().catch(fail));
  $("call-decline").addEventListener("click", () => act("decline").catch(fail));
  $("call-hangup").addEventListener("click", () => act("hangup").catch(fail));
  $("call-mute").addEventListener("click", () => toggle("audio", $("call-mute"), "Mute", "Unmute"));
  $("call-camera").addEventListener("click", () => toggle("video", $("call-camera"), "Camera off", "Camera on"));
  // Tests and diagnostics read what each connection receives (window.kith.callStats()).
  window.kith = Object.assign(window.kith || {}, { callStats, callState: () => calls.current });
  // A call ringing or running while the page was closed.
  api("/v1/calls").then(({ current }) => {
    const live = current.find((c) => c.state === "ringing");
    if (live) onCall(live);
  }).catch(() => {});
}

function fail(e) {
  calls.showError(e);
}

async function config() {
  if (!calls.config) calls.config = await calls.api("/v1/calls/config");
  return calls.config;
}

async function media(video) {
  if (calls.local) return calls.local;
  if (!navigator.mediaDevices) throw new Error("this browser offers no camera or microphone here (calls need https or localhost)");
  calls.local = await navigator.mediaDevices.getUserMedia({ audio: true, video });
  const mine = $("call-local");
  mine.srcObject = calls.local;
  mine.hidden = !video;
  return calls.local;
}

// Starts a call to `to` (@name or #group).
export async function startCall(to, video) {
  if (calls.current && calls.current.state !== "ended") throw new Error("you are already in a call");
  await config();
  await media(video);
  calls.mine = true;
  try {
    const view = await calls.api("/v1/calls", { method: "POST", body: { to, video } });
    onCall(view);
  } catch (e) {
    calls.mine = false;
    stopMedia();
    throw e;
  }
}

async function accept() {
  const c = calls.current;
  if (!c) return;
  stopRing();
  await config();
  await media(c.video);
  calls.mine = true;
  onCall(await calls.api(`/v1/calls/${c.id}/accept`, { method: "POST", body: {} }));
}

async function act(what) {
  const c = calls.current;
  if (!c) return;
  stopRing();
  onCall(await calls.api(`/v1/calls/${c.id}/${what}`, { method: "POST", body: {} }));
}

function toggle(kind, button, on, off) {
  if (!calls.local) return;
  const tracks = kind === "audio" ? calls.local.getAudioTracks() : calls.local.getVideoTracks();
  const enabled = !tracks.every((t) => t.enabled);
  for (const t of tracks) t.enabled = enabled;
  button.textContent = enabled ? on : off;
  button.setAttribute("aria-pressed", enabled ? "false" : "true");
}

// A call's state, from the event stream or an answer of the API.
export function onCall(view) {
  const c = calls.current;
  if (c && c.id !== view.id) {
    // Another call while one runs here: the node answered it busy; nothing to show. (An
    // ended call was torn down when it ended.)
    if (c.state !== "ended") return;
  }
  calls.current = view;
  clearTimeout(calls.hideTimer);
  render();
  if (view.state === "ringing") {
    startRing();
    if (document.hidden && "Notification" in window && Notification.permission === "granted") {
      new Notification(`Kith: ${view.caller} is calling`, { body: view.video ? "Video call" : "Voice call" });
    }
    return;
  }
  stopRing();
  if (view.state === "ended") {
    teardown();
    calls.hideTimer = setTimeout(() => { $("call").hidden = true; }, 4000);
    return;
  }
  if (!calls.mine) return;
  // Connections to devices that left are closed; the devices this one offers to get an offer.
  const inCall = new Set(view.participants.map((p) => p.device));
  for (const [device, pc] of calls.pcs) {
    if (!inCall.has(device)) {
      pc.close();
      calls.pcs.delete(device);
      calls.streams.delete(device);
      calls.offered.delete(device);
    }
  }
  for (const device of view.offers_to) {
    if (!calls.offered.has(device)) {
      calls.offered.add(device);
      offer(device).catch(fail);
    }
  }
  renderTiles();
}

// An offer or answer from another device in the call.
export async function onSignal(sig) {
  const c = calls.current;
  if (!c || sig.call !== c.id || !calls.mine) return;
  try {
    if (sig.kind === "offer") {
      const pc = calls.pcs.get(sig.from_device) || await connection(sig.from_device);
      await pc.setRemoteDescription({ type: "offer", sdp: sig.sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      await gathered(pc);
      await send(sig.from_device, "answer", pc.localDescription.sdp);
    } else if (sig.kind === "answer") {
      const pc = calls.pcs.get(sig.from_device);
      if (pc && pc.signalingState === "have-local-offer") {
        await pc.setRemoteDescription({ type: "answer", sdp: sig.sdp });
      }
    }
  } catch (e) { fail(e); }
}

async function connection(device) {
  const { ice_servers } = await config();
  const pc = new RTCPeerConnection({ iceServers: ice_servers });
  calls.pcs.set(device, pc);
  for (const t of calls.local.getTracks()) pc.addTrack(t, calls.local);
  pc.ontrack = (e) => {
    calls.streams.set(device, e.streams[0] || new MediaStream([e.track]));
    renderTiles();
  };
  pc.onconnectionstatechange = () => renderTiles();
  return pc;
}

async function offer(device) {
  const pc = await connection(device);
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  await send(device, "offer", pc.localDescription.sdp);
}

// Waits until ICE gathering is complete (at most 5 s: what was gathered by then is sent).
function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 5000);
  });
}

function send(to, kind, sdp) {
  const c = calls.current;
  return calls.api(`/v1/calls/${c.id}/signal`, { method: "POST", body: { to, kind, sdp } });
}

function teardown() {
  for (const pc of calls.pcs.values()) pc.close();
  calls.pcs.clear();
  calls.streams.clear();
  calls.offered.clear();
  calls.mine = false;
  stopMedia();
  stopRing();
  renderTiles();
}

function stopMedia() {
  if (calls.local) for (const t of calls.local.getTracks()) t.stop();
  calls.local = null;
  $("call-local").srcObject = null;
}

const STATE_TEXT = {
  calling: "Calling…", ringing: "is calling", active: "In call",
};
const END_TEXT = {
  hung_up: "Call ended", left: "Call ended", missed: "No answer", cancelled: "Missed call",
  declined: "Declined", answered_elsewhere: "Answered on another device",
  declined_elsewhere: "Declined on another device", busy: "Busy", unreachable: "Not reachable now",
  refused: "Could not join",
};

function render() {
  const c = calls.current;
  const el = calls.el;
  $("call").hidden = false;
  const kind = c.video ? "Video call" : "Voice call";
  let line;
  if (c.state === "ringing") line = `${c.caller} ${STATE_TEXT.ringing} (${kind.toLowerCase()}${c.group ? ` in ${c.to}` : ""})`;
  else if (c.state === "ended") line = `${END_TEXT[c.end_reason] || "Call ended"}${c.note ? `: ${c.note}` : ""}`;
  else line = `${STATE_TEXT[c.state]} ${c.to}${!calls.mine && c.state === "active" ? " (in another tab or window)" : ""}`;
  $("call-title").replaceChildren(el("strong", {}, kind), " · ", line);
  const ringing = c.state === "ringing";
  const live = c.state === "calling" || c.state === "active";
  $("call-accept").hidden = !ringing;
  $("call-decline").hidden = !ringing;
  $("call-hangup").hidden = !live;
  $("call-mute").hidden = !live || !calls.mine;
  $("call-camera").hidden = !live || !calls.mine || !c.video;
  if (ringing && document.activeElement !== $("call-decline")) $("call-accept").focus();
}

function renderTiles() {
  const el = calls.el;
  const c = calls.current;
  const box = $("call-remote");
  const tiles = [];
  for (const p of (c && c.state === "active" ? c.participants : [])) {
    const pc = calls.pcs.get(p.device);
    const stream = calls.streams.get(p.device);
    let media = box.querySelector(`[data-device="${p.device}"] video`);
    if (!media) media = el("video", { autoplay: true, playsinline: true });
    if (stream && media.srcObject !== stream) media.srcObject = stream;
    const state = pc ? pc.connectionState : "waiting";
    tiles.push(el("figure", { class: "tile", "data-device": p.device },
      media, el("figcaption", {}, `${p.user}${state === "connected" ? "" : ` (${state})`}`)));
  }
  box.replaceChildren(...tiles);
}

// What each connection receives: frames decoded and audio received, per device.
async function callStats() {
  const out = {};
  for (const [device, pc] of calls.pcs) {
    const s = { state: pc.connectionState, framesDecoded: 0, audioPackets: 0, audioSamples: 0, videoBytes: 0, audioBytes: 0 };
    (await pc.getStats()).forEach((r) => {
      if (r.type !== "inbound-rtp") return;
      if (r.kind === "video") { s.framesDecoded += r.framesDecoded || 0; s.videoBytes += r.bytesReceived || 0; }
      if (r.kind === "audio") {
        s.audioPackets += r.packetsReceived || 0;
        s.audioSamples += r.totalSamplesReceived || 0;
        s.audioBytes += r.bytesReceived || 0;
      }
    });
    out[device] = s;
  }
  return out;
}

// A soft two-tone ring, made here (no sound file): silent where the browser forbids audio
// before the person touched the page.
function startRing() {
  if (calls.ring) return;
  try {
    const ctx = new AudioContext();
    const gain = ctx.createGain();
    gain.gain.value = 0;
    gain.connect(ctx.destination);
    for (const f of [440, 480]) {
      const o = ctx.createOscillator();
      o.frequency.value = f;
      o.connect(gain);
      o.start();
    }
    let on = false;
    const timer = setInterval(() => { on = !on; gain.gain.value = on ? 0.05 : 0; }, 1000);
    calls.ring = { ctx, timer };
  } catch (_) { /* no audio: the banner still shows */ }
}

function stopRing() {
  if (!calls.ring) return;
  clearInterval(calls.ring.timer);
  calls.ring.ctx.close().catch(() => {});
  calls.ring = null;
}
