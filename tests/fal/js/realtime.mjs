// Runs fal's published realtime client, unmodified, against livegen; driven by
// tests/fal/test_js_client.py. argv[2] is a JSON plan:
//   {"app": "fal-ai/...", "inputs": [{...}, ...], "token": "..." (optional)}
// An input's {"$bytes": PATH} or {"$data_uri": PATH} stands for the image in
// that file. Each input is sent once the one before it has an answer (a result
// or an error). Every event is printed as one JSON line. The tests preload
// loopback-guard.mjs (node --import), so nothing here can reach beyond loopback.
import { readFileSync } from "node:fs";
import { fal } from "@fal-ai/client";
import { useLivegen } from "./livegen-fal.mjs";

const plan = JSON.parse(process.argv[2]);
const print = (event) => console.log(JSON.stringify(event));

function materialize(value) {
  if (value === null || typeof value !== "object") return value;
  if ("$bytes" in value) return new Uint8Array(readFileSync(value.$bytes));
  if ("$data_uri" in value) {
    return `data:image/jpeg;base64,${readFileSync(value.$data_uri).toString("base64")}`;
  }
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, materialize(v)]));
}

function summary(result) {
  const [image] = result.images;
  return {
    content_is_bytes: image.content instanceof Uint8Array,
    content_head: Buffer.from(image.content.subarray(0, 3)).toString("hex"),
    content_length: image.content.length,
    url_head: image.url?.slice(0, 23) ?? null,
    ...Object.fromEntries(["width", "height", "content_type"].map((k) => [k, image[k]])),
    ...Object.fromEntries(["seed", "request_id", "prompt", "has_nsfw_concepts"].map((k) => [k, result[k]])),
    timings: Object.keys(result.timings).sort(),
  };
}

fal.config({ fetch: useLivegen(process.env.LIVEGEN_URL) }); // credentials: FAL_KEY, if set

const inputs = plan.inputs.map(materialize);
let sent = 0;
let answered = true;
let closedWith = null; // the exit code, once the client has been told to close
function finish(code) {
  closedWith = code;
  connection.close();
  // The client reports its own close through onError when the close code is not 1000:
  // exit once that is printed, or after a while when nothing comes.
  setTimeout(() => process.exit(code), 2000);
}
function sendNext() {
  if (!answered) return;
  if (sent === inputs.length) return finish(0);
  answered = false;
  connection.send(inputs[sent++]);
}
function answer(event) {
  print(event);
  answered = true;
  // Let a second event about the same input (a close after an error) print first,
  // and stay out of the client's send throttle (128 ms): a send inside that window
  // is sometimes dropped by the client itself (its timer can fire a millisecond early).
  setTimeout(sendNext, 200);
}

const connection = fal.realtime.connect(plan.app, {
  ...(plan.token !== undefined && {
    tokenProvider: async (app) => {
      print({ event: "token", app });
      return plan.token;
    },
  }),
  onResult: (result) => answer({ event: "result", ...summary(result) }),
  onError: (error) => {
    const event = { event: "error", message: error.message, status: error.status, body: error.body };
    if (closedWith !== null) {
      print({ ...event, event: "closed" });
      process.exit(closedWith);
    } else if (answered) print(event);
    else answer(event);
  },
});
sendNext();
setTimeout(() => {
  print({ event: "timeout" });
  finish(1);
}, plan.timeout_ms ?? 30000);
