/**
 * The webcam page: the camera goes to the server over WebRTC, and the restyled
 * video comes back on the same call, at the model's pace.
 *
 * The camera stays off until Start. Prompt and strength go as params.update
 * while a call runs (the next frame has them); edited with no call, they wait
 * and go with the next Start, so a text-to-image model draws nothing nobody
 * sees. A camera refused or missing, and a call that cannot connect, each get
 * a message that says what to do. The call follows the session: after a
 * dropped connection the client resumes the session and the call offers again.
 */

import { CallFailure, CallState, ErrorCode, LivegenClient, defaultUrl } from "../livegen.js";
import {
  $,
  Settings,
  Toast,
  bindIgnoredParams,
  bindParamRange,
  bindStatus,
  closeWithPage,
  describeError,
  keepIcons,
  setIcon,
  typingInField,
} from "./common.js";
import { bindWhepShare } from "./whep-share.js";

// About 512 x 512 at up to 30 fps: the size the models work at, and no more
// pixels than the uplink needs. `ideal` only: any camera will do.
const CAMERA_CONSTRAINTS = {
  width: { ideal: 512 },
  height: { ideal: 512 },
  aspectRatio: { ideal: 1 },
  frameRate: { ideal: 30, max: 30 },
};

const settings = new Settings("livegen.webcam", {
  prompt: "",
  strength: 0.5,
  mirror: true,
  camera: "",
});

const client = new LivegenClient();
const toast = new Toast($("#toast"));
const workspace = $("#workspace");
const cameraVideo = $("#camera");
const selfView = $("#selfview");
const outputVideo = $("#output");
const outputStill = $("#output-still"); // the last restyled frame, kept after Stop
const outputStage = $("#output-stage");
const callButton = $("#call");
const cameraSelect = $("#camera-select");
const promptBox = $("#prompt");
const strength = $("#strength");

/** What the page is doing: idle, camera (asking for it), a CallState, or failed. */
let phase = "idle";
let camera = null; // the MediaStream from getUserMedia
let call = null; // the LivegenCall
let held = {}; // params edited with no call: they go with the next Start
/** For the console and tests: when Start was pressed and the first restyled frame shown. */
const timing = { startedAt: null, firstFrameAt: null };
/** Options for the next call (see LivegenCall): timeouts, ICE servers. */
const callOptions = {};

// For the console and for tests: the live objects of this page.
window.livegen = {
  client,
  timing,
  callOptions,
  get call() {
    return call;
  },
  get camera() {
    return camera;
  },
};

keepIcons();
bindStatus(client, $("#status"), $("#pipeline"));
bindWhepShare(client, $("#whep-share"));
bindIgnoredParams(client);
closeWithPage(client);
// The idle message promises a style only where the pipeline takes a prompt.
client.addEventListener("session", () => {
  if (phase === "idle" && !$("#placeholder").hidden) showIdle();
});

// Messages in the output stage: what to do, what is happening, what went wrong.

const MESSAGE_ICONS = { idle: "sparkle", progress: "video", error: "alert" };

function showMessage({ kind, title, detail = "", command = "", note = "", action = null }) {
  const box = $("#call-message");
  box.dataset.kind = kind;
  setIcon(box.querySelector("use"), MESSAGE_ICONS[kind]);
  $("#message-title").textContent = title;
  $("#message-detail").textContent = detail;
  $("#message-detail").hidden = detail === "";
  $("#message-command").textContent = command;
  $("#message-command").hidden = command === "";
  $("#message-note").textContent = note;
  $("#message-note").hidden = note === "";
  const button = $("#message-action");
  button.hidden = action === null;
  if (action !== null) button.querySelector("span").textContent = action;
  $("#placeholder").hidden = false;
}

function showIdle() {
  const session = client.session;
  showMessage({
    kind: "idle",
    title: "Your camera, restyled live",
    detail: session?.ignored_params?.includes("prompt")
      ? `Press Start: this server's pipeline, ${session.pipeline}, sends your camera back as it is.`
      : "Press Start, then type a style: every frame follows the prompt as you write.",
    action: "Start camera",
  });
}

function showProgress(title, detail = "") {
  showMessage({ kind: "progress", title, detail });
}

