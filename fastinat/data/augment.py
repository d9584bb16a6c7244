"""Item transforms that run in the loader's worker processes: pixels in, uint8 tensor out.

fastai's usual recipe (`Resize` item transform + `aug_transforms` batch transforms) warps
whole batches with `grid_sample` in the main process; on a CPU that one process is the
bottleneck (about 0.3x the speed of a plain torchvision loader here). `InatAugment` does the
same augmentations per image inside the workers, on the decoded image's pixels with OpenCV
(about 4x faster than the same steps in Pillow here), in one pass:

* train: random resized crop (scale `min_scale`..1 of the area, aspect 3/4..4/3), a small
  rotation (`max_rotate` degrees, probability `p_rotate`; the corners are filled with real
  image content, not black or mirrored pixels), horizontal flip (p=0.5), and lighting
  (brightness and contrast, `max_lighting`, probability `p_lighting`);
* train with `policy="strong"` (`--augment-policy strong`): the same random resized crop and
  flip, then two RandAugment-style ops of random magnitude and random erasing
  (`fastinat.data.randaugment`);
* valid/test (or `augment=False`): the centre square, resized as the train crops are
  (`resize_crop`), exactly as `fastinat.inference.EvalTransform` does at prediction time.
"""

from __future__ import annotations

import math
import random
from functools import lru_cache

import cv2
import numpy as np
import torch
from fastai.vision.all import DisplayedTransform, PILImage, RandTransform, TensorImage

from ..config import TTA_ZOOM
from .images import open_pixels
from .presize import read_copy


class OpenImage:
    """fastai type transform: path -> upright RGB pixels (uint8 height x width x 3 array).

    JPEGs are decoded at a DCT-domain reduction, never below `min_side` on the shorter side
    (`images.open_pixels`). A file with a presized copy (`redirect`) opens as that copy's
    pixels instead (nothing to decode).

    Args:
        min_side: decode JPEGs no smaller than this on the shorter side (draft mode).
        redirect: optional {original path: presized copy} from the presize cache.
    """

    def __init__(self, min_side: int | None = None, redirect: dict | None = None):
        self.min_side, self.redirect = min_side, redirect or {}

    def __call__(self, path) -> np.ndarray:
        copy = self.redirect.get(str(path))
        if copy is not None:
            return read_copy(copy)
        return open_pixels(path, min_side=self.min_side)


