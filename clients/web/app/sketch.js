/**
 * SketchPad: a drawing canvas for mouse, touch and pen (Pointer Events).
 *
 * Strokes are kept as vectors in coordinates relative to the canvas (0 to 1),
 * so undo and redo replay them, and a canvas resized to another aspect ratio
 * redraws them. Pens draw thinner with less pressure; the eraser paints the
 * paper colour, since what is sent to the model is an opaque JPEG. Every change
 * fires `change` with `{timeStamp}` (the input event's time), so a page can
 * send the canvas as soon as it changes.
 */

const REFERENCE_SIDE = 512; // brush sizes are in pixels of a 512 px canvas
const MAX_UNDO = 200; // older steps are flattened into the background raster

export class SketchPad extends EventTarget {
  constructor(canvas, { paper = "#ffffff" } = {}) {
    super();
    this.canvas = canvas;
    this.context = canvas.getContext("2d", { alpha: false, willReadFrequently: false });
    this.paper = paper;
    this.tool = "brush";
    this.color = "#1b1b1f";
    this.size = 8;
    this.history = []; // strokes and clears, oldest first
    this.redoStack = [];
    this._base = null; // a canvas holding history flattened past MAX_UNDO
    this._stroke = null;
    this._pointerId = null;
    this._rect = null;
    this.render();

    canvas.addEventListener("pointerdown", (event) => this._down(event));
    // Browsers hold pointermove back to the next animation frame (up to 16 ms);
    // pointerrawupdate (Chromium, secure contexts such as localhost) comes at once.
    const move = "onpointerrawupdate" in window ? "pointerrawupdate" : "pointermove";
    canvas.addEventListener(move, (event) => this._move(event));
    canvas.addEventListener("pointerup", (event) => this._up(event));
    canvas.addEventListener("pointercancel", (event) => this._up(event));
    canvas.addEventListener("lostpointercapture", (event) => this._up(event));
    canvas.addEventListener("contextmenu", (event) => event.preventDefault());
  }

  get canUndo() {
    return this.history.length > 0;
  }

  get canRedo() {
    return this.redoStack.length > 0;
  }

  /** True when nothing is drawn since the last clear. */
  get blank() {
    for (let i = this.history.length - 1; i >= 0; i--) {
      if (this.history[i].type === "clear") return true;
      if (this.history[i].type === "stroke") return false;
    }
    return this._base === null;
  }

  /** Give the canvas a new pixel size; the drawing is redrawn to fit. */
  resize(width, height) {
    if (this.canvas.width === width && this.canvas.height === height) return;
    this.canvas.width = width;
    this.canvas.height = height;
    this.canvas.style.setProperty("--aspect", `${width / height}`);
    this.render();
    this._changed(performance.now());
  }

  undo() {
    if (this._stroke !== null || !this.canUndo) return;
    this.redoStack.push(this.history.pop());
    this.render();
    this._changed(performance.now());
  }

  redo() {
    if (this._stroke !== null || !this.canRedo) return;
    this.history.push(this.redoStack.pop());
    this.render();
    this._changed(performance.now());
  }

  clear() {
    if (this._stroke !== null || this.blank) return;
    this._commit({ type: "clear" });
    this.render();
    this._changed(performance.now());
  }

  /** Redraw everything from the history. */
  render() {
    const { context, canvas } = this;
    context.setTransform(1, 0, 0, 1, 0, 0);
    context.globalCompositeOperation = "source-over";
    context.fillStyle = this.paper;
    context.fillRect(0, 0, canvas.width, canvas.height);
    if (this._base !== null) context.drawImage(this._base, 0, 0, canvas.width, canvas.height);
    for (const entry of this.history) this._replay(context, entry);
  }

  // Pointer input.

  _down(event) {
    if (this._pointerId !== null) return; // a second finger does not draw
    if (event.pointerType === "mouse" && event.button !== 0) return;
    event.preventDefault();
    this.canvas.setPointerCapture(event.pointerId);
    this._pointerId = event.pointerId;
    this._rect = this.canvas.getBoundingClientRect();
    this._stroke = {
      type: "stroke",
      color: this.tool === "eraser" ? null : this.color,
      size: this.size,
      pressure: event.pointerType === "pen",
      points: [],
    };
    this.dispatchEvent(new CustomEvent("strokestart"));
    this._add(event);
    this._changed(event.timeStamp);
  }

