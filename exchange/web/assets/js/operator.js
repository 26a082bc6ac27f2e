// The operator's dashboard: statistics for a scope and period (presented, accepted, rejected by reason,
// recognition rate, avoided cost), per issuer and per item; catalogue coverage against the 2025 / 2027 targets and
// the recognition rate over time; data quality (the unmapped codes with a form that adds a mapping and follows the
// re-map, dead letters, feedback per issuer); the catalogue versions, the diff of two, a dry-run import. Every
// table downloads as CSV or Excel (the API's ?format=, authenticated by the session cookie).
import { announce, api, beijingMinute, clear, codesUnder, downloadFile, el, errorText, has, header, lang,
  loadMessages, requireSession, t } from "./common.js";
import { loadECharts } from "./trend.js";

const byId = (id) => document.getElementById(id);
const BEIJING = "T00:00:00+08:00";

/** The calendar day after ``day`` (YYYY-MM-DD). The API's ``to`` is exclusive and the form's end date is the
 * last day shown, so the period ends at the next Beijing midnight. */
function dayAfter(day) {
  const [y, m, d] = day.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1, d + 1)).toISOString().slice(0, 10);
}
const institutions = new Map();
const items = new Map();
/** The drill-down: statistics of one issuer and/or one item (the API's ``issuer=`` and ``item=``). */
const drill = { issuer: null, item: null };

async function names(issuers, codes) {
  await Promise.all([
    ...[...new Set(issuers)].filter((i) => !institutions.has(i)).map((id) => api("GET", `/api/v1/institutions/${encodeURIComponent(id)}`)
      .then((f) => institutions.set(id, f)).catch(() => institutions.set(id, null))),
    ...[...new Set(codes)].filter((c) => !items.has(c)).map((code) => api("GET", `/api/v1/items/${encodeURIComponent(code)}`)
      .then((f) => items.set(code, f)).catch(() => items.set(code, null))),
  ]);
}

const named = (map, id) => { const f = map.get(id); return f ? (lang === "en" ? f.name_en : f.name_zh) : id; };

function kpi(label, value) {
  return el("div", { class: "kpi card" }, el("div", { class: "kpi-label" }, label), el("div", { class: "kpi-value" }, value));
}

function countRows(body, counts, map, kind) {
  clear(body);
  for (const [id, c] of Object.entries(counts).sort((a, b) => (b[1].presented || 0) - (a[1].presented || 0))) {
    const name = named(map, id);
    const open = el("button", { type: "button", class: "link", "data-drill": kind, "data-id": id,
      "aria-label": t("operator.drill_into", { name }) }, name);
    open.addEventListener("click", () => { drill[kind] = id; stats(); });
    body.append(el("tr", {}, el("th", { scope: "row" }, open), el("td", {}, String(c.presented || 0)),
      el("td", {}, String(c.accepted || 0)), el("td", {}, String(c.rejected || 0))));
  }
}

/** What the figures are narrowed to, each with a button that widens them again. */
function showDrill() {
  const box = clear(byId("drill"));
  for (const [kind, map] of [["issuer", institutions], ["item", items]]) {
    if (!drill[kind]) continue;
    const name = named(map, drill[kind]);
    const widen = el("button", { type: "button", "data-undrill": kind, "aria-label": t("operator.drill_clear_of", { name }) },
      t("operator.drill_clear"));
    widen.addEventListener("click", () => { drill[kind] = null; stats(); });
    box.append(el("span", { class: "drill" }, t(kind === "issuer" ? "operator.drill_issuer" : "operator.drill_item", { name }), " ", widen));
  }
}

/** The scope and period of the statistics form, as query parameters. */
function statsParams() {
  const form = byId("stats-form");
  const params = new URLSearchParams();
  if (form.scope.value.trim()) params.set("scope", form.scope.value.trim());
  if (form.from.value) params.set("from", form.from.value + BEIJING);
  if (form.to.value) params.set("to", dayAfter(form.to.value) + BEIJING);
  for (const kind of ["issuer", "item"]) if (drill[kind]) params.set(kind, drill[kind]);
  return params;
}

const FORMATS = [["csv", "CSV", "operator.download_csv"], ["xlsx", "Excel", "operator.download_xlsx"]];

