// The operator's dashboard on the existing APIs: statistics for a scope and period (presented, accepted, rejected
// by reason, recognition rate, avoided cost), per issuer and per item; the unmapped codes; feedback per issuer;
// the catalogue versions.
import { announce, api, beijingMinute, clear, el, errorText, has, header, lang, loadMessages, requireSession, t }
  from "./common.js";
import { loadECharts } from "./trend.js";

const byId = (id) => document.getElementById(id);
const BEIJING = "T00:00:00+08:00";
const institutions = new Map();
const items = new Map();

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

function countRows(body, counts, map) {
  clear(body);
  for (const [id, c] of Object.entries(counts).sort((a, b) => (b[1].presented || 0) - (a[1].presented || 0))) {
    body.append(el("tr", {}, el("th", { scope: "row" }, named(map, id)), el("td", {}, String(c.presented || 0)),
      el("td", {}, String(c.accepted || 0)), el("td", {}, String(c.rejected || 0))));
  }
}

async function stats(event) {
  if (event) event.preventDefault();
  const form = byId("stats-form");
  const params = new URLSearchParams();
  if (form.scope.value.trim()) params.set("scope", form.scope.value.trim());
  if (form.from.value) params.set("from", form.from.value + BEIJING);
  if (form.to.value) params.set("to", form.to.value + BEIJING);
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
    countRows(byId("issuer-rows"), s.per_issuer, institutions);
    countRows(byId("item-rows"), s.per_item, items);
    const issuers = byId("o-issuer");
    if (!issuers.options.length) {
      for (const id of Object.keys(s.per_issuer)) issuers.append(el("option", { value: id }, named(institutions, id)));
    }
    await reasonsChart(s.rejected_by_reason);
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

async function unmapped() {
  const body = clear(byId("unmapped-rows"));
  try {
    const queue = await api("GET", "/api/v1/unmapped-codes");
    for (const group of queue.groups) {
      for (const code of group.codes) {
        body.append(el("tr", {}, el("td", {}, lang === "en" ? group.en : group.zh), el("td", {}, code.issuer),
          el("td", { class: "mono" }, code.local_code), el("td", {}, String(code.results))));
      }
    }
    if (!body.children.length) body.append(el("tr", {}, el("td", { colspan: "4" }, t("operator.none"))));
  } catch (error) {
    body.append(el("tr", {}, el("td", { colspan: "4" }, errorText(error))));
  }
}

async function feedback(event) {
  if (event) event.preventDefault();
  const issuer = byId("o-issuer").value;
  const body = clear(byId("feedback-rows"));
  if (!issuer) return;
  try {
    const found = await api("GET", `/api/v1/feedback?issuer=${encodeURIComponent(issuer)}`);
    for (const f of found.feedback) {
      const days = Math.floor((Date.now() - Date.parse(f.created_at)) / 86400000);
      body.append(el("tr", {}, el("td", { class: "nowrap" }, beijingMinute(f.created_at)),
        el("td", {}, t("operator.days", { n: days })),
        el("td", {}, t(`feedback.${f.kind}`)), el("td", {}, has(`feedback_status.${f.status}`) ? t(`feedback_status.${f.status}`) : f.status),
        el("td", {}, f.reporter_institution), el("td", { class: "reason" }, f.note)));
    }
    if (!found.feedback.length) body.append(el("tr", {}, el("td", { colspan: "6" }, t("operator.none"))));
  } catch (error) {
    announce(errorText(error), "error");
  }
}

async function catalogues() {
  const body = clear(byId("catalogue-rows"));
  const list = await api("GET", "/api/v1/catalogues");
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
  byId("stats-form").addEventListener("submit", stats);
  byId("feedback-form").addEventListener("submit", feedback);
  await Promise.all([stats(), unmapped(), catalogues()]);
  await feedback();
  document.body.dataset.ready = "true";
}

main();
