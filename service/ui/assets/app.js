// headstart's page: plain DOM, no framework, no build step. Every text that comes from the server (dataset and
// class names, file names, errors) goes in with textContent or as an attribute value, never as HTML. The API key,
// when the server has one, lives in sessionStorage and travels in the Authorization header only.

const KEY = "headstart.apiKey";
const VIEWS = ["datasets", "jobs", "heads", "mistakes", "predict"];
const ACTIVE = new Set(["queued", "running", "cancelling"]);
const PAGE = 100; // mistakes per request
const THUMB = 160; // thumbnail size, pixels

const $ = (selector, root = document) => root.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const fmt = {
  num: (v, digits = 3) => (typeof v === "number" && Number.isFinite(v) ? v.toFixed(digits) : "–"),
  pct: (v) => (typeof v === "number" ? `${(100 * v).toFixed(1)}%` : "–"),
  rate: (v) => (typeof v === "number" ? v.toFixed(v < 10 ? 1 : 0) : "–"),
  eta: (s) => {
    if (typeof s !== "number" || !Number.isFinite(s)) return "–";
    if (s < 60) return `${Math.round(s)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
    return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  },
  when: (iso) => {
    if (!iso) return "–";
    const d = new Date(typeof iso === "number" ? iso * 1000 : iso);
    return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
  },
};

// ---- messages --------------------------------------------------------------------------------------------------

function say(text, kind = "info") {
  const line = el("div", { class: `message ${kind}` }, el("span", { text }),
    el("button", { type: "button", class: "quiet", "aria-label": "dismiss", onclick: () => line.remove() }, "×"));
  $("#messages").append(line);
  if (kind !== "error") setTimeout(() => line.remove(), 5000);
}

function detailText(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  return JSON.stringify(detail);
}

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

// ---- the API key and every request -----------------------------------------------------------------------------

let asking = null; // one prompt at a time, however many requests were refused

function askKey(refused) {
  if (!asking) {
    asking = new Promise((resolve) => {
      const dialog = $("#key-dialog");
      $("#key-refused").hidden = !refused;
      $("#key-input").value = "";
      const form = $("#key-form");
      form.onsubmit = (event) => {
        event.preventDefault();
        sessionStorage.setItem(KEY, $("#key-input").value.trim());
        $("#key-input").value = "";
        dialog.close();
        $("#forget-key").hidden = false;
        asking = null;
        resolve();
      };
      dialog.showModal();
      $("#key-input").focus();
    });
  }
  return asking;
}

async function api(path, options = {}) {
  for (;;) {
    const headers = new Headers(options.headers || {});
    const key = sessionStorage.getItem(KEY);
    if (key) headers.set("Authorization", `Bearer ${key}`);
    const response = await fetch(path, { ...options, headers, credentials: "omit", cache: "no-store" });
    if (response.status === 401) {
      await askKey(Boolean(key));
      continue;
    }
    if (!response.ok) {
      let detail = `${response.status} ${response.statusText}`;
      try {
        detail = detailText((await response.json()).detail);
      } catch {
        // not JSON: keep the status line
      }
      throw new ApiError(response.status, detail);
    }
    return response;
  }
}

const getJSON = async (path) => (await api(path)).json();

async function postJSON(path, body) {
  const response = await api(path, { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body) });
  return response.json();
}

function guarded(fn) {
  return async (...args) => {
    try {
      return await fn(...args);
    } catch (error) {
      say(error instanceof ApiError ? error.message : `unexpected: ${error}`, "error");
      return undefined;
    }
  };
}

// ---- thumbnails: fetched with the key when they scroll into view, shown as blob: URLs -------------------------

const blobs = new Map(); // blob: URL -> the view that loaded it
const watcher = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    if (!entry.isIntersecting) continue;
    watcher.unobserve(entry.target);
    loadThumb(entry.target);
  }
}, { rootMargin: "200px" });

async function loadThumb(img) {
  try {
    const blob = await (await api(img.dataset.src)).blob();
    const url = URL.createObjectURL(blob);
    blobs.set(url, img.dataset.owner);
    img.src = url;
    img.classList.add("loaded");
  } catch (error) {
    img.alt = `thumbnail not available: ${error.message}`;
    img.classList.add("missing");
  }
}

// `owner`: the view whose reload drops it (dropBlobs)
function thumb(dataset, sha256, alt, owner = "mistakes") {
  const img = el("img", { class: "thumb", alt, width: THUMB, height: THUMB, "data-owner": owner,
    "data-src": `/datasets/${encodeURIComponent(dataset)}/images/${sha256}/thumbnail?size=${THUMB}` });
  watcher.observe(img);
  return img;
}

function dropBlobs(owner = "mistakes") {
  for (const [url, who] of [...blobs]) {
    if (who !== owner) continue;
    URL.revokeObjectURL(url);
    blobs.delete(url);
  }
}

// ---- small SVG charts ------------------------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

// series: [{name, xs, ys}] drawn as lines in a box with axes from 0 (or the data's minimum) to the maximum.
function lineChart(series, { xLabel, yLabel, xMax, yMax, diagonal, wholeX } = {}) {
  const W = 360, H = 240, L = 44, R = 10, T = 10, B = 34;
  const xs = series.flatMap((s) => s.xs), ys = series.flatMap((s) => s.ys).filter(Number.isFinite);
  const x1 = xMax ?? Math.max(1, ...xs), y1 = yMax ?? Math.max(1e-9, ...ys) * 1.05;
  const x0 = xMax !== undefined ? 0 : Math.min(...xs), y0 = 0;
  const px = (x) => L + ((x - x0) / (x1 - x0 || 1)) * (W - L - R);
  const py = (y) => H - B - ((y - y0) / (y1 - y0 || 1)) * (H - T - B);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" });
  chart.append(svg("rect", { x: L, y: T, width: W - L - R, height: H - T - B, class: "frame" }));
  for (let i = 0; i <= 4; i++) {
    const yv = y0 + ((y1 - y0) * i) / 4, xv = x0 + ((x1 - x0) * i) / 4;
    chart.append(svg("text", { x: L - 4, y: py(yv) + 4, class: "tick end" }, +yv.toPrecision(2)));
    const xt = wholeX ? Math.round(xv) : xv; // epochs are whole numbers
    if (!wholeX || i === 0 || Math.round(x0 + ((x1 - x0) * (i - 1)) / 4) !== xt) {
      chart.append(svg("text", { x: px(xt), y: H - B + 14, class: "tick middle" }, +xt.toPrecision(3)));
    }
  }
  chart.append(svg("text", { x: (L + W - R) / 2, y: H - 4, class: "axis middle" }, xLabel || ""));
  chart.append(svg("text", { x: 12, y: (T + H - B) / 2, class: "axis middle",
    transform: `rotate(-90 12 ${(T + H - B) / 2})` }, yLabel || ""));
  if (diagonal) chart.append(svg("line", { x1: px(0), y1: py(0), x2: px(1), y2: py(1), class: "diagonal" }));
  series.forEach((s, i) => {
    const points = s.xs.map((x, k) => [x, s.ys[k]]).filter(([, y]) => Number.isFinite(y));
    chart.append(svg("polyline", { points: points.map(([x, y]) => `${px(x)},${py(y)}`).join(" "),
      class: `line s${i % 8}` }));
  });
  const legend = el("ul", { class: "legend" });
  series.forEach((s, i) => legend.append(el("li", {}, el("span", { class: `swatch s${i % 8}` }), s.name)));
  return el("div", { class: "chart-box" }, chart, legend);
}

// ---- state shared by the views ---------------------------------------------------------------------------------

const state = {
  view: "datasets",
  datasets: [],
  heads: [],
  jobs: [],
  headSort: { key: "created", desc: true },
  head: null, // the head shown in detail
  // dataset null: the head's own
  mistakes: { head: null, dataset: null, split: "test", order: "confident", true: null, predicted: null, offset: 0 },
};

function fillSelect(select, values, keep) {
  const previous = keep ?? select.value;
  select.replaceChildren(...values.map((v) => el("option", { value: v, text: v })));
  if (values.includes(previous)) select.value = previous;
}

// whether a dataset has vectors of the features a head was trained on
const hasFeaturesOf = (d, head) => (d.features || []).some((f) => f.fingerprint === head.fingerprint);

// the datasets a head can be scored on: its own (value ""), then the labeled others holding vectors of its features
// (an unlabeled folder is predicted instead, in the Predict view)
function fillDatasets(select, head, chosen) {
  const others = head ? state.datasets.filter((d) => d.name !== head.dataset &&
    (d.sources || []).some((s) => s.kind !== "unlabeled") && hasFeaturesOf(d, head)).map((d) => d.name) : [];
  select.replaceChildren(el("option", { value: "", text: head ? `${head.dataset} (its own)` : "–" }),
    ...others.map((name) => el("option", { value: name, text: name })));
  select.value = others.includes(chosen) ? chosen : "";
}

// files that could not be used, with their reasons, folded under a count ("0" when none)
function failureList(count, summary, failures) {
  if (!count) return "0";
  return el("details", {}, el("summary", { text: summary }), el("ul", { class: "failures" },
    ...(failures || []).map((f) => el("li", {}, el("code", { text: f.path }), ": ", f.reason))));
}

// ---- Datasets --------------------------------------------------------------------------------------------------

const loadDatasets = guarded(async () => {
  state.datasets = await getJSON("/datasets");
  renderDatasets();
  renderTrainForm();
});

function renderDatasets() {
  const body = $("#datasets-table tbody");
  body.replaceChildren(...state.datasets.map((d) => {
    const splits = d.splits || {};
    const failures = failureList(d.failed, `${d.failed} not used`, d.failures);
    const features = el("ul", { class: "plain" }, ...(d.features || []).map((f) =>
      el("li", { text: `${f.backbone} (${f.weights}${f.input_size ? `, ${f.input_size}px` : ""}): ${f.vectors}` })));
    const extract = el("button", { type: "button", class: "quiet", onclick: () => prefillExtract(d) }, "Extract…");
    return el("tr", { "data-name": d.name }, el("td", { text: d.name }), el("td", { text: d.kind }),
      el("td", { text: d.path ?? "(outside the data root)" }), el("td", { text: splits.train ?? 0 }),
      el("td", { text: splits.val ?? 0 }), el("td", { text: splits.test ?? 0 }), el("td", {}, failures),
      el("td", {}, features), el("td", { class: "actions" }, extract, removeButton(d)));
  }));
  $("#datasets-empty").hidden = state.datasets.length > 0;
}

// two clicks, the second within 5 s: "Remove" asks, "Remove <name>?" does it (no dialog: the page shows none)
function removeButton(dataset) {
  const button = el("button", { type: "button", class: "quiet remove", text: "Remove" });
  let armed = null;
  button.addEventListener("click", guarded(async () => {
    if (!armed) {
      button.textContent = `Remove ${dataset.name}?`;
      button.classList.add("armed");
      armed = setTimeout(() => {
        armed = null;
        button.textContent = "Remove";
        button.classList.remove("armed");
      }, 5000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    button.textContent = "Remove";
    button.classList.remove("armed");
    const answer = await api(`/datasets/${encodeURIComponent(dataset.name)}?prune=true`, { method: "DELETE" })
      .then((r) => r.json());
    const freed = answer.pruned ? `, ${answer.pruned.vectors} cached vectors no dataset needs deleted` : "";
    say(`removed dataset ${dataset.name}${freed}` + (answer.heads.length ? `; heads trained on it still predict ` +
      `images: ${answer.heads.join(", ")}` : ""));
    loadDatasets();
  }));
  return button;
}

function prefillExtract(dataset) {
  const form = $("#extract-form");
  form.elements.dataset.value = dataset.name;
  form.elements.path.value = dataset.path || "";
  form.elements.backbone.focus();
}

function extractBody(f) {
  const body = { dataset: f.dataset.value.trim(), path: f.path.value.trim(), backbone: f.backbone.value.trim(),
    weights: f.weights.value };
  if (f.split.value.trim()) body.split = f.split.value.trim();
  if (f.labels.value === "names") body.name_labels = true;
  if (f.labels.value === "none") body.unlabeled = true;
  if (f.labels.value === "csv") body.labels_csv = f.labels_csv.value.trim();
  return body;
}

// how the folder would be read (classes, counts, splits, warnings), before any image is read
async function previewExtract() {
  const form = $("#extract-form");
  if (!form.reportValidity()) return;
  const p = await postJSON("/extract/preview", extractBody(form.elements));
  const classes = Object.entries(p.classes);
  const splits = p.splits.by === "folders"
    ? `splits given by the folders: ${Object.entries(p.splits.images).map(([k, n]) => `${k} ${n}`).join(", ")}`
    : `split ${p.splits.fractions} (train, val, test), seed ${p.splits.seed}`;
  const box = $("#extract-preview-result");
  box.replaceChildren(
    el("p", { text: `${p.images} images from ${p.sources.join("; ")}: ` + (classes.length
      ? `${classes.length} classes` + (p.unlabeled ? `, ${p.unlabeled} unlabeled` : "") : "unlabeled") +
      ` · ${splits}` + (p.failed ? ` · ${p.failed} not usable` : "") }),
    el("ul", { class: "plain classes" }, ...classes.slice(0, 30).map(([label, n]) => el("li", { text: `${label}: ${n}` })),
      ...(classes.length > 30 ? [el("li", { text: `… and ${classes.length - 30} more` })] : [])),
    ...p.warnings.map((w) => el("p", { class: "warning small", text: w })));
  box.hidden = false;
}

async function submitExtract(event) {
  event.preventDefault();
  $("#extract-preview-result").hidden = true;
  const accepted = await postJSON("/extract", extractBody(event.target.elements));
  say(accepted.created ? `extract job ${accepted.job_id} started` : `the same extract is already job ${accepted.job_id}`);
  location.hash = "#jobs";
  pollJobs();
}

// where the labels come from: a CSV asks for its path
function extractLabelsChanged() {
  const csv = $("#extract-form").elements.labels.value === "csv";
  $("#extract-csv").hidden = !csv;
  $("#extract-form").elements.labels_csv.required = csv;
}

// ---- Jobs ------------------------------------------------------------------------------------------------------

let pollTimer = null;
let lastActive = 0;

const pollJobs = guarded(async () => {
  clearTimeout(pollTimer);
  try {
    const jobs = await getJSON("/jobs?limit=50");
    const before = new Map(state.jobs.map((j) => [j.id, j.state]));
    const text = JSON.stringify(jobs);
    const changed = text !== state.jobsText; // unchanged: keep the table (and the details a user opened)
    state.jobs = jobs;
    state.jobsText = text;
    const active = jobs.filter((j) => ACTIVE.has(j.state)).length;
    const finished = jobs.some((j) => before.has(j.id) && ACTIVE.has(before.get(j.id)) && !ACTIVE.has(j.state));
    const counter = $("#active-jobs");
    counter.hidden = active === 0;
    counter.textContent = String(active);
    if (finished || (lastActive > 0 && active === 0)) {
      loadDatasets();
      loadHeads();
    }
    lastActive = active;
    if (state.view === "jobs" && changed) renderJobs();
  } finally {
    const busy = state.jobs.some((j) => ACTIVE.has(j.state));
    // a tab in the background asks every 30 s, and at once when it is shown again (below)
    const delay = document.hidden ? 30000 : busy || state.view === "jobs" ? 700 : 4000;
    pollTimer = setTimeout(pollJobs, delay);
  }
});

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && pollTimer !== null) pollJobs();
});

function jobTarget(job) {
  const r = job.request || {};
  return r.name ? `${r.name} (${r.dataset})` : r.dataset ? `${r.dataset} · ${r.backbone ?? ""}` : "";
}

// a compare job's result: backbones ranked by their linear probe's val accuracy
function ranking(rows) {
  const head = el("tr", {}, ...["#", "backbone", "val acc", "test acc", "dim", "img/s", "cache MB"]
    .map((t) => el("th", { text: t })));
  return el("details", { class: "ranking", open: true }, el("summary", { text: "ranking" }),
    el("table", { class: "grid compact" }, el("thead", {}, head), el("tbody", {}, ...rows.map((r, i) => el("tr", {},
      el("td", { text: r.rank ?? i + 1 }), el("td", { text: r.backbone }),
      el("td", { class: "num", text: fmt.num(r.val_accuracy) }), el("td", { class: "num", text: fmt.num(r.test_accuracy) }),
      el("td", { class: "num", text: r.dim }), el("td", { class: "num", text: fmt.rate(r.extract_img_s) }),
      el("td", { class: "num", text: r.cache_mb }))))),
    ...[...new Set(rows.flatMap((r) => r.warnings ?? []))].map((w) => el("p", { class: "warning", text: w })));
}

function renderJobs() {
  const body = $("#jobs-table tbody");
  body.replaceChildren(...state.jobs.map((j) => {
    // a succeeded job is whole, also one that stopped early by design (a fine-tune's patience)
    const bar = el("progress", { max: j.total || 1, value: j.state === "succeeded" ? j.total || 1 : j.done || 0 });
    const actions = el("td", {});
    const act = (label, path, method) => el("button", { type: "button", class: "quiet", onclick: guarded(async () => {
      await api(path, { method });
      pollJobs();
    }) }, label);
    if (ACTIVE.has(j.state) && j.state !== "cancelling") actions.append(act("Cancel", `/jobs/${j.id}`, "DELETE"));
    if (["interrupted", "failed", "cancelled"].includes(j.state)) {
      actions.append(act("Resume", `/jobs/${j.id}/resume`, "POST"));
    }
    const failed = j.failed || (j.result && j.result.failed) || 0;
    const failures = failureList(failed, String(failed), j.failures);
    const stateCell = el("td", {}, el("span", { class: `badge ${j.state}`, text: j.state }));
    if (j.error) stateCell.append(el("div", { class: "error small", text: j.error }));
    if (j.kind === "compare" && j.result?.rows?.length) stateCell.append(ranking(j.result.rows));
    // what the CLI prints as warnings (a layout read otherwise than asked, names that look like labels)
    for (const w of j.kind === "extract" ? j.result?.warnings ?? [] : []) {
      stateCell.append(el("div", { class: "warning small", text: w }));
    }
    return el("tr", { "data-id": j.id, "data-state": j.state }, el("td", {}, el("code", { text: j.id.slice(0, 8) })),
      el("td", { text: j.kind }), el("td", { text: jobTarget(j) }), stateCell, el("td", { text: j.phase ?? "" }),
      el("td", {}, bar, el("span", { class: "done", text: ` ${j.done ?? 0}/${j.total ?? "?"}` })),
      el("td", { text: fmt.rate(j.images_per_second) }),
      el("td", { text: ACTIVE.has(j.state) ? fmt.eta(j.eta_seconds) : "–" }), el("td", {}, failures), actions);
  }));
  $("#jobs-empty").hidden = state.jobs.length > 0;
}

// ---- Heads -----------------------------------------------------------------------------------------------------

function headRow(h) {
  const m = h.metrics || {}, val = m.val || {}, test = m.test || {};
  return { ...h, val_accuracy: val.accuracy, test_accuracy: test.accuracy, test_f1: test.f1_macro,
    test_log_loss: test.log_loss };
}

const loadHeads = guarded(async () => {
  state.heads = (await getJSON("/heads")).map(headRow);
  renderHeads();
  const names = state.heads.filter((h) => !h.error).map((h) => h.name);
  fillSelect($("#mistakes-form").elements.head, names, state.mistakes.head);
  fillSelect($("#predict-form").elements.head, names);
  if (!state.mistakes.head && names.length) state.mistakes.head = names[0];
});

function renderHeads() {
  const { key, desc } = state.headSort;
  const rows = [...state.heads].sort((a, b) => {
    const x = a[key], y = b[key];
    if (x === y) return a.name.localeCompare(b.name);
    if (x === undefined || x === null) return 1;
    if (y === undefined || y === null) return -1;
    const order = typeof x === "number" ? x - y : String(x).localeCompare(String(y));
    return desc ? -order : order;
  });
  for (const th of document.querySelectorAll("#heads-table th")) {
    th.classList.toggle("sorted", th.dataset.key === key);
    th.classList.toggle("desc", th.dataset.key === key && desc);
  }
  $("#heads-table tbody").replaceChildren(...rows.map((h) => {
    if (h.error) {
      return el("tr", { class: "broken" }, el("td", { text: h.name }),
        el("td", { colspan: 8, class: "error", text: h.error }));
    }
    const row = el("tr", { "data-name": h.name, class: state.head === h.name ? "selected" : "", tabindex: 0,
      onclick: () => showHead(h.name) },
    el("td", { text: h.name }), el("td", { text: h.kind }), el("td", { text: h.backbone }),
    el("td", { text: h.dataset }), el("td", { class: "num", text: fmt.num(h.val_accuracy) }),
    el("td", { class: "num", text: fmt.num(h.test_accuracy) }), el("td", { class: "num", text: fmt.num(h.test_f1) }),
    el("td", { class: "num", text: fmt.num(h.test_log_loss) }), el("td", { text: fmt.when(h.created) }));
    row.addEventListener("keydown", (e) => e.key === "Enter" && showHead(h.name));
    return row;
  }));
  $("#heads-empty").hidden = state.heads.length > 0;
  if (window.performance && !performance.getEntriesByName("heads-table").length) performance.mark("heads-table");
}

function sortHeads(event) {
  const key = event.target.closest("th")?.dataset.key;
  if (!key) return;
  state.headSort = { key, desc: state.headSort.key === key ? !state.headSort.desc : key !== "name" };
  renderHeads();
}

function renderTrainForm() {
  const form = $("#train-form");
  fillSelect(form.elements.dataset, state.datasets.filter((d) => d.features?.length).map((d) => d.name));
  const chosen = state.datasets.find((d) => d.name === form.elements.dataset.value);
  fillSelect(form.elements.backbone, [...new Set((chosen?.features || []).map((f) => f.backbone))]);
}

async function submitTrain(event) {
  event.preventDefault();
  const f = event.target.elements;
  const accepted = await postJSON("/heads", { name: f.name.value.trim(), dataset: f.dataset.value,
    backbone: f.backbone.value, head: f.head.value, background: true });
  say(`training job ${accepted.job_id} started`);
  pollJobs();
}

const showHead = guarded(async (name) => {
  state.head = name;
  if (location.hash !== `#heads/${encodeURIComponent(name)}`) history.replaceState(null, "", `#heads/${encodeURIComponent(name)}`);
  renderHeads();
  const head = await getJSON(`/heads/${encodeURIComponent(name)}`);
  if (state.head !== name) return;
  $("#head-detail").hidden = false;
  $("#head-title").textContent = `${head.name}: ${head.kind} on ${head.backbone} features of ${head.dataset}`;
  state.headDetail = head;
  if (!state.datasets.length) await loadDatasets();
  if (state.head !== name) return;
  fillDatasets($("#head-dataset"), head, "");
  $("#head-split").value = "test";
  await renderHeadSplit();
});