/** The download box of the table ``name`` (a .downloads[data-table] beside it), emptied; and what its links are
 * named after: the heading its data-heading names, else its section's. */
function downloadBox(name) {
  const box = clear(document.querySelector(`.downloads[data-table="${name}"]`));
  const heading = box.dataset.heading ? byId(box.dataset.heading) : box.closest("section")?.querySelector("h2");
  return [box, heading ? heading.textContent : ""];
}

/** CSV and Excel links for the table ``name``: the API's own export of ``path`` (?format=). */
function downloads(name, path) {
  const [box, table] = downloadBox(name);
  if (!path) return;
  const join = path.includes("?") ? "&" : "?";
  for (const [format, label, key] of FORMATS) {
    box.append(el("a", { href: `${path}${join}format=${format}`, download: "", "data-format": format,
      "aria-label": t("operator.download_of", { table, format: label }) }, t(key)));
  }
}

async function stats(event) {
  if (event) event.preventDefault();
  const params = statsParams();
  try {
    const s = await api("GET", `/api/v1/stats?${params}`);
    await names(Object.keys(s.per_issuer), Object.keys(s.per_item));
    const kpis = clear(byId("kpis"));
    kpis.setAttribute("aria-label", t("operator.heading"));
    const rate = s.recognition_rate === null ? "—" : `${(s.recognition_rate * 100).toFixed(1)}%`;
    const cost = new Intl.NumberFormat(lang, { style: "currency", currency: "CNY" }).format(s.avoided_cost_cny);
    kpis.append(kpi(t("operator.presented"), String(s.presented)), kpi(t("operator.accepted"), String(s.accepted)),
      kpi(t("operator.rejected"), String(s.rejected)), kpi(t("operator.rate"), rate), kpi(t("operator.avoided"), cost),
      kpi(t("operator.period"), `${beijingMinute(s.from)} – ${beijingMinute(s.to)}`));
    countRows(byId("issuer-rows"), s.per_issuer, institutions, "issuer");
    countRows(byId("item-rows"), s.per_item, items, "item");
    showDrill();
    const issuers = byId("o-issuer");
    if (!issuers.options.length) {
      for (const id of Object.keys(s.per_issuer)) issuers.append(el("option", { value: id }, named(institutions, id)));
    }
    await reasonsChart(s.rejected_by_reason);
    downloads("per_issuer", `/api/v1/stats?${params}&table=per_issuer`);
    downloads("per_item", `/api/v1/stats?${params}&table=per_item`);
    await Promise.all([coverage(s.scope), timeseries(params)]);
    announce(t("operator.loaded", { scope: s.scope }));
  } catch (error) {
    announce(errorText(error), "error");
  }
}

async function reasonsChart(byReason) {
  const node = byId("reasons-chart");
  const echarts = await loadECharts();
  const old = echarts.getInstanceByDom(node);
  if (old) old.dispose();
  const reasons = await api("GET", "/api/v1/reason-codes");
  const label = (code) => { const r = reasons.find((x) => x.code === code); return r ? `${code} ${lang === "en" ? r.en : r.zh}` : code; };
  const codes = Object.keys(byReason).sort();
  node.setAttribute("aria-label", codes.map((c) => `${label(c)}: ${byReason[c].count}`).join("; ") || t("operator.no_rejections"));
  const chart = echarts.init(node, null, { renderer: "canvas" });
  chart.setOption({
    animation: false, grid: { left: 48, right: 16, top: 16, bottom: 60 }, tooltip: { trigger: "axis" },
    xAxis: { type: "category", data: codes, axisLabel: { interval: 0 } },
    yAxis: { type: "value", minInterval: 1 },
    series: [{ type: "bar", data: codes.map((c) => byReason[c].count), name: t("operator.rejected") }],
  });
  node.dataset.bars = String(codes.length);
}

const tierName = (tier) => (has(`tier.${tier}`) ? t(`tier.${tier}`) : tier);

