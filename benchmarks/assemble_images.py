"""Image sets that tlkit's defaults were not chosen on, written as class folders from PyPI packages.

Nothing is downloaded at run time: each set comes from data that a PyPI package ships inside
its wheel, so the set is the same on every machine with that package version.

- ``lfw``: scikit-image's ``skimage.data.lfw_subset()``: 200 grayscale 25x25 crops from
  Labeled Faces in the Wild, the first 100 faces and the other 100 non-faces (background
  crops of the same photos). Two classes, ``face`` and ``non_face``; 100 images each.
- ``digits``: scikit-learn's ``load_digits()``: 1,797 handwritten digits scanned at 8x8 with
  16 grey levels (UCI Optical Recognition of Handwritten Digits). Ten classes; the first
  ``--per-class`` images of each class (default 60), so the set stays small, like the data
  the defaults are meant for. Far from ImageNet's photos: a test of whether fine-tuning
  helps where frozen features fit badly.

- ``downscale``: a copy of an image folder (``--from``, e.g. ``oxford_flowers12``, any layout
  of class folders, train/test kept) with every image shrunk to ``--size`` pixels on its
  longer side (Pillow's LANCZOS) and written as PNG. The loader scales it back up to 224, so
  the backbone sees a blurred photo: frozen ImageNet features fit it less well than the
  original, a set where fine-tuning should matter.

Images are written at their native size as 8-bit PNG; tlkit's loader resizes them to the
backbone's input (224 for EfficientNet-Lite0) like any other small image. A SOURCE.txt in
``--out`` says where the set came from and how it was made.

    python benchmarks/assemble_images.py lfw --out /tmp/tlkit-sets/lfw
    python benchmarks/assemble_images.py digits --out /tmp/tlkit-sets/digits --per-class 60
    python benchmarks/assemble_images.py downscale --size 64 --out /tmp/tlkit-sets/flowers12-64 \
        --from /work/shared/data/images/oxford_flowers12
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import numpy as np
from PIL import Image


def lfw_images(per_class: int | None = None) -> tuple[np.ndarray, list[str], str]:
    """scikit-image's LFW subset as uint8 images, their class names, and a provenance line.

    Example:
        >>> images, labels, _ = lfw_images()
        >>> images.shape, labels[0], labels[-1]
        ((200, 25, 25), 'face', 'non_face')
    """
    from skimage.data import lfw_subset

    pixels = lfw_subset()  # float in [0, 1]; faces first (skimage's documentation)
    images = np.round(pixels * 255).astype("uint8")
    labels = ["face"] * 100 + ["non_face"] * (len(images) - 100)
    note = (f"scikit-image {version('scikit-image')} skimage.data.lfw_subset(): 100 face and "
            "100 non-face 25x25 grayscale crops from Labeled Faces in the Wild")
    return _first_per_class(images, labels, per_class) + (note,)


def digits_images(per_class: int | None = 60) -> tuple[np.ndarray, list[str], str]:
    """scikit-learn's 8x8 digits as uint8 images (first ``per_class`` of each), names, provenance.

    Example:
        >>> images, labels, _ = digits_images(per_class=2)
        >>> images.shape, sorted(set(labels))[:3]
        ((20, 8, 8), ['digit_0', 'digit_1', 'digit_2'])
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype("uint8")  # 16 grey levels -> 0..255
    labels = [f"digit_{t}" for t in digits.target]
    note = (f"scikit-learn {version('scikit-learn')} sklearn.datasets.load_digits(): 8x8 "
            "handwritten digits with 16 grey levels (UCI Optical Recognition of Handwritten "
            f"Digits), the first {per_class} of each class in the file's order")
    return _first_per_class(images, labels, per_class) + (note,)


def _first_per_class(images: np.ndarray, labels: list[str], per_class: int | None
                     ) -> tuple[np.ndarray, list[str]]:
    if per_class is None:
        return images, labels
    counts: dict[str, int] = {}
    keep = []
    for index, label in enumerate(labels):
        counts[label] = counts.get(label, 0) + 1
        if counts[label] <= per_class:
            keep.append(index)
    return images[keep], [labels[i] for i in keep]


SOURCES: dict[str, Callable[..., tuple[np.ndarray, list[str], str]]] = {
    "lfw": lfw_images,
    "digits": digits_images,
}


def write_class_folders(images: np.ndarray, labels: list[str], out: Path, note: str) -> int:
    """One PNG per image under ``out/<label>/``, and SOURCE.txt; returns the count written."""
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty; pass a new --out folder")
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = out / label
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{label}_{index:04d}.png")
    counts = {label: labels.count(label) for label in sorted(set(labels))}
    (out / "SOURCE.txt").write_text(
        f"{note}.\nWritten by benchmarks/assemble_images.py as 8-bit PNG at native size.\n"
        f"Images per class: {counts}\n")
    return len(images)


def downscaled_copy(source: Path, out: Path, size: int) -> int:
    """Every image under ``source`` shrunk to ``size`` px on its longer side, as PNG under
    ``out`` at the same relative path; returns the count written."""
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty; pass a new --out folder")
    paths = sorted(p for p in source.rglob("*")
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
    for path in paths:
        target = (out / path.relative_to(source)).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((size, size), Image.Resampling.LANCZOS)
            image.save(target)
    (out / "SOURCE.txt").write_text(
        f"{len(paths)} images of {source}, each shrunk to {size} px on its longer side (Pillow "
        f"{version('pillow')}, LANCZOS) by benchmarks/assemble_images.py downscale.\n")
    return len(paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", choices=[*sorted(SOURCES), "downscale"])
    parser.add_argument("--from", dest="origin", help="downscale: the image folder to copy")
    parser.add_argument("--size", type=int, default=64, help="downscale: longer side in px")
    parser.add_argument("--out", required=True, help="a new folder (keep it outside the repo)")
    parser.add_argument("--per-class", type=int, default=None,
                        help="keep the first N images of each class (digits default: 60)")
    args = parser.parse_args()
    if args.source == "downscale":
        n = downscaled_copy(Path(args.origin), Path(args.out), args.size)
        print(f"wrote {n} images shrunk to {args.size} px to {args.out}")
        return
    make = SOURCES[args.source]
    images, labels, note = make(args.per_class) if args.per_class else make()
    n = write_class_folders(images, labels, Path(args.out), note)
    print(f"wrote {n} images in {len(set(labels))} classes to {args.out}\n{note}")


if __name__ == "__main__":
    main()