// another dataset is scored on all its images by default, the head's own on its test split
function headDatasetChanged() {
  $("#head-split").value = $("#head-dataset").value ? "all" : "test";
  renderHeadSplit();
}

const renderHeadSplit = guarded(async () => {
  const head = state.headDetail;
  const other = $("#head-dataset").value, split = $("#head-split").value;
  const query = new URLSearchParams({ split });
  if (other) query.set("dataset", other);
  const stale = () => state.headDetail !== head || $("#head-split").value !== split || $("#head-dataset").value !== other;
  let m = other ? undefined : (head.metrics || {})[split], warnings = [], refused = null;
  $("#head-warnings").replaceChildren();
  if (!m) { // another dataset, or a split not scored when the head was saved: scored now from the cache
    $("#head-summary").textContent = "scoring…";
    try {
      ({ metrics: m, warnings } = await getJSON(`/heads/${encodeURIComponent(head.name)}/evaluation?${query}`));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      refused = error.message; // e.g. vectors missing there: said where the figures would be
      m = { n: 0 };
    }
    if (stale()) return;
  }
  $("#head-summary").textContent = refused ?? (m.n
    ? `${m.n} images · accuracy ${fmt.num(m.accuracy)} · macro F1 ${fmt.num(m.f1_macro)} · log loss ${fmt.num(m.log_loss)} · ROC AUC ${fmt.num(m.roc_auc)}`
    : `no ${split} images`);
  $("#head-warnings").replaceChildren(...warnings.map((w) => el("li", { text: w })));
  renderConfusion(head, split, m, other);
  renderPerClass(m);
  const history = head.history || [];
  const curve = $("#training-curve");
  if (history.length) {
    const epochs = history.map((h) => h.epoch);
    const series = ["train_loss", "val_loss"].filter((k) => k in history[0]).map((k) => ({ name: k.replace("_", " "), xs: epochs, ys: history.map((h) => h[k]) }));
    curve.replaceChildren(lineChart(series, { xLabel: "epoch", yLabel: "loss", wholeX: true }));
  } else {
    curve.replaceChildren(el("p", { class: "muted", text: `${head.kind} is fitted in one step: no training curve` }));
  }
  const roc = $("#roc");
  roc.replaceChildren(el("p", { class: "muted", text: "…" }));
  if (!m.n) {
    roc.replaceChildren(el("p", { class: "muted", text: "no ROC: nothing scored" }));
    return;
  }
  const answer = await getJSON(`/heads/${encodeURIComponent(head.name)}/roc?${query}`);
  if (stale()) return;
  // many classes: the ROC_SHOWN the head separates worst (a thousand curves are one blot, and a legend of a thousand)
  const curves = answer.curves.length > ROC_SHOWN
    ? [...answer.curves].sort((a, b) => a.auc - b.auc).slice(0, ROC_SHOWN) : answer.curves;
  roc.replaceChildren(...(curves.length
    ? [lineChart(curves.map((c) => ({ name: `${c.label} (AUC ${c.auc.toFixed(3)})`, xs: c.fpr, ys: c.tpr })),
      { xLabel: "false positive rate", yLabel: "true positive rate", xMax: 1, yMax: 1, diagonal: true }),
    ...(curves.length < answer.curves.length ? [el("p", { class: "muted", text:
      `${answer.curves.length} classes: the ${ROC_SHOWN} with the lowest AUC` })] : [])]
    : [el("p", { class: "muted", text: "no ROC: this split lacks positives or negatives" })]));
});

