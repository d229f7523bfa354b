/**
 * What the pages share: the connection status pill, messages, the output
 * view, the fps and latency readout, sliders and the seed control for params,
 * controls of params the pipeline ignores, the icons, saved settings and
 * keyboard shortcuts. Each piece takes its elements and a LivegenClient; none
 * knows which page it is on.
 */

import { ErrorCode, MAX_SEED, State, defaultUrl, randomSeed } from "../livegen.js";

/** Most UNet passes each pipeline family takes (README, Params); others take up to 50. */
const MAX_STEPS = { "sd-turbo": 4, lcm: 8 };

export function maxSteps(pipeline) {
  return MAX_STEPS[pipeline] ?? 50;
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** True when keys typed now go to a text field, not to the page's shortcuts. */
export function typingInField(event) {
  const target = event.target;
  if (!(target instanceof HTMLElement)) return false;
  if (target.isContentEditable || target.tagName === "TEXTAREA") return true;
  return (
    target.tagName === "INPUT" && !["range", "checkbox", "radio", "button", "color"].includes(target.type)
  );
}

const ICONS_URL = "img/icons.svg";
const ICON_ID_PREFIX = "icon-"; // in the page, the sprite's ids must not meet the page's own (#undo)
let iconsInPage = false;

/** The `href` of a `<use>` that shows icon `name`. */
function iconHref(name) {
  return iconsInPage ? `#${ICON_ID_PREFIX}${name}` : `${ICONS_URL}#${name}`;
}

/** Show icon `name` in `use` (an SVG `<use>` element). */
export function setIcon(use, name) {
  use.setAttribute("href", iconHref(name));
}

/**
 * Put the icon sprite into the page, once, and point every icon at it. An icon
 * drawn later (the Stop button's, the seed lock's) then needs no request: one
 * made while the server is unreachable would otherwise stay blank.
 */
export async function keepIcons() {
  let sprite;
  try {
    const answer = await fetch(ICONS_URL);
    if (!answer.ok) return;
    sprite = new DOMParser().parseFromString(await answer.text(), "image/svg+xml").documentElement;
  } catch {
    return; // the icons keep their address: they show whenever the server does
  }
  if (sprite.localName !== "svg") return;
  for (const symbol of sprite.querySelectorAll("symbol[id]")) symbol.id = `${ICON_ID_PREFIX}${symbol.id}`;
  sprite.setAttribute("aria-hidden", "true");
  sprite.classList.add("icon-sprite");
  document.body.prepend(document.importNode(sprite, true));
  iconsInPage = true;
  const prefix = `${ICONS_URL}#`;
  for (const use of document.querySelectorAll("use")) {
    const href = use.getAttribute("href") ?? "";
    if (href.startsWith(prefix)) setIcon(use, href.slice(prefix.length));
  }
}

/**
 * Controls of params the server's pipeline ignores look and act switched off.
 * Each element with `data-param` (names separated by spaces: switched off when
 * the pipeline ignores them all) is dimmed and tagged, and its fields are
 * disabled, after each `session.started` that lists `ignored_params`. A server
 * too old to say leaves every control live.
 */
export function bindIgnoredParams(client, root = document) {
  client.addEventListener("session", ({ detail: session }) => {
    const ignored = new Set(session.ignored_params ?? []);
    for (const control of root.querySelectorAll("[data-param]")) {
      const off = control.dataset.param.split(/\s+/).every((name) => ignored.has(name));
      control.classList.toggle("ignored", off);
      control.dataset.title ??= control.title; // the markup's own, back when live again
      control.title = off ? `${session.pipeline} does not use this setting` : control.dataset.title;
      const label = control.querySelector(".field-label");
      let tag = control.querySelector(".ignored-tag");
      if (off && tag === null && label !== null) {
        tag = document.createElement("span");
        tag.className = "ignored-tag";
        tag.textContent = "not used";
        label.append(tag);
      }
      tag?.toggleAttribute("hidden", !off);
      for (const field of control.querySelectorAll("input, textarea, select, button")) {
        // Only what this switched off is switched back on: the page may disable fields too.
        if (off && !field.disabled) {
          field.disabled = true;
          field.dataset.ignored = "";
        } else if (!off && "ignored" in field.dataset) {
          field.disabled = false;
          delete field.dataset.ignored;
        }
      }
    }
  });
}

/** Settings kept across visits, per page; storage that is unavailable is not an error. */
export class Settings {
  constructor(key, defaults) {
    this.key = key;
    let saved = {};
    try {
      saved = JSON.parse(localStorage.getItem(key) ?? "{}") ?? {};
    } catch {
      saved = {};
    }
    this.values = { ...defaults, ...saved };
  }

  get(name) {
    return this.values[name];
  }

  set(name, value) {
    this.values[name] = value;
    clearTimeout(this._timer);
    this._timer = setTimeout(() => {
      try {
        localStorage.setItem(this.key, JSON.stringify(this.values));
      } catch {
        // Private mode or full storage: settings just are not remembered.
      }
    }, 300);
  }
}

/** A short message at the bottom of the screen; a newer one replaces it. */
export class Toast {
  constructor(element) {
    this.element = element;
  }

  show(text, { kind = "error", timeoutMs = 5000 } = {}) {
    this.element.textContent = text;
    this.element.dataset.kind = kind;
    this.element.hidden = false;
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this.hide(), timeoutMs);
  }

  hide() {
    this.element.hidden = true;
  }
}

