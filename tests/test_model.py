"""`build_cnn`: every option does what it says (module types, kernels, organisations, sizes)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastinat import FastinatError, UsageError
from fastinat.models.cnn import ACTIVATIONS, build_cnn, cnn_config, organise_filters


def convs(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_each_activation_is_the_real_module(name):
    model = build_cnn(10, filters=(4, 8), activation=name, dense_units=8)
    acts = [m for m in model.modules() if isinstance(m, tuple(ACTIVATIONS.values()))]
    assert len(acts) == 3 and all(type(a) is ACTIVATIONS[name] for a in acts)
    if name == "silu":
        assert all(type(a) is nn.SiLU for a in acts) and not any(isinstance(a, nn.SELU) for a in acts)


def test_kernel_size_per_block_and_output_shape():
    model = build_cnn(7, filters=(8, 16, 16, 32, 32), kernel_sizes=[3, 5, 3, 5, 3], dense_units=12)
    assert [c.kernel_size for c in convs(model)] == [(3, 3), (5, 5), (3, 3), (5, 5), (3, 3)]
    assert [c.out_channels for c in convs(model)] == [8, 16, 16, 32, 32]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    head_linears = [m for m in model.head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in head_linears] == [(32, 12), (12, 7)]


@pytest.mark.parametrize("org,expected", [("same", [32] * 5), ("double", [32, 64, 128, 256, 512]),
                                          ("halve", [64, 32, 16, 8, 4])])
def test_filter_organisations(org, expected):
    base = 64 if org == "halve" else 32
    assert list(organise_filters(base, org, 5)) == expected
    model = build_cnn(10, filter_base=base, filter_org=org, depth=5)
    assert [c.out_channels for c in convs(model)] == expected


def test_batchnorm_and_dropout_options():
    on = build_cnn(10, filters=(4, 8), batchnorm=True, dropout=0.4)
    off = build_cnn(10, filters=(4, 8), batchnorm=False, dropout=0.0)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in on.modules()) == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in off.modules())
    assert [m.p for m in on.modules() if isinstance(m, nn.Dropout)] == [0.4]
    assert all(c.bias is None for c in convs(on)) and all(c.bias is not None for c in convs(off))


def test_valid_padding_and_smallest_size():
    same = cnn_config(10, filters=(8,) * 5, kernel_sizes=3)
    valid = cnn_config(10, filters=(8,) * 5, kernel_sizes=[3, 5, 3, 5, 3], padding="valid")
    assert same.min_input_size() == 32
    assert valid.min_input_size() == 114
    model = build_cnn(10, filters=(8,) * 5, kernel_sizes=[3, 5, 3, 5, 3], padding="valid")
    assert convs(model)[0].padding == (0, 0)
    assert model(torch.randn(1, 3, 114, 114)).shape == (1, 10)
    with pytest.raises(FastinatError, match="use --size 114 or more"):
        valid.check_input_size(100)


@pytest.mark.parametrize("kw,message", [
    ({"activation": "selu"}, "--activation: must be relu, elu, silu, gelu or mish, got 'selu'"),
    ({"activation": "rleu"}, "did you mean relu"),
    ({"dropout": -0.1}, "--dropout: must be at least 0 and below 1, got -0.1"),
    ({"filters": (8, 16), "kernel_sizes": [3, 5, 3]}, "3 kernel sizes for 2 blocks"),
    ({"filter_org": "triple"}, "--filter-org: must be same, double or halve"),
    ({"padding": "full"}, "--padding: must be same or valid"),
    ({"kernel_sizes": 4}, "odd kernel sizes"),
    ({"filters": (8, 16), "filter_base": 8}, "not both"),
    ({"filters": [8, 0]}, "--filters: must be at least 1, got 0"),
    ({"depth": 3, "filters": [8, 16]}, "--depth 3 does not match the 2 filter counts"),
    ({"dense_units": "wide"}, "--dense-units: expected a whole number, got 'wide'"),
    ({"colour": "red"}, "Unknown option 'colour'"),
])
def test_bad_values_are_one_usage_error(kw, message):
    with pytest.raises(UsageError, match=message):
        build_cnn(10, **kw)


def test_defaults_come_from_the_config():
    """build_cnn, cnn_config and ScratchConfig agree because the CNN reads its defaults there."""
    from fastinat.config import CNNOptions

    cfg = cnn_config(10)
    defaults = CNNOptions()
    assert cfg.activation == defaults.activation and cfg.dropout == defaults.dropout
    assert cfg.dense_units == defaults.dense_units and cfg.padding == defaults.padding
    assert cfg.filters == (32, 64, 128, 256, 512) and cfg.kernel_sizes == (3,) * 5
    assert cnn_config(10, CNNOptions(activation="gelu"), dropout=0.1).activation == "gelu"
