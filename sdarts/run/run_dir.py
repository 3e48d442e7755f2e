"""The files of one search run, and nothing else.

::

    RUN_DIR/config.json     every resolved setting, versions, device and backend
    RUN_DIR/metrics.jsonl   one JSON object per finished epoch
    RUN_DIR/checkpoint.pt   the state after the last finished epoch (written atomically)
    RUN_DIR/genotype.json   the derived architecture, when the search has finished
    RUN_DIR/.lock           held (flock) by the one process writing the run; holds its PID

A run directory has one writer: :meth:`RunDir.acquire` takes an exclusive lock that the
kernel releases when the process ends in any way (kill -9 included), so a second run into
the same directory, or a ``--resume`` while the first is alive, fails at once.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from .checkpoint import load_checkpoint, save_checkpoint


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` through a temporary file: a reader sees the old or the new
    text, never a part; RunDirError (the old file intact) if it cannot be written."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise RunDirError(f"cannot write {path} ({_reason(err)})") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as err:  # a full disk: the previous version of the file stays
        os.unlink(tmp)
        raise RunDirError(f"cannot write {path} ({_reason(err)}); its previous version is intact") from None
    except BaseException:
        os.unlink(tmp)
        raise



def read_metrics(path: os.PathLike) -> List[dict]:
    """The records of a ``metrics.jsonl`` (one JSON object per line), in order."""
    records = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {number} is not JSON ({err.msg})") from None
    return records


class RunDirError(RuntimeError):
    """The run directory cannot be created, written or owned (one line, for the user)."""


class RunDirBusy(RunDirError):
    """Another live process owns the run directory."""


def _reason(err: OSError) -> str:
    return err.strerror or type(err).__name__


class RunDir:
    def __init__(self, path: os.PathLike):
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.metrics = self.path / "metrics.jsonl"
        self.checkpoint = self.path / "checkpoint.pt"
        self.genotype = self.path / "genotype.json"
        self.lock_file = self.path / ".lock"
        self._lock_fd: Optional[int] = None

    def create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise RunDirError(f"{self.path} exists and is not a directory") from None
        except OSError as err:
            raise RunDirError(f"cannot create the run directory {self.path} ({_reason(err)})") from None

    # -- one writer ----------------------------------------------------------------------

    def acquire(self) -> None:
        """Create the directory if needed and own it for this process's life.

        Raises RunDirBusy (naming the holder's PID) if another process owns it, RunDirError if
        it cannot be created or written.  Idempotent within one process."""
        if self._lock_fd is not None:
            return
        self.create()
        try:
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunDirError(f"cannot write in the run directory {self.path} ({_reason(err)})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise RunDirBusy(f"run directory {self.path} is in use by another run (PID {holder}); wait for it to end "
                                 "or choose another directory") from None
            raise RunDirError(f"cannot lock the run directory {self.path} ({_reason(err)})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def release(self) -> None:
        """Give the directory up (the lock file stays: removing it would race a new owner)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    def __enter__(self) -> "RunDir":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def remove_stale_temp_files(self) -> List[Path]:
        """Delete the temporary files of writes a killed process left behind (``.NAME-*.tmp``).
        Only the owner may call this: a live writer's temporary file would go too."""
        if self._lock_fd is None:
            raise RuntimeError("remove_stale_temp_files needs the run directory's lock (acquire() first)")
        removed = []
        for tmp in self.path.glob(".*.tmp"):
            try:
                tmp.unlink()
                removed.append(tmp)
            except FileNotFoundError:
                pass
        return removed

    def write_config(self, config: Dict[str, Any]) -> None:
        write_text_atomic(self.config, json.dumps(config, indent=2, sort_keys=True) + "\n")

    def read_config(self) -> Dict[str, Any]:
        with open(self.config) as f:
            return json.load(f)

    def append_metrics(self, record: Dict[str, Any]) -> None:
        try:
            with open(self.metrics, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as err:  # the checkpoint holds the record: --resume rewrites the file from it
            raise RunDirError(f"cannot write {self.metrics} ({_reason(err)}); the checkpoint holds this epoch, "
                              "--resume rewrites the file") from None

    def rewrite_metrics(self, records: Iterable[Dict[str, Any]]) -> None:
        """Replace metrics.jsonl by ``records`` (on resume: exactly the checkpoint's epochs)."""
        write_text_atomic(self.metrics, "".join(json.dumps(r) + "\n" for r in records))

    def read_metrics(self):
        return read_metrics(self.metrics)

    def save_checkpoint(self, state: Dict[str, Any]) -> None:
        save_checkpoint(state, self.checkpoint)

    def load_checkpoint(self) -> Dict[str, Any]:
        return load_checkpoint(self.checkpoint)

    def write_genotype(self, data: Dict[str, Any]) -> None:
        write_text_atomic(self.genotype, json.dumps(data, indent=2) + "\n")
