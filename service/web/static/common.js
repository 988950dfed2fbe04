// Shared by every page: fetch with the bearer token, Server-Sent Events over fetch, the refresh loop, formatting
// and a little SVG. Plain ES modules, no build step, nothing from another host.

const TOKEN_KEY = "jobmanager.apiToken";
let tokenPrompt = null;

function authHeaders(extra = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { ...extra, Authorization: `Bearer ${token}` } : { ...extra };
}

// One dialog however many requests were refused at once; resolves false when the user gives up.
function askForToken(rejected) {
  if (tokenPrompt) return tokenPrompt;
  tokenPrompt = new Promise((resolve) => {
    const dialog = document.getElementById("token-dialog");
    const form = document.getElementById("token-form");
    const input = document.getElementById("token-input");
    const error = document.getElementById("token-error");
    error.hidden = !rejected;
    error.textContent = rejected ? "That token was refused; try another." : "";
    input.value = "";
    const finish = (ok) => {
      form.removeEventListener("submit", onSubmit);
      dialog.removeEventListener("cancel", onCancel);
      document.getElementById("token-cancel").removeEventListener("click", onCancel);
      if (dialog.open) dialog.close();
      tokenPrompt = null;
      resolve(ok);
    };
    const onSubmit = (event) => {
      event.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
      finish(true);
    };
    const onCancel = (event) => { event.preventDefault(); finish(false); };
    form.addEventListener("submit", onSubmit);
    dialog.addEventListener("cancel", onCancel);
    document.getElementById("token-cancel").addEventListener("click", onCancel);
    dialog.showModal();
    input.focus();
  });
  return tokenPrompt;
}

export class AuthCancelled extends Error {}

// fetch() on this service with the token; on 401 asks for a token and tries again.
export async function apiFetch(path, options = {}) {
  for (;;) {
    const sent = sessionStorage.getItem(TOKEN_KEY);
    const response = await fetch(path, { ...options, headers: authHeaders(options.headers) });
    if (response.status !== 401) return response;
    if (sent) sessionStorage.removeItem(TOKEN_KEY);
    if (!(await askForToken(Boolean(sent)))) throw new AuthCancelled("no API token given");
  }
}

// The JSON of a 2xx answer; otherwise throws an Error carrying the problem-details body.
export async function apiJson(path, options = {}) {
  const response = await apiFetch(path, options);
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const error = new Error(typeof body === "object" && body.detail ? body.detail : `${response.status} ${response.statusText}`);
    error.status = response.status;
    error.problem = typeof body === "object" ? body : null;
    throw error;
  }
  return { body, response };
}

// Server-Sent Events read through fetch(), because EventSource cannot send an Authorization header. Resumes
// after a dropped connection with Last-Event-ID; returns when the server closes the stream or `signal` aborts.
export async function followEvents(path, onEvent, signal) {
  let lastEventId = null;
  let ended = false;
  while (!ended && !signal.aborted) {
    let response;
    try {
      const headers = { Accept: "text/event-stream" };
      if (lastEventId !== null) headers["Last-Event-ID"] = lastEventId;
      response = await apiFetch(path, { headers, signal });
    } catch (error) {
      if (signal.aborted || error instanceof AuthCancelled) return;
      await pause(1000, signal);
      continue;
    }
    if (!response.ok) {
      const problem = await response.json().catch(() => null);
      throw new Error(problem?.detail || `${response.status} ${response.statusText}`);
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let event = { type: "message", data: [], id: null };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) { ended = true; break; }
        buffer += value;
        let newline;
        while ((newline = buffer.search(/\r\n|\n|\r/)) >= 0) {
          const line = buffer.slice(0, newline);
          buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
          if (line === "") {
            if (event.data.length) onEvent(event.type, event.data.join("\n"));
            if (event.id !== null) lastEventId = event.id;
            event = { type: "message", data: [], id: null };
          } else if (!line.startsWith(":")) {
            const colon = line.indexOf(":");
            const field = colon < 0 ? line : line.slice(0, colon);
            const data = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
            if (field === "event") event.type = data;
            else if (field === "data") event.data.push(data);
            else if (field === "id") event.id = data;
          }
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      await pause(1000, signal); // the connection dropped: resume where it stopped
    }
  }
}

function pause(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

// Calls `load` now and every data-refresh-ms while the tab is visible; a hidden tab asks nothing of the server,
// and becoming visible again refreshes at once. `load` returning false stops the loop (e.g. a finished job).
export function refreshWhileVisible(load) {
  const interval = Number(document.body.dataset.refreshMs) || 2000;
  const state = document.getElementById("live-state");
  let timer = null;
  let running = false;
  let again = false;
  let stopped = false;
  const tick = async () => {
    clearTimeout(timer);
    if (stopped) return;
    if (running) { again = true; return; }
    if (document.hidden) { state.textContent = "Paused (tab hidden)"; return; }
    running = true;
    try {
      const keepGoing = await load();
      state.textContent = `Live · updated ${new Date().toLocaleTimeString()}`;
      state.classList.remove("offline");
      if (keepGoing === false) { stopped = true; state.textContent = "Up to date"; }
    } catch (error) {
      if (error instanceof AuthCancelled) { stopped = true; state.textContent = "No API token"; return; }
      state.textContent = `Cannot reach the service (${error.message}); retrying`;
      state.classList.add("offline");
    } finally {
      running = false;
    }
    if (!stopped) timer = setTimeout(tick, again ? 0 : interval);
    again = false;
  };
  document.addEventListener("visibilitychange", () => { if (!document.hidden) tick(); });
  tick();
  return {
    now: () => { stopped = false; tick(); },
  };
}

// Formatting.
export function formatDuration(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return `${ms} ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} m ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} m`;
}

export function formatKib(kib) {
  if (kib === null || kib === undefined) return "–";
  if (kib < 1024) return `${kib} KiB`;
  if (kib < 1024 * 1024) return `${(kib / 1024).toFixed(1)} MiB`;
  return `${(kib / 1024 / 1024).toFixed(2)} GiB`;
}

export function formatTime(iso) {
  if (!iso) return "–";
  return new Date(iso).toLocaleString();
}

export function formatAgo(iso, now = Date.now()) {
  if (!iso) return "–";
  const seconds = Math.max(0, Math.round((now - new Date(iso).getTime()) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
}

export function percent(rate, digits = 1) {
  return rate === null || rate === undefined ? "–" : `${(rate * 100).toFixed(digits)} %`;
}

// DOM and SVG.
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  return fill(node, attributes, children);
}

const SVG_NS = "http://www.w3.org/2000/svg";

export function svg(tag, attributes = {}, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attributes, children);
}

function fill(node, attributes, children) {
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

export function statusBadge(status) {
  return el("span", { class: `badge status-${status}`, text: status });
}

export function showError(element, message) {
  element.textContent = message || "";
  element.hidden = !message;
}
