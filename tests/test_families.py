"""Every timm family fine-tunes: one tiny training step per family, the pooling it gets, its
model card rebuilding the same network, stochastic depth (--drop-path), and the Swin run of
the issue end to end (train, load_model, predict, Grad-CAM).

Random weights, the smallest variant of each family and tiny inputs, shrunk further through
timm's own options (embed_dim, depths, ...) where the family takes them.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from typer.testing import CliRunner

from conftest import demo_subset
from fastinat import FastinatError
from fastinat.recipes.cli import app

runner = CliRunner()
VIT = {"embed_dim": 32, "depth": 2, "num_heads": 2}
SWIN = {"embed_dim": 16, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1), "window_size": 2}
CONVNEXT = {"depths": (1, 1, 1, 1), "dims": (8, 16, 32, 64)}
# (architecture, input size, tiny timm options, the pooling fastinat picks: fastai's concat pooling
#  of an NCHW map, as for CNNs so far, or timm's own for tokens and channels-last maps)
FAMILIES = [
    ("resnet10t", 32, {"stem_width": 8, "channels": (8, 16, 32, 64)}, "concat"),
    ("legacy_xception", 32, {}, "concat"),
    ("inception_v3", 80, {}, "concat"),  # its smallest input is 75 px
    ("efficientnet_b0", 32, {}, "concat"),
    ("convnext_atto", 32, CONVNEXT, "concat"),
    ("vit_tiny_patch16_224", 32, VIT, "timm"),
    ("swin_tiny_patch4_window7_224", 32, SWIN, "timm"),  # NHWC maps
    ("swinv2_tiny_window8_256", 32, SWIN, "timm"),
    ("maxvit_rmlp_pico_rw_256", 64, {"embed_dim": (32, 32, 32, 32), "depths": (1, 1, 1, 1), "stem_width": 16},
     "concat"),  # sizes: multiples of 32
    ("eva02_tiny_patch14_224", 28, VIT, "timm"),
    ("vit_small_patch14_dinov2", 28, VIT, "timm"),
    ("deit_tiny_patch16_224", 32, VIT, "timm"),
    ("convnextv2_atto", 32, CONVNEXT, "concat"),
    ("tf_efficientnetv2_b0", 32, {}, "concat"),
    ("caformer_s18", 32, {}, "concat"),
    ("fastvit_t8", 32, {"layers": (1, 1, 1, 1), "embed_dims": (8, 16, 32, 64)}, "concat"),
]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models: one thread computes them as fast as two, and far faster when the cores are
    busy (the second thread's waits are the cost); the count is put back after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_data(demo_data, tmp_path_factory):
    """2 train and 1 val image per digit."""
    return demo_subset(demo_data, tmp_path_factory.mktemp("families") / "digits", 2, 1)


@pytest.fixture(scope="module")
def loaders(tiny_data):
    """size -> DataLoaders over tiny_data (one training batch of 8 images, 10 to validate)."""
    from fastinat import inat_dataloaders

    cache = {}

    def get(size):
        if size not in cache:
            cache[size] = inat_dataloaders(tiny_data, size=size, bs=8, workers=0, progress=False,
                                           augment=False)
        return cache[size]

    return get


@pytest.mark.parametrize("arch,size,kw,pooling", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_every_family_trains_a_step_and_rebuilds_from_its_card(loaders, arch, size, kw, pooling):
    from fastinat.inference import build_model
    from fastinat.learner import finetune_learner
    from fastinat.train import configure_learner

    dls = loaders(size)
    learn = finetune_learner(dls, arch, pretrained=False, freeze="none", dense_units=(8,), timm_kwargs=kw)
    assert learn.card["model"]["pooling"] == pooling
    configure_learner(learn, "fp32")  # what every run does: channels_last included
    body = learn.model[0].model
    before = [p.detach().clone() for p in body.parameters()]
    learn.fit(1, 1e-3)
    assert len(learn.recorder.losses) == 1 and torch.isfinite(learn.recorder.losses[0])
    assert any(not torch.equal(a, b) for a, b in zip(before, body.parameters(), strict=True))  # the body learns
    rebuilt = build_model(json.loads(json.dumps(learn.card)))  # as model.json stores it
    rebuilt.load_state_dict(learn.model.state_dict())
    xb, _ = dls.valid.one_batch()
    with torch.no_grad():
        got, want = rebuilt.eval()(xb), learn.model.eval()(xb)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()  # random weights: logits up to ~1e6


def _calibrate_batch_norm(model, xb) -> None:
    """Batch-norm statistics of this batch (random networks' activations otherwise grow layer
    after layer in eval mode, and float32 rounding with them)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: after one batch, that batch's statistics
    with torch.no_grad():
        model.train()(xb)
    for m in norms:
        m.momentum = 0.1


