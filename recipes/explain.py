"""`fastinat explain`: what a trained model looks at."""

from __future__ import annotations

from pathlib import Path

import typer

from fastinat.config import ExplainOptions

from ._options import RUN, with_options
from ._util import call, console


@with_options(ExplainOptions)
def explain(
    run: Path = RUN,
    images: list[Path] = typer.Argument(None, help="Image files and folders (not needed for "
                                        "--method filters or --list-layers)."),
    out: Path = typer.Option(None, "--out", help="Folder for the PNGs. \\[default: RUN/explain]"),
    list_layers: bool = typer.Option(False, "--list-layers", help="Print the layer names --layer accepts."),
    **options,
) -> None:
    """Draw what a run's model looks at, one PNG per image.

    gradcam: where the evidence for the class is (captum's LayerGradCam); guided-backprop: which
    pixels push the class up (captum, extended to ELU/SiLU/GELU/Mish); filters: the first conv
    layer's kernels; feature-maps: a layer's channels for the image."""
    from fastinat.explain import default_layer, draw, layer_names
    from fastinat.explain import explain as run_explain
    from fastinat.inference import load_model

    model = call(load_model, run)
    if list_layers:
        default = default_layer(model)
        for name in layer_names(model):
            console.print(f"{name}{'  (default)' if name == default else ''}", highlight=False)
        return
    records = call(run_explain, model, images or [], **options)
    for path in call(draw, records, out or Path(run) / "explain"):
        console.print(f"wrote {path}", highlight=False)
