"""Writes fixtures/bombs/: tiny PNG files that decode to huge or ruinously shaped images (the
findings of the hardening review). Raw zlib streams, so no imaging library is needed and the
files are byte-for-byte reproducible.

    python3 tools/make_bombs.py fixtures/bombs
"""
import struct
import sys
import zlib
from pathlib import Path


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, bit_depth: int, color_type: int, row: bytes) -> bytes:
    """Every row is filter byte 0 followed by `row` (all-zero pixels)."""
    z = zlib.compressobj(9)
    line = b"\x00" + row
    parts = []
    block = line * max(1, (1 << 20) // len(line))
    rows_per_block = len(block) // len(line)
    left = height
    while left > 0:
        n = min(left, rows_per_block)
        parts.append(z.compress(block[: n * len(line)]))
        left -= n
    parts.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    bombs = {
        # Resize would allocate output width x input height x 3 = 144 GB: aborted the process.
        "tall_1x100000000_1bit.png": (1, 100_000_000, 1, 0, b"\x00"),
        # 4.3 GB and 34 s of CPU in Pillow's pass order.
        "tall_1x3000000_grey.png": (1, 3_000_000, 8, 0, b"\x00"),
        # A 2.2 GB filter-weight table.
        "wide_100000000x1_1bit.png": (100_000_000, 1, 1, 0, b"\x00" * (100_000_000 // 8)),
        # Legal and large: 169 M pixels from 20 KB.
        "square_13000x13000_1bit.png": (13000, 13000, 1, 0, b"\x00" * (13000 // 8 + 1)),
        # RGBA at the pixel limit's edge: 4 bytes per pixel while decoding.
        "rgba_12000x12000.png": (12000, 12000, 8, 6, b"\x00" * (12000 * 4)),
    }
    for name, (w, h, depth, color, row) in bombs.items():
        data = png(w, h, depth, color, row)
        (out / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes, {w}x{h}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "fixtures/bombs"))
