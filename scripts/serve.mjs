// A static file server for the demo and the browser tests: 127.0.0.1 only, the right MIME
// types (application/wasm), no caching headers that would hide a rebuild, and the same
// Content-Security-Policy on every response: a worker takes its policy from its own
// response, not from the page, so the worker scripts need the header too.
// Paths are decoded once and must stay inside the served folder: `..`, encoded
// separators, NUL bytes and malformed escapes get 400 or 403, never a file outside it.
// The pages are cross-origin isolated (COOP `same-origin`, COEP `require-corp`), which the
// package's threaded CPU module needs (shared memory); `serve(dir, port, { isolated: false })`
// serves without, as most hosts do by default (the tests check both).
//   node scripts/serve.mjs [dir] [port]
import { createServer } from 'node:http';
import { createReadStream, statSync } from 'node:fs';
import { extname, resolve, sep } from 'node:path';

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8', '.json': 'application/json', '.wasm': 'application/wasm', '.png': 'image/png',
  '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.svg': 'image/svg+xml', '.md': 'text/plain; charset=utf-8',
  '.d.ts': 'text/plain',
};

export const CSP =
  "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; connect-src 'self'; " +
  "img-src 'self' blob: data:; media-src 'self' blob: mediastream:; style-src 'self'; font-src 'self'; " +
  "object-src 'none'; base-uri 'none'; form-action 'none'";

/** The file a request path names under `root`, or an HTTP status saying why there is none. */
export function resolvePath(root, url) {
  let path;
  try {
    path = decodeURIComponent(new URL(url, 'http://x').pathname);
  } catch {
    return 400; // a malformed escape such as %E0%A4%A
  }
  if (path.includes('\0') || path.includes('\\')) return 400;
  const file = resolve(root, '.' + path);
  if (file !== root && !file.startsWith(root + sep)) return 403;
  return file;
}

/** What a host sends for a cross-origin isolated page (the threaded module's shared memory). */
export const ISOLATION = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

export function serve(dir, port = 0, { isolated = true } = {}) {
  const root = resolve(dir);
  const server = createServer((req, res) => {
    let file = resolvePath(root, req.url);
    if (typeof file === 'number') {
      res.writeHead(file, { 'Content-Type': 'text/plain' }).end(file === 403 ? 'forbidden' : 'bad request');
      return;
    }
    try {
      if (statSync(file).isDirectory()) file = resolve(file, 'index.html');
      const size = statSync(file).size;
      res.writeHead(200, {
        'Content-Type': TYPES[extname(file)] || 'application/octet-stream',
        'Content-Length': size,
        'Cache-Control': 'no-cache',
        'X-Content-Type-Options': 'nosniff',
        'Content-Security-Policy': CSP,
        ...(isolated ? ISOLATION : {}),
      });
      createReadStream(file).pipe(res);
    } catch {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found');
    }
  });
  return new Promise((ok) => server.listen(port, '127.0.0.1', () => ok(server)));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const dir = process.argv[2] || 'www';
  const port = Number(process.argv[3] || process.env.PORT || 8080);
  const server = await serve(dir, port);
  console.log(`kanoclip demo: http://127.0.0.1:${server.address().port}/  (Ctrl-C to stop)`);
}
