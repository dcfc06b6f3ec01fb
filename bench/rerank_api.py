#!/usr/bin/env python3
"""The Cohere-shaped rerank API against the same pairs sent as /predict calls, each way on a
fresh server (so its peak memory is that way's own): one image × N texts, and one text × M
image URLs served on loopback. Prints one JSON object: seconds and peak resident MB per way.

    cargo build --release -p ofa-entail
    python3 bench/rerank_api.py --model-dir fixtures/tiny_ofa_ve --texts 300 --urls 100

Standard library only; starts `ofa-entail serve` and Python's http.server itself.
"""
import argparse
import base64
import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.load(r)


def peak_mb(base):
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("process_resident_memory_peak_bytes "):
                return round(float(line.split()[1]) / 2**20, 1)
    return None


class Serve:
    def __init__(self, binary, model_dir, allow):
        self.port = free_port()
        env = dict(os.environ, MODEL_DIR=model_dir, HOST="127.0.0.1", PORT=str(self.port),
                   IMAGE_URL_ALLOW=allow, RATE_LIMIT="off", RUST_LOG="warn")
        self.p = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        for _ in range(600):
            try:
                with urllib.request.urlopen(self.base + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise SystemExit("serve never became ready")

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.p.terminate()
        self.p.wait()


def timed(f):
    t = time.perf_counter()
    f()
    return round(time.perf_counter() - t, 3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/ofa-entail"))
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--image", default=os.path.join(ROOT, "fixtures/golden/images/grace_hopper.jpg"))
    ap.add_argument("--texts", type=int, default=300)
    ap.add_argument("--urls", type=int, default=100)
    ap.add_argument("--clients", type=int, default=8, help="concurrent /predict calls")
    a = ap.parse_args()
    raw = open(a.image, "rb").read()
    image = base64.b64encode(raw).decode()
    texts = [f"claim number {i}: a person stands in front of a flag." for i in range(a.texts)]
    # Distinct file names, so every URL is its own fetch.
    host_dir = tempfile.mkdtemp()
    for i in range(a.urls):
        with open(os.path.join(host_dir, f"{i}.jpg"), "wb") as f:
            f.write(raw)
    host_port = free_port()
    host = subprocess.Popen([sys.executable, "-m", "http.server", str(host_port), "--bind",
                             "127.0.0.1", "--directory", host_dir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    urls = [f"http://127.0.0.1:{host_port}/{i}.jpg" for i in range(a.urls)]
    allow = f"127.0.0.1:{host_port}"
    query = "a woman in a military uniform."
    pool = concurrent.futures.ThreadPoolExecutor(a.clients)
    out = {"texts": a.texts, "urls": a.urls, "clients": a.clients}
    ways = {
        "image_x_texts_rerank": lambda s: post(s + "/v1/rerank", {"query": {"image": image}, "documents": texts}),
        "image_x_texts_predict": lambda s: list(pool.map(
            lambda t: post(s + "/predict", {"image": image, "text": t}), texts)),
        "text_x_urls_rerank": lambda s: post(s + "/v1/rerank", {"query": query, "documents": urls}),
        "text_x_urls_predict": lambda s: list(pool.map(
            lambda u: post(s + "/predict", {"image": u, "text": query}), urls)),
    }
    try:
        for name, way in ways.items():
            with Serve(a.binary, a.model_dir, allow) as s:
                out[name] = {"seconds": timed(lambda: way(s.base)), "peak_mb": peak_mb(s.base)}
    finally:
        host.terminate()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
