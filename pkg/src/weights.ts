// Fetching a web bundle: the manifest, then every chunk with progress, each checked
// against its SHA-256 and kept in Cache Storage, so that the second load needs no network.

import type { Progress } from './protocol.js';
import { KanoclipError, messageOf } from './errors.js';

/**
 * The Cache Storage name that holds downloaded bundles.
 * @example
 * await caches.delete(CACHE_NAME); // what Detector.clearCache() does
 */
export const CACHE_NAME = 'kanoclip-weights-v1';

/** One chunk file of a bundle file (Rust's `detect::bundle::Chunk`). */
export interface Chunk {
  path: string;
  size: number;
  sha256: string;
}

/** One file of a bundle, cut into chunks (Rust's `detect::bundle::BundleFile`). */
export interface BundleFile {
  name: string;
  size: number;
  sha256: string;
  chunks: Chunk[];
}

/** The part of `manifest.json` this package reads (Rust's `web::types::JsManifest`; a Rust test checks the fields). */
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

/**
 * Chunks downloaded at once: enough to hide each request's latency, few enough that at
 * most 4 × 32 MB are in flight beside the assembled files.
 */
const PARALLEL = 4;

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

/**
 * Load a bundle. `check` is the wasm module's own manifest check (`checkManifest`), run on
 * the text before anything is cached or fetched: it refuses bad sizes, chunk lists and
 * chunk paths (only plain, content-named file names beside the manifest), so the rules
 * live in one place, in Rust.
 */
export async function loadBundle(
  manifestUrl: string,
  check: (manifestText: string) => void,
  onProgress: (p: Progress) => void,
): Promise<Loaded> {
  const cache = await openCache();
  onProgress({ phase: 'manifest', loaded: 0, total: 0, cached: false });
  let manifestText: string;
  let fromNetwork = false;
  try {
    // `no-store`: the manifest is the one file whose name stays the same across deploys.
    const resp = await fetch(manifestUrl, { cache: 'no-store' });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    manifestText = await resp.text();
    fromNetwork = true;
  } catch (e) {
    // Offline: the cached manifest, if this bundle was loaded before.
    const hit = await cache?.match(manifestUrl);
    if (!hit) throw new KanoclipError('NETWORK', `cannot load the manifest ${manifestUrl}: ${messageOf(e)}`);
    manifestText = await hit.text();
  }
  check(manifestText);
  // Only a manifest that parses and passes the checks is kept for offline use.
  if (fromNetwork) await cache?.put(manifestUrl, new Response(manifestText));
  // `check` (the Rust manifest checks) has accepted this text, so it has Manifest's shape.
  const manifest = JSON.parse(manifestText) as Manifest;
  const base = new URL(manifestUrl, self.location?.href);
  const total = manifest.files.reduce((n, f) => n + f.size, 0);
  let loaded = 0;
  let allCached = true;
  const files = new Map<string, Uint8Array>();
  // Every chunk with where it goes: its file's buffer and its offset there.
  const jobs: { chunk: Chunk; whole: Uint8Array; offset: number }[] = [];
  for (const file of manifest.files) {
    const whole = new Uint8Array(file.size);
    let offset = 0;
    for (const chunk of file.chunks) {
      if (offset + chunk.size > whole.length) throw new KanoclipError('INTEGRITY', `${file.name}: chunks larger than the file`);
      jobs.push({ chunk, whole, offset });
      offset += chunk.size;
    }
    if (offset !== file.size) throw new KanoclipError('INTEGRITY', `${file.name}: chunks add up to ${offset} bytes, not ${file.size}`);
    files.set(file.name, whole);
  }
  // A failed chunk stops the others' downloads.
  const stop = new AbortController();
  const one = async ({ chunk, whole, offset }: (typeof jobs)[number]) => {
    const resolved = new URL(chunk.path, base);
    // checkManifest allows only plain file names; this keeps the rule if that changes.
    if (resolved.origin !== base.origin) throw new KanoclipError('INTEGRITY', `${chunk.path}: not on the manifest's origin`);
    const url = resolved.href;
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
      let resp: Response;
      try {
        resp = await fetch(url, { signal: stop.signal });
      } catch (e) {
        throw new KanoclipError('NETWORK', `cannot download ${url}: ${messageOf(e)}`);
      }
      if (!resp.ok) throw new KanoclipError('NETWORK', `cannot download ${url}: HTTP ${resp.status}`);
      bytes = await readBody(resp, (n) => {
        loaded += n;
        onProgress({ phase: 'weights', loaded, total, cached: false });
      });
      if (bytes.length !== chunk.size) {
        throw new KanoclipError('INTEGRITY', `${url}: ${bytes.length} bytes, the manifest says ${chunk.size}`);
      }
      const digest = await sha256(bytes);
      if (digest !== chunk.sha256) {
        throw new KanoclipError('INTEGRITY', `${url}: SHA-256 ${digest} is not the manifest's ${chunk.sha256}`);
      }
      await cache?.put(url, new Response(bytes as unknown as BodyInit));
    }
    whole.set(bytes, offset);
  };
  let next = 0;
  const lane = async () => {
    while (next < jobs.length && !stop.signal.aborted) await one(jobs[next++]);
  };
  try {
    await Promise.all(Array.from({ length: Math.min(PARALLEL, jobs.length) }, lane));
  } catch (e) {
    stop.abort();
    throw e;
  }
  return { manifestText, manifest, files, cached: allCached };
}
