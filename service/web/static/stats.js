// Insight: GET /stats drawn as inline SVG. Each pattern's success rate is a bar against the overall rate, with
// its 95 % interval as a whisker; the significant ones are marked. Breakdowns are bars of their success rate.
import { apiJson, el, percent, refreshWhileVisible, showError, svg } from "./common.js";

const form = document.getElementById("stats-filters");
const BREAKDOWNS = [
  ["programs", "Programs"], ["nodes", "Nodes"], ["hoursOfDay", "Hour of day"], ["durationBuckets", "Durations"],
  ["nameFamilies", "Name families"], ["attemptNumbers", "Attempt number"],
];
// /stats is an aggregate over history: a slow refresh is enough, and spares the database.
const REFRESHES_PER_LOAD = 5;
let ticks = 0;

function query() {
  const parameters = new URLSearchParams();
  for (const name of ["since", "until", "namePrefix"]) {
    const value = form.elements[name].value.trim();
    if (value) parameters.set(name, value);
  }
  return parameters;
}

// Horizontal bars on a 0–100 % axis. rows: { label, rate, low?, high?, note?, marked?, title }.
const WIDE = { labelWidth: 340, barWidth: 560, labelCharacters: 48 };
const COMPACT = { labelWidth: 190, barWidth: 250, labelCharacters: 26 };

function rateChart(rows, overall, ariaLabel, { labelWidth, barWidth, labelCharacters } = COMPACT) {
  const rowHeight = 26, top = 20, width = labelWidth + barWidth + 90;
  const height = top + rows.length * rowHeight + 6;
  const x = (rate) => labelWidth + rate * barWidth;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "rates", role: "img", "aria-label": ariaLabel });
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
    chart.append(svg("line", { x1: x(tick), x2: x(tick), y1: top - 4, y2: height, class: "grid" }),
      svg("text", { x: x(tick), y: 12, class: "axis", "text-anchor": "middle", text: `${tick * 100}%` }));
  }
  rows.forEach((row, index) => {
    const y = top + index * rowHeight;
    const group = svg("g", { class: row.marked ? "row significant" : "row" }, svg("title", { text: row.title }));
    group.append(
      svg("text", { x: labelWidth - 8, y: y + 16, class: "label", "text-anchor": "end", text: truncate(row.label, labelCharacters) }),
      svg("rect", { x: x(0), y: y + 5, width: Math.max(0, row.rate * barWidth), height: rowHeight - 10, class: row.marked ? "bar marked" : "bar" }));
    if (row.low !== undefined && row.low !== null) {
      const mid = y + rowHeight / 2;
      group.append(svg("line", { x1: x(row.low), x2: x(row.high), y1: mid, y2: mid, class: "whisker" }),
        svg("line", { x1: x(row.low), x2: x(row.low), y1: mid - 5, y2: mid + 5, class: "whisker" }),
        svg("line", { x1: x(row.high), x2: x(row.high), y1: mid - 5, y2: mid + 5, class: "whisker" }));
    }
    group.append(svg("text", { x: x(1) + 8, y: y + 16, class: "value", text: row.empty ? "no match" : `${percent(row.rate)}${row.marked ? " ★" : ""}` }));
    chart.append(group);
  });
  if (overall !== null && overall !== undefined) {
    chart.append(svg("line", { x1: x(overall), x2: x(overall), y1: top - 4, y2: height, class: "overall" },
      svg("title", { text: `overall ${percent(overall)}` })));
  }
  return chart;
}

function truncate(text, length) {
  if (text.length <= length) return text;
  // A path says most at its end (the program's file name).
  return text.startsWith("/") ? `…${text.slice(-(length - 1))}` : `${text.slice(0, length - 1)}…`;
}

function renderSummary(stats) {
  const item = (value, label) => el("li", {}, el("div", { class: "count total" },
    el("span", { class: "count-value", text: value }), el("span", { class: "count-label", text: label })));
  document.getElementById("stats-summary").replaceChildren(
    item(stats.totalJobs.toLocaleString(), "jobs"),
    item(stats.totalAttempts.toLocaleString(), "finished attempts"),
    item(percent(stats.overallSuccessRate), "attempts succeed"),
    item(percent(stats.jobSuccessRate), "jobs succeed"),
    item(percent(stats.retryRescueRate), `retries rescue (${stats.rescuedJobs} of ${stats.retriedFailures})`),
  );
}

