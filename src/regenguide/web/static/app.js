// RegenGuide clinician pages: a small single-page app over the REST API (no build step, no framework).
"use strict";

const API = "/api/v1";
const state = { token: sessionStorage.getItem("rg-token"), role: sessionStorage.getItem("rg-role"), offset: 0 };
const $ = (sel) => document.querySelector(sel);

// Face-map anchors: presentation only (where to draw a region on the schematic face), not clinical data.
const ANCHORS = {
  forehead: [150, 95], glabella: [150, 150], temple: [[55, 140], [245, 140]], tear_trough: [[115, 190], [185, 190]],
  periorbital: [[115, 190], [185, 190]], nose: [150, 210], nasal_dorsum: [150, 200], malar: [[90, 215], [210, 215]],
  cheek: [[90, 230], [210, 230]], midface: [[95, 225], [205, 225]], nasolabial_fold: [[122, 250], [178, 250]],
  lips: [150, 278], upper_lip: [150, 272], lower_lip: [150, 285], perioral: [150, 295],
  marionette: [[120, 300], [180, 300]], chin: [150, 320], jawline: [[85, 300], [215, 300]], scalp: [150, 55],
};

function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

async function api(path, options = {}) {
  const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(options.json);
  }
  const response = await fetch(path.startsWith("/") ? path : `${API}/${path}`, { ...options, headers });
  if (response.status === 401 && !path.includes("auth/token")) { logout(); throw new Error("session expired"); }
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const error = new Error(body.detail || body.title || response.statusText);
    error.problem = body;
    throw error;
  }
  return body;
}

function show(view) {
  for (const section of document.querySelectorAll("main > section")) section.hidden = true;
  $(`#${view}-view`).hidden = false;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.view === view);
}

async function login(event) {
  event.preventDefault();
  $("#login-error").textContent = "";
  const form = new URLSearchParams({ username: $("#username").value, password: $("#password").value });
  try {
    const token = await api("auth/token", { method: "POST", body: form,
      headers: { "Content-Type": "application/x-www-form-urlencoded" } });
    state.token = token.access_token; state.role = token.role;
    sessionStorage.setItem("rg-token", state.token); sessionStorage.setItem("rg-role", state.role);
    location.hash = "#/patients";
    route();
  } catch (error) {
    $("#login-error").textContent = error.message;
  }
}

function logout() {
  state.token = null; sessionStorage.clear();
  $("#nav").hidden = true; show("login"); location.hash = "";
}

async function loadPatients() {
  show("patients");
  const mrn = $("#mrn-filter").value.trim();
  const query = new URLSearchParams({ limit: 25, offset: state.offset });
  if (mrn) query.set("mrn", mrn);
  const page = await api(`patients?${query}`);
  $("#patients-count").textContent = `${page.total} patients`;
  $("#patients-table tbody").innerHTML = page.items.map((p) => `
    <tr data-id="${p.id}"><td>${p.id}</td><td>${esc(p.mrn ?? "—")}</td>
    <td>${p.family_name ? esc(`${p.family_name}, ${p.given_name}`) : "<i>de-identified</i>"}</td>
    <td>${esc(p.birth_date ?? "—")}</td><td>${esc(p.sex)}</td>
    <td>${p.serious_event_flag ? '<span class="badge critical">serious AE</span>' : ""}</td></tr>`).join("");
  $("#prev").disabled = state.offset === 0;
  $("#next").disabled = state.offset + 25 >= page.total;
}

function list(items, render) {
  return items.length ? `<ul>${items.map((x) => `<li>${render(x)}</li>`).join("")}</ul>` : "<p class=hint>None recorded.</p>";
}

