// The overview: counts by status, node slots, the last hour as a chart, and the recent jobs (filtered, paged by
// the API's keyset cursor). Refreshed by a short poll that pauses while the tab is hidden.
import { apiJson, el, formatAgo, formatDuration, refreshWhileVisible, showError, statusBadge, svg } from "./common.js";
import { attachSubmitForm } from "./submitform.js";

const PAGE_SIZE = 20;
const STATUSES = ["queued", "running", "retried", "completed", "crashed", "cancelled"];
// How the chart groups outcomes: every failure kind is one colour, so a bad minute stands out.
const OUTCOME_GROUPS = [
  { key: "succeeded", label: "succeeded", outcomes: ["succeeded"] },
  { key: "failed", label: "failed, killed, timed out, lost", outcomes: ["failed", "killed", "timed_out", "lost", "spawn_failed"] },
  { key: "cancelled", label: "cancelled", outcomes: ["cancelled"] },
];

const filtersForm = document.getElementById("filters");
const params = new URLSearchParams(location.search);
const filters = { status: params.get("status") || "", name: params.get("name") || "", program: params.get("program") || "" };
// Keyset paging: the cursors of the pages before this one (to go back), and of this one (null: the newest).
const cursorsBefore = [];
let cursor = null;
let nextCursor = null;
let highlightJobId = null;

for (const [name, value] of Object.entries(filters)) filtersForm.elements[name].value = value;

function jobsQuery() {
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  for (const [name, value] of Object.entries(filters)) if (value) query.set(name, value);
  if (cursor) query.set("cursor", cursor);
  return query;
}

function nextCursorOf(response) {
  const link = response.headers.get("Link");
  const match = link && link.match(/<([^>]+)>;\s*rel="next"/);
  return match ? new URL(match[1], location.origin).searchParams.get("cursor") : null;
}

function renderCounts(counts) {
  const total = STATUSES.reduce((sum, status) => sum + counts[status], 0);
  const items = STATUSES.map((status) =>
    el("li", {},
      el("a", { href: `/?status=${status}`, class: `count status-${status}`, "aria-label": `${counts[status]} ${status}` },
        el("span", { class: "count-value", text: counts[status].toLocaleString() }),
        el("span", { class: "count-label", text: status }))));
  items.push(el("li", {}, el("a", { href: "/", class: "count total" },
    el("span", { class: "count-value", text: total.toLocaleString() }), el("span", { class: "count-label", text: "all" }))));
  document.getElementById("counts").replaceChildren(...items);
}

function renderNodes(nodes) {
  document.getElementById("nodes").replaceChildren(...nodes.map((node) => {
    const slots = node.running + node.freeSlots;
    return el("li", { class: "node" },
      el("div", { class: "node-name" }, el("strong", { text: node.nodeId }), node.thisNode ? el("span", { class: "hint", text: " this node" }) : null),
      el("div", { class: "meter", role: "meter", "aria-valuemin": 0, "aria-valuemax": slots, "aria-valuenow": node.running,
        "aria-label": `${node.nodeId}: ${node.running} of ${slots} slots running` },
        el("span", { class: "meter-fill", "data-fraction": slots ? node.running / slots : 0 })),
      el("div", { class: "node-numbers", text: `${node.running} running · ${node.freeSlots} free of ${slots}` }));
  }));
  // Widths through the CSSOM: the page's policy allows no inline style attributes.
  for (const fill of document.querySelectorAll(".meter-fill")) fill.style.width = `${Number(fill.dataset.fraction) * 100}%`;
}

