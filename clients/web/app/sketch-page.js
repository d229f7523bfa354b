/**
 * The sketch-to-image page: draw on the left, the model's picture on the right,
 * updated while drawing.
 *
 * Every change of the canvas asks the client for a frame; the client keeps at
 * most one in flight and encodes the canvas only when a frame actually leaves
 * (the frame source is a function), so a fast stroke sends the freshest
 * drawing as often as the server answers, never a backlog. Prompt and sliders
 * go as params.update: the server reruns the current sketch with them.
 */

import { LivegenClient, defaultUrl } from "../livegen.js";
import {
  $,
  OutputView,
  Readout,
  SeedControl,
  Settings,
  Toast,
  bindIgnoredParams,
  bindOutput,
  bindParamRange,
  bindPlaceholder,
  bindStatus,
  closeWithPage,
  describeError,
  keepIcons,
  maxSteps,
  typingInField,
} from "./common.js";
import { CanvasEncoder } from "./encoder.js";
import { OutputInset } from "./inset.js";
import { SketchPad } from "./sketch.js";

const CANVAS_LONG_SIDE = 512; // pixels sent, whatever size the model renders at

const settings = new Settings("livegen.sketch", {
  prompt: "",
  strength: 0.5,
  steps: 1,
  seed: 0,
  seedLocked: true,
  brushSize: 8,
  color: "#1b1b1f",
  structureOn: true,
  structureName: "",
  controlScale: 1,
  invert: true,
});

const client = new LivegenClient();
const pad = new SketchPad($("#sketch"));
const encoder = new CanvasEncoder({ type: "image/jpeg", quality: 0.9 });
const toast = new Toast($("#toast"));
const output = new OutputView($("#output"), { stage: $("#output-stage"), placeholder: $("#placeholder") });
const readout = new Readout($("#fps"), $("#latency"), client);
const inset = new OutputInset(output, $(".panel-sketch .stage"));
const promptBox = $("#prompt");
const strength = $("#strength");
const steps = $("#steps");

// For the console and for tests: the live objects of this page.
window.livegen = { client, pad, output, readout, inset };

// Connection.

keepIcons();
bindStatus(client, $("#status"), $("#pipeline"));
bindPlaceholder(client, output, "Draw on the canvas: the picture follows every stroke.");
bindIgnoredParams(client);
closeWithPage(client);

const sketchFrame = () => encoder.encode(pad.canvas);
const sendSketch = (params) => client.sendFrame(sketchFrame, params ? { params } : {});

client.addEventListener("session", ({ detail: session }) => {
  steps.max = String(maxSteps(session.pipeline));
  if (!session.isNew) return; // resumed: the server kept the sketch and the params
  const { width, height } = session.params;
  const scale = CANVAS_LONG_SIDE / Math.max(width, height);
  pad.resize(Math.round(width * scale), Math.round(height * scale));
  // A new session knows nothing of this page: send what it shows, params first.
  const wanted = { steps: Math.min(Number(settings.get("steps")), Number(steps.max)) };
  if (promptBox.value !== session.params.prompt) wanted.prompt = promptBox.value;
  steps.value = String(wanted.steps);
  showSteps();
  sendSketch({ ...wanted, ...structure.offer(session) });
});

bindOutput(client, output, readout, $("#save"));

client.addEventListener("error", ({ detail: error }) => {
  const text = describeError(error);
  if (text) toast.show(text, { kind: error.code === "session_not_found" ? "info" : "error" });
});

client
  .connect(defaultUrl(), {
    params: {
      prompt: settings.get("prompt"),
      strength: Number(settings.get("strength")),
      seed: Number(settings.get("seed")),
    },
  })
  .catch(() => {}); // the status pill tells; the client keeps retrying where it can

// Structure control: the picture follows the strokes through a ControlNet or
// T2I-Adapter, when the server has one (session.started says which).

class StructureControl {
  constructor(root) {
    this.root = root;
    this.on = $("#structure-on", root);
    this.name = $("#structure-name", root);
    this.scale = $("#control-scale", root);
    this.invert = $("#structure-invert", root);
    this.on.checked = Boolean(settings.get("structureOn"));
    this.invert.checked = Boolean(settings.get("invert"));
    this.showScale = bindParamRange(this.scale, $("#control-scale-value", root), {
      settings,
      name: "controlScale",
      send: () => this.send(),
      format: (value) => value.toFixed(2),
    });
    for (const field of [this.name, this.invert]) {
      field.addEventListener("change", () => this.send());
    }
    // Switched on, the lines alone shape the picture; the strength slider can still lower it.
    this.on.addEventListener("change", () => this.send(this.on.checked ? { strength: this.lines() } : {}));
  }

  /** The params of a new session: this control, if the server has it. */
  offer(session) {
    const names = [...(session.controls?.controlnet ?? []), ...(session.controls?.t2i_adapter ?? [])];
    this.root.hidden = names.length === 0;
    this.name.hidden = names.length < 2;
    this.name.replaceChildren(...names.map((name) => new Option(name, name)));
    if (names.includes(settings.get("structureName"))) this.name.value = settings.get("structureName");
    if (!names.length) return {};
    // Switched on, a new session starts from the lines alone (strength 1).
    return this.on.checked ? { ...this.params(), strength: this.lines() } : this.params();
  }

