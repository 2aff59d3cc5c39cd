/*
 * segserve's page: send an image to /segment or /instances (format=json) and draw the answer.
 *
 * Everything goes to this page's own origin (the Content-Security-Policy allows nothing
 * else). The API key typed in travels only as the X-API-Key header of fetch(); it is kept in
 * memory, or in sessionStorage when "keep for this tab" is ticked, and never in a URL.
 *
 * The drawing: the JSON's polygons (or COCO RLE masks) are painted into a region map, one
 * region index per pixel, the way docs/api.md says to decode them (outer rings filled with
 * their boundary, holes cleared with theirs). The canvas shows the image with each visible
 * region's colour blended over it at the chosen opacity; at 100% a region's pixels are its
 * colour exactly. Semantic classes take the service's VOC palette (app/output/palette.py);
 * instances one colour each. The same map names the region under the pointer.
 */
"use strict";

(function () {
  const KEY_STORAGE = "segserve.apiKey";

  const $ = (id) => document.getElementById(id);
  const els = {
    key: $("api-key"),
    remember: $("remember-key"),
    status: $("status"),
    form: $("request"),
    drop: $("drop"),
    file: $("file"),
    fileInfo: $("file-info"),
    model: $("model"),
    tolerance: $("tolerance"),
    minArea: $("min-area"),
    instanceOptions: $("instance-options"),
    scoreThreshold: $("score-threshold"),
    maskThreshold: $("mask-threshold"),
    maxInstances: $("max-instances"),
    maskEncoding: $("mask-encoding"),
    tile: $("tile"),
    overlap: $("overlap"),
    run: $("run"),
    opacity: $("opacity"),
    opacityValue: $("opacity-value"),
    showBoxes: $("show-boxes"),
    canvas: $("canvas"),
    hover: $("hover"),
    error: $("error"),
    downloadPng: $("download-png"),
    downloadJson: $("download-json"),
    legend: $("legend"),
    legendBody: document.querySelector("#legend tbody"),
    legendValue: $("legend-value"),
    legendSummary: $("legend-summary"),
    legendAll: $("legend-all"),
    legendNone: $("legend-none"),
    timingBody: document.querySelector("#timing tbody"),
  };

  /* ------------------------------------------------------------------ state */

  let apiKey = "";
  let models = [];          /* GET /models */
  let image = null;         /* {file, element, width, height} */
  let result = null;        /* the drawn answer, see draw() */
  let busy = false;

  function setState(state, message) {
    document.body.dataset.state = state;
    if (message !== undefined) els.status.textContent = message;
  }

  function showError(message) {
    els.error.textContent = message;
    els.error.hidden = !message;
  }

  function endpoint() {
    return document.querySelector('input[name="endpoint"]:checked').value;
  }

  function taskOf(ep) {
    return ep === "instances" ? "instance" : "semantic";
  }

  /* --------------------------------------------------------------- palette */

  /* The PASCAL VOC colour map, as app/output/palette.py computes it: the bits of the index
     spread over the high bits of R, G and B. Index 0 (background) is black. */
  function vocColour(index) {
    let c = index % 256;
    let r = 0;
    let g = 0;
    let b = 0;
    for (let bit = 7; bit >= 0; bit--) {
      r |= (c & 1) << bit;
      g |= ((c >> 1) & 1) << bit;
      b |= ((c >> 2) & 1) << bit;
      c >>= 3;
    }
    return [r, g, b];
  }

  /* Instance k (1-based): hues a golden angle apart, so neighbours in the list differ. */
  function instanceColour(k) {
    const h = ((k - 1) * 137.508) % 360;
    const s = 0.85;
    const l = 0.5;
    const f = (n) => {
      const m = (n + h / 30) % 12;
      const a = s * Math.min(l, 1 - l);
      return Math.round(255 * (l - a * Math.max(-1, Math.min(m - 3, 9 - m, 1))));
    };
    return [f(0), f(8), f(4)];
  }

  const css = (rgb) => `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})`;

  /* ------------------------------------------------------------------- HTTP */

  async function api(path, init) {
    const headers = new Headers((init && init.headers) || {});
    if (apiKey) headers.set("X-API-Key", apiKey);
    return fetch(path, {
      ...init,
      headers,
      credentials: "same-origin",
      cache: "no-store",
      referrerPolicy: "no-referrer",
    });
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      if (body && body.error) return `${response.status} ${body.error.code}: ${body.error.message}`;
    } catch (e) {
      /* not JSON */
    }
    return `${response.status} ${response.statusText}`;
  }

  let modelsTimer = null;

  async function loadModels() {
    clearTimeout(modelsTimer);
    setState("loading", "Loading the models...");
    let response;
    try {
      response = await api("/models");
    } catch (e) {
      setState("error", `The service does not answer: ${e.message}`);
      modelsTimer = setTimeout(loadModels, 3000);
      return;
    }
    if (response.status === 401) {
      models = [];
      fillModels();
      setState("error", apiKey ? "The API key was refused." : "This service needs an API key.");
      return;
    }
    if (response.status === 503) {
      setState("loading", "The models are still loading...");
      modelsTimer = setTimeout(loadModels, 2000);
      return;
    }
    if (!response.ok) {
      setState("error", `GET /models: ${await errorText(response)}`);
      return;
    }
    models = (await response.json()).models;
    fillModels();
    setState("ready", `${models.length} model(s) served.`);
  }

  function fillModels() {
    const task = taskOf(endpoint());
    const previous = els.model.value;
    els.model.replaceChildren();
    for (const m of models.filter((m) => m.task === task)) {
      const option = document.createElement("option");
      option.value = m.name;
      option.textContent = `${m.name} (${m.architecture}${m.weights === "untrained" ? ", untrained" : ""})`;
      option.selected = m.name === previous || (!previous && m.default);
      els.model.append(option);
    }
    if (!els.model.value && els.model.options.length) els.model.selectedIndex = 0;
    if (!els.model.options.length && models.length) {
      const none = document.createElement("option");
      none.value = "";
      none.disabled = true;
      none.selected = true;
      none.textContent = `no ${task} model is served`;
      els.model.append(none);
    }
    updateRun();
  }

  function updateRun() {
    els.run.disabled = busy || !image || !els.model.value;
  }

  /* ------------------------------------------------------------ the image */

  async function setImage(file) {
    if (!file) return;
    showError("");
    const element = new Image();
    const url = URL.createObjectURL(file);
    element.src = url;
    try {
      await element.decode(); /* EXIF orientation is applied, as the service does */
    } catch (e) {
      URL.revokeObjectURL(url);
      showError(`This browser cannot show ${file.name}; the service may still read it.`);
      image = { file, element: null, width: 0, height: 0 };
      els.fileInfo.textContent = `${file.name} (${file.size} bytes)`;
      updateRun();
      return;
    }
    image = { file, element, width: element.naturalWidth, height: element.naturalHeight };
    els.fileInfo.textContent = `${file.name}: ${image.width} x ${image.height}, ${file.size} bytes`;
    result = null;
    clearResult();
    drawImageOnly();
    updateRun();
  }

  function drawImageOnly() {
    if (!image || !image.element) return;
    const ctx = els.canvas.getContext("2d");
    els.canvas.width = image.width;
    els.canvas.height = image.height;
    ctx.drawImage(image.element, 0, 0);
  }

  /* ------------------------------------------------------------- request */

  function numberParam(params, name, input) {
    const text = input.value.trim();
    if (text !== "") params.set(name, text);
  }

  async function send(event) {
    event.preventDefault();
    if (!image || busy) return;
    const ep = endpoint();
    const params = new URLSearchParams({ format: "json", model: els.model.value });
    numberParam(params, "tolerance", els.tolerance);
    numberParam(params, "min_area", els.minArea);
    if (ep === "instances") {
      numberParam(params, "score_threshold", els.scoreThreshold);
      numberParam(params, "mask_threshold", els.maskThreshold);
      numberParam(params, "max_instances", els.maxInstances);
      params.set("mask_encoding", els.maskEncoding.value);
    }
    numberParam(params, "tile", els.tile);
    numberParam(params, "overlap", els.overlap);
    const body = new FormData();
    body.append("image", image.file, image.file.name || "image");

    busy = true;
    updateRun();
    showError("");
    setState("busy", `POST /${ep} ...`);
    const started = performance.now();
    let response;
    try {
      response = await api(`/${ep}?${params}`, { method: "POST", body });
    } catch (e) {
      busy = false;
      updateRun();
      setState("error", "The request failed.");
      showError(`POST /${ep}: ${e.message}`);
      return;
    }
    const elapsed = performance.now() - started;
    try {
      if (!response.ok) {
        const text = await errorText(response);
        setState("error", `POST /${ep} failed.`);
        showError(text);
        showTiming(response.headers.get("Server-Timing"), elapsed);
        return;
      }
      const json = await response.json();
      result = buildResult(ep, json);
      els.hover.textContent = "Point at the picture to name a region.";
      showTiming(response.headers.get("Server-Timing"), elapsed);
      fillLegend();
      draw();
      els.canvas.dataset.results = String(Number(els.canvas.dataset.results) + 1);
      const n = result.regions.length;
      const what = ep === "segment" ? "class(es)" : "instance(s)";
      setState("drawn", `${json.model}: ${n} ${what} in ${json.width} x ${json.height}.`);
    } catch (e) {
      setState("error", "The answer could not be drawn.");
      showError(String(e && e.stack ? e.stack : e));
    } finally {
      busy = false;
      updateRun();
    }
  }

  /* ------------------------------------------------------ Server-Timing */

  /* "decode;dur=3.6, queue;dur=6.2, windows;desc=\"4\"" -> [{name, dur, desc}] */
  function parseServerTiming(header) {
    if (!header) return [];
    return header.split(",").map((part) => {
      const [name, ...fields] = part.trim().split(";");
      const entry = { name: name.trim(), dur: null, desc: null };
      for (const field of fields) {
        const eq = field.indexOf("=");
        if (eq < 0) continue;
        const key = field.slice(0, eq).trim().toLowerCase();
        let value = field.slice(eq + 1).trim();
        if (value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
        if (key === "dur") entry.dur = Number(value);
        if (key === "desc") entry.desc = value;
      }
      return entry;
    }).filter((e) => e.name);
  }

  function showTiming(header, elapsed) {
    const rows = parseServerTiming(header).map((e) => [
      e.name,
      e.dur !== null ? `${e.dur.toFixed(1)} ms` : e.desc || "",
    ]);
    rows.push(["round trip (browser)", `${elapsed.toFixed(1)} ms`]);
    els.timingBody.replaceChildren(
      ...rows.map(([name, value]) => {
        const tr = document.createElement("tr");
        tr.dataset.stage = name;
        const a = document.createElement("td");
        a.textContent = name;
        const b = document.createElement("td");
        b.className = "num";
        b.textContent = value;
        tr.append(a, b);
        return tr;
      }),
    );
  }

  /* -------------------------------------------------- decoding the masks */

  /* Fill a ring (integer [x, y] pixel centres) into mask (Uint8Array w*h) with value,
     boundary included, as cv2.fillPoly does: scanlines through the pixel centres fill the
     inside, and the edges are drawn as 8-connected lines. */
  function fillRing(mask, w, h, ring, value) {
    const n = ring.length;
    if (!n) return;
    let ymin = Infinity;
    let ymax = -Infinity;
    for (const [, y] of ring) {
      if (y < ymin) ymin = y;
      if (y > ymax) ymax = y;
    }
    ymin = Math.max(0, ymin);
    ymax = Math.min(h - 1, ymax);
    const xs = [];
    for (let y = ymin; y <= ymax; y++) {
      xs.length = 0;
      for (let i = 0; i < n; i++) {
        const [x0, y0] = ring[i];
        const [x1, y1] = ring[(i + 1) % n];
        if (y0 === y1) continue;
        const lo = Math.min(y0, y1);
        const hi = Math.max(y0, y1);
        if (y < lo || y >= hi) continue; /* half-open: each vertex counted once */
        xs.push(x0 + ((y - y0) * (x1 - x0)) / (y1 - y0));
      }
      xs.sort((a, b) => a - b);
      for (let k = 0; k + 1 < xs.length; k += 2) {
        const from = Math.max(0, Math.ceil(xs[k]));
        const to = Math.min(w - 1, Math.floor(xs[k + 1]));
        if (from <= to) mask.fill(value, y * w + from, y * w + to + 1);
      }
    }
    for (let i = 0; i < n; i++) {
      const [x0, y0] = ring[i];
      const [x1, y1] = ring[(i + 1) % n];
      line(mask, w, h, x0, y0, x1, y1, value);
    }
  }

  function line(mask, w, h, x0, y0, x1, y1, value) {
    const dx = Math.abs(x1 - x0);
    const dy = -Math.abs(y1 - y0);
    const sx = x0 < x1 ? 1 : -1;
    const sy = y0 < y1 ? 1 : -1;
    let err = dx + dy;
    for (;;) {
      if (x0 >= 0 && x0 < w && y0 >= 0 && y0 < h) mask[y0 * w + x0] = value;
      if (x0 === x1 && y0 === y1) return;
      const e2 = 2 * err;
      if (e2 >= dy) { err += dy; x0 += sx; }
      if (e2 <= dx) { err += dx; y0 += sy; }
    }
  }

  /* Polygons (outer ring, then holes) painted in list order: the mask of one region. */
  function polygonsMask(polygons, w, h) {
    const mask = new Uint8Array(w * h);
    for (const polygon of polygons || []) {
      polygon.forEach((ring, i) => fillRing(mask, w, h, ring, i === 0 ? 1 : 0));
    }
    return mask;
  }

  /* COCO's compressed RLE string -> run lengths (pycocotools' rleFrString). */
  function rleCounts(s) {
    const counts = [];
    let p = 0;
    while (p < s.length) {
      let x = 0;
      let k = 0;
      let more = 1;
      while (more) {
        const c = s.charCodeAt(p) - 48;
        x |= (c & 0x1f) << (5 * k);
        more = c & 0x20;
        p++;
        k++;
        if (!more && c & 0x10) x |= -1 << (5 * k);
      }
      if (counts.length > 2) x += counts[counts.length - 2];
      counts.push(x);
    }
    return counts;
  }

  /* Runs alternate 0s and 1s, starting with 0s, in column-major order (x outer). */
  function rleMask(rle, w, h) {
    const [rh, rw] = rle.size;
    if (rh !== h || rw !== w) throw new Error(`RLE size ${rh}x${rw} is not the image's ${h}x${w}`);
    const mask = new Uint8Array(w * h);
    let i = 0;
    let on = false;
    for (const count of rleCounts(rle.counts)) {
      if (on) {
        for (let j = i; j < i + count; j++) mask[(j % h) * w + Math.floor(j / h)] = 1;
      }
      i += count;
      on = !on;
    }
    return mask;
  }

  /* ------------------------------------------------------- the result */

  /* regions[k - 1] is region k of the map (0: nothing). Semantic: one per segment; instances:
     one per instance, highest score first, and where masks overlap the map keeps the
     higher-scoring one (as the service's id map and overlay do). */
  function buildResult(ep, json) {
    const w = json.width;
    const h = json.height;
    const map = new Uint16Array(w * h);
    const regions = [];
    const items = ep === "segment" ? json.segments : json.instances;
    items.forEach((item, index) => {
      const k = index + 1;
      const mask = item.rle ? rleMask(item.rle, w, h) : polygonsMask(item.polygons, w, h);
      let visible = 0;
      for (let p = 0; p < mask.length; p++) {
        if (mask[p] && !map[p]) {
          map[p] = k;
          visible++;
        }
      }
      regions.push({
        k,
        label: item.label,
        classId: item.class_id,
        area: item.area,
        score: item.score,
        bbox: item.bbox || null,
        visiblePixels: visible,
        colour: ep === "segment" ? vocColour(item.class_id) : instanceColour(k),
        shown: true,
      });
    });
    return { endpoint: ep, json, width: w, height: h, map, regions };
  }

  function draw() {
    if (!result) return;
    const { width: w, height: h, map, regions } = result;
    const canvas = els.canvas;
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    if (image && image.element) {
      /* Same size as the service saw, unless the browser oriented it differently. */
      ctx.drawImage(image.element, 0, 0, w, h);
    }
    const alpha = Number(els.opacity.value) / 100;
    const pixels = ctx.getImageData(0, 0, w, h);
    const data = pixels.data;
    const colours = [null, ...regions.map((r) => (r.shown ? r.colour : null))];
    for (let p = 0; p < map.length; p++) {
      const c = colours[map[p]];
      if (!c) continue;
      const o = 4 * p;
      data[o] = Math.round(data[o] * (1 - alpha) + c[0] * alpha);
      data[o + 1] = Math.round(data[o + 1] * (1 - alpha) + c[1] * alpha);
      data[o + 2] = Math.round(data[o + 2] * (1 - alpha) + c[2] * alpha);
      data[o + 3] = Math.round(data[o + 3] * (1 - alpha) + 255 * alpha);
    }
    ctx.putImageData(pixels, 0, 0);
    if (els.showBoxes.checked) {
      ctx.lineWidth = 2;
      for (const r of regions) {
        if (!r.shown || !r.bbox) continue;
        const [x0, y0, x1, y1] = r.bbox;
        ctx.strokeStyle = css(r.colour);
        ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
      }
    }
    els.downloadPng.disabled = false;
    els.downloadJson.disabled = false;
  }

  function clearResult() {
    els.legendBody.replaceChildren();
    els.timingBody.replaceChildren();
    els.legendSummary.textContent = "No result yet.";
    els.downloadPng.disabled = true;
    els.downloadJson.disabled = true;
    els.hover.textContent = "Point at the picture to name a region.";
  }

  /* ---------------------------------------------------------- the legend */

  function describe(region) {
    if (result.endpoint === "segment") {
      const share = (100 * region.area) / (result.width * result.height);
      return `${region.area} px (${share.toFixed(1)}%)`;
    }
    return region.score.toFixed(3);
  }

  function fillLegend() {
    const semantic = result.endpoint === "segment";
    els.legendValue.textContent = semantic ? "area" : "score";
    els.legendSummary.textContent = result.regions.length
      ? `${result.regions.length} ${semantic ? "class(es)" : "instance(s)"}; untick to hide.`
      : `Nothing found${semantic ? " but background" : ""}.`;
    els.legendBody.replaceChildren(
      ...result.regions.map((region) => {
        const tr = document.createElement("tr");
        tr.dataset.region = String(region.k);
        tr.dataset.label = region.label;
        const tick = document.createElement("td");
        const box = document.createElement("input");
        box.type = "checkbox";
        box.checked = region.shown;
        box.setAttribute("aria-label", `show ${region.label}`);
        box.addEventListener("change", () => {
          region.shown = box.checked;
          tr.classList.toggle("off", !box.checked);
          draw();
        });
        tick.append(box);
        const sw = document.createElement("td");
        const swatch = document.createElement("span");
        swatch.className = "swatch";
        swatch.style.backgroundColor = css(region.colour); /* CSSOM: allowed by the CSP */
        sw.append(swatch);
        const label = document.createElement("td");
        label.className = "label";
        label.textContent = semantic ? region.label : `#${region.k} ${region.label}`;
        const value = document.createElement("td");
        value.className = "num value";
        value.textContent = describe(region);
        tr.append(tick, sw, label, value);
        return tr;
      }),
    );
  }

  function setAll(shown) {
    if (!result) return;
    for (const region of result.regions) region.shown = shown;
    for (const box of els.legendBody.querySelectorAll("input[type=checkbox]")) {
      box.checked = shown;
      box.closest("tr").classList.toggle("off", !shown);
    }
    draw();
  }

  /* --------------------------------------------------------------- hover */

  function regionAt(event) {
    if (!result) return null;
    const rect = els.canvas.getBoundingClientRect();
    const x = Math.floor(((event.clientX - rect.left) * result.width) / rect.width);
    const y = Math.floor(((event.clientY - rect.top) * result.height) / rect.height);
    if (x < 0 || y < 0 || x >= result.width || y >= result.height) return null;
    return { x, y, k: result.map[y * result.width + x] };
  }

  let hot = null;

  function onHover(event) {
    const at = regionAt(event);
    if (hot) hot.classList.remove("hot");
    hot = null;
    if (!at) return;
    if (!at.k) {
      els.hover.textContent = `(${at.x}, ${at.y}): background`;
      return;
    }
    const region = result.regions[at.k - 1];
    const name = result.endpoint === "segment" ? region.label : `#${region.k} ${region.label}`;
    els.hover.textContent = `(${at.x}, ${at.y}): ${name}, ${describe(region)}`;
    hot = els.legendBody.querySelector(`tr[data-region="${region.k}"]`);
    if (hot) hot.classList.add("hot");
  }

  /* ----------------------------------------------------------- downloads */

  function download(blob, name) {
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  function baseName() {
    const name = (image && image.file && image.file.name) || "image";
    return name.replace(/\.[^.]*$/, "") + `.${result ? result.endpoint : "result"}`;
  }

  /* -------------------------------------------------------------- wiring */

  function init() {
    const kept = sessionStorage.getItem(KEY_STORAGE);
    if (kept) {
      apiKey = kept;
      els.key.value = kept;
      els.remember.checked = true;
    }
    els.key.addEventListener("change", () => {
      apiKey = els.key.value.trim();
      if (els.remember.checked && apiKey) sessionStorage.setItem(KEY_STORAGE, apiKey);
      else sessionStorage.removeItem(KEY_STORAGE);
      loadModels();
    });
    els.remember.addEventListener("change", () => {
      if (els.remember.checked && apiKey) sessionStorage.setItem(KEY_STORAGE, apiKey);
      else sessionStorage.removeItem(KEY_STORAGE);
    });
    for (const radio of document.querySelectorAll('input[name="endpoint"]')) {
      radio.addEventListener("change", () => {
        els.instanceOptions.hidden = endpoint() !== "instances";
        els.model.value = "";
        fillModels();
      });
    }
    els.model.addEventListener("change", updateRun);
    els.file.addEventListener("change", () => setImage(els.file.files[0]));
    for (const type of ["dragenter", "dragover"]) {
      els.drop.addEventListener(type, (e) => {
        e.preventDefault();
        els.drop.classList.add("over");
      });
    }
    for (const type of ["dragleave", "drop"]) {
      els.drop.addEventListener(type, () => els.drop.classList.remove("over"));
    }
    els.drop.addEventListener("drop", (e) => {
      e.preventDefault();
      if (e.dataTransfer && e.dataTransfer.files.length) setImage(e.dataTransfer.files[0]);
    });
    /* A file dropped beside the zone must not make the browser navigate away to it. */
    window.addEventListener("dragover", (e) => e.preventDefault());
    window.addEventListener("drop", (e) => e.preventDefault());
    els.form.addEventListener("submit", send);
    els.opacity.addEventListener("input", () => {
      els.opacityValue.textContent = `${els.opacity.value}%`;
      draw();
    });
    els.showBoxes.addEventListener("change", draw);
    els.legendAll.addEventListener("click", () => setAll(true));
    els.legendNone.addEventListener("click", () => setAll(false));
    els.canvas.addEventListener("mousemove", onHover);
    els.canvas.addEventListener("mouseleave", () => {
      if (hot) hot.classList.remove("hot");
      hot = null;
    });
    els.downloadPng.addEventListener("click", () => {
      els.canvas.toBlob((blob) => blob && download(blob, `${baseName()}.png`), "image/png");
    });
    els.downloadJson.addEventListener("click", () => {
      if (!result) return;
      const text = JSON.stringify(result.json, null, 1);
      download(new Blob([text], { type: "application/json" }), `${baseName()}.json`);
    });
    loadModels();
  }

  init();
})();
