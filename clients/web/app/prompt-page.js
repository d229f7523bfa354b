/**
 * The live prompt page: text to image, redrawn as the prompt is edited.
 *
 * Each edit is a `frame` without an image, carrying the changed params and an
 * id, so every picture is matched to its request (the latency readout) and the
 * client's latest-wins rule applies: typing faster than the model draws sends
 * only the newest prompt once the picture in flight is back.
 */

import { ErrorCode, LivegenClient, defaultUrl } from "../livegen.js";
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
} from "./common.js";
import { OutputInset } from "./inset.js";

const settings = new Settings("livegen.prompt", {
  prompt: "",
  secondPrompt: "",
  blend: 0.5,
  steps: 1,
  size: "square",
  seed: 0,
  seedLocked: true,
});

const client = new LivegenClient();
const toast = new Toast($("#toast"));
const output = new OutputView($("#output"), { stage: $("#output-stage"), placeholder: $("#placeholder") });
const readout = new Readout($("#fps"), $("#latency"), client);
const promptBox = $("#prompt");
const secondBox = $("#prompt-2");
const blendSlider = $("#blend");
const steps = $("#steps");
const sizeSelect = $("#size");
let textToImage = true; // until the server says its pipeline needs an input image
let sizes = {};
const inset = new OutputInset(output, $(".panel-prompt .prompt"));

window.livegen = { client, output, readout, inset };

keepIcons();
bindStatus(client, $("#status"), $("#pipeline"));
bindPlaceholder(client, output, "Type a prompt: the picture appears as you write.");
bindIgnoredParams(client);
closeWithPage(client);

// Params changed while the prompt is empty: they go with the first picture asked
// for (a params.update would draw one for the empty prompt).
let heldParams = {};

/** Ask for a picture with `params` changed (nothing while the prompt is empty). */
function draw(params = {}) {
  if (!textToImage) return;
  const fresh = seed.next();
  Object.assign(heldParams, params, fresh === null ? {} : { seed: fresh });
  if (promptBox.value.trim() === "") return;
  client.sendFrame(null, { params: heldParams });
  heldParams = {};
}

/** Square, landscape and portrait at the model's native size, in its 64 px steps. */
function sizeChoices(width, height) {
  const side = Math.max(width, height);
  const long = Math.max(64, Math.round((side * 1.5) / 64) * 64);
  return {
    square: [side, side],
    landscape: [long, side],
    portrait: [side, long],
  };
}

function fillSizes(session) {
  sizes = sizeChoices(session.params.width, session.params.height);
  const chosen = sizes[settings.get("size")] ? settings.get("size") : "square";
  sizeSelect.replaceChildren(
    ...Object.entries(sizes).map(([name, [width, height]]) => {
      const option = new Option(`${name[0].toUpperCase()}${name.slice(1)} · ${width}×${height}`, name);
      option.selected = name === chosen;
      return option;
    }),
  );
  return chosen;
}

/** Say, where the picture would be, that this server's pipeline cannot draw from text. */
function showNeedsImage() {
  textToImage = false;
  sizeSelect.disabled = true;
  const message = document.createElement("div");
  message.innerHTML =
    `<p><b>This server's pipeline, <code></code>, needs an input image.</b></p>` +
    `<p>Draw on the <a href="./">Sketch</a> page, or start livegen with a model:</p>` +
    `<code class="command">livegen serve --pipeline sd-turbo --model stabilityai/sd-turbo</code>`;
  message.querySelector("code").textContent = client.session?.pipeline ?? "?";
  message.className = "needs-image";
  output.showMessage(message);
}

client.addEventListener("session", ({ detail: session }) => {
  steps.max = String(maxSteps(session.pipeline));
  if (session.needs_image) {
    showNeedsImage(); // told at the start: no promise of pictures first
    return;
  }
  if (!session.isNew) return;
  textToImage = true;
  heldParams = {};
  const chosen = fillSizes(session);
  const [width, height] = sizes[chosen];
  steps.value = String(Math.min(Number(settings.get("steps")), Number(steps.max)));
  showSteps();
  draw({ ...promptParams(), steps: Number(steps.value), width, height });
});

bindOutput(client, output, readout, $("#save"));

client.addEventListener("error", ({ detail: error }) => {
  if (error.code === ErrorCode.INVALID_FIELD && error.id !== null) {
    // The pipeline cannot draw from text alone, and the server is too old to say so at the start.
    showNeedsImage();
    return;
  }
  const text = describeError(error);
  if (text) toast.show(text, { kind: error.code === ErrorCode.SESSION_NOT_FOUND ? "info" : "error" });
});

const seed = new SeedControl($(".seed"), { settings, onChange: (value) => draw({ seed: value }) });

/**
 * The prompt, or with a second one the blend of both: weights 1 − b and b, mixed
 * by slerp in embedding space, so the slider moves the picture smoothly (each text
 * is encoded once; moving the slider runs no text encoder on the server).
 */
function promptParams() {
  const second = secondBox.value.trim();
  $(".blend").classList.toggle("off", second === "");
  if (second === "") return { prompt: promptBox.value };
  const b = Number(blendSlider.value);
  return {
    prompt: [
      [promptBox.value, 1 - b],
      [secondBox.value, b],
    ],
    prompt_blend: "slerp",
  };
}

promptBox.value = settings.get("prompt");
secondBox.value = settings.get("secondPrompt");
promptBox.addEventListener("input", () => {
  settings.set("prompt", promptBox.value);
  draw(promptParams());
});
secondBox.addEventListener("input", () => {
  settings.set("secondPrompt", secondBox.value);
  draw(promptParams());
});
bindParamRange(blendSlider, $("#blend-value"), {
  settings,
  name: "blend",
  send: () => draw(promptParams()),
  format: (value) => value.toFixed(2),
});

for (const chip of document.querySelectorAll("#suggestions .chip")) {
  chip.addEventListener("click", () => {
    promptBox.value = chip.textContent.trim();
    promptBox.dispatchEvent(new Event("input"));
    promptBox.focus();
  });
}

const showSteps = bindParamRange(steps, $("#steps-value"), { settings, name: "steps", send: draw });

sizeSelect.addEventListener("change", () => {
  settings.set("size", sizeSelect.value);
  const [width, height] = sizes[sizeSelect.value];
  draw({ width, height });
});

document.addEventListener("keydown", (event) => {
  if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "s") {
    event.preventDefault();
    output.save();
  } else if (event.altKey && event.code === "KeyR") {
    event.preventDefault();
    seed.reroll();
  }
});

client
  .connect(defaultUrl(), {
    params: { prompt: settings.get("prompt"), seed: Number(settings.get("seed")) },
  })
  .catch(() => {}); // the status pill tells; the client keeps retrying where it can
