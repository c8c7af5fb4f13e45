"""Warnings that are not the user's to act on, filtered once at the entry points (definitions.py,
which every Dagster process loads, and the CLI). Everything else still shows."""
from __future__ import annotations

import os
import warnings


def quiet_warnings() -> None:
    import dagster as dg

    # Features this project uses on purpose: observable source assets (beta) and per-partition
    # asset checks (preview). The warnings name the feature, not something to change.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    # Deprecations inside libraries (transformers' past_key_values on every generate call, torch,
    # DeepSpeed): notes for their maintainers, repeated once per evaluated item.
    for module in ("transformers", "torch", "deepspeed", "accelerate"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
    # The same through the libraries' own loggers and progress bars (also in the processes they
    # start, which inherit the environment): errors still print; a user's own setting wins.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
