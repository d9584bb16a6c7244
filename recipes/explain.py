"""`fastinat explain`: what a trained model looks at."""

from __future__ import annotations

from pathlib import Path

import typer

from ._util import call, console, fail


def explain(
    run: Path = typer.Argument(..., help="A run folder (runs/<name>)."),
    images: list[Path] = typer.Argument(None, help="Image files and folders (not needed for "
                                        "--method filters or --list-layers)."),
    method: str = typer.Option("gradcam", "--method", help="gradcam, guided-backprop, filters or "
                               "feature-maps."),
    layer: str = typer.Option(None, "--layer", help="Layer for gradcam and feature-maps (see "
                              "--list-layers). \\[default: the last conv block]"),
    target: str = typer.Option(None, "--target", help="Class to explain. \\[default: the predicted one]"),
    out: Path = typer.Option(None, "--out", help="Folder for the PNGs. \\[default: RUN/explain]"),
    list_layers: bool = typer.Option(False, "--list-layers", help="Print the layer names --layer accepts."),
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
    if method != "filters" and not images:
        fail("Give one or more images (files or folders) to explain.", 2)
    records = call(run_explain, model, images or [], method=method, layer=layer, target=target)
    for path in call(draw, records, out or Path(run) / "explain"):
        console.print(f"wrote {path}", highlight=False)
