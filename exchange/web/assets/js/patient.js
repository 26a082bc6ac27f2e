// The patient's own page: log in with the resident ID and a one-time code, then their results across hospitals,
// who accessed them (break-glass flagged) and their sharing blocks.
import { announce, api, beijingMinute, clear, el, errorText, has, header, lang, loadMessages, t } from "./common.js";

const byId = (id) => document.getElementById(id);
const CATEGORIES = ["biochemistry", "immunology", "haematology", "coagulation", "molecular", "microbiology", "urine",
  "body_fluid", "CT", "MR", "DR", "ultrasound", "nuclear_medicine", "electrophysiology", "function"];
const label = (prefix, value) => (value && has(`${prefix}.${value}`) ? t(`${prefix}.${value}`) : value || "");
const items = new Map();
let residentId = "";

async function itemNames(codes) {
  await Promise.all([...new Set(codes)].filter((c) => c && !items.has(c)).map((code) =>
    api("GET", `/api/v1/items/${encodeURIComponent(code)}`).then((i) => items.set(code, i)).catch(() => items.set(code, null))));
}

const itemName = (code, fallback) => {
  const item = items.get(code);
  return item ? (lang === "en" ? item.name_en : item.name_zh) : fallback || code || "";
};

async function sendCode(event) {
  event.preventDefault();
  residentId = byId("p-resident-id").value.trim().toUpperCase();
  try {
    await api("POST", "/api/v1/patient/code", { patient: { resident_id: residentId } });
    announce(t("patient.code_sent"), "ok");
    byId("p-code").focus();
  } catch (error) {
    announce(errorText(error), "error");
  }
}

async function login(event) {
  event.preventDefault();
  residentId = residentId || byId("p-resident-id").value.trim().toUpperCase();
  try {
    const token = await api("POST", "/api/v1/patient/token",
      { patient: { resident_id: residentId }, code: byId("p-code").value.trim() });
    sessionStorage.clear();
    sessionStorage.setItem("hrx.bearer", token.access_token);
    await show();
  } catch (error) {
    announce(errorText(error), "error");
  }
}

function logout() {
  sessionStorage.clear();
  location.assign("/ui/patient");
}

function selectTab(name) {
  for (const tab of ["results", "log", "blocks"]) {
    byId(`tab-${tab}`).setAttribute("aria-selected", String(tab === name));
    byId(`panel-${tab}`).hidden = tab !== name;
  }
}

async function show() {
  document.body.dataset.ready = "false";
  const me = await api("GET", "/api/v1/auth/me");
  header({ role: me.role }, { onLogout: logout });
  byId("patient-login").hidden = true;
  byId("patient-data").hidden = false;
  const [results, log] = await Promise.all([api("GET", "/api/v1/me/results"), api("GET", "/api/v1/me/access-log")]);
  await itemNames(results.results.flatMap((r) => r.values.map((v) => v.item)));
  const issuers = byId("b-issuer");
  for (const [id, name] of new Map(results.results.map((r) => [r.issuer, r.issuer_name || r.issuer]))) {
    if (![...issuers.options].some((o) => o.value === id)) issuers.append(el("option", { value: id }, name));
  }
  const rows = clear(byId("result-rows"));
  for (const r of results.results) {
    for (const v of r.values) {
      const range = v.reference_range.text || [v.reference_range.low, v.reference_range.high].map((x) => x ?? "").join("–");
      rows.append(el("tr", { class: v.interpretation && v.interpretation !== "N" ? "abnormal" : "" },
        el("td", { class: "nowrap" }, beijingMinute(r.reported_at)), el("td", {}, r.issuer_name || r.issuer),
        el("th", { scope: "row" }, itemName(v.item, v.local_code)),
        el("td", {}, `${v.value ?? v.value_text ?? ""} ${v.unit || ""}`), el("td", {}, range)));
    }
    if (r.report) {
      rows.append(el("tr", {}, el("td", {}, beijingMinute(r.reported_at)), el("td", {}, r.issuer_name || r.issuer),
        el("th", { scope: "row" }, itemName(r.item, r.local_code)), el("td", { colspan: "2" }, r.report.impression || "")));
    }
  }
  const logRows = clear(byId("log-rows"));
  for (const a of log.accesses) {
    logRows.append(el("tr", { class: a.break_glass ? "break-glass" : "" },
      el("td", { class: "nowrap" }, beijingMinute(a.at)), el("td", {}, a.institution_name || a.institution || ""),
      el("td", {}, a.department || ""), el("td", {}, a.who || t("patient.myself")), el("td", {}, label("audit_action", a.what)),
      el("td", {}, label("purpose", a.purpose)),
      el("td", {}, a.break_glass ? el("span", { class: "badge badge-break-glass" }, t("auditor.break_glass")) : "")));
  }
  await showBlocks();
  announce(t("patient.summary", { results: results.results.length, accesses: log.accesses.length,
    glass: log.accesses.filter((a) => a.break_glass).length }));
  document.body.dataset.ready = "true";
}

async function showBlocks() {
  const found = await api("GET", "/api/v1/me/blocks");
  const rows = clear(byId("block-rows"));
  for (const b of found.blocks) {
    rows.append(el("tr", {}, el("td", {}, b.issuer || t("patient.every_hospital")),
      el("td", {}, b.category ? label("category", b.category) : t("patient.every_category")),
      el("td", {}, beijingMinute(b.created_at)),
      el("td", {}, el("button", { type: "button", onclick: () => removeBlock(b.id) }, t("patient.remove_block")))));
  }
}

async function addBlock(event) {
  event.preventDefault();
  const form = event.target;
  const body = { issuer: form.issuer.value || null, category: form.category.value || null };
  try {
    await api("POST", "/api/v1/me/blocks", body);
    announce(t("patient.block_added"), "ok");
    await showBlocks();
  } catch (error) {
    announce(errorText(error), "error");
  }
}

async function removeBlock(id) {
  try {
    await api("DELETE", `/api/v1/me/blocks/${id}`);
    announce(t("patient.block_removed"), "ok");
    await showBlocks();
  } catch (error) {
    announce(errorText(error), "error");
  }
}

async function fillBlockForm() {
  const issuers = byId("b-issuer");
  issuers.append(el("option", { value: "" }, t("patient.every_hospital")));
  const categories = byId("b-category");
  categories.append(el("option", { value: "" }, t("patient.every_category")));
  for (const c of CATEGORIES) categories.append(el("option", { value: c }, label("category", c)));
}

async function main() {
  await loadMessages();
  header(null);
  byId("code-form").addEventListener("submit", sendCode);
  byId("token-form").addEventListener("submit", login);
  byId("block-form").addEventListener("submit", addBlock);
  for (const tab of ["results", "log", "blocks"]) byId(`tab-${tab}`).addEventListener("click", () => selectTab(tab));
  byId("patient-data").querySelector("[role=tablist]").setAttribute("aria-label", t("patient.title"));
  await fillBlockForm();
  if (sessionStorage.getItem("hrx.bearer")) {
    try {
      await show();
      return;
    } catch (_) {
      sessionStorage.clear();
    }
  }
  byId("patient-login").hidden = false;
  document.body.dataset.ready = "true";
}

main();