  /** Strength 1, shown on its slider and saved: the strokes' flat colours are no starting picture. */
  lines() {
    strength.value = "1";
    settings.set("strength", 1);
    showStrength();
    return 1;
  }

  params() {
    this.scale.disabled = this.name.disabled = this.invert.disabled = !this.on.checked;
    if (!this.on.checked || !this.name.value) return { controlnet: "" };
    return {
      controlnet: this.name.value,
      control_scale: Number(this.scale.value),
      invert: this.invert.checked,
    };
  }

  send(extra = {}) {
    settings.set("structureOn", this.on.checked);
    settings.set("structureName", this.name.value);
    settings.set("invert", this.invert.checked);
    client.updateParams({ ...this.params(), ...extra });
  }
}

const structure = new StructureControl($("#structure"));

// Drawing.

const seed = new SeedControl($(".seed"), {
  settings,
  onChange: (value) => client.updateParams({ seed: value }),
});

// An unlocked seed changes with each stroke, sent with the stroke's first frame.
let strokeParams = null;
pad.addEventListener("strokestart", () => {
  const fresh = seed.next();
  if (fresh !== null) strokeParams = { seed: fresh };
});

pad.addEventListener("change", () => {
  sendSketch(strokeParams);
  strokeParams = null;
  $("#undo").disabled = !pad.canUndo;
  $("#redo").disabled = !pad.canRedo;
  $("#clear").disabled = pad.blank;
});

function setTool(tool) {
  pad.tool = tool;
  for (const button of document.querySelectorAll("[data-tool]")) {
    button.setAttribute("aria-pressed", String(button.dataset.tool === tool));
  }
}

function setColor(color) {
  pad.color = color;
  settings.set("color", color);
  let matched = false;
  for (const swatch of document.querySelectorAll(".swatch[data-color]")) {
    const on = swatch.dataset.color === color;
    matched ||= on;
    swatch.setAttribute("aria-checked", String(on));
  }
  const custom = $(".swatch-custom");
  custom.setAttribute("aria-checked", String(!matched));
  if (!matched) {
    $("#custom-color").value = color;
    custom.style.background = color;
  }
  $("#size-dot").style.background = color;
  setTool("brush");
}

function setSize(size) {
  pad.size = size;
  $("#brush-size").value = String(size);
  settings.set("brushSize", size);
  const dot = Math.max(3, Math.min(22, size * 0.55 + 2));
  $("#size-dot").style.width = $("#size-dot").style.height = `${dot}px`;
}

for (const button of document.querySelectorAll("[data-tool]")) {
  button.addEventListener("click", () => setTool(button.dataset.tool));
}
for (const swatch of document.querySelectorAll(".swatch[data-color]")) {
  swatch.addEventListener("click", () => setColor(swatch.dataset.color));
}
$("#custom-color").addEventListener("input", (event) => setColor(event.target.value));
$("#brush-size").addEventListener("input", (event) => setSize(Number(event.target.value)));
$("#undo").addEventListener("click", () => pad.undo());
$("#redo").addEventListener("click", () => pad.redo());
$("#clear").addEventListener("click", () => pad.clear());

setColor(settings.get("color"));
setSize(Number(settings.get("brushSize")));

// Prompt and params.

promptBox.value = settings.get("prompt");
promptBox.addEventListener("input", () => {
  settings.set("prompt", promptBox.value);
  client.updateParams({ prompt: promptBox.value });
});

const sendParams = (params) => client.updateParams(params);
const showStrength = bindParamRange(strength, $("#strength-value"), {
  settings,
  name: "strength",
  send: sendParams,
  format: (value) => value.toFixed(2),
});
const showSteps = bindParamRange(steps, $("#steps-value"), { settings, name: "steps", send: sendParams });

// Keyboard: undo and redo, tools, brush size, save, seed.

document.addEventListener("keydown", (event) => {
  const mod = event.ctrlKey || event.metaKey;
  const key = event.key.toLowerCase();
  if (mod && key === "s") {
    event.preventDefault();
    output.save();
    return;
  }
  if (typingInField(event)) return; // the text field's own undo and keys
  if (mod && key === "z") {
    event.preventDefault();
    if (event.shiftKey) pad.redo();
    else pad.undo();
  } else if (mod && key === "y") {
    event.preventDefault();
    pad.redo();
  } else if (mod || event.altKey) {
    return;
  } else if (key === "b") {
    setTool("brush");
  } else if (key === "e") {
    setTool("eraser");
  } else if (key === "[") {
    setSize(Math.max(1, pad.size - 2));
  } else if (key === "]") {
    setSize(Math.min(64, pad.size + 2));
  } else if (key === "r") {
    seed.reroll();
  }
});