function renderConfusion(head, split, m, dataset) {
  const box = $("#confusion");
  const labels = m.labels || [], matrix = m.confusion_matrix || [];
  if (!labels.length) {
    box.replaceChildren(el("p", { class: "muted", text: "no images in this split" }));
    return;
  }
  if (labels.length > MATRIX_MAX) {
    box.replaceChildren(confusedPairs(head, split, labels, matrix, dataset));
    return;
  }
  let peak = 1; // a loop: Math.max(...cells) overflows the stack with a million of them
  for (const row of matrix) for (const count of row) peak = Math.max(peak, count);
  const table = el("table", { class: "confusion" });
  table.append(el("thead", {}, el("tr", {}, el("th", { text: "true \\ predicted" }),
    ...labels.map((l) => el("th", { class: "col", title: l, text: l })))));
  const body = el("tbody");
  labels.forEach((trueLabel, i) => {
    const row = el("tr", {}, el("th", { class: "rowhead", title: trueLabel, text: trueLabel }));
    labels.forEach((predicted, j) => {
      const count = matrix[i][j];
      const level = Math.min(9, Math.round((9 * count) / peak));
      const cell = el("td", { class: `cell l${level}${i === j ? " diag" : ""}${count && i !== j ? " clickable" : ""}`,
        "data-true": trueLabel, "data-predicted": predicted, text: count,
        title: `${count} ${trueLabel} predicted ${predicted}` });
      if (count && i !== j) cell.addEventListener("click", () => openMistakes(head.name, split, trueLabel, predicted, dataset));
      row.append(cell);
    });
    body.append(row);
  });
  table.append(body);
  box.replaceChildren(table);
}