/** Words for a client error, or null for errors the status pill already tells. */
export function describeError(error) {
  switch (error.code) {
    case ErrorCode.SERVER_BUSY:
    case ErrorCode.UNSUPPORTED_VERSION:
      return null;
    case ErrorCode.INVALID_PARAMS:
      return `Setting refused: ${error.message}`;
    case ErrorCode.PIPELINE_FAILED:
      return `The model failed on that frame: ${error.message}`;
    case ErrorCode.SESSION_NOT_FOUND:
      return "The previous session had expired, so a new one was started.";
    case ErrorCode.RATE_LIMITED:
      return "Too many messages at once; some were skipped.";
    case ErrorCode.IMAGE_TOO_LARGE:
    case ErrorCode.MESSAGE_TOO_BIG:
      return `That frame is too large for the server: ${error.message}`;
    default:
      return error.message;
  }
}

/**
 * Why the server refuses this page's WebSocket, or null when it does not. A
 * browser cannot see why a handshake failed (a missing or expired token), so
 * this asks the same URL with a plain GET, which answers with the server's
 * verdict: 401 or 403 and the reason. Undefined when the server is down.
 */
async function refusal() {
  const url = new URL(defaultUrl());
  url.protocol = url.protocol === "wss:" ? "https:" : "http:";
  let answer;
  try {
    answer = await fetch(url);
  } catch {
    return undefined;
  }
  if (![401, 403].includes(answer.status)) return null;
  const verdict = (await answer.text()).trim();
  return {
    text: url.searchParams.has("token") ? "Token refused" : "Needs a token",
    reason:
      `${verdict.charAt(0).toUpperCase()}${verdict.slice(1)}. ` +
      "Open this page with ?token=… (livegen token --app livegen).",
  };
}

/**
 * Keep the status pill in step with the client's state: connecting, live,
 * reconnecting, server busy, closed (with a button to take the session back)
 * and fatal errors.
 */
export function bindStatus(client, element, pipelineLabel) {
  const text = $(".status-text", element);
  const button = document.createElement("button");
  button.type = "button";
  button.hidden = true;
  button.addEventListener("click", () => client.reconnect());
  element.append(button);
  // Why the server refuses this page, once a never-connected page has asked; the
  // placeholder hears it too, as a "refused" event on the client.
  let refused = null;
  const showWaiting = () => {
    text.textContent = refused?.text ?? "Waiting for server…";
    if (refused) element.title = refused.reason;
  };

  client.addEventListener("state", ({ detail }) => {
    element.dataset.state = detail.state;
    element.title = detail.reason ?? "";
    button.hidden = true;
    switch (detail.state) {
      case State.IDLE:
      case State.CONNECTING:
        text.textContent = "Connecting…";
        break;
      case State.OPEN:
        text.textContent = "Live";
        break;
      case State.RECONNECTING:
        if (client.session === null) {
          showWaiting();
          refusal().then((found) => {
            if (found === undefined || client.state !== State.RECONNECTING) return;
            refused = found;
            showWaiting();
            client.dispatchEvent(new CustomEvent("refused", { detail: found }));
          });
        } else if (detail.reason === "server restarting") {
          text.textContent = "Server restarting…";
        } else {
          text.textContent = "Reconnecting…";
        }
        if ((detail.retryInMs ?? 0) > 1500) {
          button.textContent = "Retry now";
          button.hidden = false;
        }
        break;
      case State.BUSY:
        text.textContent = "Server busy · retrying";
        break;
      case State.CLOSED:
        text.textContent = detail.code === 4001 ? "Open in another tab" : "Disconnected";
        button.textContent = detail.code === 4001 ? "Use here" : "Reconnect";
        button.hidden = false;
        break;
      case State.ERROR:
        text.textContent = `Error: ${detail.reason ?? "cannot connect"}`;
        break;
    }
  });
  client.addEventListener("session", ({ detail }) => {
    pipelineLabel.textContent = detail.pipeline;
    pipelineLabel.hidden = false;
  });
}

/**
 * What the empty output says while there is no picture yet: the page's hint
 * once a session is open (not before: the pipeline may not do what it says),
 * or why nothing can come (busy server, no server, error).
 */
