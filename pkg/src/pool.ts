// One thread of the threaded module's pool (wasm-threads/): the engine, itself thread 0,
// starts `threads - 1` of these, each with the compiled module and the engine's shared
// memory. It runs rayon's thread loop for the rest of its life, so it never answers
// again. If the module traps here (a Rust panic aborts), the engine is blocked waiting on
// this thread and cannot say so: this thread tells the page on the engine's
// BroadcastChannel, the call in flight rejects and the page restarts the engine.
import { messageOf } from './errors.js';
import type { PoolCrash, PoolInit } from './protocol.js';

const scope = self as unknown as DedicatedWorkerGlobalScope;
// A Rust panic reaches JavaScript as a bare `unreachable` trap; its message went to the
// console first (the module's panic hook), so the last console error says what happened.
let lastError = '';
const consoleError = console.error.bind(console);
console.error = (...args: unknown[]) => {
  lastError = args.map(String).join(' ').split('\nStack')[0].trim();
  consoleError(...args);
};
scope.onmessage = async (ev: MessageEvent<PoolInit>) => {
  const { module, memory, channel } = ev.data;
  let started = false;
  try {
    const m = await import('../wasm-threads/kanoclip.js');
    await m.default({ module_or_path: module, memory });
    scope.postMessage({ type: 'ready' });
    started = true;
    m.poolWorkerRun();
  } catch (e) {
    const message = lastError ? `${messageOf(e)}: ${lastError}` : messageOf(e);
    const crash: PoolCrash = { type: 'pool-crash', message };
    // Before 'ready' the engine is listening (it falls back to the single-threaded module).
    if (!started) {
      scope.postMessage(crash);
      return;
    }
    try {
      new BroadcastChannel(channel).postMessage(crash);
    } catch {
      // No channel to the page: nothing else can be told.
    }
  }
};