/** Why getUserMedia failed, in words, with what to do about it. */
function cameraProblem(error) {
  switch (error?.name) {
    case "NotAllowedError":
    case "PermissionDeniedError":
      return {
        title: "Camera access was refused",
        detail:
          "Allow the camera for this site (the camera icon in the address bar, or the browser's " +
          "site settings), then try again.",
      };
    case "NotFoundError":
    case "DevicesNotFoundError":
    case "OverconstrainedError":
      return {
        title: "No camera found",
        detail: "Connect a camera, or check that the system lets the browser use it, then try again.",
      };
    case "NotReadableError":
    case "TrackStartError":
    case "AbortError":
      return {
        title: "The camera could not start",
        detail: "Another app may be using it. Close that app, then try again.",
      };
    case "InsecureContext":
      return {
        title: "The camera needs a secure page",
        detail:
          "Browsers allow the camera only on https:// pages and on localhost. Open this page " +
          "through localhost on the server's machine, or serve livegen over TLS:",
        command: "livegen serve --tls-cert cert.pem --tls-key key.pem",
      };
    default:
      return { title: "The camera could not start", detail: error?.message ?? String(error) };
  }
}

/** Why a call failed (a LivegenError with a CallFailure reason), with what to do. */
function callProblem(error) {
  switch (error.reason) {
    case CallFailure.UNREACHABLE:
      return {
        title: "The video could not connect",
        detail:
          "Your browser could not reach the server's media address (WebRTC, over UDP). " +
          "If livegen runs on another machine, start it on an address you can reach:",
        command: "livegen serve --host 0.0.0.0",
        note: "Through a firewall or NAT, also give it a TURN server with \u2011\u2011ice\u2011servers.",
      };
    case CallFailure.LOST:
      return {
        title: "The video connection dropped",
        detail: "The network between you and the server went away or blocked the video. Try again.",
      };
    case CallFailure.NO_ANSWER:
      return {
        title: "The server did not answer the call",
        detail: "It may be overloaded, or too old to take WebRTC calls. Try again in a moment.",
      };
    case CallFailure.REFUSED:
      return { title: "The server refused the call", detail: error.message };
    default:
      return { title: "The call ended", detail: error.message };
  }
}

// Start and stop.

async function openCamera() {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw Object.assign(new Error("no camera access on an insecure page"), { name: "InsecureContext" });
  }
  const chosen = settings.get("camera");
  const video = chosen
    ? { ...CAMERA_CONSTRAINTS, deviceId: { ideal: chosen } }
    : { ...CAMERA_CONSTRAINTS, facingMode: { ideal: "user" } };
  return navigator.mediaDevices.getUserMedia({ video, audio: false });
}

async function start() {
  if (phase !== "idle" && phase !== "failed") return;
  setPhase("camera");
  dropLastFrame();
  timing.startedAt = performance.now();
  timing.firstFrameAt = null;
  showProgress("Waiting for the camera…", "Allow the camera when the browser asks.");
  let stream;
  try {
    stream = await openCamera();
  } catch (error) {
    setPhase("failed");
    showMessage({ kind: "error", action: "Try again", ...cameraProblem(error) });
    return;
  }
  if (phase !== "camera") {
    stopTracks(stream); // stopped while the browser asked
    return;
  }
  camera = stream;
  // Encoders that read the hint keep detail (resolution) over motion (frame rate) under load.
  for (const track of stream.getVideoTracks()) track.contentHint = "detail";
  for (const video of [cameraVideo, selfView]) play(video, stream);
  listCameras();
  if (Object.keys(held).length > 0) client.updateParams(held);
  held = {};
  const started = client.call(stream, callOptions);
  call = started;
  started.addEventListener("state", onCallState);
  started.addEventListener("track", () => call === started && play(outputVideo, started.remoteStream));
  play(outputVideo, started.remoteStream);
  onCallState({ currentTarget: started, detail: { state: started.state, error: started.error } });
}

function stop() {
  if (phase === "idle") return;
  const kept = keepLastFrame(); // before the hang-up takes the video away
  const ending = call;
  call = null;
  ending?.hangUp();
  stopCamera();
  clearOutput();
  setPhase("idle");
  showIdle();
  if (kept) $("#placeholder").hidden = true; // the frame shows; Start is in the panel's head
}

/** Hold the frame on show in a still, in the video's place; false when there is none. */
function keepLastFrame() {
  if (outputVideo.classList.contains("empty") || outputVideo.videoWidth === 0) return false;
  outputStill.width = outputVideo.videoWidth;
  outputStill.height = outputVideo.videoHeight;
  outputStill.style.setProperty("--aspect", `${outputStill.width / outputStill.height}`);
  outputStill.getContext("2d").drawImage(outputVideo, 0, 0);
  outputStill.hidden = false;
  outputVideo.hidden = true;
  return true;
}

function dropLastFrame() {
  outputStill.hidden = true;
  outputVideo.hidden = false;
}

function stopCamera() {
  if (camera !== null) stopTracks(camera);
  camera = null;
  for (const video of [cameraVideo, selfView]) {
    video.srcObject = null;
    video.classList.add("empty");
  }
  $("#camera-placeholder").hidden = false;
  $("#camera-info").hidden = true;
}

