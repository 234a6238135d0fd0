// A small SVG line chart (x: kimg), enough for losses, augment p and metrics over a training run.

const SVG = "http://www.w3.org/2000/svg";
// Distinct colours with at least 3:1 contrast on the light panel (WCAG 1.4.11, graphics).
const COLOURS = ["#0b57d0", "#b3261e", "#146c2e", "#8a4b00", "#6b3fa0", "#00677d", "#a1005f"];
const W = 320;
const H = 160;
const PAD = { left: 44, right: 8, top: 8, bottom: 22 };

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function tick(value) {
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 0.01 || abs >= 10000)) return value.toExponential(1);
  return Number(value.toPrecision(3)).toString();
}

export class LineChart {
  constructor(title) {
    this.series = new Map(); // name -> [[x, y], ...]
    this.figure = document.createElement("figure");
    this.figure.className = "chart";
    this.caption = document.createElement("figcaption");
    this.caption.textContent = title;
    this.plot = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title}: no data yet` });
    this.legend = document.createElement("div");
    this.legend.className = "legend";
    this.figure.append(this.caption, this.plot, this.legend);
    this.title = title;
  }

  add(name, x, y) {
    if (typeof y !== "number" || !Number.isFinite(y)) return;
    if (!this.series.has(name)) this.series.set(name, []);
    this.series.get(name).push([x, y]);
  }

  points() {
    return [...this.series.values()].reduce((n, s) => n + s.length, 0);
  }

  draw() {
    this.plot.replaceChildren();
    const all = [...this.series.values()].flat();
    if (!all.length) return;
    let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
    let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
    if (x1 === x0) x1 = x0 + 1;
    if (y1 === y0) [y0, y1] = [y0 - 0.5, y1 + 0.5];
    const sx = (x) => PAD.left + ((x - x0) / (x1 - x0)) * (W - PAD.left - PAD.right);
    const sy = (y) => H - PAD.bottom - ((y - y0) / (y1 - y0)) * (H - PAD.top - PAD.bottom);
    const axis = { stroke: "#4a5360", "stroke-width": 1 };
    this.plot.append(svg("line", { x1: PAD.left, y1: H - PAD.bottom, x2: W - PAD.right, y2: H - PAD.bottom, ...axis }));
    this.plot.append(svg("line", { x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: H - PAD.bottom, ...axis }));
    const label = (x, y, text, anchor) => {
      const node = svg("text", { x, y, "font-size": 10, fill: "#1b1f24", "text-anchor": anchor });
      node.textContent = text;
      this.plot.append(node);
    };
    label(PAD.left - 4, PAD.top + 8, tick(y1), "end");
    label(PAD.left - 4, H - PAD.bottom, tick(y0), "end");
    label(PAD.left, H - 6, tick(x0), "start");
    label(W - PAD.right, H - 6, `${tick(x1)} kimg`, "end");
    this.legend.replaceChildren();
    let i = 0;
    const words = [];
    for (const [name, pts] of this.series) {
      const colour = COLOURS[i++ % COLOURS.length];
      const d = pts.map(([x, y], j) => `${j ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
      this.plot.append(svg("path", { d, fill: "none", stroke: colour, "stroke-width": 1.8 }));
      if (pts.length === 1) this.plot.append(svg("circle", { cx: sx(pts[0][0]), cy: sy(pts[0][1]), r: 2.5, fill: colour }));
      const item = document.createElement("span");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = colour;
      item.append(swatch, name);
      this.legend.append(item);
      words.push(`${name} ${tick(pts[pts.length - 1][1])}`);
    }
    this.plot.setAttribute("aria-label", `${this.title}, latest: ${words.join(", ")}`);
  }
}
