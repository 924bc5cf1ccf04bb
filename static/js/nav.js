// On narrow screens the header's links fold behind a Menu button (with this script only: without it they stay
// listed, wrapped under the brand).
(function () {
  "use strict";
  document.documentElement.classList.add("nav-folds");
  document.addEventListener("click", (event) => {
    const button = event.target.closest("#nav-toggle");
    if (!button) return;
    const nav = document.getElementById("site-nav");
    const open = nav.classList.toggle("open");
    button.setAttribute("aria-expanded", open ? "true" : "false");
  });
})();
