"use strict";
// The Service page: readiness from /readyz and the counters /metrics exposes (the Prometheus text
// format, parsed here, so the dashboard and a scraper read the same numbers).
(() => {
  const { api, showPageError, clearPageError, el } = Console;
  const REFRESH_MS = 5000;
  const STATES = ["queued", "running", "succeeded", "failed", "canceled"];

  // "name{label="value",...} number" lines; comments and blank lines skipped.
  function parseMetrics(text) {
    const samples = [];
    for (const line of text.split("\n")) {
      const match = line.match(/^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/);
      if (!match) continue;
      const labels = {};
      for (const [, name, value] of (match[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[name] = value;
      samples.push({ name: match[1], labels, value: Number(match[3]) });
    }
    return samples;
  }

  const named = (samples, name) => samples.filter((s) => s.name === name);
  const number = (v) => (Number.isInteger(v) ? String(v) : v.toFixed(2));

  function rows(table, entries) {
    table.querySelector("tbody").replaceChildren(...entries.map(([label, value]) =>
      el("tr", {}, el("th", {}, label), el("td", {}, value))));
  }

  function showReadiness(readiness) {
    const ready = document.getElementById("ready");
    ready.textContent = readiness.ready ? "ready" : "not ready";
    ready.className = `badge ${readiness.ready ? "ok" : "bad"}`;
    document.getElementById("redis").textContent = readiness.redis ? "reachable" : "unreachable";
    document.getElementById("workers").replaceChildren(
      ...(readiness.workers.length ? readiness.workers.map((name) => worker(name, (readiness.models || {})[name])) : [el("li", {}, "none alive")]));
  }

  // A worker alive and the models its jobs need, as it found them on its disk at start (a webhook worker needs none).
  function worker(name, report) {
    const text = !report ? "needs no model" : report.missing.length ? `missing: ${report.missing.join(", ")}`
      : `models: ${report.present.join(", ") || "none needed"}`;
    return el("li", { "data-worker": name }, name, el("small", { class: report?.missing.length ? "missing" : null }, text));
  }

  function showTransitions(samples) {
    const byKind = {};
    const add = (kind, column, value) => { (byKind[kind] ??= {})[column] = value; };
    named(samples, "impress_job_transitions_total").forEach((s) => add(s.labels.kind, s.labels.state, s.value));
    named(samples, "impress_job_compute_seconds_total").forEach((s) => add(s.labels.kind, "compute s", s.value));
    named(samples, "impress_job_image_iterations_total").forEach((s) => add(s.labels.kind, "image steps", s.value));
    const columns = [...STATES, "compute s", "image steps"];
    const table = document.getElementById("transitions");
    table.querySelector("thead tr").replaceChildren(el("th", {}, "kind"), ...columns.map((c) => el("th", {}, c)));
    table.querySelector("tbody").replaceChildren(...Object.entries(byKind).sort().map(([kind, values]) =>
      el("tr", { "data-kind": kind }, el("th", {}, kind), ...columns.map((c) => el("td", { "data-column": c }, number(values[c] ?? 0))))));
  }

  function showProcess(samples) {
    const requests = named(samples, "impress_http_request_seconds_count");
    const total = (list) => list.reduce((sum, s) => sum + s.value, 0);
    rows(document.getElementById("process"), [
      ...named(samples, "impress_jobs_submitted_total").map((s) => [`submitted ${s.labels.kind}`, number(s.value)]),
      ...named(samples, "impress_uploads_rejected_total").map((s) => [`uploads rejected: ${s.labels.code}`, number(s.value)]),
      ["HTTP requests", number(total(requests))],
      ...serverErrors(requests),
    ]);
  }

  // 5xx answers by route (a not-ready /readyz answers 503 while workers start).
  function serverErrors(requests) {
    const byRoute = {};
    for (const s of requests.filter((r) => r.labels.status.startsWith("5"))) {
      byRoute[s.labels.route] = (byRoute[s.labels.route] ?? 0) + s.value;
    }
    return Object.entries(byRoute).map(([route, count]) => [`HTTP 5xx answers: ${route}`, number(count)]);
  }

  async function refresh() {
    try {
      // Not ready is a 503 that still carries the readiness JSON.
      const readiness = await fetch("/readyz").then((r) => r.json());
      showReadiness(readiness);
      const samples = parseMetrics(await (await api("/metrics")).text());
      const redisUp = named(samples, "impress_redis_up")[0];
      if (redisUp && !redisUp.value) document.getElementById("redis").textContent = "unreachable";
      const queues = named(samples, "impress_queue_messages").map((s) => [s.labels.queue, number(s.value)]);
      rows(document.getElementById("queues"), queues.length ? queues : [["–", "not measured (the broker is not Redis)"]]);
      showTransitions(samples);
      showProcess(samples);
      clearPageError();
    } catch (err) {
      showPageError(err.code ? err : { code: "network_error", message: String(err) });
    }
  }

  refresh();
  setInterval(refresh, REFRESH_MS);
})();
