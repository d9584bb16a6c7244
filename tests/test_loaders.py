"""`inat_dataloaders` / `test_dataloader`: batches, labels, the seeded stratified split, TEST set."""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import photo, tree_digest
from fastinat import DatasetError, FastinatError, UsageError, inat_dataloaders
from fastinat import test_dataloader as make_test_dl
from fastinat.data.augment import InatAugment
from fastinat.paths import cache_dir


def dls_for(path, **kw):
    kw = {"size": 32, "bs": 16, "workers": 0, "progress": False, **kw}
    return inat_dataloaders(path, **kw)


def test_batches_have_the_right_shape_and_labels(demo_data):
    dls = dls_for(demo_data, workers=2)  # worker processes: everything must pickle
    assert dls.vocab == [str(d) for d in range(10)]
    xb, yb = dls.one_batch()
    assert xb.shape == (16, 3, 32, 32) and xb.dtype == torch.float32
    assert yb.shape == (16,) and int(yb.min()) >= 0 and int(yb.max()) <= 9
    for i in range(0, len(dls.train_ds), 97):  # label = parent folder
        path, (_, y) = dls.train_ds.items[i], dls.train_ds[i]
        assert dls.vocab[int(y)] == path.parent.name


def test_split_is_stratified_seeded_and_disjoint(demo_data):
    a, b, c = dls_for(demo_data, seed=1), dls_for(demo_data, seed=1), dls_for(demo_data, seed=2)
    train, valid = set(a.inat.train_files), set(a.inat.valid_files)
    assert not train & valid
    assert all(p.parts[-3] == "train" for p in train | valid)  # val/ is never split
    assert set(b.inat.valid_files) == valid
    assert set(c.inat.valid_files) != valid
    per_class = Counter(p.parent.name for p in train | valid)
    valid_per_class = Counter(p.parent.name for p in valid)
    for cls, n in per_class.items():
        assert valid_per_class[cls] == round(0.2 * n)
    assert [str(p) for p in a.valid_ds.items] == [str(p) for p in a.inat.valid_files]


def test_split_file_is_written_then_reused(demo_data, tmp_path):
    split = tmp_path / "run" / "valid_files.txt"
    first = dls_for(demo_data, seed=1, split_file=split)
    lines = split.read_text().splitlines()
    assert len(lines) == len(first.inat.valid_files) and lines[0].startswith("train/")
    again = dls_for(demo_data, seed=99, split_file=split)  # the file wins over the seed
    assert set(again.inat.valid_files) == set(first.inat.valid_files)


def test_split_file_from_another_dataset_is_a_clear_error(demo_data, tmp_path):
    split = tmp_path / "valid.txt"
    split.write_text("train/Aves/bird.jpg\n")
    with pytest.raises(FastinatError, match="not usable images"):
        dls_for(demo_data, split_file=split)


def test_test_loader_labels_come_from_val(demo_data):
    dls = dls_for(demo_data)
    tdl = make_test_dl(dls)
    assert len(tdl.dataset) == 359
    assert all(p.parts[-3] == "val" for p in tdl.dataset.items)
    for i in range(0, len(tdl.dataset), 31):
        assert dls.vocab[int(tdl.dataset[i][1])] == tdl.dataset.items[i].parent.name
    xb, yb = tdl.one_batch()
    assert xb.shape == (16, 3, 32, 32)


def hwc(t) -> np.ndarray:
    """An `InatAugment` output ((3, H, W) uint8 tensor) as an (H, W, 3) array."""
    assert t.dtype == torch.uint8 and t.shape[0] == 3
    return t.permute(1, 2, 0).numpy()


def test_augmentation_is_applied_only_when_training(tmp_path):
    from fastai.vision.all import PILImage

    img = PILImage(photo(120, 90, seed=3))
    aug = InatAugment(48)
    train = [hwc(aug(img, split_idx=0)) for _ in range(6)]
    assert all(t.shape == (48, 48, 3) for t in train)
    assert len({t.tobytes() for t in train}) == 6  # random every time
    valid = [hwc(aug(img, split_idx=1)) for _ in range(3)]
    assert len({v.tobytes() for v in valid}) == 1  # deterministic resize + centre crop
    off = InatAugment(48, augment=False)
    assert np.array_equal(hwc(off(img, split_idx=0)), valid[0])


def test_rotation_corners_hold_image_content():
    from fastai.vision.all import PILImage

    white = PILImage(Image.new("RGB", (200, 150), (255, 255, 255)))
    aug = InatAugment(64, p_rotate=1.0, max_rotate=10, p_lighting=0.0)
    for _ in range(10):
        out = hwc(aug(white, split_idx=0))
        assert out.min() >= 250  # no black (or mirrored) corners