async function coverage(scope) {
  const body = clear(byId("coverage-rows"));
  const found = await api("GET", `/api/v1/stats/coverage?scope=${encodeURIComponent(scope)}`);
  const target = (r) => (r.target.all_items ? found.items_total : r.target.more_than);
  for (const r of found.rows) {
    const state = r.meets === null ? "operator.no_target" : r.meets ? "operator.meets"
      : r.overdue ? "operator.overdue" : "operator.not_met";
    body.append(el("tr", { "data-tier": r.tier }, el("th", { scope: "row" }, tierName(r.tier)), el("td", {}, r.scope_name),
      el("td", {}, String(r.lab)), el("td", {}, String(r.exam)), el("td", {}, String(r.total)),
      el("td", {}, r.target.all_items ? t("operator.all_items")
        : r.target.more_than === null ? "—" : t("operator.target_more_than", { n: r.target.more_than })),
      el("td", { class: "nowrap" }, r.target.due), el("td", {}, r.gap === null ? "—" : String(r.gap)),
      el("td", {}, t(state))));
  }
  if (!found.rows.length) body.append(el("tr", {}, el("td", { colspan: "9" }, t("operator.none"))));
  downloads("coverage", `/api/v1/stats/coverage?scope=${encodeURIComponent(scope)}`);
  const node = byId("coverage-chart");
  const echarts = await loadECharts();
  const old = echarts.getInstanceByDom(node);
  if (old) old.dispose();
  const labels = found.rows.map((r) => `${tierName(r.tier)} ${r.scope_name}`);
  node.setAttribute("aria-label", t("operator.coverage_chart", {
    rows: found.rows.map((r, i) => `${labels[i]} ${r.total}/${target(r) ?? "—"}`).join("; ") }));
  echarts.init(node, null, { renderer: "canvas" }).setOption({
    animation: false, grid: { left: 110, right: 16, top: 32, bottom: 8, containLabel: true }, tooltip: { trigger: "axis" },
    legend: { top: 0 },
    xAxis: { type: "category", data: labels, axisLabel: { interval: 0, rotate: 35, fontSize: 11 } },
    yAxis: { type: "value", minInterval: 1 },
    series: [
      { type: "bar", name: t("operator.total"), data: found.rows.map((r) => r.total) },
      { type: "bar", name: t("operator.target"), data: found.rows.map((r) => target(r)) },
    ],
  });
  node.dataset.bars = String(found.rows.length);
}

async function timeseries(params) {
  const found = await api("GET", `/api/v1/stats/timeseries?${params}`);
  downloads("timeseries", `/api/v1/stats/timeseries?${params}`);
  const node = byId("series-chart");
  const echarts = await loadECharts();
  const old = echarts.getInstanceByDom(node);
  if (old) old.dispose();
  const rate = (b) => (b.recognition_rate === null ? null : Math.round(b.recognition_rate * 1000) / 10);
  node.setAttribute("aria-label", t("operator.series_chart", {
    points: found.series.filter((b) => b.recognition_rate !== null).map((b) => `${b.start} ${rate(b)}%`).join("; ")
      || t("operator.none") }));
  echarts.init(node, null, { renderer: "canvas" }).setOption({
    animation: false, grid: { left: 48, right: 16, top: 16, bottom: 40 }, tooltip: { trigger: "axis" },
    xAxis: { type: "category", data: found.series.map((b) => b.start) },
    yAxis: { type: "value", min: 0, max: 100, axisLabel: { formatter: "{value}%" } },
    series: [{ type: "line", name: t("operator.rate"), connectNulls: false, data: found.series.map(rate) }],
  });
  node.dataset.points = String(found.series.length);
}

let formCount = 0;

/** The form in an unmapped row: the unified item (and unit, factor when the hospital's unit differs) → a new
 * mapping-table version → the re-map, followed until done; then the queue is read again. */
