/* /loop's "Night by night": one point a night from v1/loop/nights (cron/history.py), plotted with the
 * vendored uPlot (static/vendor/README.md): failures and corrections, the share of every earlier night's
 * held-out probes the live adapter still answers (and tonight's), and the night's seconds by stage. A table
 * gives the same numbers as text. Every value is inserted as text, never as HTML. */
"use strict";

(() => {
  const { el, when } = Council;
  let charts = [];
  const COLORS = { failures: "#c0392b", corrections: "#2471a3", earlier: "#1e8449", tonight: "#7d3c98",
                   harvest: "#b9770e", train: "#2471a3", deploy: "#1e8449", total: "#555555" };
  const share = (p) => (p && p.total ? Math.round((1000 * p.right) / p.total) / 10 : null);
  const frac = (p) => (p && p.total ? p.right + "/" + p.total : "—");
  const value = (v) => (typeof v === "number" ? v : null);

  function plot(title, nights, series, box, yRange) {
    const figure = el("figure", { class: "night-plot" }, el("figcaption", {}, title));
    const width = Math.max(280, Math.min(860, box.clientWidth - 16 || 600));
    const opts = {
      width, height: 170, scales: { x: { time: false }, y: yRange ? { range: yRange } : {} },
      axes: [{ label: "night", incrs: [1, 2, 5, 10, 20, 50] }, { size: 50 }],
      series: [{ label: "night" }, ...series.map(([label, , color]) => ({ label, stroke: color, width: 2, spanGaps: true }))],
    };
    charts.push(new uPlot(opts, [nights, ...series.map(([, values]) => values)], figure));
    return figure;
  }

  function table(data) {
    const head = ["night", "finished", "result", "failures", "corrections", "lines (new/replayed/rehearsal)",
                  "tonight's probes", "earlier nights' probes", "seconds (harvest/train/deploy)"];
    return el("table", { class: "nights small" }, el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))),
      el("tbody", {}, data.map((n, i) => {
        const lines = n.train_lines || {};
        const s = n.seconds || {};
        const cells = [String(i + 1), when(n.finished_at), n.result || "—", String(n.failures ?? "—"),
          String(n.corrections ?? "—"), n.train_lines ? [lines.train, lines.replayed, lines.rehearsal].map((x) => x ?? 0).join("/") : "—",
          frac(n.probes), frac(n.retention), ["harvest", "train", "deploy"].map((k) => Math.round(s[k] || 0)).join("/")];
        return el("tr", {}, cells.map((c) => el("td", {}, c)));
      })));
  }

  async function nights() {
    const box = document.querySelector("#nights .body");
    let data;
    try {
      data = (await Council.json("v1/loop/nights")).data || [];
    } catch (err) {
      return box.replaceChildren(el("p", { class: "error", role: "alert" }, "Could not load this: " + err.message));
    }
    charts.forEach((chart) => chart.destroy());
    charts = [];
    if (!data.length) {
      return box.replaceChildren(el("p", { class: "muted" }, "No night has run yet: logs/nights.jsonl gains a line "
        + "each time council nightly finishes."));
    }
    box.replaceChildren();
    const xs = data.map((_, i) => i + 1);
    if (typeof uPlot === "function") {
      box.append(
        plot("Failures found and corrections taught", xs, [
          ["failures", data.map((n) => value(n.failures)), COLORS.failures],
          ["corrections", data.map((n) => value(n.corrections)), COLORS.corrections]], box),
        plot("Held-out probes the live adapter answers (%)", xs, [
          ["earlier nights'", data.map((n) => share(n.retention)), COLORS.earlier],
          ["tonight's", data.map((n) => share(n.probes)), COLORS.tonight]], box, [0, 100]),
        plot("The night's time (s)", xs, ["harvest", "train", "deploy", "total"].map((k) =>
          [k, data.map((n) => value((n.seconds || {})[k])), COLORS[k]]), box));
    }
    box.append(table(data));
  }

  document.getElementById("refresh").addEventListener("click", nights);
  nights();
})();
