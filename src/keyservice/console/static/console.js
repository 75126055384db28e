// The console's own script: no inline script anywhere (the Content-Security-Policy forbids it).
(function () {
  "use strict";

  // Times arrive in UTC; show them in the browser's time zone.
  var format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
  });
  function localTimes(root) {
    root.querySelectorAll("time[datetime]:not([data-local])").forEach(function (el) {
      var moment = new Date(el.getAttribute("datetime"));
      if (!isNaN(moment)) {
        el.title = el.textContent;
        el.textContent = format.format(moment);
        el.setAttribute("data-local", "");
      }
    });
  }

  // Copy buttons: <button data-copy="#element-id">.
  function copyButtons(root) {
    root.querySelectorAll("[data-copy]:not([data-ready])").forEach(function (button) {
      button.setAttribute("data-ready", "");
      button.addEventListener("click", function () {
        var source = document.querySelector(button.getAttribute("data-copy"));
        if (!source) return;
        var text = source.value !== undefined ? source.value : source.textContent;
        var done = function () {
          var label = button.textContent;
          button.textContent = "Copied";
          setTimeout(function () { button.textContent = label; }, 2000);
        };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(done);
        } else {
          source.select && source.select();
          document.execCommand("copy");
          done();
        }
      });
    });
  }

  // A <select data-autosubmit> submits its form when changed (the account switcher).
  function autosubmit(root) {
    root.querySelectorAll("select[data-autosubmit]:not([data-ready])").forEach(function (select) {
      select.setAttribute("data-ready", "");
      select.addEventListener("change", function () { select.form.requestSubmit(); });
    });
  }

  // The browser's offset from UTC, for dates picked in its time zone (minutes, as the server
  // adds them: UTC = local + offset).
  function timeZones(root) {
    root.querySelectorAll("input[data-tz-offset]").forEach(function (input) {
      input.value = String(new Date().getTimezoneOffset());
    });
  }

  function enhance(root) {
    localTimes(root);
    timeZones(root);
    copyButtons(root);
    autosubmit(root);
  }

  document.documentElement.classList.add("js");
  document.addEventListener("DOMContentLoaded", function () { enhance(document); });
  document.addEventListener("htmx:afterSettle", function (event) { enhance(event.target); });
  window.keyserviceConsole = { enhance: enhance };
})();