function renderPatterns(stats) {
  const rows = stats.patterns.map((p) => ({
    label: p.pattern, rate: p.successRate, low: p.confidenceInterval?.low, high: p.confidenceInterval?.high,
    marked: p.significant, empty: p.matchCount === 0,
    title: `${p.pattern}: ${p.successCount} of ${p.matchCount} succeeded (${percent(p.successRate)}), ${p.differenceFromAverage}` +
      (p.adjustedPValue !== null ? `; adjusted p = ${p.adjustedPValue.toPrecision(2)} (${p.test})` : "") + (p.note ? `; ${p.note}` : ""),
  }));
  const target = document.getElementById("patterns-chart");
  if (!rows.length) { target.replaceChildren(el("p", { class: "empty", text: "No finished attempts yet." })); return; }
  target.replaceChildren(
    rateChart(rows, stats.overallSuccessRate, `Success rate per pattern against the overall ${percent(stats.overallSuccessRate)}`, WIDE),
    el("p", { class: "hint", text: `The dark line is the overall rate (${percent(stats.overallSuccessRate)}); whiskers are 95 % intervals; ★ marks a pattern whose gap is significant after the Benjamini–Hochberg correction.` }),
  );
}

function renderBreakdowns(stats) {
  const outcomes = stats.breakdowns.outcomes.map((o) => ({
    label: o.outcome + (o.exitCode !== null ? ` (exit ${o.exitCode})` : "") + (o.signal !== null ? ` (signal ${o.signal})` : ""),
    rate: o.share, title: `${o.attempts} attempts`,
  }));
  const panels = [panel("Outcomes", "share of finished attempts", rateChart(outcomes, null, "Share of finished attempts per outcome"))];
  for (const [key, title] of BREAKDOWNS) {
    const groups = stats.breakdowns[key];
    if (!groups.length) continue;
    const rows = groups.map((g) => ({ label: `${g.value ?? "none"} (${g.attempts})`, rate: g.successRate, title: `${g.successes} of ${g.attempts} succeeded` }));
    panels.push(panel(title, "success rate (attempts)", rateChart(rows, stats.overallSuccessRate, `${title}: success rate per group`)));
  }
  document.getElementById("breakdowns").replaceChildren(...panels);
}

function panel(title, hint, content) {
  return el("section", { class: "panel" }, el("h2", {}, title, " ", el("span", { class: "hint", text: hint })), content);
}

function renderTables(stats) {
  document.getElementById("whatif-body").replaceChildren(...stats.whatIf.map((w) => el("tr", {},
    el("td", { text: w.maxAttempts }),
    el("td", { class: "num", text: percent(w.jobSuccessRate) + (w.extrapolated ? " (extrapolated)" : "") }))));
  document.getElementById("flaky-body").replaceChildren(...(stats.flakyNames.length ? stats.flakyNames.map((g) => el("tr", {},
    el("td", { text: g.value }), el("td", { class: "num", text: g.attempts }), el("td", { class: "num", text: percent(g.successRate) })))
    : [el("tr", {}, el("td", { colspan: 3, class: "empty", text: "None." }))]));
}

async function load(force = false) {
  if (!force && ticks++ % REFRESHES_PER_LOAD !== 0) return true;
  let stats;
  try {
    ({ body: stats } = await apiJson(`/stats?${query()}`));
  } catch (error) {
    if (error.status === 400) { showError(document.getElementById("stats-error"), error.message); return true; }
    throw error;
  }
  showError(document.getElementById("stats-error"), "");
  renderSummary(stats);
  renderPatterns(stats);
  renderBreakdowns(stats);
  renderTables(stats);
  return true;
}

const loop = refreshWhileVisible(() => load());
form.addEventListener("submit", (event) => {
  event.preventDefault();
  ticks = 0;
  loop.now();
});