export function bindPlaceholder(client, output, hint) {
  const say = (text) => {
    if (output.latest === null && !output.placeholder.querySelector(".needs-image")) {
      const paragraph = output.placeholder.querySelector("p");
      if (paragraph) paragraph.textContent = text;
    }
  };
  let refused = null; // from bindStatus: why the server refuses a never-connected page
  client.addEventListener("refused", ({ detail }) => {
    refused = detail;
    if (client.session === null) say(refused?.reason ?? "Waiting for the livegen server…");
  });
  client.addEventListener("state", ({ detail }) => {
    switch (detail.state) {
      case State.BUSY:
        say("The server is full: every place is taken. You are in as soon as one frees up.");
        break;
      case State.ERROR:
        say(`Cannot use this server: ${detail.reason}`);
        break;
      case State.CLOSED:
        say("Disconnected.");
        break;
      case State.RECONNECTING:
        say(client.session === null ? (refused?.reason ?? "Waiting for the livegen server…") : hint);
        break;
      case State.OPEN:
        say(hint);
        break;
      default:
        say(client.session === null ? "Connecting to the livegen server…" : hint);
    }
  });
}

/**
 * The generated image: decoded off the main thread (createImageBitmap), drawn
 * into a canvas, newest first: a frame that finishes decoding after a newer
 * one was drawn is thrown away. Fires `framepaint` on the canvas with
 * `{id, drawnAt, receivedAt}` after each frame drawn.
 */
export class OutputView {
  constructor(canvas, { stage, placeholder }) {
    this.canvas = canvas;
    this.stage = stage;
    this.placeholder = placeholder;
    this.context = canvas.getContext("2d", { alpha: false });
    this.latest = null;
    /** Frames being decoded now. */
    this.decoding = 0;
    this._arrived = 0;
    this._drawn = 0;
  }

  async show(frame) {
    const order = ++this._arrived;
    let bitmap;
    this.decoding += 1;
    try {
      bitmap = await frame.bitmap();
    } catch {
      return; // an image the browser cannot decode: keep showing the last good one
    } finally {
      this.decoding -= 1;
    }
    if (order < this._drawn) {
      bitmap.close();
      return;
    }
    this._drawn = order;
    const { canvas } = this;
    if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
      canvas.width = bitmap.width;
      canvas.height = bitmap.height;
      canvas.style.setProperty("--aspect", `${bitmap.width / bitmap.height}`);
    }
    this.context.drawImage(bitmap, 0, 0);
    bitmap.close();
    this.latest = frame;
    canvas.classList.remove("empty");
    this.placeholder.hidden = true;
    canvas.dataset.frameId = String(frame.id);
    canvas.dispatchEvent(
      new CustomEvent("framepaint", {
        detail: { id: frame.id, drawnAt: performance.now(), receivedAt: frame.receivedAt },
      }),
    );
  }

  /** Show `message` (a node or text) where the image would be. */
  showMessage(message) {
    this.placeholder.replaceChildren(...(typeof message === "string" ? [message] : [message]));
    this.placeholder.hidden = false;
  }

  /** Download the frame on show as `livegen-<time>.<ext>`. */
  save() {
    if (this.latest === null) return false;
    const extension = { "image/png": "png", "image/webp": "webp" }[this.latest.contentType] ?? "jpg";
    const stamp = new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-");
    const url = URL.createObjectURL(this.latest.blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = `livegen-${stamp}.${extension}`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
    return true;
  }
}

/**
 * The output panel follows the client: each frame received is counted in the
 * readout and drawn, the stage shows it is working from a request sent until
 * nothing is in flight, and the save button saves the picture shown.
 */
export function bindOutput(client, output, readout, saveButton) {
  client.addEventListener("frame", ({ detail: frame }) => {
    readout.record(frame);
    output.show(frame);
    saveButton.disabled = false;
  });
  client.addEventListener("send", () => output.stage.classList.add("working"));
  const settle = () => {
    if (client.idle) output.stage.classList.remove("working");
  };
  output.canvas.addEventListener("framepaint", settle);
  client.addEventListener("error", settle);
  saveButton.addEventListener("click", () => output.save());
}

/**
 * Live fps (frames received in the last second) and latency (median, from a
 * frame sent to its frame.out, matched by id), shown four times a second. With
 * nothing asked and nothing arriving the fps reads "idle", not 0 (a stall); a
 * model slower than a frame a second reads as its rate over SLOW_WINDOW_MS.
 */
const SLOW_WINDOW_MS = 5000;

export class Readout {
  constructor(fpsElement, latencyElement, client) {
    this.fpsElement = fpsElement;
    this.latencyElement = latencyElement;
    this.client = client;
    this.arrivals = [];
    this.latencies = [];
    setInterval(() => this.render(), 250);
  }

