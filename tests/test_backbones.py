"""Part B groundwork: timm architectures by name and exactly which parameters each freeze mode trains."""

from __future__ import annotations

import pytest
from torch import nn

from fastinat import FastinatError
from fastinat.models.backbones import check_arch, parse_freeze

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)
# (architecture, extra timm options, {freeze mode: prefixes of the backbone parameters that train
#  besides the normalisation layers, which fastai's train_bn keeps trainable})
CASES = [
    ("resnet10t", {}, {"head": (), "last:1": ("layer4.",), "last:2": ("layer3.", "layer4.")}),
    # feature_info marks where stages end (blocks.2, blocks.4, blocks.6): the last stage is
    # blocks.5-6 plus conv_head, which comes after them
    ("efficientnet_b0", {}, {"head": (), "last:1": ("blocks.5.", "blocks.6.", "conv_head."),
                             "last:2": ("blocks.3.", "blocks.4.", "blocks.5.", "blocks.6.", "conv_head.")}),
    ("vit_tiny_patch16_224", {"img_size": 32},
     {"head": (), "last:1": ("blocks.11.", "norm."), "last:2": ("blocks.10.", "blocks.11.", "norm.")}),
    # channels-last stages, pooled by timm (tiny dims)
    ("swin_tiny_patch4_window7_224", {"img_size": 32, "embed_dim": 16, "depths": (1, 1, 1, 1),
                                      "num_heads": (1, 1, 1, 1), "window_size": 2},
     {"head": (), "last:1": ("layers.3.", "norm."), "last:2": ("layers.2.", "layers.3.", "norm.")}),
]


@pytest.fixture(scope="module")
def dls(demo_data):
    from fastinat import inat_dataloaders

    return inat_dataloaders(demo_data, size=32, bs=8, workers=0, progress=False)


def norm_params(body) -> set[str]:
    return {f"{m}.{n}" for m, mod in body.named_modules() if isinstance(mod, NORMS)
            for n, _ in mod.named_parameters(recurse=False)}


@pytest.mark.parametrize("arch,kw,expected", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("freeze", ["head", "last:1", "last:2", "none", "gradual"])
def test_exactly_the_right_parameters_train(dls, arch, kw, expected, freeze):
    from fastinat.learner import finetune_learner

    learn = finetune_learner(dls, arch, pretrained=False, freeze=freeze, dense_units=(16,), timm_kwargs=kw)
    body, head = learn.model[0].model, learn.model[1]
    trains = {n for n, p in body.named_parameters() if p.requires_grad}
    everything = {n for n, _ in body.named_parameters()}
    if freeze == "none":
        want = everything
    else:
        prefixes = expected["head" if freeze == "gradual" else freeze]
        want = norm_params(body) | {n for n in everything if n.startswith(prefixes)}
    assert trains == want
    assert all(p.requires_grad for p in head.parameters())  # the new head always trains
    assert len(learn.opt.param_lists) == (3 if freeze.startswith("last") else 2)


def test_unknown_architecture_lists_close_matches():
    with pytest.raises(FastinatError, match=r"Unknown architecture 'resnet5'.*resnet50"):
        check_arch("resnet5")
    assert check_arch("legacy_xception") == "legacy_xception"


@pytest.mark.parametrize("mode", ["last:0", "last", "tail", "last:x"])
def test_bad_freeze_modes(mode):
    with pytest.raises(FastinatError, match="Unknown freeze mode"):
        parse_freeze(mode)
    assert parse_freeze("LAST:3") == ("last", 3)
