"""Normalisation: the statistics a model card reports are the ones its batches were normalised with.

The loaders' normalisation is one transform shared by all their loaders; `dls.inat.stats` reads
it. `normalize="auto"` (the default) stays open until the first learner fixes it (fastai's rule:
a learner adds its normalisation only where the data has none); anything else is fixed when the
loaders are built. Tiny resnet10t with a weights file the tests write: nothing is downloaded.
"""

from __future__ import annotations

import warnings

import pytest
import timm
import torch
from fastai.callback.core import Callback
from safetensors.torch import save_file

from conftest import demo_subset
from fastinat import inat_dataloaders
from fastinat import test_dataloader as make_test_dl
from fastinat.data.loaders import fix_normalize
from fastinat.inference import EvalTransform
from fastinat.learner import finetune_learner, scratch_learner
from fastinat.models.backbones import backbone_stats

RESNET = backbone_stats("resnet10t")  # what its pretrained weights expect (ImageNet's)
OWN = ([0.5, 0.4, 0.3], [0.25, 0.2, 0.3])


@pytest.fixture(scope="module")
def tiny(demo_data, tmp_path_factory):
    """6 train and 2 val images per digit."""
    return demo_subset(demo_data, tmp_path_factory.mktemp("normalize") / "digits", 6, 2)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A resnet10t weights file, as a user's --weights file would be."""
    path = tmp_path_factory.mktemp("weights") / "resnet10t.safetensors"
    torch.manual_seed(0)
    state = timm.create_model("resnet10t", pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def loaders(root, **kw):
    return inat_dataloaders(root, **{"size": 32, "bs": 20, "workers": 0, "augment": False,
                                     "progress": False, "notify": False, **kw})


def card_stats(learn) -> tuple[list[float], list[float]]:
    norm = learn.card["normalize"]
    return norm["mean"], norm["std"]


def eval_batch(card: dict, files) -> torch.Tensor:
    """What `fastinat predict` gives a model with this card: the files, normalised as it says."""
    transform = EvalTransform(card)
    return transform.batch([transform.pixels(f) for f in files])


def normalisation_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if "keep their normalisation" in str(w.message)]


class FirstBatches(Callback):
    """Keeps the first training and the first validation batch the model is given."""

    def before_fit(self):
        self.train_x = self.valid_x = None

    def before_batch(self):
        x = self.xb[0].as_subclass(torch.Tensor).detach().clone()
        if self.training and self.train_x is None:
            self.train_x = x
        elif not self.training and self.valid_x is None:
            self.valid_x = x


def test_library_finetune_trains_on_the_stats_its_card_records(tiny, weights):
    """The issue: `finetune_learner(inat_dataloaders(path), arch)` said the backbone's
    statistics but normalised with the dataset's."""
    dls = loaders(tiny)
    dataset = dls.inat.stats
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        learn = finetune_learner(dls, "resnet10t", weights=weights, dense_units=(8,))
    assert not normalisation_warnings(caught)
    assert card_stats(learn) == RESNET != dataset and dls.inat.stats == RESNET
    batches = FirstBatches()
    learn.fit(1, 1e-3, cbs=[batches])
    n = len(batches.valid_x)  # valid is not shuffled: its first batch is its first files
    assert torch.equal(batches.valid_x, eval_batch(learn.card, dls.inat.valid_files[:n]))
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in card_stats(learn))
    pixels = (batches.train_x * std + mean) * 255  # un-normalised with the card: whole numbers 0-255
    assert (pixels - pixels.round()).abs().max() < 1e-3
    assert pixels.min() > -1e-3 and pixels.max() < 255 + 1e-3


def test_fixing_open_stats_changes_the_batches_of_every_loader(tiny):
    dls = loaders(tiny)
    test = make_test_dl(dls)  # made before the change: it shares the transform
    before = dls.valid.one_batch()[0].clone(), test.one_batch()[0].clone()
    assert not dls.inat.norm.fixed
    assert fix_normalize(dls, OWN) == OWN == dls.inat.stats
    after = dls.valid.one_batch()[0], test.one_batch()[0]
    card = {"input_size": 32, "normalize": {"mean": OWN[0], "std": OWN[1]}}
    for old, new, files in zip(before, after, (dls.inat.valid_files, dls.inat.test_files), strict=True):
        assert not torch.equal(old, new)
        assert torch.equal(new.as_subclass(torch.Tensor), eval_batch(card, files[:len(new)]))
    assert fix_normalize(dls, RESNET) == OWN  # fixed: never changes again
    assert torch.equal(dls.valid.one_batch()[0], after[0])


@pytest.mark.parametrize("normalize,applied,warns", [
    ("dataset", None, True),
    (OWN, OWN, True),
    ("imagenet", RESNET, False),
    (RESNET, RESNET, False),
], ids=["dataset", "own", "imagenet", "backbone"])
def test_loaders_built_with_a_normalisation_keep_it(tiny, weights, normalize, applied, warns):
    """fastai's rule: a learner adds its normalisation only where the data has none."""
    dls = loaders(tiny, normalize=normalize)
    applied = applied or dls.inat.stats
    before = dls.valid.one_batch()[0].clone()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        learn = finetune_learner(dls, "resnet10t", weights=weights, dense_units=(8,))
    assert bool(normalisation_warnings(caught)) == warns
    assert card_stats(learn) == applied == dls.inat.stats
    xb = dls.valid.one_batch()[0]
    assert torch.equal(xb, before)
    assert torch.equal(xb.as_subclass(torch.Tensor), eval_batch(learn.card, dls.inat.valid_files[:len(xb)]))


def test_the_first_learner_fixes_open_stats(tiny, weights):
    dls = loaders(tiny)
    scratch = scratch_learner(dls, filters=[8, 8], dense_units=8)
    assert dls.inat.norm.fixed
    with pytest.warns(UserWarning, match="keep their normalisation"):
        learn = finetune_learner(dls, "resnet10t", weights=weights, dense_units=(8,))
    assert card_stats(learn) == card_stats(scratch) == dls.inat.stats != RESNET


def test_random_weights_fix_the_datasets_stats(tiny):
    dls = loaders(tiny)
    dataset = dls.inat.stats
    learn = finetune_learner(dls, "resnet10t", pretrained=False, dense_units=(8,))
    assert card_stats(learn) == dataset == dls.inat.stats and dls.inat.norm.fixed


def test_stats_cannot_be_set_behind_the_transforms_back(tiny):
    dls = loaders(tiny, normalize=OWN)
    norm = dls.inat.norm
    assert all(dl.after_batch.to_float_normalize is norm for dl in (dls.train, dls.valid))
    for name in ("mean", "std", "stats", "fixed"):
        with pytest.raises(AttributeError):
            setattr(norm, name, None)
    with pytest.raises(AttributeError):
        dls.inat.stats = RESNET
