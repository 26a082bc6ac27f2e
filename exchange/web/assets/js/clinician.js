// The doctor workstation: the encounter reminder, the order-time reminder, decisions (accept, reject with a
// reason, undo, batch per source hospital), result detail with the trend chart, and "report a problem".
import {
  announce, api, ApiError, beijingMinute, clear, el, errorText, gradeName, has, header, lang, loadMessages, maskId,
  openDialog, requireSession, t, timeLeft, watermark,
} from "./common.js";
import { trendChart } from "./trend.js";

const CATEGORY_ORDER = ["biochemistry", "immunology", "haematology", "coagulation", "molecular", "microbiology",
  "urine", "body_fluid", "CT", "MR", "DR", "ultrasound", "nuclear_medicine", "electrophysiology", "function"];

const state = {
  me: null,
  context: null, // {patient: pseudonym, encounter_id, institution, launched}
  residentId: "", // typed by the clinician, kept only in this page's memory
  answer: null,
  reasons: [],
  items: new Map(), // unified item code -> the code book's item
  institutions: new Map(),
  decisions: new Map(), // `${ref}|${item}|${trigger}` -> the standing decision
  viewers: null,
};

const byId = (id) => document.getElementById(id);

function itemName(item) {
  if (!item) return "";
  const name = lang === "en" ? item.name_en : item.name_zh;
  return name || item.code || item.local_code || "";
}

function institutionName(id, fallback) {
  const found = state.institutions.get(id);
  if (found) return lang === "en" ? found.name_en : found.name_zh;
  return fallback || id;
}

function tierName(tier) {
  return tier ? (has(`tier.${tier}`) ? t(`tier.${tier}`) : tier) : "";
}

/** A reason the API wrote in words, with its instants in Beijing time and its tiers in the reader's words. */
function reasonText(reason) {
  const text = lang === "en" ? reason.en : reason.zh;
  return text
    .replace(/\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)/g, (iso) => beijingMinute(iso))
    .replace(/\b(alliance|city|province|region|national)(?=\u7ea7| tier)/g, (tier) => tierName(tier));
}

function badge(status) {
  return el("span", { class: `badge badge-${status}` }, has(`status.${status}`) ? t(`status.${status}`) : status);
}

async function loadReference(codes, issuers) {
  const wanted = [...new Set(codes)].filter((c) => c && !state.items.has(c));
  const places = [...new Set(issuers)].filter((i) => i && !state.institutions.has(i));
  await Promise.all([
    ...wanted.map((code) => api("GET", `/api/v1/items/${encodeURIComponent(code)}`)
      .then((item) => state.items.set(code, item)).catch(() => state.items.set(code, null))),
    ...places.map((id) => api("GET", `/api/v1/institutions/${encodeURIComponent(id)}`)
      .then((found) => state.institutions.set(id, found)).catch(() => state.institutions.set(id, null))),
  ]);
}

// --- the patient ----------------------------------------------------------------------------------------------

function showContext() {
  const ctx = state.context;
  const line = byId("context");
  clear(line);
  if (!ctx) {
    line.textContent = t("clinician.no_patient");
    return;
  }
  line.append(el("span", {}, ctx.launched ? t("clinician.launched") : t("clinician.searched")), " · ",
    el("span", {}, t("clinician.encounter", { id: ctx.encounter_id })));
  if (state.residentId) line.append(" · ", el("span", { class: "mono" }, maskId(state.residentId)));
}

async function check(items, institution = state.me.institution) {
  const body = { patient: { pseudonym: state.context.patient }, requesting_institution: institution,
    encounter_id: state.context.encounter_id };
  if (items) body.items = items;
  return api("POST", "/api/v1/recognition/check", body);
}

