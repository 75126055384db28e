// The API keys pages: days in the list, and the expiry day of a new key.
(function () {
  "use strict";

  // A table shows the day, in the browser's time zone; the moment itself on hover.
  var dayFormat = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "numeric" });
  var momentFormat = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
  });
  function days(root) {
    root.querySelectorAll("time[data-day]").forEach(function (el) {
      var moment = new Date(el.getAttribute("datetime"));
      if (isNaN(moment)) return;
      el.textContent = dayFormat.format(moment);
      el.title = momentFormat.format(moment);
      // console.js leaves it as it is.
      el.setAttribute("data-local", "");
    });
  }

  // Picking a day chooses "On a day": else the preset still checked would silently win.
  function expiryDay(root) {
    root.querySelectorAll("input[data-expiry-day]:not([data-ready])").forEach(function (input) {
      input.setAttribute("data-ready", "");
      input.addEventListener("input", function () {
        var choice = document.getElementById(input.getAttribute("data-expiry-day"));
        if (choice && input.value) choice.checked = true;
      });
    });
  }

  function enhance(root) {
    days(root);
    expiryDay(root);
  }

  document.addEventListener("DOMContentLoaded", function () { enhance(document); });
  document.addEventListener("htmx:afterSettle", function (event) { enhance(event.target); });
})();
