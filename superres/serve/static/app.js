"use strict";
// The superres page: choose a model, drop images, watch each job, compare, download. No dependencies.
(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  const state = { models: [], defaults: {}, limits: {}, done: new Map(), active: new Set() };

  function api(path, options = {}) {
    const headers = Object.assign({}, options.headers || {});
    if (token) headers.Authorization = "Bearer " + token;
    return fetch(path, Object.assign({}, options, { headers }));
  }
  async function errorText(resp) {
    try { const body = await resp.json(); return body.error.message; } catch (e) { return resp.status + " " + resp.statusText; }
  }
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const say = (text) => { $("#message").textContent = text; };
  const fmt = (v, digits) => (typeof v === "number" ? v.toFixed(digits) : "-");
  const params = (m) => (typeof m.params === "number" ? m.params.toLocaleString("en") : "-");
  const score = (m, set) => { const s = (m.scores || {})[set]; return s ? fmt(s.psnr_y, 2) + " / " + fmt(s.ssim_y, 4) : "-"; };

  function renderModels() {
    const scale = Number($("#scale").value);
    const chosen = $("#model").value;
    const rows = state.models.filter((m) => m.scale === scale);
    const body = $("#models tbody");
    body.textContent = "";
    for (const m of rows) {
      const tr = document.createElement("tr");
      tr.dataset.model = m.name;
      if (m.name === chosen) tr.className = "chosen";
      const best = state.defaults[String(scale)] === m.name ? " (best PSNR)" : "";
      const kind = m.kind === "server-file" ? " [server file]" : m.kind === "peer" ? (m.whole_image ? " [peer, 8-bit, whole image]" : " [peer]") : "";
      for (const text of [m.name + best + kind, m.arch || "-", params(m), score(m, "Set5"), score(m, "Set14")]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      }
      tr.addEventListener("click", () => { $("#model").value = m.name; renderModels(); });
      body.appendChild(tr);
    }
  }

  function fillModelSelect() {
    const scale = Number($("#scale").value);
    const select = $("#model");
    select.textContent = "";
    for (const m of state.models.filter((m) => m.scale === scale)) {
      const opt = document.createElement("option");
      opt.value = m.name;
      opt.textContent = m.name + " (" + params(m) + " params, Set5 " + score(m, "Set5") + ")";
      select.appendChild(opt);
    }
    if (state.defaults[String(scale)]) select.value = state.defaults[String(scale)];
    renderModels();
  }

  async function loadModels() {
    const resp = await api("/v1/models");
    if (!resp.ok) { say("Cannot list the models: " + (await errorText(resp))); return; }
    const body = await resp.json();
    state.models = body.models;
    state.defaults = body.defaults;
    state.limits = body.limits;
    const scaleSelect = $("#scale");
    for (const s of Object.keys(body.defaults).map(Number).sort()) {
      const opt = document.createElement("option");
      opt.value = String(s);
      opt.textContent = "x" + s;
      scaleSelect.appendChild(opt);
    }
    if (body.defaults["4"]) scaleSelect.value = "4";
    const tile = $("#tile");
    tile.max = String(body.limits.max_tile);
    tile.value = String(body.limits.default_tile);
    $("#limits").textContent = "up to " + (body.limits.max_pixels / 1e6) + " MP and " +
      Math.round(body.limits.max_upload_bytes / 1048576) + " MiB per image";
    fillModelSelect();
  }

  function newCard(file) {
    const card = $("#card").content.firstElementChild.cloneNode(true);
    $(".name", card).textContent = file.name;
    $("#jobs").appendChild(card);
    return card;
  }

  function setState(card, text, progress) {
    $(".state", card).textContent = text;
    if (progress !== undefined) $("progress", card).value = progress;
  }

  function wireCompare(card, beforeUrl, afterUrl, job, blob) {
    const frame = $(".frame", card);
    const before = $(".before", card);
    const after = $(".after", card);
    const slider = $(".slider", card);
    const divider = $(".divider", card);
    const lens = $(".lens", card);
    const r = job.result;
    frame.style.maxWidth = r.width + "px"; // never shown larger than it is: the lens then magnifies
    before.width = r.width; before.height = r.height;
    after.width = r.width; after.height = r.height;
    before.src = beforeUrl;
    before.onerror = () => { $(".info", card).textContent += " (the browser cannot show this input format; the comparison shows the result only)"; };
    after.src = afterUrl;
    const place = () => {
      const v = Number(slider.value);
      after.style.clipPath = "inset(0 0 0 " + v + "%)";
      divider.style.left = v + "%";
    };
    slider.addEventListener("input", place);
    place();
    frame.addEventListener("mousemove", (ev) => {
      if (!$(".lens-toggle", card).checked || !after.naturalWidth) { lens.hidden = true; return; }
      const box = frame.getBoundingClientRect();
      const fx = (ev.clientX - box.left) / box.width, fy = (ev.clientY - box.top) / box.height;
      const half = lens.offsetWidth / 2 || 90;
      lens.hidden = false;
      lens.style.left = (ev.clientX - box.left - half) + "px";
      lens.style.top = (ev.clientY - box.top - half) + "px";
      lens.style.backgroundImage = "url(" + afterUrl + ")";
      lens.style.backgroundSize = after.naturalWidth + "px " + after.naturalHeight + "px";
      lens.style.backgroundPosition = (half - fx * after.naturalWidth) + "px " + (half - fy * after.naturalHeight) + "px";
    });
    frame.addEventListener("mouseleave", () => { lens.hidden = true; });
    const link = $(".download", card);
    link.href = afterUrl;
    link.download = job.result_name;
    $(".info", card).textContent = job.input.width + "x" + job.input.height + " -> " + r.width + "x" + r.height + ", " +
      r.channels + " channel(s)" + (r.alpha ? " + alpha" : "") + ", " + r.bit_depth + "-bit " + r.format + ", " +
      (blob.size / 1024).toFixed(0) + " KiB, model " + job.options.model + ", tile " + job.options.tile;
    $(".compare", card).hidden = false;
  }

  async function run(file) {
    const card = newCard(file);
    const form = new FormData();
    form.append("image", file, file.name);
    form.append("model", $("#model").value);
    form.append("scale", $("#scale").value);
    form.append("tile", $("#tile").value);
    setState(card, "uploading", 0);
    let job;
    for (;;) {
      const resp = await api("/v1/upscale", { method: "POST", body: form });
      if (resp.status === 429) {
        const wait = Number(resp.headers.get("Retry-After") || "2");
        setState(card, "server busy, retrying in " + wait + " s");
        await sleep(wait * 1000);
        continue;
      }
      if (!resp.ok) { card.classList.add("failed"); setState(card, "refused: " + (await errorText(resp))); return; }
      job = await resp.json();
      break;
    }
    card.dataset.job = job.id;
    state.active.add(job.id);
    while (job.state === "queued" || job.state === "running") {
      setState(card, job.state === "queued" ? "queued" : "upscaling " + Math.round(job.progress * 100) + "% (" +
        job.tiles_done + "/" + job.tiles_total + " tiles)", job.progress);
      await sleep(250);
      const resp = await api("/v1/jobs/" + job.id);
      if (!resp.ok) { card.classList.add("failed"); setState(card, await errorText(resp)); return; }
      job = await resp.json();
    }
    state.active.delete(job.id);
    if (job.state !== "done") { card.classList.add("failed"); setState(card, job.state + ": " + (job.error ? job.error.message : "")); return; }
    setState(card, "fetching the result", 1);
    const resp = await api(job.result_url);
    if (!resp.ok) { card.classList.add("failed"); setState(card, await errorText(resp)); return; }
    const blob = await resp.blob();
    const afterUrl = URL.createObjectURL(blob);
    wireCompare(card, URL.createObjectURL(file), afterUrl, job, blob);
    state.done.set(job.id, job);
    $("#zip").disabled = false;
    setState(card, "done", 1);
    card.classList.add("done");
  }

  function start(files) {
    if (!state.models.length) { say("no models to choose from"); return; }
    for (const file of files) run(file).catch((e) => say(String(e)));
  }

  async function downloadZip() {
    const ids = Array.from(state.done.keys()).join(",");
    const resp = await api("/v1/results.zip?ids=" + encodeURIComponent(ids));
    if (!resp.ok) { say(await errorText(resp)); return; }
    const url = URL.createObjectURL(await resp.blob());
    const a = document.createElement("a");
    a.href = url; a.download = "superres-results.zip";
    document.body.appendChild(a); a.click(); a.remove();
  }

  // Leaving the page cancels its unfinished jobs (the server would also drop them once nobody asks).
  window.addEventListener("pagehide", () => {
    for (const id of state.active) api("/v1/jobs/" + id, { method: "DELETE", keepalive: true }).catch(() => {});
  });

  document.addEventListener("DOMContentLoaded", () => {
    const drop = $("#drop");
    $("#scale").addEventListener("change", fillModelSelect);
    $("#model").addEventListener("change", renderModels);
    $("#files").addEventListener("change", (ev) => { start(Array.from(ev.target.files)); ev.target.value = ""; });
    drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (ev) => { ev.preventDefault(); drop.classList.remove("over"); start(Array.from(ev.dataTransfer.files)); });
    $("#zip").addEventListener("click", () => downloadZip().catch((e) => say(String(e))));
    loadModels().then(() => { document.body.dataset.ready = "1"; }).catch((e) => say("Cannot reach the server: " + e));
  });
})();