async function search(event) {
  event.preventDefault();
  const form = event.target;
  const residentId = (state.residentId || form.resident_id.value).trim().toUpperCase();
  const encounter = form.encounter_id.value.trim();
  if (!residentId || !encounter) {
    announce(t("clinician.search_needs"), "error");
    return;
  }
  state.residentId = residentId;
  form.resident_id.value = maskId(residentId);
  announce(t("clinician.searching"));
  try {
    const answer = await api("POST", "/api/v1/recognition/check", {
      patient: { resident_id: residentId }, requesting_institution: state.me.institution, encounter_id: encounter,
    });
    state.context = { patient: answer.patient.pseudonym, encounter_id: encounter, institution: state.me.institution };
    sessionStorage.setItem("hrx.context", JSON.stringify(state.context));
    byId("break-glass").hidden = true;
    await showAnswer(answer);
  } catch (error) {
    announce(errorText(error), "error");
    if (error instanceof ApiError && error.status === 403) byId("break-glass").hidden = false;
  }
}

async function breakGlass() {
  const reason = await openDialog(byId("glass-dialog"), (form) => form.reason.value.trim() || undefined);
  if (!reason) return;
  try {
    const opened = await api("POST", "/api/v1/break-glass", { patient: { resident_id: state.residentId }, reason });
    announce(t("glass.opened", { until: beijingMinute(opened.expires_at) }), "warning");
    byId("break-glass").hidden = true;
    byId("search-form").requestSubmit();
  } catch (error) {
    announce(errorText(error), "error");
  }
}

// --- the encounter reminder -----------------------------------------------------------------------------------

async function showAnswer(answer) {
  state.answer = answer;
  await loadReference([], answer.results.map((e) => e.result.issuer));
  const partial = byId("partial");
  partial.hidden = answer.complete;
  partial.textContent = answer.complete ? "" : t("reminder.partial", { why: answer.incomplete_reason || "" });
  showContext();
  renderIssuers();
  renderOrderForm();
  renderReminder();
  const recognizable = answer.results.filter((e) => e.recognition.status === "recognizable").length;
  announce(t("reminder.summary", { total: answer.results.length, recognizable }));
}

function decisionKey(entry, trigger) {
  return `${entry.result.ref}|${entry.item.code}|${trigger}`;
}

function groups(entries) {
  const byCategory = new Map();
  for (const entry of entries) {
    const category = entry.item.category || "unmapped";
    if (!byCategory.has(category)) byCategory.set(category, new Map());
    const byItem = byCategory.get(category);
    const key = entry.item.code || `local:${entry.item.local_code}`;
    if (!byItem.has(key)) byItem.set(key, []);
    byItem.get(key).push(entry);
  }
  const rank = (c) => (CATEGORY_ORDER.includes(c) ? CATEGORY_ORDER.indexOf(c) : CATEGORY_ORDER.length);
  return [...byCategory.entries()].sort((a, b) => rank(a[0]) - rank(b[0]));
}

function valueSummary(entry) {
  if (entry.values && entry.values.length) {
    const own = entry.values.find((v) => v.item === entry.item.code) || entry.values[0];
    const shown = own.value !== null && own.value !== undefined ? own.value : (own.value_text || "");
    return el("span", { class: own.interpretation && own.interpretation !== "N" ? "abnormal" : "" },
      `${shown}${own.unit ? ` ${own.unit}` : ""}${flagMark(own)}`);
  }
  if (entry.report) return el("span", { class: "clip" }, entry.report.impression || entry.report.findings || "");
  return "";
}

function flagMark(value) {
  const flag = value.interpretation;
  if (flag === "H" || flag === "HH") return " ↑";
  if (flag === "L" || flag === "LL") return " ↓";
  if (flag && flag !== "N") return " *";
  return "";
}