const ROC_SHOWN = 10;

// more classes than a matrix can show (a thousand make a million cells): the most frequent confusions instead
const MATRIX_MAX = 40, PAIRS_SHOWN = 50;

function confusedPairs(head, split, labels, matrix, dataset) {
  const pairs = [];
  let wrong = 0;
  matrix.forEach((row, i) => row.forEach((count, j) => {
    if (i !== j && count) {
      pairs.push([count, i, j]);
      wrong += count;
    }
  }));
  pairs.sort((a, b) => b[0] - a[0] || a[1] - b[1] || a[2] - b[2]);
  const shown = pairs.slice(0, PAIRS_SHOWN);
  const note = el("p", { class: "muted", text: `${labels.length} classes, too many for a matrix: ` +
    (shown.length ? `the ${shown.length} most frequent confusions of ${pairs.length} (${wrong} images predicted ` +
      `wrong); click a row for its images` : "no image predicted wrong") });
  const body = el("tbody", {}, ...shown.map(([count, i, j]) => {
    const row = el("tr", { class: "clickable", "data-true": labels[i], "data-predicted": labels[j] },
      el("td", { text: labels[i] }), el("td", { text: labels[j] }), el("td", { class: "num", text: count }));
    row.addEventListener("click", () => openMistakes(head.name, split, labels[i], labels[j], dataset));
    return row;
  }));
  return el("div", {}, note, el("table", { class: "grid compact pairs" }, el("thead", {}, el("tr", {},
    ...["true", "predicted", "images"].map((t) => el("th", { text: t })))), body));
}

