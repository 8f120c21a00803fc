// The overview page: one card per camera, kept current by camera_update / system / violation / alert events.
"use strict";

(() => {
  const cams = new Map(); // camera id -> latest summary (plus _receivedAt)
  const cards = new Map(); // camera id -> card element
  const imgShownAt = new Map(); // camera id -> last_frame_ms of the image shown
  const alerts = new Map(); // subject ("camera:<id>" or "site") -> start event of the alert in progress
  let workers = null; // workers in the latest system event
  let zone = new URLSearchParams(location.search).get("zone") || "";
  let sort = "worst";
  let renderQueued = false;
  let systemSeen = false;

  const $ = (id) => document.getElementById(id);
  const grid = $("cards");
  const tpl = $("card-template");

  function compare(a, b) {
    if (sort === "worst") {
      const ca = a.compliance, cb = b.compliance;
      if (ca !== cb) {
        if (ca === null) return 1;
        if (cb === null) return -1;
        return ca - cb;
      }
    }
    return (a.name || a.camera).localeCompare(b.name || b.camera);
  }

  function makeCard(id) {
    const el = tpl.content.firstElementChild.cloneNode(true);
    el.dataset.camera = id;
    const href = "/cameras/" + encodeURIComponent(id);
    el.querySelector(".frame").href = href;
    el.querySelector(".name").href = href;
    const img = el.querySelector("img");
    img.dataset.missing = "";
    img.addEventListener("load", () => delete img.dataset.missing);
    img.addEventListener("error", () => (img.dataset.missing = ""));
    cards.set(id, el);
    return el;
  }

  function updateCard(el, s) {
    const st = MW.status(s);
    MW.setTone(el, MW.tone(s.compliance));
    el.classList.toggle("is-offline", st === "offline" || st === "ended");
    el.querySelector(".name").textContent = s.name || s.camera;
    el.querySelector(".name").title = s.camera;
    el.querySelector(".zone").textContent = s.zone || "";
    const pill = el.querySelector(".pill");
    pill.dataset.status = st;
    pill.textContent = st;
    el.querySelector(".pct").textContent = MW.complianceText(s);
    el.querySelector(".pct-label").textContent = s.compliance === null ? "" : "masked · last " + s.window_minutes + " min";
    MW.fillBar(el.querySelector(".bar"), s.window);
    for (const c of MW.CLASSES) el.querySelector(`[data-field="${c.field}"]`).textContent = MW.num(s.window[c.field]);
    el.querySelector('[data-field="people"]').textContent = MW.num(MW.persons(s));
    MW.showWarnings(el.querySelector(".qa"), s);
    MW.showError(el.querySelector(".cam-error"), s);
    const a = alerts.get("camera:" + s.camera);
    el.classList.toggle("alerting", Boolean(a));
    el.querySelector(".alert-badge").hidden = !a;
    const line = el.querySelector(".alert-line");
    line.hidden = !a;
    line.textContent = a ? "Alert: " + MW.alertLine(a) : "";
    line.title = a ? MW.alertTitle(a) : "";
    el.querySelector('[data-field="fps"]').textContent = s.fps ? s.fps.toFixed(1) : "—";
    updateAge(el, s);
    const img = el.querySelector("img");
    if (s.last_frame_ms && imgShownAt.get(s.camera) !== s.last_frame_ms) {
      imgShownAt.set(s.camera, s.last_frame_ms);
      img.src = "/api/cameras/" + encodeURIComponent(s.camera) + "/latest.jpg?t=" + s.last_frame_ms;
    }
  }

  function updateAge(el, s) {
    const dd = el.querySelector('[data-field="age"]');
    const a = MW.ageNow(s);
    dd.textContent = MW.age(a);
    dd.classList.toggle("stale", a === null || a > parseFloat(document.body.dataset.staleAfterS));
  }

  function renderZones() {
    const zones = [...new Set([...cams.values()].map((s) => s.zone).filter(Boolean))].sort();
    const box = $("zones");
    const wanted = ["", ...zones];
    const have = [...box.children].map((b) => b.dataset.zone);
    if (have.join("\u0000") !== wanted.join("\u0000")) {
      box.replaceChildren(
        ...wanted.map((z) => {
          const b = document.createElement("button");
          b.type = "button";
          b.className = "chip";
          b.dataset.zone = z;
          b.textContent = z || "All zones";
          b.addEventListener("click", () => {
            zone = z;
            const url = new URL(location.href);
            if (z) url.searchParams.set("zone", z);
            else url.searchParams.delete("zone");
            history.replaceState(null, "", url);
            queueRender();
          });
          return b;
        }),
      );
    }
    box.hidden = zones.length === 0;
    for (const b of box.children) b.setAttribute("aria-pressed", String(b.dataset.zone === zone));
  }

  function render() {
    renderQueued = false;
    renderZones();
    const all = [...cams.values()];
    const shown = all.filter((s) => !zone || s.zone === zone).sort(compare);
    $("empty").hidden = !(systemSeen && all.length === 0);
    $("empty-zone").hidden = !(all.length > 0 && shown.length === 0);
    $("camera-count").textContent = all.length ? (zone ? `${shown.length} of ${all.length}` : String(all.length)) : "";
    renderSite(shown);
    renderAlerts();
    for (const a of document.querySelectorAll("#violations .v-cam")) {
      const s = cams.get(a.dataset.camera);
      if (s && s.name && a.textContent !== s.name) a.textContent = s.name;
    }
    const keep = new Set(shown.map((s) => s.camera));
    for (const [id, el] of cards) if (!keep.has(id)) el.remove();
    shown.forEach((s, i) => {
      const el = cards.get(s.camera) || makeCard(s.camera);
      updateCard(el, s);
      if (grid.children[i] !== el) grid.insertBefore(el, grid.children[i] || null);
    });
  }

  function queueRender() {
    if (!renderQueued) {
      renderQueued = true;
      requestAnimationFrame(render);
    }
  }

  function onCamera(s) {
    s._receivedAt = performance.now();
    cams.set(s.camera, s);
    queueRender();
  }

  // The summary strip adds up the cameras shown (all, or one zone), so it always agrees with the cards.
  function renderSite(shown) {
    const w = Object.fromEntries(MW.CLASSES.map((c) => [c.field, 0]));
    for (const s of shown) for (const k of Object.keys(w)) w[k] += s.window[k] || 0;
    const p = MW.people(w);
    const compliance = p ? MW.masked(w) / p : null;
    MW.setTone(document.querySelector(".site"), MW.tone(compliance));
    $("site-title").textContent = zone ? `${zone} compliance` : "Site compliance";
    $("site-pct").textContent = MW.pct(compliance);
    $("site-sub").textContent =
      p > 0
        ? `${MW.num(shown.reduce((n, s) => n + MW.persons(s), 0))} people · ${MW.num(p)} faces seen · ${MW.num(MW.masked(w))} masked`
        : shown.length
          ? "No people in the window"
          : systemSeen
            ? "No cameras yet"
            : "waiting for data";
    MW.fillBar($("site-bar"), w);
    for (const c of MW.CLASSES) $("site-" + c.swatch).textContent = MW.num(w[c.field]);
    const online = shown.filter((s) => ["online", "no people"].includes(MW.status(s))).length;
    $("stat-cameras").textContent = shown.length ? `${online} / ${shown.length}` : "—";
  }

  // The site header's alert strip, the alert list beside the cards, and the hint when nothing counts frames.
  function renderAlerts() {
    // the site's own alert first, then the cameras' newest first
    const active = [...alerts.values()].sort(
      (a, b) => (a.scope === "site" ? -1 : 0) - (b.scope === "site" ? -1 : 0) || b.started_ms - a.started_ms,
    );
    const site = alerts.get("site");
    const cameras = active.filter((a) => a.scope === "camera");
    const names = cameras.map((a) => (cams.get(a.camera) || {}).name || a.name || a.camera);
    const strip = $("site-alert");
    strip.hidden = active.length === 0;
    strip.classList.toggle("camera-only", !site);
    const parts = [];
    if (site) parts.push("Site compliance " + MW.alertLine(site));
    if (cameras.length) parts.push(`${cameras.length} camera${cameras.length > 1 ? "s" : ""} alerting: ${names.join(", ")}`);
    $("site-alert-text").textContent = parts.join(" · ");
    strip.title = site ? MW.alertTitle(site) : "";

    $("alert-count").textContent = active.length ? String(active.length) : "";
    $("alerts-empty").hidden = active.length > 0;
    const list = $("alerts");
    list.replaceChildren(
      ...active.map((a) => {
        const li = document.createElement("li");
        li.dataset.subject = a.scope === "site" ? "site" : "camera:" + a.camera;
        li.title = MW.alertTitle(a);
        const name = document.createElement(a.scope === "site" ? "b" : "a");
        name.className = "a-name";
        name.textContent = a.scope === "site" ? "Whole site" : (cams.get(a.camera) || {}).name || a.name || a.camera;
        if (a.scope !== "site") name.href = "/cameras/" + encodeURIComponent(a.camera);
        const what = document.createElement("span");
        what.className = "a-what";
        what.textContent = MW.alertLine(a);
        li.append(name, what);
        return li;
      }),
    );

    const note = $("site-note");
    const idle = systemSeen && cams.size > 0 && workers !== null && workers.length === 0;
    note.hidden = !idle;
    note.innerHTML = idle
      ? "No worker is counting frames, so the figures stand still: start one with <code>python -m worker</code> " +
        "(several for more cameras), or run everything with <code>maskwatch up</code>."
      : "";
  }

  function onAlert(ev) {
    const subject = ev.scope === "site" ? "site" : "camera:" + ev.camera;
    if (ev.state === "start") alerts.set(subject, ev);
    else alerts.delete(subject);
    queueRender();
  }

  function onSystem(sys) {
    systemSeen = true;
    if (sys.cameras && sys.cameras.ids) {
      // the site's cameras as Redis lists them: a retired camera's card goes
      const ids = new Set(sys.cameras.ids);
      for (const id of [...cams.keys()]) if (!ids.has(id)) cams.delete(id);
      queueRender();
    }
    workers = sys.workers;
    if (sys.alerts) {
      // the authoritative set, as Redis holds it: corrects anything missed while disconnected
      alerts.clear();
      for (const a of sys.alerts.active) alerts.set(a.scope === "site" ? "site" : "camera:" + a.camera, a);
    }
    const fps = sys.workers.map((w) => w.fps).filter((v) => typeof v === "number");
    $("stat-workers").textContent = sys.workers.length
      ? `${sys.workers.length}` + (fps.length ? ` · ${fps.reduce((a, b) => a + b, 0).toFixed(1)} fps` : "")
      : "none";
    const degraded = sys.workers.filter((w) => w.status && w.status !== "ok");
    if (degraded.length) $("stat-workers").textContent += ` · ${degraded.length} degraded`;
    $("stat-workers").classList.toggle("degraded", degraded.length > 0 || sys.workers.length === 0);
    $("stat-workers").title = sys.workers
      .map((w) => `${w.id}: ${w.status || "?"}${w.reason ? " (" + w.reason + ")" : ""}, fps ${w.fps ?? "—"}, lag ${w.lag ?? "—"}`)
      .join("\n");
    $("stat-throughput").textContent = sys.throughput_fps === null ? "—" : `${sys.throughput_fps.toFixed(1)} frames/s`;
    $("stat-lag").textContent = sys.lag === null ? "—" : MW.num(sys.lag);
    queueRender();
  }

  // One line per violation episode (one person): an episode's later updates (it goes on, it closes) change
  // its line in place and move it to the top.
  function episodeText(v) {
    const secs = Math.round(v.duration_s || 0);
    return v.state === "open" ? `ongoing ${secs} s` : `${secs} s`;
  }

  function onViolation(v, fresh) {
    const list = $("violations");
    let li = [...list.children].find((el) => el.dataset.episode === `${v.camera}|${v.id}`);
    if (!li) {
      li = document.createElement("li");
      li.dataset.episode = `${v.camera}|${v.id}`;
      const sw = document.createElement("i");
      sw.className = "sw";
      const cam = document.createElement("a");
      cam.className = "v-cam";
      cam.href = "/cameras/" + encodeURIComponent(v.camera);
      cam.dataset.camera = v.camera;
      cam.textContent = (cams.get(v.camera) || {}).name || v.camera;
      const t = document.createElement("span");
      t.className = "v-time";
      const what = document.createElement("span");
      what.className = "v-what";
      const label = document.createElement("span");
      label.className = "v-label";
      const dur = document.createElement("span");
      dur.className = "v-count v-duration";
      what.append(label, dur);
      li.append(sw, cam, t, what);
    }
    li.dataset.state = v.state || "";
    li.querySelector(".sw").className = "sw " + (MW.SWATCH[v.class] || "without");
    li.querySelector(".v-time").textContent = v.ts_ms ? MW.time(v.ts_ms) : "";
    li.querySelector(".v-label").textContent = MW.LABELS[v.class] || v.class;
    li.querySelector(".v-duration").textContent = episodeText(v);
    if (list.firstElementChild !== li) list.prepend(li);
    if (fresh) {
      li.classList.remove("fresh");
      void li.offsetWidth; // restart the highlight
      li.classList.add("fresh");
    }
    while (list.children.length > 40) list.lastElementChild.remove();
    $("violations-empty").hidden = true;
  }

  $("sort").addEventListener("change", (e) => {
    sort = e.target.value;
    queueRender();
  });
  setInterval(() => {
    for (const [id, el] of cards) {
      const s = cams.get(id);
      if (!s) continue;
      updateAge(el, s);
      const pill = el.querySelector(".pill");
      const st = MW.status(s);
      if (pill.dataset.status !== st) {
        pill.dataset.status = st;
        pill.textContent = st;
        el.classList.toggle("is-offline", st === "offline" || st === "ended");
      }
    }
  }, 1000);

  // The feed starts with what Redis already holds, then follows violation events (an episode's line is
  // updated in place, so one fetched and pushed while the page loaded is still shown once).
  fetch("/api/violations?limit=15")
    .then((r) => (r.ok ? r.json() : []))
    .then((rows) => rows.reverse().forEach((v) => onViolation(v, false)));

  function onPushedViolation(v) {
    onViolation(v, true);
  }

  const on = MW.EVENTS;
  MW.live({ [on.camera]: onCamera, [on.system]: onSystem, [on.violation]: onPushedViolation, [on.alert]: onAlert });
})();