function renderReminder() {
  const body = clear(byId("reminder-body"));
  byId("reminder").hidden = false;
  const entries = state.answer.results;
  if (!entries.length) {
    body.append(el("p", {}, t("reminder.none")));
    return;
  }
  for (const [category, items] of groups(entries)) {
    const headingId = `cat-${category}`;
    const table = el("table", { class: "grid", "aria-labelledby": headingId },
      el("thead", {}, el("tr", {}, ...["col.item", "col.status", "col.value", "col.hospital", "col.catalogue",
        "col.reported", "col.time_left", "col.actions"].map((k) => el("th", { scope: "col" }, t(k))))));
    const tbody = el("tbody");
    for (const [, list] of items) {
      list.sort((a, b) => Date.parse(b.result.reported_at) - Date.parse(a.result.reported_at));
      list.forEach((entry, i) => tbody.append(reminderRow(entry, i === 0 ? list.length : 0, "encounter")));
    }
    table.append(tbody);
    body.append(el("h3", { id: headingId }, has(`category.${category}`) ? t(`category.${category}`) : category), table);
  }
  watermark(byId("reminder"), state.me.name || state.me.id);
}

function reminderRow(entry, span, trigger) {
  const rec = entry.recognition;
  const issuer = state.institutions.get(entry.result.issuer);
  const row = el("tr", { "data-ref": entry.result.ref, "data-item": entry.item.code || "" });
  if (span) row.append(el("th", { scope: "row", rowspan: String(span) }, itemName(entry.item)));
  const reasons = rec.reasons && rec.reasons.length ? reasonText(rec.reasons[0]) : "";
  row.append(
    el("td", {}, badge(rec.status), entry.result.status !== "final"
      ? el("span", { class: "badge badge-muted" }, has(`result_status.${entry.result.status}`) ? t(`result_status.${entry.result.status}`) : entry.result.status) : null,
    reasons ? el("div", { class: "reason" }, reasons) : null),
    el("td", {}, valueSummary(entry)),
    el("td", {}, institutionName(entry.result.issuer, entry.result.issuer_name),
      issuer ? el("span", { class: "grade" }, ` ${gradeName(issuer.grade)}`) : null),
    el("td", {}, rec.tier ? `${tierName(rec.tier)} · ${rec.catalogue_id || ""}` : t("reminder.no_catalogue")),
    el("td", { class: "nowrap" }, beijingMinute(entry.result.reported_at)),
    el("td", { class: "nowrap" }, rec.status === "recognizable" ? timeLeft(rec.valid_until)
      : rec.status === "expired" ? t("time.expired") : ""),
    el("td", { class: "actions" }, actions(entry, trigger)),
  );
  return row;
}

function actions(entry, trigger) {
  const name = itemName(entry.item);
  const box = el("div", { class: "buttons" });
  box.append(el("button", { type: "button", class: "link", "aria-label": t("action.detail_of", { item: name }),
    onclick: () => showDetail(entry) }, t("action.detail")));
  const standing = state.decisions.get(decisionKey(entry, trigger));
  if (standing) {
    const label = standing.decision === "accept" ? t("decision.accepted")
      : t("decision.rejected", { code: standing.reason_code });
    box.append(el("span", { class: `badge badge-decision-${standing.decision}` }, label),
      el("button", { type: "button", "aria-label": t("action.undo_of", { item: name }),
        onclick: () => undo(entry, trigger) }, t("action.undo")));
    if (standing.decision === "accept" && trigger === "order") {
      box.append(el("p", { class: "quote" }, quote(entry)));
    }
  } else if (entry.recognition.status === "recognizable") {
    box.append(
      el("button", { type: "button", class: "primary", "aria-label": t("action.accept_of", { item: name }),
        onclick: () => decide(entry, trigger, "accept") }, t("action.accept")),
      el("button", { type: "button", "aria-label": t("action.reject_of", { item: name }),
        onclick: () => reject(entry, trigger) }, t("action.reject")),
    );
  }
  return box;
}

