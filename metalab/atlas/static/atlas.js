// Atlas: while an experiment has runs finishing, keep its counts and tables current.
// Polls the experiment's JSON every few seconds; when the run count changes, fetches this
// same page again and swaps in its #live part (the runs table), keeping the reader's place.
(function () {
  "use strict";
  var url = document.body.getAttribute("data-live");
  if (!url) return;
  var PERIOD = 4000;
  var shown = document.querySelector('[data-count="runs"]');
  var last = shown ? shown.textContent : null;  // the count this page was rendered with

  function setText(name, value) {
    var el = document.querySelector('[data-count="' + name + '"]');
    if (el && el.textContent !== String(value)) el.textContent = value;
  }

  function refreshTable() {
    var live = document.getElementById("live");
    if (!live) return Promise.resolve();
    return fetch(window.location.href, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        var ticked = Array.prototype.map.call(live.querySelectorAll("input[name=run]:checked"), function (i) { return i.value; });
        if (fresh) {
          live.innerHTML = fresh.innerHTML;
          ticked.forEach(function (id) {
            var box = live.querySelector('input[name=run][value="' + CSS.escape(id) + '"]');
            if (box) box.checked = true;
          });
        }
      });
  }

  function tick() {
    if (document.hidden) return schedule();
    fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (e) {
        if (!e) return;
        setText("runs", e.runs);
        setText("succeeded", e.succeeded);
        setText("failed", e.failed);
        var badge = document.getElementById("live-badge");
        if (badge) badge.classList.toggle("hidden", !e.active);
        var lag = document.getElementById("index-lag");
        if (lag) {
          lag.textContent = e.index_lag || "";
          lag.classList.toggle("hidden", !e.index_lag);
        }
        var changed = last !== null && last !== String(e.runs);
        last = String(e.runs);
        if (changed) return refreshTable();
      })
      .catch(function () { /* Atlas restarting: try again next period */ })
      .then(schedule);
  }

  function schedule() { window.setTimeout(tick, PERIOD); }
  schedule();
})();
