// One job: its fields, its attempts, the output of one attempt followed live (the API's SSE, read through fetch),
// and cancel / retry behind a confirmation.
import {
  apiJson, el, followEvents, formatDuration, formatKib, formatTime, refreshWhileVisible, showError, statusBadge,
} from "./common.js";

const FINAL = ["completed", "crashed", "cancelled"];
const REOPENABLE = ["crashed", "cancelled"];
const jobId = document.body.dataset.jobId;
const output = document.getElementById("output");
const outputState = document.getElementById("output-state");
let job = null;
// Which attempt's output is shown: the newest unless the user picked one.
let pickedAttempt = null;
let shown = null; // { attempt, stream, controller }
let stream = "stdout";

function field(label, value) {
  return [el("dt", { text: label }), el("dd", {}, value ?? "–")];
}

function renderJob() {
  document.title = `${job.jobId} ${job.jobName} · Job Manager`;
  document.getElementById("job-name").textContent = `${job.jobId} · ${job.jobName}`;
  document.getElementById("job-status").replaceWith(Object.assign(statusBadge(job.status), { id: "job-status" }));
  const cancelling = job.cancelRequestedAt && !FINAL.includes(job.status);
  document.getElementById("job-fields").replaceChildren(
    ...field("Program", `${job.programName} (${job.program})`),
    ...field("Arguments", job.args.length ? el("ol", { class: "args" }, ...job.args.map((a) => el("li", {}, el("code", { text: a })))) : "none"),
    ...field("Attempts", `${job.attempts} of ${job.maxAttempts} (${job.retries} retries)`),
    ...field("Exit code", job.exitCode === null ? null : String(job.exitCode)),
    ...field("Duration", formatDuration(job.duration)),
    ...field("Priority", String(job.priority)),
    ...field("Timeout", job.timeoutSeconds === null ? "none" : `${job.timeoutSeconds} s`),
    ...field("Run at", job.runAt ? formatTime(job.runAt) : "as soon as a slot is free"),
    ...field("Created", formatTime(job.createdAt)),
    ...field("Started", formatTime(job.startedAt)),
    ...field("Finished", formatTime(job.finishedAt)),
    ...(cancelling ? field("Cancel", `requested ${formatTime(job.cancelRequestedAt)}; the attempt is being stopped`) : []),
  );
  document.getElementById("cancel-button").disabled = FINAL.includes(job.status) || Boolean(cancelling);
  document.getElementById("retry-button").disabled = !REOPENABLE.includes(job.status);
}

function renderAttempts() {
  const rows = job.attemptHistory.map((a) => el("tr", { class: a.attempt === shown?.attempt ? "selected" : null },
    el("td", { text: a.attempt }),
    el("td", {}, el("span", { class: `badge outcome-${a.outcome}`, text: a.outcome.replace("_", " ") })),
    el("td", { class: "num", text: a.exitCode ?? "–" }),
    el("td", { class: "num", text: a.signal ?? "–" }),
    el("td", { text: a.nodeId }),
    el("td", { class: "num", text: formatDuration(a.duration) }),
    el("td", { class: "num", text: a.userCpuMs === null ? "–" : formatDuration(a.userCpuMs + (a.systemCpuMs || 0)) }),
    el("td", { class: "num", text: formatKib(a.maxRssKb) }),
    el("td", { class: "error-text", text: a.error || "" }),
    el("td", {}, el("button", { type: "button", class: "link", "aria-pressed": String(a.attempt === shown?.attempt),
      onclick: () => { pickedAttempt = a.attempt; showOutput(); }, text: "output" }))));
  document.getElementById("attempts-body").replaceChildren(
    ...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 10, class: "empty", text: "No attempt yet: the job waits for a slot or its run-at time." }))]));
}

// Follows the chosen attempt's output; a new choice (attempt or stream) starts a new stream.
function showOutput() {
  const newest = job.attemptHistory.at(-1)?.attempt ?? null;
  const attempt = pickedAttempt ?? newest;
  if (attempt === null || (shown && shown.attempt === attempt && shown.stream === stream)) { renderAttempts(); return; }
  shown?.controller.abort();
  const controller = new AbortController();
  shown = { attempt, stream, controller };
  renderAttempts();
  output.textContent = "";
  document.getElementById("output-which").textContent = `attempt ${attempt}, ${stream}`;
  outputState.textContent = "Following…";
  const path = `/jobs/${jobId}/attempts/${attempt}/output?stream=${stream}&follow=true`;
  followEvents(path, (type, data) => {
    if (type === "output") {
      const atBottom = output.scrollTop + output.clientHeight >= output.scrollHeight - 4;
      output.append(data);
      if (atBottom) output.scrollTop = output.scrollHeight;
    } else if (type === "end") {
      const end = JSON.parse(data);
      outputState.textContent = `Attempt ${attempt} ended: ${end.outcome}` +
        (end.exitCode !== null ? `, exit code ${end.exitCode}` : "") + (end.signal !== null ? `, signal ${end.signal}` : "");
    }
  }, controller.signal).catch((error) => { outputState.textContent = error.message; });
}

async function load() {
  try {
    ({ body: job } = await apiJson(`/jobs/${encodeURIComponent(jobId)}`));
  } catch (error) {
    if (error.status === 404) { showError(document.getElementById("job-error"), error.message); return false; }
    throw error;
  }
  renderJob();
  showOutput();
  return !FINAL.includes(job.status);
}

const loop = refreshWhileVisible(load);

for (const button of document.querySelectorAll("[data-stream]")) {
  button.addEventListener("click", () => {
    stream = button.dataset.stream;
    for (const other of document.querySelectorAll("[data-stream]")) other.setAttribute("aria-pressed", String(other === button));
    showOutput();
  });
}

function confirmAction(title, text, yes) {
  const dialog = document.getElementById("confirm-dialog");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-yes").textContent = yes;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true }));
}

async function act(action, title, text, yes) {
  if (!(await confirmAction(title, text, yes))) return;
  const result = document.getElementById("action-result");
  showError(document.getElementById("job-error"), "");
  try {
    const { body } = await apiJson(`/jobs/${encodeURIComponent(jobId)}/${action}`, { method: "POST" });
    result.textContent = action === "cancel"
      ? (body.status === "cancelled" ? "Cancelled." : "Cancel requested: the running attempt is being stopped.")
      : `Retried: attempt ${body.attempts + 1} is due.`;
  } catch (error) {
    showError(document.getElementById("job-error"), error.message);
  }
  pickedAttempt = null;
  loop.now();
}

document.getElementById("cancel-button").addEventListener("click", () =>
  act("cancel", `Cancel ${jobId}?`, "A waiting job is cancelled at once; a running attempt gets SIGTERM, then SIGKILL after the grace period.", "Cancel the job"));
document.getElementById("retry-button").addEventListener("click", () =>
  act("retry", `Retry ${jobId}?`, "The job runs again as a new attempt, due now.", "Retry the job"));
