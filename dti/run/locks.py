"""One process at a time per run directory and per samples folder: an exclusive `flock` on `<folder>/.dti.lock`
(released by the OS when the process ends, even by kill -9). Training holds its run directory exclusively;
sampling and scoring hold it shared (several re-scores may read one trained run) and their samples folder
exclusively. A second process says which process holds the folder and stops (exit 2), or waits for it with
`wait_for_lock=true`."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from pathlib import Path

from dti.core.errors import RunInUse

LOCK_FILE = ".dti.lock"


@contextlib.contextmanager
def hold(folder: Path, exclusive: bool = True, wait: bool = False):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies, as for any open()
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise RunInUse("folder", str(folder), f"is in use by {holder}; wait for it to finish, or run with "
                           "wait_for_lock=true to wait") from None
        if exclusive:  # readable by the next process while we hold it
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()} since "
                          f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock

