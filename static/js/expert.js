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

  function showCursor() {
    steps().forEach((li, i) => li.classList.toggle("current", i === cursor));
  }

  function setCursor(index) {
    const all = steps();
    if (!all.length) return;
    cursor = Math.max(0, Math.min(all.length - 1, index));
    showCursor();
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

  // Only a swap of the whole workspace (a submit or skip answered) moves the page; the lease line's renewal every two
  // minutes leaves the expert where she was, typing included. A refused submit answers with the same item and its
  // error: what the expert had open stays open (the revealed image, moved over rather than fetched and recorded
  // again; the guidelines; the step cursor), and the page stays where it was.
  let kept = null;
  let cursorOnSettle = false;  // the step classes are the server's until htmx has settled the new workspace
  document.addEventListener("htmx:beforeSwap", (event) => {
    const old = $("#workspace");
    const img = $("#qta-img");
    kept = old && event.detail.target === old ? {
      slot: old.dataset.slot,
      image: img && !img.classList.contains("blurred") ? img : null,
      guidelines: Boolean($("#guidelines") && $("#guidelines").open),
    } : null;
  });

  document.addEventListener("htmx:afterSwap", () => {
    const workspace = $("#workspace");
    const was = kept;
    kept = null;
    if (!workspace || !was) return;
    if (document.activeElement) document.activeElement.blur();
    if (was.slot !== workspace.dataset.slot) {  // a new item: start at its top
      cursor = -1;
      window.scrollTo(0, 0);
      return;
    }
    const fresh = $("#qta-img");
    if (was.image && fresh) {
      fresh.replaceWith(was.image);
      const button = $("#reveal-button");
      if (button) button.hidden = true;
    }
    if (was.guidelines && $("#guidelines")) $("#guidelines").open = true;
    cursorOnSettle = true;
  });

  document.addEventListener("htmx:afterSettle", () => {
    if (cursorOnSettle) showCursor();
    cursorOnSettle = false;
  });
})();
