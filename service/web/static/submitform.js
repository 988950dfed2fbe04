// The submit form: posts JSON to POST /jobs (the API validates; nothing here second-guesses it) and shows the
// problem-details errors beside the fields they name.
import { apiJson, el, showError } from "./common.js";

const FIELDS = ["jobName", "program", "arguments", "priority", "timeoutSeconds", "maxAttempts", "runAt"];

function fieldOf(name) {
  // "arguments[3]" belongs to the arguments box; unknown names to the form as a whole.
  const base = name.replace(/\[\d+\]$/, "");
  return FIELDS.includes(base) ? base : null;
}

function numberOrText(raw) {
  // A number when it reads as one; otherwise the text as typed, so the API names the field in its answer.
  const trimmed = raw.trim();
  if (trimmed === "") return undefined;
  const value = Number(trimmed);
  return Number.isFinite(value) ? value : trimmed;
}

function bodyOf(form) {
  const data = new FormData(form);
  const body = { jobName: data.get("jobName") };
  const program = data.get("program");
  if (program) body.program = program;
  const argumentText = data.get("arguments").replace(/\r\n/g, "\n");
  if (argumentText !== "") body.arguments = argumentText.replace(/\n$/, "").split("\n");
  for (const name of ["priority", "timeoutSeconds", "maxAttempts"]) {
    const value = numberOrText(data.get(name));
    if (value !== undefined) body[name] = value;
  }
  const runAt = data.get("runAt");
  if (runAt) {
    const moment = new Date(runAt); // datetime-local is the browser's local time; the API wants an offset
    body.runAt = Number.isNaN(moment.getTime()) ? runAt : moment.toISOString();
  }
  return body;
}

function clearErrors(form) {
  showError(form.querySelector("#submit-detail"), "");
  for (const name of FIELDS) {
    showError(form.querySelector(`#error-${name}`), "");
    form.querySelector(`#field-${name}`).removeAttribute("aria-invalid");
  }
}

function showProblem(form, error) {
  const problem = error.problem;
  let placed = false;
  for (const item of problem?.errors || []) {
    const name = fieldOf(item.field);
    if (!name) continue;
    const box = form.querySelector(`#error-${name}`);
    const line = item.field === name ? item.message : `${item.field}: ${item.message}`;
    showError(box, box.hidden ? line : `${box.textContent}; ${line}`);
    form.querySelector(`#field-${name}`).setAttribute("aria-invalid", "true");
    placed = true;
  }
  showError(form.querySelector("#submit-detail"), error.message);
  if (placed) form.querySelector("[aria-invalid=true]").focus();
}

export async function attachSubmitForm(form, onSubmitted) {
  const select = form.querySelector("#field-program");
  const { body: options } = await apiJson("/ui/api/submit-options");
  select.replaceChildren(...options.programs.map((name) => el("option", { value: name, text: name, selected: name === "default" })));
  form.querySelector("#field-maxAttempts").placeholder = String(options.defaultMaxAttempts);
  form.querySelector("#field-timeoutSeconds").placeholder = options.defaultTimeoutSeconds ?? "none";
  const result = form.querySelector("#submit-result");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    result.replaceChildren();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const { body: job } = await apiJson("/jobs", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(bodyOf(form)),
      });
      result.replaceChildren("Submitted ", el("a", { href: `/ui/jobs/${job.jobId}`, text: job.jobId }));
      onSubmitted?.(job);
    } catch (error) {
      showProblem(form, error);
    } finally {
      button.disabled = false;
    }
  });
  return options;
}
