"""Every PIL mode becomes upright 8-bit RGB; JPEG draft decoding keeps enough pixels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import exif_rotated_jpeg, photo, write_bad_files, write_unusual_but_valid
from fastinat.data.images import open_pixels, open_rgb, verify_image


def test_exif_orientation_is_applied(tmp_path):
    p = tmp_path / "phone.jpg"
    exif_rotated_jpeg(p, w=60, h=40, orientation=6)
    assert Image.open(p).size == (60, 40)  # stored landscape
    img = open_rgb(p)
    assert img.size == (40, 60)  # shown portrait, as the phone meant


@pytest.mark.parametrize("name", ["cmyk.jpg", "grey16.png", "palette_transparent.png", "rgba.png",
                                  "grey.jpg", "exif_rotated.jpg", "UPPER.JPG", "bilevel.bmp",
                                  "photo.webp"])
def test_unusual_modes_become_rgb(tmp_path, name):
    paths = {p.name: p for p in write_unusual_but_valid(tmp_path)}
    img = open_rgb(paths[name])
    assert img.mode == "RGB"
    assert np.asarray(img).dtype == np.uint8
    assert verify_image(paths[name]) is None


@pytest.mark.parametrize("min_side", [None, 1, 20, 40])
def test_open_pixels_equals_open_rgb(tmp_path, min_side):
    """The loaders' direct-to-array opener gives open_rgb's pixels for every kind of file."""
    paths = write_unusual_but_valid(tmp_path)
    for orientation in range(1, 9):
        exif_rotated_jpeg(tmp_path / f"o{orientation}.jpg", w=90, h=50, orientation=orientation)
        paths.append(tmp_path / f"o{orientation}.jpg")
    for p in paths:
        expected = np.asarray(open_rgb(p, min_side=min_side))
        got = open_pixels(p, min_side=min_side)
        assert got.dtype == np.uint8 and got.shape == expected.shape, p.name
        assert np.array_equal(got, expected), p.name


def test_open_pixels_refuses_broken_files(tmp_path):
    for p in write_bad_files(tmp_path):
        with pytest.raises((OSError, ValueError)):
            open_pixels(p, min_side=16)


def test_sixteen_bit_keeps_its_range(tmp_path):
    arr = np.array([[0, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    rgb = np.asarray(open_rgb(tmp_path / "g16.png"))
    assert rgb[0, :, 0].tolist() == [0, 128, 255]  # scaled, not clipped to 255


def test_transparent_pixels_become_white(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.save(tmp_path / "clear.png")
    assert np.asarray(open_rgb(tmp_path / "clear.png"))[0, 0].tolist() == [255, 255, 255]


def test_draft_decoding_never_goes_below_min_side(tmp_path):
    photo(1000, 700).save(tmp_path / "big.jpg", quality=90)
    img = open_rgb(tmp_path / "big.jpg", min_side=224)
    assert min(img.size) >= 224 and img.size[0] < 1000  # scaled while decoding
    assert open_rgb(tmp_path / "big.jpg").size == (1000, 700)


@pytest.mark.parametrize("name,reason", [("notes.txt", "not an image"),
                                         ("truncated.jpg", "truncated"),
                                         ("empty.jpg", "empty file"),
                                         ("html_saved_as.png", "not an image")])
def test_broken_files_are_named_with_a_reason(tmp_path, name, reason):
    (path,) = write_bad_files(tmp_path, (name,))
    assert reason in verify_image(path)
