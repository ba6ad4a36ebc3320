#!/usr/bin/env python3
"""scripts/fetch-weights against a loopback server that behaves like the hub:

- `resolve/main/<weights>` answers with a redirect to a CDN path that carries the file's
  SHA-256 and size (`X-Linked-Etag`, `X-Linked-Size`); the CDN's response has neither, and
  an ETag that is not a SHA-256;
- small files are served directly, with a git-blob ETag (not a SHA-256);
- the CDN honours `Range` (206), or ignores it (200), or cuts the first response short;
- a renamed repository answers with a relative redirect inside the hub.

Run by scripts/test (standard library only, no network): prints
`fetch-weights: N passed, M failed` and exits non-zero on a failure.
"""
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SCRIPT = os.path.join(ROOT, "scripts", "fetch-weights")
WEIGHTS = os.urandom(3_000_000)
CONFIG = json.dumps({"model_cfg": {"embed_dim": 512}}).encode()


class Hub(http.server.BaseHTTPRequestHandler):
    """The hub and its CDN in one server; `self.server.mode` picks the behaviour."""

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.answer(body=False)

    def do_GET(self):
        self.answer(body=True)

    def send(self, status, headers, data, body):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def answer(self, body):
        s = self.server
        s.requests.append((self.command, self.path, self.headers.get("Range")))
        if self.path.startswith("/old/repo/"):
            self.send(307, {"Location": self.path.replace("/old/repo/", "/org/repo/", 1)}, b"", body)
        elif self.path == "/org/repo/resolve/main/open_clip_config.json":
            self.send(200, {"ETag": '"' + "a" * 40 + '"'}, CONFIG, body)
        elif self.path == "/org/repo/resolve/main/open_clip_model.safetensors":
            headers = {"Location": f"http://127.0.0.1:{s.server_port}/cdn/blob?sig=1"}
            if s.mode != "no-hash":
                headers["X-Linked-Etag"] = '"' + s.advertised + '"'
                headers["X-Linked-Size"] = str(len(WEIGHTS))
            self.send(302, headers, b"", body)
        elif self.path.startswith("/cdn/blob"):
            self.cdn(body)
        else:
            self.send(404, {}, b"not found", body)

    def cdn(self, body):
        s = self.server
        cdn = {"ETag": '"cdn-etag-1234"', "Accept-Ranges": "bytes"}
        rng = self.headers.get("Range")
        if rng and s.mode != "ignore-range":
            start = int(rng.removeprefix("bytes=").split("-")[0])
            cdn["Content-Range"] = f"bytes {start}-{len(WEIGHTS) - 1}/{len(WEIGHTS)}"
            self.send(206, cdn, WEIGHTS[start:], body)
            return
        if s.mode in ("cut", "ignore-range") and body and not s.cut_done:
            # Claim the whole file, send a third of it, and hang up.
            s.cut_done = True
            self.send_response(200)
            for k, v in cdn.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(WEIGHTS)))
            self.end_headers()
            self.wfile.write(WEIGHTS[: len(WEIGHTS) // 3])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.send(200, cdn, WEIGHTS, body)


class FetchWeights(unittest.TestCase):
    def setUp(self):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
        self.server.requests = []
        self.server.mode = "plain"
        self.server.cut_done = False
        self.server.advertised = hashlib.sha256(WEIGHTS).hexdigest()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.dir = tempfile.mkdtemp(prefix="kanoclip-fetch-")
        self.manifest(repo="org/repo", pinned=None)

    def tearDown(self):
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def manifest(self, repo, pinned):
        m = {"format": 1, "models": {"tiny": {
            "name": "tiny", "repo": repo, "dir": "tiny", "quick_gelu": True,
            "files": [{"path": "open_clip_config.json", "sha256": None},
                      {"path": "open_clip_model.safetensors", "sha256": pinned}]}}}
        with open(os.path.join(self.dir, "manifest.json"), "w") as f:
            json.dump(m, f)

    def pinned(self):
        with open(os.path.join(self.dir, "manifest.json")) as f:
            return [e["sha256"] for e in json.load(f)["models"]["tiny"]["files"]]

    def run_fetch(self):
        env = dict(os.environ, KANOCLIP_HUB=f"http://127.0.0.1:{self.server.server_port}",
                   KANOCLIP_WEIGHTS=self.dir)
        return subprocess.run([sys.executable, SCRIPT, "tiny"], env=env, capture_output=True, text=True,
                              timeout=120)

    def weights(self):
        return os.path.join(self.dir, "tiny", "open_clip_model.safetensors")

    def assert_downloaded(self, r):
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(self.weights(), "rb") as f:
            self.assertEqual(f.read(), WEIGHTS)
        self.assertFalse(os.path.exists(self.weights() + ".part"))
        with open(os.path.join(self.dir, "tiny", "clip_config.json")) as f:
            self.assertTrue(json.load(f)["model_cfg"]["quick_gelu"])

    def test_the_hash_comes_from_the_redirect_and_is_pinned(self):
        r = self.run_fetch()
        self.assert_downloaded(r)
        # The first verified download pins the hub's hash; the config (no published hash)
        # is not pinned without --pin.
        self.assertEqual(self.pinned(), [None, hashlib.sha256(WEIGHTS).hexdigest()])
        # The redirect was read with HEAD and not followed: the CDN saw one GET.
        cdn = [q for q in self.server.requests if q[1].startswith("/cdn/")]
        self.assertEqual([q[0] for q in cdn], ["GET"], self.server.requests)

    def test_a_renamed_repository_is_followed_inside_the_hub(self):
        self.manifest(repo="old/repo", pinned=None)
        self.assert_downloaded(self.run_fetch())

    def test_an_interrupted_download_resumes_with_range(self):
        self.server.mode = "cut"
        first = self.run_fetch()
        self.assertNotEqual(first.returncode, 0, first.stderr)
        self.assertFalse(os.path.exists(self.weights()), "no half file under the final name")
        self.assertEqual(os.path.getsize(self.weights() + ".part"), len(WEIGHTS) // 3)
        second = self.run_fetch()
        self.assert_downloaded(second)
        ranges = [q[2] for q in self.server.requests if q[1].startswith("/cdn/") and q[2]]
        self.assertEqual(ranges, [f"bytes={len(WEIGHTS) // 3}-"])
        self.assertIn("resumed", second.stderr)

    def test_a_server_that_ignores_range_gets_a_fresh_download(self):
        self.server.mode = "ignore-range"
        self.assertNotEqual(self.run_fetch().returncode, 0)
        self.assert_downloaded(self.run_fetch())

    def test_a_wrong_hash_is_refused_and_removed(self):
        self.server.advertised = hashlib.sha256(b"other bytes").hexdigest()
        r = self.run_fetch()
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("does not match", r.stderr)
        self.assertFalse(os.path.exists(self.weights()))
        self.assertFalse(os.path.exists(self.weights() + ".part"))
        self.assertEqual(self.pinned(), [None, None])

    def test_a_pin_is_held_against_the_hub(self):
        self.manifest(repo="org/repo", pinned="b" * 64)
        r = self.run_fetch()
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("is pinned", r.stderr)
        self.assertFalse(os.path.exists(self.weights()))

    def test_no_published_or_pinned_hash_is_refused(self):
        self.server.mode = "no-hash"
        r = self.run_fetch()
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("no pinned or published sha256", r.stderr)
        self.assertFalse(os.path.exists(self.weights()))

    def test_a_pinned_hash_alone_is_enough(self):
        self.server.mode = "no-hash"
        self.manifest(repo="org/repo", pinned=hashlib.sha256(WEIGHTS).hexdigest())
        self.assert_downloaded(self.run_fetch())


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    failed = len(result.failures) + len(result.errors)
    print(f"fetch-weights: {result.testsRun - failed} passed, {failed} failed")
    sys.exit(1 if failed or not result.wasSuccessful() else 0)
