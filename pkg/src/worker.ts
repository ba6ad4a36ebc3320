// The Web Worker entry: requests in, replies out, one request at a time.
import { createEngine } from './engine.js';
import type { Request } from './protocol.js';

const scope = self as unknown as DedicatedWorkerGlobalScope;
const engine = createEngine((reply, transfer) => scope.postMessage(reply, transfer ?? []));
let chain: Promise<void> = Promise.resolve();
scope.onmessage = (ev: MessageEvent<Request>) => {
  chain = chain.then(() => engine(ev.data));
};
