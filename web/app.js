// The vismem web page: every action is a call to the JSON API (/v1/info,
// /v1/explain, /v1/remove). Text from the service is set with textContent
// only: ids and labels are data, never markup.
"use strict";

const $ = (id) => document.getElementById(id);
let lastFile = null;

const tokenInput = $("token");
tokenInput.value = sessionStorage.getItem("vismem-token") || "";
tokenInput.addEventListener("change", () => {
  sessionStorage.setItem("vismem-token", tokenInput.value.trim());
  loadInfo();
});

function headers(extra) {
  const h = Object.assign({}, extra);
  const t = tokenInput.value.trim();
  if (t) h["Authorization"] = "Bearer " + t;
  return h;
}

async function call(method, path, body, contentType) {
  const opts = { method, headers: headers(contentType ? { "Content-Type": contentType } : {}) };
  if (body !== undefined) opts.body = body;
  const r = await fetch(path, opts);
  let j = null;
  try { j = await r.json(); } catch (e) { /* not JSON: reported below */ }
  if (!r.ok) throw new Error((j && j.error) || ("HTTP " + r.status));
  return j;
}

function showError(e) { $("error").textContent = e ? String(e.message || e) : ""; }
function status(s) { $("status").textContent = s; }

async function loadInfo() {
  try {
    const i = await call("GET", "/v1/info");
    $("info").textContent = i.items + " items, " + i.labels + " labels, model " + (i.model_id || "none") +
      ", generation " + i.generation;
  } catch (e) {
    $("info").textContent = "info: " + e.message;
  }
}

function fmt(x, d) { return Number(x).toFixed(d); }

function render(x) {
  $("result").hidden = false;
  $("prediction").textContent = x.prediction;
  $("signals").textContent = x.vote + " vote over k=" + x.k + " · score share " + fmt(x.score_share, 2) +
    " · vote share " + fmt(x.vote_share, 2) + " · entropy " + fmt(x.entropy, 2) + " · OOD score " + fmt(x.ood_score, 4);
  const scores = $("scores");
  scores.replaceChildren();
  const total = x.scores.reduce((a, s) => a + s.score, 0) || 1;
  for (const s of x.scores.slice(0, 10)) {
    const row = document.createElement("div");
    row.className = "bar";
    const name = document.createElement("span");
    name.textContent = s.label;
    const track = document.createElement("div");
    const fill = document.createElement("div");
    fill.className = "fill" + (s.label === x.prediction ? " win" : "");
    fill.style.width = Math.max(1, 100 * s.score / total) + "%";
    track.appendChild(fill);
    const val = document.createElement("span");
    val.textContent = Number(s.score).toPrecision(3);
    row.append(name, track, val);
    scores.appendChild(row);
  }
  const grid = $("neighbors");
  grid.replaceChildren();
  for (const n of x.neighbors) {
    const t = document.createElement("div");
    t.className = "tile" + (n.label === x.prediction ? " agree" : "");
    t.dataset.id = n.id;
    let pic;
    if (n.thumbnail) {
      pic = document.createElement("img");
      pic.src = n.thumbnail;  // a data: URI made by the service
      pic.alt = n.id;
    } else {
      pic = document.createElement("div");
      pic.className = "noimg";
      pic.textContent = "no image";
    }
    const lab = document.createElement("div");
    lab.className = "lab";
    lab.textContent = "#" + n.rank + " " + n.label;
    const meta = document.createElement("div");
    meta.textContent = "vote " + Number(n.weight).toPrecision(3) + " · distance " + fmt(n.distance, 4) +
      (n.excluded ? " · pruned" : "");
    const id = document.createElement("div");
    id.className = "id";
    id.textContent = n.id;
    const rm = document.createElement("button");
    rm.textContent = "remove from memory";
    rm.addEventListener("click", () => removeItem(n.id));
    t.append(pic, lab, meta, id, rm);
    grid.appendChild(t);
  }
}

async function classify(file) {
  lastFile = file;
  showError(null);
  $("query").src = URL.createObjectURL(file);
  $("query").style.display = "block";
  status("classifying " + file.name + "…");
  document.body.dataset.state = "busy";
  try {
    const k = encodeURIComponent($("k").value || "20");
    const vote = encodeURIComponent($("vote").value);
    const type = file.type && file.type.startsWith("image/") ? file.type : "image/jpeg";
    const x = await call("POST", "/v1/explain?k=" + k + "&vote=" + vote + "&show=" + Math.min(Number($("k").value) || 20, 100) + "&id=" +
      encodeURIComponent(file.name), file, type);
    render(x);
    status(file.name + ": " + x.prediction);
    document.body.dataset.state = "done";
  } catch (e) {
    showError(e);
    status("");
    document.body.dataset.state = "error";
  }
}

async function removeItem(id) {
  if (!confirm("Remove " + id + " from the memory? This cannot be undone.")) return;
  showError(null);
  try {
    const r = await call("POST", "/v1/remove", JSON.stringify({ ids: [id] }), "application/json");
    status("removed " + id + " (" + r.items + " items left)");
    document.body.dataset.removed = id;
    await loadInfo();
    if (lastFile) await classify(lastFile);
  } catch (e) {
    showError(e);
  }
}

const drop = $("drop");
drop.addEventListener("click", () => $("file").click());
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
$("file").addEventListener("change", (e) => { if (e.target.files[0]) classify(e.target.files[0]); });
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) classify(e.dataTransfer.files[0]);
});
loadInfo();