/** What an accepted prior result reads like when quoted into the order. */
function quote(entry) {
  const value = entry.values && entry.values.length ? entry.values[0] : null;
  return t("order.quote", {
    item: itemName(entry.item), hospital: institutionName(entry.result.issuer, entry.result.issuer_name),
    time: beijingMinute(entry.result.reported_at),
    value: value ? `${value.value ?? value.value_text ?? ""}${value.unit ? ` ${value.unit}` : ""}` : "",
  });
}

// --- decisions ------------------------------------------------------------------------------------------------

function decisionBody(entry, trigger, decision) {
  return { result_id: entry.result.ref, item: entry.item.code, requesting_institution: state.me.institution,
    clinician_id: state.me.id, encounter_id: state.context.encounter_id, trigger, decision };
}

async function decide(entry, trigger, decision, reason = null, note = null) {
  const body = decisionBody(entry, trigger, decision);
  if (reason) body.reason_code = reason;
  if (note) body.note = note;
  const stored = await api("POST", "/api/v1/decisions", body);
  state.decisions.set(decisionKey(entry, trigger), stored);
  announce(decision === "accept" ? t("decision.accepted_item", { item: itemName(entry.item) })
    : t("decision.rejected_item", { item: itemName(entry.item), code: reason }), "ok");
  rerender();
  return stored;
}

async function reject(entry, trigger) {
  const reason = await askReason(t("reject.subject", { item: itemName(entry.item),
    hospital: institutionName(entry.result.issuer, entry.result.issuer_name) }));
  if (!reason) return;
  try {
    await decide(entry, trigger, "reject", reason.code, reason.note);
  } catch (error) {
    announce(errorText(error), "error");
  }
}

/** The reason dialog: a code from the code book, and the note it requires (08: at most 200 characters). */
async function askReason(subject) {
  const dialog = byId("reject-dialog");
  byId("reject-subject").textContent = subject;
  const select = clear(byId("reject-reason"));
  select.append(el("option", { value: "" }, t("reject.choose")));
  for (const reason of state.reasons) {
    select.append(el("option", { value: reason.code }, `${reason.code} ${lang === "en" ? reason.en : reason.zh}`));
  }
  const note = byId("reject-note");
  note.value = "";
  const error = byId("reject-error");
  error.hidden = true;
  const count = () => { byId("reject-count").textContent = t("reject.count", { n: note.value.length, max: 200 }); };
  note.addEventListener("input", count);
  count();
  const chosen = await openDialog(dialog, (form) => {
    const reason = state.reasons.find((r) => r.code === form.reason.value);
    if (!reason) {
      error.hidden = false;
      error.textContent = t("reject.need_reason");
      return undefined;
    }
    const text = form.note.value.trim();
    if (reason.note_required && !text) {
      error.hidden = false;
      error.textContent = t("reject.need_note");
      form.note.focus();
      return undefined;
    }
    return { code: reason.code, note: text || null };
  });
  note.removeEventListener("input", count);
  return chosen;
}

async function undo(entry, trigger) {
  try {
    await api("POST", "/api/v1/decisions", decisionBody(entry, trigger, "revoke"));
    state.decisions.delete(decisionKey(entry, trigger));
    announce(t("decision.undone", { item: itemName(entry.item) }), "ok");
    rerender();
  } catch (error) {
    announce(errorText(error), "error");
  }
}

async function batch(issuer, decision) {
  let reason = null;
  if (decision === "reject") {
    reason = await askReason(t("reject.subject_batch", { hospital: institutionName(issuer) }));
    if (!reason) return;
  }
  try {
    const body = { patient: { pseudonym: state.context.patient }, issuer, requesting_institution: state.me.institution,
      clinician_id: state.me.id, encounter_id: state.context.encounter_id, trigger: "encounter", decision };
    if (reason) { body.reason_code = reason.code; if (reason.note) body.note = reason.note; }
    const answer = await api("POST", "/api/v1/decisions/batch", body);
    for (const stored of answer.decisions) {
      state.decisions.set(`${stored.result.ref}|${stored.result.item}|encounter`, stored);
    }
    announce(t("decision.batch_done", { n: answer.decided, hospital: institutionName(issuer) }), "ok");
    rerender();
  } catch (error) {
    announce(errorText(error), "error");
  }
}

