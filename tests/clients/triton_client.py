#!/usr/bin/env python3
"""Drive ofa-entail's KServe v2 routes with NVIDIA's own client (`tritonclient[http]`).

Usage: triton_client.py HOST:PORT IMAGE [IMAGE ...]
Prints one JSON object: health, metadata, and per image the probabilities and label, computed
once with the binary tensor extension (the client's default) and once as plain JSON.
"""
import json
import sys

import numpy as np
import tritonclient.http as httpclient


def main(url, images):
    client = httpclient.InferenceServerClient(url=url)
    out = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready("ofa-entail"),
        "metadata": client.get_model_metadata("ofa-entail"),
        "results": {},
    }
    blobs = [open(p, "rb").read() for p in images]
    n = len(blobs)
    for binary in (True, False):
        image = httpclient.InferInput("image", [n], "BYTES")
        text = httpclient.InferInput("text", [n], "BYTES")
        if binary:
            image.set_data_from_numpy(np.array(blobs, dtype=np.object_), binary_data=True)
        else:
            import base64
            image.set_data_from_numpy(np.array([base64.b64encode(b) for b in blobs], dtype=np.object_), binary_data=False)
        text.set_data_from_numpy(np.array([b"a woman in a military uniform."] * n, dtype=np.object_), binary_data=binary)
        result = client.infer("ofa-entail", [image, text], request_id="req-1")
        out["results"]["binary" if binary else "json"] = {
            "probabilities": result.as_numpy("probabilities").tolist(),
            "labels": [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label").tolist()],
            "id": result.get_response().get("id"),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
