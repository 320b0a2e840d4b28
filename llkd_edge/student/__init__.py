"""The student stage: sample selection (pure), the training loop and checkpoints, relabelling, distill and evolve, and the run folder later stages read."""
