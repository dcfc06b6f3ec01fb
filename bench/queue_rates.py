#!/usr/bin/env python3
"""Bulk jobs on RabbitMQ, measured against a running broker (AMQP_URL):

  worker  the worker's pairs per second on N distinct 640x480 images at batch size B, beside
          `ofa-entail bench`'s per-pair time for the same image size and batch size;
  submit  `ofa-entail submit` of N small jobs (publisher confirms);
  collect `ofa-entail collect` of N results (written and fsynced before each ack).

    AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f python3 bench/queue_rates.py \
        --bin target/release/ofa-entail --model-dir fixtures/tiny_ofa_ve worker --jobs 64 --batch 4
    python3 bench/queue_rates.py --bin target/release/ofa-entail submit --jobs 100000
    python3 bench/queue_rates.py --bin target/release/ofa-entail collect --jobs 100000

`collect` needs results to take: they are published here with pika (PyPI) so that the rate
measured is collect's alone. Each run uses its own queue names and deletes them afterwards.
"""
import argparse
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib


def png(width, height, seed):
    """A photo-like RGB PNG, different for every seed (so no two images share features)."""
    rnd = random.Random(seed)
    a, b, c = rnd.randrange(1, 7), rnd.randrange(1, 7), rnd.randrange(256)
    rows = bytearray()
    for y in range(height):
        rows.append(0)
        for x in range(width):
            v = (x * a + y * b + c) % 256
            rows += bytes((v, (x ^ y ^ c) % 256, 255 - v // 2))
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    head = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head)
            + chunk(b"IDAT", zlib.compress(bytes(rows), 6)) + chunk(b"IEND", b""))


def queues(tag):
    return {"JOBS_QUEUE": f"bench.{tag}.jobs", "RESULTS_QUEUE": f"bench.{tag}.results",
            "DEAD_LETTER_QUEUE": f"bench.{tag}.dead"}


def run(cmd, env, **kw):
    return subprocess.run(cmd, env={**os.environ, **env}, check=True, **kw)


def delete_queues(env):
    import pika
    conn = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
    ch = conn.channel()
    for q in env.values():
        ch.queue_delete(q)
    conn.close()


def timed(cmd, env):
    t = time.perf_counter()
    run(cmd, env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def worker(args):
    env = queues(f"worker{os.getpid()}")
    work = tempfile.mkdtemp(prefix="ofa-queue-bench-")
    for i in range(args.jobs + args.batch):
        with open(os.path.join(work, f"img{i}.png"), "wb") as f:
            f.write(png(640, 480, i))
    def bench_ms():
        out = run([args.bin, "bench", "--model-dir", args.model_dir, "--image",
                   os.path.join(work, "img0.png"), "--batch-sizes", str(args.batch),
                   "--iterations", "3", "--json"], {}, capture_output=True).stdout
        return json.loads(out)["batches"][0]["total_ms"] / args.batch
    # Timed before and after the worker, so a machine that drifts shows in both.
    before = bench_ms()
    env.update({"MAX_BATCH_SIZE": str(args.batch), "IMAGE_ROOT": work, "METRICS_PORT": "0",
                "HOST": "127.0.0.1", "LOG_FORMAT": "json"})
    proc = subprocess.Popen([args.bin, "worker", "--model-dir", args.model_dir],
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    try:
        def batch_of(ids, name):
            path = os.path.join(work, name)
            with open(path, "w") as f:
                for i in ids:
                    f.write(json.dumps({"id": f"job-{i}", "text": args.text,
                                        "image_path": f"img{i}.png"}) + "\n")
            return path
        out = os.path.join(work, "results.jsonl")
        # Warm-up: one batch through, so the timed run starts with a connected, warm worker.
        run([args.bin, "submit", batch_of(range(args.jobs, args.jobs + args.batch), "warm.jsonl")],
            env, stdout=subprocess.DEVNULL)
        run([args.bin, "collect", "--out", out, "--expect", str(args.batch)], env,
            stderr=subprocess.DEVNULL)
        os.remove(out)
        jobs = batch_of(range(args.jobs), "jobs.jsonl")
        t = time.perf_counter()
        run([args.bin, "submit", jobs], env, stdout=subprocess.DEVNULL)
        run([args.bin, "collect", "--out", out, "--expect", str(args.jobs)], env,
            stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t
    finally:
        proc.terminate()
        proc.wait()
        delete_queues({k: v for k, v in env.items() if k.endswith("QUEUE")})
    per_pair_ms = (before + bench_ms()) / 2
    rate = args.jobs / wall
    bench_rate = 1000.0 / per_pair_ms
    print(json.dumps({"batch_size": args.batch, "jobs": args.jobs,
                      "worker_pairs_per_s": round(rate, 2),
                      "bench_pairs_per_s": round(bench_rate, 2),
                      "worker_vs_bench": round(rate / bench_rate, 3)}))


def submit(args):
    env = queues(f"submit{os.getpid()}")
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for i in range(args.jobs):
            f.write(json.dumps({"id": f"job-{i}", "text": "a small square.",
                                "image_path": "tiny_8x8.png"}) + "\n")
    try:
        wall = timed([args.bin, "submit", f.name], env)
    finally:
        delete_queues(env)
        os.remove(f.name)
    print(json.dumps({"command": "submit", "jobs": args.jobs, "seconds": round(wall, 2),
                      "jobs_per_s": round(args.jobs / wall)}))


def collect(args):
    import pika
    env = queues(f"collect{os.getpid()}")
    conn = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
    ch = conn.channel()
    ch.queue_declare(env["RESULTS_QUEUE"], durable=True, arguments={"x-queue-type": "quorum"})
    ch.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
    for i in range(args.jobs):
        body = json.dumps({"id": f"job-{i}", "status": "ok", "result": 0, "label": "Yes",
                           "confidence": 0.9, "details": [0.9, 0.05, 0.05],
                           "scores": {"yes": 0.9, "no": 0.05, "maybe": 0.05},
                           "model_id": "bench", "model_revision": "master"})
        ch.basic_publish("", env["RESULTS_QUEUE"], body, props)
    conn.close()
    out = tempfile.mktemp(suffix=".jsonl")
    try:
        wall = timed([args.bin, "collect", "--out", out, "--expect", str(args.jobs)], env)
    finally:
        delete_queues(env)
        if os.path.exists(out):
            os.remove(out)
    print(json.dumps({"command": "collect", "results": args.jobs, "seconds": round(wall, 2),
                      "results_per_s": round(args.jobs / wall)}))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", default="target/release/ofa-entail")
    p.add_argument("--model-dir", default="fixtures/tiny_ofa_ve")
    p.add_argument("--text", default="a woman in a military uniform.")
    p.add_argument("what", choices=["worker", "submit", "collect"])
    p.add_argument("--jobs", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    args = p.parse_args()
    if "AMQP_URL" not in os.environ:
        sys.exit("set AMQP_URL to a running RabbitMQ broker")
    {"worker": worker, "submit": submit, "collect": collect}[args.what](args)


if __name__ == "__main__":
    main()
