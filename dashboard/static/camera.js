// One camera's page: live facts from camera_update, its alert, a per-minute chart (uPlot), CSV link, violation episodes.
"use strict";

(() => {
  const cid = document.body.dataset.camera;
  const api = "/api/cameras/" + encodeURIComponent(cid);
  const $ = (id) => document.getElementById(id);
  // the chart opens on the headline's window ("" = the dashboard's own window, whatever its length)
  let windowLabel = new URLSearchParams(location.search).get("window") ?? document.body.dataset.windowLabel;
  const windowQuery = (label) => (label ? "?window=" + encodeURIComponent(label) : "");
  let summary = null;
  let plot = null;
  let lastSeriesFetch = 0;
  let lastImg = null;
  let violationsTimer = null;

  function showSummary(s) {
    summary = s;
    s._receivedAt = s._receivedAt || performance.now();
    MW.setTone($("facts"), MW.tone(s.compliance));
    $("cam-name").textContent = s.name || s.camera;
    $("crumb-name").textContent = s.name || s.camera;
    $("cam-sub").textContent = [s.camera, s.zone, s.site].filter(Boolean).join(" · ");
    $("cam-pct").textContent = MW.complianceText(s);
    MW.fillBar($("cam-bar"), s.window);
    for (const c of MW.CLASSES) {
      document.querySelector(`.classes [data-field="${c.field}"]`).textContent = MW.num(s.window[c.field]);
    }
    const set = (f, v) => (document.querySelector(`.meta [data-field="${f}"]`).textContent = v);
    set("people", MW.num(MW.persons(s)));
    set("faces", MW.num(MW.people(s.window)));
    set("fps", s.fps ? s.fps.toFixed(1) : "—");
    set("frames", MW.num(s.totals.frames));
    set("dropped", `${MW.num(s.totals.invalid)} · ${MW.num(s.totals.dropped_stale)}`);
    MW.showWarnings($("cam-warning"), s);
    tick();
    if (s.last_frame_ms && s.last_frame_ms !== lastImg) {
      lastImg = s.last_frame_ms;
      $("latest").src = api + "/latest.jpg?t=" + s.last_frame_ms;
    }
  }

  function tick() {
    if (!summary) return;
    document.querySelector('.meta [data-field="age"]').textContent = MW.age(MW.ageNow(summary));
    const st = MW.status(summary);
    $("status").dataset.status = st;
    $("status").textContent = st;
    MW.showError($("cam-error"), summary);
  }

  // Bars: faces per minute (grey) with the violators in front (red); line: compliance % per minute.
  function chartData(rows) {
    const xs = rows.map((r) => r.ts_ms / 1000);
    const orNull = (n) => (n > 0 ? n : null); // no zero-height bars along the axis
    const faces = rows.map((r) => orNull(MW.people(r)));
    const violators = rows.map((r) => orNull(MW.violators(r)));
    const comp = rows.map((r) => (r.compliance === null ? null : r.compliance * 100));
    return [xs, faces, violators, comp];
  }

  function drawChart(rows) {
    const box = $("chart");
    if (typeof uPlot === "undefined") {
      box.innerHTML = '<div class="chart-empty">Chart library missing (npm ci --prefix dashboard).</div>';
      return;
    }
    const data = chartData(rows);
    box.dataset.minutes = String(rows.length); // what the chart shows, for people and tests alike
    box.dataset.latestFaces = String(data[1][data[1].length - 1] || 0);
    box.dataset.totalFaces = String(data[1].reduce((n, f) => n + (f || 0), 0));
    $("chart-empty").hidden = data[1].some((n) => n !== null);
    if (plot) {
      plot.setData(data);
      return;
    }
    box.replaceChildren();
    const css = getComputedStyle(document.documentElement);
    const colour = (name) => css.getPropertyValue(name).trim();
    const bars = uPlot.paths.bars({ size: [0.7, 28] });
    plot = new uPlot(
      {
        width: box.clientWidth,
        height: 300,
        // the axis in the site's time zone, like every other time on the page
        ...(MW.TIMEZONE ? { tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), MW.TIMEZONE) } : {}),
        cursor: { points: { show: false } },
        scales: {
          x: { time: true, range: (u, min, max) => [min - 40, max + 40] }, // room for the edge bars
          pct: { range: [0, 100] },
          n: { range: (u, min, max) => [0, Math.max(4, Math.ceil(max * 1.15))] },
        },
        axes: [
          {
            stroke: colour("--muted"),
            grid: { stroke: colour("--line") },
            // 24-hour clock times (uPlot's format table: tick step, label, then what a new year/…/minute adds)
            values: [
              [86400, "{D} {MMM}", "\n{YYYY}", null, null, null, null, null, 1],
              [3600, "{HH}:{mm}", "\n{D} {MMM}", null, "\n{D} {MMM}", null, null, null, 1],
              [60, "{HH}:{mm}", "\n{D} {MMM}", null, "\n{D} {MMM}", null, null, null, 1],
              [1, "{HH}:{mm}:{ss}", "\n{D} {MMM}", null, "\n{D} {MMM}", null, null, null, 1],
            ],
          },
          { scale: "pct", label: "compliance", stroke: colour("--muted"), grid: { stroke: colour("--line") },
            values: (u, v) => v.map((x) => x + "%") },
          { scale: "n", side: 1, label: "faces per minute", stroke: colour("--muted"), grid: { show: false } },
        ],
        series: [
          { value: (u, ts) => (ts === null ? "—" : MW.since(ts * 1000)) },
          { label: "Faces", scale: "n", paths: bars, points: { show: false }, fill: "#cfd8e3", stroke: "#cfd8e3" },
          { label: "No mask or incorrect", scale: "n", paths: bars, points: { show: false },
            fill: colour("--without"), stroke: colour("--without") },
          { label: "Compliance", scale: "pct", stroke: colour("--navy"), width: 2.5, spanGaps: false,
            points: { size: 5, fill: colour("--navy") },
            value: (u, v) => (v === null ? "—" : v.toFixed(1) + "%") },
        ],
      },
      data,
      box,
    );
    new ResizeObserver(() => plot.setSize({ width: box.clientWidth, height: 300 })).observe(box);
  }

  // At most one series request per SERIES_EVERY_MS; a request asked for meanwhile runs when that time is up.
  const SERIES_EVERY_MS = 3000;
  let seriesTimer = null;
  function refreshSeries() {
    const wait = lastSeriesFetch + SERIES_EVERY_MS - performance.now();
    if (wait <= 0) loadSeries();
    else if (seriesTimer === null) seriesTimer = setTimeout(() => ((seriesTimer = null), loadSeries()), wait);
  }

  async function loadSeries() {
    lastSeriesFetch = performance.now();
    const r = await fetch(api + windowQuery(windowLabel));
    if (!r.ok) return;
    const body = await r.json();
    drawChart(body.series);
  }

  async function loadViolations() {
    const r = await fetch(api + "/violations?limit=25");
    if (!r.ok) return;
    const rows = await r.json();
    const tbody = $("vio-rows");
    tbody.replaceChildren(
      ...rows.map((v) => {
        const tr = document.createElement("tr");
        const dur = Math.round(v.duration_s) + " s";
        const cells = [
          MW.time(v.ts_ms),
          MW.LABELS[v.class] || v.class,
          v.state === "open" ? "ongoing, " + dur : dur,
          Math.round(v.score * 100) + "%",
        ];
        for (const text of cells) {
          const td = document.createElement("td");
          td.textContent = text;
          tr.append(td);
        }
        const td = document.createElement("td");
        if (v.snapshot_url) {
          const img = document.createElement("img");
          img.src = v.snapshot_url;
          img.alt = "snapshot";
          img.loading = "lazy";
          td.append(img);
        } else td.textContent = "—";
        tr.append(td);
        return tr;
      }),
    );
    $("vio-empty").hidden = rows.length > 0;
  }

  function selectWindow(label) {
    windowLabel = label;
    for (const b of $("windows").children) b.setAttribute("aria-pressed", String(b.dataset.window === label));
    $("csv").href = api + "/series.csv" + windowQuery(label);
    loadSeries();
  }

  for (const b of $("windows").children) b.addEventListener("click", () => selectWindow(b.dataset.window));
  const img = $("latest");
  img.addEventListener("load", () => delete img.dataset.missing);
  img.addEventListener("error", () => (img.dataset.missing = ""));
  selectWindow(windowLabel);
  loadViolations();
  setInterval(tick, 1000);

  // This camera's alert in progress (the start event), from system events (authoritative) and alert events.
  function showAlert(a) {
    const el = $("cam-alert");
    el.hidden = !a;
    el.textContent = a ? "Alert: " + MW.alertLine(a) : "";
    el.title = a ? MW.alertTitle(a) : "";
    $("facts").classList.toggle("alerting", Boolean(a));
  }

  MW.live({
    [MW.EVENTS.system]: (sys) => {
      if (sys.alerts) showAlert(sys.alerts.active.find((a) => a.scope === "camera" && a.camera === cid));
    },
    [MW.EVENTS.alert]: (ev) => {
      if (ev.scope === "camera" && ev.camera === cid) showAlert(ev.state === "start" ? ev : null);
    },
    [MW.EVENTS.camera]: (s) => {
      if (s.camera !== cid) return;
      s._receivedAt = performance.now();
      showSummary(s);
      refreshSeries();
    },
    [MW.EVENTS.violation]: (v) => {
      if (v.camera !== cid || violationsTimer !== null) return;
      violationsTimer = setTimeout(() => ((violationsTimer = null), loadViolations()), 1000);
    },
  });
})();
