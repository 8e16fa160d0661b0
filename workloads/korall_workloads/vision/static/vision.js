// The vision page: the camera picture with its detection boxes drawn here, in the browser, on a canvas.
//
// The server never draws or re-encodes for the page. The detections come from /detections/stream (one event per
// inferred frame, with its frame index); the picture from /snapshot.jpg?boxes=false, fetched only when a newer
// result than the one on screen has arrived and the tab is visible, at most MAX_FPS times a second. The snapshot
// says which frame it is (X-Frame-Index), and the page draws that frame with that frame's detections, so a box
// never lands on the wrong picture. The server encodes each frame once however many pages watch.
// Without a camera the page offers an upload box that sends a photo to /infer and draws its boxes the same way.

import {
  ago, api, deliveryProblem, fillFacts, fixed, pollHealth, showProblems, sleep, start, stream, unreachable,
} from "./korall.js";

const MAX_FPS = 10;
const KEEP_RESULTS = 64; // results by frame index, waiting for their picture
const HISTORY_S = 60;
const FORGET_LABEL_S = 600;
const PALETTE = ["#ffb000", "#00b4ff", "#38d430", "#ff4fd8", "#ff5a36", "#b78cff", "#00d6b4", "#ffe14d"];

const $ = (id) => document.getElementById(id);
const colour = (classId) => PALETTE[Math.abs(classId) % PALETTE.length];

const results = new Map();
let newest = -1;
let drawn = -1;
let wake = null; // resolves the frame loop's wait when a newer result arrives
let liveStream = null;
let lastLatency = null;
const labels = new Map(); // label -> {seen: [[unix s, score]...], last: unix s}

start();

// -- /health: the problems in words, the camera and model facts ------------------------------------------------

pollHealth((health, error) => {
  if (error) {
    showProblems([unreachable(error)]);
    $("summary").textContent = "no answer";
    return;
  }
  const problems = [];
  const model = health.model || {};
  if (model.state === "failed") problems.push(`The model failed to load: ${model.error}`);
  else if (model.state !== "ready") problems.push("The model is still loading.");
  const camera = health.camera;
  if (camera && camera.state !== "streaming") problems.push(cameraProblem(camera));
  const delivery = deliveryProblem(health.events);
  if (delivery) problems.push(delivery);
  showProblems(problems);
  renderModel(model);
  renderCamera(camera);
});

function cameraProblem(camera) {
  const words = {
    connecting: "The camera is connecting",
    reconnecting: "The camera was lost and is reconnecting",
    stalled: "The camera stalled",
    failed: "The camera failed",
    stopped: "The camera is stopped",
  };
  return `${words[camera.state] || `Camera ${camera.state}`}: ${camera.reason}`;
}

function renderModel(model) {
  fillFacts($("model-facts"), [
    ["state", model.state],
    ["model", model.name],
    ["accelerator", model.accelerator],
    ["why not the Edge TPU", model.fallback_reason],
    ["CPU threads", model.num_threads],
    ["input", model.input_shape ? model.input_shape.join(" × ") : null],
  ]);
}

function profile(p) {
  if (!p) return null;
  const format = p.fourcc || p.pixel_format || "";
  const how = [p.kind, p.backend].filter(Boolean).join(", ");
  return `${p.width}×${p.height} ${format} @ ${fixed(p.fps, 1)} fps${how ? ` (${how})` : ""}`;
}

