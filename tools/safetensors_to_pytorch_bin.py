"""Write a PyTorch `pytorch_model.bin` (zip + pickle, as torch.save writes it) from a
`model.safetensors`, without torch: for measuring load time from the format the real ModelScope
model ships, with the random OFA-large weights `ofa-entail random-model` writes.

usage: safetensors_to_pytorch_bin.py MODEL_DIR
"""

import collections
import json
import mmap
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path

STORAGE = {"F32": "FloatStorage", "F16": "HalfStorage", "BF16": "BFloat16Storage", "I64": "LongStorage"}
ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8}

# Stand-ins for the torch globals the pickle names, so it says what torch.save would say.
torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")


def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
    raise NotImplementedError


_rebuild_tensor_v2.__module__ = "torch._utils"
torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2
torch._utils = torch_utils
for name in STORAGE.values():
    cls = type(name, (), {"__module__": "torch"})
    setattr(torch, name, cls)
sys.modules["torch"] = torch
sys.modules["torch._utils"] = torch_utils


class StorageRef:
    def __init__(self, dtype, key, numel):
        self.cls = getattr(torch, STORAGE[dtype])
        self.key = key
        self.numel = numel


class TensorRef:
    def __init__(self, storage, shape):
        self.storage = storage
        self.shape = tuple(shape)

    def __reduce__(self):
        stride, acc = [], 1
        for d in reversed(self.shape):
            stride.insert(0, acc)
            acc *= d
        args = (self.storage, 0, self.shape, tuple(stride), False, collections.OrderedDict())
        return (_rebuild_tensor_v2, args)


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, StorageRef):
            return ("storage", obj.cls, obj.key, "cpu", obj.numel)
        return None


def main() -> None:
    model_dir = Path(sys.argv[1])
    src = model_dir / "model.safetensors"
    with open(src, "rb") as f:
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8 : 8 + n])
    header.pop("__metadata__", None)
    base = 8 + n
    state = collections.OrderedDict()
    chunks = []
    for i, (name, info) in enumerate(header.items()):
        start, end = info["data_offsets"]
        dtype = info["dtype"]
        key = str(i)
        state[name] = TensorRef(StorageRef(dtype, key, (end - start) // ITEMSIZE[dtype]), info["shape"])
        chunks.append((key, base + start, base + end))
    dst = model_dir / "pytorch_model.bin"
    with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
        with z.open("archive/data.pkl", "w") as out:
            Pickler(out, protocol=2).dump(state)
        z.writestr("archive/byteorder", "little")
        for key, a, b in chunks:
            with z.open(f"archive/data/{key}", "w", force_zip64=True) as out:
                for off in range(a, b, 1 << 24):
                    out.write(buf[off : min(b, off + (1 << 24))])
        z.writestr("archive/version", "3\n")
    print(f"wrote {dst} ({len(state)} tensors)")


if __name__ == "__main__":
    main()
