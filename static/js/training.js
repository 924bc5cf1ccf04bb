// Curves on a training run's page, drawn with uPlot (static/vendor/uplot): loss and, for the DPO stages, the
// reward margin per logged step, with labelled axes and ticks. Drag across a chart to zoom in, double-click it to
// zoom out. htmx refreshes the page's live section every few seconds; it carries the history the charts follow.
(function () {
  "use strict";

  const CURVES = [
    { id: "curve-loss", key: "loss", color: "#2463eb" },
    { id: "curve-margin", key: "margin", color: "#b26a00" },
  ];
  const charts = new Map();

  function history() {
    const node = document.getElementById("history");
    return node ? JSON.parse(node.textContent) : [];
  }

  // [[steps…], [values…]] for the entries that carry `key`.
  function columns(entries, key) {
    const steps = [], values = [];
    for (const entry of entries) {
      if (entry[key] !== undefined && entry[key] !== null) {
        steps.push(entry.step);
        values.push(entry[key]);
      }
    }
    return [steps, values];
  }

  // As wide as its box, with a height that suits a phone as well as a wide screen.
  function size(box) {
    const style = getComputedStyle(box);
    const inner = box.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    const width = Math.max(200, Math.floor(inner));
    return { width, height: Math.max(240, Math.min(320, Math.round(width * 0.3))) };
  }

  function zoomed(chart) {
    const steps = chart.data[0];
    if (!steps.length) return false;
    const x = chart.scales.x;
    return x.min > steps[0] || x.max < steps[steps.length - 1];
  }

  function create(box, curve, data) {
    const label = box.dataset.label;
    const options = {
      ...size(box),
      title: label,
      scales: { x: { time: false } },
      axes: [
        { label: "step", stroke: "#1d2430", grid: { stroke: "#e6e9ee" } },
        { label, stroke: "#1d2430", grid: { stroke: "#e6e9ee" }, size: 64,
          values: (u, ticks) => ticks.map((v) => +v.toPrecision(4)) },
      ],
      series: [
        { label: "step" },
        { label, stroke: curve.color, width: 2,
          value: (u, v) => (v === null || v === undefined ? "—" : v.toPrecision(4)) },
      ],
      cursor: { drag: { x: true, y: false } },
    };
    return new uPlot(options, data, box);
  }

  function render() {
    const entries = history();
    for (const curve of CURVES) {
      const box = document.getElementById(curve.id);
      if (!box) continue;
      const data = columns(entries, curve.key);
      let chart = charts.get(curve.id);
      if (!chart) {
        chart = create(box, curve, data);
        charts.set(curve.id, chart);
      } else {
        // Keep a zoom the reader chose; otherwise take in the new steps.
        chart.setData(data, !zoomed(chart));
      }
      box.classList.toggle("run-curve-empty", data[0].length === 0);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (typeof uPlot === "undefined") return;
    render();
    document.body.addEventListener("htmx:afterSettle", render);
    let pending = null;
    window.addEventListener("resize", () => {
      clearTimeout(pending);
      pending = setTimeout(() => {
        for (const [id, chart] of charts) chart.setSize(size(document.getElementById(id)));
      }, 100);
    });
  });
})();