function renderCamera(camera) {
  if (!camera) {
    // No CAPTURE_SOURCE: the upload box is the page.
    $("summary").textContent = "no camera configured: try a photo";
    for (const id of ["live", "camera-card", "history-card"]) $(id).hidden = true;
    $("upload-details").open = true;
    return;
  }
  for (const id of ["live", "camera-card", "history-card"]) $(id).hidden = false;
  $("summary").textContent = `camera ${camera.state}`;
  $("summary").className = `summary ${camera.state === "streaming" ? "" : "status-bad"}`;
  const dropped = camera.frames_dropped || {};
  fillFacts($("camera-facts"), [
    ["state", `${camera.state} for ${fixed(camera.for_s, 0)} s`],
    ["why", camera.reason],
    ["source", camera.source],
    ["negotiated", profile(camera.negotiated) || "not yet"],
    ["requested", profile(camera.requested)],
    ["capture", `${fixed(camera.capture_fps, 1)} fps`],
    ["inference", `${fixed(camera.inferred_fps, 1)} fps, every ${camera.sample_every} frame(s)`],
    ["inference latency", lastLatency],
    ["dropped", `${dropped.superseded || 0} superseded, ${dropped.ring_full || 0} ring full`],
    ["reconnects", camera.reconnects],
  ]);
  if (drawn < 0) {
    $("frame-note").textContent = camera.state === "streaming" ? "waiting for the first frame…" : `no picture: the camera is ${camera.state}`;
  }
  if (!liveStream) {
    liveStream = stream("detections/stream", { onEvent: onResult, onState: onStreamState });
    frameLoop();
  }
}

function onStreamState(state, error) {
  if (state === "retrying") $("frame-note").textContent = `live stream interrupted (${error ? error.message : "ended"}); reconnecting…`;
}

// -- the detection stream --------------------------------------------------------------------------------------

function onResult(event) {
  if (event.type !== "detections") return;
  const result = JSON.parse(event.data);
  results.set(result.frame_index, result);
  if (results.size > KEEP_RESULTS) results.delete(results.keys().next().value);
  newest = Math.max(newest, result.frame_index);
  const t = result.timings_ms || {};
  lastLatency = `${fixed(t.invoke, 1)} ms invoke, ${fixed(t.frame_to_result, 0)} ms frame to result`;
  remember(result);
  if (wake) wake();
}

function remember(result) {
  const now = Date.now() / 1000; // this browser's clock, not the node's: an edge node's clock may be off
  const best = new Map();
  for (const d of result.detections) best.set(d.label, Math.max(best.get(d.label) || 0, d.score));
  for (const [label, score] of best) {
    const entry = labels.get(label) || { seen: [], last: 0, classId: 0 };
    entry.seen.push([now, score]);
    entry.last = now;
    entry.classId = result.detections.find((d) => d.label === label).class_id;
    labels.set(label, entry);
  }
}

