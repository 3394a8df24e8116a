"use strict";
// fastrnnRender(data, root): the view of fastrnn visualize's data (see fastrnn/visualize.py) built inside root.
// A fragment "#state=h_l1&unit=12" in the page's address opens that unit's view.
function fastrnnRender(data, root) {
  const t0 = performance.now();
  const el = (tag, attrs = {}, text) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  root.replaceChildren();
  const text = Array.from(data.text);  // one entry per code point, as Python counts characters
  const m = data.model;
  root.appendChild(el("div", {class: "fr-summary"},
    `${m.num_layers}-layer ${m.cell}, hidden ${m.hidden_size}, ${m.vocab_size} ${m.unit}, ` +
    `${m.parameters.toLocaleString("en")} parameters, ${m.dtype}. ${data.source}: ` +
    `${text.length.toLocaleString("en")} ${m.unit}, ${data.nats_per_char.toFixed(4)} nats/char ` +
    `(${data.bits_per_char.toFixed(4)} bits/char).`));
  const controls = root.appendChild(el("div", {class: "fr-controls"}));
  const mode = el("select", {class: "fr-mode"});
  mode.append(el("option", {value: "prob"}, "probability of each character"),
              el("option", {value: "neuron"}, "a unit's activation"));
  const stateSelect = el("select", {class: "fr-state"});
  for (const name of Object.keys(data.activations)) stateSelect.appendChild(el("option", {value: name}, name));
  const unitInput = el("input", {class: "fr-unit", type: "number", min: "0", max: String(m.hidden_size - 1),
                                 value: "0", style: "width:6em"});
  const legend = el("span", {class: "fr-legend"});
  const label = (name, input) => { const l = el("label", {}, name + " "); l.appendChild(input); return l; };
  controls.append(label("colour by", mode), label("state", stateSelect), label("unit", unitInput), legend);
  const layout = root.appendChild(el("div", {class: "fr-layout"}));
  const box = layout.appendChild(el("div", {class: "fr-text", "aria-label": "text"}));
  const side = layout.appendChild(el("div", {class: "fr-side"}));
  const tip = side.appendChild(el("div", {class: "fr-tip"}, "hover over a character"));
  side.appendChild(el("h2", {}, "units that track features"));
  const table = side.appendChild(el("table", {class: "fr-ranking"}));
  const head = table.appendChild(el("thead")).appendChild(el("tr"));
  for (const h of ["feature", "state", "unit", "r"]) head.appendChild(el("th", {}, h));
  const body = table.appendChild(el("tbody"));

  const shown = (ch) => ch === "\n" ? "\\n" : ch === "\t" ? "\\t" : ch === " " ? "\u2423" : ch;
  const decoded = {};
  function activations(name) {  // int8 row-major (N, H) -> Float32Array of values
    if (!decoded[name]) {
      const entry = data.activations[name], bin = atob(entry.int8), out = new Float32Array(bin.length);
      for (let i = 0; i < bin.length; i++) out[i] = ((bin.charCodeAt(i) << 24) >> 24) * entry.scale;
      decoded[name] = out;
    }
    return decoded[name];
  }
  const spans = new Array(text.length), frag = document.createDocumentFragment();
  for (let i = 0; i < text.length; i++) {
    const s = el("span", {"data-i": String(i)}, text[i]);
    spans[i] = s;
    frag.appendChild(s);
  }
  box.appendChild(frag);

  const probColour = (p) => `hsl(${Math.round(120 * p)}, 75%, ${Math.round(88 - 18 * (1 - p))}%)`;
  const activationColour = (v) => {  // v in [-1, 1]
    const a = Math.min(1, Math.abs(v)).toFixed(3);
    return v >= 0 ? `rgba(30, 100, 255, ${a})` : `rgba(235, 80, 20, ${a})`;
  };
  function paint() {
    if (mode.value === "prob") {
      spans[0].style.background = "#eee";
      for (let i = 1; i < spans.length; i++) spans[i].style.background = probColour(Math.exp(data.log_probs[i - 1]));
      legend.textContent = "green: likely (p near 1), red: unlikely; the first character is not predicted";
      return;
    }
    const name = stateSelect.value, H = data.activations[name].shape[1];
    const unit = Math.max(0, Math.min(H - 1, parseInt(unitInput.value || "0", 10) || 0));
    unitInput.value = unit;
    const a = activations(name);
    let peak = 0;
    for (let i = 0; i < spans.length; i++) peak = Math.max(peak, Math.abs(a[i * H + unit]));
    const norm = peak > 0 ? peak : 1;
    for (let i = 0; i < spans.length; i++) spans[i].style.background = activationColour(a[i * H + unit] / norm);
    legend.textContent = `${name} unit ${unit} after each character: blue positive, orange negative ` +
      `(full colour at |value| ${peak.toFixed(3)})`;
  }

  let selected = null;
  box.addEventListener("mouseover", (e) => {
    const s = e.target.closest("span[data-i]");
    if (!s) return;
    if (selected) selected.classList.remove("fr-sel");
    selected = s;
    s.classList.add("fr-sel");
    const i = +s.dataset.i;
    const lines = [`position ${i}: ${shown(text[i])}`,
                   i > 0 ? `p(this character) = ${Math.exp(data.log_probs[i - 1]).toFixed(4)}` : "(not predicted)"];
    if (mode.value === "neuron") {
      const H = data.activations[stateSelect.value].shape[1];
      lines.push(`${stateSelect.value}[${unitInput.value}] = ` +
                 `${activations(stateSelect.value)[i * H + (+unitInput.value)].toFixed(3)}`);
    }
    lines.push("next character:");
    data.top_ids[i].forEach((id, k) => lines.push(`  ${shown(data.symbols[id]).padEnd(3)} ${data.top_probs[i][k].toFixed(4)}`));
    tip.textContent = lines.join("\n");
  });

  for (const row of data.ranking) {
    const tr = body.appendChild(el("tr", {title: data.features[row.feature] || ""}));
    tr.append(el("td", {}, row.feature), el("td", {}, row.state), el("td", {class: "num"}, String(row.unit)),
              el("td", {class: "num"}, row.score.toFixed(3)));
    tr.addEventListener("click", () => {
      mode.value = "neuron";
      stateSelect.value = row.state;
      unitInput.value = row.unit;
      paint();
    });
  }
  const wanted = new URLSearchParams(location.hash.slice(1));
  if (wanted.has("state") && data.activations[wanted.get("state")]) {
    mode.value = "neuron";
    stateSelect.value = wanted.get("state");
    unitInput.value = wanted.get("unit") || "0";
  }
  mode.addEventListener("change", paint);
  stateSelect.addEventListener("change", paint);
  unitInput.addEventListener("input", paint);
  paint();
  root.dataset.renderMs = (performance.now() - t0).toFixed(0);  // this call: the view built and painted
  return root;
}
