// The playground's form is sent in place (htmx), so the chosen image stays chosen for the next Judge. A refusal
// (400 bad input, 502/503/504 from the guard) carries the page that says why: show it, as a full page load would.
(function () {
  "use strict";
  document.addEventListener("htmx:beforeSwap", (event) => {
    const sender = (event.detail.requestConfig || {}).elt || event.detail.elt;
    if (sender && sender.id === "pg-form" && event.detail.xhr.status >= 400) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });
})();
