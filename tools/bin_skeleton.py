"""Split a `pytorch_model.bin` into what `model.safetensors` beside it does not already hold.

The tiny test model ships once, as `model.safetensors`; its `pytorch_model.bin` (torch.save's
zip, as the reference wrote it) is rebuilt byte for byte from the safetensors file plus this
frame: the zip headers, pickle and anything else, in `pytorch_model.bin.frame`, and the recipe,
`pytorch_model.bin.recipe`, one segment a line: `F LEN` (next LEN bytes of the frame) or
`S OFFSET LEN` (LEN bytes of model.safetensors from OFFSET). Tests rebuild it when needed.

usage: bin_skeleton.py MODEL_DIR
"""

import hashlib
import json
import struct
import sys
import zipfile
from pathlib import Path

d = Path(sys.argv[1])
binary = (d / "pytorch_model.bin").read_bytes()
st = (d / "model.safetensors").read_bytes()
(hlen,) = struct.unpack("<Q", st[:8])
header = json.loads(st[8 : 8 + hlen])
by_bytes = {}
for name, info in header.items():
    if name == "__metadata__":
        continue
    a, b = info["data_offsets"]
    start = 8 + hlen + a
    by_bytes.setdefault(st[start : 8 + hlen + b], start)

# Every stored zip member's payload, in file order.
payloads = []
with zipfile.ZipFile(d / "pytorch_model.bin") as z:
    for info in z.infolist():
        if info.compress_type != zipfile.ZIP_STORED:
            continue
        off = info.header_offset
        name_len, extra_len = struct.unpack("<HH", binary[off + 26 : off + 30])
        start = off + 30 + name_len + extra_len
        payloads.append((start, info.file_size))
payloads.sort()

frame, recipe, pos = bytearray(), [], 0
for start, size in payloads:
    src = by_bytes.get(binary[start : start + size]) if size >= 64 else None
    if src is None:
        continue
    if start > pos:
        frame += binary[pos:start]
        recipe.append(f"F {start - pos}")
    recipe.append(f"S {src} {size}")
    pos = start + size
if pos < len(binary):
    frame += binary[pos:]
    recipe.append(f"F {len(binary) - pos}")
digest = hashlib.sha256(binary).hexdigest()
(d / "pytorch_model.bin.frame").write_bytes(frame)
(d / "pytorch_model.bin.recipe").write_text(
    f"# pytorch_model.bin: {len(binary)} bytes, sha256 {digest}\n" + "\n".join(recipe) + "\n"
)
print(f"frame {len(frame)} bytes, {len(recipe)} segments, of {len(binary)}")
