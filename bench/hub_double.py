"""A stand-in for the ModelScope hub for benchmarks and trials: serves one directory as a model
repository with the hub's file listing (sizes and SHA-256) and raw file downloads with Range,
on loopback. The test suite has its own, richer imitation (crates/ofa-hub/tests/fakehub).

usage: hub_double.py MODEL_DIR PORT
then:  MODELSCOPE_ENDPOINT=http://127.0.0.1:PORT ofa-entail download any/name
"""

import hashlib
import json
import os
import re
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = sys.argv[1]
FILES = {}
for name in sorted(os.listdir(ROOT)):
    path = os.path.join(ROOT, name)
    if os.path.isfile(path):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
        FILES[name] = (path, os.path.getsize(path), h.hexdigest())


class Handler(BaseHTTPRequestHandler):
    def send(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path.endswith("/repo/files"):
            files = [
                {"Path": n, "Name": n, "Type": "blob", "Size": size, "Sha256": sha}
                for n, (_, size, sha) in FILES.items()
            ]
            body = {"Code": 200, "Success": True, "Data": {"Files": files}}
            return self.send(200, json.dumps(body).encode(), [("Content-Type", "application/json")])
        name = query.get("FilePath", [""])[0]
        if not url.path.endswith("/repo") or name not in FILES:
            return self.send(404, b'{"Code":404,"Success":false,"Message":"not found"}')
        path, size, _ = FILES[name]
        start = 0
        m = re.match(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if m:
            start = int(m.group(1))
        self.send_response(206 if m else 200)
        if m:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        with open(path, "rb") as f:
            f.seek(start)
            for block in iter(lambda: f.read(1 << 20), b""):
                self.wfile.write(block)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Handler).serve_forever()
