// The auditor's page: the audit searched by patient, principal, institution and period; break-glass reads first
// (the review queue).
import { announce, api, beijingMinute, clear, el, errorText, has, header, loadMessages, requireSession, t }
  from "./common.js";

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)$/;
const byId = (id) => document.getElementById(id);
const label = (prefix, value) => (value && has(`${prefix}.${value}`) ? t(`${prefix}.${value}`) : value || "");

async function search(event) {
  if (event) event.preventDefault();
  const form = byId("audit-form");
  const params = new URLSearchParams({ limit: "5000" });
  for (const name of ["patient", "principal", "institution"]) {
    const value = form[name].value.trim();
    if (value) params.set(name, value);
  }
  if (form.break_glass.checked) params.set("break_glass", "true");
  // The period is searched by the API, in its query (not in the records of one page): a bare date is a whole
  // Beijing day there, both ends included, as the Chinese reader reads the time.
  if (form.from.value) params.set("since", form.from.value);
  if (form.to.value) params.set("until", form.to.value);
  announce(t("auditor.searching"));
  try {
    const { records } = await api("GET", `/api/v1/audit?${params}`);
    render(records);
    announce(t("auditor.found", { n: records.length, glass: records.filter((r) => r.break_glass).length }));
  } catch (error) {
    announce(errorText(error), "error");
  }
}

function render(records) {
  const rows = clear(byId("audit-rows"));
  for (const r of records) {
    const detail = Object.entries(r.detail || {}).filter(([, v]) => v !== null && v !== "" && !(Array.isArray(v) && !v.length))
      .map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : ISO.test(String(v)) ? beijingMinute(v) : v}`)
      .join("; ");
    rows.append(el("tr", { class: r.break_glass ? "break-glass" : "" },
      el("td", { class: "nowrap" }, beijingMinute(r.at)),
      el("td", {}, r.break_glass ? el("span", { class: "badge badge-break-glass" }, t("auditor.break_glass")) : ""),
      el("td", {}, r.actor), el("td", {}, label("role", r.role)), el("td", {}, r.institution || ""),
      el("td", {}, r.on_behalf_of || ""), el("td", {}, label("purpose", r.purpose)),
      el("td", {}, label("audit_action", r.action)),
      el("td", { class: "mono", title: r.patient || "" }, r.patient ? `${r.patient.slice(0, 10)}…` : ""),
      el("td", { class: "reason" }, detail)));
  }
}

async function main() {
  await loadMessages();
  const me = await requireSession(["auditor"]);
  header(me);
  byId("audit-form").addEventListener("submit", search);
  byId("a-glass").checked = true; // the review queue first
  await search();
  document.body.dataset.ready = "true";
}

main();
