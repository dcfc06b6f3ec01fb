#!/usr/bin/env python3
"""Regenerate fixtures/pillow: small images in formats and modes the reference goldens do not
cover, and the sha256 of what Pillow makes of each (exif_transpose -> convert('RGB') ->
resize((480, 480), BICUBIC)), the reference pipeline's image path.

Usage: tools/pillow_fixtures.py   (needs Pillow with libjpeg-turbo and libwebp, e.g. from PyPI)
"""
import hashlib
import json
import os

import PIL
from PIL import Image, ImageOps, features

here = os.path.join(os.path.dirname(__file__), "..", "fixtures")
out_dir = os.path.join(here, "pillow")
os.makedirs(out_dir, exist_ok=True)
src = Image.open(os.path.join(here, "golden/images/astronaut.png")).convert("RGB").resize((160, 120), Image.BICUBIC)
grey = Image.open(os.path.join(here, "golden/images/camera.png")).resize((160, 120), Image.BICUBIC)
exif = Image.Exif()
exif[0x0112] = 8  # rotate 90 degrees clockwise to view

cases = {
    "lossy.webp": (src, dict(quality=80)),
    "lossy_rgba.webp": (src.convert("RGBA"), dict(quality=70)),
    "exif8.webp": (src, dict(exif=exif.tobytes(), lossless=True)),
    "cmyk.jpg": (src.convert("CMYK"), dict(quality=90)),
    "progressive422.jpg": (src, dict(quality=85, progressive=True, subsampling=1)),
    "q444.jpg": (src, dict(quality=95, subsampling=0)),
    "gray.jpg": (grey, dict(quality=90)),
    "gray16.png": (Image.frombytes("I;16", grey.size, b"".join((v * 257).to_bytes(2, "little") for v in grey.tobytes())), {}),
    "bilevel.png": (grey.convert("1"), {}),
    "palette_trns.png": (src.convert("P", palette=Image.ADAPTIVE, colors=64), dict(transparency=3)),
    "exif8.png": (src, dict(exif=exif.tobytes())),
    "rgb.tif": (src, {}),
    "lzw.tif": (src, dict(compression="tiff_lzw")),
    "rgb24.bmp": (src, {}),
    "pal8.bmp": (src.convert("P", palette=Image.ADAPTIVE, colors=200), {}),
}
expected = {"pillow": PIL.__version__, "libjpeg_turbo": features.check_feature("libjpeg_turbo"), "cases": {}}
for name, (img, kw) in cases.items():
    path = os.path.join(out_dir, name)
    img.save(path, **kw)
    opened = Image.open(path)
    rgb = ImageOps.exif_transpose(opened).convert("RGB")
    expected["cases"][name] = {
        "mode": opened.mode,
        "size": list(rgb.size),
        "resized_sha256": hashlib.sha256(rgb.resize((480, 480), Image.BICUBIC).tobytes()).hexdigest(),
    }
with open(os.path.join(out_dir, "expected.json"), "w") as f:
    json.dump(expected, f, indent=1)
