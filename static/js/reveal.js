// Reveal on purpose: a blurred stand-in becomes the real image only when its Reveal button is pressed. The real
// image's request is what the audit log records, so nothing is fetched before the click.
(function () {
  "use strict";
  document.addEventListener("click", (event) => {
    const button = event.target.closest("button.reveal[data-target]");
    if (!button) return;
    const img = document.getElementById(button.dataset.target);
    if (!img || !img.dataset.fullSrc) return;
    img.src = img.dataset.fullSrc;
    img.classList.remove("blurred");
    img.classList.add("revealed");
    img.removeAttribute("width");
    img.removeAttribute("height");
    img.alt = img.alt.replace(", blurred until revealed", "");
    button.hidden = true;
  });
})();