function mappingForm(code) {
  const n = (formCount += 1);
  const field = (name, key, attrs = {}) => [
    el("label", { for: `m-${name}-${n}`, class: "sr-only" }, `${t(key)} (${code.local_code})`),
    el("input", { id: `m-${name}-${n}`, name, placeholder: t(key), maxlength: "64", ...attrs }),
  ];
  const form = el("form", { class: "map-form", "aria-label": t("mapping.for", { code: code.local_code }) },
    field("unified_code", "mapping.unified_code", { required: true, maxlength: "16" }),
    field("source_unit", "mapping.unit"), field("factor", "mapping.factor", { inputmode: "decimal" }),
    el("button", { type: "submit", class: "primary" }, t("mapping.submit")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { institution: code.issuer, local_code: code.local_code, local_system: code.local_system,
      unified_code: form.unified_code.value.trim() };
    if (form.source_unit.value.trim()) body.source_unit = form.source_unit.value.trim();
    if (form.factor.value.trim()) body.factor = Number(form.factor.value.trim());
    form.querySelector("button").disabled = true;
    try {
      const added = await api("POST", "/api/v1/mappings", body);
      announce(t("mapping.added", { version: added.version }));
      const bar = el("progress", { max: String(added.job.total || 1), value: String(added.job.done),
        "aria-label": t("mapping.progress"), "data-state": added.job.state });
      form.replaceChildren(bar);
      let job = added.job;
      while (job.state === "running") {
        await new Promise((resolve) => { setTimeout(resolve, 300); });
        job = await api("GET", `/api/v1/jobs/${encodeURIComponent(job.id)}`);
        bar.max = job.total || 1;
        bar.value = job.done;
      }
      bar.dataset.state = job.state;
      if (job.state === "done") {
        announce(t("mapping.done", { examined: job.result.examined ?? 0, newly: job.result.newly_mapped ?? 0 }));
        await unmapped();
      } else {
        announce(t("mapping.failed", { errors: job.errors.join("; ") }), "error");
      }
    } catch (error) {
      announce(errorText(error), "error");
      const shown = form.querySelector(".row-error") || form.appendChild(el("span", { class: "row-error", role: "alert" }));
      shown.textContent = errorText(error);  // beside the field as well: the page's status line may be out of view
      form.querySelector("button").disabled = false;
      form.unified_code.focus();
    }
  });
  return form;
}

async function unmapped() {
  const body = clear(byId("unmapped-rows"));
  downloads("unmapped", "/api/v1/unmapped-codes");
  try {
    const queue = await api("GET", "/api/v1/unmapped-codes");
    for (const group of queue.groups) {
      for (const code of group.codes) {
        body.append(el("tr", { "data-code": `${code.issuer}|${code.local_code}` },
          el("td", {}, lang === "en" ? group.en : group.zh), el("td", {}, named(institutions, code.issuer)),
          el("td", { class: "mono" }, code.local_code), el("td", {}, String(code.results)),
          el("td", {}, mappingForm(code))));
      }
    }
    if (!body.children.length) body.append(el("tr", {}, el("td", { colspan: "5" }, t("operator.none"))));
  } catch (error) {
    body.append(el("tr", {}, el("td", { colspan: "5" }, errorText(error))));
  }
}

async function deadLetters(event) {
  if (event) event.preventDefault();
  const form = byId("dead-form");
  const params = new URLSearchParams();
  if (form.reason.value) params.set("reason", form.reason.value);
  if (form.from.value) params.set("from", form.from.value + BEIJING);
  if (form.to.value) params.set("to", dayAfter(form.to.value) + BEIJING);
  downloads("dead_letters", `/api/v1/dead-letters?${params}`);
  const body = clear(byId("dead-rows"));
  try {
    const found = await api("GET", `/api/v1/dead-letters?${params}`);
    for (const d of found.letters) {
      body.append(el("tr", {}, el("td", { class: "nowrap" }, beijingMinute(d.failed_at)), el("td", { class: "mono" }, d.topic),
        el("td", {}, has(`dead_reason.${d.reason}`) ? t(`dead_reason.${d.reason}`) : d.reason),
        el("td", {}, d.institution ? named(institutions, d.institution) : "—"), el("td", { class: "reason mono" }, d.error)));
    }
    if (!found.letters.length) body.append(el("tr", {}, el("td", { colspan: "5" }, t("operator.none"))));
  } catch (error) {
    body.append(el("tr", {}, el("td", { colspan: "5" }, errorText(error))));
  }
}