def resize_crop(a: np.ndarray, left: int, top: int, cw: int, ch: int, size: int) -> np.ndarray:
    """The crop `a[top:top + ch, left:left + cw]` resized to size x size (a new, writable array).

    A crop at least twice the size is first box-averaged by that integer factor (OpenCV
    `INTER_AREA`, no aliasing); the rest, under 2x, is bilinear (`INTER_LINEAR`, pixel
    centres at +0.5 as in PIL). Train crops and the evaluation resize both go through here,
    so a model is evaluated on pixels made the way its training pixels were.
    """
    a = a[top:top + ch, left:left + cw]
    r = min(cw, ch) // size
    if r >= 2:
        a = cv2.resize(a, (max(1, cw // r), max(1, ch // r)), interpolation=cv2.INTER_AREA)
    return cv2.resize(a, (size, size), interpolation=cv2.INTER_LINEAR)


def eval_pixels(a: np.ndarray, size: int) -> np.ndarray:
    """The evaluation resize: the centre square (whole-pixel offsets) -> size x size (`resize_crop`)."""
    h, w = a.shape[:2]
    s = min(h, w)
    return resize_crop(a, (w - s) // 2, (h - s) // 2, s, s, size)


def tta_pixels(a: np.ndarray, size: int) -> np.ndarray:
    """The test-time augmentation views of decoded pixels: a (len(TTA_VIEWS), size, size, 3) uint8
    array, in the order of `fastinat.config.TTA_VIEWS`.

    View 0 is exactly `eval_pixels(a, size)` (the plain evaluation view), view 1 its mirror
    image, and views 2-5 the four corner crops of the centre square resized (`eval_pixels`)
    to round(size * TTA_ZOOM).
    """
    plain = eval_pixels(a, size)
    big = eval_pixels(a, max(size, round(size * TTA_ZOOM)))
    d = big.shape[0] - size
    corners = [big[:size, :size], big[:size, d:], big[d:, :size], big[d:, d:]]
    return np.stack([plain, cv2.flip(plain, 1), *corners])


def _lighting(img: np.ndarray, brightness: float, contrast: float) -> np.ndarray:
    """Brightness then contrast (around the mean grey level) as one lookup-table pass."""
    r, g, b = cv2.mean(img)[:3]
    mean = (0.299 * r + 0.587 * g + 0.114 * b) * brightness  # PIL's "L" weights
    lut = np.clip(np.rint(contrast * brightness * np.arange(256) + (1 - contrast) * mean), 0, 255)
    return cv2.LUT(img, lut.astype(np.uint8))


class InatAugment(RandTransform):
    """Random resized crop + small rotation + flip + lighting (train, `policy="standard"`), or
    random resized crop + flip + `randaugment.strong_ops` (`policy="strong"`); centre crop (eval)."""

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
        policy: str = "standard",
    ):
        from ..config import AUGMENT_POLICIES

        super().__init__(p=1.0)
        if policy not in AUGMENT_POLICIES:
            raise ValueError(f"policy must be one of {', '.join(AUGMENT_POLICIES)}, got {policy!r}")
        self.size, self.augment, self.policy = int(size), augment, policy
        self.train_size: int | None = None  # progressive resizing: the training crops' size now
        self.train = self.training_set = False  # set per item by before_call
        self.min_scale, self.ratio = min_scale, ratio
        self.max_rotate, self.p_rotate = max_rotate, p_rotate
        self.max_lighting, self.p_lighting = max_lighting, p_lighting

    @property
    def crop_size(self) -> int:
        """The training crops' size: `train_size` while progressive resizing sets one, else `size`."""
        return self.train_size or self.size

    def worker_key(self) -> tuple:
        """What loader workers must see anew when it changes (they hold a copy of this transform)."""
        return (self.size, self.train_size, self.augment, self.policy)

    def before_call(self, b, split_idx: int | None) -> None:
        self.do = True
        self.train, self.training_set = bool(self.augment and split_idx == 0), split_idx == 0

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

    def _train(self, a: np.ndarray) -> np.ndarray:
        h, w = a.shape[:2]
        cw, ch = self._random_crop(w, h)
        if self.policy == "strong":
            from .randaugment import strong_ops

            return strong_ops(self._crop(a, cw, ch, random.random() < 0.5))
        angle = random.uniform(-self.max_rotate, self.max_rotate) if random.random() < self.p_rotate else 0.0
        flip = random.random() < 0.5
        if angle and min(w, h) >= 4:
            a = self._rotated_crop(a, cw, ch, angle, flip)
        else:
            a = self._crop(a, cw, ch, flip)
        if self.max_lighting and random.random() < self.p_lighting:
            lo, hi = 1 - self.max_lighting, 1 + self.max_lighting
            contrast = math.exp(random.uniform(math.log(lo), -math.log(lo)))
            a = _lighting(a, random.uniform(lo, hi), contrast)
        return a

    def _crop(self, a: np.ndarray, cw: float, ch: float, flip: bool) -> np.ndarray:
        """Crop at a random place and resize; a big reduction is box-averaged first (no aliasing)."""
        h, w = a.shape[:2]
        cw, ch = max(1, round(cw)), max(1, round(ch))
        left, top = random.randint(0, w - cw), random.randint(0, h - ch)
        out = resize_crop(a, left, top, cw, ch, self.crop_size)
        return cv2.flip(out, 1) if flip else out

    def _rotated_crop(self, a: np.ndarray, cw: float, ch: float, angle: float,
                      flip: bool) -> np.ndarray:
        """Crop, rotate, flip and resize in one affine pass, never sampling outside the image.

        Coordinates are continuous (pixel i covers [i, i+1)), as in PIL. Only the rotated
        crop's bounding box is read; a big reduction is box-averaged first so bilinear
        sampling does not alias.
        """
        h, w = a.shape[:2]
        s = self.crop_size
        t = math.radians(angle)
        cos, sin = math.cos(t), math.sin(t)
        # The rotated crop's bounding box must fit inside the image (with a 1 px margin).
        bw, bh = cw * abs(cos) + ch * abs(sin), cw * abs(sin) + ch * abs(cos)
        k = min(1.0, (w - 2) / bw, (h - 2) / bh)
        cw, ch, bw, bh = cw * k, ch * k, bw * k, bh * k
        cx = random.uniform(1 + bw / 2, w - 1 - bw / 2)
        cy = random.uniform(1 + bh / 2, h - 1 - bh / 2)
        x0, y0 = max(0, math.floor(cx - bw / 2) - 1), max(0, math.floor(cy - bh / 2) - 1)
        x1, y1 = min(w, math.ceil(cx + bw / 2) + 1), min(h, math.ceil(cy + bh / 2) + 1)
        a, cx, cy = a[y0:y1, x0:x1], cx - x0, cy - y0
        r = int(min(cw, ch) / s)
        if r >= 2:
            rh, rw = a.shape[:2]
            nw, nh = max(1, rw // r), max(1, rh // r)
            fx, fy = nw / rw, nh / rh
            a = cv2.resize(a, (nw, nh), interpolation=cv2.INTER_AREA)
            cx, cy, cw, ch = cx * fx, cy * fy, cw * fx, ch * fy
        sx, sy = (-cw if flip else cw) / s, ch / s
        m11, m12, m21, m22 = cos * sx, -sin * sy, sin * sx, cos * sy
        # output pixel centre (j + .5, i + .5) -> input continuous point -> input pixel index
        m13 = cx - (m11 + m12) * s / 2 + (m11 + m12) / 2 - 0.5
        m23 = cy - (m21 + m22) * s / 2 + (m21 + m22) / 2 - 0.5
        matrix = np.array([[m11, m12, m13], [m21, m22, m23]])
        return cv2.warpAffine(a, matrix, (s, s), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)

    def pixels(self, a: np.ndarray, train: bool, training_set: bool = False) -> TensorImage:
        """uint8 height x width x 3 pixels -> uint8 (3, size, size) `TensorImage`.

        The tensor is a view of height x width x channel memory: a batch of them is one
        plain copy away from the channels_last layout the models run in (see
        `workers.InatDL.create_batch`). Evaluation takes `eval_pixels`, exactly as
        `fastinat.inference.EvalTransform` does at prediction time; an item of the training set
        (`training_set`) without augmentation takes it at the training size (`crop_size`, which
        progressive resizing changes).
        """
        a = self._train(a) if train else eval_pixels(a, self.crop_size if training_set else self.size)
        return TensorImage(torch.from_numpy(a).permute(2, 0, 1))

    def encodes(self, x: np.ndarray) -> TensorImage:
        return self.pixels(x, self.train, self.training_set)

    def encodes(self, x: PILImage) -> TensorImage:  # noqa: F811  (fastai dispatches on the type)
        return self.pixels(np.asarray(x), self.train, self.training_set)


def channel_affine(mean, std, device=None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Per-channel (scale, bias) with x * scale + bias == (x / 255 - mean) / std, or None (x / 255)."""
    if mean is None:
        return None
    std = torch.as_tensor(std, dtype=torch.float32, device=device)
    return 1.0 / (255.0 * std), -torch.as_tensor(mean, dtype=torch.float32, device=device) / std


@lru_cache(maxsize=16)
def _rows(scale: tuple[float, ...], bias: tuple[float, ...], pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """The per-channel constants repeated along `pixels` pixels (float32, as numpy arrays)."""
    return np.tile(np.float32(scale), pixels), np.tile(np.float32(bias), pixels)


def normalize_hwc(x: torch.Tensor, affine: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """uint8 (N, H, W, C) pixels -> float32 (N, C, H, W) model input, a channels_last view.

    float32 `x * scale + bias` (`channel_affine`): one rounded multiply, then one rounded add,
    per value; `affine=None` gives x / 255. Each image is one row of H x W x C values with the
    constants repeated along it. On a CPU numpy does the arithmetic (one thread, the
    caller's torch thread settings untouched, same bits as torch's `mul_`/`add_`); on
    other devices torch does. The loaders (`ToFloatNormalize`) and `fastinat predict`
    (`inference.EvalTransform`) both normalise here: a model gets the same input bits from
    either.
    """
    n, h, w, c = x.shape
    rows = x.reshape(n, h * w * c)
    if x.device.type != "cpu":
        out = rows.float()
        if affine is None:
            out.div_(255.0)
        else:
            scale, bias = affine
            out.mul_(scale.repeat(h * w)).add_(bias.repeat(h * w))
    else:
        out = torch.empty(rows.shape, dtype=torch.float32)
        a, o = rows.numpy(), out.numpy()
        if affine is None:
            np.divide(a, np.float32(255.0), out=o)
        else:
            scale, bias = _rows(*(tuple(t.tolist()) for t in affine), h * w)
            np.multiply(a, scale, out=o)
            o += bias
    return out.view(n, h, w, c).permute(0, 3, 1, 2)


def _norm_state(mean, std) -> tuple:
    """(stats, {device: affine}): statistics and the constants made from them, kept together."""
    if (mean is None) != (std is None):
        raise ValueError("mean and std go together: give both or neither")
    stats = None if mean is None else (tuple(float(v) for v in mean), tuple(float(v) for v in std))
    return stats, {}


class ToFloatNormalize(DisplayedTransform):
    """Batch transform: uint8 images -> normalised float32 (`normalize_hwc`'s arithmetic).

    Replaces fastai's `IntToFloatTensor` + `Normalize` pair (three full-size temporaries) in
    the main process, which on a CPU competes with the loader workers for the same cores:
    there numpy does it on one thread (measured here: a second torch thread mostly spins,
    0.3 ms of CPU per 224 px image instead of 0.1 ms of work), without touching torch's
    thread count. Channels-last batches keep their layout; other layouts are made
    channels_last by one copy first, so the numbers are the same. `decodes` gives 0-1
    floats back, so `show_batch` works as usual.

    `stats` (mean, std; None: x / 255) are read-only and held together with the per-device
    constants made from them, so no constant outlives its statistics. They are `fixed` unless
    made with `fixed=False` (the loaders' `normalize="auto"`); open statistics can be replaced
    once, by `fix` (fastai's rule: a learner adds its normalisation only where the data has none).
    """

    order = 10

    def __init__(self, mean=None, std=None, *, fixed: bool = True):
        self._norm = _norm_state(mean, std)
        self._fixed = fixed

    @property
    def stats(self) -> tuple[list[float], list[float]] | None:
        """The (mean, std) this transform applies (0-1 scale), or None (x / 255)."""
        stats = self._norm[0]
        return None if stats is None else (list(stats[0]), list(stats[1]))

    @property
    def mean(self) -> list[float] | None:
        return None if self._norm[0] is None else list(self._norm[0][0])

    @property
    def std(self) -> list[float] | None:
        return None if self._norm[0] is None else list(self._norm[0][1])

    @property
    def fixed(self) -> bool:
        """Whether the statistics are final (chosen by the caller, or by `fix`)."""
        return self._fixed

    def fix(self, stats: tuple | None = None) -> tuple[list[float], list[float]] | None:
        """Make the statistics final and return them: `stats` (mean, std) replace them if they
        were still open (None: keep the current ones); fixed statistics never change."""
        if not self._fixed:
            if stats is not None:
                self._norm = _norm_state(*stats)  # one assignment: statistics and constants together
            self._fixed = True
        return self.stats

    def _on(self, device):
        stats, affine = self._norm
        if device not in affine:
            affine[device] = None if stats is None else channel_affine(*stats, device)
        return affine[device]

    def encodes(self, x: TensorImage) -> TensorImage:
        hwc = x.as_subclass(torch.Tensor).permute(0, 2, 3, 1)
        return TensorImage(normalize_hwc(hwc.contiguous(), self._on(x.device)))

    def decodes(self, x: TensorImage) -> TensorImage:
        affine = self._on(x.device)
        if affine is None:
            return x
        scale, bias = (t.view(1, -1, 1, 1) for t in affine)
        return ((x - bias) / scale / 255.0).clamp_(0.0, 1.0)
