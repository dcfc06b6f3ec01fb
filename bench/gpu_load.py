"""Closed-loop load on `POST /predict` of a running `ofa-entail serve`: CONCURRENCY clients,
each on its own keep-alive connection, for SECONDS (or REQUESTS in all). Prints one JSON object:
throughput, latency percentiles, the server's own inference-time median, status counts.
Standard library only (the GPU machines have no package index).

usage: gpu_load.py --port P --image FILE [--concurrency C] [--seconds S | --requests N]
"""

import argparse
import http.client
import json
import threading
import time


def body_for(image: bytes, text: str):
    boundary = "ofaentailgpucheck"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n".encode(),
        image,
        f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="text"\r\n\r\n{text}\r\n'
        f"--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def pct(values, q):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--text", default="a woman in a military uniform.")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--requests", type=int, default=0)
    a = ap.parse_args()
    body, ctype = body_for(open(a.image, "rb").read(), a.text)
    lock = threading.Lock()
    latencies, inference, statuses = [], [], {}
    sent = [0]
    stop_at = time.monotonic() + a.seconds

    def more():
        with lock:
            if a.requests:
                if sent[0] >= a.requests:
                    return False
            elif time.monotonic() >= stop_at:
                return False
            sent[0] += 1
            return True

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=60)
        while more():
            t = time.monotonic()
            try:
                conn.request("POST", "/predict", body, {"Content-Type": ctype})
                r = conn.getresponse()
                r.read()
                status, inf = r.status, r.getheader("x-inference-time")
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=60)
                status, inf = type(e).__name__, None
            dt = time.monotonic() - t
            with lock:
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if status == 200:
                    latencies.append(dt * 1e3)
                    if inf:
                        inference.append(float(inf) * 1e3)
        conn.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(a.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    print(json.dumps({
        "concurrency": a.concurrency,
        "seconds": round(wall, 3),
        "ok": len(latencies),
        "statuses": statuses,
        "pairs_per_s": round(len(latencies) / wall, 1),
        "latency_ms": {q: pct(latencies, p) and round(pct(latencies, p), 2)
                       for q, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))},
        "server_inference_ms_p50": pct(inference, 0.5) and round(pct(inference, 0.5), 2),
    }))


if __name__ == "__main__":
    main()