async function loadPatient(id) {
  show("patient");
  const p = await api(`patients/${id}`);
  $("#patient-title").textContent = p.family_name ? `${p.family_name}, ${p.given_name}` : `Patient ${p.id}`;
  $("#patient-summary").innerHTML = `<p>Record ${esc(p.mrn ?? "—")} · born ${esc(p.birth_date ?? "—")} · ${esc(p.sex)}
    · Fitzpatrick ${esc(p.fitzpatrick ?? "—")} ${p.serious_event_flag ? '<span class="badge critical">serious adverse event</span>' : ""}</p>`;
  const [plans, procedures, visits, aes, products] = await Promise.all([
    api(`plans?patient_id=${id}`), api(`procedures?patient_id=${id}`), api(`visits?patient_id=${id}`),
    api(`adverse-events?patient_id=${id}`), api(`products?patient_id=${id}`).catch(() => ({ items: [] })),
  ]);
  $("#patient-plans").innerHTML = list(plans.items, (x) => {
    const check = x.latest_check || { findings: [] };
    const critical = check.findings.filter((f) => f.indicator === "critical").length;
    return `${esc(x.modality)} for ${esc(x.indication)} — <b>${esc(x.status)}</b>
      ${critical ? `<span class="badge critical">${critical} critical</span>` : '<span class="badge ok">no critical finding</span>'}`;
  });
  $("#patient-procedures").innerHTML = list(procedures.items, (x) =>
    `${esc(x.performed_at.slice(0, 10))} ${esc(x.modality)}, ${x.injections.length} injections, guidance: ${esc(x.guidance_imaging)}${x.doppler ? " + Doppler" : ""}`);
  $("#patient-visits").innerHTML = list(visits.items, (x) => `${esc(x.label)} due ${esc(x.due_on)}: ${esc(x.status)}`);
  $("#patient-aes").innerHTML = list(aes.items, (x) =>
    `${esc(x.event_type)} grade ${x.severity}${x.serious ? ' <span class="badge critical">serious</span>' : ""} (${esc(x.outcome)})`);
  $("#patient-products").innerHTML = list(products.items, (x) => `${esc(x.identifier)} ${esc(x.product_type)}: ${esc(x.status)}`);
}

async function loadExample() {
  const name = $("#example").value;
  const example = await api(`kb/examples/${name}`);
  $("#plan-json").value = JSON.stringify(example, null, 2);
  drawMarkers(example.injections || [], []);
}

function anchor(region, side) {
  const a = ANCHORS[region];
  if (!a) return null;
  if (Array.isArray(a[0])) return side === "right" ? a[0] : a[1];  // patient's right is the viewer's left
  return a;
}

function drawMarkers(injections, findings) {
  const rank = { critical: 3, warning: 2, info: 1, ok: 0 };
  const worst = injections.map((_, i) => findings.filter((f) => f.injection_index === i)
    .reduce((w, f) => (rank[f.indicator] > rank[w] ? f.indicator : w), "ok"));
  const placed = new Map();
  $("#markers").innerHTML = injections.map((inj, i) => {
    const xy = anchor(inj.region, inj.side);
    if (!xy) return "";
    const k = `${xy}`; const n = placed.get(k) || 0; placed.set(k, n + 1);
    const [x, y] = [xy[0] + n * 9, xy[1] - n * 9];
    return `<g><circle class="marker ${worst[i] || "ok"}" data-index="${i}" cx="${x}" cy="${y}" r="8">
      <title>#${i} ${esc(inj.region)} ${esc(inj.side || "")}: ${worst[i] || "ok"}</title></circle>
      <text class="marker-label" x="${x + 10}" y="${y + 4}">${i}</text></g>`;
  }).join("");
}

