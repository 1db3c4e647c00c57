/* The loop page: what the server learned. Reads health (the live adapter and its post-deploy window),
 * v1/loop/night (the last night), v1/records?failed=true (failures waiting for tonight) and
 * v1/loop/adapters (every version, its state, losses, loss plot and what it learned). Every value is
 * inserted as text, never as HTML. */
"use strict";

(() => {
  const { el, when } = Council;
  const STAGES = ["preflight", "harvest", "train", "deploy", "cleanup", "metrics"];
  const EXIT = { 0: "ok", 1: "failed", 2: "bad arguments", 3: "nothing to do", 4: "locked by another run" };
  const STATE = { current: "live", previous: "previous", deployed: "deployed", failed: "failed", new: "not deployed" };
  const WHY = { correction: "corrected", thumbs_down: "thumbs down", low_rating: "low rating",
                low_confidence: "low confidence" };
  let plots = []; // object URLs of the loss plots shown, released on refresh

  const num = (v, digits = 4) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(digits)) : "—");
  const pct = (v) => (typeof v === "number" ? Math.round(v * 100) + "%" : "—");
  const ms = (v) => (typeof v === "number" ? Math.round(v) + " ms" : "—");
  const secs = (v) => (typeof v === "number" ? v.toFixed(1) + " s" : "—");
  const badge = (text, kind) => el("span", { class: "badge " + (kind || text) }, text);

  function show(id, ...content) {
    document.querySelector("#" + id + " .body").replaceChildren(...content.flat().filter(Boolean));
  }

  function failed(id, err) {
    show(id, el("p", { class: "error", role: "alert" }, "Could not load this: " + err.message));
  }

  /* A definition list of [label, value] pairs, skipping values that are null or undefined. */
  function facts(pairs) {
    return el("dl", { class: "facts" }, pairs.filter(([, v]) => v !== null && v !== undefined)
      .map(([label, value]) => [el("dt", {}, label), el("dd", {}, value)]));
  }

  function learnedList(items) {
    if (!items || !items.length) return el("p", { class: "muted" }, "Nothing new was learned.");
    return el("ol", { class: "learned" }, items.map((item) => el("li", {},
      el("span", { class: "q" }, item.question), el("span", { class: "arrow", "aria-hidden": "true" }, " → "),
      el("span", { class: "a" }, item.answer))));
  }

  async function live() {
    let health;
    try {
      health = await (await fetch("health")).json();
    } catch (err) {
      return failed("live", err);
    }
    if (health.status === "starting") return show("live", el("p", { class: "muted" }, "The server is loading its models…"));
    if (health.status === "failed") return show("live", el("p", { class: "error" }, "The server could not start: " + health.error));
    const w = health.window || {};
    const served = w.served || {};
    show("live",
      el("p", { class: "lead" }, "Serving ", health.adapter ? el("code", { class: "live-adapter" }, health.adapter)
        : el("strong", { class: "live-adapter" }, "the base model"),
        health.adapter_changed_at ? " since " + when(health.adapter_changed_at) : ""),
      health.adapter_error ? el("p", { class: "error" }, "An adapter was refused: " + health.adapter_error) : null,
      el("h3", {}, "Post-deploy window"),
      facts([["window since", when(w.since)],
             [w.adapter ? "answered by the adapter" : "requests", num(w.requests)],
             ["their success rate", pct(w.success_rate)], ["their p95 latency", ms(w.p95_latency_ms)],
             ["all requests served", num(served.requests)], ["success rate of all", pct(served.success_rate)]]),
      el("p", { class: "muted small" }, "Base model ", (health.base_model || {}).id || "—", " · ",
         num((health.memory || {}).records), " exchanges in memory"));
  }

  function stageTable(n) {
    const names = [...new Set([...STAGES, ...Object.keys(n.stages || {}), ...Object.keys(n.seconds || {})])]
      .filter((s) => s in (n.stages || {}) || s in (n.seconds || {}));
    return el("table", { class: "stages" },
      el("thead", {}, el("tr", {}, el("th", {}, "stage"), el("th", {}, "result"), el("th", { class: "num" }, "time"))),
      el("tbody", {}, names.map((s) => {
        const code = (n.stages || {})[s];
        return el("tr", {}, el("td", {}, s),
          el("td", {}, code === undefined ? "—" : badge(EXIT[code] || "exit " + code, code === 0 ? "ok" : code === 3 ? "idle" : "failed")),
          el("td", { class: "num" }, secs((n.seconds || {})[s])));
      })));
  }

  function harvestPart(h) {
    if (!h) return el("p", { class: "muted" }, "No harvest has run yet.");
    return [
      h.in_night ? null : el("p", { class: "muted small" }, "From a harvest run outside this night, finished " + when(h.finished_at) + "."),
      facts([["failures found", num(h.found)], ["after collapsing near-duplicates", num(h.selected)],
             ["kept for training", num(h.kept)], ["of them corrections", num(h.kept_corrections)],
             ["paraphrases / statements", num(h.paraphrases) + " / " + num(h.statements)],
             ["held out as probes", num(h.held_out)], ["mean quality", num(h.mean_quality, 2)],
             ["why it stopped", h.failure || null]])];
  }

  function probeRows(probes) {
    const before = ((probes.baseline || {}).cases || []);
    const after = ((probes.candidate || {}).cases || []);
    if (!after.length) return null;
    return el("details", {}, el("summary", {}, "The in-scope probes, before and after"),
      el("table", { class: "probes" },
        el("thead", {}, el("tr", {}, ["question", "expected", "before", "after"].map((h) => el("th", {}, h)))),
        el("tbody", {}, after.map((c, i) => el("tr", {}, el("td", {}, c.question), el("td", {}, c.expected),
          el("td", { class: (before[i] || {}).right ? "right" : "wrong" }, (before[i] || {}).answer || "—"),
          el("td", { class: c.right ? "right" : "wrong" }, c.answer))))));
  }

  function deployPart(d) {
    if (!d) return el("p", { class: "muted" }, "No deploy has run yet.");
    const canary = d.canary || {};
    const probes = d.probes || {};
    const score = (side) => (side ? side.right + "/" + side.total : "—");
    const evaluation = d.eval || {};
    const monitor = d.monitor || {};
    return [
      d.in_night ? null : el("p", { class: "muted small" }, "From a deploy run outside this night, started " + when(d.started_at) + "."),
      el("p", {}, badge(d.decision || "unknown", d.decision === "deployed" ? "ok" : "failed"), " ",
         d.version ? el("code", {}, d.version) : null, " ", d.reason || ""),
      facts([["canary", canary.total !== undefined ? num(canary.passed) + "/" + num(canary.total) + " passed"
                + (canary.failed && canary.failed.length ? " (failed: " + canary.failed.join(", ") + ")" : "") : null],
             ["in-scope probes", probes.candidate ? score(probes.baseline) + " before → " + score(probes.candidate) + " after"
                : probes.skipped || null],
             ["validation loss", evaluation.candidate_loss !== undefined
                ? num(evaluation.baseline_loss) + " → " + num(evaluation.candidate_loss) : evaluation.skipped || null],
             ["after the swap", monitor.decision ? monitor.decision
                + (monitor.reason && monitor.reason !== d.reason ? ": " + monitor.reason : "") : null],
             ["swapped at", d.swap ? when(d.swap.at) : null]]),
      probeRows(probes)];
  }

  function rollbackPart(r) {
    if (!r) return null;
    return [el("h3", {}, "Last rollback"),
      el("p", {}, badge(r.decision || "unknown", r.decision === "rolled_back" ? "failed" : "idle"), " ",
         (r.version || "base model") + " → " + (r.target || "base model"), " · ", r.reason || "", " · ", when(r.finished_at))];
  }

  async function night() {
    let data;
    try {
      data = await Council.json("v1/loop/night");
    } catch (err) {
      return failed("night", err);
    }
    const n = data.night;
    const head = n ? [
      el("p", { class: "lead" }, badge(n.result || "unknown", n.result === "improved" ? "ok" : n.result === "failed" ? "failed" : "idle"),
         " ", n.reason || ""),
      el("p", { class: "muted small" }, "Started " + when(n.started_at) + ", finished " + when(n.finished_at)
         + (typeof n.seconds_total === "number" ? " (" + secs(n.seconds_total) + ")" : "")),
      stageTable(n),
      (n.errors || []).length ? el("ul", { class: "errors" }, n.errors.map((e) => el("li", { class: "error" },
        e.stage + ": " + e.type + ": " + e.message + (e.log ? " (log: " + e.log + ")" : "")))) : null,
      Object.keys(n.pending || {}).length ? facts(Object.entries(n.pending).map(([k, v]) => ["pending " + k, String(v)])) : null,
    ] : [el("p", { class: "muted" }, "No night has run yet: logs/nightly_summary.json appears after the first "
             + "council nightly. The parts below come from stages run by hand.")];
    const trained = data.trained;
    show("night", head,
      el("h3", {}, "Failures harvested"), harvestPart(data.harvest),
      el("h3", {}, "What it learned", trained ? [" (adapter ", el("code", {}, trained.version), ")"] : null),
      el("div", { class: "night-learned" }, learnedList(data.learned)),
      el("h3", {}, "Deploy"), deployPart(data.deploy),
      rollbackPart(data.rollback));
  }

  async function waiting() {
    let records;
    try {
      records = await Council.json("v1/records?failed=true&limit=20");
    } catch (err) {
      return failed("waiting", err);
    }
    const open = (records.data || []).filter((r) => !r.harvested_at);
    if (!open.length) return show("waiting", el("p", { class: "muted" }, "No failures are waiting: nothing new to learn tonight yet."));
    show("waiting", el("ul", { class: "records" }, open.map((r) => {
      const fb = r.feedback || {};
      return el("li", {},
        el("p", { class: "q" }, r.query),
        el("p", { class: "small" }, badge(WHY[r.failure_source] || r.failure_source || "failed", "failed"),
           " confidence " + num(r.confidence, 2) + " · " + when(r.created_at)),
        fb.correction ? el("p", { class: "a" }, "Correction: ", fb.correction)
          : el("p", { class: "muted small clamp" }, "Answer: ", r.answer));
    })), records.has_more ? el("p", { class: "muted small" }, "The newest 20 failures are shown.") : null);
  }

  function lossPlot(version) {
    const box = el("div", { class: "plot" }, el("span", { class: "muted small" }, "loading the loss plot…"));
    Council.call("v1/loop/adapters/" + encodeURIComponent(version) + "/loss.png").then(async (response) => {
      if (!response.ok) throw new Error(await Council.errorMessage(response));
      const url = URL.createObjectURL(await response.blob());
      plots.push(url);
      box.replaceChildren(el("img", { class: "loss", src: url, alt: "Training and validation loss of " + version }));
    }).catch((err) => box.replaceChildren(el("span", { class: "muted small" }, "no loss plot: " + err.message)));
    return box;
  }

  function adapterCard(a) {
    const examples = a.examples || {};
    const loss = a.loss || {};
    return el("article", { class: "adapter state-" + a.state, "data-version": a.version },
      el("header", {}, el("code", { class: "version" }, a.version), " ", badge(STATE[a.state] || a.state, a.state)),
      a.reason ? el("p", { class: a.state === "failed" ? "error" : "muted" }, "Why: " + a.reason) : null,
      a.tainted ? el("p", { class: "error tainted" }, badge("tainted", "failed"), " learned from "
        + num(a.tainted.records) + " erased record(s)" + (a.tainted.inherited ? " (through its parent)" : "")
        + " · since " + when(a.tainted.at) + " · " + (a.replaced_by ? "replaced by " + a.replaced_by
        : "erased questions kept out of its scope until a clean version replaces it")) : null,
      a.fresh_because ? el("p", { class: "muted small" }, "Trained from the base model: " + a.fresh_because) : null,
      a.problem ? el("p", { class: "error" }, a.problem) : null,
      facts([["created", when(a.created_at)], ["parent", a.parent || "base model"],
             ["examples trained", examples.train !== undefined ? num(examples.train)
                + (examples.rehearsal ? " (+" + examples.rehearsal + " rehearsal)" : "") : null],
             ["final train loss", num(loss.train)], ["final validation loss", num(loss.validation)],
             ["epochs", a.epochs_run !== undefined ? num(a.epochs_run) : null],
             ["training time", typeof a.duration_seconds === "number" ? secs(a.duration_seconds) : null]]),
      a.loss_png ? lossPlot(a.version) : null,
      (a.learned || []).length ? el("details", { open: a.live },
        el("summary", {}, "Learned " + a.learned.length + (a.learned.length === 1 ? " question" : " questions")),
        learnedList(a.learned)) : el("p", { class: "muted small" }, "No harvested questions recorded."));
  }

  async function adapters() {
    let data;
    try {
      data = await Council.json("v1/loop/adapters");
    } catch (err) {
      return failed("adapters", err);
    }
    plots.forEach((url) => URL.revokeObjectURL(url));
    plots = [];
    if (!(data.data || []).length) return show("adapters", el("p", { class: "muted" }, "No adapter has been trained yet: the base model answers."));
    show("adapters", el("div", { class: "adapter-list" }, data.data.map(adapterCard)));
  }

  function refresh() {
    return Promise.all([live(), night(), waiting(), adapters()]);
  }

  document.getElementById("refresh").addEventListener("click", refresh);
  refresh();
  setInterval(() => { if (!document.hidden) { live(); waiting(); } }, 30000);
})();