function clearOutput() {
  outputVideo.srcObject = null;
  outputVideo.classList.add("empty");
  $("#video-size").hidden = true;
}

function stopTracks(stream) {
  for (const track of stream.getTracks()) track.stop();
}

function play(video, stream) {
  video.srcObject = stream; // again for the same stream with a new track: the element reloads
  video.play().catch(() => {}); // replaced by a newer source meanwhile: that one plays
}

function onCallState({ currentTarget, detail: { state, error } }) {
  if (currentTarget !== call) return; // a call already stopped
  switch (state) {
    case CallState.WAITING:
      outputVideo.classList.add("empty");
      if (call.offers > 0) {
        showProgress("Reconnecting the video…", "The call comes back as soon as the connection does.");
      } else {
        showProgress("Waiting for the server…", "The call starts as soon as it answers.");
      }
      break;
    case CallState.OFFERING:
    case CallState.CONNECTING:
      if (outputVideo.classList.contains("empty")) showProgress("Connecting the video…");
      break;
    case CallState.CONNECTED:
      if (outputVideo.classList.contains("empty")) showProgress("Starting the video…");
      break;
    case CallState.FAILED:
      call = null;
      stopCamera();
      clearOutput();
      setPhase("failed");
      showMessage({ kind: "error", action: "Try again", ...callProblem(error) });
      return;
    case CallState.CLOSED: // the client was closed (the page is going away)
      call = null;
      stopCamera();
      clearOutput();
      setPhase("idle");
      showIdle();
      return;
  }
  setPhase(state);
}

function setPhase(next) {
  phase = next;
  workspace.dataset.call = next;
  const on = next !== "idle" && next !== "failed";
  callButton.dataset.action = on ? "stop" : "start";
  setIcon(callButton.querySelector("use"), on ? "stop" : "video");
  callButton.querySelector("span").textContent = on ? "Stop" : "Start";
  callButton.setAttribute("aria-label", on ? "Stop the camera" : "Start the camera");
  const connecting = on && next !== CallState.CONNECTED;
  outputStage.classList.toggle("working", connecting);
  $("#save").disabled = (outputVideo.classList.contains("empty") || !on) && outputStill.hidden;
}

callButton.addEventListener("click", () => (callButton.dataset.action === "stop" ? stop() : start()));
$("#message-action").addEventListener("click", () => start());

// The videos: shown once they have a frame, sized to it.

cameraVideo.addEventListener("loadeddata", () => {
  cameraVideo.classList.remove("empty");
  selfView.classList.remove("empty");
  $("#camera-placeholder").hidden = true;
  const { width, height, frameRate } = camera?.getVideoTracks()[0]?.getSettings() ?? {};
  if (width && height) {
    const rate = frameRate ? ` · ${Math.round(frameRate)} fps` : "";
    $("#camera-info").textContent = `${width}×${height}${rate}`;
    $("#camera-info").hidden = false;
  }
});

outputVideo.addEventListener("loadeddata", () => {
  if (call === null) return;
  outputVideo.classList.remove("empty");
  $("#placeholder").hidden = true;
  $("#save").disabled = false;
  timing.firstFrameAt ??= performance.now();
});

for (const video of [cameraVideo, outputVideo]) {
  video.addEventListener("resize", () => {
    if (video.videoWidth === 0) return;
    video.style.setProperty("--aspect", `${video.videoWidth / video.videoHeight}`);
    if (video === outputVideo) {
      $("#video-size").textContent = `${video.videoWidth}×${video.videoHeight}`;
      $("#video-size").hidden = false;
    }
  });
}

/**
 * Restyled frames shown in the last second: counted as the browser presents
 * them (requestVideoFrameCallback), or from the decoded-frame count where that
 * is missing.
 */
class FrameCounter {
  constructor(video, element) {
    this.video = video;
    this.element = element;
    this.shown = []; // when each of the recent frames was presented
    this.presented = 0; // frames presented since the page opened
    if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
      let handle = null;
      const onFrame = (now) => {
        this.count(now);
        handle = video.requestVideoFrameCallback(onFrame);
      };
      // One series of callbacks per source.
      video.addEventListener("loadstart", () => {
        if (handle !== null) video.cancelVideoFrameCallback(handle);
        handle = video.requestVideoFrameCallback(onFrame);
      });
    } else {
      let last = 0;
      setInterval(() => {
        const total = video.getVideoPlaybackQuality?.().totalVideoFrames ?? 0;
        for (let i = last; i < total; i += 1) this.count(performance.now());
        last = total;
      }, 100);
    }
    setInterval(() => this.render(), 250);
  }

  count(now) {
    this.presented += 1;
    this.shown.push(now);
    if (this.shown.length > 240) this.shown.splice(0, this.shown.length - 240);
  }

  /** Frames presented in the last second. */
  fps() {
    const now = performance.now();
    return this.shown.filter((at) => now - at <= 1000).length;
  }

  render() {
    let text = String(this.fps());
    if (call === null) text = "idle"; // the camera is off: 0 would read as a stall
    else if (this.video.classList.contains("empty")) text = "–";
    this.element.classList.toggle("idle", text === "idle");
    if (this.element.textContent !== text) this.element.textContent = text;
  }
}

