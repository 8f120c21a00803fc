// The History page: a date range, compliance per zone and per camera over it (uPlot), and hour × weekday.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const PALETTE = ["#1f5fa8", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285", "#c2255c", "#5c940d"];
  const plots = {};

  // YYYY-MM-DD of an instant in the site's time zone (the browser's own without a site file).
  function isoDay(ms) {
    return new Intl.DateTimeFormat("en-CA", { timeZone: MW.TIMEZONE, year: "numeric", month: "2-digit", day: "2-digit" })
      .format(new Date(ms));
  }

  function lineChart(boxId, ts, lines) {
    const box = $(boxId);
    if (typeof uPlot === "undefined") {
      box.textContent = "Chart library missing (npm ci --prefix dashboard).";
      return;
    }
    if (plots[boxId]) plots[boxId].destroy();
    box.replaceChildren();
    box.dataset.lines = String(lines.length);
    box.dataset.points = String(ts.length);
    const data = [ts.map((t) => t / 1000), ...lines.map((l) => l.values.map((v) => (v === null ? null : v * 100)))];
    plots[boxId] = new uPlot(
      {
        width: box.clientWidth || 800,
        height: 260,
        ...(MW.TIMEZONE ? { tzDate: (t) => uPlot.tzDate(new Date(t * 1e3), MW.TIMEZONE) } : {}),
        scales: { y: { range: [0, 100] } },
        axes: [{}, { values: (u, v) => v.map((x) => x + "%") }],
        series: [
          {},
          ...lines.map((l, i) => ({
            label: l.label,
            stroke: PALETTE[i % PALETTE.length],
            width: 2,
            spanGaps: true,
            value: (u, v) => (v === null ? "—" : v.toFixed(1) + "%"),
          })),
        ],
      },
      data,
      box,
    );
  }

  function heatmap(h) {
    const table = $("heatmap");
    const head = document.createElement("tr");
    head.append(document.createElement("th"));
    for (let hour = 0; hour < 24; hour++) {
      const th = document.createElement("th");
      th.textContent = String(hour).padStart(2, "0");
      head.append(th);
    }
    const rows = h.weekdays.map((day, d) => {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      th.textContent = day;
      tr.append(th);
      h.compliance[d].forEach((c, hour) => {
        const td = document.createElement("td");
        td.dataset.faces = String(h.faces[d][hour]);
        if (c !== null) {
          td.textContent = String(Math.round(c * 100));
          td.style.setProperty("--miss", String(Math.min(1, (1 - c) * 2)));
          td.className = MW.tone(c);
        }
        td.title = `${day} ${String(hour).padStart(2, "0")}:00 · ${c === null ? "nobody seen" : MW.pct(c)} · ${h.faces[d][hour]} faces`;
        tr.append(td);
      });
      return tr;
    });
    table.replaceChildren(head, ...rows);
  }

  async function show(from, to) {
    const q = `?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`;
    history.replaceState(null, "", q);
    const r = await fetch("/api/history/overview" + q);
    const body = await r.json();
    $("range-error").hidden = r.ok;
    if (!r.ok) {
      $("range-error").textContent = body.detail || body.error;
      return;
    }
    $("range-note").textContent = `${body.ts_ms.length} ${body.resolution} buckets`;
    const zones = Object.entries(body.zones);
    lineChart("zone-chart", body.ts_ms, zones.map(([z, l]) => ({ label: z, values: l.compliance })));
    $("zone-empty").hidden = zones.some(([, l]) => l.total.compliance !== null);
    const cams = Object.entries(body.cameras);
    lineChart("camera-chart", body.ts_ms, cams.map(([c, l]) => ({ label: c, values: l.compliance })));
    $("camera-rows").replaceChildren(
      ...cams.map(([c, l]) => {
        const tr = document.createElement("tr");
        const link = document.createElement("a");
        link.href = "/cameras/" + encodeURIComponent(c);
        link.textContent = c;
        const cells = [link, l.zone || "—", MW.pct(l.total.compliance), MW.num(l.faces.reduce((a, b) => a + b, 0))];
        for (const v of cells) {
          const td = document.createElement("td");
          td.append(v);
          tr.append(td);
        }
        return tr;
      }),
    );
    heatmap(body.heatmap);
  }

  const params = new URLSearchParams(location.search);
  const today = Date.now();
  $("to").value = params.get("to") || isoDay(today);
  $("from").value = params.get("from") || isoDay(today - 6 * 86400e3);
  $("range-form").addEventListener("submit", (e) => {
    e.preventDefault();
    show($("from").value, $("to").value);
  });
  show($("from").value, $("to").value);
  MW.live({});
})();
