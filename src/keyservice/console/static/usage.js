// The usage graph: uPlot, fed from the chart's data-series attribute (no inline script).
(function () {
  "use strict";

  function draw(el) {
    if (el.getAttribute("data-drawn") || typeof uPlot === "undefined") return;
    el.setAttribute("data-drawn", "");
    var data = JSON.parse(el.getAttribute("data-series"));
    var byDay = data.granularity === "day";
    var width = function () { return Math.max(280, el.clientWidth - 8); };
    var options = {
      width: width(),
      height: 280,
      // Times in the browser's time zone (uPlot's default), by hour or day.
      series: [
        { label: byDay ? "Day" : "Hour",
          value: byDay ? "{YYYY}-{MM}-{DD}" : "{YYYY}-{MM}-{DD} {HH}:00" },
        { label: "Allowed", stroke: "#067647", fill: "rgba(6,118,71,0.08)", width: 2 },
        { label: "Refused", stroke: "#b42318", width: 2 },
        { label: "Rate-limited", stroke: "#b54708", width: 2, dash: [6, 4] },
      ],
      axes: [{}, { label: "requests", size: 60 }],
      scales: { x: { time: true } },
      legend: { live: true },
    };
    var chart = new uPlot(options, [data.t, data.allowed, data.refused, data.rate_limited], el);
    window.addEventListener("resize", function () {
      chart.setSize({ width: width(), height: 280 });
    });
  }

  function drawAll(root) {
    root.querySelectorAll("#usage-chart[data-series]").forEach(draw);
  }

  document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  document.addEventListener("htmx:afterSettle", function (event) { drawAll(event.target); });
})();
