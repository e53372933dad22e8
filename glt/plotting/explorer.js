/* glt layer explorer: hand-written, no library, no network. glt/plotting/_explorer.py appends the call
   that passes the explorer's root element. The data come from the application/json script element
   inside the root (token ids and statistics as base64 little-endian arrays, token strings in one table);
   the page is built with textContent and setAttribute only, never by parsing markup, so no token string or
   title can inject markup or script. Array layouts (row-major): top/lp [layer, pos, k],
   ent/kl [layer, pos], tgt [pos, target], rank/tlp [layer, pos, target]. Ranks are 0-based in the
   data and shown 1-based (1 = top). */
(function (root) {
  "use strict";
  if (!root || root.getAttribute("data-glt-ready")) return;
  const NS = "http://www.w3.org/2000/svg";
  const LP_SCALE = 1000, LP_FLOOR = -32768;
  const RAMP = [[0, [0, 34, 78]], [0.25, [65, 77, 107]], [0.5, [124, 123, 120]], [0.75, [188, 175, 111]],
    [1, [254, 232, 56]]];  // cividis (colour-blind safe, monotone lightness)
  const COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"];
  const DASHES = ["", "6 3", "2 2", "8 3 2 3"];
  const STATS = {
    prob: "top-1 probability", trank: "rank of the target (1 = top, log scale)",
    tprob: "probability of the target", entropy: "entropy (nats)", kl: "KL(final \u2016 layer) (nats)",
  };

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function sv(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const k in attrs) e.setAttribute(k, String(attrs[k]));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  function buf(s) {
    const bin = atob(s), u = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) u[i] = bin.charCodeAt(i);
    return u.buffer;
  }
  function short(s, n) {
    const cs = Array.from(s);
    return cs.length <= n ? s : cs.slice(0, n - 1).join("") + "\u2026";
  }
  function fmtP(lp) {
    if (!isFinite(lp)) return "< 1e-14";
    const p = Math.exp(lp);
    return p >= 0.001 ? (100 * p).toFixed(1) + "%" : p.toExponential(1);
  }

  const nojs = root.querySelector(".glt-x-nojs");
  if (nojs) nojs.remove();
  const D = JSON.parse(root.querySelector("script.glt-x-data").textContent);
  const S = D.strings, L = D.layers.length, P = D.positions.length, K = D.k;
  const IDS = D.idw === 4 ? Uint32Array : Uint16Array;
  const input = new IDS(buf(D.input)), vocab = new Int32Array(buf(D.sid));
  const lenses = D.lenses.map(v => ({
    name: v.name, T: v.t, tnames: v.tnames, final: v.final,
    top: new IDS(buf(v.top)), lp: new Int16Array(buf(v.lp)), ent: new Float32Array(buf(v.ent)),
    kl: new Float32Array(buf(v.kl)), tgt: new IDS(buf(v.tgt)), rank: new Int32Array(buf(v.rank)),
    tlp: new Float32Array(buf(v.tlp)),
  }));
  const INDEX = new Map();
  S.forEach((s, i) => { if (!INDEX.has(s)) INDEX.set(s, i); });
  const st = {lens: 0, stat: D.stat, slot: 0, page: 0, size: D.page, sel: -1, pick: -1, msg: ""};
  const uid = root.getAttribute("data-glt-explorer");

  const topId = (v, l, p, j) => v.top[(l * P + p) * K + j];
  const topLp = (v, l, p, j) => { const q = v.lp[(l * P + p) * K + j]; return q === LP_FLOOR ? -Infinity : q / LP_SCALE; };
  const slotOf = v => Math.min(st.slot, v.T - 1);
  const finalTop1 = (v, p) => topId(v, L - 1, p, 0);
  const shown = () => (st.lens < 0 ? lenses.map((_, i) => i) : [st.lens]);
  function rowLabel(l) {
    const lab = D.layers[l], m = /^resid_pre (\d+)$/.exec(lab);
    return m && +m[1] === l ? String(l) : l + " " + lab;
  }

  function raw(v, l, p) {  // the colour statistic of one cell, in its own unit
    const c = l * P + p, j = slotOf(v);
    if (st.stat === "prob") return Math.exp(topLp(v, l, p, 0));
    if (st.stat === "trank") return v.rank[c * v.T + j] + 1;
    if (st.stat === "tprob") return Math.exp(v.tlp[c * v.T + j]);
    return st.stat === "entropy" ? v.ent[c] : v.kl[c];
  }
  function range() {  // [lo, hi, to01] shared by every lens, so side-by-side grids compare
    if (st.stat === "prob" || st.stat === "tprob") return [0, 1, x => x];
    let hi = 0;
    for (const v of lenses) for (let l = 0; l < L; l++) for (let p = 0; p < P; p++) hi = Math.max(hi, raw(v, l, p) || 0);
    if (st.stat === "trank") {
      hi = Math.max(hi, 10);
      return [hi, 1, x => 1 - Math.log(x) / Math.log(hi)];  // rank 1 is bright
    }
    hi = hi > 0 ? hi : 1;
    return [0, hi, x => x / hi];
  }
  function ramp(t) {
    t = isFinite(t) ? Math.min(1, Math.max(0, t)) : 0;
    let i = 1;
    while (i < RAMP.length - 1 && RAMP[i][0] < t) i++;
    const [t0, a] = RAMP[i - 1], [t1, b] = RAMP[i], f = (t - t0) / (t1 - t0);
    const c = a.map((x, k) => Math.round(x + f * (b[k] - x)));
    return {css: "rgb(" + c.join(",") + ")", lum: (0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]) / 255};
  }
  function fmtStat(x) {
    if (st.stat === "trank") return String(Math.round(x));
    if (st.stat === "prob" || st.stat === "tprob") return (100 * x).toFixed(0) + "%";
    return x.toFixed(2);
  }

  // ------------------------------------------------------------------ layout
  const head = el("div", "glt-x-head");
  head.appendChild(el("div", "glt-x-title", D.title));
  head.appendChild(el("div", "glt-x-help", "Rows: layers (0 = embeddings, top = final); columns: positions; " +
    "each cell shows the top-1 prediction of the next token. Hover a cell for its top-" + K +
    "; click a cell or a token for its trajectory over depth."));
  const strip = el("div", "glt-x-text");
  const tokEls = [];
  for (let p = 0; p < P; p++) {
    const t = el("span", "glt-x-tok", S[input[p]]);
    t.dataset.p = p;
    tokEls.push(t);
    strip.appendChild(t);
  }
  const bar = el("div", "glt-x-bar"), grids = el("div", "glt-x-grids"), legend = el("div", "glt-x-legend");
  const traj = el("div", "glt-x-traj"), tip = el("div", "glt-x-tip");
  traj.style.display = "none";
  [head, strip, bar, grids, legend, traj, tip].forEach(x => root.appendChild(x));

  function button(text, on, click) {
    const b = el("button", "glt-x-btn" + (on ? " glt-x-on" : ""), text);
    b.type = "button";
    b.addEventListener("click", click);
    return b;
  }
  function select(label, options, value, change) {
    const lab = el("label", "", label), s = el("select");
    for (const [k, text] of options) {
      const o = el("option", "", text);
      o.value = k;
      s.appendChild(o);
    }
    s.value = String(value);
    s.addEventListener("change", () => change(s.value));
    lab.appendChild(s);
    return lab;
  }
  function drawBar() {
    bar.textContent = "";
    if (lenses.length > 1) {
      const g = el("span", "glt-x-lenses");
      lenses.forEach((v, i) => g.appendChild(button(v.name + " lens", st.lens === i, () => { st.lens = i; update(); })));
      g.appendChild(button("all lenses", st.lens < 0, () => { st.lens = -1; update(); }));
      bar.appendChild(g);
    }
    bar.appendChild(select("colour:", Object.entries(STATS), st.stat, x => { st.stat = x; update(); }));
    if (lenses[0].T > 1) {
      bar.appendChild(select("target:", lenses[0].tnames.map((n, j) => [j, n]), st.slot, x => {
        st.slot = +x; update(); }));
    }
    const pages = Math.ceil(P / st.size), p0 = st.page * st.size, p1 = Math.min(P, p0 + st.size);
    const nav = el("span", "glt-x-pages");
    const prev = button("\u25C0", false, () => { st.page--; update(); }), next = button("\u25B6", false, () => { st.page++; update(); });
    prev.disabled = st.page === 0;
    next.disabled = st.page >= pages - 1;
    const slider = el("input");
    slider.type = "range"; slider.min = 0; slider.max = pages - 1; slider.value = st.page;
    slider.disabled = pages < 2;
    slider.addEventListener("change", () => { st.page = +slider.value; update(); });
    nav.append(prev, slider, next, el("span", "glt-x-pagelabel", " positions " + (p0 + 1) + "\u2013" + p1 + " of " + P + " "));
    nav.appendChild(select("per page:", [32, 64, 128, 256, 512].map(n => [n, n]), st.size, x => {
      st.size = +x; st.page = st.sel >= 0 ? Math.floor(st.sel / st.size) : 0; update(); }));
    bar.appendChild(nav);
  }

  function drawGrids() {
    grids.textContent = "";
    const p0 = st.page * st.size, p1 = Math.min(P, p0 + st.size), [lo, hi, to01] = range();
    for (const li of shown()) {
      const v = lenses[li];
      grids.appendChild(el("div", "glt-x-lensname", v.name + " lens"));
      const sc = el("div", "glt-x-scroll"), g = el("div", "glt-x-grid");
      g.style.gridTemplateColumns = "auto repeat(" + (p1 - p0) + ", 4.6em)";
      g.dataset.lens = li;
      for (let l = L - 1; l >= 0; l--) {
        g.appendChild(el("div", "glt-x-rowh", rowLabel(l)));
        for (let p = p0; p < p1; p++) {
          const c = el("div", "glt-x-cell" + (p === st.sel ? " glt-x-sel" : ""), short(S[topId(v, l, p, 0)], 7));
          const col = ramp(to01(raw(v, l, p)));
          c.style.background = col.css;
          c.style.color = col.lum > 0.5 ? "#000" : "#fff";
          c.dataset.l = l;
          c.dataset.p = p;
          g.appendChild(c);
        }
      }
      g.appendChild(el("div", "glt-x-rowh", "input"));
      for (let p = p0; p < p1; p++) {
        const h = el("div", "glt-x-in" + (p === st.sel ? " glt-x-sel" : ""), short(S[input[p]], 7));
        h.dataset.p = p;
        g.appendChild(h);
      }
      sc.appendChild(g);
      grids.appendChild(sc);
    }
    tokEls.forEach((t, p) => {
      t.classList.toggle("glt-x-onpage", p >= p0 && p < p1);
      t.classList.toggle("glt-x-sel", p === st.sel);
    });
    legend.textContent = "";
    const r = el("span", "glt-x-ramp");
    r.style.background = "linear-gradient(to right," + RAMP.map(([t, c]) => "rgb(" + c.join(",") + ") " + 100 * t + "%").join(",") + ")";
    legend.append(el("span", "", "colour: " + STATS[st.stat] + (st.stat[0] === "t" ? " (" + lenses[0].tnames[st.slot] + ")" : "")),
      el("span", "", fmtStat(lo)), r, el("span", "", fmtStat(hi)));
  }

  // ------------------------------------------------------------------ hover
  function cellInfo(li, l, p) {
    const v = lenses[li], box = el("div");
    box.appendChild(el("div", "", v.name + " lens \u00B7 layer " + l + " (" + D.layers[l] + ") \u00B7 position " + D.positions[p]));
    const inp = el("div", "", "input ");
    inp.append(el("span", "glt-x-mono", S[input[p]]), " \u2192 next-token prediction:");
    box.appendChild(inp);
    const tb = el("table", "glt-x-topk");
    for (let j = 0; j < K; j++) {
      const id = topId(v, l, p, j), tr = el("tr");
      tr.append(el("td", "glt-x-num", j + 1), el("td", "glt-x-mono", S[id]), el("td", "glt-x-num", fmtP(topLp(v, l, p, j))),
        el("td", "glt-x-num", "id " + vocab[id]));
      tb.appendChild(tr);
    }
    box.appendChild(tb);
    const c = l * P + p;
    const said = new Set();
    for (let j = 0; j < v.T; j++) {
      const id = v.tgt[p * v.T + j];
      if (said.has(id)) continue;  // a target that is also the final top-1 here is listed once
      said.add(id);
      const name = v.tnames[j] === S[id] ? "" : v.tnames[j] + " ";
      box.appendChild(el("div", "glt-x-target", "target " + name + "\u201C" + S[id] + "\u201D: rank " +
        (v.rank[c * v.T + j] + 1) + " (1 = top), log-prob " + v.tlp[c * v.T + j].toFixed(2)));
    }
    box.appendChild(el("div", "", "entropy " + v.ent[c].toFixed(2) + " nats \u00B7 KL(final \u2016 layer) " +
      v.kl[c].toFixed(2) + " nats"));
    return box;
  }
  function moveTip(e) {
    const w = tip.offsetWidth, h = tip.offsetHeight;
    let x = e.clientX + 14, y = e.clientY + 14;
    if (x + w > window.innerWidth - 4) x = Math.max(4, e.clientX - w - 14);
    if (y + h > window.innerHeight - 4) y = Math.max(4, e.clientY - h - 14);
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  }
  grids.addEventListener("mouseover", e => {
    const c = e.target.closest(".glt-x-cell, .glt-x-in");
    if (!c) return;
    const p = +c.dataset.p, li = +c.closest(".glt-x-grid").dataset.lens;
    tip.textContent = "";
    if (c.classList.contains("glt-x-cell")) tip.appendChild(cellInfo(li, +c.dataset.l, p));
    else tip.appendChild(el("div", "", "position " + D.positions[p] + ": \u201C" + S[input[p]] + "\u201D (id " + vocab[input[p]] + ")"));
    tip.style.display = "block";
    moveTip(e);
  });
  grids.addEventListener("mousemove", e => { if (tip.style.display === "block") moveTip(e); });
  grids.addEventListener("mouseleave", () => { tip.style.display = "none"; });
  grids.addEventListener("click", e => {
    const c = e.target.closest(".glt-x-cell, .glt-x-in");
    if (c) choose(+c.dataset.p);
  });
  strip.addEventListener("click", e => {
    const t = e.target.closest(".glt-x-tok");
    if (t) choose(+t.dataset.p);
  });
  function choose(p) {
    st.sel = p;
    st.page = Math.floor(p / st.size);
    st.pick = -1;
    st.msg = "";
    update();
  }

  // ------------------------------------------------------------------ trajectory
  function follow(v, p, id) {  // per layer: 1-based rank and log-prob (null where not stored)
    const rank = [], lp = [];
    for (let j = 0; j < v.T; j++) {
      if (v.tgt[p * v.T + j] !== id) continue;
      for (let l = 0; l < L; l++) {
        rank.push(v.rank[(l * P + p) * v.T + j] + 1);
        lp.push(v.tlp[(l * P + p) * v.T + j]);
      }
      return {rank, lp, exact: true};
    }
    for (let l = 0; l < L; l++) {
      let r = null, q = null;
      for (let j = 0; j < K; j++) if (topId(v, l, p, j) === id) { r = j + 1; q = topLp(v, l, p, j); break; }
      rank.push(r);
      lp.push(q);
    }
    return {rank, lp, exact: false};
  }
  function chart(title, series, log, max) {
    const W = 440, H = 200, ml = 44, mr = 10, mt = 20, mb = 30, iw = W - ml - mr, ih = H - mt - mb;
    const s = sv("svg", {width: W, height: H, viewBox: "0 0 " + W + " " + H, class: "glt-x-chart"});
    const X = l => ml + (L === 1 ? iw / 2 : l * iw / (L - 1));
    const Y = log ? (r => mt + Math.log10(r) / Math.log10(max) * ih) : (q => mt + (1 - q) * ih);
    s.appendChild(sv("text", {x: ml, y: 12, "font-weight": 600}, title));
    s.appendChild(sv("rect", {x: ml, y: mt, width: iw, height: ih, fill: "none", stroke: "#bbb"}));
    const ticks = log ? [] : [0, 0.25, 0.5, 0.75, 1];
    if (log) for (let t = 1; t <= max; t *= 10) ticks.push(t);
    for (const t of ticks) {
      s.appendChild(sv("line", {x1: ml, x2: ml + iw, y1: Y(t), y2: Y(t), stroke: "#eee"}));
      s.appendChild(sv("text", {x: ml - 4, y: Y(t) + 3, "text-anchor": "end"},
        log ? (t >= 1000 ? "1e" + Math.round(Math.log10(t)) : t) : 100 * t + "%"));
    }
    let step = 1;
    while (L / step > 12) step++;
    for (let l = 0; l < L; l += step) s.appendChild(sv("text", {x: X(l), y: H - mb + 13, "text-anchor": "middle"}, l === 0 ? "emb" : l));
    if ((L - 1) % step) s.appendChild(sv("text", {x: X(L - 1), y: H - mb + 13, "text-anchor": "middle"}, L - 1));
    s.appendChild(sv("text", {x: ml + iw / 2, y: H - 3, "text-anchor": "middle", fill: "#555"}, "layer (0 = embeddings)"));
    for (const se of series) {
      let d = "", pen = "M";
      se.y.forEach((y, l) => {
        if (y === null || !isFinite(y)) { pen = "M"; return; }
        const yy = log ? Y(y) : Y(Math.exp(y));
        d += pen + X(l).toFixed(1) + " " + yy.toFixed(1) + " ";
        pen = "L";
        s.appendChild(sv("circle", {cx: X(l), cy: yy, r: 2.4, fill: se.color, class: "glt-x-pt"}));
      });
      if (d) s.appendChild(sv("path", {d, fill: "none", stroke: se.color, "stroke-width": 1.8, "stroke-dasharray": se.dash}));
    }
    return s;
  }
  function drawTraj() {
    traj.textContent = "";
    if (st.sel < 0) { traj.style.display = "none"; return; }
    traj.style.display = "";
    const p = st.sel, ids = new Set(), finals = [];
    traj.appendChild(el("div", "glt-x-title", "Position " + D.positions[p] + ": input \u201C" + S[input[p]] +
      "\u201D \u2014 the next-token prediction over depth"));
    for (const li of shown()) {
      const v = lenses[li];
      for (let l = 0; l < L; l++) for (let j = 0; j < K; j++) ids.add(topId(v, l, p, j));
      for (let j = 0; j < v.T; j++) ids.add(v.tgt[p * v.T + j]);
      finals.push(finalTop1(v, p));
    }
    const pick = el("div", "glt-x-pick"), inp = el("input"), dl = el("datalist");
    dl.id = uid + "-tokens";
    [...ids].forEach(i => { const o = el("option"); o.value = S[i]; dl.appendChild(o); });
    inp.setAttribute("list", dl.id);
    inp.placeholder = "type a token (\u2423 = space)";
    inp.className = "glt-x-pickin";
    const commit = () => track(inp.value);
    inp.addEventListener("change", commit);
    inp.addEventListener("keydown", e => { if (e.key === "Enter") commit(); });
    pick.append(el("span", "", "follow a token:"), inp, dl);
    const v0 = lenses[shown()[0]];
    for (let j = 0; j < K; j++) {
      const id = topId(v0, L - 1, p, j), b = el("button", "glt-x-chip", S[id]);
      b.type = "button";
      b.addEventListener("click", () => { st.pick = id; st.msg = ""; drawTraj(); });
      pick.appendChild(b);
    }
    traj.appendChild(pick);
    if (st.msg) traj.appendChild(el("div", "glt-x-msg", st.msg));
    const series = [], keys = [];
    shown().forEach((li, n) => {
      const v = lenses[li], want = [[finalTop1(v, p), "final top-1"]];
      for (let j = 0; j < v.T; j++) if (v.tgt[p * v.T + j] !== finalTop1(v, p)) want.push([v.tgt[p * v.T + j], v.tnames[j]]);
      if (st.pick >= 0) want.push([st.pick, "picked"]);
      const seen = new Set();
      want.forEach(([id, what]) => {
        if (seen.has(id)) return;
        seen.add(id);
        const f = follow(v, p, id), k = keys.indexOf(id) >= 0 ? keys.indexOf(id) : keys.push(id) - 1;
        series.push({rank: f.rank, lp: f.lp, color: COLORS[k % COLORS.length], dash: DASHES[n % DASHES.length],
          label: v.name + " lens \u00B7 " + what + " \u201C" + S[id] + "\u201D" + (f.exact ? " (exact)" : " (inside the top-" + K + " only)")});
      });
    });
    let max = 10;
    series.forEach(se => se.rank.forEach(r => { if (r !== null) max = Math.max(max, r); }));
    max = Math.pow(10, Math.ceil(Math.log10(max)));
    const charts = el("div", "glt-x-charts");
    charts.append(chart("rank (1 = top, log scale)", series.map(se => ({y: se.rank, color: se.color, dash: se.dash})), true, max),
      chart("probability", series.map(se => ({y: se.lp, color: se.color, dash: se.dash})), false, 1));
    traj.appendChild(charts);
    const keyBox = el("div", "glt-x-keys");
    for (const se of series) {
      const row = el("div"), sw = sv("svg", {width: 28, height: 10});
      sw.appendChild(sv("line", {x1: 0, x2: 28, y1: 5, y2: 5, stroke: se.color, "stroke-width": 2, "stroke-dasharray": se.dash}));
      row.append(sw, " " + se.label);
      keyBox.appendChild(row);
    }
    if (series.some(se => se.rank.some(r => r === null))) {
      keyBox.appendChild(el("div", "glt-x-msg", "Gaps: the token is outside the stored top-" + K +
        " there (rank > " + K + "); pass it as a target to glt.explore to follow it exactly."));
    }
    traj.appendChild(keyBox);
  }
  function track(q) {
    st.msg = "";
    if (q === "") { st.pick = -1; drawTraj(); return; }
    const found = [q, "\u2423" + q, q.replace(/ /g, "\u2423")].find(c => INDEX.has(c));
    if (found === undefined) {
      st.msg = "\u201C" + q + "\u201D is not a stored token: only each cell's top-" + K +
        " and the tracked targets are stored (pass it as a target to glt.explore to follow it).";
      st.pick = -1;
    } else {
      st.pick = INDEX.get(found);
    }
    drawTraj();
  }

  function update() {
    const pages = Math.ceil(P / st.size);
    st.page = Math.max(0, Math.min(pages - 1, st.page));
    drawBar();
    drawGrids();
    drawTraj();
  }
  try {
    update();
    root.setAttribute("data-glt-ready", "1");
  } catch (err) {
    root.appendChild(el("div", "glt-x-msg", "The layer explorer failed: " + err));
    throw err;
  }
})
