// The TURBO-coloured overlay of an anomaly map.

import { turbo } from './turbo.js';

/** `map` (`width × height`, values in [0, 1]) as a TURBO overlay with alpha `opacity` (0–1). */
export async function overlayBitmap(map: Float32Array, width: number, height: number, opacity: number): Promise<ImageBitmap> {
  const px = new Uint8ClampedArray(width * height * 4);
  const alpha = Math.round(opacity * 255);
  for (let i = 0; i < map.length; i++) {
    const [r, g, b] = turbo(map[i]);
    px[i * 4] = r;
    px[i * 4 + 1] = g;
    px[i * 4 + 2] = b;
    px[i * 4 + 3] = alpha;
  }
  return createImageBitmap(new ImageData(px, width, height));
}
