/* A small, safe Markdown renderer for CDS Hooks card details.

   It never parses HTML: every piece of text becomes a text node, so markup in a card (or in a
   pasted record echoed back in a card) is shown as text. Supported: paragraphs (blank lines),
   "- " and "* " lists, **bold**, *italic*, `code`, <https://autolinks>, [text](https://links)
   and backslash escapes of punctuation (\< shows "<").
   Links are made only for http and https URLs. */
"use strict";

var Markdown = (function () {
  var INLINE = /(\*\*([^*]+)\*\*)|(`([^`]+)`)|(<(https?:\/\/[^\s<>]+)>)|(\[([^\]]+)\]\((https?:\/\/[^\s)]+)\))|(\*([^*\s][^*]*)\*)|(\\([!-\/:-@[-`{-~]))/;

  function link(url, text) {
    var a = document.createElement("a");
    a.href = url;
    a.rel = "noopener noreferrer";
    a.textContent = text;
    return a;
  }

  function inline(text, parent) {
    var rest = text;
    while (rest.length) {
      var m = INLINE.exec(rest);
      if (!m) { parent.appendChild(document.createTextNode(rest)); break; }
      if (m.index) { parent.appendChild(document.createTextNode(rest.slice(0, m.index))); }
      var node;
      if (m[1]) { node = inline(m[2], document.createElement("strong")); }
      else if (m[3]) { node = document.createElement("code"); node.textContent = m[4]; }
      else if (m[5]) { node = link(m[6], m[6]); }
      else if (m[7]) { node = link(m[9], m[8]); }
      else if (m[10]) { node = inline(m[11], document.createElement("em")); }
      else { node = document.createTextNode(m[13]); }  /* a backslash escape: the character itself */
      parent.appendChild(node);
      rest = rest.slice(m.index + m[0].length);
    }
    return parent;
  }

  function render(source, container) {
    var blocks = String(source || "").replace(/\r\n?/g, "\n").split(/\n{2,}/);
    blocks.forEach(function (block) {
      var lines = block.split("\n").filter(function (l) { return l.trim() !== ""; });
      if (!lines.length) { return; }
      var items = lines.every(function (l) { return /^\s*[-*]\s+/.test(l); });
      if (items) {
        var ul = document.createElement("ul");
        lines.forEach(function (l) {
          var li = document.createElement("li");
          inline(l.replace(/^\s*[-*]\s+/, ""), li);
          ul.appendChild(li);
        });
        container.appendChild(ul);
        return;
      }
      var p = document.createElement("p");
      lines.forEach(function (l, i) {
        if (i) { p.appendChild(document.createElement("br")); }
        inline(l, p);
      });
      container.appendChild(p);
    });
    return container;
  }

  return { render: render };
}());
