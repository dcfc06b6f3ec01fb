#!/usr/bin/env python3
"""Rerank vector-search candidates with ofa-entail.

A vector database (here Qdrant's search response; Milvus, pgvector and others return the same
ids, scores and payloads) gives the nearest product titles to a photo by embedding similarity.
`POST /rerank` then asks the entailment model which titles the photo really supports, and the
script keeps those at or above a threshold, best first.

    python3 examples/rerank_search_results.py --server http://localhost:8000 \\
        --image photo.jpg --results search.json --threshold 0.5

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
    ap.add_argument("--image", required=True, help="the query image")
    ap.add_argument("--results", required=True, help="the vector search's JSON response")
    ap.add_argument("--threshold", type=float, default=0.5, help="lowest yes-probability kept")
    ap.add_argument("--api-key", help="when the service requires one")
    args = ap.parse_args()

    hits = json.load(open(args.results))["result"]
    with open(args.image, "rb") as f:
        image = base64.b64encode(f.read()).decode()
    body = {
        "image": image,
        "texts": [h["payload"]["title"] for h in hits],
        "min_score": args.threshold,
    }
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
        print(json.dumps({
            "id": hit["id"],
            "title": hit["payload"]["title"],
            "vector_score": hit["score"],
            "entailment": round(c["score"], 4),
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
