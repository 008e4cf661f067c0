"""Augmentation recipes, used by cached views and by fine-tuning: named (classic, crop) or explicit
(`flip,rotate=30,shift=0.1,zoom=0.2,crop=0.5`), validated, reduced to one canonical text that names the views
they make. View i of an image is a pure function of (content hash, recipe, i): its random draws come from a
seed derived from the three, so a rerun, a resume or another machine makes the same pixels.

Built from torchvision's transforms v2. Views are made from the backbone's clean input (the image already
decoded and resized to the input size), as Keras' ImageDataGenerator does after flow_from_directory."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from extractor.decode import DecodeError, Limits, decode_job, preprocess
from extractor.errors import HeadstartError

IMPLEMENTATION = "headstart-augment/1"  # changes whenever the same recipe would make other pixels

# term -> (lowest, highest, unit); `flip` takes no value
TERMS: dict[str, tuple[float, float, str]] = {
    "flip": (0, 0, "horizontal flip, half of the views"),
    "rotate": (0, 180, "degrees, either way"),
    "shift": (0, 0.5, "fraction of the width and height, either way"),
    "shear": (0, 45, "degrees, either way"),
    "zoom": (0, 0.9, "scale within 1 - zoom .. 1 + zoom"),
    "crop": (0.05, 1.0, "random resized crop keeping at least this share of the area"),
    "color": (0, 1, "brightness, contrast and saturation jitter"),
}
NAMED = {
    # the ladder's recipe: rotation up to 50 degrees, shifts 0.2, shear 0.2 radians (as Keras 1 read
    # shear_range, about 11.5 degrees), zoom 0.3, horizontal flip, nearest (edge) fill
    "classic": "flip,rotate=50,shift=0.2,shear=11.5,zoom=0.3",
    # the usual linear-probe augmentation for self-supervised backbones
    "crop": "crop=0.35,flip",
}
TTA = "tta"  # the deterministic test-time views: the image, flipped, and crops of 87.5% (see tta_view)
MAX_VIEWS = 64
MAX_TTA = 8


@dataclass(frozen=True)
class Recipe:
    """A validated recipe: `text` is canonical (terms sorted, numbers normalised) and names its views."""

    text: str
    terms: tuple[tuple[str, float | None], ...]

    @property
    def name(self) -> str:
        return next((n for n, t in NAMED.items() if parse(t).text == self.text), self.text)

    @property
    def identity(self) -> str:
        """What the cache keys views by: the canonical text and the implementation version."""
        return f"{IMPLEMENTATION}:{self.text}"

    @cached_property
    def transform(self):
        return _build(dict(self.terms))


def _number(text: str) -> float:
    value = float(text)
    if not np.isfinite(value):
        raise ValueError(text)
    return value


def parse(text: str) -> Recipe:
    """`classic`, `crop`, or comma-separated terms; unknown or out-of-range terms are one-line errors."""
    raw = (text or "").strip()
    if raw == TTA:
        return Recipe(TTA, ())
    spelled = NAMED.get(raw, raw)
    terms: dict[str, float | None] = {}
    for part in filter(None, (p.strip() for p in spelled.split(","))):
        name, sep, value = part.partition("=")
        if name not in TERMS:
            spelled_terms = ", ".join(t if t == "flip" else f"{t}=N" for t in TERMS)
            raise HeadstartError(f"augment term {name!r} in {text!r}: expected a recipe name "
                                 f"({', '.join(NAMED)}) or terms among {spelled_terms}")
        if name in terms:
            raise HeadstartError(f"augment term {name!r} is given twice in {text!r}")
        low, high, unit = TERMS[name]
        if name == "flip":
            if sep:
                raise HeadstartError(f"augment term 'flip' takes no value; received {part!r}")
            terms[name] = None
            continue
        try:
            number = _number(value)
        except ValueError:
            number = None
        if number is None or not low <= number <= high or (number == 0 and name != "crop"):
            raise HeadstartError(f"augment term {part!r}: expected {name}=N with N from {low:g} to {high:g} "
                                 f"({unit}), not 0")
        terms[name] = number
    if not terms:
        raise HeadstartError(f"augment recipe {text!r} is empty: expected {', '.join(NAMED)} or terms like "
                             f"flip,rotate=30,shift=0.1,zoom=0.2,crop=0.5")
    ordered = tuple(sorted(terms.items()))
    canonical = ",".join(k if v is None else f"{k}={v:g}" for k, v in ordered)
    return Recipe(canonical, ordered)


def check_views(count: int, tta: bool = False) -> int:
    least, most = (1, MAX_TTA) if tta else (0, MAX_VIEWS)
    if not isinstance(count, int) or isinstance(count, bool) or not least <= count <= most:
        raise HeadstartError(f"{'--tta' if tta else '--views'} {count!r}: expected an integer from "
                             f"{1 if tta else 0} to {most}")
    return count


def _build(terms: dict[str, float | None]):
    from torchvision.transforms import v2

    steps = []
    if "crop" in terms:
        steps.append(_SizedCrop(terms["crop"]))
    if {"rotate", "shift", "shear", "zoom"} & terms.keys():
        steps.append(_EdgeAffine(terms.get("rotate") or 0.0, terms.get("shift"), terms.get("shear"),
                                 terms.get("zoom")))
    if "flip" in terms:
        steps.append(v2.RandomHorizontalFlip(0.5))
    if "color" in terms:
        c = terms["color"]
        steps.append(v2.ColorJitter(brightness=c, contrast=c, saturation=c))
    return v2.Compose(steps)


class _SizedCrop:
    """RandomResizedCrop back to the input's own size."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def __call__(self, x):
        from torchvision.transforms import v2

        return v2.RandomResizedCrop(tuple(x.shape[-2:]), scale=(self.scale, 1.0), antialias=True)(x)


