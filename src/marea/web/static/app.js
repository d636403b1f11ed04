// marea's live page: polls /api/status and /api/history every few seconds and redraws two SVG charts and two
// tables. Every string from the engine (reasons name jobs and workers, which users control) goes in through
// textContent, never innerHTML.
"use strict";

const STATES = ["requested", "booting", "idle", "busy", "draining", "deleting", "failed"];
const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const W = 600, H = 200, PAD = 4;

function el(tag, attrs, text) {
  const e = tag === "svg" || ["polygon", "polyline", "line", "text"].includes(tag)
    ? document.createElementNS(SVG, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 120) return `${Math.round(seconds)}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  return `${(seconds / 3600).toFixed(1)}h`;
}

function scale(samples, maxY) {
  const t0 = samples[0].at, t1 = samples[samples.length - 1].at;
  const span = Math.max(t1 - t0, 1);
  return {
    x: (t) => PAD + (W - 2 * PAD) * (t - t0) / span,
    y: (v) => H - PAD - (H - 2 * PAD) * v / Math.max(maxY, 1),
  };
}

function axis(svg, maxY, samples) {
  svg.append(el("line", { x1: 0, x2: W, y1: H - PAD, y2: H - PAD, stroke: "#ccd" }));
  svg.append(el("text", { x: 6, y: 16, "font-size": 13, fill: "#6b7785" }, `${Math.max(maxY, 1)}`));
  const span = samples[samples.length - 1].at - samples[0].at;
  svg.append(el("text", { x: 6, y: H - 8, "font-size": 12, fill: "#6b7785" }, `last ${ago(span)}`));
}

// Stacked areas, one polygon per state, bottom to top in STATES order.
function drawWorkers(samples) {
  const svg = document.getElementById("workers-chart");
  svg.replaceChildren();
  svg.dataset.samples = String(samples.length);
  if (!samples.length) return;
  const totals = samples.map((s) => STATES.reduce((a, k) => a + (s.workers[k] || 0), 0));
  const maxY = Math.max(...totals, 1);
  const { x, y } = scale(samples, maxY);
  const base = samples.map(() => 0);
  for (const state of STATES) {
    const top = samples.map((s, i) => base[i] + (s.workers[state] || 0));
    if (top.some((v, i) => v !== base[i])) {
      const upper = samples.map((s, i) => `${x(s.at).toFixed(1)},${y(top[i]).toFixed(1)}`);
      const lower = samples.map((s, i) => `${x(s.at).toFixed(1)},${y(base[i]).toFixed(1)}`).reverse();
      svg.append(el("polygon", { points: [...upper, ...lower].join(" "), fill: cssVar(`--${state}`),
                                 "data-state": state, opacity: 0.9 }));
    }
    top.forEach((v, i) => { base[i] = v; });
  }
  axis(svg, maxY, samples);
  const last = samples[samples.length - 1].workers;
  svg.dataset.latest = STATES.map((k) => `${k}=${last[k] || 0}`).join(" ");
  const legend = document.getElementById("workers-legend");
  legend.replaceChildren(...STATES.filter((k) => samples.some((s) => s.workers[k])).map((k) => {
    const li = el("li", {}, `${k} ${last[k] || 0}`);
    li.prepend(el("i", { style: `background: var(--${k})` }));
    return li;
  }));
}

function drawDemand(samples) {
  const svg = document.getElementById("demand-chart");
  svg.replaceChildren();
  if (!samples.length) return;
  const maxY = Math.max(...samples.map((s) => Math.max(s.demand_cores, s.capacity_cores)), 1);
  const { x, y } = scale(samples, maxY);
  for (const [key, color] of [["capacity_cores", "--capacity"], ["demand_cores", "--demand"]]) {
    const pts = samples.map((s) => `${x(s.at).toFixed(1)},${y(s[key]).toFixed(1)}`).join(" ");
    svg.append(el("polyline", { points: pts, fill: "none", stroke: cssVar(color), "stroke-width": 2.5,
                                "data-series": key }));
  }
  axis(svg, maxY, samples);
}

function drawStatus(st) {
  document.getElementById("cluster").textContent = st.cluster;
  document.getElementById("worker-count").textContent = String(st.workers.length);
  document.getElementById("queued-jobs").textContent = String(st.queued_jobs);
  const cores = st.demand.reduce((a, d) => a + d.count * d.cores, 0);
  document.getElementById("demand-cores").textContent = String(cores);
  document.getElementById("failed-boots").textContent = String(st.boot_failures.total);
  const health = document.getElementById("health");
  const age = st.last_cycle_at === null ? null : st.at - st.last_cycle_at;
  health.className = age !== null && age < 60 ? "ok" : "stale";
  health.textContent = age === null ? "the engine has not completed a cycle yet" : `last cycle ${ago(age)} ago`;

  const wbody = document.querySelector("#workers tbody");
  wbody.replaceChildren(...st.workers.map((w) => {
    const tr = el("tr", { "data-worker": w.id });
    const state = el("span", { class: "state", style: `background: var(--${w.state})` }, w.state);
    const cells = [el("td", {}, w.id), el("td", {}, w.flavour), el("td"), el("td", {}, ago(w.age_s)),
                   el("td", {}, ago(w.in_state_s))];
    cells[2].append(state);
    tr.append(...cells);
    return tr;
  }));
  const dbody = document.querySelector("#decisions tbody");
  const newestFirst = [...st.decisions].reverse();  // the API lists them oldest first, as `marea status`
  dbody.replaceChildren(...newestFirst.map((d) => {
    const tr = el("tr", { "data-kind": d.kind });
    const when = new Date(d.at * 1000).toLocaleTimeString();
    tr.append(el("td", {}, when), el("td", {}, d.kind), el("td", { class: "reason" }, d.reason));
    return tr;
  }));
  const waiting = document.getElementById("waiting");
  waiting.replaceChildren(...st.waiting.map((r) => el("li", {}, `waiting: ${r}`)),
                          ...st.errors.map((r) => el("li", {}, `error: ${r}`)));
}

async function poll() {
  try {
    const [st, hist] = await Promise.all([
      fetch("api/status?decisions=15", { cache: "no-store" }).then((r) => r.json()),
      fetch("api/history", { cache: "no-store" }).then((r) => r.json()),
    ]);
    drawStatus(st);
    drawWorkers(hist.samples);
    drawDemand(hist.samples);
  } catch (e) {
    const health = document.getElementById("health");
    health.className = "stale";
    health.textContent = `cannot reach the engine (${e.message})`;
  }
  setTimeout(poll, POLL_MS);
}

poll();
