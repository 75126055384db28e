// The delivery log. Attempts a few seconds apart are told apart: their times, to the second, in
// the browser's time zone (before console.js shows the others to the minute). The replay form's
// moment, picked in a datetime-local field, is the browser's local time: the form sends the
// offset from UTC at that moment (not today's, which differs across a daylight saving change),
// and the page says which time zone that is.
(function () {
  "use strict";

  var precise = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  });

  function preciseTimes(root) {
    root.querySelectorAll("time[data-seconds]:not([data-local])").forEach(function (el) {
      var moment = new Date(el.getAttribute("datetime"));
      if (!isNaN(moment)) {
        el.title = el.textContent;
        el.textContent = precise.format(moment);
        el.setAttribute("data-local", "");
      }
    });
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function localValue(moment) {
    return moment.getFullYear() + "-" + pad(moment.getMonth() + 1) + "-" + pad(moment.getDate()) +
      "T" + pad(moment.getHours()) + ":" + pad(moment.getMinutes());
  }

  function offsetName(minutes) {
    var east = -minutes;
    var sign = east < 0 ? "-" : "+";
    east = Math.abs(east);
    return "UTC" + sign + pad(Math.floor(east / 60)) + ":" + pad(east % 60);
  }

  function replayForms(root) {
    root.querySelectorAll("form[data-replay]:not([data-ready])").forEach(function (form) {
      form.setAttribute("data-ready", "");
      var since = form.querySelector("input[name=since]");
      var offset = form.querySelector("input[data-tz-offset]");
      var note = form.querySelector("[data-time-zone]");
      if (!since || !offset) return;
      if (!since.value) {
        since.value = localValue(new Date(Date.now() - 24 * 3600 * 1000));
      }
      since.max = localValue(new Date());
      if (note) {
        var zone = "";
        try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { zone = ""; }
        var now = offsetName(new Date().getTimezoneOffset());
        note.textContent = "In your time zone" + (zone ? " (" + zone + ", " + now + ")" : " (" + now + ")") + ".";
      }
      form.addEventListener("submit", function () {
        var picked = new Date(since.value);
        offset.value = String(isNaN(picked) ? new Date().getTimezoneOffset() : picked.getTimezoneOffset());
      });
    });
  }

  function enhance(root) {
    preciseTimes(root);
    replayForms(root);
  }

  document.addEventListener("DOMContentLoaded", function () { enhance(document); });
  document.addEventListener("htmx:afterSettle", function (event) { enhance(event.target); });
})();
