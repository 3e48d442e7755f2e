"""What a run needs whatever it runs (a search or a retraining): its directory with one
writer, atomic checkpoints that must be finite, and the multi-process set-up.  ``search/``
and ``train/`` both build on it; it imports neither."""

from .checkpoint import CheckpointError, first_nonfinite, load_checkpoint, save_checkpoint
from .distributed import DistContext
from .run_dir import RunDir, RunDirBusy, RunDirError, read_metrics

__all__ = ["CheckpointError", "DistContext", "RunDir", "RunDirBusy", "RunDirError", "first_nonfinite", "load_checkpoint",
           "read_metrics", "save_checkpoint"]