def test_normalisation_options(demo_data):
    dls = dls_for(demo_data)  # dataset statistics
    mean, std = dls.inat.stats
    assert len(mean) == 3 and 0.1 < mean[0] < 0.6 and std[0] > 0.1
    xb, _ = dls.valid.one_batch()
    assert abs(float(xb.mean())) < 0.3
    imagenet = dls_for(demo_data, normalize="imagenet")
    assert imagenet.inat.stats[0] == pytest.approx([0.485, 0.456, 0.406])
    own = dls_for(demo_data, normalize=([0.5] * 3, [0.25] * 3))
    assert own.inat.stats == ([0.5] * 3, [0.25] * 3)
    with pytest.raises(FastinatError, match="normalize must be"):
        dls_for(demo_data, normalize="bogus")


@pytest.mark.parametrize("given,workers", [
    ({"num_workers": 2}, 2),  # fastai's and torch's name
    ({"workers": 2}, 2),
    ({"workers": 1, "num_workers": 1}, 1),
    ({"workers": None, "num_workers": 0}, 0),
])
def test_num_workers_is_another_name_for_workers(demo_data, given, workers):
    kw = {"size": 32, "bs": 16, "progress": False, **given}
    dls = inat_dataloaders(demo_data, **kw)
    assert [dl.fake_l.num_workers for dl in dls.loaders] == [workers, workers]


def test_workers_and_num_workers_that_differ_are_a_usage_error(demo_data):
    with pytest.raises(UsageError) as e:
        inat_dataloaders(demo_data, size=32, workers=2, num_workers=4, progress=False)
    assert str(e.value) == ("Bad options: workers=2 and num_workers=4 are the same option "
                            "(num_workers is fastai's and torch's name): pass one.")


def test_broken_files_are_skipped_with_one_line(odd_dataset, capsys):
    root, planted = odd_dataset
    before = tree_digest(root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dls = dls_for(root, size=24, bs=4)
    assert not [w for w in caught if "Skipping" in str(w.message)]  # not a Python warning
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "Skipping" in ln]
    assert len(lines) == 1 and lines[0].startswith("Warning: Skipping 4 unusable file(s)")
    assert all(p.relative_to(root).as_posix() in lines[0] for p in planted)
    assert set(dls.inat.skipped) == planted
    used = set(dls.inat.train_files) | set(dls.inat.valid_files) | set(dls.inat.test_files)
    assert not used & planted
    assert len(used) == 3 * 2 * 13
    for _ in dls.train:  # a full epoch over every odd-but-valid image
        pass
    for _ in make_test_dl(dls):
        pass
    assert tree_digest(root) == before


def test_presize_cache_lives_outside_and_follows_changes(odd_dataset):
    root, planted = odd_dataset
    for p in planted:
        p.unlink()
    before = tree_digest(root)
    dls = dls_for(root, size=24, bs=4, presize=True)
    copies = set(dls.inat.redirect.values())
    assert len(copies) == 3 * 2 * 13
    assert all(c.startswith(str(cache_dir("presize"))) for c in copies)
    xb, _ = dls.one_batch()
    assert xb.shape == (4, 3, 24, 24)
    assert tree_digest(root) == before
    changed = root / "train" / "Aves" / "img 0.jpg"
    photo(90, 70, seed=42).save(changed)
    again = dls_for(root, size=24, bs=4, presize=True)
    assert again.inat.redirect[str(changed)] != dls.inat.redirect[str(changed)]
    assert len(set(again.inat.redirect.values()) - copies) == 1  # only the changed file


@pytest.mark.parametrize("kw,message", [
    ({"valid_pct": 1.5}, "--valid-pct: must be at least 0 and below 1, got 1.5"),
    ({"size": 0}, "--size: must be at least 1, got 0"),
    ({"bs": "many"}, "--bs: expected a whole number"),
    ({"num_worker": 2}, "Unknown option 'num_worker' \\(did you mean workers\\?\\)"),
])
def test_bad_option_values(demo_data, kw, message):
    with pytest.raises(UsageError, match=message):
        dls_for(demo_data, **kw)


def test_bad_layout_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        dls_for(tmp_path / "missing")
    (tmp_path / "ds" / "train" / "Aves").mkdir(parents=True)
    (tmp_path / "ds" / "val" / "Fungi").mkdir(parents=True)
    with pytest.raises(DatasetError, match="class folders differ"):
        dls_for(tmp_path / "ds")


def test_augmentation_handles_any_image_shape():
    import random

    from fastai.vision.all import PILImage

    rng = random.Random(0)
    aug = InatAugment(32)
    for _ in range(300):
        w, h = rng.choice([1, 2, 7, 31, 224, 997]), rng.choice([1, 3, 50, 333, 1024])
        img = PILImage(Image.new("RGB", (w, h), (10, 200, 30)))
        for split in (0, 1):
            assert hwc(aug(img, split_idx=split)).shape == (32, 32, 3)
