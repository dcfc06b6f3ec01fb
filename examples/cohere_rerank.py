#!/usr/bin/env python3
"""Rerank with the official `cohere` client, pointed at ofa-entail.

Frameworks and databases that call a reranker speak Cohere's rerank API; ofa-entail answers it
at /v2/rerank (ClientV2) and /v1/rerank. Documents that are http(s) URLs or data:image/ URIs are
images, the rest texts; exactly one side is images. Here: which product photos, by URL, support
a sentence.

    pip install cohere
    python3 examples/cohere_rerank.py --server http://localhost:8000 \\
        --query "a woman in a military uniform." \\
        https://images.example.com/1.jpg https://images.example.com/2.jpg

Prints one JSON line per document, best first: its index, URL and relevance score (the
probability that the image supports the sentence).
"""
import argparse
import json
import os
import sys

import cohere


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", default="http://localhost:8000")
    ap.add_argument("--query", required=True, help="the sentence (or an image URL, with texts as documents)")
    ap.add_argument("--top-n", type=int, help="how many results")
    ap.add_argument("documents", nargs="+", help="image URLs (or texts, with an image query)")
    args = ap.parse_args()

    # The key is sent as a bearer token: ofa-entail's API_KEYS when it has any, else ignored.
    co = cohere.ClientV2(api_key=os.environ.get("OFA_API_KEY", "none"), base_url=args.server)
    kwargs = {"top_n": args.top_n} if args.top_n else {}
    response = co.rerank(model="ofa-entail", query=args.query, documents=args.documents, **kwargs)
    for r in response.results:
        print(json.dumps({
            "index": r.index,
            "document": args.documents[r.index],
            "relevance_score": round(r.relevance_score, 6),
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