function rerender() {
  renderIssuers();
  renderReminder();
  if (state.order) renderOrder(state.order);
}

function renderIssuers() {
  const rows = clear(byId("issuer-rows"));
  const counts = new Map();
  for (const entry of state.answer.results) {
    const n = counts.get(entry.result.issuer) || 0;
    counts.set(entry.result.issuer, n + (entry.recognition.status === "recognizable" ? 1 : 0));
  }
  byId("issuers").hidden = counts.size === 0;
  for (const [issuer, n] of [...counts.entries()].sort((a, b) => b[1] - a[1])) {
    const found = state.institutions.get(issuer);
    const name = institutionName(issuer);
    rows.append(el("tr", { "data-issuer": issuer },
      el("th", { scope: "row" }, name), el("td", {}, found ? gradeName(found.grade) : ""), el("td", {}, String(n)),
      el("td", { class: "actions" }, el("div", { class: "buttons" },
        el("button", { type: "button", class: "primary", disabled: n === 0,
          "aria-label": t("action.accept_all_of", { hospital: name }), onclick: () => batch(issuer, "accept") },
        t("action.accept_all")),
        el("button", { type: "button", disabled: n === 0, "aria-label": t("action.reject_all_of", { hospital: name }),
          onclick: () => batch(issuer, "reject") }, t("action.reject_all"))))));
  }
}

// --- the order-time reminder ----------------------------------------------------------------------------------

function renderOrderForm() {
  const select = byId("order-items");
  const chosen = new Set([...select.selectedOptions].map((o) => o.value));
  clear(select);
  const named = new Map(state.answer.results.filter((e) => e.item.code).map((e) => [e.item.code, e.item]));
  const codes = [...named.keys()].sort();
  for (const code of codes) {
    select.append(el("option", { value: code, selected: chosen.has(code) }, itemName(named.get(code))));
  }
  byId("order").hidden = codes.length === 0;
}

async function orderCheck(event) {
  event.preventDefault();
  const items = [...byId("order-items").selectedOptions].map((o) => o.value);
  if (!items.length) {
    announce(t("order.choose"), "error");
    return;
  }
  try {
    state.order = await check(items);
    renderOrder(state.order);
  } catch (error) {
    announce(errorText(error), "error");
  }
}

function renderOrder(answer) {
  const box = clear(byId("order-results"));
  const table = el("table", { class: "grid" }, el("thead", {}, el("tr", {},
    ...["col.ordered", "col.status", "col.value", "col.hospital", "col.catalogue", "col.reported", "col.time_left",
      "col.actions"].map((k) => el("th", { scope: "col" }, t(k))))));
  const tbody = el("tbody");
  for (const ordered of answer.results) {
    if (ordered.best) {
      tbody.append(reminderRow(ordered.best, 1, "order"));
    } else {
      const item = state.answer.results.map((e) => e.item).find((i) => i.code === ordered.item);
      tbody.append(el("tr", {}, el("th", { scope: "row" }, itemName(item || { code: ordered.item })),
        el("td", { colspan: "7" }, t("order.no_prior"))));
    }
  }
  table.append(tbody);
  box.append(table);
  watermark(byId("order"), state.me.name || state.me.id);
}

// --- result detail --------------------------------------------------------------------------------------------

