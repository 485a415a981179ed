"""`python -m lab` is `lab-train` (what torchrun runs: `torchrun --nproc_per_node=2 -m lab ...`)."""

from lab.cli.commands import train_main

if __name__ == "__main__":
    train_main()