const counter = new FrameCounter(outputVideo, $("#fps"));
window.livegen.counter = counter;

// Cameras: a choice once the browser names them (after permission), if there are several.

async function listCameras() {
  let devices = [];
  try {
    devices = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "videoinput");
  } catch {
    return;
  }
  const current = camera?.getVideoTracks()[0]?.getSettings().deviceId;
  cameraSelect.replaceChildren(
    ...devices.map((device, index) => {
      const option = new Option(device.label || `Camera ${index + 1}`, device.deviceId);
      option.selected = device.deviceId === current;
      return option;
    }),
  );
  cameraSelect.hidden = devices.length < 2;
}

cameraSelect.addEventListener("change", () => {
  settings.set("camera", cameraSelect.value);
  if (phase === "idle" || phase === "failed") return;
  stop();
  start();
});

// Mirror and save.

function setMirror(on) {
  settings.set("mirror", on);
  $("#mirror").setAttribute("aria-pressed", String(on));
  for (const view of [cameraVideo, selfView, outputVideo, outputStill]) {
    view.classList.toggle("mirrored", on);
  }
}

/** Download the restyled frame on show (or kept after Stop), as it is shown (mirrored or not). */
function saveFrame() {
  const source = outputStill.hidden ? outputVideo : outputStill;
  if (source === outputVideo && (outputVideo.classList.contains("empty") || outputVideo.videoWidth === 0)) {
    return;
  }
  const canvas = document.createElement("canvas");
  canvas.width = source === outputVideo ? outputVideo.videoWidth : outputStill.width;
  canvas.height = source === outputVideo ? outputVideo.videoHeight : outputStill.height;
  const context = canvas.getContext("2d");
  if (settings.get("mirror")) {
    context.translate(canvas.width, 0);
    context.scale(-1, 1);
  }
  context.drawImage(source, 0, 0);
  canvas.toBlob((blob) => {
    if (blob === null) return;
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = `livegen-webcam-${new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-")}.png`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }, "image/png");
}

$("#mirror").addEventListener("click", () => setMirror(!settings.get("mirror")));
$("#save").addEventListener("click", saveFrame);

// Prompt and strength: live during a call, held until Start without one.

function setParams(patch) {
  if (call !== null) client.updateParams(patch);
  else Object.assign(held, patch);
}

promptBox.value = settings.get("prompt");
promptBox.addEventListener("input", () => {
  settings.set("prompt", promptBox.value);
  setParams({ prompt: promptBox.value });
});

for (const chip of document.querySelectorAll("#suggestions .chip")) {
  chip.addEventListener("click", () => {
    promptBox.value = chip.textContent.trim();
    promptBox.dispatchEvent(new Event("input"));
  });
}

bindParamRange(strength, $("#strength-value"), {
  settings,
  name: "strength",
  send: setParams,
  format: (value) => value.toFixed(2),
});

// Errors: a failed call has its own message in the stage; the rest are toasts.

client.addEventListener("error", ({ detail: error }) => {
  if (error.code === ErrorCode.WEBRTC_FAILED) return;
  if (error.code === ErrorCode.INVALID_FIELD && error.message.includes("webrtc.")) {
    // An ICE candidate the server could not use (the call goes on), or one sent
    // after a refused offer (the stage says so already).
    console.warn(`livegen: ${error.message}`);
    return;
  }
  const text = describeError(error);
  if (text) toast.show(text, { kind: error.code === ErrorCode.SESSION_NOT_FOUND ? "info" : "error" });
});

document.addEventListener("keydown", (event) => {
  const mod = event.ctrlKey || event.metaKey;
  if (mod && event.key.toLowerCase() === "s") {
    event.preventDefault();
    saveFrame();
  } else if (event.altKey && event.code === "KeyC") {
    event.preventDefault();
    callButton.click();
  } else if (!mod && !event.altKey && !typingInField(event) && event.key.toLowerCase() === "m") {
    setMirror(!settings.get("mirror"));
  }
});

window.addEventListener("pagehide", () => stop()); // the camera goes off with the page

setMirror(settings.get("mirror") !== false);
setPhase("idle");
showIdle();

client
  .connect(defaultUrl(), {
    params: { prompt: settings.get("prompt"), strength: Number(settings.get("strength")) },
  })
  .catch(() => {}); // the status pill tells; the client keeps retrying where it can
