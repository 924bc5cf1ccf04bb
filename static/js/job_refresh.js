// A running import or export job's admin page: fetch the page again every few seconds and swap the job's part in
// (status, progress, errors), keeping the reader's scroll and focus, until the job has ended. "Pause updates"
// stops it for as long as the reader wants (no timed reload the reader cannot turn off).
(function () {
  "use strict";
  const banner = document.getElementById("job-refresh");
  const toggle = document.getElementById("job-refresh-toggle");
  if (!banner || !toggle) return;
  const every = Number(banner.dataset.everyMs);
  let paused = false;
  toggle.addEventListener("click", () => {
    paused = !paused;
    toggle.setAttribute("aria-pressed", String(paused));
    toggle.textContent = paused ? "Resume updates" : "Pause updates";
  });
  async function update() {
    if (!paused) {
      try {
        const response = await fetch(window.location.href, { credentials: "same-origin" });
        if (response.ok) {
          const next = new DOMParser().parseFromString(await response.text(), "text/html");
          const fresh = next.getElementById("content-main");
          const here = document.getElementById("content-main");
          if (fresh && here) here.replaceWith(fresh);
          if (!next.getElementById("job-refresh")) {
            banner.remove(); // the job has ended: nothing more to follow
            return;
          }
        }
      } catch (error) {
        // the server did not answer this time: try again at the next tick
      }
    }
    setTimeout(update, every);
  }
  setTimeout(update, every);
})();