function renderPerClass(m) {
  const rows = Object.entries(m.per_class || {});
  $("#per-class tbody").replaceChildren(...rows.map(([label, v]) => el("tr", {}, el("td", { text: label }),
    el("td", { class: "num", text: fmt.num(v.precision) }), el("td", { class: "num", text: fmt.num(v.recall) }),
    el("td", { class: "num", text: fmt.num(v.f1) }), el("td", { class: "num", text: v.support }))));
}

// ---- Mistakes --------------------------------------------------------------------------------------------------

function openMistakes(head, split, trueLabel, predicted, dataset) {
  Object.assign(state.mistakes, { head, dataset: dataset || null, split, true: trueLabel, predicted, offset: 0 });
  location.hash = "#mistakes";
}

const loadMistakes = guarded(async (more = false) => {
  const s = state.mistakes;
  const form = $("#mistakes-form");
  if (!s.head) s.head = form.elements.head.value || null;
  form.elements.head.value = s.head ?? "";
  fillDatasets(form.elements.dataset, state.heads.find((h) => h.name === s.head), s.dataset);
  s.dataset = form.elements.dataset.value || null; // a dataset gone since, or without the head's features
  form.elements.split.value = s.split;
  form.elements.order.value = s.order;
  const filtered = s.true !== null;
  $("#mistakes-filter").hidden = !filtered;
  $("#mistakes-filter .chip").textContent = filtered ? `true ${s.true} → predicted ${s.predicted}` : "";
  const grid = $("#mistakes-grid");
  if (!more) {
    s.offset = 0;
    $("#mistakes-count").textContent = "loading…"; // never an old count beside an emptied grid
    grid.replaceChildren();
    dropBlobs();
  }
  if (!s.head) {
    $("#mistakes-count").textContent = "No head yet.";
    return;
  }
  const params = new URLSearchParams({ split: s.split, order: s.order, limit: PAGE, offset: s.offset });
  if (s.dataset) params.set("dataset", s.dataset);
  if (filtered) {
    params.set("true", s.true);
    params.set("predicted", s.predicted);
  }
  const asked = JSON.stringify(s);
  const answer = await getJSON(`/heads/${encodeURIComponent(s.head)}/mistakes?${params}`);
  if (JSON.stringify(s) !== asked) return; // the user moved on meanwhile
  $("#mistakes-count").textContent = `${answer.total} mistakes of ${s.head} on ${s.split}` +
    (s.dataset ? ` of ${answer.dataset}` : "") +
    (answer.total ? `, ${s.order === "confident" ? "most" : "least"} confident first` : "");
  grid.append(...answer.rows.map((r) => el("figure", { class: "card mistake", "data-sha": r.sha256 },
    thumb(answer.dataset, r.sha256, r.path),
    el("figcaption", {}, el("div", { class: "labels" }, el("span", { class: "true", text: r.true }), " → ",
      el("span", { class: "predicted", text: r.predicted })),
    el("div", { class: "confidence", text: fmt.pct(r.confidence) }), el("div", { class: "path", title: r.path, text: r.path })))));
  s.offset += answer.rows.length;
  $("#mistakes-more").hidden = s.offset >= answer.total;
  if (!performance.getEntriesByName("mistakes-grid").length) performance.mark("mistakes-grid");
});