  _move(event) {
    if (event.pointerId !== this._pointerId || this._stroke === null) return;
    const events = event.getCoalescedEvents?.() ?? [];
    for (const each of events.length ? events : [event]) this._add(each);
    this._changed(event.timeStamp);
  }

  _up(event) {
    if (event.pointerId !== this._pointerId || this._stroke === null) return;
    const stroke = this._stroke;
    this._finishSegment(this.context, stroke);
    this._stroke = null;
    this._pointerId = null;
    this._commit(stroke);
    this._changed(event.timeStamp);
    this.dispatchEvent(new CustomEvent("strokeend"));
  }

  _add(event) {
    const rect = this._rect;
    const point = {
      x: (event.clientX - rect.left) / rect.width,
      y: (event.clientY - rect.top) / rect.height,
      // Mouse and most touch screens report 0.5 or 0 when pressed: full width then.
      p: this._stroke.pressure ? event.pressure : 1,
    };
    const points = this._stroke.points;
    const last = points[points.length - 1];
    if (last && Math.abs(last.x - point.x) < 1e-4 && Math.abs(last.y - point.y) < 1e-4) return;
    points.push(point);
    this._segment(this.context, this._stroke, points.length - 1);
  }

  _commit(entry) {
    this.history.push(entry);
    this.redoStack = [];
    if (this.history.length > MAX_UNDO) this._flatten(this.history.shift());
  }

  _flatten(entry) {
    if (this._base === null) {
      this._base = document.createElement("canvas");
      this._base.width = this.canvas.width;
      this._base.height = this.canvas.height;
      const context = this._base.getContext("2d");
      context.fillStyle = this.paper;
      context.fillRect(0, 0, this._base.width, this._base.height);
    }
    this._replay(this._base.getContext("2d"), entry);
  }

  _changed(timeStamp) {
    this.dispatchEvent(new CustomEvent("change", { detail: { timeStamp } }));
  }

  // Drawing: each point adds a curve from the previous midpoint to the next,
  // through the previous point, so a stroke drawn live and one replayed match.

  _replay(context, entry) {
    if (entry.type === "clear") {
      context.fillStyle = this.paper;
      context.fillRect(0, 0, context.canvas.width, context.canvas.height);
      return;
    }
    for (let i = 0; i < entry.points.length; i++) this._segment(context, entry, i);
    this._finishSegment(context, entry);
  }

  _style(context, stroke, pressure) {
    const { width, height } = context.canvas;
    const scale = Math.max(width, height) / REFERENCE_SIDE;
    const factor = stroke.pressure ? 0.2 + 0.8 * Math.min(1, Math.max(0, pressure)) : 1;
    context.lineWidth = Math.max(0.5, stroke.size * scale * factor);
    context.strokeStyle = stroke.color ?? this.paper;
    context.fillStyle = stroke.color ?? this.paper;
    context.lineCap = "round";
    context.lineJoin = "round";
    return { width, height };
  }

  _segment(context, stroke, i) {
    const points = stroke.points;
    const point = points[i];
    const { width, height } = this._style(context, stroke, point.p);
    if (i === 0) {
      context.beginPath();
      context.arc(point.x * width, point.y * height, context.lineWidth / 2, 0, Math.PI * 2);
      context.fill();
      return;
    }
    const previous = points[i - 1];
    const middle = { x: (previous.x + point.x) / 2, y: (previous.y + point.y) / 2 };
    context.beginPath();
    if (i === 1) {
      context.moveTo(previous.x * width, previous.y * height);
      context.lineTo(middle.x * width, middle.y * height);
    } else {
      const before = points[i - 2];
      context.moveTo(((before.x + previous.x) / 2) * width, ((before.y + previous.y) / 2) * height);
      context.quadraticCurveTo(previous.x * width, previous.y * height, middle.x * width, middle.y * height);
    }
    context.stroke();
  }

  _finishSegment(context, stroke) {
    const points = stroke.points;
    if (points.length < 2) return;
    const last = points[points.length - 1];
    const previous = points[points.length - 2];
    const { width, height } = this._style(context, stroke, last.p);
    context.beginPath();
    context.moveTo(((previous.x + last.x) / 2) * width, ((previous.y + last.y) / 2) * height);
    context.lineTo(last.x * width, last.y * height);
    context.stroke();
  }
}
