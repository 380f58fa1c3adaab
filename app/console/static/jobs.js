"use strict";
// The Jobs page: GET /v1/jobs (this key's recent jobs, newest first) as a table, refreshed; a running
// or queued job can be canceled from its row.
(() => {
  const { json, pathOf, showPageError, clearPageError, el, apiLink, formatSeconds, finished, percent } = Console;
  const body = document.querySelector("#job-table tbody");
  const limit = document.getElementById("limit");
  const REFRESH_MS = 2000;

  const since = (from, to) => (from && to ? formatSeconds(to - from) : "–");

  async function cancel(job) {
    try {
      await json(pathOf(job.url), { method: "DELETE" });
      await refresh();
    } catch (err) {
      showPageError(err);
    }
  }

  function row(job) {
    job.url = `/v1/jobs/${job.id}`;
    const now = Date.now() / 1000;
    const links = [apiLink(job.url, "json"),
      ...job.results.map((r) => apiLink(r.url, r.name)),
      ...job.files.map((f) => apiLink(f.url, f.name))].flatMap((link) => [link, " "]);
    return el("tr", { "data-job-id": job.id, "data-state": job.state },
      el("td", { class: "id", title: job.id }, job.id.slice(0, 8)),
      el("td", {}, job.kind),
      el("td", { class: "state" }, job.state, job.error ? el("small", { class: "error-code" }, ` ${job.error.code}`) : null),
      el("td", {}, el("progress", { max: 100, value: percent(job) }), el("span", { class: "percent" }, ` ${percent(job)}%`)),
      el("td", {}, new Date(job.created_at * 1000).toLocaleTimeString()),
      el("td", {}, since(job.created_at, job.started_at ?? (job.state === "queued" ? now : null))),
      el("td", {}, since(job.started_at, job.finished_at ?? (job.state === "running" ? now : null))),
      el("td", { class: "links" }, ...links),
      el("td", {}, finished(job) ? null : el("button", { type: "button", class: "cancel", onclick: () => cancel(job) }, "Cancel")));
  }

  async function refresh() {
    try {
      const { jobs } = await json(`/v1/jobs?limit=${limit.value}`);
      body.replaceChildren(...jobs.map(row));
      document.getElementById("no-jobs").hidden = jobs.length > 0;
      clearPageError();
    } catch (err) {
      showPageError(err);
    }
  }

  limit.addEventListener("change", refresh);
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
