// Shared by the vision and audio pages: the access token, fetch with it, Server-Sent Events read over fetch, and
// the /health problems in words. Plain ES module, no build step, nothing loaded from elsewhere.
//
// Token: open the page as  <service URL>/#token=SECRET  (the fragment never reaches the server or its
// logs); the page keeps the token in sessionStorage (this tab only), removes it from the address bar and sends it
// as `Authorization: Bearer SECRET` on every call. A call answered 401 or 403 shows a field to type one in.
// Streams are read with fetch, not EventSource, because EventSource cannot send headers.

const TOKEN_KEY = "korall.token";

export class HttpError extends Error {
  constructor(status, code, message) {
    super(`${message} (HTTP ${status} ${code})`);
    this.status = status;
    this.code = code;
    this.detail = message;
  }
}

export class AuthNeeded extends HttpError {}

export function takeTokenFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token === null) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  params.delete("token");
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

async function errorOf(response) {
  let code = `http_${response.status}`;
  let message = response.statusText || "request failed";
  try {
    const body = await response.json();
    if (body && body.error) ({ code, message } = body.error);
  } catch {
    // not the service's JSON error (a proxy's page, say): keep the status line
  }
  const Kind = response.status === 401 || response.status === 403 ? AuthNeeded : HttpError;
  return new Kind(response.status, code, message);
}

/** fetch() with the bearer token; resolves to the Response when it is 2xx, else throws HttpError (or AuthNeeded). */
export async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const secret = token();
  if (secret) headers.set("Authorization", `Bearer ${secret}`);
  const response = await fetch(path, { cache: "no-store", ...options, headers });
  if (response.ok) return response;
  const error = await errorOf(response);
  if (error instanceof AuthNeeded) askForToken(error);
  throw error;
}

export async function getJson(path) {
  return (await api(path)).json();
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The token form in the page header: shown when a call is refused; a new token reloads the page with it. */
function askForToken(error) {
  const form = document.getElementById("auth");
  if (!form) return;
  const why = form.querySelector(".auth-why");
  if (why) why.textContent = token() ? `The token was refused: ${error.detail}` : "This service needs an access token.";
  form.hidden = false;
}

function wireTokenForm() {
  const form = document.getElementById("auth");
  if (!form) return;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = form.querySelector("input").value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
}

/**
 * Read a Server-Sent Events endpoint over fetch (so that it carries the token) and reconnect with a growing pause
 * when it ends or fails, resuming with Last-Event-ID. onEvent({type, data, id}); onState("open" | "retrying", err).
 * Returns {stop()}.
 */
export function stream(path, { onEvent, onState = () => {}, resumeFrom = null }) {
  let stopped = false;
  let controller = null;
  let lastId = resumeFrom;
  let pause = 1000;

  async function readOnce() {
    controller = new AbortController();
    const headers = { Accept: "text/event-stream" };
    if (lastId !== null) headers["Last-Event-ID"] = String(lastId);
    const response = await api(path, { headers, signal: controller.signal });
    onState("open");
    pause = 1000;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let type = "message";
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const lines = buffer.split("\n");
      buffer = lines.pop();
      for (const raw of lines) {
        const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
        if (line === "") {
          if (data.length) onEvent({ type, data: data.join("\n"), id: lastId });
          type = "message";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue; // a keep-alive comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "data") data.push(value);
        else if (field === "event") type = value;
        else if (field === "id") lastId = value;
        else if (field === "retry" && /^\d+$/.test(value)) pause = Number(value);
      }
    }
  }

  (async () => {
    while (!stopped) {
      let failure = null;
      try {
        await readOnce();
      } catch (error) {
        failure = error;
      }
      if (stopped) return;
      if (failure instanceof AuthNeeded) return; // the token form is up; a new token reloads the page
      onState("retrying", failure);
      await sleep(pause);
      pause = Math.min(pause * 2, 15000);
    }
  })();
  return {
    stop() {
      stopped = true;
      if (controller) controller.abort();
    },
  };
}

/** Poll /health every `everyMs`; render(body) on success, render(null, error) when the service does not answer. */
export function pollHealth(render, everyMs = 2000) {
  async function tick() {
    try {
      render(await getJson("health"), null);
    } catch (error) {
      render(null, error);
    }
    setTimeout(tick, document.hidden ? everyMs * 3 : everyMs);
  }
  tick();
}

/** The problem banner: one line per problem, hidden when there is none. */
export function showProblems(problems) {
  const box = document.getElementById("problems");
  const list = box.querySelector("ul");
  const text = problems.join("\n");
  if (box.dataset.text === text) return;
  box.dataset.text = text;
  list.replaceChildren(
    ...problems.map((problem) => {
      const item = document.createElement("li");
      item.textContent = problem;
      return item;
    }),
  );
  box.hidden = problems.length === 0;
}

/** The service did not answer /health: say so in words (the usual cause through port-forward is a dead tunnel). */
export function unreachable(error) {
  if (error instanceof AuthNeeded) return "Access token needed: type one in above.";
  if (error instanceof HttpError) return `The service answered /health with an error: ${error.message}`;
  return `The service does not answer (${error.message}). Is it running, and is kubectl port-forward still up?`;
}

/** Event delivery (MQTT) problems, shared by both services' /health. */
export function deliveryProblem(events) {
  if (!events || !events.enabled) return null;
  if (["connected", "connecting"].includes(events.state)) return null;
  return `Event delivery ${events.state.replaceAll("_", " ")}: ${events.reason || "no reason given"}`;
}

/** Fill a <dl> from [term, value] pairs (values as text; null and undefined skipped). */
export function fillFacts(dl, pairs) {
  const nodes = [];
  for (const [term, value] of pairs) {
    if (value === null || value === undefined || value === "") continue;
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = String(value);
    nodes.push(dt, dd);
  }
  dl.replaceChildren(...nodes);
}

export function ago(seconds) {
  if (seconds < 1) return "now";
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

export const fixed = (value, digits = 1) => (typeof value === "number" ? value.toFixed(digits) : "–");

export function start() {
  takeTokenFromFragment();
  wireTokenForm();
}