function mistakesChanged(event) {
  const f = event.currentTarget.elements;
  const headChanged = f.head.value !== state.mistakes.head;
  const dataset = headChanged ? null : f.dataset.value || null;
  // another dataset is shown whole by default, the head's own by its test split
  const split = event.target.name === "dataset" || headChanged ? (dataset ? "all" : "test") : f.split.value;
  Object.assign(state.mistakes, { head: f.head.value, dataset, split, order: f.order.value });
  if (headChanged || ["split", "dataset"].includes(event.target.name)) {
    Object.assign(state.mistakes, { true: null, predicted: null });
  }
  loadMistakes();
}

// ---- Predict ---------------------------------------------------------------------------------------------------

const MAX_FILES = 16; // the server's default per request

const predict = guarded(async (files) => {
  const images = [...files].filter((f) => f.type.startsWith("image/") || /\.(jpe?g|png|webp|bmp|gif|tiff?|heic|heif|avif|p[pgbn]m|dcm|dicom|jp2|j2k)$/i.test(f.name));
  if (!images.length) {
    say("drop image files (JPEG, PNG, WebP, …)", "error");
    return;
  }
  const form = $("#predict-form");
  const head = form.elements.head.value;
  if (!head) {
    say("train a head first: there is none to predict with", "error");
    return;
  }
  const out = $("#predictions");
  for (const url of out.querySelectorAll("img")) URL.revokeObjectURL(url.src);
  out.replaceChildren();
  for (let start = 0; start < images.length; start += MAX_FILES) {
    const chunk = images.slice(start, start + MAX_FILES);
    const body = new FormData();
    for (const file of chunk) body.append("files", file, file.name);
    body.append("head", head);
    body.append("top_k", form.elements.top_k.value || "3");
    const answer = await (await api("/predict", { method: "POST", body })).json();
    answer.results.forEach((r, k) => {
      const preview = el("img", { class: "thumb", alt: r.file, src: URL.createObjectURL(chunk[k]) });
      const bars = r.error
        ? el("p", { class: "error", text: r.error })
        : el("ol", { class: "bars" }, ...r.top.map((t) => {
          const fill = el("span", { class: "fill" });
          fill.style.width = `${(100 * t.probability).toFixed(1)}%`;
          return el("li", {}, el("span", { class: "label", text: t.label }), el("span", { class: "bar" }, fill),
            el("span", { class: "p", text: fmt.pct(t.probability) }));
        }));
      out.append(el("figure", { class: "card prediction" }, preview,
        el("figcaption", {}, el("div", { class: "path", text: r.file }), bars)));
    });
  }
});

