// How the page-side Detector reaches its engine: a Web Worker (default) or the engine on
// the page itself (`worker: false`).

import { createEngine } from './engine.js';
import type { PoolCrash, Reply, Request } from './protocol.js';

export interface Transport {
  send(req: Request, transfer: Transferable[]): void;
  terminate(): void;
  /**
   * The BroadcastChannel on which the engine's pool threads report a trap (the engine is
   * then blocked waiting for the thread, so it cannot); worker transports only.
   */
  poolChannel?: string;
}

/**
 * The inference worker. By default its URL is the package's own `dist/worker.js`, which
 * Vite and webpack find and emit; with `workerUrl` (for bundlers that do not follow
 * `new URL(…, import.meta.url)`, such as esbuild), that file wherever the app serves it.
 * A module worker must come from the page's origin: one from another origin (a CDN) is
 * started through a same-origin `blob:` module that imports it.
 */
function startWorker(workerUrl?: string): Worker {
  // Literal options: Vite reads them statically.
  if (!workerUrl) return new Worker(new URL('./worker.js', import.meta.url), { type: 'module', name: 'kanoclip' });
  const options: WorkerOptions = { type: 'module', name: 'kanoclip' };
  const url = new URL(workerUrl, globalThis.location?.href);
  if (typeof location === 'undefined' || url.origin === location.origin) return new Worker(url, options);
  const trampoline = new Blob([`import ${JSON.stringify(url.href)};`], { type: 'text/javascript' });
  return new Worker(URL.createObjectURL(trampoline), options);
}

export function workerTransport(onReply: (r: Reply) => void, onCrash: (e: string) => void, workerUrl?: string): Transport {
  const w = startWorker(workerUrl);
  w.onmessage = (ev: MessageEvent<Reply>) => onReply(ev.data);
  w.onerror = (ev: ErrorEvent) => {
    ev.preventDefault();
    onCrash(ev.message || 'the inference worker failed');
  };
  const poolChannel = `kanoclip-pool-${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`;
  const pool = typeof BroadcastChannel === 'function' ? new BroadcastChannel(poolChannel) : null;
  if (pool) {
    pool.onmessage = (ev: MessageEvent<PoolCrash>) => {
      if (ev.data?.type === 'pool-crash') onCrash(`the wasm module stopped on a CPU thread (${ev.data.message}); restarting`);
    };
  }
  return {
    send: (req, transfer) => w.postMessage(req, transfer),
    terminate: () => {
      pool?.close();
      w.terminate();
    },
    poolChannel: pool ? poolChannel : undefined,
  };
}

export function inlineTransport(onReply: (r: Reply) => void): Transport {
  let alive = true;
  const engine = createEngine((r) => queueMicrotask(() => alive && onReply(r)));
  let chain: Promise<void> = Promise.resolve();
  return {
    send: (req) => {
      chain = chain.then(() => engine(req));
    },
    terminate: () => {
      alive = false;
    },
  };
}
