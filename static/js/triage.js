// The reviewers' triage loop on a disagreement page: 1 / 2 / 3 make a call (the page then opens the next
// disagreement), n goes on without a call, z undoes the last call, r reveals the image, e edits the note,
// b goes back to the filtered list. Keys are ignored while typing in the note.
(function () {
  "use strict";
  const $ = (selector) => document.querySelector(selector);
  const follow = (selector) => { const link = $(selector); if (link) link.click(); };

  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA")) {
      if (event.key === "Escape") target.blur();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const call = $(`#call-form button[data-key="${event.key}"]`);
    const actions = {
      n: () => follow("#next-link"),
      b: () => follow("#back-link"),
      z: () => follow("#undo-button"),
      r: () => follow("#reveal-button"),
      e: () => { const note = $("#note"); if (note) note.focus(); },
    };
    const action = call ? () => call.click() : actions[event.key];
    if (!action) return;
    event.preventDefault();
    action();
  });
})();
