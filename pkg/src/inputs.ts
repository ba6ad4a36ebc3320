// Every image input `detect` takes, as the payload the engine reads: an encoded file, or
// RGBA pixels drawn through a canvas.

import type { Payload } from './protocol.js';
import type { ImageInput } from './options.js';
import { KanoclipError } from './errors.js';
import type { ErrorCode } from './errors.js';

const err = (code: ErrorCode, message: string) => new KanoclipError(code, message);

function rgbaOf(source: CanvasImageSource, width: number, height: number): Payload {
  if (!(width > 0 && height > 0)) throw err('BAD_IMAGE', `the image is ${width}×${height} pixels`);
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext('2d');
  if (!ctx) throw err('INTERNAL', 'no 2D canvas to read the image');
  ctx.drawImage(source, 0, 0);
  const data = ctx.getImageData(0, 0, width, height);
  return { type: 'rgba', rgba: new Uint8Array(data.data.buffer), width, height };
}

/** `image` as the engine's payload. */
export async function toPayload(image: ImageInput): Promise<Payload> {
  if (typeof image === 'string') {
    const resp = await fetch(image);
    if (!resp.ok) throw err('NETWORK', `cannot fetch ${image}: HTTP ${resp.status}`);
    return { type: 'encoded', bytes: new Uint8Array(await resp.arrayBuffer()) };
  }
  if (typeof Blob !== 'undefined' && image instanceof Blob) {
    // Decoded inside the module, which reads the size from the header before allocating.
    return { type: 'encoded', bytes: new Uint8Array(await image.arrayBuffer()) };
  }
  if (typeof ImageData !== 'undefined' && image instanceof ImageData) {
    return { type: 'rgba', rgba: new Uint8Array(image.data.slice().buffer), width: image.width, height: image.height };
  }
  if (typeof HTMLImageElement !== 'undefined' && image instanceof HTMLImageElement) {
    if (!image.complete || image.naturalWidth === 0) throw err('BAD_IMAGE', 'the image element has not loaded an image');
    return rgbaOf(image, image.naturalWidth, image.naturalHeight);
  }
  if (typeof ImageBitmap !== 'undefined' && image instanceof ImageBitmap) return rgbaOf(image, image.width, image.height);
  if (typeof HTMLVideoElement !== 'undefined' && image instanceof HTMLVideoElement) {
    // The frame on screen now (a live camera's current frame).
    if (image.readyState < 2 || image.videoWidth === 0) throw err('BAD_IMAGE', 'the video has no frame yet');
    return rgbaOf(image, image.videoWidth, image.videoHeight);
  }
  if (typeof VideoFrame !== 'undefined' && image instanceof VideoFrame) {
    return rgbaOf(image, image.displayWidth, image.displayHeight);
  }
  if (typeof HTMLCanvasElement !== 'undefined' && image instanceof HTMLCanvasElement) {
    return rgbaOf(image, image.width, image.height);
  }
  if (typeof OffscreenCanvas !== 'undefined' && image instanceof OffscreenCanvas) {
    return rgbaOf(image, image.width, image.height);
  }
  throw err('INVALID_ARGUMENT', 'detect() takes an image or video element, canvas, ImageBitmap, VideoFrame, ImageData, Blob, File or URL');
}
