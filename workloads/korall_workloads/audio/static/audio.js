// The audio page: silence, speech and loud-noise events on one scrolling timeline, a live level meter and the state.
//
// One clock: the service's audio time (seconds of audio since the source started), which the events' start_s and
// end_s and the level stream's frames all use. /events/stream brings the events (the history first: the page asks
// to resume after id 0); /level/stream brings one record per analysed chunk: the level of each 32 ms frame in it
// and the events under way, which the timeline draws as open bars up to now.

import {
  deliveryProblem, fillFacts, fixed, getJson, pollHealth, showProblems, start, stream, unreachable,
} from "./korall.js";

const $ = (id) => document.getElementById(id);
const LANES = [
  ["speech", "speech"],
  ["loud_noise", "loud noise"],
  ["silence", "silence"],
];
const COLOURS = { silence: "#9aa5b1", speech: "#2e9e4f", loud_noise: "#d9480f" };
const METER_MIN = -90;
const KEEP_EVENTS = 1000;
const KEEP_FRAMES_S = 660; // a little over the longest span shown
const LIST_EVENTS = 200;

const events = new Map(); // id -> event record
let frames = []; // [audio s, dBFS] of each 32 ms frame, oldest first
let chunks = []; // [start s, end s, dBFS] of the chunks heard before this page opened (GET /chunks)
let level = null; // the latest level record
let levelAt = 0; // performance.now() when it came
let capture = null; // /health's capture block
let spanS = 120;
let meterQueue = []; // [due ms, dBFS]: the frames of the last chunk, played back over its duration
let peakHold = [METER_MIN, 0];

start();

// -- /health ----------------------------------------------------------------------------------------------------

pollHealth((health, error) => {
  if (error) {
    showProblems([unreachable(error)]);
    $("summary").textContent = "no answer";
    return;
  }
  capture = health.capture;
  const problems = [];
  if (capture.error) {
    const retry = capture.next_retry_s ? `; retrying in ${fixed(capture.next_retry_s, 1)} s` : "";
    problems.push(`The audio source fails: ${capture.error}${retry}`);
  }
  if (capture.warning) problems.push(capture.warning);
  const delivery = deliveryProblem(health.events);
  if (delivery) problems.push(delivery);
  showProblems(problems);
  fillFacts($("source-facts"), [
    ["state", capture.state],
    ["source", capture.source],
    ["device", capture.source_description],
    ["audio heard", `${fixed(capture.audio_s, 1)} s in ${capture.chunks} chunks`],
    ["overflows", `${capture.overflows.ring} ring, ${capture.overflows.portaudio} PortAudio`],
    ["silence below", `${capture.thresholds.silence_dbfs} dBFS`],
    ["loud from", `${capture.thresholds.loud_dbfs} dBFS`],
    ["attempts to open", capture.attempts],
  ]);
  placeMark(".mark.silence", capture.thresholds.silence_dbfs);
  placeMark(".mark.loud", capture.thresholds.loud_dbfs);
  renderNow();
});

// -- the streams --------------------------------------------------------------------------------------------------

stream("events/stream", {
  resumeFrom: 0, // the service replays the history it keeps, then goes live
  onEvent(message) {
    if (message.type === "error") return;
    const record = JSON.parse(message.data);
    events.set(record.id, record);
    if (events.size > KEEP_EVENTS) events.delete(events.keys().next().value);
    renderList();
  },
});

getJson("chunks?limit=120")
  .then((body) => {
    chunks = body.chunks.map((c) => [c.start_s, c.end_s, c.dbfs]);
  })
  .catch(() => {}); // the level lane then starts when the page opened; /health says why the service fails

stream("level/stream", {
  onEvent(message) {
    if (message.type !== "level") return;
    level = JSON.parse(message.data);
    levelAt = performance.now();
    const { start_s: first, step_s: step, dbfs } = level.frames;
    const known = frames.length ? frames[frames.length - 1][0] : -Infinity;
    dbfs.forEach((value, i) => {
      const t = first + i * step;
      if (t > known) frames.push([t, value]);
    });
    const horizon = level.now_s - KEEP_FRAMES_S;
    if (frames.length && frames[0][0] < horizon) frames = frames.filter(([t]) => t >= horizon);
    const now = performance.now();
    meterQueue = dbfs.map((value, i) => [now + i * step * 1000, value]);
    $("level").textContent = `level ${fixed(level.dbfs, 1)} dBFS over the last chunk, peak ${fixed(level.peak_dbfs, 1)} dBFS`;
    renderNow();
  },
});

