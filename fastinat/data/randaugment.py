"""The strong augmentation policy (`--augment-policy strong`), on uint8 pixels with OpenCV and numpy.

    a = strong_ops(crop)    # crop: the standard random resized crop + flip, size x size x 3 uint8

After the standard random resized crop and horizontal flip (`augment.InatAugment`; no small
rotation and no lighting there: the ops below cover both), each training image gets

1. `NUM_OPS` = 2 operations drawn uniformly, with replacement, from `OPS`, each with its own
   random magnitude m ~ U(0, 1) (TrivialAugment's random magnitude; RandAugment's random
   choice of several ops) and, for the signed ones, a random direction:

   ============  ==============================================================
   identity      nothing
   rotate        +-30 m degrees around the centre
   shear_x/y     +-0.3 m
   translate_x/y +-0.3 m of the side
   brightness    factor 1 +- 0.9 m (blend with black, as PIL's ImageEnhance)
   contrast      factor 1 +- 0.9 m (blend with the mean grey level)
   color         factor 1 +- 0.9 m (saturation: blend with the grey image)
   sharpness     factor 1 +- 0.9 m (blend with PIL's 3x3 SMOOTH filter)
   posterize     keep 8 - round(4 m) bits per channel
   solarize      invert the values >= 256 - 256 m
   equalize      histogram equalisation of each channel
   autocontrast  stretch each channel's min..max to 0..255
   ============  ==============================================================

   Geometric ops fill what comes from outside the image with grey (128), as RandAugment does;
2. random erasing (`P_ERASE` = 0.25): one rectangle of 2%-1/3 of the area, aspect ratio
   0.3-3.3 (log-uniform), filled with uniform random noise.

All randomness comes from Python's `random` (the noise from a numpy generator seeded by it),
which the loader workers seed per batch (`fastinat.data.workers`): the same seed gives the
same images, with any number of workers.
"""

from __future__ import annotations

import math
import random

import cv2
import numpy as np

NUM_OPS, P_ERASE = 2, 0.25
ERASE_AREA, ERASE_RATIO = (0.02, 1 / 3), (0.3, 3.3)
MAX_ROTATE, MAX_SHEAR, MAX_TRANSLATE, MAX_ENHANCE = 30.0, 0.3, 0.3, 0.9
FILL = (128, 128, 128)
_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13  # PIL's ImageFilter.SMOOTH


def _signed(m: float) -> float:
    return m if random.random() < 0.5 else -m


def _affine(a: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    h, w = a.shape[:2]
    return cv2.warpAffine(a, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=FILL)


def rotate(a: np.ndarray, m: float) -> np.ndarray:
    h, w = a.shape[:2]
    return _affine(a, cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), _signed(MAX_ROTATE * m), 1.0))


def _shear(a: np.ndarray, m: float, axis: int) -> np.ndarray:
    h, w = a.shape[:2]
    s = _signed(MAX_SHEAR * m)
    if axis == 0:  # x' = x + s (y - centre)
        matrix = np.array([[1, s, -s * (h / 2 - 0.5)], [0, 1, 0]], np.float64)
    else:
        matrix = np.array([[1, 0, 0], [s, 1, -s * (w / 2 - 0.5)]], np.float64)
    return _affine(a, matrix)


def _translate(a: np.ndarray, m: float, axis: int) -> np.ndarray:
    h, w = a.shape[:2]
    d = _signed(MAX_TRANSLATE * m) * (w if axis == 0 else h)
    return _affine(a, np.array([[1, 0, d if axis == 0 else 0], [0, 1, d if axis == 1 else 0]], np.float64))


def _blend(a: np.ndarray, other: np.ndarray | float, factor: float) -> np.ndarray:
    """PIL's ImageEnhance: other + factor * (a - other), rounded and clipped to uint8."""
    if np.isscalar(other):
        lut = np.clip(np.rint(other + factor * (np.arange(256) - other)), 0, 255).astype(np.uint8)
        return cv2.LUT(a, lut)
    return cv2.addWeighted(a, factor, other, 1 - factor, 0)


