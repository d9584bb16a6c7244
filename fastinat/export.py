"""ONNX export of a run's model, checked against torch with onnxruntime.

    fastinat export runs/latest --onnx          # -> runs/latest/model.onnx
    fastinat.export_onnx("runs/latest")         # the same, returns (path, check)

The ONNX graph takes `images`: float32 (batch, 3, input_size, input_size), already
preprocessed with the run's evaluation transform (see `fastinat.inference`), and returns
`logits` (batch, classes); the batch size is dynamic. The export goes through torch's
`torch.onnx.export(dynamo=True)`; where that exporter fails (it does on some torch/onnxscript
pairs inside the supported range), through the TorchScript exporter (`dynamo=False`, opset
17) instead, and the check results say which (`check["exporter"]`, and why in
`check["dynamo_error"]`). The check is the same for either file: it runs the file in
onnxruntime on sample images (by default two TEST images per class from the run's dataset)
and requires the same top-1 class as torch for every one of them.

Needs the optional extra: `pip install 'fastinat[onnx]'` (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import torch

from .errors import FastinatError, UsageError

ONNX_FILE = "model.onnx"


def _need_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise FastinatError(f"ONNX export needs onnx, onnxscript and onnxruntime ({e.name} is missing): "
                            "pip install 'fastinat[onnx]'.") from None


def sample_images(run: Path, card: dict, per_class: int = 2) -> list[Path]:
    """A few TEST images per class from the dataset the run was trained on."""
    from .run_folder import run_data

    data = run_data(run)
    val = Path(data) / "val" if data else None
    if val is None or not val.is_dir():
        raise UsageError(f"The dataset of {run} ({data}) is not here to check the export; "
                            "pass sample images with --images.")
    from .data.images import find_images

    files = []
    for cls in card["classes"]:
        files += find_images(val / cls)[:per_class] if (val / cls).is_dir() else []
    return files


#: The TorchScript exporter's opset: its long-standing default, known to every torch >= 2.6
#: and to onnxruntime >= 1.18.
TORCHSCRIPT_OPSET = 17


def _reason(e: BaseException) -> str:
    """An exception as one short line: `Type: first line of the message`."""
    first = (str(e).strip().splitlines() or [""])[0].strip()
    return f"{type(e).__name__}: {first[:200]}"


class _ExportFailed(Exception):
    """Both exporters failed (raised inside the atomic write, so nothing is left behind)."""

    def __init__(self, dynamo: Exception, torchscript: Exception):
        super().__init__(f"dynamo exporter: {_reason(dynamo)}; TorchScript exporter: {_reason(torchscript)}")


def _write_onnx(model: torch.nn.Module, size: int, dest: Path) -> dict:
    """Export `model` for (batch, 3, size, size) float32 inputs, the batch size dynamic.

    Tries torch's dynamo exporter, then the TorchScript one; returns `{"exporter": "dynamo"}`
    or `{"exporter": "torchscript", "dynamo_error": "Type: first line"}`.
    """
    import warnings

    from .io import atomic_write

    example = torch.zeros(2, 3, size, size)
    names = {"input_names": ["images"], "output_names": ["logits"]}
    used: dict = {}

    def dynamo(tmp: str) -> None:
        batch = torch.export.Dim("batch", min=1)
        torch.onnx.export(model, (example,), tmp, **names, dynamic_shapes=({0: batch},), dynamo=True,
                          external_data=False)

    def torchscript(tmp: str) -> None:
        with warnings.catch_warnings():
            # "legacy exporter" deprecations (we say which exporter wrote the file ourselves), and
            # trace warnings (the onnxruntime check runs the file on another batch size)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(model, (example,), tmp, **names, dynamo=False,
                              opset_version=TORCHSCRIPT_OPSET,
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})

    def write(tmp: str) -> None:
        with contextlib.redirect_stdout(io.StringIO()):  # the exporters' progress lines
            try:
                dynamo(tmp)
                used["exporter"] = "dynamo"
                return
            except OSError:
                raise  # writing the file failed, not the conversion: atomic_write says so
            except Exception as e:  # noqa: BLE001 - the exporter raises many kinds
                failed = e
            try:
                torchscript(tmp)
            except OSError:
                raise
            except Exception as e:  # noqa: BLE001
                raise _ExportFailed(failed, e) from e
            used.update(exporter="torchscript", dynamo_error=_reason(failed))

    try:
        atomic_write(dest, write)
    except FastinatError:
        raise
    except _ExportFailed as e:
        raise FastinatError(f"torch could not export the model to ONNX ({e}); nothing was written.") from e
    except Exception as e:  # noqa: BLE001 - say which, in one line
        raise FastinatError(f"torch could not export the model to ONNX ({_reason(e)}); "
                            "nothing was written.") from e
    return used


def export_onnx(run: str | Path, dest: str | Path | None = None, images=None) -> tuple[Path, dict]:
    """Write `RUN/model.onnx` (or `dest`) and check it; returns (path, check results).

    The check results: `images`, `top1_agree`, `max_abs_logit_diff`, `exporter` ("dynamo", or
    "torchscript" where the dynamo exporter failed) and then `dynamo_error` (its one-line reason).

    Raises:
        UsageError: no sample images (the run's dataset is gone, or `images` holds none), or a
            sample image that does not exist.
        FastinatError: the onnx packages are missing, the run is unusable, a sample image is
            unreadable, both exporters fail, or onnxruntime disagrees with torch on the top-1 class
            of a sample image.
    """
    from .inference import EvalTransform, image_files, load_model

    _need_onnx()
    import onnxruntime as ort

    run = Path(run)
    model = load_model(run)
    card = model.fastinat_card
    files = image_files(images) if images else sample_images(run, card)
    if not files:
        raise UsageError("No sample images to check the export with.")
    transform = EvalTransform(card)
    x = torch.stack([transform.tensor(transform.read(f)) for f in files])
    dest = Path(dest) if dest is not None else run / ONNX_FILE
    exporter = _write_onnx(model, int(card["input_size"]), dest)
    session = ort.InferenceSession(str(dest), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        expected = model(x).float().numpy()
    got = session.run(["logits"], {"images": x.numpy()})[0]
    agree = int((expected.argmax(1) == got.argmax(1)).sum())
    check = {"images": len(files), "top1_agree": agree,
             "max_abs_logit_diff": float(np.abs(expected - got).max()), **exporter}
    if agree != len(files):
        raise FastinatError(f"The ONNX model disagrees with torch on the top-1 class of "
                            f"{len(files) - agree} of {len(files)} sample images; {dest} is not usable.")
    return dest, check
