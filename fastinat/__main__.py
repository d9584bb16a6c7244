"""`python -m fastinat ...` is the `fastinat` command (also for `torchrun -m fastinat`)."""

from fastinat.recipes.cli import main

if __name__ == "__main__":
    main()
