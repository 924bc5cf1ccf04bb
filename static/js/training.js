// Live curves on a training run's page: loss (and, for the DPO stages, the reward margin) per logged step,
// redrawn from the run's JSON every few seconds while it runs. Plain SVG, no library.
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";

  function draw(svg, points, label) {
    if (!svg) return;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const width = +svg.getAttribute("width"), height = +svg.getAttribute("height"), pad = 36;
    const add = (name, attrs, text) => {
      const node = document.createElementNS(SVG, name);
      for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
      if (text !== undefined) node.textContent = text;
      svg.appendChild(node);
      return node;
    };
    add("rect", { x: pad, y: 8, width: width - pad - 8, height: height - pad, fill: "none", stroke: "#ccc" });
    if (!points.length) {
      add("text", { x: pad + 8, y: height / 2 }, label + ": no steps logged yet");
      return;
    }
    const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
    const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
    let y0 = Math.min(...ys, 0), y1 = Math.max(...ys);
    if (y1 === y0) y1 = y0 + 1;
    const sx = (x) => pad + ((x - x0) / (x1 - x0)) * (width - pad - 8);
    const sy = (y) => 8 + (1 - (y - y0) / (y1 - y0)) * (height - pad);
    add("polyline", { points: points.map((p) => `${sx(p[0])},${sy(p[1])}`).join(" "), fill: "none",
                      stroke: "#2463eb", "stroke-width": 2 });
    add("text", { x: pad + 8, y: 22 }, `${label} (last ${ys[ys.length - 1].toFixed(4)})`);
    add("text", { x: 2, y: 14, "font-size": 10 }, y1.toPrecision(3));
    add("text", { x: 2, y: height - pad + 8, "font-size": 10 }, y0.toPrecision(3));
    add("text", { x: pad, y: height - 8, "font-size": 10 }, `step ${x0}`);
    add("text", { x: width - 70, y: height - 8, "font-size": 10 }, `step ${x1}`);
  }

  function render(history) {
    draw(document.getElementById("curve-loss"), history.map((h) => [h.step, h.loss]), "loss");
    draw(document.getElementById("curve-margin"),
         history.filter((h) => h.margin !== undefined && h.margin !== null).map((h) => [h.step, h.margin]),
         "reward margin");
  }

  document.addEventListener("DOMContentLoaded", () => {
    const initial = document.getElementById("history");
    render(initial ? JSON.parse(initial.textContent) : []);
    const live = document.getElementById("live");
    if (!live || live.dataset.finished === "1") return;
    const url = live.dataset.progressUrl;
    const timer = setInterval(async () => {
      try {
        const response = await fetch(url, { headers: { Accept: "application/json" } });
        if (!response.ok) return;
        const progress = await response.json();
        render(progress.history);
        if (progress.finished) clearInterval(timer);
      } catch (error) {
        // A missed poll is retried on the next tick.
      }
    }, 3000);
  });
})();
