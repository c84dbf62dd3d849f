// Atlas's sweep views, drawn with plotly.js (served from the installed plotly package).
// Each page has a form (#view-form, data-view = curves | parallel | scatter | importance | compare)
// whose values are the API's query; the chart goes in #chart. Everything drawn is kept on the
// chart element (plotly's own `data`), so what a reader sees can be checked against the API.
(function () {
  "use strict";
  var form = document.getElementById("view-form");
  var chart = document.getElementById("chart");
  if (!form || !chart || !window.Plotly) return;
  var view = form.getAttribute("data-view");
  var experiment = form.getAttribute("data-experiment");
  var base = "/experiments/" + encodeURIComponent(experiment);
  var api = "/api" + base + "/" + (view === "compare" ? "curves" : view);
  var note = document.getElementById("view-note");
  var COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  var CONFIG = { responsive: true, displaylogo: false };

  function query() {
    var params = new URLSearchParams();
    new FormData(form).forEach(function (value, key) {
      if (String(value).trim() !== "") params.append(key, value);
    });
    return params;
  }

  function say(text) { if (note) note.textContent = text || ""; }

  function load(params) {
    return fetch(api + "?" + params.toString(), { credentials: "same-origin", headers: { accept: "application/json" } })
      .then(function (r) {
        return r.json().then(function (body) {
          if (!r.ok) throw new Error(body.detail || r.statusText);
          return body;
        });
      });
  }

  function colorOf() {  // one colour per distinct value, in the order they come
    var seen = [];
    return function (value) {
      var key = JSON.stringify(value);
      var i = seen.indexOf(key);
      if (i < 0) { seen.push(key); i = seen.length - 1; }
      return COLORS[i % COLORS.length];
    };
  }

  function runsLink(filters) {
    var params = new URLSearchParams();
    filters.forEach(function (f) { params.append("where", f); });
    return base + "/runs?" + params.toString();
  }

  function literal(value) {
    return typeof value === "string" ? "'" + value.replace(/'/g, "") + "'" : String(value);
  }

  // -- curves ---------------------------------------------------------------------------

  function smooth(values, weight) {  // exponential moving average, debiased (as TensorBoard's)
    if (!weight) return values.slice();
    var out = [], last = 0, n = 0;
    for (var i = 0; i < values.length; i++) {
      last = last * weight + (1 - weight) * values[i];
      n += 1;
      out.push(last / (1 - Math.pow(weight, n)));
    }
    return out;
  }

  function drawCurves(data) {
    var weight = Number((document.getElementById("smoothing") || {}).value || 0);
    var facets = [];
    data.series.forEach(function (s) {
      var key = JSON.stringify(s.facet);
      if (facets.indexOf(key) < 0) facets.push(key);
    });
    var color = colorOf();
    var traces = [];
    data.series.forEach(function (s, index) {
      var f = facets.indexOf(JSON.stringify(s.facet)) + 1;
      var axes = { xaxis: "x" + (f > 1 ? f : ""), yaxis: "y" + (f > 1 ? f : "") };
      var c = data.color ? color(s.color) : COLORS[index % COLORS.length];
      var name = s.label || (s.run_id ? s.run_id.slice(0, 10) : "all runs");
      var custom = { run_id: s.run_id || null, run_ids: s.run_ids || null, label: name };
      if (s.lo) {
        traces.push(Object.assign({ x: s.x, y: smooth(s.lo, weight), mode: "lines", line: { width: 0, color: c },
          hoverinfo: "skip", showlegend: false, legendgroup: name, meta: { band: "lo", series: index } }, axes));
        traces.push(Object.assign({ x: s.x, y: smooth(s.hi, weight), mode: "lines", line: { width: 0, color: c },
          fill: "tonexty", fillcolor: c + "33", hoverinfo: "skip", showlegend: false, legendgroup: name,
          meta: { band: "hi", series: index } }, axes));
      }
      traces.push(Object.assign({
        x: s.x, y: smooth(s.y, weight), mode: "lines", name: name, legendgroup: name, line: { color: c, width: s.lo ? 2.5 : 1.2 },
        customdata: s.x.map(function () { return custom; }), meta: { series: index, runs: s.runs },
        hovertemplate: name + "<br>step %{x}<br>" + data.metric + " %{y:.4g}" + (s.lo ? "<br>" + s.runs + " runs" : "") + "<extra></extra>",
      }, axes));
    });
    var layout = { margin: { t: 30, r: 10 }, hovermode: "closest", showlegend: data.series.length <= 40,
      legend: { orientation: "v" }, height: Math.max(480, 320 * Math.ceil(facets.length / 2)) };
    var logx = document.getElementById("logx"), logy = document.getElementById("logy");
    if (facets.length > 1) {
      layout.grid = { rows: Math.ceil(facets.length / 2), columns: Math.min(2, facets.length), pattern: "independent" };
      layout.annotations = facets.map(function (key, i) {
        return { text: data.facet + " = " + JSON.parse(key), showarrow: false, xref: "x" + (i ? i + 1 : "") + " domain",
                 yref: "y" + (i ? i + 1 : "") + " domain", x: 0.5, y: 1.08 };
      });
    }
    facets.forEach(function (_, i) {
      var suffix = i ? String(i + 1) : "";
      layout["xaxis" + suffix] = { title: { text: "step" }, type: logx && logx.checked ? "log" : "linear" };
      layout["yaxis" + suffix] = { title: { text: data.metric }, type: logy && logy.checked ? "log" : "linear" };
    });
    say(data.runs + " runs" + (data.truncated ? " (the first " + data.runs + " by run id; narrow the filter to see others)" : "") +
        ", " + data.series.length + " series" + (data.band ? ", band: " + data.band : ""));
    return Plotly.react(chart, traces, layout, CONFIG);
  }

  function openCurve(event) {
    var point = event.points && event.points[0];
    var custom = point && point.customdata;
    if (!custom) return;
    if (custom.run_id) window.location.href = base + "/runs/" + encodeURIComponent(custom.run_id);
    else if (custom.run_ids) window.location.href = runsLink(["run_id in (" + custom.run_ids.map(literal).join(", ") + ")"]);
  }

  // -- parallel coordinates -------------------------------------------------------------

  function dimension(column) {
    if (column.numeric) return { label: column.name, values: column.values.map(function (v) { return v === null ? NaN : v; }) };
    var levels = [];
    column.values.forEach(function (v) { var k = String(v); if (levels.indexOf(k) < 0) levels.push(k); });
    levels.sort();
    return { label: column.name, values: column.values.map(function (v) { return levels.indexOf(String(v)); }),
             tickvals: levels.map(function (_, i) { return i; }), ticktext: levels, levels: levels };
  }

  function drawParallel(data) {
    var dims = data.columns.map(dimension);
    var metric = dims[dims.length - 1];
    chart._columns = data.columns;
    chart._dims = dims;
    say(data.runs + " of " + data.total + " matching runs" + (data.runs < data.total ? " (a sample by run id)" : ""));
    return Plotly.react(chart, [{ type: "parcoords", dimensions: dims.map(function (d) {
      return { label: d.label, values: d.values, tickvals: d.tickvals, ticktext: d.ticktext };
    }), line: { color: metric.values, colorscale: "Viridis", showscale: true, colorbar: { title: { text: metric.label } } } }],
    { margin: { t: 60, l: 60, r: 60 }, height: 520 }, CONFIG).then(function () {
      chart.on("plotly_restyle", brushed);
      return brushed();
    });
  }

  function brushFilters() {  // the brushed ranges as Atlas filters (ranges on one axis: or)
    var filters = [];
    (chart.data[0].dimensions || []).forEach(function (d, i) {
      var ranges = d.constraintrange;
      if (!ranges || !ranges.length) return;
      if (typeof ranges[0] === "number") ranges = [ranges];
      var column = chart._columns[i], dim = chart._dims[i];
      var parts = ranges.map(function (r) {
        if (column.numeric) return "(" + column.ref + " >= " + r[0] + " and " + column.ref + " <= " + r[1] + ")";
        var kept = dim.levels.filter(function (_, k) { return k >= r[0] && k <= r[1]; });
        return kept.length ? column.ref + " in (" + kept.map(literal).join(", ") + ")" : "run_id = ''";
      });
      filters.push(parts.length > 1 ? "(" + parts.join(" or ") + ")" : parts[0]);
    });
    return filters;
  }

  function brushed() {
    var filters = brushFilters();
    var params = query();
    filters.forEach(function (f) { params.append("where", f); });
    params.delete("metric");
    params.set("limit", "50");
    var shown = document.getElementById("brushed-filter");
    if (shown) shown.textContent = filters.length ? filters.join(" and ") : "no range brushed: every run";
    var link = document.getElementById("brushed-link");
    if (link) link.href = runsLink(params.getAll("where"));
    var columns = chart._columns;
    return fetch("/api" + base + "/parallel?" + params.toString(), { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (all) {
        document.getElementById("brushed-count").textContent = all.total;
        var head = "<tr><th>run</th>" + columns.map(function (c) { return "<th>" + escapeHtml(c.name) + "</th>"; }).join("") + "</tr>";
        var rows = [];
        for (var i = 0; i < Math.min(all.runs, 50); i++) {
          rows.push("<tr data-run=\"" + escapeHtml(all.run_ids[i]) + "\"><td><a href=\"" + base + "/runs/" +
            encodeURIComponent(all.run_ids[i]) + "\">" + escapeHtml(all.run_ids[i].slice(0, 10)) + "</a></td>" +
            all.columns.map(function (c) { return "<td class=\"n\">" + escapeHtml(format(c.values[i])) + "</td>"; }).join("") + "</tr>");
        }
        var table = document.getElementById("brushed");
        table.tHead.innerHTML = head;
        table.tBodies[0].innerHTML = rows.join("");
        chart.setAttribute("data-brushed", String(all.total));
      });
  }

  function format(value) {
    if (typeof value === "number") return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(4)));
    return value === null || value === undefined ? "" : String(value);
  }

  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, function (c) { return "&#" + c.charCodeAt(0) + ";"; });
  }

  // -- scatter and importance -----------------------------------------------------------

  function drawScatter(data) {
    var x = data.columns[0], y = data.columns[1];
    var colorColumn = query().get("color") ? data.columns[2] : null;
    var params = data.columns.slice(colorColumn ? 3 : 2);
    var text = data.run_ids.map(function (id, i) {
      return params.map(function (c) { return c.name + "=" + format(c.values[i]); }).join(" ") + " #" + data.replicates[i];
    });
    var marker = { size: 7, opacity: 0.8 };
    if (colorColumn) {
      if (colorColumn.numeric) Object.assign(marker, { color: colorColumn.values, colorscale: "Viridis", showscale: true,
        colorbar: { title: { text: colorColumn.name } } });
      else { var c = colorOf(); marker.color = colorColumn.values.map(c); }
    }
    var logx = document.getElementById("logx"), logy = document.getElementById("logy");
    say(data.runs + " of " + data.total + " matching runs");
    return Plotly.react(chart, [{ type: data.runs > 5000 ? "scattergl" : "scatter", mode: "markers", x: x.values, y: y.values,
      text: text, customdata: data.run_ids, marker: marker,
      hovertemplate: "%{text}<br>" + x.name + " %{x:.4g}<br>" + y.name + " %{y:.4g}<extra></extra>" }],
    { margin: { t: 20 }, hovermode: "closest", height: 520,
      xaxis: { title: { text: x.name }, type: logx && logx.checked ? "log" : "linear" },
      yaxis: { title: { text: y.name }, type: logy && logy.checked ? "log" : "linear" } }, CONFIG);
  }

  function drawImportance(data) {
    var shares = data.shares.slice().reverse();  // largest on top
    return Plotly.react(chart, [{ type: "bar", orientation: "h", x: shares.map(function (s) { return 100 * s.share; }),
      y: shares.map(function (s) { return s.source; }), marker: { color: shares.map(function (s) {
        return s.source === "replicates" || s.source === "interactions" ? "#9ca3af" : COLORS[0]; }) },
      hovertemplate: "%{y}: %{x:.1f}% of the variance<extra></extra>" }],
    { margin: { t: 10, l: 120 }, height: 60 + 36 * shares.length, xaxis: { title: { text: "% of " + data.metric + "'s variance" }, range: [0, 100] } },
    CONFIG);
  }

  var DRAW = { curves: drawCurves, compare: drawCurves, parallel: drawParallel, scatter: drawScatter, importance: drawImportance };

  function draw() {
    chart.removeAttribute("data-drawn");
    var params = query();
    if (view === "compare") (form.getAttribute("data-runs") || "").split(",").forEach(function (id) { if (id) params.append("run", id); });
    return load(params).then(DRAW[view]).then(function () {
      chart.setAttribute("data-drawn", "1");
    }).catch(function (error) {
      say("");
      chart.innerHTML = "<p class=\"error\">" + escapeHtml(error.message) + "</p>";
      chart.setAttribute("data-drawn", "error");
    });
  }

  var last = null;  // the curves drawn: smoothing and log axes draw them again, with no request
  if (view === "curves" || view === "compare") {
    DRAW.curves = DRAW.compare = function (data) { last = data; return drawCurves(data); };
    var redraw = function () { if (last) drawCurves(last); };
    var slider = document.getElementById("smoothing");
    if (slider) slider.addEventListener("input", function () {
      document.getElementById("smoothing-value").textContent = slider.value;
      redraw();
    });
    ["logx", "logy"].forEach(function (id) { var box = document.getElementById(id); if (box) box.addEventListener("change", redraw); });
  } else {
    ["logx", "logy"].forEach(function (id) { var box = document.getElementById(id); if (box) box.addEventListener("change", draw); });
  }
  if (view === "compare") form.addEventListener("change", draw);
  draw().then(function () {
    if (chart.on && (view === "curves" || view === "compare")) chart.on("plotly_click", openCurve);
    if (chart.on && view === "scatter") chart.on("plotly_click", function (event) {
      var point = event.points && event.points[0];
      if (point) window.location.href = base + "/runs/" + encodeURIComponent(point.customdata);
    });
  });
})();
