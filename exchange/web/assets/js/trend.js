// The trend of one item's numeric results across hospitals: ECharts (shipped in assets/vendor/echarts), loaded on
// first use so that the encounter view does not wait for it.
import { beijingDate, beijingMinute, t } from "./common.js";

let loading = null;

export function loadECharts() {
  if (window.echarts) return Promise.resolve(window.echarts);
  if (!loading) {
    loading = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = "/ui/assets/vendor/echarts/echarts.min.js";
      script.onload = () => resolve(window.echarts);
      script.onerror = () => reject(new Error("echarts"));
      document.head.append(script);
    });
  }
  return loading;
}

/** Draw ``points`` ({at, value, unit, issuer}, oldest first) in ``node``: one line per issuing hospital. */
export async function trendChart(node, points, hospitalName) {
  const echarts = await loadECharts();
  const old = echarts.getInstanceByDom(node);
  if (old) old.dispose();
  if (!points.length) {
    node.textContent = t("detail.no_trend");
    return null;
  }
  const unit = points[0].unit || "";
  const byIssuer = new Map();
  for (const p of points) {
    if (!byIssuer.has(p.issuer)) byIssuer.set(p.issuer, []);
    byIssuer.get(p.issuer).push([Date.parse(p.at), p.value]);
  }
  const chart = echarts.init(node, null, { renderer: "canvas" });
  chart.setOption({
    animation: false,
    grid: { left: 48, right: 16, top: 40, bottom: 36 },
    legend: { top: 0, type: "scroll" },
    tooltip: { trigger: "item", formatter: (p) => `${p.seriesName}<br>${beijingMinute(p.value[0])}: ${p.value[1]} ${unit}` },
    xAxis: { type: "time", splitNumber: 4, axisLabel: { hideOverlap: true, formatter: (value) => beijingDate(value) } },
    yAxis: { type: "value", name: unit, scale: true },
    series: [...byIssuer.entries()].map(([issuer, data]) => ({
      name: hospitalName(issuer), type: "line", data, symbolSize: 8, connectNulls: true,
    })),
  });
  node.dataset.points = String(points.length);
  node.dataset.series = String(byIssuer.size);
  return chart;
}
