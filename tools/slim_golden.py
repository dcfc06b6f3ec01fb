#!/usr/bin/env python3
"""Copy the reference goldens the test suite needs into fixtures/, dropping the large tensors.

Usage: tools/slim_golden.py SHARED_GOLDEN_DIR fixtures/
Keeps per case: ResNet channels 0..7, encoder output, decoder hidden states and answer logits,
scores, and (JPEG/GIF inputs) the reference's decoded RGB. Pure standard library.
"""
import json
import os
import shutil
import struct
import sys

KEEP_PREFIXES = ("resnet_out_first8ch", "encoder_last_hidden_state", "scores_", "decoded_rgb_u8_hwc")
KEEP_SUFFIXES = ("_final_hidden", "_logits_allowed", "_input_ids")


def read_st(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    return header, data


def write_st(path, tensors):
    header, blobs, off = {}, [], 0
    for name, (dtype, shape, blob) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(blob)]}
        blobs.append(blob)
        off += len(blob)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main(src, dst):
    os.makedirs(os.path.join(dst, "golden", "tensors"), exist_ok=True)
    for name in ("cases.json", "buckets.json"):
        shutil.copy(os.path.join(src, name), os.path.join(dst, "golden", name))
    shutil.copytree(os.path.join(src, "images"), os.path.join(dst, "golden", "images"), dirs_exist_ok=True)
    shutil.copytree(os.path.join(src, "tiny_ofa_ve"), os.path.join(dst, "tiny_ofa_ve"), dirs_exist_ok=True)
    for fname in sorted(os.listdir(os.path.join(src, "tensors"))):
        header, data = read_st(os.path.join(src, "tensors", fname))
        keep = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if name.startswith(KEEP_PREFIXES) or name.endswith(KEEP_SUFFIXES):
                a, b = info["data_offsets"]
                keep[name] = (info["dtype"], info["shape"], data[a:b])
        write_st(os.path.join(dst, "golden", "tensors", fname), keep)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
