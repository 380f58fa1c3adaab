"use strict";
// Shared by every page: the API key (kept in this browser only), calls to the API with it, the
// error envelope turned into a message, and small DOM helpers. API data is only ever set as text.
const Console = (() => {
  const KEY = "impress.apiKey";
  const keyInput = document.getElementById("api-key");
  keyInput.value = localStorage.getItem(KEY) || "";
  keyInput.addEventListener("change", () => localStorage.setItem(KEY, keyInput.value.trim()));

  function authHeaders() {
    const key = localStorage.getItem(KEY);
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  // The API's error envelope {"error": {code, message, details}}; anything else becomes one too.
  class ApiError extends Error {
    constructor(status, body) {
      super(body.message);
      this.status = status;
      this.code = body.code;
      this.details = body.details;
    }
  }

  async function errorBody(response) {
    const text = await response.text();
    try {
      const body = JSON.parse(text);
      if (body && body.error) return body.error;
    } catch (_) { /* not JSON: fall through */ }
    return { code: `http_${response.status}`, message: text.slice(0, 300) || response.statusText };
  }

  async function api(path, options = {}) {
    let response;
    try {
      response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
    } catch (err) {
      throw new ApiError(0, { code: "network_error", message: `the service did not answer (${err.message})` });
    }
    if (!response.ok) throw new ApiError(response.status, await errorBody(response));
    return response;
  }

  const json = async (path, options) => (await api(path, options)).json();

  async function blobUrl(path) {
    const blob = await (await api(path)).blob();
    return { url: URL.createObjectURL(blob), size: blob.size };
  }

  // A job URL as the API gives it (absolute) reduced to its path, so calls stay on this origin.
  const pathOf = (url) => new URL(url, location.href).pathname;

  function describe(err) {
    const hint = err.status === 401 ? " (check the API key at the top right)" : "";
    return `${err.code}: ${err.message}${hint}`;
  }

  function showPageError(err) {
    const box = document.getElementById("page-error");
    box.textContent = describe(err);
    box.hidden = false;
  }

  function clearPageError() {
    document.getElementById("page-error").hidden = true;
  }

  // Links to API resources (results, report files, job JSON) are fetched with the key, then shown.
  document.addEventListener("click", async (event) => {
    const link = event.target.closest("a[data-api]");
    if (!link) return;
    event.preventDefault();
    const tab = window.open("", "_blank");
    try {
      tab.location = (await blobUrl(link.getAttribute("href"))).url;
    } catch (err) {
      tab.close();
      showPageError(err);
    }
  });

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : value);
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  const apiLink = (href, text) => el("a", { href: pathOf(href), "data-api": true }, text);
  const formatBytes = (n) => (n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} kB` : `${(n / 1048576).toFixed(1)} MB`);
  const formatSeconds = (s) => (s === null || s === undefined ? "–" : s < 60 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(1)} min`);
  const finished = (job) => ["succeeded", "failed", "canceled"].includes(job.state);
  const percent = (job) => Math.round(100 * (job.state === "succeeded" ? 1 : job.progress.fraction));

  return { api, json, blobUrl, pathOf, ApiError, describe, showPageError, clearPageError, el, apiLink,
           formatBytes, formatSeconds, finished, percent };
})();
