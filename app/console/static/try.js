"use strict";
// The Try page: the form of the chosen kind is sent to the API as multipart; each accepted job gets
// a card that follows the job's event stream (GET /v1/jobs/{id}/events; polling is the fallback) for
// its progress and shows the result when it is finished.
(() => {
  const { api, json, blobUrl, pathOf, describe, el, apiLink, formatBytes, formatSeconds, finished, percent } = Console;
  const forms = [...document.querySelectorAll("form.job-form")];
  const jobList = document.getElementById("jobs");
  const POLL_MS = 500;

  for (const radio of document.querySelectorAll('input[name="kind"]')) {
    radio.addEventListener("change", () => forms.forEach((form) => { form.hidden = form.dataset.kind !== radio.value; }));
  }

  for (const zone of document.querySelectorAll(".drop")) {
    const input = zone.querySelector("input[type=file]");
    zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      input.files = event.dataTransfer.files;
    });
  }

  // Empty controls are left out (the service's default applies); list fields become repeated fields.
  function formData(form) {
    const data = new FormData();
    for (const input of form.querySelectorAll("input[type=file]")) {
      for (const file of input.files) data.append(input.name, file);
    }
    for (const control of form.querySelectorAll(".params [name]")) {
      const value = control.value.trim();
      if (value === "") continue;
      const values = control.closest(".field").dataset.widget === "list" ? value.split(",") : [value];
      values.map((v) => v.trim()).filter(Boolean).forEach((v) => data.append(control.name, v));
    }
    return data;
  }

  function clearErrors(form) {
    form.querySelectorAll(".field-error").forEach((box) => { box.textContent = ""; });
    form.querySelectorAll(".field.invalid").forEach((field) => field.classList.remove("invalid"));
    form.querySelector(".form-error").hidden = true;
  }

  // The upload field holding the file an upload error names.
  function uploadField(form, fileName) {
    const input = [...form.querySelectorAll("input[type=file]")].find((i) => [...i.files].some((f) => f.name === fileName));
    return input && input.closest(".field");
  }

  // details[] name a parameter ({field, message}); an upload error names its file ({file, role}).
  function showError(form, err) {
    const box = form.querySelector(".form-error");
    box.textContent = describe(err);
    box.hidden = false;
    const details = Array.isArray(err.details) ? err.details : err.details ? [err.details] : [];
    for (const detail of details) {
      const field = detail.field
        ? form.querySelector(`[data-field="${CSS.escape(String(detail.field).split(".")[0])}"]`)
        : detail.file && uploadField(form, detail.file);
      if (!field) continue;
      field.classList.add("invalid");
      field.querySelector(".field-error").textContent = detail.field ? detail.message : err.message;
    }
  }

  for (const form of forms) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors(form);
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      const originals = [...(form.querySelector('input[name="images"]')?.files || [])];
      try {
        const response = await api(form.getAttribute("action"), { method: "POST", body: formData(form) });
        const body = await response.json();
        // A small detect is answered inline (200, the finished job); everything else is 202 and a URL.
        const card = new JobCard(form.dataset.kind, body.id, pathOf(body.url), originals);
        if (response.status === 200) card.update(body);
        else card.follow();
      } catch (err) {
        showError(form, err);
      } finally {
        button.disabled = false;
      }
    });
  }

  class JobCard {
    constructor(kind, id, path, originals) {
      this.path = path;
      this.originals = originals;
      this.state = el("span", { class: "state" }, "queued");
      this.percent = el("span", { class: "percent" }, "0%");
      this.bar = el("progress", { max: 100, value: 0 });
      this.cancel = el("button", { type: "button", class: "cancel", onclick: () => this.cancelJob() }, "Cancel");
      this.error = el("p", { class: "error", role: "alert", hidden: true });
      this.result = el("div", { class: "result" });
      this.node = el("article", { class: "job", "data-job-id": id },
        el("header", {}, el("strong", {}, kind), " ", apiLink(path, id.slice(0, 8)), " ", this.state, " ",
           this.percent, " ", this.cancel),
        this.bar, this.error, this.result);
      jobList.prepend(this.node);
    }

    // The job's server-sent events move the bar as they come. Read with fetch, not EventSource, which
    // cannot send the API key; a stream that fails or ends early (a buffering proxy) falls back to polling.
    async follow() {
      try {
        const response = await api(`${this.path}/events`, { headers: { Accept: "text/event-stream" } });
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        while (true) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer = (buffer + value).replace(/\r\n/g, "\n");
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const data = buffer.slice(0, end).split("\n").filter((line) => line.startsWith("data:"))
              .map((line) => line.slice(5).trimStart()).join("\n");
            buffer = buffer.slice(end + 2);
            if (!data) continue;   // a heartbeat
            const job = JSON.parse(data);
            this.update(job);
            if (finished(job)) return;
          }
        }
      } catch (err) {
        if (err.status === 404 || err.status === 410) return this.showError(err);
      }
      await this.poll();
    }

    async poll() {
      while (true) {
        try {
          const job = await json(this.path);
          this.update(job);
          if (finished(job)) return;
        } catch (err) {
          this.showError(err);
          if (err.status === 404) return;
        }
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      }
    }

    update(job) {
      this.node.dataset.state = job.state;
      this.state.textContent = job.state;
      const done = percent(job);
      this.bar.value = done;
      this.percent.textContent = `${done}%`;
      this.error.hidden = true;
      if (job.rejected_inputs?.length && !this.rejected) {
        // image_url inputs the job went on without, each with its own code
        this.rejected = el("ul", { class: "rejected" }, ...job.rejected_inputs.map((r) =>
          el("li", { class: "error" }, `${r.url}: ${r.error.code}: ${r.error.message}`)));
        this.bar.after(this.rejected);
      }
      if (!finished(job)) return;
      this.cancel.remove();
      if (job.error) this.showError(job.error);
      if (job.state === "succeeded") this.showResult(job).catch((err) => this.showError(err));
    }

    showError(err) {
      this.error.textContent = describe(err);
      this.error.hidden = false;
    }

    async cancelJob() {
      try {
        this.update(await json(this.path, { method: "DELETE" }));
      } catch (err) {
        this.showError(err);
      }
    }

    async showResult(job) {
      const timing = el("p", { class: "timing" },
        `${formatSeconds(job.seconds)} on ${job.device} · model ${job.model?.name ?? job.vae} · ${job.perceptual}`);
      const parts = job.kind === "detect" ? detection(job) : job.results.length ? await this.compared(job) : await outputs(job);
      this.result.append(timing, ...parts);
    }

    // Each result image (purified, protected) and its original stacked in one frame; the slider
    // uncovers the result from the right. An image given by URL has no original in this browser: its
    // result is shown alone.
    async compared(job) {
      const made = { purify: "purified", protect: "protected" }[job.kind] ?? "result";
      return Promise.all(job.results.map(async (res, i) => {
        const { url, size } = await blobUrl(res.url);
        const top = el("img", { class: "result", src: url, alt: `${made} ${res.name}` });
        const frame = el("div", { class: "compare", style: `aspect-ratio: ${res.width} / ${res.height}` }, top);
        let slider = null;
        if (this.originals[i]) {
          slider = el("input", { type: "range", min: 0, max: 100, value: 50, "aria-label": `original | ${made}` });
          const reveal = () => { top.style.clipPath = `inset(0 0 0 ${slider.value}%)`; };
          slider.addEventListener("input", reveal);
          reveal();
          top.before(el("img", { class: "original", src: URL.createObjectURL(this.originals[i]), alt: `original ${res.name}` }));
          frame.append(el("span", { class: "tag left" }, "original"), el("span", { class: "tag right" }, made));
        }
        const final = res.final ? ` · loss ${res.final.loss.toPrecision(3)}` : "";
        const budget = res.budget ? ` · L∞ ${+res.budget.linf_255.toFixed(2)}/255 · PSNR ${res.budget.psnr_db.toFixed(1)} dB · SSIM ${res.budget.ssim.toFixed(3)}` : "";
        return el("figure", { class: "compare-block" }, frame, slider,
          el("figcaption", { class: "size" },
            `${res.name} · ${res.width}×${res.height} px · ${formatBytes(size)} · ${res.iterations} steps (${res.stop_reason})${final}${budget} · `,
            el("a", { href: url, download: res.name }, "download")));
      }));
    }
  }

  // Each image's score against its threshold: a bar whose ticks mark the thresholds, and the model
  // that scored it (a threshold holds only for its model).
  function detection(job) {
    const scale = Math.max(...job.detections.flatMap((d) => [d.score, d.threshold ?? 0])) * 1.25 || 1;
    const at = (value) => `left: ${(100 * value) / scale}%`;
    const rows = job.detections.map((d) => el("tr", {},
      el("td", {}, d.name),
      el("td", { class: "score" }, d.score.toPrecision(4)),
      el("td", {}, el("div", { class: "gauge" },
        el("div", { class: "fill", style: `width: ${(100 * d.score) / scale}%` }),
        d.threshold === null ? null : el("div", { class: "tick", style: at(d.threshold), title: "threshold" }),
        d.low_threshold === null ? null : el("div", { class: "tick low", style: at(d.low_threshold), title: "low threshold" }))),
      el("td", { class: "thresholds" }, d.threshold === null ? "no threshold configured (IMPRESS_DETECT_THRESHOLD, or send one)"
        : `threshold ${d.threshold}${d.low_threshold === null ? "" : `, low threshold ${d.low_threshold}`}`),
      el("td", { class: `verdict ${d.verdict ?? "none"}` }, d.verdict ?? "no verdict"),
      el("td", { class: "model", title: d.model_revision }, d.model)));
    return [el("table", { class: "detect" },
      el("thead", {}, el("tr", {}, ...["image", "score", "", "thresholds", "verdict", "model"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows))];
  }

  // Every other kind (evaluate, mimicry, ...): links to its files, an HTML report inline (fetched with
  // the key: an iframe's own request could not carry it), image files shown, else the figures.
  async function outputs(job) {
    const links = el("p", {}, "files: ", ...job.files.flatMap((f) => [apiLink(f.url, f.name), " "]));
    const report = job.files.find((f) => f.media_type === "text/html");
    if (report) {
      const html = await (await api(pathOf(report.url))).text();
      return [links, el("iframe", { class: "report", srcdoc: html, title: report.name, sandbox: "" })];
    }
    const images = await Promise.all(job.files.filter((f) => f.media_type.startsWith("image/")).map(async (f) =>
      el("figure", { class: "sample" }, el("img", { src: (await blobUrl(f.url)).url, alt: f.name }), el("figcaption", {}, f.name))));
    return [links, ...images, el("pre", { class: "metrics" }, JSON.stringify(job.metrics, null, 2))];
  }
})();