// ---- Predict a dataset from the cache ------------------------------------------------------------------------------

const cached = { head: null, dataset: null, split: "all", offset: 0, total: 0 };

function renderCachedForm() {
  const head = state.heads.find((h) => h.name === $("#predict-form").elements.head.value);
  const names = head ? state.datasets.filter((d) => hasFeaturesOf(d, head)).map((d) => d.name) : [];
  fillSelect($("#cached-form").elements.dataset, names, head?.dataset);
  $("#cached-form button[type=submit]").disabled = !names.length;
}

const cachedTitle = () => `${cached.total} images of ${cached.dataset} (${cached.split}) predicted by ${cached.head}`;

function cachedQuery(offset, limit, topK = 1) {
  return `/heads/${encodeURIComponent(cached.head)}/predictions?` + new URLSearchParams({ dataset: cached.dataset,
    split: cached.split, top_k: topK, limit, offset });
}

const loadCached = guarded(async (more = false) => {
  const body = $("#cached-table tbody");
  if (!more) {
    const f = $("#cached-form").elements;
    Object.assign(cached, { head: $("#predict-form").elements.head.value, dataset: f.dataset.value,
      split: f.split.value, offset: 0, total: 0 });
    body.replaceChildren();
    dropBlobs("cached");
    $("#cached-table").hidden = $("#cached-more").hidden = $("#cached-csv").hidden = true;
  }
  if (!cached.head || !cached.dataset) return;
  $("#cached-count").textContent = "predicting…";
  const asked = JSON.stringify(cached);
  let answer;
  try {
    answer = await getJSON(cachedQuery(cached.offset, PAGE));
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    if (JSON.stringify(cached) === asked) $("#cached-count").textContent = error.message; // e.g. vectors missing
    return;
  }
  if (JSON.stringify(cached) !== asked) return; // the user moved on meanwhile
  body.append(...answer.rows.map((r) => {
    const top = r.top[0];
    return el("tr", { class: r.true !== null && r.true !== top.label ? "wrong" : "" },
      el("td", {}, thumb(cached.dataset, r.sha256, r.path, "cached")), el("td", { class: "path", text: r.path }),
      el("td", { class: "label", text: top.label }), el("td", { class: "num", text: fmt.pct(top.probability) }),
      el("td", { text: r.true ?? "–" }));
  }));
  cached.offset += answer.rows.length;
  cached.total = answer.total;
  const wrong = body.querySelectorAll("tr.wrong").length;
  $("#cached-count").textContent = `${cachedTitle()}; ${cached.offset} shown` +
    (wrong ? `, ${wrong} of them wrong (red)` : "");
  $("#cached-table").hidden = $("#cached-csv").hidden = false;
  $("#cached-more").hidden = cached.offset >= answer.total;
});

