// The image check page: POST /api/predict and show the annotated image and the faces found.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("check-form");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const minScore = data.get("min_score") || form.querySelector('input[name="min_score"]').defaultValue;
    data.delete("min_score");
    $("check-submit").disabled = true;
    $("check-error").hidden = true;
    try {
      const r = await fetch("/api/predict?min_score=" + encodeURIComponent(minScore), { method: "POST", body: data });
      const body = await r.json();
      if (!r.ok) {
        $("check-error").textContent = body.error + (body.detail ? ": " + body.detail : "");
        $("check-error").hidden = false;
        return;
      }
      $("check-img").src = "data:image/jpeg;base64," + body.annotated_jpeg_base64;
      const pct = $("check-pct");
      pct.textContent = body.compliance === null ? "No faces found" : MW.pct(body.compliance);
      MW.setTone($("check-out"), MW.tone(body.compliance));
      $("check-rows").replaceChildren(
        ...body.detections.map((d, i) => {
          const tr = document.createElement("tr");
          for (const text of [String(i + 1), MW.LABELS[d.label] || d.label, Math.round(d.score * 100) + "%"]) {
            const td = document.createElement("td");
            td.textContent = text;
            tr.append(td);
          }
          return tr;
        }),
      );
      $("check-out").hidden = false;
    } catch (err) {
      $("check-error").textContent = "Request failed: " + err;
      $("check-error").hidden = false;
    } finally {
      $("check-submit").disabled = false;
    }
  });
  MW.live({});
})();