// -- now: the state in words and the meter ------------------------------------------------------------------------

function renderNow() {
  let text = "–";
  if (capture && capture.state !== "capturing") {
    text = {
      starting: "starting…",
      error: "no audio: the source fails",
      finished: "finished: the whole file has been heard",
      stopped: "stopped",
    }[capture.state] || capture.state;
  } else if (level) {
    const open = level.open || {};
    const parts = LANES.filter(([type]) => type in open).map(([type, name]) => `${name} since ${fixed(open[type], 1)} s`);
    text = parts.length ? parts.join(" + ") : "sound (nothing recognised)";
  }
  $("now").textContent = text;
  $("now").dataset.open = level ? Object.keys(level.open || {}).join(" ") : "";
  const capturing = capture && capture.state === "capturing";
  $("summary").textContent = !capture ? "connecting…" : capturing ? `capturing · ${text}` : capture.state;
}

function meterPosition(dbfs) {
  return Math.max(0, Math.min(1, (dbfs - METER_MIN) / -METER_MIN)) * 100;
}

function placeMark(selector, dbfs) {
  document.querySelector(`#meter ${selector}`).style.left = `${meterPosition(dbfs)}%`;
}

let meterLevel = METER_MIN;
function tickMeter(now) {
  let current = null;
  while (meterQueue.length && meterQueue[0][0] <= now) current = meterQueue.shift()[1];
  if (current === null && now - peakHold[1] <= 1500) return;
  const meter = $("meter");
  if (current !== null) {
    meterLevel = current;
    meter.querySelector(".fill").style.width = `${meterPosition(current)}%`;
    meter.setAttribute("aria-valuenow", current.toFixed(1));
    meter.dataset.dbfs = current.toFixed(1);
    const loud = capture && current >= capture.thresholds.loud_dbfs;
    meter.querySelector(".fill").style.background = loud ? COLOURS.loud_noise : COLOURS.speech;
  }
  if (meterLevel >= peakHold[0] || now - peakHold[1] > 1500) peakHold = [meterLevel, now]; // held for 1.5 s
  meter.querySelector(".peak").style.left = `${meterPosition(peakHold[0])}%`;
}

// -- the timeline -------------------------------------------------------------------------------------------------

for (const button of document.querySelectorAll("#spans button")) {
  button.addEventListener("click", () => {
    spanS = Number(button.dataset.span);
    for (const other of document.querySelectorAll("#spans button")) other.setAttribute("aria-pressed", String(other === button));
  });
}

/** Audio time now: the latest heard, moving on in real time until the next chunk comes (at most 2 s). */
function audioNow(now) {
  if (!level) return 0;
  const capturing = capture && capture.state === "capturing";
  return level.now_s + (capturing ? Math.min((now - levelAt) / 1000, 2) : 0);
}

