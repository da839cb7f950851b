// The page: choose a song (drop, file picker or the example), queue a job, follow its progress, show stems.
"use strict";

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
const POLL_MS = 250;
let config = null;
let source = null; // {kind: "file", file: File} or {kind: "example"}

// fetch + JSON; a failed request throws an Error whose message is the server's one-line "error"
async function api(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (e) {
    throw new Error("cannot reach the server");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = null;
  }
  if (!response.ok) throw new Error((body && body.error) || `the server answered ${response.status}`);
  return body;
}

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

function option(value, selected) {
  const o = document.createElement("option");
  o.value = o.textContent = value;
  o.selected = !!selected;
  return o;
}

async function loadConfig() {
  config = await api("/api/config");
  for (const m of config.models) $("model").append(option(m.name, m.default));
  for (const f of config.formats) $("format").append(option(f, f === "wav"));
  $("example").textContent = `use the example song (${config.example_seconds} s)`;
  showStems();
}

function currentModel() {
  return config.models.find((m) => m.name === $("model").value);
}

function showStems() {
  const model = currentModel();
  const box = $("stems");
  box.querySelectorAll("label").forEach((l) => l.remove());
  for (const stem of model.outputs) {
    const label = document.createElement("label");
    const box_ = document.createElement("input");
    box_.type = "checkbox";
    box_.value = stem;
    box_.checked = true;
    label.append(box_, " " + stem);
    box.append(label);
  }
  showError(model.error || "");
}

function choose(next) {
  source = next;
  $("source").textContent =
    next.kind === "example"
      ? `the example song (${config.example_seconds} s, generated)`
      : `${next.file.name} (${(next.file.size / 1e6).toFixed(1)} MB)`;
  $("run").disabled = false;
  showError("");
}

function pickFile(file) {
  const dot = file.name.lastIndexOf(".");
  const suffix = dot < 0 ? "" : file.name.slice(dot).toLowerCase();
  if (!config.upload_suffixes.includes(suffix)) {
    showError(`${file.name}: not a supported file type (choose wav, flac, mp3, ogg)`);
  } else if (file.size > config.max_upload_bytes) {
    showError(`${file.name}: larger than the ${config.max_upload_bytes / 1e6} MB upload limit`);
  } else {
    choose({ kind: "file", file });
  }
}

function showProgress(job) {
  const bar = $("progress");
  $("progress-box").hidden = false;
  if (job && job.total > 0) {
    bar.max = job.total;
    bar.value = job.processed;
  } else {
    bar.removeAttribute("value"); // indeterminate: uploading, queued or loading the model
  }
  let text = "uploading…";
  if (job && job.state === "queued") text = `waiting: ${job.position} job(s) ahead`;
  if (job && job.state === "running")
    text = job.total ? `separating: chunk ${job.processed} of ${job.total}` : "starting…";
  if (job && job.state === "done") text = `done in ${job.seconds.toFixed(1)} s`;
  $("status").textContent = text;
}

function showResults(job) {
  const base = job.name.replace(/\.[^.]*$/, "").replace(/[^\w.-]+/g, "_") || "song";
  const list = $("stem-list");
  list.replaceChildren();
  for (const s of job.stems) {
    const row = document.createElement("div");
    row.className = "stem";
    const name = document.createElement("strong");
    name.textContent = s.stem;
    const player = document.createElement("audio");
    player.controls = true;
    player.preload = "metadata";
    player.src = s.url;
    player.dataset.stem = s.stem;
    const link = document.createElement("a");
    link.href = s.url;
    link.download = `${base}_${s.file}`;
    link.textContent = `download ${s.file}`;
    link.dataset.stem = s.stem;
    row.append(name, player, link);
    list.append(row);
  }
  const images = $("images");
  images.replaceChildren();
  for (const im of job.images) {
    const fig = document.createElement("figure");
    const img = document.createElement("img");
    img.src = im.url;
    img.alt = `${im.label} spectrogram`;
    img.dataset.label = im.label;
    const cap = document.createElement("figcaption");
    cap.textContent = `${im.label} (mel spectrogram, time left to right, low notes at the bottom)`;
    fig.append(img, cap);
    images.append(fig);
  }
  $("results").hidden = false;
}

async function follow(job) {
  while (job.state === "queued" || job.state === "running") {
    showProgress(job);
    await sleep(POLL_MS);
    job = await api(`/api/jobs/${job.id}`);
  }
  if (job.state === "error") throw new Error(job.message);
  showProgress(job);
  showResults(job);
}

async function run() {
  const stems = [...document.querySelectorAll("#stems input:checked")].map((i) => i.value);
  if (!stems.length) return showError("choose at least one stem");
  const params = new URLSearchParams({ model: $("model").value, stems: stems.join(","), format: $("format").value });
  const options = { method: "POST", headers: { "Content-Type": "application/octet-stream" } };
  if (source.kind === "example") params.set("example", "1");
  else {
    params.set("name", source.file.name);
    options.body = source.file;
  }
  showError("");
  $("results").hidden = true;
  $("run").disabled = true;
  showProgress(null);
  try {
    await follow(await api(`/api/jobs?${params}`, options));
  } catch (e) {
    $("progress-box").hidden = true;
    showError(e.message);
  } finally {
    $("run").disabled = false;
  }
}

function wireDrop() {
  const drop = $("drop");
  for (const ev of ["dragenter", "dragover"])
    drop.addEventListener(ev, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
  for (const ev of ["dragleave", "drop"])
    drop.addEventListener(ev, (e) => {
      e.preventDefault();
      drop.classList.remove("over");
    });
  drop.addEventListener("drop", (e) => {
    if (e.dataTransfer.files.length) pickFile(e.dataTransfer.files[0]);
  });
  // a song dropped beside the zone must not make the browser leave the page to play it
  for (const ev of ["dragover", "drop"]) window.addEventListener(ev, (e) => e.preventDefault());
}

$("file").addEventListener("change", () => $("file").files.length && pickFile($("file").files[0]));
$("example").addEventListener("click", () => choose({ kind: "example" }));
$("model").addEventListener("change", showStems);
$("run").addEventListener("click", run);
wireDrop();
loadConfig().catch((e) => showError(e.message));