function renderChart(overview) {
  const width = 640, height = 180, left = 34, bottom = 22, top = 8;
  const since = new Date(overview.since).getTime();
  const minutes = 61;
  const byMinute = new Map(overview.activity.map((m) => [Math.round((new Date(m.minute).getTime() - since) / 60000), m]));
  const columns = Array.from({ length: minutes }, (_, index) => {
    const minute = byMinute.get(index);
    const groups = OUTCOME_GROUPS.map((group) => group.outcomes.reduce((sum, o) => sum + (minute?.ended[o] || 0), 0));
    return { index, submitted: minute?.submitted || 0, groups };
  });
  const peak = Math.max(1, ...columns.map((c) => Math.max(c.submitted, c.groups.reduce((a, b) => a + b, 0))));
  const step = (width - left) / minutes;
  const y = (value) => height - bottom - (value / peak) * (height - bottom - top);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "activity", role: "img",
    "aria-label": `Per minute over the last hour: ${columns.reduce((s, c) => s + c.submitted, 0)} submitted, ` +
      OUTCOME_GROUPS.map((g, i) => `${columns.reduce((s, c) => s + c.groups[i], 0)} ${g.key}`).join(", ") });
  for (const fraction of [0, 0.5, 1]) {
    const value = Math.round(peak * fraction);
    chart.append(svg("line", { x1: left, x2: width, y1: y(value), y2: y(value), class: "grid" }),
      svg("text", { x: left - 4, y: y(value) + 4, class: "axis", "text-anchor": "end", text: value }));
  }
  for (const [label, index, anchor] of [["60 min ago", 0, "start"], ["30", 30, "middle"], ["now", 61, "end"]]) {
    chart.append(svg("text", { x: left + index * step, y: height - 6, class: "axis", "text-anchor": anchor, text: label }));
  }
  for (const column of columns) {
    let base = 0;
    column.groups.forEach((count, groupIndex) => {
      if (!count) return;
      chart.append(svg("rect", { x: left + column.index * step + 1, width: Math.max(1, step - 2), y: y(base + count), height: y(base) - y(base + count),
        class: `bar outcome-${OUTCOME_GROUPS[groupIndex].key}` }, svg("title", { text: `${count} ${OUTCOME_GROUPS[groupIndex].key}` })));
      base += count;
    });
  }
  const points = columns.map((c) => `${left + c.index * step + step / 2},${y(c.submitted)}`).join(" ");
  chart.append(svg("polyline", { points, class: "submitted-line" }));
  document.getElementById("activity-chart").replaceChildren(chart);
  document.getElementById("activity-legend").replaceChildren(
    el("li", {}, el("span", { class: "swatch submitted" }), "submitted"),
    ...OUTCOME_GROUPS.map((g) => el("li", {}, el("span", { class: `swatch outcome-${g.key}` }), g.label)));
}

function renderJobs(jobs) {
  const now = Date.now();
  const body = document.getElementById("jobs-body");
  if (!jobs.length) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 8, class: "empty", text: "No jobs match." })));
  } else {
    body.replaceChildren(...jobs.map((job) => el("tr", { class: job.jobId === highlightJobId ? "fresh" : null, "data-job-id": job.jobId },
      el("td", {}, el("a", { href: `/ui/jobs/${job.jobId}`, text: job.jobId })),
      el("td", {}, statusBadge(job.status), job.cancelRequestedAt && !["cancelled", "completed", "crashed"].includes(job.status) ? el("span", { class: "hint", text: " cancelling" }) : null),
      el("td", { class: "name", text: job.jobName, title: job.jobName }),
      el("td", { text: job.programName }),
      el("td", { class: "num", text: formatDuration(job.duration) }),
      el("td", { class: "num", text: job.exitCode ?? "–" }),
      el("td", { class: "num", text: job.retries }),
      el("td", { text: formatAgo(job.createdAt, now), title: job.createdAt }))));
  }
  document.getElementById("page-newer").disabled = cursorsBefore.length === 0;
  document.getElementById("page-older").disabled = nextCursor === null;
  document.getElementById("page-label").textContent = `Page ${cursorsBefore.length + 1}`;
}

async function load() {
  const [{ body: overview }, jobs] = await Promise.all([
    apiJson("/ui/api/overview"),
    apiJson(`/jobs?${jobsQuery()}`).then(
      (answer) => answer,
      (error) => ({ error }),
    ),
  ]);
  renderCounts(overview.counts);
  renderNodes(overview.nodes);
  renderChart(overview);
  showError(document.getElementById("jobs-error"), jobs.error ? jobs.error.message : "");
  if (!jobs.error) {
    nextCursor = nextCursorOf(jobs.response);
    renderJobs(jobs.body);
  }
}

const loop = refreshWhileVisible(load);

filtersForm.addEventListener("submit", (event) => {
  event.preventDefault();
  for (const name of Object.keys(filters)) filters[name] = filtersForm.elements[name].value.trim();
  const query = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
  history.replaceState(null, "", query.size ? `/?${query}` : "/");
  cursorsBefore.length = 0;
  cursor = null;
  loop.now();
});
document.getElementById("page-older").addEventListener("click", () => {
  cursorsBefore.push(cursor);
  cursor = nextCursor;
  loop.now();
});
document.getElementById("page-newer").addEventListener("click", () => {
  cursor = cursorsBefore.pop() ?? null;
  loop.now();
});

attachSubmitForm(document.getElementById("submit-form"), (job) => {
  highlightJobId = job.jobId;
  cursorsBefore.length = 0;
  cursor = null;
  loop.now();
}).then((options) => {
  document.getElementById("program-names").replaceChildren(...options.programs.map((name) => el("option", { value: name })));
}).catch(() => {});
