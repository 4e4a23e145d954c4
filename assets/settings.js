// Tidings Developer Settings: local times, copy buttons and regions that refresh themselves.
// The pages work without it: times stay in UTC, and refreshing pages fall back to a meta refresh.
(function () {
  "use strict";

  // Shows each <time datetime> in the viewer's local time; the UTC text stays in the title (on hover).
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when.getTime())) return;
      if (!el.title) el.title = el.textContent;
      el.textContent = when.toLocaleString(undefined, {
        year: "numeric", month: "short", day: "numeric",
        hour: "2-digit", minute: "2-digit", second: "2-digit"
      });
    });
  }

  // Buttons with data-copy="ID" copy the value of that input.
  function copyButtons(root) {
    root.querySelectorAll("button[data-copy]").forEach(function (button) {
      var input = document.getElementById(button.getAttribute("data-copy"));
      if (!input) return;
      var said = button.parentNode.querySelector(".copied");
      button.hidden = false;
      button.addEventListener("click", function () {
        var done = function () { if (said) said.textContent = "Copied."; };
        if (navigator.clipboard && navigator.clipboard.writeText) {
          navigator.clipboard.writeText(input.value).then(done, function () {
            input.select();
            if (said) said.textContent = "Selected: press Ctrl+C (or ⌘C) to copy.";
          });
        } else {
          input.select();
          if (document.execCommand && document.execCommand("copy")) done();
        }
      });
    });
  }

  // The markup each refreshing region last came with, by id: a region is replaced only when it changed, so
  // a reader's place and selection in it are kept while nothing happens.
  var served = {};
  // Set by the "Pause updates" button: the regions stay as they are until it is pressed again.
  var paused = false;

  function pauseButton() {
    var button = document.getElementById("pause-updates");
    if (!button || !document.querySelector("[data-refresh][id]")) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      paused = !paused;
      button.setAttribute("aria-pressed", paused ? "true" : "false");
      button.textContent = paused ? "Resume updates" : "Pause updates";
    });
  }

  // Elements with data-refresh="MS" and an id are fetched again every MS milliseconds while the page is
  // visible, and replaced by their new version when it differs, unless the keyboard focus is inside them.
  // A <time id="refreshed-at"> outside them says when the page last looked.
  function refreshRegions() {
    var regions = document.querySelectorAll("[data-refresh][id]");
    if (regions.length === 0) return;
    var delay = parseInt(regions[0].getAttribute("data-refresh"), 10) || 2000;
    window.setTimeout(function () {
      if (document.hidden || paused) { refreshRegions(); return; }
      fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) {
          return response.ok && !response.redirected ? response.text() : null;
        })
        .then(function (html) {
          if (html === null) return;
          var fresh = new DOMParser().parseFromString(html, "text/html");
          document.querySelectorAll("[data-refresh][id]").forEach(function (old) {
            if (old.contains(document.activeElement)) return;
            var next = fresh.getElementById(old.id);
            if (!next || served[old.id] === next.outerHTML) return;
            served[old.id] = next.outerHTML;
            next = document.importNode(next, true);
            localTimes(next);
            old.replaceWith(next);
          });
          var stamp = document.getElementById("refreshed-at");
          var freshStamp = fresh.getElementById("refreshed-at");
          if (stamp && freshStamp) {
            stamp.setAttribute("datetime", freshStamp.getAttribute("datetime"));
            stamp.title = freshStamp.title;
            localTimes(stamp.parentNode);
          }
        })
        .catch(function () { /* offline for a moment: try again next time */ })
        .then(refreshRegions);
    }, delay);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh][id]").forEach(function (region) {
      served[region.id] = region.outerHTML;
    });
    localTimes(document);
    copyButtons(document);
    pauseButton();
    refreshRegions();
  });
})();
