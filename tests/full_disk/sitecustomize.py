"""Test helper, on PYTHONPATH only for the full-disk study test: with ``EBOMLC_TEST_FULL_DISK=FILE``, the
N-th write of a trial checkpoint (``trainer.pt``) in any process fails as on a full disk, N read from FILE
(counted down across processes under a lock), so exactly one write fails."""
import errno
import fcntl
import os

_COUNTER = os.environ.get("EBOMLC_TEST_FULL_DISK")

if _COUNTER:
    _fsync = os.fsync

    def _full_disk_fsync(fd):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if os.path.basename(target).startswith(".trainer.pt."):
            with open(_COUNTER + ".lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    with open(_COUNTER) as f:
                        left = int(f.read())
                except (OSError, ValueError):
                    left = 0
                if left > 0:
                    with open(_COUNTER, "w") as f:
                        f.write(str(left - 1))
                    if left == 1:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return _fsync(fd)

    os.fsync = _full_disk_fsync