async function feedbackSummary(scope) {
  const body = clear(byId("feedback-summary-rows"));
  const path = `/api/v1/feedback-summary${scope ? `?scope=${encodeURIComponent(scope)}` : ""}`;
  const found = await api("GET", path);
  downloads("feedback_summary", path);
  for (const f of found.issuers) {
    body.append(el("tr", {}, el("th", { scope: "row" }, lang === "en" || !f.issuer_name ? named(institutions, f.issuer) : f.issuer_name),
      el("td", {}, String(f.open)), el("td", {}, String(f.acknowledged)), el("td", {}, String(f.resolved)),
      el("td", {}, f.oldest_unresolved_days === null ? "—" : t("operator.days", { n: f.oldest_unresolved_days }))));
  }
  if (!found.issuers.length) body.append(el("tr", {}, el("td", { colspan: "5" }, t("operator.none"))));
}

async function feedback(event) {
  if (event) event.preventDefault();
  const issuer = byId("o-issuer").value;
  const body = clear(byId("feedback-rows"));
  downloads("feedback", null);
  if (!issuer) return;
  try {
    const path = `/api/v1/feedback?issuer=${encodeURIComponent(issuer)}`;
    const found = await api("GET", path);
    downloads("feedback", path);
    for (const f of found.feedback) {
      body.append(el("tr", {}, el("td", { class: "nowrap" }, beijingMinute(f.created_at)),
        el("td", {}, t("operator.days", { n: f.age_days })),
        el("td", {}, t(`feedback.${f.kind}`)), el("td", {}, has(`feedback_status.${f.status}`) ? t(`feedback_status.${f.status}`) : f.status),
        el("td", {}, f.reporter_institution), el("td", { class: "reason" }, f.note)));
    }
    if (!found.feedback.length) body.append(el("tr", {}, el("td", { colspan: "6" }, t("operator.none"))));
  } catch (error) {
    announce(errorText(error), "error");
  }
}

const versions = new Map();

function fillVersions() {
  const labels = versions.get(byId("c-id").value) || [];
  for (const [id, pick] of [["c-from", labels.length - 2], ["c-to", labels.length - 1]]) {
    const select = clear(byId(id));
    labels.forEach((v, i) => select.append(el("option", { value: v, selected: i === Math.max(pick, 0) }, v)));
  }
}

async function catalogueDiff(event) {
  if (event) event.preventDefault();
  const form = byId("diff-form");
  const body = clear(byId("diff-rows"));
  const path = `/api/v1/catalogues/${encodeURIComponent(form.id.value)}/diff?${new URLSearchParams({
    from: form.from.value, to: form.to.value })}`;
  const instant = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}/;  // validity bounds: shown in Beijing time, never as ISO
  const show = (v) => (v === null || v === undefined ? "—" : typeof v === "object" ? JSON.stringify(v)
    : instant.test(String(v)) ? beijingMinute(v) : String(v));
  const item = (i) => `${i.code} ${i.name_zh || ""}`.trim();
  const fieldName = (f) => (has(`diff_field.${f}`) ? t(`diff_field.${f}`) : f);
  try {
    const d = await api("GET", path);
    downloads("diff", path);
    for (const h of d.header) body.append(el("tr", { "data-change": "header" }, el("td", {}, t("diff.header")), el("td", {}, "—"),
      el("td", {}, fieldName(h.field)), el("td", {}, show(h.old)), el("td", {}, show(h.new))));
    for (const i of d.added) body.append(el("tr", { "data-change": "added" }, el("td", {}, t("diff.added")), el("td", {}, item(i)),
      el("td", {}, "—"), el("td", {}, "—"), el("td", {}, "—")));
    for (const i of d.removed) body.append(el("tr", { "data-change": "removed" }, el("td", {}, t("diff.removed")), el("td", {}, item(i)),
      el("td", {}, "—"), el("td", {}, "—"), el("td", {}, "—")));
    for (const c of d.changed) body.append(el("tr", { "data-change": "changed" }, el("td", {}, t("diff.changed")), el("td", {}, item(c)),
      el("td", {}, fieldName(c.field)), el("td", {}, show(c.old)), el("td", {}, show(c.new))));
    if (!body.children.length) body.append(el("tr", {}, el("td", { colspan: "5" }, t("diff.same"))));
  } catch (error) {
    downloads("diff", null);
    announce(errorText(error), "error");
  }
}

