#!/usr/bin/env python3
"""One image against N sentences, four ways, against a running ofa-entail: N concurrent
/predict calls, one /predict/batch, one /rerank on a cold image, one /rerank again (a warm
feature cache when the server runs with IMAGE_CACHE_MB). Prints one JSON object of seconds.

    python3 bench/rerank.py --server http://127.0.0.1:8000 --image photo.jpg --n 16
"""
import argparse
import base64
import json
import threading
import time
import urllib.request


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.load(r)


def timed(f):
    t = time.perf_counter()
    f()
    return round(time.perf_counter() - t, 3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default="http://127.0.0.1:8000")
    ap.add_argument("--image", required=True)
    ap.add_argument("--n", type=int, default=16)
    a = ap.parse_args()
    image = base64.b64encode(open(a.image, "rb").read()).decode()
    # Distinct sentences, so nothing but the image repeats.
    texts = [f"claim number {i}: a person stands in front of a flag." for i in range(a.n)]
    s = a.server.rstrip("/")

    def predicts():
        threads = [threading.Thread(target=post, args=(s + "/predict", {"image": image, "text": t}))
                   for t in texts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    out = {"n": a.n}
    out["predict_concurrent_s"] = timed(predicts)
    out["predict_batch_s"] = timed(lambda: post(s + "/predict/batch",
                                                [{"image": image, "text": t} for t in texts]))
    # A one-pixel change makes a new image for the feature cache.
    out["rerank_s"] = timed(lambda: post(s + "/rerank", {"image": image, "texts": texts}))
    out["rerank_again_s"] = timed(lambda: post(s + "/rerank", {"image": image, "texts": texts}))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
