/**
 * A small copy of the output that stays in view on phones and tablets.
 *
 * There the pages stack in one column, and the output sits below the sketch
 * canvas or the prompt: out of view while drawing or typing, or under the
 * on-screen keyboard. Like the webcam page's self-view, a small inset then shows
 * the latest picture in a corner of what is in use (the sketch stage, the prompt
 * field), which the browser keeps on screen. It shows only in the stacked
 * layout, once there is a picture, and while less than SEEN_ENOUGH of the real
 * output is on screen (the visual viewport: what a keyboard leaves). It takes no
 * touch, so drawing goes on beneath it, and it fades while a stroke passes under.
 */

const STACKED = "(max-width: 860px)"; // app.css: one column below this width
const SEEN_ENOUGH = 0.9; // of the output's area on screen: no inset needed
const INSET_LONG_SIDE = 320; // pixels kept: it is shown at 160 CSS px at most

export class OutputInset {
  /** `output`: the page's OutputView; `anchor`: the positioned element to sit in. */
  constructor(output, anchor) {
    this.output = output;
    this.anchor = anchor;
    this.canvas = document.createElement("canvas");
    this.canvas.className = "output-inset";
    this.canvas.hidden = true;
    this.canvas.setAttribute("aria-hidden", "true"); // the output itself is the accessible image
    anchor.append(this.canvas);
    this.context = this.canvas.getContext("2d", { alpha: false });
    this.stacked = matchMedia(STACKED);

    const update = () => this.update();
    output.canvas.addEventListener("framepaint", () => {
      this.copy();
      update();
    });
    this.stacked.addEventListener("change", update);
    window.addEventListener("scroll", update, { passive: true });
    window.addEventListener("resize", update);
    window.visualViewport?.addEventListener("resize", update);
    window.visualViewport?.addEventListener("scroll", update);
    window.addEventListener("pointermove", (event) => this.fadeUnder(event), { passive: true });
    for (const end of ["pointerup", "pointercancel"]) {
      window.addEventListener(end, () => this.canvas.classList.remove("faded"));
    }
  }

  /** The share (0 to 1) of the output canvas inside the visual viewport. */
  outputSeen() {
    const box = this.output.canvas.getBoundingClientRect();
    const view = window.visualViewport;
    const top = view?.offsetTop ?? 0;
    const left = view?.offsetLeft ?? 0;
    const bottom = top + (view?.height ?? window.innerHeight);
    const right = left + (view?.width ?? window.innerWidth);
    const height = Math.max(0, Math.min(box.bottom, bottom) - Math.max(box.top, top));
    const width = Math.max(0, Math.min(box.right, right) - Math.max(box.left, left));
    const area = box.width * box.height;
    return area > 0 ? (width * height) / area : 0;
  }

  update() {
    const shown =
      this.stacked.matches && this.output.latest !== null && this.outputSeen() < SEEN_ENOUGH;
    if (this.canvas.hidden === !shown) return;
    this.canvas.hidden = !shown;
    this.anchor.classList.toggle("has-inset", shown);
  }

  copy() {
    const source = this.output.canvas;
    const scale = Math.min(1, INSET_LONG_SIDE / Math.max(source.width, source.height));
    const width = Math.round(source.width * scale);
    const height = Math.round(source.height * scale);
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
      this.canvas.style.setProperty("--aspect", `${width / height}`);
    }
    this.context.drawImage(source, 0, 0, width, height);
  }

  fadeUnder(event) {
    if (this.canvas.hidden) return;
    const box = this.canvas.getBoundingClientRect();
    const under =
      event.buttons !== 0 &&
      event.clientX >= box.left &&
      event.clientX <= box.right &&
      event.clientY >= box.top &&
      event.clientY <= box.bottom;
    this.canvas.classList.toggle("faded", under);
  }
}