async function showDetail(entry) {
  const section = byId("detail");
  const body = clear(byId("detail-body"));
  section.hidden = false;
  const rec = entry.recognition;
  body.append(
    el("h3", {}, itemName(entry.item)),
    el("dl", { class: "facts" },
      el("dt", {}, t("col.hospital")), el("dd", {}, institutionName(entry.result.issuer, entry.result.issuer_name)),
      el("dt", {}, t("col.reported")), el("dd", {}, beijingMinute(entry.result.reported_at)),
      el("dt", {}, t("col.status")), el("dd", {}, badge(rec.status)),
      el("dt", {}, t("col.catalogue")), el("dd", {}, rec.tier ? `${tierName(rec.tier)} · ${rec.catalogue_id}` : "—")),
  );
  if (entry.values) {
    await loadReference(entry.values.map((v) => v.item), []);
    const table = el("table", { class: "grid" }, el("thead", {}, el("tr", {},
      ...["col.item", "col.value", "col.unit", "col.range", "col.flag"].map((k) => el("th", { scope: "col" }, t(k))))));
    const tbody = el("tbody");
    for (const v of entry.values) {
      const range = v.reference_range.text || [v.reference_range.low, v.reference_range.high]
        .map((x) => (x === null || x === undefined ? "" : x)).join("–");
      const flag = v.interpretation && v.interpretation !== "N";
      tbody.append(el("tr", { class: flag ? "abnormal" : "" },
        el("th", { scope: "row" }, itemName(state.items.get(v.item) || { code: v.item, local_code: v.local_code })),
        el("td", {}, v.value ?? v.value_text ?? ""), el("td", {}, v.unit || ""), el("td", {}, range),
        el("td", {}, v.interpretation ? (has(`flag.${v.interpretation}`) ? t(`flag.${v.interpretation}`) : v.interpretation) : "")));
    }
    table.append(tbody);
    body.append(table);
    if (entry.item.code) {
      const chart = el("div", { class: "chart", id: "trend", role: "img", "aria-label": t("detail.trend_of", { item: itemName(entry.item) }) });
      body.append(el("h4", {}, t("detail.trend")), chart);
      loadTrend(entry.item.code, chart);
    }
  } else {
    const report = entry.report || {};
    body.append(el("h4", {}, t("detail.findings")), el("p", { class: "report-text" }, report.findings || "—"),
      el("h4", {}, t("detail.impression")), el("p", { class: "report-text" }, report.impression || "—"));
    const link = viewerLink(entry);
    body.append(link ? el("a", { href: link, target: "_blank", rel: "noopener noreferrer", class: "button" }, t("detail.view_images"))
      : el("p", { class: "hint" }, t("detail.no_images")));
  }
  body.append(el("div", { class: "buttons" },
    el("button", { type: "button", onclick: () => reportProblem(entry) }, t("action.report_problem"))));
  watermark(section, state.me.name || state.me.id);
  section.focus();
}

async function loadTrend(code, node) {
  try {
    const timeline = await api("GET", `/api/v1/patients/${state.context.patient}/results?item=${encodeURIComponent(code)}`);
    const points = timeline.series[code] || [];
    await loadReference([], points.map((p) => p.issuer));
    await trendChart(node, points, (id) => institutionName(id));
  } catch (error) {
    node.textContent = errorText(error);
  }
}

function viewerLink(entry) {
  const viewers = (state.viewers && state.viewers.viewers) || {};
  const template = viewers[entry.result.issuer] || viewers.default;
  if (!template) return null;
  const values = { ...(entry.retrieval || {}), ...(entry.study || {}) };
  let missing = false;
  const url = template.replace(/\{(\w+)\}/g, (_, name) => {
    const value = values[name];
    if (value === undefined || value === null || value === "") { missing = true; return ""; }
    return name === "wado_rs" ? String(value).replace(/\/+$/, "") : encodeURIComponent(String(value));
  });
  return missing ? null : url;
}

