"""Make ``datasets/shapes``: a small, seeded image set of circles, squares and triangles.

It ships with tlkit so the quick start and examples run offline. Shapes vary in colour,
size, position and rotation, over noisy backgrounds; a few images are grayscale. Run from
the repository root to regenerate it byte for byte:

    python datasets/make_shapes.py --out datasets/shapes
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("circle", "square", "triangle")


def draw_shape(kind: str, rng: random.Random, size: int) -> Image.Image:
    """One image of ``kind`` with random colours, placement, rotation and background noise."""
    background = tuple(rng.randrange(0, 256) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    pixels = image.load()
    for _ in range(size * size // 6):  # speckle noise so the background is not flat
        x, y = rng.randrange(size), rng.randrange(size)
        pixels[x, y] = tuple(min(255, max(0, c + rng.randint(-60, 60))) for c in background)
    colour = tuple((c + rng.randint(90, 166)) % 256 for c in background)
    radius = rng.uniform(0.18, 0.38) * size
    cx, cy = (rng.uniform(radius, size - radius) for _ in range(2))
    angle = rng.uniform(0, 2 * math.pi)
    draw = ImageDraw.Draw(image)
    if kind == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)
    else:
        corners = 4 if kind == "square" else 3
        points = [(cx + radius * math.cos(angle + 2 * math.pi * k / corners),
                   cy + radius * math.sin(angle + 2 * math.pi * k / corners))
                  for k in range(corners)]
        draw.polygon(points, fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.0)))
    return image.convert("L").convert("RGB") if rng.random() < 0.1 else image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("datasets/shapes"))
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=2014)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    for kind in CLASSES:
        folder = args.out / kind
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(args.per_class):
            draw_shape(kind, rng, args.size).save(folder / f"{kind}_{index:03d}.jpg", quality=85)
    print(f"wrote {args.per_class * len(CLASSES)} images to {args.out}")


if __name__ == "__main__":
    main()
