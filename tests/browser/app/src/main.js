// The app the bundler tests build (tests/browser/run.mjs): the SDK as an app imports it,
// nothing else. `?worker=URL` passes workerUrl (esbuild's recipe).
import { createDetector } from 'kanoclip-wasm';

const query = new URLSearchParams(location.search);
window.run = async () => {
  const detector = await createDetector({
    weights: 'model/manifest.json',
    backend: 'cpu',
    workerUrl: query.get('worker') ?? undefined,
  });
  const blob = await (await fetch('crack.jpg')).blob();
  const r = await detector.detect(blob);
  detector.dispose();
  return { score: r.score, width: r.width, height: r.height, map: Array.from(r.map), threads: detector.threads,
    cores: navigator.hardwareConcurrency, reason: detector.backendReason };
};
