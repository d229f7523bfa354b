/**
 * CanvasEncoder: a canvas to JPEG (or WebP) bytes without blocking the page.
 *
 * The canvas is snapshotted (createImageBitmap, a copy) and the snapshot goes
 * to a worker that encodes it on an OffscreenCanvas; the main thread only
 * copies pixels. Browsers without OffscreenCanvas in workers fall back to
 * canvas.toBlob.
 */

export class CanvasEncoder {
  constructor({ type = "image/jpeg", quality = 0.9 } = {}) {
    this.type = type;
    this.quality = quality;
    this._waiting = new Map();
    this._next = 1;
    this._worker = null;
    if (typeof OffscreenCanvas === "function" && typeof Worker === "function") {
      try {
        this._worker = new Worker(new URL("./encode-worker.js", import.meta.url), { type: "module" });
        this._worker.onmessage = ({ data }) => this._answer(data);
        this._worker.onerror = () => this._giveUpOnWorker();
      } catch {
        this._worker = null;
      }
    }
  }

  /** The canvas's current pixels, encoded: resolves to an ArrayBuffer. */
  async encode(canvas) {
    if (this._worker === null) return this._encodeHere(canvas);
    const bitmap = await createImageBitmap(canvas);
    const id = this._next++;
    return new Promise((resolve, reject) => {
      this._waiting.set(id, { resolve, reject, canvas });
      this._worker.postMessage({ id, bitmap, type: this.type, quality: this.quality }, [bitmap]);
    });
  }

  _answer({ id, buffer, error }) {
    const waiter = this._waiting.get(id);
    if (!waiter) return;
    this._waiting.delete(id);
    if (error) waiter.reject(new Error(error));
    else waiter.resolve(buffer);
  }

  _giveUpOnWorker() {
    this._worker?.terminate();
    this._worker = null;
    for (const [id, waiter] of this._waiting) {
      this._waiting.delete(id);
      this._encodeHere(waiter.canvas).then(waiter.resolve, waiter.reject);
    }
  }

  _encodeHere(canvas) {
    return new Promise((resolve, reject) => {
      canvas.toBlob(
        (blob) =>
          blob
            ? blob.arrayBuffer().then(resolve, reject)
            : reject(new Error("the canvas could not be encoded")),
        this.type,
        this.quality,
      );
    });
  }
}
