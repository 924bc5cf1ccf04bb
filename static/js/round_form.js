// The training round launch form (Django admin): a hyperparameter left alone follows the preset (and max_length the
// base checkpoint's token budget); the effective batch and the config block follow every edit. The server resolves
// and checks the config again on Preview and on Launch: this script only keeps what the page shows in step.
(function () {
  "use strict";

  function start() {
    const form = document.getElementById("round-form");
    const data = document.getElementById("round-defaults");
    if (!form || !data) return;
    const defaults = JSON.parse(data.textContent);
    const names = Object.keys(defaults.presets.default);
    const el = form.elements;
    const field = (name) => el["hp_" + name];
    const baseId = () => (el.base_checkpoint ? el.base_checkpoint.value : defaults.fixed_base);

    // What a round takes with no override: the preset's values, then the base's token budget as max_length.
    function effective(preset, base) {
      const values = Object.assign({}, defaults.presets[preset] || defaults.presets.default);
      if (defaults.budgets[base]) values.max_length = defaults.budgets[base];
      return values;
    }

    // A field as the server reads it: empty is no override; a number that does not parse is NaN.
    function read(name, fallback) {
      const input = field(name);
      const raw = input ? input.value.trim() : "";
      if (raw === "") return fallback;
      const kind = typeof defaults.presets.default[name];
      if (kind === "boolean") return raw === "True";
      if (kind === "number") return Number(raw);
      return raw;
    }
    const shown = (value) => (typeof value === "boolean" ? (value ? "True" : "False") : String(value));

    function update() {
      const current = effective(el.preset.value, baseId());
      const values = {};
      const bad = [];
      for (const name of names) {
        const value = read(name, current[name]);
        if (typeof value === "number" && !Number.isFinite(value)) bad.push(name);
        values[name] = value;
      }
      const batch = document.getElementById("effective-batch");
      if (batch) {
        const gpus = defaults.gpus;
        batch.textContent = bad.includes("batch_size") || bad.includes("gradient_accumulation")
          ? "—"
          : `${values.batch_size} × ${values.gradient_accumulation} × ${gpus} process${gpus === 1 ? "" : "es"} = ` +
            `${values.batch_size * values.gradient_accumulation * gpus} records per update`;
      }
      for (const name of bad) values[name] = `not a number: ${field(name).value}`;
      document.getElementById("round-config").textContent = JSON.stringify(values, null, 2);
      const base = el.base_checkpoint;
      if (base) {
        document.getElementById("config-base").textContent =
          base.value ? base.options[base.selectedIndex].text : "(none chosen)";
      }
      const snapshot = el.snapshot, label = document.getElementById("config-snapshot");
      if (snapshot && label) {
        label.textContent = snapshot.value ? snapshot.options[snapshot.selectedIndex].text : label.dataset.none;
      }
    }

    // The preset or the base changed: the fields still holding what the form was filled with take the new values.
    function refill() {
      const filledBase = el.filled_base.value || baseId();
      const before = effective(el.filled_preset.value || el.preset.value, filledBase);
      const after = effective(el.preset.value, baseId());
      for (const name of names) {
        const input = field(name);
        if (input && read(name, before[name]) === before[name]) input.value = shown(after[name]);
      }
      el.filled_preset.value = el.preset.value;
      el.filled_base.value = baseId();
      update();
    }

    form.addEventListener("input", update);
    form.addEventListener("change", (event) => {
      if (event.target === el.preset || event.target === el.base_checkpoint) refill();
      else update();
    });
    document.getElementById("config-live").hidden = false;
  }

  document.addEventListener("DOMContentLoaded", start);
})();