def _grads(model, xb, yb, loss_func) -> list[torch.Tensor | None]:
    model.zero_grad(set_to_none=True)
    loss_func(model(xb), yb.long()).backward()
    return [None if p.grad is None else p.grad.detach().double() for p in model.parameters()]


@pytest.mark.parametrize("arch,size,kw,pooling", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_every_family_gets_the_gradients_of_nchw_in_the_layout_a_run_uses(loaders, arch, size, kw, pooling):
    """One backward pass as a run computes it (channels_last model and batches, with
    `fastinat.layout`'s NCHW layers where this CPU needs them) is as close to the float64
    gradients (no oneDNN) as plain NCHW float32 is. On an AVX2-only CPU fastvit's 1x1 stride-2
    stem convolution got its weight gradient wrong by 100x (oneDNN issue 6035); `test_layout.py`
    runs this test as such a CPU too. Eval mode: the same convolution kernels, without dropout
    and without batch statistics of 8 images, which random tiny networks make ill-conditioned
    (the batch norms hold that batch's statistics instead)."""
    import copy

    from fastinat.learner import finetune_learner
    from fastinat.train import configure_learner

    dls = loaders(size)
    learn = finetune_learner(dls, arch, pretrained=False, freeze="none", dense_units=(8,), timm_kwargs=kw)
    configure_learner(learn, "fp32")
    torch.manual_seed(0)
    xb, yb = dls.train.one_batch()
    _calibrate_batch_norm(learn.model, xb)
    nchw = copy.deepcopy(learn.model).to(memory_format=torch.contiguous_format).eval()
    exact = copy.deepcopy(nchw).double()
    run = learn.model.to(memory_format=torch.channels_last).eval()  # as fastai's ChannelsLast does
    assert xb.is_contiguous(memory_format=torch.channels_last)  # the loaders' own layout
    loss = torch.nn.functional.cross_entropy
    got = _grads(run, xb.as_subclass(torch.Tensor), yb, loss)
    ref = _grads(nchw, xb.as_subclass(torch.Tensor).contiguous(), yb, loss)
    truth = _grads(exact, xb.as_subclass(torch.Tensor).double().contiguous(), yb, loss)
    floor = 1e-6 * max(float(t.norm()) for t in truth if t is not None)  # gradients that are ~0
    for (name, _), g, r, t in zip(nchw.named_parameters(), got, ref, truth, strict=True):
        if t is None:
            assert g is None, name
            continue
        size = max(float(t.norm()), floor)
        error, rounding = float((g - t).norm()) / size, float((r - t).norm()) / size
        # float32 rounding, as NCHW's own error measures it, and up to 3e-2 where other kernels sum
        # in another order (random inception_v3 under AVX2; each of its convolutions alone
        # matches NCHW); the oneDNN bug was off by 100x and more
        assert error <= 30 * rounding + 0.1, f"{arch}: {name}'s gradient is {error:.1e} off, NCHW's {rounding:.1e}"


def test_a_cnn_is_exactly_fastais_create_timm_model():
    """Same modules, same random initialisation, same outputs as before fastinat chose poolings."""
    from fastai.vision.learner import create_timm_model

    from fastinat.models.backbones import timm_classifier

    torch.manual_seed(0)
    theirs, _ = create_timm_model("resnet10t", 10, pretrained=False, lin_ftrs=[16], ps=0.5)
    torch.manual_seed(0)
    ours, pooling, width = timm_classifier("resnet10t", 10, size=32, lin_ftrs=[16], ps=0.5)
    assert (pooling, width, repr(ours)) == ("concat", 512, repr(theirs))
    assert all(torch.equal(a, b) for a, b in zip(theirs.state_dict().values(), ours.state_dict().values(), strict=True))


def test_a_size_the_model_cannot_take_is_one_line_with_sizes_it_can(loaders):
    from fastinat.learner import finetune_learner

    with pytest.raises(FastinatError) as e:  # MaxViT's windows need multiples of 32 px (and 48)
        finetune_learner(loaders(40), "maxvit_rmlp_pico_rw_256", pretrained=False)
    message = str(e.value)
    assert message.startswith("maxvit_rmlp_pico_rw_256 cannot take 40 px images (RuntimeError: ")
    assert message.endswith("pick another --size (e.g. 32 or 48; its weights were trained at 256).")
    assert "\n" not in message


# -- stochastic depth ------------------------------------------------------------------------

@pytest.mark.parametrize("arch,kw,drop_paths", [
    ("vit_tiny_patch16_224", VIT, lambda m: [m.blocks[-1].drop_path1, m.blocks[-1].drop_path2]),
    ("resnet10t", {}, lambda m: [m.layer4[-1].drop_path]),
])
def test_drop_path_reaches_timms_drop_path_modules(loaders, arch, kw, drop_paths):
    from fastinat.learner import finetune_learner

    learn = finetune_learner(loaders(32), arch, pretrained=False, drop_path=0.2, timm_kwargs=kw)
    last = drop_paths(learn.model[0].model)  # the last block gets the whole rate
    assert [m.drop_prob for m in last] == pytest.approx([0.2] * len(last))
    assert learn.card["model"]["timm_kwargs"]["drop_path_rate"] == 0.2
    plain = finetune_learner(loaders(32), arch, pretrained=False, timm_kwargs=kw)
    assert "drop_path_rate" not in plain.card["model"]["timm_kwargs"]  # 0: the model's own default


def cli(data, out, *args):
    return runner.invoke(app, ["finetune", "--data", str(data), "--out", str(out), "--bs", "8", "--workers", "0",
                               "--no-augment", "--no-wandb", "--no-pretrained", "--dense-units", "8", *args])


def test_drop_path_in_help_config_and_refused_where_timm_has_none(tiny_data, tmp_path):
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", runner.invoke(app, ["finetune", "--help"]).output).split())
    assert "--drop-path" in text and "drop_path_rate" in text
    result = cli(tiny_data, tmp_path / "a", "--arch", "inception_v3", "--size", "80", "--drop-path", "0.1")
    assert result.exit_code == 2
    assert "inception_v3 has no stochastic depth (timm's drop_path_rate); drop --drop-path." in result.output
    assert "Traceback" not in result.output
    result = cli(tiny_data, tmp_path / "b", "--arch", "resnet10t", "--size", "32", "--drop-path", "1")
    assert result.exit_code == 2 and "--drop-path" in result.output
    result = cli(tiny_data, tmp_path / "c", "--arch", "resnet10t", "--size", "32", "--drop-path", "0.1",
                 "--epochs", "1", "--name", "r")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "c" / "r" / "config.json").read_text())["config"]["drop_path"] == 0.1
    card = json.loads((tmp_path / "c" / "r" / "model.json").read_text())
    assert card["model"]["timm_kwargs"]["drop_path_rate"] == 0.1


