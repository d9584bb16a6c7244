"""`fastinat export`: a run's model in a portable format."""

from __future__ import annotations

from pathlib import Path

import typer

from fastinat.errors import UsageError

from ._options import RUN
from ._util import call, console, fail


def export(
    run: Path = RUN,
    onnx: bool = typer.Option(False, "--onnx", help="Write an ONNX file (the only format so far)."),
    out: Path = typer.Option(None, "--out", help="Where to write it. \\[default: RUN/model.onnx]"),
    images: list[Path] = typer.Option(None, "--images", help="Sample images or folders for the "
                                      "check. \\[default: two TEST images per class of the run's dataset]"),
) -> None:
    """Export a run's best model and check it against torch.

    --onnx writes an ONNX graph (input `images`: preprocessed float32 batch x 3 x size x size,
    output `logits`; dynamic batch) and runs it in onnxruntime on sample images: the top-1
    class must match torch's on every one. Where torch's dynamo exporter fails, the TorchScript
    exporter writes the file instead (one line says so), checked the same way.
    Needs `pip install 'fastinat\\[onnx]'`."""
    if not onnx:
        fail(UsageError("Choose a format: --onnx."))
    from fastinat.export import export_onnx

    dest, check = call(export_onnx, run, out, images or None)
    if check.get("exporter") == "torchscript":
        console.print(f"The dynamo exporter failed ({check['dynamo_error']}); exported with the "
                      "TorchScript exporter instead.", highlight=False, markup=False)
    console.print(f"Wrote {dest}; onnxruntime agrees with torch on the top-1 class of "
                  f"{check['top1_agree']}/{check['images']} sample images (largest logit difference "
                  f"{check['max_abs_logit_diff']:.1e}).", highlight=False)