function renderFindings(result) {
  const counts = { critical: 0, warning: 0, info: 0 };
  for (const f of result.findings) counts[f.indicator] += 1;
  $("#verdict").innerHTML = `${counts.critical} critical · ${counts.warning} warning · ${counts.info} info — ` +
    (result.signable ? '<span class="badge ok">signable</span>' : '<span class="badge critical">not signable</span>');
  const reg = result.regulatory || {};
  $("#regulatory").innerHTML = `<p><b>Regulatory (${esc(reg.jurisdiction)}):</b> ${esc(reg.class_label || reg.class)}
    — ${reg.allowed_outside_trial ? "allowed outside a trial" : "trial or licence only"}</p>`;
  $("#findings").innerHTML = result.findings.map((f) => `
    <article class="card ${f.indicator}" data-rule="${esc(f.rule)}">
      <h4><span class="badge ${f.indicator}">${f.indicator}</span> ${esc(f.summary)}</h4>
      <div class="meta">${esc(f.rule)}${f.injection_index !== undefined && f.injection_index !== null ? ` · injection #${f.injection_index}` : ""}
        · source: ${f.source.url ? `<a href="${esc(f.source.url)}" target="_blank" rel="noopener">${esc(f.source.label)}</a>` : esc(f.source.label)}
        · cites ${f.citations.map(esc).join(", ")}${f.evidence ? ` · evidence: ${esc(f.evidence)}` : ""}</div>
      <details><summary>Why</summary><pre>${esc(f.detail)}</pre></details>
      ${(f.suggestions || []).map((s) => `<p>Suggestion: ${esc(s.label)}</p>`).join("")}
    </article>`).join("");
}

async function runCheck() {
  let plan;
  try {
    plan = JSON.parse($("#plan-json").value);
  } catch (error) {
    $("#findings").innerHTML = `<p class="error">The plan is not valid JSON: ${esc(error.message)}</p>`;
    return;
  }
  try {
    const result = await api("plans/check", { method: "POST", json: plan });
    renderFindings(result);
    drawMarkers(plan.injections || [], result.findings);
  } catch (error) {
    const fields = (error.problem?.errors || []).map((e) => `${esc(e.field)}: ${esc(e.message)}`).join("<br>");
    $("#findings").innerHTML = `<p class="error">${esc(error.message)}</p><p>${fields}</p>`;
  }
}

async function verifyBedside(event) {
  event.preventDefault();
  const body = {
    patient_id: Number($("#bs-patient").value), scanned_patient: $("#bs-wristband").value.trim(),
    scanned_product: $("#bs-product").value.trim(), administer: $("#bs-administer").checked,
  };
  const box = $("#bedside-result");
  try {
    const result = await api("bedside/verify", { method: "POST", json: body });
    box.innerHTML = `<div class="verdict-box ok">VERIFIED — product ${esc(result.product_key)} belongs to this patient` +
      `${result.administered ? "; administration recorded" : ""}.</div>`;
  } catch (error) {
    const refusals = error.problem?.refusals || [];
    box.innerHTML = `<div class="verdict-box refused">REFUSED — do not administer.` +
      (refusals.length ? `<ul>${refusals.map((r) => `<li data-code="${esc(r.code)}"><b>${esc(r.code)}</b>: ${esc(r.message)}</li>`).join("")}</ul>`
        : `<ul><li>${esc(error.message)}</li></ul>`) + "</div>";
  }
}

async function loadWorklist() {
  show("worklist");
  const result = await api("worklist").catch((e) => ({ error: e.message }));
  if (result.error) { $("#worklist").innerHTML = `<p class="error">${esc(result.error)}</p>`; return; }
  $("#worklist").innerHTML = `<p>${result.items.length} visits due in the week of ${esc(result.week_of)}</p>` +
    list(result.items, (v) => `<a href="#/patients/${v.patient_id}">patient ${v.patient_id}</a>: ${esc(v.label)} due ${esc(v.due_on)} (${esc(v.state)})`);
}

async function loadRegistry() {
  show("registry");
  const result = await api("analytics/complications").catch((e) => ({ error: e.message }));
  if (result.error) { $("#registry").innerHTML = `<p class="error">${esc(result.error)}</p>`; return; }
  $("#registry").innerHTML = `<p>Complication rates by modality (Wilson 95% intervals; denominators are every treated procedure).</p>
    <table><thead><tr><th>Modality</th><th>Procedures</th><th>With complication</th><th>Rate</th><th>95% CI</th></tr></thead><tbody>
    ${result.rows.map((r) => `<tr><td>${esc(r.group.modality)}</td><td>${r.n}</td><td>${r.events}</td>
      <td>${(100 * r.rate).toFixed(1)}%</td><td>${(100 * r.ci_low).toFixed(1)}–${(100 * r.ci_high).toFixed(1)}%</td></tr>`).join("")}
    </tbody></table><img id="registry-plot" class="plot" alt="Complication rates by modality">`;
  const png = await fetch(`${API}/analytics/complications.png`, { headers: { Authorization: `Bearer ${state.token}` } });
  if (png.ok) $("#registry-plot").src = URL.createObjectURL(await png.blob());
}

function route() {
  if (!state.token) { show("login"); return; }
  $("#nav").hidden = false;
  $("#who").textContent = `signed in as ${state.role}`;
  const hash = location.hash || "#/patients";
  const patient = hash.match(/^#\/patients\/(\d+)/);
  if (patient) return loadPatient(patient[1]);
  if (hash.startsWith("#/plan-check")) { show("plan-check"); if (!$("#plan-json").value) loadExample(); return; }
  if (hash.startsWith("#/worklist")) return loadWorklist();
  if (hash.startsWith("#/bedside")) { show("bedside"); return; }
  if (hash.startsWith("#/registry")) return loadRegistry();
  return loadPatients();
}

$("#login-form").addEventListener("submit", login);
$("#logout").addEventListener("click", logout);
$("#mrn-search").addEventListener("click", () => { state.offset = 0; loadPatients(); });
$("#prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - 25); loadPatients(); });
$("#next").addEventListener("click", () => { state.offset += 25; loadPatients(); });
$("#patients-table tbody").addEventListener("click", (event) => {
  const row = event.target.closest("tr[data-id]");
  if (row) location.hash = `#/patients/${row.dataset.id}`;
});
$("#load-example").addEventListener("click", loadExample);
$("#run-check").addEventListener("click", runCheck);
$("#bedside-form").addEventListener("submit", verifyBedside);
window.addEventListener("hashchange", route);
route();
