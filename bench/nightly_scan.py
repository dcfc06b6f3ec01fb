#!/usr/bin/env python3
"""A nightly catalogue scan run twice, with and without changes in between: what the result
store saves. N products, each with its own image URL (served here on loopback with an ETag and
a Last-Modified, answering 304 to a matching If-None-Match) and its own claim. Night 1 scores
everything into an empty store; then one product's image and another's claim change; night 2
should score only those two, answer the rest from the store after a 304, and take a small
fraction of night 1's time. Results of night 2 are compared with night 1's.

    python3 bench/nightly_scan.py --bin target/release/ofa-entail \
        --model-dir fixtures/tiny_ofa_ve --jobs 2000 batch
    AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f REDIS_URL=redis://127.0.0.1:6379/0 \
        python3 bench/nightly_scan.py --model-dir fixtures/tiny_ofa_ve --jobs 2000 worker --replicas 2

`batch` uses a file store in a scratch directory; `worker` starts the replicas on a running
broker and a running Redis (flushed first: use a Redis of its own) and times submit → collect.
"""
import argparse
import hashlib
import http.server
import json
import os
import socketserver
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

sys.path.insert(0, os.path.dirname(__file__))
from queue_rates import png, queues, delete_queues  # noqa: E402


def tagged(base, i):
    """`base` with a text chunk naming product `i` before IEND: its own bytes and ETag."""
    data = b"product\x00" + str(i).encode()
    body = b"tEXt" + data
    chunk = struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    return base[:-12] + chunk + base[-12:]


class Catalogue(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        self.images, self.counts = {}, {"200": 0, "304": 0, "conditional": 0}
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), Handler)

    def authority(self):
        return f"127.0.0.1:{self.server_address[1]}"

    def url(self, name):
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = self.server.images.get(self.path.lstrip("/"))
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        tag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        asked = self.headers.get("If-None-Match")
        with self.server.lock:
            self.server.counts["conditional"] += asked is not None
            self.server.counts["304" if asked == tag else "200"] += 1
        self.send_response(304 if asked == tag else 200)
        self.send_header("ETag", tag)
        self.send_header("Last-Modified", "Sun, 06 Dec 2026 00:00:00 GMT")
        if asked == tag:
            self.end_headers()
            return
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def claim(i):
    return f"product {i} is shown in the picture."


def write_jobs(path, site, n, claims):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"p{i}", "text": claims.get(i, claim(i)),
                                "image_url": site.url(f"p{i}.png")}) + "\n")


def by_id(path):
    with open(path) as f:
        return {r["id"]: r for r in map(json.loads, f)}


def compare(first, second, changed):
    """Night 2 against night 1: unchanged products bit-identical and from the store."""
    errors = [v for v in list(first.values()) + list(second.values()) if v["status"] != "ok"]
    if errors:
        sys.exit(f"{len(errors)} jobs failed, the first: {errors[0]}")
    same = all(first[k]["details"] == v["details"] for k, v in second.items() if k not in changed)
    return {
        "ok": sum(v["status"] == "ok" for v in second.values()),
        "from_store": sum(bool(v.get("cached")) for v in second.values()),
        "changed_scored": sorted(k for k in changed if not second[k].get("cached")),
        "unchanged_identical": same,
    }


def night_batch(args, site, jobs, out, store):
    env = {**os.environ, "RESULT_STORE": store, "IMAGE_URL_ALLOW": site.authority(),
           "MAX_BATCH_SIZE": str(args.batch)}
    t = time.perf_counter()
    subprocess.run([args.bin, "batch", jobs, "--out", out, "--model-dir", args.model_dir],
                   env=env, check=True, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def start_workers(args, env, work):
    procs = []
    for r in range(args.replicas):
        log = open(os.path.join(work, f"worker{r}.log"), "w")
        procs.append(subprocess.Popen(
            [args.bin, "worker", "--model-dir", args.model_dir],
            env={**os.environ, **env, "METRICS_PORT": "0"}, stdout=log, stderr=log))
    # Ready when each has logged its connection to the broker.
    deadline = time.time() + 300
    for r in range(args.replicas):
        while "broker_connected" not in open(os.path.join(work, f"worker{r}.log")).read():
            if time.time() > deadline:
                sys.exit(f"worker {r} never connected")
            time.sleep(0.2)
    return procs


def night_worker(args, env, jobs, out):
    t = time.perf_counter()
    subprocess.run([args.bin, "submit", jobs], env={**os.environ, **env}, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run([args.bin, "collect", "--out", out, "--expect", str(args.jobs)],
                   env={**os.environ, **env}, check=True, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", default="target/release/ofa-entail")
    p.add_argument("--model-dir", default="fixtures/tiny_ofa_ve")
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("mode", choices=["batch", "worker"])
    p.add_argument("--replicas", type=int, default=2)
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="ofa-nightly-")
    site = Catalogue()
    threading.Thread(target=site.serve_forever, daemon=True).start()
    bases = [png(320, 240, s) for s in range(50)]
    for i in range(args.jobs):
        site.images[f"p{i}.png"] = tagged(bases[i % len(bases)], i)
    jobs = os.path.join(work, "jobs.jsonl")
    write_jobs(jobs, site, args.jobs, {})
    night = {}
    if args.mode == "batch":
        store = os.path.join(work, "results.redb")
        run_night = lambda n: night_batch(args, site, jobs, os.path.join(work, f"night{n}.jsonl"), store)
        procs = []
    else:
        if "AMQP_URL" not in os.environ or "REDIS_URL" not in os.environ:
            sys.exit("set AMQP_URL and REDIS_URL to a running broker and Redis")
        subprocess.run(["redis-cli", "-u", os.environ["REDIS_URL"], "flushdb"], check=True,
                       stdout=subprocess.DEVNULL)
        env = {**queues(f"nightly{os.getpid()}"), "RESULT_STORE": os.environ["REDIS_URL"],
               "IMAGE_URL_ALLOW": site.authority(), "MAX_BATCH_SIZE": str(args.batch),
               "HOST": "127.0.0.1"}
        procs = start_workers(args, env, work)
        run_night = lambda n: night_worker(args, env, jobs, os.path.join(work, f"night{n}.jsonl"))
    try:
        night[1] = run_night(1)
        counts1 = dict(site.counts)
        for k in site.counts:
            site.counts[k] = 0
        # Between the nights: one picture replaced, one claim edited.
        changed_image, changed_text = 7 % args.jobs, 11 % args.jobs
        site.images[f"p{changed_image}.png"] = tagged(bases[(changed_image + 1) % len(bases)], -1)
        write_jobs(jobs, site, args.jobs, {changed_text: f"product {changed_text} is a bicycle."})
        night[2] = run_night(2)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()
        if args.mode == "worker":
            delete_queues({k: v for k, v in env.items() if k.endswith("QUEUE")})
    first, second = by_id(os.path.join(work, "night1.jsonl")), by_id(os.path.join(work, "night2.jsonl"))
    print(json.dumps({
        "mode": args.mode, "replicas": args.replicas if args.mode == "worker" else 1,
        "model_dir": args.model_dir, "jobs": args.jobs,
        "night1_s": round(night[1], 2), "night2_s": round(night[2], 2),
        "night2_over_night1": round(night[2] / night[1], 4),
        "night1_http": counts1, "night2_http": site.counts,
        **compare(first, second, {f"p{changed_image}", f"p{changed_text}"}),
    }))


if __name__ == "__main__":
    main()
