/* Alert report: GET /report (the audit store's report), drawn as CSS bars and a table. */
"use strict";

(function () {
  var el = BC.el;
  var status = document.getElementById("status");
  var problem = document.getElementById("auth-problem");
  var chart = document.getElementById("chart");
  var body = document.getElementById("report-body");
  var token = BC.tokenField("token");
  var needsToken = !!document.getElementById("auth-api");

  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }

  function bar(kind, value, max) {
    var pct = max ? Math.max(value ? 1 : 0, Math.round(value * 100 / max)) : 0;
    var fill = el("span", { className: "bar " + kind });
    fill.style.width = pct + "%";  /* CSSOM, allowed by the page's style-src 'self' policy */
    return el("div", { className: "bar-row" }, [
      el("span", { className: "bar-label", text: kind }),
      el("span", { className: "bar-track" }, [fill]),
      el("span", { className: "bar-value num", text: String(value) })
    ]);
  }

  /* The clinicians' own words (overrideReason.userComment), as text, never as markup. */
  function comments(list) {
    if (!list.length) { return el("td", { className: "comments", text: "-" }); }
    return el("td", { className: "comments" }, [el("ul", {}, list.map(function (c) {
      return el("li", {}, [el("q", { text: c.comment }),
        el("span", { className: "muted", text: " (" + (c.display || "no reason given") + ")" })]);
    }))]);
  }

  function draw(report) {
    clear(chart);
    clear(body);
    var rows = report.rules || [];
    if (!rows.length) {
      chart.appendChild(el("p", { className: "note", text: "No alerts recorded yet: try an order first." }));
      body.appendChild(el("tr", {}, [el("td", { colspan: "7", text: "No alerts recorded yet." })]));
      return;
    }
    var max = 0;
    rows.forEach(function (r) { max = Math.max(max, r.fired, r.accepted, r.overridden); });
    rows.forEach(function (r) {
      var label = r.rule + ": fired " + r.fired + ", accepted " + r.accepted + ", overridden " + r.overridden;
      chart.appendChild(el("figure", { className: "bars", "data-rule": r.rule, "aria-label": label, role: "img" }, [
        el("figcaption", {}, [el("code", { text: r.rule }), " " + r.title]),
        bar("fired", r.fired, max), bar("accepted", r.accepted, max), bar("overridden", r.overridden, max)
      ]));
      var reasons = r.overrideReasons.map(function (x) { return x.display + " (" + x.count + ")"; }).join("; ");
      body.appendChild(el("tr", { "data-rule": r.rule }, [
        el("th", { scope: "row" }, [
          el("a", { href: "/rules#rule-" + encodeURIComponent(r.rule) }, [el("code", { text: r.rule })]),
          el("br"), el("span", { className: "muted", text: r.title })]),
        el("td", { className: "num fired", text: String(r.fired) }),
        el("td", { className: "num accepted", text: String(r.accepted) }),
        el("td", { className: "num overridden", text: String(r.overridden) }),
        el("td", { text: reasons || "-" }),
        comments(r.overrideComments || []),
        el("td", { className: "num", text: r.medianLatencyMs === null ? "-" : String(Math.round(r.medianLatencyMs * 10) / 10) })
      ]));
    });
  }

  function load() {
    BC.show(problem, "");
    if (needsToken && !token()) {
      status.textContent = "Not loaded.";
      BC.show(problem, "Authentication is on (API_REQUIRE_AUTH) and this page has no credentials: " +
        "give a bearer token in the Authentication box above, then choose Refresh.");
      return;
    }
    status.textContent = "Loading the report\u2026";
    BC.call("GET", "/report", token()).then(function (resp) {
      if (resp.status === 401 || resp.status === 403) {
        status.textContent = "Not loaded.";
        BC.show(problem, "The service refused the token (" + resp.status + "): " + (BC.outcomeText(resp.body) || ""));
        return;
      }
      if (resp.status !== 200 || !resp.body) {
        status.textContent = "Not loaded.";
        BC.show(problem, "The service answered " + resp.status + ": " + (BC.outcomeText(resp.body) || ""));
        return;
      }
      draw(resp.body);
      status.textContent = "Report for knowledge " + resp.body.knowledgeVersion + ", " +
        (resp.body.rules || []).length + " rules with recorded alerts, as of " + resp.body.generated + ".";
      status.setAttribute("data-state", "done");
    });
  }

  document.getElementById("refresh").addEventListener("click", load);
  load();
}());
