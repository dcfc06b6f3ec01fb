#!/usr/bin/env python3
"""Rerank vector-search candidates with ofa-entail.

A vector database (here Qdrant's search response; Milvus, pgvector and others return the same
ids, scores and payloads) gives the nearest candidates by embedding similarity. `POST /rerank`
then asks the entailment model which of them really hold, and the script keeps those at or
above a threshold, best first. Either direction, with images by URL end to end (the server
fetches them; nothing is downloaded here):

- a photo (a file or its URL) against the hits' `title`s ("search texts by image"):

    python3 examples/rerank_search_results.py --server http://localhost:8000 \\
        --image https://images.example.com/query.jpg --results search.json --threshold 0.5

- a sentence against the hits' `image_url`s ("search images by text"):

    python3 examples/rerank_search_results.py --server http://localhost:8000 \\
        --text "a woman in a military uniform." --results search.json --threshold 0.5

Standard library only. Prints one JSON line per kept candidate.
"""
import argparse
import base64
import json
import sys
import urllib.request


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", default="http://localhost:8000")
    query = ap.add_mutually_exclusive_group(required=True)
    query.add_argument("--image", help="the query image: a file, or an http(s) URL the server fetches")
    query.add_argument("--text", help="the query sentence, against the hits' image_url payloads")
    ap.add_argument("--results", required=True, help="the vector search's JSON response")
    ap.add_argument("--threshold", type=float, default=0.5, help="lowest yes-probability kept")
    ap.add_argument("--api-key", help="when the service requires one")
    args = ap.parse_args()

    hits = json.load(open(args.results))["result"]
    if args.text is not None:
        body = {"text": args.text, "images": [h["payload"]["image_url"] for h in hits]}
    elif args.image.startswith(("http://", "https://")):
        body = {"image": args.image, "texts": [h["payload"]["title"] for h in hits]}
    else:
        with open(args.image, "rb") as f:
            image = base64.b64encode(f.read()).decode()
        body = {"image": image, "texts": [h["payload"]["title"] for h in hits]}
    body["min_score"] = args.threshold
    req = urllib.request.Request(
        args.server.rstrip("/") + "/rerank",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    if args.api_key:
        req.add_header("Authorization", "Bearer " + args.api_key)
    with urllib.request.urlopen(req, timeout=120) as r:
        ranked = json.load(r)["results"]

    for c in ranked:
        hit = hits[c["index"]]
        if "error" in c:
            print(f"candidate {hit['id']}: {c['error_type']}: {c['error']}", file=sys.stderr)
            continue
        shown = {"id": hit["id"]}
        for field in ("title", "image_url"):
            if field in hit["payload"]:
                shown[field] = hit["payload"][field]
        shown.update({"vector_score": hit["score"], "entailment": round(c["score"], 4)})
        print(json.dumps(shown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
