"""Item transforms that run in the loader's worker processes, on PIL images.

fastai's usual recipe (`Resize` item transform + `aug_transforms` batch transforms) warps
whole batches with `grid_sample` in the main process; on a CPU that one process is the
bottleneck (about 0.3x the speed of a plain torchvision loader here). `InatAugment` does the
same augmentations per image inside the workers, with Pillow, in one pass:

* train: random resized crop (scale `min_scale`..1 of the area, aspect 3/4..4/3), a small
  rotation (`max_rotate` degrees, probability `p_rotate`; the corners are filled with real
  image content, not black or mirrored pixels), horizontal flip (p=0.5), and lighting
  (brightness and contrast, `max_lighting`, probability `p_lighting`);
* valid/test (or `augment=False`): deterministic resize of the shorter side + centre crop.
"""

from __future__ import annotations

import math
import random

import torch
from fastai.vision.all import DisplayedTransform, PILImage, RandTransform, TensorImage
from PIL import Image

from .images import open_rgb


class OpenImage:
    """fastai type transform: path -> upright RGB `PILImage`, JPEGs decoded in draft mode.

    Args:
        min_side: decode JPEGs no smaller than this on the shorter side (draft mode).
        redirect: optional {original path: presized copy} from the presize cache.
    """

    def __init__(self, min_side: int | None = None, redirect: dict | None = None):
        self.min_side, self.redirect = min_side, redirect or {}

    def __call__(self, path) -> PILImage:
        return PILImage(open_rgb(self.redirect.get(str(path), path), min_side=self.min_side))


def centre_square(w: int, h: int) -> tuple[float, float, float, float]:
    s = min(w, h)
    left, top = (w - s) / 2, (h - s) / 2
    return (left, top, left + s, top + s)


def _lighting(img: Image.Image, brightness: float, contrast: float) -> Image.Image:
    """Brightness then contrast (around the mean grey level) as one lookup-table pass."""
    hist = img.convert("L").histogram()
    n = sum(hist) or 1
    mean = sum(i * c for i, c in enumerate(hist)) / n * brightness
    lut = [min(255, max(0, round(contrast * brightness * v + (1 - contrast) * mean))) for v in range(256)]
    return img.point(lut * len(img.getbands()))


class InatAugment(RandTransform):
    """Random resized crop + small rotation + flip + lighting (train); resize + centre crop (eval)."""

    split_idx, order = None, 1

    def __init__(
        self,
        size: int,
        augment: bool = True,
        min_scale: float = 0.35,
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        max_rotate: float = 10.0,
        p_rotate: float = 0.75,
        max_lighting: float = 0.2,
        p_lighting: float = 0.75,
    ):
        super().__init__(p=1.0)
        self.size, self.augment = int(size), augment
        self.min_scale, self.ratio = min_scale, ratio
        self.max_rotate, self.p_rotate = max_rotate, p_rotate
        self.max_lighting, self.p_lighting = max_lighting, p_lighting

    def before_call(self, b, split_idx: int | None) -> None:
        self.do = True
        self.train = bool(self.augment and split_idx == 0)

    # -- train-time geometry -------------------------------------------------------------
    def _random_crop(self, w: int, h: int) -> tuple[float, float]:
        """Crop width and height as in torchvision/fastai RandomResizedCrop."""
        for _ in range(10):
            area = random.uniform(self.min_scale, 1.0) * w * h
            r = math.exp(random.uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
            cw, ch = math.sqrt(area * r), math.sqrt(area / r)
            if cw <= w and ch <= h:
                return cw, ch
        r = min(max(w / h, self.ratio[0]), self.ratio[1])
        return (w, w / r) if w / h < r else (h * r, h)

    def _train(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        s = self.size
        cw, ch = self._random_crop(w, h)
        angle = random.uniform(-self.max_rotate, self.max_rotate) if random.random() < self.p_rotate else 0.0
        flip = random.random() < 0.5
        if angle and min(w, h) >= 4:
            img = self._rotated_crop(img, cw, ch, angle, flip)
        else:
            left, top = random.uniform(0, w - cw), random.uniform(0, h - ch)
            img = img.resize((s, s), Image.BILINEAR, box=(left, top, left + cw, top + ch))
            if flip:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
        if self.max_lighting and random.random() < self.p_lighting:
            lo, hi = 1 - self.max_lighting, 1 + self.max_lighting
            contrast = math.exp(random.uniform(math.log(lo), -math.log(lo)))
            img = _lighting(img, random.uniform(lo, hi), contrast)
        return img

    def _rotated_crop(self, img: Image.Image, cw: float, ch: float, angle: float,
                      flip: bool) -> Image.Image:
        """Crop, rotate, flip and resize in one affine pass, never sampling outside the image."""
        w, h = img.size
        s = self.size
        t = math.radians(angle)
        cos, sin = math.cos(t), math.sin(t)
        # The rotated crop's bounding box must fit inside the image (with a 1 px margin).
        bw, bh = cw * abs(cos) + ch * abs(sin), cw * abs(sin) + ch * abs(cos)
        k = min(1.0, (w - 2) / bw, (h - 2) / bh)
        cw, ch, bw, bh = cw * k, ch * k, bw * k, bh * k
        cx = random.uniform(1 + bw / 2, w - 1 - bw / 2)
        cy = random.uniform(1 + bh / 2, h - 1 - bh / 2)
        r = int(min(cw, ch) / s)  # a big reduction: box-filter first, so bilinear does not alias
        if r >= 2:
            img = img.reduce(r)
            cx, cy, cw, ch = cx / r, cy / r, cw / r, ch / r
        sx, sy = (-cw if flip else cw) / s, ch / s
        a, b, d, e = cos * sx, -sin * sy, sin * sx, cos * sy
        coeffs = (a, b, cx - (a + b) * s / 2, d, e, cy - (d + e) * s / 2)
        return img.transform((s, s), Image.AFFINE, coeffs, resample=Image.BILINEAR)

    def encodes(self, x: PILImage) -> PILImage:
        img = self._train(x) if self.train else x.resize(
            (self.size, self.size), Image.BILINEAR, box=centre_square(*x.size))
        return PILImage(img)


class ToFloatNormalize(DisplayedTransform):
    """Batch transform: uint8 images -> normalised float32, in one allocation and two in-place ops.

    Replaces fastai's `IntToFloatTensor` + `Normalize` pair (three full-size temporaries) in
    the main process, which on a CPU competes with the loader workers for the same cores.
    `decodes` gives 0-1 floats back, so `show_batch` works as usual.
    """

    order = 10

    def __init__(self, mean=None, std=None):
        self.mean, self.std = mean, std
        self._stats: dict = {}

    def _on(self, device):
        if device not in self._stats:
            mean = torch.tensor(self.mean, device=device).view(1, -1, 1, 1) * 255.0
            scale = 1.0 / (torch.tensor(self.std, device=device).view(1, -1, 1, 1) * 255.0)
            self._stats[device] = (mean, scale)
        return self._stats[device]

    def encodes(self, x: TensorImage) -> TensorImage:
        x = x.float()
        if self.mean is None:
            return x.div_(255.0)
        mean, scale = self._on(x.device)
        return x.sub_(mean).mul_(scale)

    def decodes(self, x: TensorImage) -> TensorImage:
        if self.mean is None:
            return x
        mean, scale = self._on(x.device)
        return (x / scale / 255.0 + mean / 255.0).clamp_(0.0, 1.0)