// a field as a spreadsheet will read it: quoted, and never taken for a formula
function csvField(value) {
  const text = value === null || value === undefined ? "" : String(value);
  return `"${(/^[=+\-@\t\r]/.test(text) ? `'${text}` : text).replaceAll('"', '""')}"`;
}

const downloadCached = guarded(async () => {
  const k = Number($("#predict-form").elements.top_k.value) || 3;
  const lines = [["image", "prediction", "probability", "top_k", "true_label", "split"].map(csvField).join(",")];
  for (let offset = 0; offset < cached.total; offset += 1000) {
    $("#cached-count").textContent = `preparing the CSV: ${offset} of ${cached.total}…`;
    const answer = await getJSON(cachedQuery(offset, 1000, k));
    for (const r of answer.rows) {
      lines.push([r.path, r.top[0].label, r.top[0].probability, r.top.map((t) => `${t.label}:${t.probability}`).join("|"),
        r.true, r.split].map(csvField).join(","));
    }
  }
  const link = el("a", { href: URL.createObjectURL(new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv" })),
    download: `${cached.head}-${cached.dataset}-${cached.split}.csv` });
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  $("#cached-count").textContent = `${cachedTitle()}: CSV written (${lines.length - 1} rows)`;
});

function setUpDrop() {
  const zone = $("#drop-zone");
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (e) => {
      e.preventDefault();
      zone.classList.add("over");
    });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    predict(e.dataTransfer.files);
  });
  $("#predict-files").addEventListener("change", (e) => {
    predict(e.target.files);
    e.target.value = "";
  });
}

// ---- routing ---------------------------------------------------------------------------------------------------

function route() {
  const [view, arg] = location.hash.replace(/^#/, "").split("/");
  state.view = VIEWS.includes(view) ? view : "datasets";
  for (const name of VIEWS) $(`#view-${name}`).hidden = name !== state.view;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("current", link.dataset.view === state.view);
  if (state.view === "datasets") loadDatasets();
  if (state.view === "jobs") {
    renderJobs(); // what the last poll saw, at once; the poll redraws when something changed
    pollJobs();
  }
  if (state.view === "heads") {
    loadHeads().then(() => arg && showHead(decodeURIComponent(arg)));
    loadDatasets();
  }
  if (state.view === "mistakes") Promise.all([loadHeads(), loadDatasets()]).then(() => loadMistakes());
  if (state.view === "predict") Promise.all([loadHeads(), loadDatasets()]).then(renderCachedForm);
}

function start() {
  $("#extract-form").addEventListener("submit", guarded(submitExtract));
  $("#extract-form").elements.labels.addEventListener("change", extractLabelsChanged);
  $("#extract-preview").addEventListener("click", guarded(previewExtract));
  $("#train-form").addEventListener("submit", guarded(submitTrain));
  $("#train-form").elements.dataset.addEventListener("change", renderTrainForm);
  $("#heads-table thead").addEventListener("click", sortHeads);
  $("#head-split").addEventListener("change", () => renderHeadSplit());
  $("#head-dataset").addEventListener("change", headDatasetChanged);
  $("#mistakes-form").addEventListener("change", mistakesChanged);
  $("#mistakes-form").addEventListener("submit", (e) => e.preventDefault());
  $("#predict-form").addEventListener("submit", (e) => e.preventDefault());
  $("#predict-form").elements.head.addEventListener("change", renderCachedForm);
  $("#cached-form").addEventListener("submit", (e) => {
    e.preventDefault();
    loadCached();
  });
  $("#cached-more").addEventListener("click", () => loadCached(true));
  $("#cached-csv").addEventListener("click", downloadCached);
  $("#mistakes-clear").addEventListener("click", () => {
    Object.assign(state.mistakes, { true: null, predicted: null });
    loadMistakes();
  });
  $("#mistakes-more").addEventListener("click", () => loadMistakes(true));
  $("#forget-key").hidden = !sessionStorage.getItem(KEY);
  $("#forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    $("#forget-key").hidden = true;
    say("API key forgotten for this tab");
  });
  $("#key-dialog").addEventListener("cancel", (e) => e.preventDefault()); // the page cannot work without it
  setUpDrop();
  getJSON("/backbones").then((list) => fillSelect($("#backbone-names"), list.map((b) => b.name)), () => {});
  window.addEventListener("hashchange", route);
  route();
  pollJobs();
}

start();
