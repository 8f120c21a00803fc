// Shared by the dashboard pages: formatting (in the site's time zone), colour thresholds, camera status, alerts
// and the /live connection.
"use strict";

const MW = (() => {
  const cfg = document.body.dataset;
  // The live namespace and event names, the windows and the classes, as the server names them (dashboard/pages.py).
  const NAMES = JSON.parse(document.getElementById("mw-names").textContent);
  const EVENTS = NAMES.events;
  const WINDOWS = NAMES.windows;
  const CLASSES = NAMES.classes; // [{field, label, swatch, violation}] in the order the pages list them
  const GOOD = parseFloat(cfg.good);
  const WARN = parseFloat(cfg.warn);
  const STALE_AFTER_S = parseFloat(cfg.staleAfterS);
  const WINDOW_MINUTES = parseInt(cfg.windowMinutes, 10);
  const ALERTING = cfg.alerting === "on";
  const ALERT_RULE = cfg.alertRule || "";
  // The site file's time zone; undefined (the browser's own) without a site file or when this browser lacks it.
  const TIMEZONE = (() => {
    if (!cfg.timezone) return undefined;
    try {
      new Intl.DateTimeFormat("en-US", { timeZone: cfg.timezone });
      return cfg.timezone;
    } catch (e) {
      return undefined;
    }
  })();

  function tone(compliance) {
    if (compliance === null || compliance === undefined) return "none";
    if (compliance >= GOOD) return "good";
    if (compliance >= WARN) return "warn";
    return "bad";
  }

  function setTone(el, t) {
    el.classList.remove("good", "warn", "bad", "none");
    el.classList.add(t);
  }

  function pct(compliance) {
    if (compliance === null || compliance === undefined) return "—";
    const v = compliance * 100;
    let text = v.toFixed(1);
    if (text === "100.0" && v < 100) text = "99.9"; // never round a miss up to perfect
    return text.replace(/\.0$/, "") + "%";
  }

  // The big figure: a percentage, or why there is none.
  function complianceText(s) {
    if (s.compliance !== null && s.compliance !== undefined) return pct(s.compliance);
    return (s.window.frames || 0) > 0 ? "No people in the window" : "No frames in the window";
  }

  // Different people in the window when the worker tracks them, else the faces counted.
  function persons(s) {
    return s.persons && typeof s.persons.persons === "number" ? s.persons.persons : people(s.window);
  }

  const WARNINGS = { faces_too_small: "Faces too small for reliable verdicts — move the camera closer or zoom in" };

  function showWarnings(el, s) {
    const text = (s.warnings || []).map((w) => WARNINGS[w] || w.replace(/_/g, " "));
    el.textContent = text.join(" · ");
    el.hidden = text.length === 0;
  }

  // Why a camera that does not send is down: the producer's last error, shown while it is not online.
  function showError(el, s) {
    const down = ["offline", "reconnecting"].includes(status(s));
    el.textContent = down && s.last_error ? s.last_error : "";
    el.hidden = !el.textContent;
  }

  function num(n) {
    return n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US");
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 1) return "now";
    if (seconds < 60) return Math.floor(seconds) + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min";
    if (seconds < 86400) return Math.floor(seconds / 3600) + " h";
    return Math.floor(seconds / 86400) + " d";
  }

  const sum = (w, classes) => classes.reduce((n, c) => n + (w[c.field] || 0), 0);

  // Faces with a verdict in counts `w`; the masked ones; the violators (no mask, or worn incorrectly).
  function people(w) {
    return sum(w, CLASSES);
  }

  function masked(w) {
    return sum(w, CLASSES.filter((c) => !c.violation));
  }

  function violators(w) {
    return sum(w, CLASSES.filter((c) => c.violation));
  }

  // Age of a summary's newest frame now, counted from when the browser received it (immune to clock skew).
  function ageNow(s) {
    if (s.data_age_s === null || s.data_age_s === undefined) return null;
    return s.data_age_s + (performance.now() - s._receivedAt) / 1000;
  }

  // online / reconnecting / offline / ended / no people, from the producer's status and how fresh the counts are.
  function status(s) {
    const a = ageNow(s);
    if (["offline", "reconnecting", "ended", "retired"].includes(s.status)) return s.status;
    if (a === null || a > STALE_AFTER_S) return "offline";
    if (people(s.window) === 0) return "no people";
    return "online";
  }

  function fillBar(bar, w) {
    const total = people(w);
    const part = (n) => (total ? (100 * n) / total : 0) + "%";
    for (const c of CLASSES) bar.querySelector("." + c.swatch).style.width = part(w[c.field] || 0);
  }

  // Clock times in the site's time zone, 24-hour: what an operator compares with the site's own clocks.
  const TIME_FMT = new Intl.DateTimeFormat([], {
    hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZone: TIMEZONE,
  });
  const SHORT_FMT = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZone: TIMEZONE });
  const DAY_FMT = new Intl.DateTimeFormat([], { day: "numeric", month: "short", timeZone: TIMEZONE });

  function time(ms) {
    return TIME_FMT.format(new Date(ms));
  }

  // "14:02", or "3 Jun 14:02" when that was not within the last day.
  function since(ms) {
    const d = new Date(ms);
    return (Date.now() - ms > 86_400_000 ? DAY_FMT.format(d) + " " : "") + SHORT_FMT.format(d);
  }

  function duration(seconds) {
    if (seconds < 60) return Math.max(0, Math.round(seconds)) + " s";
    if (seconds < 3600) return Math.round(seconds / 60) + " min";
    const h = Math.floor(seconds / 3600);
    const m = Math.round((seconds % 3600) / 60);
    return h + " h" + (m ? " " + m + " min" : "");
  }

  // One line about an alert in progress (its start event).
  function alertLine(a) {
    return `${pct(a.compliance)} with ${a.people} people, below ${pct(a.compliance_below)} since ${since(a.started_ms)}`;
  }

  function alertTitle(a) {
    return (
      `${a.scope === "site" ? "Site" : a.name}: compliance below ${pct(a.compliance_below)} for ${a.for_s} s ` +
      `with at least ${a.min_people} people (last ${a.window_minutes} min); ends at or above ${pct(a.clear_above)}.`
    );
  }

  const LABELS = Object.fromEntries(CLASSES.map((c) => [c.field, c.label]));
  const SWATCH = Object.fromEntries(CLASSES.map((c) => [c.field, c.swatch]));

  // Connects to the live namespace and shows the connection state in the top bar; `handlers` by event name.
  function live(handlers) {
    const conn = document.getElementById("conn");
    const show = (state, text) => {
      conn.dataset.state = state;
      conn.querySelector(".conn-text").textContent = text;
    };
    if (typeof io === "undefined") {
      show("denied", "Live updates off");
      return null;
    }
    const socket = io(NAMES.namespace);
    socket.on("connect", () => show("live", "Live"));
    socket.on("disconnect", () => show("reconnecting", "Reconnecting…"));
    socket.on("connect_error", () => {
      if (socket.active) show("reconnecting", "Reconnecting…");
      else show("denied", "Not authorised — log in");
    });
    for (const [event, fn] of Object.entries(handlers)) socket.on(event, fn);
    return socket;
  }

  return {
    tone, setTone, pct, complianceText, persons, showWarnings, showError, num, age, ageNow, status, people, masked, violators,
    fillBar, time, since, duration, alertLine, alertTitle, live, EVENTS, WINDOWS, CLASSES, LABELS, SWATCH, WINDOW_MINUTES,
    TIMEZONE, ALERTING, ALERT_RULE,
  };
})();
