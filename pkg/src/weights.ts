// Fetching a web bundle: the manifest, then every chunk with progress, each checked
// against its SHA-256 and kept in Cache Storage, so that the second load needs no network.

import type { Progress } from './protocol.js';

export const CACHE_NAME = 'kanoclip-weights-v1';

export interface Chunk { path: string; size: number; sha256: string }
export interface BundleFile { name: string; size: number; sha256: string; chunks: Chunk[] }
export interface Manifest {
  format: string;
  name: string;
  notice?: string;
  mode: 'trained' | 'training-free';
  threshold: number;
  files: BundleFile[];
}

export interface Loaded {
  manifestText: string;
  manifest: Manifest;
  files: Map<string, Uint8Array>;
  cached: boolean;
}

function hex(buf: ArrayBuffer): string {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, '0')).join('');
}

async function sha256(bytes: Uint8Array): Promise<string> {
  return hex(await crypto.subtle.digest('SHA-256', bytes as unknown as BufferSource));
}

async function openCache(): Promise<Cache | null> {
  try {
    return typeof caches === 'undefined' ? null : await caches.open(CACHE_NAME);
  } catch {
    return null; // Cache Storage can be unavailable (opaque origins, private modes).
  }
}

/** Read a response body, reporting each piece as it arrives. */
async function readBody(resp: Response, onBytes: (n: number) => void): Promise<Uint8Array> {
  if (!resp.body) {
    const b = new Uint8Array(await resp.arrayBuffer());
    onBytes(b.length);
    return b;
  }
  const reader = resp.body.getReader();
  const parts: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    total += value.length;
    onBytes(value.length);
  }
  const out = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export async function loadBundle(manifestUrl: string, onProgress: (p: Progress) => void): Promise<Loaded> {
  const cache = await openCache();
  onProgress({ phase: 'manifest', loaded: 0, total: 0, cached: false });
  let manifestText: string;
  try {
    const resp = await fetch(manifestUrl, { cache: 'no-cache' });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    manifestText = await resp.text();
    await cache?.put(manifestUrl, new Response(manifestText));
  } catch (e) {
    // Offline: the cached manifest, if this bundle was loaded before.
    const hit = await cache?.match(manifestUrl);
    if (!hit) throw new Error(`cannot load the manifest ${manifestUrl}: ${(e as Error).message}`);
    manifestText = await hit.text();
  }
  let manifest: Manifest;
  try {
    manifest = JSON.parse(manifestText) as Manifest;
  } catch (e) {
    throw new Error(`the manifest ${manifestUrl} is not JSON: ${(e as Error).message}`);
  }
  if (manifest.format !== 'kanoclip-web/1' || !Array.isArray(manifest.files)) {
    throw new Error(`${manifestUrl} is not a kanoclip web manifest`);
  }
  const total = manifest.files.reduce((n, f) => n + f.size, 0);
  let loaded = 0;
  let allCached = true;
  const files = new Map<string, Uint8Array>();
  for (const file of manifest.files) {
    const whole = new Uint8Array(file.size);
    let offset = 0;
    for (const chunk of file.chunks) {
      const url = new URL(chunk.path, manifestUrl).href;
      let bytes: Uint8Array | null = null;
      const hit = await cache?.match(url);
      if (hit) {
        const b = new Uint8Array(await hit.arrayBuffer());
        // A cached chunk is used only if it is still the one the manifest names.
        if (b.length === chunk.size && (await sha256(b)) === chunk.sha256) bytes = b;
      }
      if (bytes) {
        loaded += bytes.length;
        onProgress({ phase: 'weights', loaded, total, cached: true });
      } else {
        allCached = false;
        const resp = await fetch(url);
        if (!resp.ok) throw new Error(`cannot download ${url}: HTTP ${resp.status}`);
        bytes = await readBody(resp, (n) => {
          loaded += n;
          onProgress({ phase: 'weights', loaded, total, cached: false });
        });
        if (bytes.length !== chunk.size) {
          throw new Error(`${url}: ${bytes.length} bytes, the manifest says ${chunk.size}`);
        }
        const digest = await sha256(bytes);
        if (digest !== chunk.sha256) {
          throw new Error(`${url}: SHA-256 ${digest} is not the manifest's ${chunk.sha256}`);
        }
        await cache?.put(url, new Response(bytes as unknown as BodyInit));
      }
      if (offset + bytes.length > whole.length) throw new Error(`${file.name}: chunks larger than the file`);
      whole.set(bytes, offset);
      offset += bytes.length;
    }
    if (offset !== file.size) throw new Error(`${file.name}: chunks add up to ${offset} bytes, not ${file.size}`);
    files.set(file.name, whole);
  }
  return { manifestText, manifest, files, cached: allCached };
}