function clockLabel(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

function drawTimeline(now) {
  const canvas = $("timeline");
  const ratio = window.devicePixelRatio || 1;
  const width = Math.round(canvas.clientWidth * ratio);
  const height = Math.round(canvas.clientHeight * ratio);
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  const gutter = 74;
  const axis = 18;
  const laneH = (h - axis) / (LANES.length + 1.5); // the level gets one and a half lanes at the bottom
  const nowT = audioNow(now);
  const right = Math.max(nowT, spanS); // fills from the left, then scrolls
  const left = right - spanS;
  const x = (t) => gutter + ((t - left) / spanS) * (w - gutter - 4);
  ctx.clearRect(0, 0, w, h);
  ctx.font = "12px system-ui, sans-serif";
  ctx.textBaseline = "middle";

  LANES.forEach(([type, name], lane) => {
    const y = lane * laneH;
    ctx.fillStyle = lane % 2 ? "#f7f8fa" : "#eef0f3";
    ctx.fillRect(gutter, y, w - gutter, laneH);
    ctx.fillStyle = "#5d6875";
    ctx.fillText(name, 4, y + laneH / 2);
    ctx.fillStyle = COLOURS[type];
    for (const e of events.values()) {
      if (e.type !== type || e.end_s < left) continue;
      const x0 = Math.max(x(e.start_s), gutter);
      ctx.fillRect(x0, y + 3, Math.max(x(e.end_s) - x0, 2), laneH - 6);
    }
    const live = level && level.open && capture && capture.state === "capturing";
    const open = live ? level.open[type] : undefined;
    if (open !== undefined) {
      // under way: from its start to now, lighter until it closes
      const x0 = Math.max(x(open), gutter);
      ctx.globalAlpha = 0.45;
      ctx.fillRect(x0, y + 3, Math.max(x(nowT) - x0, 2), laneH - 6);
      ctx.globalAlpha = 1;
    }
  });

  // the level lane: METER_MIN..0 dBFS bottom to top, with the silence and loud thresholds dashed
  const top = LANES.length * laneH;
  const bottom = h - axis;
  const levelY = (dbfs) => bottom - (meterPosition(dbfs) / 100) * (bottom - top - 2);
  ctx.fillStyle = "#eef0f3";
  ctx.fillRect(gutter, top, w - gutter, bottom - top);
  ctx.fillStyle = "#5d6875";
  ctx.fillText("level", 4, (top + bottom) / 2);
  ctx.fillStyle = "#0b6e8a";
  const firstFrame = frames.length ? frames[0][0] : Infinity;
  for (const [from, to, dbfs] of chunks) {
    // before the page opened: one bar per chunk (its RMS level)
    if (to < left || from >= firstFrame || dbfs <= METER_MIN) continue;
    const y = levelY(dbfs);
    ctx.fillRect(x(from), y, Math.max(x(Math.min(to, firstFrame)) - x(from), 1), bottom - y);
  }
  for (const [t, dbfs] of frames) {
    if (t < left || dbfs <= METER_MIN) continue;
    const y = levelY(dbfs);
    ctx.fillRect(x(t), y, Math.max(x(t + 0.032) - x(t), 1), bottom - y);
  }
  if (capture) {
    ctx.setLineDash([4, 3]);
    for (const [dbfs, stroke] of [[capture.thresholds.silence_dbfs, "#5d6875"], [capture.thresholds.loud_dbfs, COLOURS.loud_noise]]) {
      ctx.strokeStyle = stroke;
      ctx.beginPath();
      ctx.moveTo(gutter, levelY(dbfs) + 0.5);
      ctx.lineTo(w, levelY(dbfs) + 0.5);
      ctx.stroke();
    }
    ctx.setLineDash([]);
  }

  // the axis, in audio time
  const step = spanS <= 30 ? 5 : spanS <= 120 ? 15 : 60;
  ctx.fillStyle = "#5d6875";
  ctx.textAlign = "center";
  for (let t = Math.ceil(Math.max(left, 0) / step) * step; t <= right; t += step) {
    ctx.fillRect(x(t), bottom, 1, 4);
    const label = clockLabel(t);
    const half = ctx.measureText(label).width / 2;
    if (x(t) + half <= w && x(t) - half >= 0) ctx.fillText(label, x(t), bottom + axis / 2 + 2);
  }
  ctx.textAlign = "left";
}

function renderList() {
  const latest = [...events.values()].slice(-LIST_EVENTS).reverse();
  $("events").replaceChildren(
    ...latest.map((e) => {
      const item = document.createElement("li");
      item.className = e.type;
      item.dataset.type = e.type;
      item.dataset.start = String(e.start_s);
      item.dataset.end = String(e.end_s);
      const name = LANES.find(([type]) => type === e.type)[1];
      item.textContent = `${name} ${clockLabel(e.start_s)}–${clockLabel(e.end_s)} `
        + `(${fixed(e.start_s, 2)}–${fixed(e.end_s, 2)} s, ${fixed(e.duration_s, 2)} s), peak ${fixed(e.peak_dbfs, 1)} dBFS`;
      return item;
    }),
  );
}

let drawnAt = 0;
function frame(now) {
  tickMeter(now);
  if (now - drawnAt >= 100) {
    // ten redraws a second scroll smoothly enough and leave a phone's CPU alone
    drawTimeline(now);
    drawnAt = now;
  }
  requestAnimationFrame(frame);
}
requestAnimationFrame(frame);
