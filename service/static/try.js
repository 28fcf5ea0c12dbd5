/* "Try an order": build a draft baclofen MedicationRequest from the form, send it with the
   patient record to the service's public endpoints, and show the answer the way an EHR shows
   CDS Hooks cards. The clinical checking is all done by the service. */
"use strict";

(function () {
  var el = BC.el;
  var data = JSON.parse(document.getElementById("page-data").textContent);
  var UCUM = "http://unitsofmeasure.org";
  var SNOMED = "http://snomed.info/sct";
  var ROUTE_DISPLAY = { oral: "Oral route", gastrostomy: "Gastrostomy route",
                        intrathecal: "Intrathecal route" };
  var UNIT_WORDS = { "mg": "mg", "ug": "micrograms", "mL": "mL", "{tbl}": "tablet(s)" };
  var INDICATOR_WORDS = { critical: "Critical", warning: "Warning", info: "Info" };

  var form = document.getElementById("order-form");
  var f = {
    demo: document.getElementById("demo"),
    record: document.getElementById("record"),
    product: document.getElementById("product"),
    dose: document.getElementById("dose"),
    unit: document.getElementById("unit"),
    frequency: document.getElementById("frequency"),
    route: document.getElementById("route"),
    start: document.getElementById("start")
  };
  var out = {
    status: document.getElementById("status"),
    problem: document.getElementById("auth-problem"),
    cards: document.getElementById("cards"),
    notes: document.getElementById("notes"),
    raw: document.getElementById("raw")
  };
  var formNote = document.getElementById("form-note");
  var apiToken = BC.tokenField("token");
  var cdsToken = BC.tokenField("cds-token");
  var baseOrder = null;   /* the draft baclofen order of the record, kept as the form's base */

  function today() {
    var d = new Date();
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate());
  }
  f.start.value = today();

  /* --- reading the record ----------------------------------------------------------------- */

  function text(concept) {
    if (!concept) { return ""; }
    var parts = [concept.text || ""];
    (concept.coding || []).forEach(function (c) { parts.push(c.display || ""); });
    return parts.join(" ");
  }

  function isBaclofen(res) {
    if (!res || res.resourceType !== "MedicationRequest") { return false; }
    var concept = res.medicationCodeableConcept;
    var coded = concept && (concept.coding || []).some(function (c) {
      return c.system === data.rxnorm.system && c.code === data.rxnorm.code;
    });
    var named = /baclofen/i.test(text(concept)) ||
      /baclofen/i.test((res.medicationReference || {}).display || "");
    return coded || named;
  }

  /* The record as {patient, orders, context}; throws an Error with a message for people. */
  function readRecord(textValue) {
    var body;
    try { body = JSON.parse(textValue); } catch (e) {
      throw new Error("The patient record is not valid JSON: " + e.message);
    }
    if (!body || typeof body !== "object") { throw new Error("The patient record must be a JSON object."); }
    var resources = [];
    var orders = [];
    if (body.resourceType === "Bundle") {
      (body.entry || []).forEach(function (e) {
        if (e && e.resource && e.resource.resourceType &&
            !(e.search && e.search.mode === "outcome")) { resources.push(e.resource); }
      });
      resources.forEach(function (r) {
        if (r.resourceType === "MedicationRequest" && r.status === "draft") { orders.push(r); }
      });
    } else if (body.resourceType === "Parameters") {
      (body.parameter || []).forEach(function (p) {
        if (!p || !p.resource) { return; }
        if (p.name === "order") { orders.push(p.resource); }
        resources.push(p.resource);
      });
    } else {
      throw new Error("The patient record must be a FHIR Bundle or Parameters resource.");
    }
    var patients = resources.filter(function (r) { return r.resourceType === "Patient"; });
    if (patients.length !== 1) {
      throw new Error("The patient record must hold exactly one Patient (it holds " + patients.length + ").");
    }
    var context = resources.filter(function (r) {
      return r.resourceType !== "Patient" && orders.indexOf(r) < 0;
    });
    return { patient: patients[0], orders: orders, context: context };
  }

  /* --- the form <-> the draft order ------------------------------------------------------- */

  function setSelect(select, value, label) {
    var found = Array.prototype.some.call(select.options, function (o) { return o.value === value; });
    if (!found) { select.appendChild(el("option", { value: value, text: label || value })); }
    select.value = value;
  }

  function fillForm(order) {
    BC.show(formNote, "");
    var concept = order.medicationCodeableConcept || {};
    var product = concept.text || (order.medicationReference || {}).display;
    if (product) { setSelect(f.product, product); }
    var dosage = (order.dosageInstruction || [])[0] || {};
    var dr = (dosage.doseAndRate || [])[0] || {};
    var repeat = (dosage.timing || {}).repeat || {};
    if (dr.rateQuantity) {
      var unit = String(dr.rateQuantity.code || dr.rateQuantity.unit || "mg/d").split("/")[0];
      f.dose.value = dr.rateQuantity.value;
      setSelect(f.unit, unit, UNIT_WORDS[unit]);
      f.frequency.value = "continuous";
    } else if (dr.doseQuantity) {
      var u = dr.doseQuantity.code || dr.doseQuantity.unit || "mg";
      f.dose.value = dr.doseQuantity.value;
      setSelect(f.unit, u, UNIT_WORDS[u]);
      var perDay = null;
      if (repeat.frequency) {
        var days = { d: 1, h: 1 / 24, wk: 7, min: 1 / 1440 }[repeat.periodUnit || "d"] || 1;
        perDay = repeat.frequency / ((repeat.period || 1) * days);
      } else {
        (((dosage.timing || {}).code || {}).coding || []).forEach(function (c) {
          if (perDay === null && data.timingCodes[c.code] !== undefined) { perDay = data.timingCodes[c.code]; }
        });
      }
      if (perDay !== null) {
        var rounded = Math.round(perDay * 1000) / 1000;
        setSelect(f.frequency, String(rounded), rounded + " a day");
      } else {
        BC.show(formNote, "The order's schedule could not be put in the form: choose how often before checking.");
      }
    }
    var routeCodes = ((dosage.route || {}).coding || []).map(function (c) { return c.code; });
    Object.keys(data.routes).forEach(function (name) {
      if (routeCodes.indexOf(data.routes[name]) >= 0) { f.route.value = name; }
    });
    var start = (repeat.boundsPeriod || {}).start;
    if (start) { f.start.value = String(start).slice(0, 10); }
  }

  function number(value) {
    var n = Number(value);
    if (!isFinite(n) || n <= 0) { throw new Error("The dose must be a number above zero."); }
    return n;
  }

  function draftOrder(patientId) {
    var order = baseOrder ? JSON.parse(JSON.stringify(baseOrder)) : {
      resourceType: "MedicationRequest", id: "draft-baclofen", status: "draft", intent: "order"
    };
    order.status = "draft";
    order.intent = order.intent || "order";
    order.subject = { reference: "Patient/" + patientId };
    order.authoredOn = new Date().toISOString().replace(/\.\d+Z$/, "Z");
    delete order.medicationReference;
    order.medicationCodeableConcept = {
      coding: [{ system: data.rxnorm.system, code: data.rxnorm.code, display: "baclofen" }],
      text: f.product.value
    };
    var dose = number(f.dose.value);
    var unit = f.unit.value;
    var route = f.route.value;
    var repeat = {};
    if (!f.start.value) { throw new Error("Give the start date."); }
    repeat.boundsPeriod = { start: f.start.value };
    var dosage = {
      route: { coding: [{ system: SNOMED, code: data.routes[route], display: ROUTE_DISPLAY[route] }] },
      timing: { repeat: repeat }
    };
    var words = UNIT_WORDS[unit] || unit;
    if (f.frequency.value === "continuous") {
      dosage.text = dose + " " + words + " a day, continuous";
      dosage.doseAndRate = [{ rateQuantity: { value: dose, unit: unit + "/d", system: UCUM, code: unit + "/d" } }];
    } else {
      /* Timing.repeat.frequency is a whole number: 0.5 a day is once every 2 days */
      var perDay = Number(f.frequency.value);
      var days = 1;
      while (days < 30 && Math.abs(perDay * days - Math.round(perDay * days)) > 1e-9) { days += 1; }
      repeat.frequency = Math.max(1, Math.round(perDay * days));
      repeat.period = days;
      repeat.periodUnit = "d";
      dosage.text = dose + " " + words + " " + f.frequency.options[f.frequency.selectedIndex].text;
      dosage.doseAndRate = [{ doseQuantity: { value: dose, unit: unit === "{tbl}" ? "tablet" : unit, system: UCUM, code: unit } }];
    }
    order.dosageInstruction = [dosage];
    return order;
  }

  /* --- the calls -------------------------------------------------------------------------- */

  function ref(res) { return res.resourceType + "/" + res.id; }

  function codingMatches(res, codes) {
    var concept = res.code || {};
    return (concept.coding || []).some(function (c) {
      return codes.indexOf((c.system || "") + "|" + (c.code || "")) >= 0;
    });
  }

  /* The prefetch an EHR would send, from the service's own prefetch templates (the same ones
     GET /cds-services lists): each key gets the record's resources its query would find. */
  function prefetch(patient, context, order) {
    var result = {};
    var medications = context.filter(function (r) { return r.resourceType === "Medication"; });
    Object.keys(data.prefetch).forEach(function (key) {
      var template = data.prefetch[key];
      var type = template.split(/[?/]/)[0];
      if (type === "Patient") { result[key] = patient; return; }
      var query = template.split("?")[1] || "";
      var codes = null;
      var include = false;
      query.split("&").forEach(function (pair) {
        var kv = pair.split("=");
        if (kv[0] === "code") { codes = decodeURIComponent(kv[1]).split(","); }
        if (kv[0] === "_include") { include = true; }
      });
      var found = context.filter(function (r) {
        return r.resourceType === type && r !== order && (codes === null || codingMatches(r, codes));
      });
      if (include) { found = found.concat(medications); }
      result[key] = {
        resourceType: "Bundle", type: "searchset", total: found.length,
        entry: found.map(function (r) { return { fullUrl: r.id ? ref(r) : undefined, resource: r, search: { mode: r.resourceType === "Medication" ? "include" : "match" } }; })
      };
    });
    return result;
  }

  function uuid() {
    if (window.crypto && window.crypto.randomUUID) { return window.crypto.randomUUID(); }
    return "10000000-1000-4000-8000-100000000000".replace(/[018]/g, function (c) {
      return (c ^ (window.crypto.getRandomValues(new Uint8Array(1))[0] & (15 >> (c / 4)))).toString(16);
    });
  }

  function hookCall(record, order, others) {
    return {
      hook: "order-sign",
      hookInstance: uuid(),
      context: {
        userId: "Practitioner/web-page",
        patientId: record.patient.id,
        draftOrders: { resourceType: "Bundle", type: "collection",
                       entry: [order].concat(others).map(function (r) { return { resource: r }; }) }
      },
      prefetch: prefetch(record.patient, record.context, order)
    };
  }

  /* patient-view: no orders in the context; the record (with the form's order as an active
     order in place of the draft) is the prefetch, as an EHR sends it when the chart opens. */
  function chartCall(record, order) {
    var current = JSON.parse(JSON.stringify(order));
    current.status = "active";
    current.id = current.id || "web-active-baclofen";
    var context = record.context.filter(function (r) {
      return !(isBaclofen(r) && r.status === "draft");
    }).concat([current]);
    return {
      hook: "patient-view",
      hookInstance: uuid(),
      context: { userId: "Practitioner/web-page", patientId: record.patient.id },
      prefetch: prefetch(record.patient, context, null)
    };
  }

  function parameters(record, order, others) {
    var p = [{ name: "order", resource: order }];
    others.forEach(function (o) { p.push({ name: "order", resource: o }); });
    p.push({ name: "patient", resource: record.patient });
    record.context.forEach(function (r) { p.push({ name: "context", resource: r }); });
    return { resourceType: "Parameters", parameter: p };
  }

  /* --- showing the answer ----------------------------------------------------------------- */

  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }

  var cardService = data.service;   /* the service that answered the cards shown */

  function feedback(card, outcome, extra) {
    if (data.cdsJwt) { return Promise.resolve(null); }  /* feedback needs its own JWT then */
    var item = { card: card.uuid, outcome: outcome,
                 outcomeTimestamp: new Date().toISOString().replace(/\.\d+Z$/, "Z") };
    Object.keys(extra || {}).forEach(function (k) { item[k] = extra[k]; });
    return BC.call("POST", "/cds-services/" + cardService + "/feedback", "", { feedback: [item] });
  }

  function renderCard(card, index) {
    var indicator = card.indicator || "info";
    var topic = (card.source || {}).topic || {};
    var id = "card-" + index;
    var main = el("div", { className: "card-main" }, [
      el("p", { className: "indicator", text: INDICATOR_WORDS[indicator] || indicator }),
      el("h4", { className: "summary", id: id + "-summary", text: card.summary || "" })
    ]);
    main.appendChild(Markdown.render(card.detail || "", el("div", { className: "detail" })));
    var source = card.source || {};
    var sourceLine = el("p", { className: "source muted" }, ["Card from "]);
    if (source.url && /^https?:\/\//.test(source.url)) {
      sourceLine.appendChild(el("a", { href: source.url, rel: "noopener noreferrer", text: source.label || source.url }));
    } else {
      sourceLine.appendChild(document.createTextNode(source.label || ""));
    }
    /* the Epic style writes the code in letters and digits only, the rule id in display */
    var ruleId = data.ruleIds.indexOf(topic.code) >= 0 ? topic.code :
      data.ruleIds.indexOf(topic.display) >= 0 ? topic.display : null;
    if (topic.code) {
      sourceLine.appendChild(document.createTextNode(" \u00b7 rule "));
      var ruleCode = el("code", { text: ruleId || topic.code });
      sourceLine.appendChild(ruleId ?
        el("a", { href: "/rules#rule-" + encodeURIComponent(ruleId) }, [ruleCode]) : ruleCode);
    }
    main.appendChild(sourceLine);
    var actions = el("div", { className: "card-actions" });
    (card.suggestions || []).forEach(function (s) {
      /* a suggestion that only deletes the draft (the Epic style's second one) has nothing
         to put into the form */
      if (!(s.actions || []).some(function (a) { return a.type !== "delete"; })) { return; }
      var button = el("button", { type: "button", className: "suggestion", text: s.label });
      button.addEventListener("click", function () {
        var update = (s.actions || []).filter(function (a) {
          return (a.type === "update" || a.type === "create") && a.resource &&
            a.resource.resourceType === "MedicationRequest";
        })[0];
        if (!update) { return; }
        baseOrder = update.resource;
        fillForm(update.resource);
        feedback(card, "accepted", { acceptedSuggestions: [{ id: s.uuid }] }).then(function () {
          return check("Applied: " + s.label + ". Checked again.");
        }).then(function () {
          out.status.focus();  /* the button is gone with its card: keep the keyboard user's place */
        });
      });
      actions.appendChild(button);
    });
    if (card.overrideReasons && card.overrideReasons.length) {
      var selectId = id + "-reason";
      var select = el("select", { id: selectId });
      card.overrideReasons.forEach(function (r) {
        select.appendChild(el("option", { value: r.code, text: r.display || r.code }));
      });
      var override = el("button", { type: "button", className: "override", text: "Override" });
      var said = el("span", { className: "muted", role: "status" });
      var commentId = id + "-comment";
      var comment = el("input", { id: commentId, type: "text", className: "override-comment",
                                  maxlength: "500" });
      override.addEventListener("click", function () {
        var reason = card.overrideReasons[select.selectedIndex];
        var given = { reason: reason };
        if (comment.value.trim()) { given.userComment = comment.value.trim(); }
        feedback(card, "overridden", { overrideReason: given }).then(function (resp) {
          said.textContent = resp === null ? " Not sent: feedback needs a CDS Hooks JWT." :
            resp.status === 200 ? " Override recorded." : " The service answered " + resp.status + ".";
        });
      });
      actions.appendChild(el("span", { className: "override-box" }, [
        el("label", { "for": selectId, text: "Override reason" }), select,
        el("label", { "for": commentId, text: "Comment (optional)" }), comment, override, said]));
    }
    if (actions.childNodes.length) { main.appendChild(actions); }
    var ext = (card.extension || {})["baclofen-check.detectedIssue"];
    var raw = el("div", { className: "card-json" }, [
      el("p", { className: "muted", text: Array.isArray(ext) ? "DetectedIssues on this card" : "DetectedIssue" }),
      el("pre", { className: "json", tabindex: "0", text: ext ? JSON.stringify(ext, null, 2) : "(none)" })
    ]);
    return el("article", { className: "card card-" + indicator, "data-rule": ruleId || topic.code || "",
                           "aria-labelledby": id + "-summary" }, [main, raw]);
  }

  function showCards(resp, emptyText) {
    clear(out.cards);
    if (resp === null) {
      out.cards.appendChild(el("p", { className: "note", text:
        "Cards were not requested: CDS_REQUIRE_JWT is on and no CDS Hooks JWT was given." }));
      return;
    }
    if (resp.status === 401) {
      out.cards.appendChild(el("p", { className: "problem", text:
        "The CDS Hooks service refused the call (401): the JWT is missing, expired, already used or not for this endpoint." }));
      return;
    }
    if (resp.status !== 200 || !resp.body || !Array.isArray(resp.body.cards)) {
      out.cards.appendChild(el("p", { className: "problem", text:
        "The CDS Hooks service answered " + resp.status + ": " + (BC.outcomeText(resp.body) || resp.text.slice(0, 300)) }));
      return;
    }
    if (!resp.body.cards.length) {
      out.cards.appendChild(el("p", { className: "ok", id: "no-cards", text: emptyText || "No cards: checked, nothing found." }));
      return;
    }
    resp.body.cards.forEach(function (card, i) { out.cards.appendChild(renderCard(card, i)); });
  }

  function showCheck(resp) {
    clear(out.notes);
    if (resp === null) {
      out.notes.appendChild(el("li", { text: "Not requested: API_REQUIRE_AUTH is on and no bearer token was given." }));
      out.raw.textContent = "";
      return;
    }
    out.raw.textContent = resp.body ? JSON.stringify(resp.body, null, 2) : resp.text;
    if (resp.status === 401 || resp.status === 403) {
      out.notes.appendChild(el("li", { className: "problem", text:
        "The service refused the call (" + resp.status + "): " + (BC.outcomeText(resp.body) || "not allowed") }));
      return;
    }
    if (resp.status !== 200) {
      out.notes.appendChild(el("li", { className: "problem", text:
        "The service answered " + resp.status + ": " + (BC.outcomeText(resp.body) || resp.text.slice(0, 300)) }));
      return;
    }
    var issues = 0;
    (resp.body.entry || []).forEach(function (e) {
      var r = e.resource || {};
      if (r.resourceType === "DetectedIssue") { issues += 1; }
      if (r.resourceType === "OperationOutcome") {
        (r.issue || []).forEach(function (i) {
          out.notes.appendChild(el("li", { text: i.severity + ": " + (i.diagnostics || (i.details || {}).text || i.code) }));
        });
      }
    });
    out.notes.insertBefore(el("li", { text: issues + " DetectedIssue" + (issues === 1 ? "" : "s") + " in the result Bundle." }), out.notes.firstChild);
  }

  /* The record and the form's draft order, or null when they cannot be read (said). */
  function readForm() {
    BC.show(out.problem, "");
    out.status.removeAttribute("data-state");
    try {
      var record = readRecord(f.record.value);
      if (!record.patient.id) { record.patient.id = "web-patient"; }
      var bac = record.orders.filter(isBaclofen);
      if (!baseOrder && bac.length) { baseOrder = bac[0]; }
      return { record: record, order: draftOrder(record.patient.id) };
    } catch (e) {
      BC.show(out.problem, e.message);
      out.status.textContent = "Not checked.";
      return null;
    }
  }

  function check(doneMessage) {
    var read = readForm();
    if (!read) { return Promise.resolve(); }
    var record = read.record;
    var order = read.order;
    var others = record.orders.filter(function (o) { return !isBaclofen(o); });
    var missing = [];
    if (data.apiAuth && !apiToken()) { missing.push("a bearer token for $check"); }
    if (data.cdsJwt && !cdsToken()) { missing.push("a CDS Hooks JWT for the cards"); }
    if (missing.length) {
      BC.show(out.problem, "Authentication is on and this page has no credentials: give " +
        missing.join(" and ") + " in the Authentication box above.");
    }
    out.status.textContent = "Checking\u2026";
    var cdsCall = data.cdsJwt && !cdsToken() ? Promise.resolve(null) :
      BC.call("POST", "/cds-services/" + data.service, cdsToken(), hookCall(record, order, others));
    var fhirCall = data.apiAuth && !apiToken() ? Promise.resolve(null) :
      BC.call("POST", "/MedicationRequest/$check", apiToken(), parameters(record, order, others),
              "application/fhir+json");
    return Promise.all([cdsCall, fhirCall]).then(function (answers) {
      cardService = data.service;
      showCards(answers[0]);
      showCheck(answers[1]);
      var n = out.cards.querySelectorAll(".card").length;
      if (answers[0] === null && answers[1] === null) {
        out.status.textContent = "Not checked: authentication is on and this page has no credentials.";
      } else {
        out.status.textContent = (doneMessage ? doneMessage + " " : "Checked. ") +
          n + " card" + (n === 1 ? "" : "s") + ".";
      }
      out.status.setAttribute("data-state", "done");
    });
  }

  /* Chart open: the record reviewed by baclofen-patient-view (cards only; no $check). */
  function openChart() {
    var read = readForm();
    if (!read) { return Promise.resolve(); }
    var record = read.record;
    var order = read.order;
    if (data.cdsJwt && !cdsToken()) {
      BC.show(out.problem, "Authentication is on and this page has no credentials: give a CDS " +
        "Hooks JWT for /cds-services/" + data.viewService + " in the Authentication box above.");
    }
    out.status.textContent = "Opening the chart\u2026";
    var call = data.cdsJwt && !cdsToken() ? Promise.resolve(null) :
      BC.call("POST", "/cds-services/" + data.viewService, cdsToken(), chartCall(record, order));
    return call.then(function (resp) {
      cardService = data.viewService;
      showCards(resp, "No cards at chart open: no high or moderate finding, or each was " +
        "already shown for this patient within CDS_REPEAT_AFTER_H hours.");
      clear(out.notes);
      out.notes.appendChild(el("li", { text: "Chart open (patient-view): cards only; the order " +
        "was reviewed as an active order." }));
      out.raw.textContent = "";
      var n = out.cards.querySelectorAll(".card").length;
      out.status.textContent = resp === null ?
        "Not checked: authentication is on and this page has no credentials." :
        "Chart opened. " + n + " card" + (n === 1 ? "" : "s") + ".";
      out.status.setAttribute("data-state", "done");
    });
  }

  /* --- wiring ----------------------------------------------------------------------------- */

  document.getElementById("open-chart").addEventListener("click", function () { openChart(); });

  /* A button, not the select's change event: arrowing through the list must not load each
     patient in turn (WCAG 3.2.2, on input). */
  document.getElementById("load-demo").addEventListener("click", function () {
    if (!f.demo.value) { BC.show(out.problem, "Choose a demo patient first."); return; }
    out.status.textContent = "Loading the demo patient\u2026";
    out.status.removeAttribute("data-state");
    BC.call("GET", "/demo/" + encodeURIComponent(f.demo.value), "").then(function (resp) {
      if (resp.status !== 200 || !resp.body) {
        BC.show(out.problem, "The demo patient could not be loaded (" + resp.status + ").");
        return;
      }
      f.record.value = JSON.stringify(resp.body, null, 2);
      baseOrder = null;
      try {
        var bac = readRecord(f.record.value).orders.filter(isBaclofen);
        if (bac.length) { baseOrder = bac[0]; fillForm(bac[0]); }
      } catch (e) { BC.show(out.problem, e.message); }
      check("Demo patient loaded and checked.");
    });
  });

  f.record.addEventListener("change", function () {
    baseOrder = null;
    try {
      var bac = readRecord(f.record.value).orders.filter(isBaclofen);
      if (bac.length) { baseOrder = bac[0]; fillForm(bac[0]); }
    } catch (e) { /* said when checking */ }
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    check();
  });
}());
