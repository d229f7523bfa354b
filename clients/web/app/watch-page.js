/**
 * The watch page, `watch.html?session=<id>`: a session's generated video,
 * played through WHEP (`POST /whep/<id>` with a receive-only offer). Any number
 * of pages, OBS or other WHEP players can watch one session; each gets the
 * newest frame. A `token` in the page's address goes as the bearer token. The
 * viewer leaves (DELETE) with the page.
 */

import { $, keepIcons } from "./common.js";

// Candidates gathered by then go in the offer; a WHEP offer has no trickle here.
const GATHER_TIMEOUT_MS = 2000;

const query = new URLSearchParams(location.search);
const sessionId = query.get("session");
const token = query.get("token");
const video = $("#output");
const statusPill = $("#status");

let pc = null;
let resource = null; // the viewer's URL, to DELETE on leaving

keepIcons();

function setStatus(state, text) {
  statusPill.dataset.state = state;
  $(".status-text", statusPill).textContent = text;
}

function showMessage(title, detail = "", { form = false, retry = false } = {}) {
  $("#placeholder").hidden = false;
  $("#message-title").textContent = title;
  $("#message-detail").textContent = detail;
  $("#watch-form").hidden = !form;
  $("#retry").hidden = !retry;
}

function gathered(connection) {
  if (connection.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => connection.iceGatheringState === "complete" && resolve();
    connection.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, GATHER_TIMEOUT_MS);
  });
}

async function watch() {
  leave();
  setStatus("connecting", "Connecting…");
  showMessage("Connecting…", `Asking the server for session ${sessionId}.`);
  const connection = new RTCPeerConnection();
  pc = connection;
  connection.addTransceiver("video", { direction: "recvonly" });
  connection.addEventListener("track", ({ track, streams }) => {
    video.srcObject = streams[0] ?? new MediaStream([track]);
  });
  connection.addEventListener("connectionstatechange", () => onState(connection));
  await connection.setLocalDescription(await connection.createOffer());
  await gathered(connection);
  const headers = { "Content-Type": "application/sdp" };
  if (token) headers.Authorization = `Bearer ${token}`;
  let answer;
  try {
    answer = await fetch(`/whep/${encodeURIComponent(sessionId)}`, {
      method: "POST",
      headers,
      body: connection.localDescription.sdp,
    });
  } catch {
    refused("The server cannot be reached", "Check that livegen is running, then try again.");
    return;
  }
  const text = await answer.text();
  if (answer.status !== 201) {
    refused(refusalTitle(answer.status), text.trim());
    return;
  }
  resource = new URL(answer.headers.get("Location"), location.href).href;
  await connection.setRemoteDescription({ type: "answer", sdp: text });
}

function refusalTitle(status) {
  if (status === 404) return "No such session";
  if (status === 401 || status === 403) return "Not allowed to watch";
  return `The server refused (${status})`;
}

function refused(title, detail) {
  leave();
  setStatus("error", title);
  showMessage(title, detail, { form: true, retry: true });
}

function onState(connection) {
  if (connection !== pc) return;
  const state = connection.connectionState;
  if (state === "connected") {
    setStatus("open", "Watching");
  } else if (state === "failed") {
    refused(
      "The video was lost",
      "The session may have ended, or the network blocked WebRTC (UDP). Try again.",
    );
  }
}

function leave() {
  if (resource !== null) {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    fetch(resource, { method: "DELETE", headers, keepalive: true }).catch(() => {});
    resource = null;
  }
  if (pc !== null) {
    pc.close();
    pc = null;
  }
}

video.addEventListener("loadeddata", () => {
  video.classList.remove("empty");
  $("#placeholder").hidden = true;
});
$("#retry").addEventListener("click", () => watch());
$("#watch-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const next = new URLSearchParams(location.search);
  next.set("session", $("#session-input").value.trim());
  location.search = next.toString();
});
window.addEventListener("pagehide", leave);

// For the console and for tests.
window.livegen = {
  get pc() {
    return pc;
  },
  get resource() {
    return resource;
  },
};

if (sessionId) {
  $("#session-label").textContent = sessionId;
  $("#session-input").value = sessionId;
  watch();
} else {
  setStatus("error", "No session");
  showMessage(
    "Which session?",
    "Open this page with ?session=<id>: the webcam page shows it, and a WHIP publisher " +
      "gets it in the Livegen-Session-Id header.",
    { form: true },
  );
}
