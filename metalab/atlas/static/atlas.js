// Atlas: while an experiment's runs land, keep its counts and tables current.
// Polls the JSON named by <body data-live> every few seconds; when its "signature" (counts,
// runs in progress, the running badge, last activity) differs from the one this page was
// rendered with, fetches this page again and swaps in its #counts and #live parts together:
// both were rendered from one snapshot of the index, so the header's counts, the badge and the
// table always agree. The refresh asks for the sort the page applied (#live's data-refresh),
// so the Sort box keeps naming the table's order. A page rendered without data-live (a run that
// has ended) stops polling.
(function () {
  "use strict";
  var url = document.body.getAttribute("data-live");
  if (!url) return;
  var PERIOD = 4000;
  var stopped = false;

  function rendered(doc) {  // the signature a page was rendered with
    var badge = doc.getElementById("live-badge");
    var live = doc.getElementById("live");
    if (badge) return badge.getAttribute("data-signature");
    return live ? live.getAttribute("data-signature") : null;
  }

  function signatureOf(data) {
    if (Array.isArray(data)) return data.map(function (e) { return e.signature; }).join(" ");
    return data && data.signature;
  }

  var last = rendered(document);

  function swap(id, fresh) {
    var here = document.getElementById(id);
    var there = fresh.getElementById(id);
    if (here && there) here.innerHTML = there.innerHTML;
  }

  function refreshPage() {
    var live = document.getElementById("live");
    var target = live && live.getAttribute("data-refresh") ? new URL(live.getAttribute("data-refresh"), window.location.href).href
      : window.location.href;
    return fetch(target, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var ticked = live ? Array.prototype.map.call(live.querySelectorAll("input[name=run]:checked"), function (i) { return i.value; }) : [];
        swap("counts", fresh);
        swap("live", fresh);
        ticked.forEach(function (id) {
          var box = document.querySelector('#live input[name=run][value="' + CSS.escape(id) + '"]');
          if (box) box.checked = true;
        });
        last = rendered(fresh);
        if (!fresh.body.getAttribute("data-live")) stopped = true;  // e.g. the run has ended
      });
  }

  function tick() {
    if (document.hidden) return schedule();
    fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (e) {
        if (!e) return;
        var lag = document.getElementById("index-lag");  // how fresh the index is, not what it holds
        if (lag && !Array.isArray(e)) {
          lag.textContent = e.index_lag || "";
          lag.classList.toggle("hidden", !e.index_lag);
        }
        if (signatureOf(e) !== last) return refreshPage();
      })
      .catch(function () { /* Atlas restarting: try again next period */ })
      .then(schedule);
  }

  function schedule() { if (!stopped) window.setTimeout(tick, PERIOD); }
  schedule();
})();
