/* Pharmacist worklist: GET /worklist.json (filters, paging) and POST /worklist/{id}/resolve. */
"use strict";

(function () {
  var el = BC.el;
  var status = document.getElementById("status");
  var problem = document.getElementById("auth-problem");
  var body = document.getElementById("worklist-body");
  var form = document.getElementById("filters");
  var prev = document.getElementById("prev");
  var next = document.getElementById("next");
  var pageInfo = document.getElementById("page-info");
  var template = document.getElementById("resolve-template");
  var token = BC.tokenField("token");
  var needsToken = !!document.getElementById("auth-api");
  var page = 1;

  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }

  function when(text) {
    if (!text) { return "-"; }
    var d = new Date(text);
    if (isNaN(d.getTime())) { return text; }
    return d.toISOString().replace("T", " ").slice(0, 16) + " UTC";
  }

  function age(text) {
    var ms = Date.now() - new Date(text).getTime();
    if (isNaN(ms)) { return ""; }
    var h = ms / 3600000;
    if (h < 1) { return Math.max(0, Math.round(ms / 60000)) + " min"; }
    if (h < 48) { return Math.round(h) + " h"; }
    return Math.round(h / 24) + " days";
  }

  function query() {
    var params = [];
    var sev = Array.prototype.slice.call(form.querySelectorAll("input[name=severity]:checked"))
      .map(function (i) { return i.value; });
    params.push("severity=" + encodeURIComponent(sev.length ? sev.join(",") : "high,moderate"));
    var rule = document.getElementById("rule").value.trim();
    if (rule) { params.push("rule=" + encodeURIComponent(rule)); }
    var ageSel = document.getElementById("age").value;
    if (ageSel) {
      var parts = ageSel.split(":");
      params.push((parts[0] === "older" ? "older_than_h=" : "newer_than_h=") + parts[1]);
    }
    params.push("per_page=" + document.getElementById("per-page").value);
    params.push("page=" + page);
    return "/worklist.json?" + params.join("&");
  }

  function medication(m, order) {
    if (!m) { return [el("code", { text: order }), el("br"), el("span", { className: "muted", text: "order not read yet" })]; }
    var daily = m.dailyMg === null || m.dailyMg === undefined ? "daily dose unknown" :
      (m.route === "intrathecal" ? Math.round(m.dailyMg * 1000 * 100) / 100 + " micrograms/day" : m.dailyMg + " mg/day");
    return [el("strong", { text: m.product || "unnamed medicine" }), el("br"),
      el("span", { text: (m.dose || m.dosageText || "dose not readable") }), el("br"),
      el("span", { className: "daily", text: daily }), el("br"),
      el("code", { className: "muted", text: order })];
  }

  function trigger(t) {
    if (!t) { return el("td", { text: "-" }); }
    var what = t.resource ? t.resource + (t.version ? " (version " + t.version + ")" : "") : t.kind;
    return el("td", { className: "trigger" }, [el("code", { text: what }), el("br"),
      el("span", { className: "muted", text: (t.kind || "") + ", " + when(t.at) })]);
  }

  function resolveCell(entry) {
    var node = template.content.firstElementChild.cloneNode(true);
    node.setAttribute("data-finding", entry.finding);
    var msg = el("p", { className: "muted", role: "status" });
    node.appendChild(msg);
    node.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var outcome = node.querySelector("select[name=outcome]").value;
      var comment = node.querySelector("input[name=comment]").value;
      if (!outcome) { msg.textContent = "Choose an outcome first."; return; }
      node.querySelector("button").disabled = true;
      msg.textContent = "Resolving\u2026";
      BC.call("POST", "/worklist/" + encodeURIComponent(entry.finding) + "/resolve", token(),
              { outcome: outcome, comment: comment }).then(function (resp) {
        if (resp.status !== 200) {
          node.querySelector("button").disabled = false;
          msg.textContent = "Not resolved (" + resp.status + "): " + (BC.outcomeText(resp.body) || resp.text);
          return;
        }
        var r = resp.body.resolution || {};
        status.textContent = "Resolved " + entry.rule + " for " + entry.patient + ": " + r.display +
          (r.mitigationOnServer ? "; mitigation written to " + entry.detectedIssue :
            "; the mitigation is not on the FHIR server yet (retried by the worker)") + ".";
        status.setAttribute("data-state", "resolved");
        load(true);
      });
    });
    return el("td", {}, [node]);
  }

  function row(e) {
    var finding = [el("strong", { text: e.title || e.rule }),
      el("code", { className: "rule-id muted", text: e.rule }), el("p", { className: "summary", text: e.summary || "" })];
    if (e.reopened && e.resolution) {
      finding.push(el("span", { className: "reopened", text: "Raised again with new numbers after \u201c" +
        e.resolution.display + "\u201d on " + when(e.resolution.at) }));
    }
    var links = [el("code", { text: e.detectedIssue || "-" })];
    if (e.task) { links.push(" \u00b7 ", el("code", { text: e.task })); }
    finding.push(el("span", { className: "muted refs" }, links));
    return el("tr", { "data-finding": e.finding, "data-severity": e.severity }, [
      el("td", {}, [el("span", { className: "sev sev-" + e.severity, text: e.severity })]),
      el("td", {}, [el("code", { text: e.patient })]),
      el("td", { className: "order" }, medication(e.medication, e.order)),
      el("td", { className: "finding" }, finding),
      trigger(e.trigger),
      el("td", { className: "since" }, [el("span", { text: when(e.since) }), el("br"),
        el("span", { className: "muted", text: "open " + age(e.since) })]),
      resolveCell(e)
    ]);
  }

  function draw(data) {
    clear(body);
    if (!data.entries.length) {
      body.appendChild(el("tr", {}, [el("td", { colspan: "7", text: "Nothing open: no finding waits for a pharmacist." })]));
    }
    data.entries.forEach(function (e) { body.appendChild(row(e)); });
    var pages = Math.max(1, Math.ceil(data.total / data.perPage));
    pageInfo.textContent = "page " + data.page + " of " + pages;
    prev.disabled = data.page <= 1;
    next.disabled = data.page >= pages;
  }

  function load(keepStatus) {
    BC.show(problem, "");
    if (needsToken && !token()) {
      status.textContent = "Not loaded.";
      BC.show(problem, "Authentication is on (API_REQUIRE_AUTH) and this page has no credentials: " +
        "give a bearer token in the Authentication box above, then choose Show.");
      return;
    }
    if (!keepStatus) { status.textContent = "Loading the worklist\u2026"; }
    BC.call("GET", query(), token()).then(function (resp) {
      if (resp.status !== 200 || !resp.body) {
        status.textContent = "Not loaded.";
        BC.show(problem, "The service answered " + resp.status + ": " + (BC.outcomeText(resp.body) || resp.text));
        return;
      }
      draw(resp.body);
      if (!keepStatus) {
        status.textContent = resp.body.total + " open finding" + (resp.body.total === 1 ? "" : "s") + ".";
      }
      body.setAttribute("data-loaded", String(Date.now()));
    });
  }

  form.addEventListener("submit", function (ev) { ev.preventDefault(); page = 1; load(false); });
  prev.addEventListener("click", function () { page = Math.max(1, page - 1); load(false); });
  next.addEventListener("click", function () { page += 1; load(false); });
  load(false);
}());