async function importDryRun(event) {
  event.preventDefault();
  const form = byId("import-form");
  const body = clear(byId("import-rows"));
  const summary = byId("import-summary");
  summary.textContent = "";
  const file = form.file.files[0];
  const upload = () => { const data = new FormData(); data.append("file", file); return data; };
  const params = new URLSearchParams({ tier: form.tier.value, scope: form.scope.value.trim(), dry_run: "true" });
  unmatchedDownloads(null);
  try {
    const found = await api("POST", `/api/v1/catalogues/import?${params}`, upload());
    if (found.unmatched.length) unmatchedDownloads(`/api/v1/catalogues/import?${params}`, upload);
    summary.textContent = t("import.summary", { id: found.id, version: found.version, items: found.items,
      unmatched: found.unmatched.length });
    for (const r of found.unmatched) {
      body.append(el("tr", {}, el("td", {}, String(r.line)), el("td", {}, r.name), el("td", { class: "reason" }, r.reason)));
    }
    if (!found.unmatched.length) body.append(el("tr", {}, el("td", { colspan: "3" }, t("operator.none"))));
  } catch (error) {
    announce(errorText(error), "error");
  }
}

/** CSV and Excel buttons for the dry run's unmatched rows: the API answers them to the same POST with ?format=
 * (it keeps no upload to link to), so each button sends the list again and saves the answer. */
function unmatchedDownloads(path, upload) {
  const [box, table] = downloadBox("import_unmatched");
  if (!path) return;
  for (const [format, label, key] of FORMATS) {
    const button = el("button", { type: "button", class: "link", "data-format": format,
      "aria-label": t("operator.download_of", { table, format: label }) }, t(key));
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await downloadFile("POST", `${path}&format=${format}`, upload());
      } catch (error) {
        announce(errorText(error), "error");
      } finally {
        button.disabled = false;
      }
    });
    box.append(button);
  }
}

async function catalogues() {
  const body = clear(byId("catalogue-rows"));
  const list = await api("GET", "/api/v1/catalogues");
  downloads("catalogues", "/api/v1/catalogues");
  versions.clear();
  for (const c of list.catalogues) versions.set(c.id, [...(versions.get(c.id) || []), c.version]);
  const ids = clear(byId("c-id"));
  const first = [...versions].find(([, v]) => v.length > 1);
  for (const id of versions.keys()) ids.append(el("option", { value: id, selected: first && id === first[0] }, id));
  fillVersions();
  const tiers = clear(byId("i-tier"));
  for (const tier of codesUnder("tier.")) tiers.append(el("option", { value: tier }, tierName(tier)));
  for (const c of list.catalogues) {
    body.append(el("tr", {}, el("th", { scope: "row" }, `${c.name_zh || c.id} (${c.id})`),
      el("td", {}, has(`tier.${c.tier}`) ? t(`tier.${c.tier}`) : c.tier), el("td", {}, c.scope), el("td", {}, c.version),
      el("td", {}, c.in_force ? t("operator.yes") : t("operator.no")), el("td", {}, c.all_items ? t("operator.all_items") : String(c.item_count))));
  }
}

async function main() {
  await loadMessages();
  const me = await requireSession(["operator"]);
  header(me);
  byId("o-scope").value = me.scope || "";
  byId("i-scope").value = me.scope || "";
  byId("stats-form").addEventListener("submit", stats);
  byId("feedback-form").addEventListener("submit", feedback);
  byId("dead-form").addEventListener("submit", deadLetters);
  byId("diff-form").addEventListener("submit", catalogueDiff);
  byId("c-id").addEventListener("change", fillVersions);
  byId("import-form").addEventListener("submit", importDryRun);
  const reasons = byId("d-reason");
  reasons.append(el("option", { value: "" }, t("dead.all")));
  for (const code of codesUnder("dead_reason.")) reasons.append(el("option", { value: code }, t(`dead_reason.${code}`)));
  await Promise.all([stats(), catalogues(), deadLetters()]);
  await Promise.all([unmapped(), feedbackSummary(me.scope || "")]);
  await feedback();
  document.body.dataset.ready = "true";
}

main();
