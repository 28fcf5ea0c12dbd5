/* baclofen-check web page: shared helpers. Plain JavaScript, no libraries, no outside calls. */
"use strict";

var BC = (function () {
  /* Build a DOM element; text is always set as text (never parsed as HTML). */
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      var value = attrs[key];
      if (value === null || value === undefined || value === false) { return; }
      if (key === "text") { node.textContent = String(value); }
      else if (key === "className") { node.className = value; }
      else { node.setAttribute(key, value === true ? "" : String(value)); }
    });
    (children || []).forEach(function (child) {
      if (child === null || child === undefined) { return; }
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  /* A credentials field kept in this tab's session storage. */
  function tokenField(id) {
    var input = document.getElementById(id);
    if (!input) { return function () { return ""; }; }
    try { input.value = window.sessionStorage.getItem("bc-" + id) || ""; } catch (e) { /* none */ }
    input.addEventListener("change", function () {
      try { window.sessionStorage.setItem("bc-" + id, input.value.trim()); } catch (e) { /* none */ }
    });
    return function () { return input.value.trim(); };
  }

  /* Call one of the service's endpoints; resolves to {status, body, text}. */
  function call(method, url, token, body, contentType) {
    var headers = { "Accept": "application/json, application/fhir+json" };
    if (token) { headers["Authorization"] = "Bearer " + token; }
    var init = { method: method, headers: headers, credentials: "omit", cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = contentType || "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(url, init).then(function (resp) {
      return resp.text().then(function (text) {
        var parsed = null;
        try { parsed = text ? JSON.parse(text) : null; } catch (e) { parsed = null; }
        return { status: resp.status, body: parsed, text: text };
      });
    }, function (err) {
      return { status: 0, body: null, text: String(err) };
    });
  }

  /* The message of an OperationOutcome (or null). */
  function outcomeText(body) {
    if (!body || body.resourceType !== "OperationOutcome" || !Array.isArray(body.issue)) { return null; }
    return body.issue.map(function (i) {
      return (i.diagnostics || (i.details && i.details.text) || i.code || "") +
        (i.expression ? " (" + i.expression.join(", ") + ")" : "");
    }).join("; ");
  }

  function show(node, message) {
    node.textContent = message || "";
    node.hidden = !message;
  }

  return { el: el, tokenField: tokenField, call: call, outcomeText: outcomeText, show: show };
}());
