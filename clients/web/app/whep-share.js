/**
 * A session's WHEP address, for OBS or any WHEP player (and the watch page):
 * shown once the session has started, with a copy button and a link that
 * opens `watch.html` on the session (carrying the page's token, if any).
 */

import { $ } from "./common.js";

const COPIED_MS = 1500;

/** Show `client`'s session's WHEP address in `root` (hidden until a session starts). */
export function bindWhepShare(client, root) {
  const field = $("input", root);
  const copy = $("button", root);
  const watch = $("a", root);
  client.addEventListener("session", ({ detail }) => {
    const id = encodeURIComponent(detail.session_id);
    field.value = `${location.origin}/whep/${id}`;
    const token = new URLSearchParams(location.search).get("token");
    watch.href = `watch.html?session=${id}${token ? `&token=${encodeURIComponent(token)}` : ""}`;
    root.hidden = false;
  });
  field.addEventListener("focus", () => field.select());
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(field.value);
      copy.textContent = "Copied";
    } catch {
      field.select(); // no clipboard access (plain http on another host): select to copy by hand
      copy.textContent = "Press Ctrl+C";
    }
    setTimeout(() => (copy.textContent = "Copy"), COPIED_MS);
  });
}
