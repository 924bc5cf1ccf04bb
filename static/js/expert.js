// The expert labelling page: keyboard control, analysis prefill, first-harmful-step marking, image reveal.
// Everything works on the current #workspace, which htmx replaces after each submit or skip.
(function () {
  "use strict";

  let cursor = -1;  // index of the highlighted reasoning step

  const $ = (selector) => document.querySelector(selector);
  const steps = () => Array.from(document.querySelectorAll("#steps li.step"));

  function hint(text) {
    const el = $("#hint");
    if (el) el.textContent = text;
  }

  function setCursor(index) {
    const all = steps();
    if (!all.length) return;
    cursor = Math.max(0, Math.min(all.length - 1, index));
    all.forEach((li, i) => li.classList.toggle("current", i === cursor));
    all[cursor].scrollIntoView({ block: "nearest" });
  }

  function prefill(juror) {
    const article = document.querySelector(`.juror[data-juror="${CSS.escape(juror)}"]`);
    const analysis = $("#analysis");
    if (!article || !analysis) return;
    analysis.value = article.querySelector(".juror-analysis").textContent;
    analysis.dataset.edited = "";
    $("#prefilled-from").value = juror;
  }

  // Picking a judgment starts the analysis from the juror who gave that judgment, until the expert edits it.
  function choose(value) {
    const radio = document.querySelector(`#label-form input[name="judgment"][value="${value}"]`);
    if (!radio) return;
    radio.checked = true;
    const analysis = $("#analysis");
    const juror = document.querySelector(`.juror[data-judgment="${value}"]`);
    if (juror && analysis && !analysis.dataset.edited) prefill(juror.dataset.juror);
    hint("");
  }

  function mark(step) {
    const field = $("#first-harmful-step");
    if (!field) return;
    field.value = field.value === String(step) ? "" : String(step);
    steps().forEach((li) => li.classList.toggle("harmful", li.dataset.step === field.value));
    $("#marked-step").textContent = field.value || "none";
  }

  function reveal() {
    const img = $("#qta-img");
    if (!img || !img.classList.contains("blurred")) return;
    img.src = img.dataset.fullSrc;  // the real image; its request is what the audit log records
    img.classList.remove("blurred");
    img.alt = img.alt.replace(" (blurred until revealed)", "");
    const button = $("#reveal-button");
    if (button) button.hidden = true;
  }

  function submit() {
    const form = $("#label-form");
    if (!form) return;
    if (!form.querySelector('input[name="judgment"]:checked')) {
      hint("Pick a judgment first: 0, 5 (for 0.5) or 1.");
      return;
    }
    if (!$("#analysis").value.trim()) {
      hint("Write an analysis (e to edit) or start from a juror's.");
      return;
    }
    // A workspace swapped in a moment ago may not be wired to htmx yet: wire it now (idempotent), so the
    // submit goes through htmx and never falls back to a full page load.
    if (window.htmx) window.htmx.process(form);
    form.requestSubmit($("#submit-button"));
  }

  function toggleHelp() {
    const dialog = $("#keys-help");
    if (!dialog) return;
    if (dialog.open) dialog.close();
    else dialog.showModal();
  }

  const typingIn = (el) =>
    el && (el.tagName === "TEXTAREA" || el.isContentEditable ||
           (el.tagName === "INPUT" && !["radio", "checkbox", "hidden"].includes(el.type)));

  document.addEventListener("keydown", (event) => {
    if (!$("#label-form")) return;
    const target = event.target;
    if (typingIn(target)) {
      if (event.key === "Escape") target.blur();
      else if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        submit();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if ($("#keys-help") && $("#keys-help").open && event.key !== "?") return;
    const actions = {
      "0": () => choose("0"),
      "5": () => choose("0.5"),
      "1": () => choose("1"),
      "Enter": submit,
      "s": () => { if ($("#skip-button")) $("#skip-button").click(); },
      "g": () => { const panel = $("#guidelines"); if (panel) panel.open = !panel.open; },
      "j": () => setCursor(cursor + 1),
      "k": () => setCursor(cursor - 1),
      "x": () => { if (cursor >= 0) mark(steps()[cursor].dataset.step); },
      "r": reveal,
      "e": () => $("#analysis").focus(),
      "?": toggleHelp,
    };
    const action = actions[event.key];
    // Enter on a focused button or link keeps its own meaning.
    if (!action || (event.key === "Enter" && ["BUTTON", "A"].includes(target.tagName))) return;
    event.preventDefault();
    action();
  });

  document.addEventListener("click", (event) => {
    const target = event.target.closest("button, li.step");
    if (!target) return;
    if (target.classList.contains("use-analysis")) prefill(target.dataset.juror);
    else if (target.classList.contains("mark-step")) mark(target.dataset.step);
    else if (target.id === "reveal-button") reveal();
    else if (target.matches("li.step")) setCursor(steps().indexOf(target));
  });

  document.addEventListener("change", (event) => {
    if (event.target.matches('#label-form input[name="judgment"]')) choose(event.target.value);
  });

  document.addEventListener("input", (event) => {
    if (event.target.id === "analysis") event.target.dataset.edited = "1";
  });

  // A new item arrived: start at the top, with the keyboard on the page rather than a stale button.
  document.addEventListener("htmx:afterSwap", () => {
    if (!$("#workspace")) return;
    cursor = -1;
    if (document.activeElement) document.activeElement.blur();
    window.scrollTo(0, 0);
  });
})();
