"""`python -m lab` is `lab-train` (what torchrun runs: `torchrun --nproc_per_node=2 -m lab ...`)."""

from lab.cli.entry import lab_train

if __name__ == "__main__":
    lab_train()
