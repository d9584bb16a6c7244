"""The `fastinat` command line: thin Typer commands that parse options and call the library.

Installed as `fastinat.recipes` (see pyproject.toml). Nothing here imports torch or fastai at
module level, so `fastinat --help` starts in a fraction of a second.
"""
