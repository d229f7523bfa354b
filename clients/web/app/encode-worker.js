// Encodes canvas snapshots for CanvasEncoder (encoder.js), off the main thread.

let canvas = null;
let context = null;

self.onmessage = async ({ data: { id, bitmap, type, quality } }) => {
  try {
    if (canvas === null || canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
      canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
      context = canvas.getContext("2d", { alpha: false });
    }
    context.drawImage(bitmap, 0, 0);
    bitmap.close();
    const blob = await canvas.convertToBlob({ type, quality });
    const buffer = await blob.arrayBuffer();
    self.postMessage({ id, buffer }, [buffer]);
  } catch (error) {
    self.postMessage({ id, error: String(error) });
  }
};