# -- the Swin run, end to end --------------------------------------------------------

def test_swin_runs_end_to_end_and_its_model_loads_predicts_and_explains(tiny_data, tmp_path):
    from fastinat import explain, load_model, predict
    from fastinat.inference import EvalTransform

    result = cli(tiny_data, tmp_path, "--arch", "swin_tiny_patch4_window7_224", "--size", "32",
                 "--freeze", "none", "--epochs", "1", "--name", "swin", "--drop-path", "0.1")
    assert result.exit_code == 0, result.output
    run = tmp_path / "swin"
    model = load_model(run)
    card = model.fastinat_card
    assert card["model"]["pooling"] == "timm" and card["model"]["timm_kwargs"]["drop_path_rate"] == 0.1
    images = sorted((tiny_data / "val").rglob("*.png"))[:3]
    transform = EvalTransform(card)
    with torch.no_grad():
        probs = torch.softmax(model(torch.stack([transform(p) for p in images])), 1)
    records = predict(run, images, top_k=1)
    assert [r["prob"] for r in records] == pytest.approx(probs.max(1).values.tolist(), abs=1e-5)
    (cam,) = explain(model, images[:1], method="gradcam")  # the last stage's NHWC map, permuted
    assert cam["layer"] == "0.model.layers.3" and cam["map"].shape == (32, 32)
    (cam,) = explain(model, images[:1], method="gradcam", layer="0.model.layers.1")  # 4 x 4 patches
    assert cam["map"].shape == (32, 32) and cam["map"].std() > 0
    assert cam["map"].min() >= 0 and cam["map"].max() <= 1


@pytest.mark.parametrize("arch,kw", [("swin_tiny_patch4_window7_224", SWIN), ("vit_tiny_patch16_224", VIT)])
def test_cached_features_of_token_and_channels_last_models_are_the_pooled_ones(loaders, arch, kw):
    from fastinat import cached_learner
    from fastinat.learner import finetune_learner

    dls = loaders(32)
    learn = finetune_learner(dls, arch, pretrained=False, freeze="head", train_bn=False, dense_units=(8,),
                             timm_kwargs=kw)
    head = cached_learner(learn, progress=False)
    features, _ = head.dls.valid.one_batch()
    xb, _ = dls.valid.one_batch()
    assert features.shape == (len(xb), learn.card["model"]["features"])
    with torch.no_grad():
        assert torch.allclose(head.model.eval()(features), learn.model.eval()(xb), atol=1e-5)
