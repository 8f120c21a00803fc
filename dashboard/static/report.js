// The Report page: a date range and a subject; opens the printable report (HTML) or downloads its CSV.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  function isoDay(ms) {
    return new Intl.DateTimeFormat("en-CA", { timeZone: MW.TIMEZONE, year: "numeric", month: "2-digit", day: "2-digit" })
      .format(new Date(ms));
  }

  function query(format) {
    const q = new URLSearchParams({ from: $("from").value, to: $("to").value, format });
    const subject = $("subject").value;
    if (subject) {
      const [k, v] = [subject.slice(0, subject.indexOf("=")), subject.slice(subject.indexOf("=") + 1)];
      q.set(k, v);
    }
    return "/api/report?" + q.toString();
  }

  const update = () => ($("csv-link").href = query("csv"));
  $("to").value = isoDay(Date.now());
  $("from").value = isoDay(Date.now() - 6 * 86400e3);
  for (const id of ["from", "to", "subject"]) $(id).addEventListener("change", update);
  update();
  $("report-form").addEventListener("submit", (e) => {
    e.preventDefault();
    location.href = query("html");
  });
  MW.live({});
})();
