/* witcurate run report: renders the view named after "#" in view.html's URL from data/<id>.js.
   Data files call witcurateData({...}); they are loaded through a <script> element, which works
   from file:// (where fetch() of local files is refused) and over HTTP alike.
   Text from the run only ever enters the page through textContent and attribute setters, never
   as HTML, so a caption holding markup or a script is shown as text. */
(function () {
  "use strict";
  var main = document.getElementById("view");
  var baseTitle = document.title;
  var SAFE_ID = /^[A-Za-z0-9_.-]{1,80}$/;
  var MAX_QUERY_ROWS = 300;
  var MAX_CAPTION_HITS = 48;
  var loaded = {};
  var route = null;
  var requested = {};

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      if (attrs[name] !== null && attrs[name] !== undefined) node.setAttribute(name, String(attrs[name]));
    });
    (children || []).forEach(function (child) {
      if (child === null || child === undefined) return;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function fmt(n) { return typeof n === "number" ? n.toLocaleString("en-US") : String(n); }
  function pairs(n) { return fmt(n) + (n === 1 ? " pair" : " pairs"); }
  function score(x) { return typeof x === "number" ? x.toFixed(4) : "?"; }

  function clear() { while (main.firstChild) main.removeChild(main.firstChild); }

  function message(text) {
    clear();
    main.appendChild(el("h1", {}, ["Nothing to show"]));
    main.appendChild(el("p", {"class": "empty"}, [text + " "]));
    main.appendChild(el("p", {}, [el("a", {href: "index.html"}, ["Back to the first page"])]));
  }

  function picture(s) {
    if (s.thumb) {
      return el("img", {src: s.thumb, alt: s.caption || "(empty caption)", loading: "eager", decoding: "async"});
    }
    var why = s.image_error || s.note || "no image";
    return el("div", {"class": s.image_error ? "noimg broken" : "noimg", role: "img", "aria-label": why}, [why]);
  }

  function card(s, label, threshold) {
    var lines = [el("figure", {}, [picture(s)])];
    if (label) lines.push(el("p", {"class": "label"}, [label]));
    lines.push(el("p", {"class": "caption"}, [s.caption || "(empty caption)"]));
    if (s.tag) lines.push(el("p", {"class": "tag"}, [s.tag]));
    if (s.detail) lines.push(el("p", {"class": "detail"}, [s.detail]));
    if (typeof s.score === "number") {
      var against = typeof threshold === "number" ? " against threshold " + score(threshold) : "";
      lines.push(el("p", {"class": "score"}, ["CLIP score " + score(s.score) + against]));
    }
    if (s.url) lines.push(el("p", {"class": "url"}, [s.url]));
    lines.push(el("p", {"class": "uid"}, ["uid " + s.uid]));
    return el("article", {"class": "card", "data-uid": s.uid}, lines);
  }

  function grid(samples, threshold) {
    return el("div", {"class": "grid"}, samples.map(function (s) {
      if (!s.survivor) return card(s, null, threshold);
      return el("div", {"class": "pair"}, [card(s, "removed", threshold), card(s.survivor, "kept: the survivor")]);
    }));
  }

  function showSamples(data) {
    main.appendChild(el("h1", {}, [data.title]));
    var n = data.samples.length;
    main.appendChild(el("p", {"class": "summary"}, [n ? "Showing " + fmt(n) + " of " + fmt(data.total) +
      " (a fixed sample chosen by a hash of each uid: the same run always shows the same rows)." :
      fmt(data.total) + " records; no samples to show: " + data.empty + "."]));
    if (n) main.appendChild(grid(data.samples, typeof data.threshold === "number" ? data.threshold : null));
  }

  function showScore(data) {
    main.appendChild(el("h1", {}, [data.title]));
    var rule = data.rule && data.rule.kind ? " (" + data.rule.kind + " " + data.rule.value + ")" : "";
    var cut = typeof data.threshold === "number" ? "Threshold " + score(data.threshold) + rule :
      "No threshold in the score stage's manifest";
    main.appendChild(el("p", {"class": "summary"}, [cut + ", model " +
      data.model + ". The kept pairs with the lowest scores and the rejected pairs with the highest: " +
      "the two sides of the threshold, to see where it cuts."]));
    var sides = el("div", {"class": "sides"}, []);
    [["kept", "Kept, lowest score first", data.kept_total], ["rejected", "Rejected, highest score first",
      data.rejected_total]].forEach(function (side) {
      var samples = data[side[0]];
      sides.appendChild(el("section", {"class": "side " + side[0], "aria-label": side[1]}, [
        el("h2", {}, [side[1] + " (" + fmt(samples.length) + " of " + fmt(side[2]) + ")"]),
        samples.length ? grid(samples, data.threshold) : el("p", {"class": "empty"}, ["none"])]));
    });
    main.appendChild(sides);
  }

  function prepareQueries(data) {
    if (data.prepared) return;
    data.queries.forEach(function (q) {
      q.lower = q.q.toLowerCase();
      q.samples.forEach(function (s) { s.lower = (s.caption || "").toLowerCase(); });
    });
    data.prepared = true;
  }

  function queryRow(q, index) {
    var bits = [el("a", {href: "#queries/" + index}, [q.q]), " ", el("span", {"class": "n"}, [pairs(q.n)])];
    if (q.at_cap) bits.push(" ", el("span", {"class": "cap"}, ["at the cap"]));
    return el("li", {}, bits);
  }

  function showQueryList(data) {
    prepareQueries(data);
    main.appendChild(el("h1", {}, ["Queries"]));
    var cap = data.per_query_cap ? ", " + fmt(data.at_cap) + " at the cap of " + fmt(data.per_query_cap) : "";
    var more = data.not_listed ? " The " + fmt(data.not_listed) + " queries with the fewest pairs are not listed." : "";
    main.appendChild(el("p", {"class": "summary"}, [fmt(data.total_queries) + " queries hold " +
      pairs(data.total_pairs) + cap + ". The search looks in query names and in each listed " +
      "query's sample captions." + more]));
    var input = el("input", {type: "search", id: "search", autocomplete: "off", placeholder: "e.g. red circle"});
    var capOnly = el("input", {type: "checkbox", id: "cap-only"});
    main.appendChild(el("div", {"class": "controls", role: "search"}, [
      el("label", {"for": "search"}, ["Search queries and captions "]), input,
      el("label", {"class": "check"}, [capOnly, " only queries at the cap"])]));
    var status = el("p", {"class": "status", role: "status", "aria-live": "polite"}, []);
    var list = el("ul", {"class": "queries", id: "query-list"}, []);
    var hits = el("div", {id: "caption-hits"}, []);
    main.appendChild(status);
    main.appendChild(list);
    main.appendChild(hits);
    function update() {
      var term = input.value.trim().toLowerCase();
      var rows = [], found = [];
      data.queries.forEach(function (q, i) {
        if (capOnly.checked && !q.at_cap) return;
        var inCaptions = term ? q.samples.filter(function (s) { return s.lower.indexOf(term) >= 0; }) : [];
        if (!term || q.lower.indexOf(term) >= 0 || inCaptions.length) rows.push(i);
        inCaptions.forEach(function (s) { found.push(s); });
      });
      while (list.firstChild) list.removeChild(list.firstChild);
      rows.slice(0, MAX_QUERY_ROWS).forEach(function (i) { list.appendChild(queryRow(data.queries[i], i)); });
      status.textContent = fmt(rows.length) + " queries" + (term ? " and " + fmt(found.length) +
        " captions match" : "") + (rows.length > MAX_QUERY_ROWS ? "; the first " + MAX_QUERY_ROWS + " are listed" : "") + ".";
      while (hits.firstChild) hits.removeChild(hits.firstChild);
      if (found.length) {
        hits.appendChild(el("h2", {}, ["Captions that match"]));
        hits.appendChild(grid(found.slice(0, MAX_CAPTION_HITS), null));
      }
    }
    input.addEventListener("input", update);
    capOnly.addEventListener("change", update);
    update();
  }

  function showQuery(data, index) {
    var q = data.queries[index];
    if (!q) { message("No query number " + index + " in this report."); return; }
    main.appendChild(el("p", {}, [el("a", {href: "#queries"}, ["All queries"])]));
    main.appendChild(el("h1", {}, ["Query: " + q.q]));
    main.appendChild(el("p", {"class": "summary"}, [pairs(q.n) + " count toward this query" +
      (q.at_cap ? ", at the cap" : "") + "; showing " + fmt(q.samples.length) + "."]));
    if (q.samples.length) main.appendChild(grid(q.samples, null));
    else main.appendChild(el("p", {"class": "empty"}, ["No samples of this query are kept in the report " +
      "(it holds samples of the queries with the most pairs, within its budget)."]));
  }

  function show() {
    var data = loaded[route.id];
    clear();
    document.title = data.title + " · " + baseTitle;
    if (data.type === "samples") showSamples(data);
    else if (data.type === "score") showScore(data);
    else if (data.type === "queries" && route.sub !== "") showQuery(data, Number(route.sub));
    else if (data.type === "queries") showQueryList(data);
    else message("This view has a type the page does not know.");
  }

  window.witcurateData = function (data) {
    loaded[data.id] = data;
    if (route && route.id === data.id) show();
  };

  function navigate(moveFocus) {
    var hash = decodeURIComponent(location.hash.replace(/^#/, ""));
    var parts = hash.split("/");
    route = {id: parts[0], sub: parts.slice(1).join("/")};
    if (!SAFE_ID.test(route.id)) { message("No view is named in this address."); return; }
    if (loaded[route.id]) show();
    else if (!requested[route.id]) {
      requested[route.id] = true;
      var script = document.createElement("script");
      script.src = "data/" + route.id + ".js";
      script.onerror = function () { message("This report has no view named " + route.id + "."); };
      document.head.appendChild(script);
    }
    if (moveFocus) main.focus({preventScroll: false});
  }

  var skip = document.querySelector("a.skip");
  if (skip) skip.addEventListener("click", function (event) { event.preventDefault(); main.focus(); });
  window.addEventListener("hashchange", function () { navigate(true); });
  navigate(false);
})();