class _EdgeAffine:
    """RandomAffine's draws (angle, translation, scale, shear) applied with nearest fill: points that fall
    outside the image take the nearest edge pixel (grid_sample's border mode), as Keras' fill_mode='nearest'.
    torchvision's affine fills with a constant only, so the sampling grid is built with its own helpers (the
    inverse matrix and the grid, as `v2.functional.affine` builds them; tests/extractor/test_views.py checks
    that both agree wherever no fill is involved)."""

    def __init__(self, rotate: float, shift: float | None, shear: float | None, zoom: float | None) -> None:
        from torchvision.transforms import v2

        self.draw = v2.RandomAffine(rotate, translate=(shift, shift) if shift else None,
                                    scale=(1 - zoom, 1 + zoom) if zoom else None, shear=shear)

    def __call__(self, x):
        import torch
        from torchvision.transforms.v2.functional._geometry import _affine_grid, _get_inverse_affine_matrix

        p = self.draw.make_params([x])
        h, w = x.shape[-2:]
        matrix = _get_inverse_affine_matrix([0.0, 0.0], p["angle"], p["translate"], p["scale"], p["shear"])
        grid = _affine_grid(torch.tensor(matrix, dtype=torch.float32).reshape(1, 2, 3), w, h, w, h)
        out = torch.nn.functional.grid_sample(x.unsqueeze(0).float(), grid, mode="bilinear",
                                              padding_mode="border", align_corners=False)
        return type(x)(out.squeeze(0).round_().clamp_(0, 255).to(x.dtype))


def seed_of(sha256: str, recipe: Recipe, index: int) -> int:
    digest = hashlib.sha256(f"{sha256}:{recipe.identity}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def view(image: np.ndarray, recipe: Recipe, sha256: str, index: int) -> np.ndarray:
    """View `index` of an HWC uint8 image under `recipe`: the same pixels wherever and whenever it is made."""
    import torch
    from torchvision import tv_tensors

    if recipe.text == TTA:
        return tta_view(image, index)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_of(sha256, recipe, index))
        pixels = np.require(image, requirements=["C", "W"])  # a decoded PIL image is read-only: copy it then
        out = recipe.transform(tv_tensors.Image(torch.from_numpy(pixels).permute(2, 0, 1)))
    return np.ascontiguousarray(out.permute(1, 2, 0).numpy())


def tta_view(image: np.ndarray, index: int) -> np.ndarray:
    """Test-time view `index`: 0 the image, 1 flipped, 2 the centre 87.5% (resized back), 3 that flipped,
    4-7 the four corner crops of 87.5%."""
    from PIL import Image

    if index == 0:
        return image
    if index == 1:
        return np.ascontiguousarray(image[:, ::-1])
    h, w = image.shape[:2]
    ch, cw = round(h * 0.875), round(w * 0.875)
    corners = {2: ((h - ch) // 2, (w - cw) // 2), 3: ((h - ch) // 2, (w - cw) // 2), 4: (0, 0), 5: (0, w - cw),
               6: (h - ch, 0), 7: (h - ch, w - cw)}
    top, left = corners[index]
    crop = Image.fromarray(image[top:top + ch, left:left + cw]).resize((w, h), Image.BILINEAR)
    out = np.asarray(crop)
    return np.ascontiguousarray(out[:, ::-1]) if index == 3 else out


def make_views(sha: str, path: Path, indices: list[int], size: int, limits: Limits,
               recipe: Recipe) -> tuple[np.ndarray | None, DecodeError | None]:
    """One file's views `indices` as one NHWC array, made from its pixels decoded once; or why it failed. The bytes
    are hashed again (no size+mtime shortcut: views are often made long after the hashing). Used by the local
    workers and by the Ray engine's decode tasks."""
    clean, error = decode_job((sha, path, None), limits, lambda data: preprocess(data, size, limits))
    if error is not None:
        return None, error
    try:
        return np.stack([view(clean, recipe, sha, j) for j in indices]), None
    except Exception as exc:  # one bad file is a recorded failure, never a crashed job
        return None, DecodeError(f"unexpected augmentation error: {type(exc).__name__}: {exc}")