function renderHistory() {
  const now = Date.now() / 1000;
  const rows = [];
  for (const [label, entry] of [...labels].sort((a, b) => b[1].last - a[1].last)) {
    entry.seen = entry.seen.filter(([t]) => now - t <= HISTORY_S);
    if (now - entry.last > FORGET_LABEL_S) {
      labels.delete(label);
      continue;
    }
    const row = document.createElement("tr");
    row.dataset.label = label;
    const best = entry.seen.reduce((m, [, s]) => Math.max(m, s), 0);
    for (const text of [label, ago(now - entry.last), String(entry.seen.length), entry.seen.length ? fixed(best, 2) : "–"]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    const strip = document.createElement("canvas");
    strip.width = HISTORY_S * 2;
    strip.height = 12;
    strip.setAttribute("aria-label", `${label} over the last minute`);
    const ctx = strip.getContext("2d");
    ctx.fillStyle = colour(entry.classId);
    for (const [t] of entry.seen) ctx.fillRect(Math.floor((HISTORY_S - (now - t)) * 2), 0, 2, 12);
    const cell = document.createElement("td");
    cell.append(strip);
    row.append(cell);
    rows.push(row);
  }
  $("history").tBodies[0].replaceChildren(...rows);
}
setInterval(renderHistory, 1000);

// -- the picture -------------------------------------------------------------------------------------------------

async function waitForNewer() {
  while (newest <= drawn || document.hidden) {
    await new Promise((resolve) => {
      wake = resolve;
      setTimeout(resolve, 1000); // also re-checks visibility
    });
  }
}

async function resultFor(index) {
  for (let waited = 0; !results.has(index) && waited < 1000; waited += 50) await sleep(50);
  return results.get(index) || null;
}

async function frameLoop() {
  for (;;) {
    await waitForNewer();
    const began = performance.now();
    try {
      const response = await api("snapshot.jpg?boxes=false&quality=80");
      const index = Number(response.headers.get("X-Frame-Index"));
      const bitmap = await createImageBitmap(await response.blob());
      const result = await resultFor(index);
      drawFrame($("frame"), bitmap, result ? result.detections : [], result ? result.image.width : bitmap.width);
      bitmap.close();
      $("frame").dataset.frameIndex = String(index);
      $("frame-note").textContent = result ? "" : "this frame's detections were skipped (slow connection)";
      $("now").dataset.empty = "nothing detected in this frame";
      showTags($("now"), result ? result.detections : []);
      drawn = Math.max(drawn, index);
    } catch (error) {
      $("frame-note").textContent = `no picture: ${error.message}`;
      await sleep(2000);
    }
    const spent = performance.now() - began;
    if (spent < 1000 / MAX_FPS) await sleep(1000 / MAX_FPS - spent);
  }
}

/** Draw `bitmap` and the detections' boxes (in pixels of an image `sourceWidth` wide) on `canvas`. */
function drawFrame(canvas, bitmap, detections, sourceWidth) {
  if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
  }
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  const scale = bitmap.width / (sourceWidth || bitmap.width);
  const line = Math.max(2, Math.round(Math.min(bitmap.width, bitmap.height) / 160));
  const font = Math.max(12, Math.round(bitmap.height / 28));
  ctx.font = `600 ${font}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  canvas.dataset.lineWidth = String(line);
  for (const d of detections) {
    const x0 = d.box.xmin * scale;
    const y0 = d.box.ymin * scale;
    const w = (d.box.xmax - d.box.xmin) * scale;
    const h = (d.box.ymax - d.box.ymin) * scale;
    ctx.strokeStyle = colour(d.class_id);
    ctx.lineWidth = line;
    ctx.strokeRect(x0, y0, w, h);
    const text = `${d.label} ${d.score.toFixed(2)}`;
    const tw = ctx.measureText(text).width + 8;
    const ty = y0 - font - 6 >= 0 ? y0 - font - 6 : y0;
    ctx.fillStyle = colour(d.class_id);
    ctx.fillRect(x0, ty, tw, font + 6);
    ctx.fillStyle = "#000";
    ctx.fillText(text, x0 + 4, ty + 3);
  }
}

/** The boxes on the picture as a list too (screen readers, and a quick read on a small phone). */
function showTags(list, detections) {
  list.replaceChildren(
    ...detections.map((d) => {
      const item = document.createElement("li");
      item.textContent = `${d.label} ${d.score.toFixed(2)}`;
      item.style.borderColor = colour(d.class_id);
      item.dataset.label = d.label;
      item.dataset.score = String(d.score);
      item.dataset.box = [d.box.xmin, d.box.ymin, d.box.xmax, d.box.ymax].map((v) => Math.round(v)).join(",");
      return item;
    }),
  );
}

// -- a photo of one's own, through /infer -------------------------------------------------------------------------

$("upload").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  const status = $("upload-status");
  const canvas = $("upload-canvas");
  status.className = "";
  status.textContent = `detecting in ${file.name}…`;
  try {
    const response = await api("infer", {
      method: "POST",
      body: file,
      headers: { "Content-Type": file.type || "application/octet-stream" },
    });
    const reply = await response.json();
    const found = reply.detections.length;
    status.textContent = `${found} object${found === 1 ? "" : "s"} in ${reply.image.width}×${reply.image.height}, `
      + `${fixed(reply.timings_ms.invoke, 1)} ms on ${reply.model.accelerator}`;
    showTags($("upload-list"), reply.detections);
    try {
      const bitmap = await createImageBitmap(file);
      drawFrame(canvas, bitmap, reply.detections, reply.image.width);
      bitmap.close();
      canvas.hidden = false;
    } catch {
      canvas.hidden = true; // a format the service reads but this browser does not (TIFF, say): the list stays
    }
  } catch (error) {
    status.className = "status-bad";
    status.textContent = `The service could not use ${file.name}: ${error.detail || error.message}`;
    canvas.hidden = true;
    $("upload-list").replaceChildren();
  }
});