  record(frame) {
    this.arrivals.push(frame.receivedAt);
    if (this.arrivals.length > 240) this.arrivals.splice(0, this.arrivals.length - 240);
    if (frame.latencyMs !== null) {
      this.latencies.push(frame.latencyMs);
      if (this.latencies.length > 15) this.latencies.shift();
    }
  }

  /** {fps, latencyMs}: what the readout shows now. */
  current() {
    const now = performance.now();
    const fps = this.arrivals.filter((at) => now - at <= 1000).length;
    const sorted = [...this.latencies].sort((a, b) => a - b);
    const latencyMs = sorted.length ? sorted[Math.floor(sorted.length / 2)] : null;
    return { fps, latencyMs };
  }

  /** What the fps readout says: a rate, "idle", or "–" (not connected, nothing yet). */
  fpsText(fps) {
    if (fps > 0) return String(fps);
    if (this.client.session === null) return "–";
    if (this.client.idle) return "idle";
    const now = performance.now();
    const recent = this.arrivals.filter((at) => now - at <= SLOW_WINDOW_MS).length;
    return recent > 0 ? (recent / (SLOW_WINDOW_MS / 1000)).toFixed(1) : "–";
  }

  render() {
    const { fps, latencyMs } = this.current();
    const fpsText = this.fpsText(fps);
    this.fpsElement.classList.toggle("idle", fpsText === "idle");
    const latencyText =
      latencyMs === null ? "–" : latencyMs < 10 ? latencyMs.toFixed(1) : String(Math.round(latencyMs));
    if (this.fpsElement.textContent !== fpsText) this.fpsElement.textContent = fpsText;
    if (this.latencyElement.textContent !== latencyText) this.latencyElement.textContent = latencyText;
  }
}

/**
 * A range input for the param `name`, kept in the page's settings: it starts
 * at the saved value, shows its value beside its label, and on every move saves
 * it and hands `{[name]: value}` to `send`. Returns the function that shows the
 * value again, for when the page sets it.
 */
export function bindParamRange(input, output, { settings, name, send, format = (value) => value }) {
  input.value = String(settings.get(name));
  const show = () => {
    output.value = format(Number(input.value));
  };
  input.addEventListener("input", () => {
    show();
    const value = Number(input.value);
    settings.set(name, value);
    send({ [name]: value });
  });
  show();
  return show;
}

/**
 * The seed: a number, a lock and a re-roll button (`#seed`, `#seed-lock` and
 * `#reroll` inside `root`). Locked, every frame uses the same seed (stable
 * frames); unlocked, {@link SeedControl#next} draws a new one for each request
 * the page makes.
 */
export class SeedControl {
  constructor(root, { settings, onChange }) {
    const input = $("#seed", root);
    const lock = $("#seed-lock", root);
    const reroll = $("#reroll", root);
    this.input = input;
    this.lockButton = lock;
    this.settings = settings;
    this.onChange = onChange;
    this.input.max = String(MAX_SEED);
    this.value = clampSeed(settings.get("seed"));
    this.locked = settings.get("seedLocked") !== false;
    this._render();
    input.addEventListener("change", () => {
      this.set(clampSeed(Number(input.value)));
      this.onChange(this.value);
    });
    lock.addEventListener("click", () => {
      this.locked = !this.locked;
      settings.set("seedLocked", this.locked);
      this._render();
    });
    reroll.addEventListener("click", () => this.reroll());
  }

  /** A new random seed, sent at once (not while the pipeline ignores seeds). */
  reroll() {
    if (this.input.disabled) return;
    this.set(randomSeed());
    this.onChange(this.value);
  }

  /** The seed for the next request: a new one when unlocked, else null (no change). */
  next() {
    if (this.locked) return null;
    this.set(randomSeed());
    return this.value;
  }

  set(value) {
    this.value = value;
    this.settings.set("seed", value);
    this._render();
  }

  _render() {
    this.input.value = String(this.value);
    this.lockButton.setAttribute("aria-pressed", String(this.locked));
    setIcon(this.lockButton.querySelector("use"), this.locked ? "lock" : "unlock");
    this.lockButton.title = this.locked
      ? "Seed locked: every frame uses this seed (click to unlock)"
      : "Seed unlocked: a new seed for every change (click to lock)";
    this.lockButton.setAttribute("aria-label", this.locked ? "Seed locked" : "Seed unlocked");
  }
}

function clampSeed(value) {
  const seed = Math.floor(Number(value));
  if (!Number.isFinite(seed) || seed < 0) return 0;
  return Math.min(seed, MAX_SEED);
}

/**
 * End the session when the page goes away for good; keep it resumable when the
 * page only goes into the back-forward cache, and resume when it comes back.
 */
export function closeWithPage(client) {
  window.addEventListener("pagehide", (event) => client.close({ endSession: !event.persisted }));
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) client.reconnect();
  });
}
