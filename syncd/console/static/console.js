// syncd console: the only script. Pages work without it; it reloads pages that ask for it
// (<body data-refresh="SECONDS">) while the tab is visible and nobody is typing in a form.
(function () {
  "use strict";
  var seconds = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
  if (!seconds || seconds < 5) {
    return;
  }
  window.setInterval(function () {
    var active = document.activeElement;
    var typing = active && (active.tagName === "INPUT" || active.tagName === "SELECT" || active.tagName === "TEXTAREA");
    if (document.visibilityState === "visible" && !typing) {
      window.location.reload();
    }
  }, seconds * 1000);
})();