async function reportProblem(entry) {
  const dialog = byId("feedback-dialog");
  const note = byId("feedback-note");
  byId("feedback-kind").value = entry.values ? "report_problem" : "image_problem";
  note.value = t("feedback.prefill", {
    patient: `${state.context.patient.slice(0, 8)}…`, item: itemName(entry.item),
    hospital: institutionName(entry.result.issuer, entry.result.issuer_name), time: beijingMinute(entry.result.reported_at),
    ref: entry.result.ref,
  });
  const sent = await openDialog(dialog, async (form) => {
    try {
      return await api("POST", "/api/v1/feedback", { result_id: entry.result.ref, kind: form.kind.value,
        note: form.note.value.trim(), reporter_institution: state.me.institution, reporter_id: state.me.id });
    } catch (error) {
      announce(errorText(error), "error");
      return null;
    }
  });
  if (sent) announce(t("feedback.sent", { hospital: institutionName(entry.result.issuer) }), "ok");
}

// --- start ----------------------------------------------------------------------------------------------------

/** Launched from the HIS (/ui/launch?token=…): the token, redeemed once for this clinician's session with the
 * patient and encounter as its context; it leaves the address bar and the history at once. */
async function redeemLaunch(token) {
  const session = await api("POST", "/api/v1/launch/session", { token });
  sessionStorage.clear();
  sessionStorage.setItem("hrx.csrf", session.csrf_token);
  sessionStorage.setItem("hrx.context", JSON.stringify({ ...session.context, launched: true }));
}

async function main() {
  const messages = loadMessages();
  if (location.pathname === "/ui/launch") {
    const token = new URLSearchParams(location.search).get("token");
    history.replaceState(null, "", "/ui/clinician");
    try {
      if (!token) throw new Error(t("launch.no_token"));
      await redeemLaunch(token);
    } catch (error) {
      await messages;
      header(null);
      announce(error.status ? errorText(error) : t("launch.no_token"), "error");
      document.body.dataset.ready = "true";
      return;
    }
  }
  const stored = sessionStorage.getItem("hrx.context");
  state.context = stored ? JSON.parse(stored) : null;
  // Everything the first view needs is asked for at once; a launched page knows its patient before it knows
  // who is signed in.
  const first = state.context ? check(null, state.context.institution).catch((error) => error) : null;
  const [, me, reasons, viewers] = await Promise.all([messages, requireSession(["clinician"]),
    api("GET", "/api/v1/reason-codes"), fetch("/ui/viewers.json").then((r) => r.json())]);
  state.me = me;
  state.reasons = reasons;
  state.viewers = viewers;
  header(state.me);
  const idInput = byId("resident-id");
  idInput.addEventListener("focus", () => { if (state.residentId) { idInput.value = state.residentId; } });
  idInput.addEventListener("blur", () => {
    const typed = idInput.value.trim().toUpperCase();
    if (typed && !typed.includes("*")) state.residentId = typed;
    if (state.residentId) idInput.value = maskId(state.residentId);
  });
  idInput.addEventListener("input", () => { state.residentId = ""; });
  byId("search-form").addEventListener("submit", search);
  byId("break-glass").addEventListener("click", breakGlass);
  byId("order-form").addEventListener("submit", orderCheck);
  showContext();
  const opened = location.pathname.match(/^\/ui\/results\/([^/]+)\/([^/]+)$/);
  if (first) {
    byId("encounter-id").value = state.context.encounter_id;
    const answer = await first;
    if (answer instanceof Error) announce(errorText(answer), "error");
    else await showAnswer(answer);
  }
  if (opened) { // a CDS card's link: that result's detail, within the patient of this session
    const ref = `${decodeURIComponent(opened[1])}/${decodeURIComponent(opened[2])}`;
    const entry = state.answer && state.answer.results.find((e) => e.result.ref === ref);
    if (entry) await showDetail(entry);
    else announce(t(state.answer ? "clinician.result_not_here" : "clinician.result_needs_patient"), "error");
  }
  document.body.dataset.ready = "true";
  performance.mark("hrx-encounter-ready"); // bench/ui.py reads it: the view is interactive from here
}

main();