def _factor(m: float) -> float:
    return 1 + _signed(MAX_ENHANCE * m)


def brightness(a: np.ndarray, m: float) -> np.ndarray:
    return _blend(a, 0.0, _factor(m))


def _grey(a: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)


def contrast(a: np.ndarray, m: float) -> np.ndarray:
    return _blend(a, float(int(_grey(a).mean() + 0.5)), _factor(m))


def color(a: np.ndarray, m: float) -> np.ndarray:
    return _blend(a, cv2.cvtColor(_grey(a), cv2.COLOR_GRAY2RGB), _factor(m))


def sharpness(a: np.ndarray, m: float) -> np.ndarray:
    return _blend(a, cv2.filter2D(a, -1, _SMOOTH, borderType=cv2.BORDER_REPLICATE), _factor(m))


def posterize(a: np.ndarray, m: float) -> np.ndarray:
    bits = 8 - round(4 * m)
    return np.bitwise_and(a, np.uint8((0xFF << (8 - bits)) & 0xFF))


def solarize(a: np.ndarray, m: float) -> np.ndarray:
    threshold = 256 - round(256 * m)
    values = np.arange(256)
    return cv2.LUT(a, np.where(values >= threshold, 255 - values, values).astype(np.uint8))


def equalize(a: np.ndarray, m: float) -> np.ndarray:
    return cv2.merge([cv2.equalizeHist(np.ascontiguousarray(c)) for c in cv2.split(a)])


def autocontrast(a: np.ndarray, m: float) -> np.ndarray:
    lo, hi = np.array([cv2.minMaxLoc(c)[:2] for c in cv2.split(a)]).T  # per channel
    scale = np.where(hi > lo, 255 / np.maximum(hi - lo, 1), 1.0)
    offset = np.where(hi > lo, -lo * scale, 0.0)
    lut = np.clip(np.rint(np.arange(256)[:, None] * scale + offset), 0, 255).astype(np.uint8)
    return cv2.LUT(a, lut.reshape(1, 256, 3))


OPS = {
    "identity": lambda a, m: a,
    "rotate": rotate,
    "shear_x": lambda a, m: _shear(a, m, 0),
    "shear_y": lambda a, m: _shear(a, m, 1),
    "translate_x": lambda a, m: _translate(a, m, 0),
    "translate_y": lambda a, m: _translate(a, m, 1),
    "brightness": brightness,
    "contrast": contrast,
    "color": color,
    "sharpness": sharpness,
    "posterize": posterize,
    "solarize": solarize,
    "equalize": equalize,
    "autocontrast": autocontrast,
}
_NAMES = tuple(OPS)


def random_erase(a: np.ndarray) -> np.ndarray:
    """One rectangle of random noise (area 2%-1/3, aspect 0.3-3.3), in place; `a` is returned."""
    h, w = a.shape[:2]
    for _ in range(10):
        area = random.uniform(*ERASE_AREA) * h * w
        r = math.exp(random.uniform(math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1])))
        eh, ew = round(math.sqrt(area * r)), round(math.sqrt(area / r))
        if 0 < eh < h and 0 < ew < w:
            top, left = random.randint(0, h - eh), random.randint(0, w - ew)
            noise = np.random.default_rng(random.getrandbits(64)).integers(0, 256, (eh, ew, 3), np.uint8)
            a[top:top + eh, left:left + ew] = noise
            break
    return a


def strong_ops(a: np.ndarray) -> np.ndarray:
    """`NUM_OPS` random ops of random magnitude, then random erasing (module docstring).

    `a`: height x width x 3 uint8 (a new array; it may be changed in place). Returns a
    writable uint8 array of the same shape.
    """
    for _ in range(NUM_OPS):
        a = OPS[random.choice(_NAMES)](a, random.random())
    a = np.ascontiguousarray(a)
    if random.random() < P_ERASE:
        a = random_erase(a if a.flags.writeable else a.copy())
    return a
