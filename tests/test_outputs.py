"""Output files: all or nothing on every interruption, the umask respected, odd destinations refused."""

import os
import signal
import stat
import subprocess
import sys
import time

import pytest
import torch

from weightcodec.atomic import TMP_SUFFIX, atomic_write, sweep_leftovers
from weightcodec.errors import OutputError


@pytest.mark.parametrize("umask, mode", [(0o027, 0o640), (0o002, 0o664)])
def test_new_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "a.bin", [b"abc"])
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.bin").st_mode) == mode


def test_a_symlink_is_written_through(tmp_path):
    target = tmp_path / "real.bin"
    target.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(target)
    atomic_write(link, [b"new"])
    assert link.is_symlink() and target.read_bytes() == b"new"


def test_non_regular_destinations_are_refused(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="not a regular file .*FIFO"):
        atomic_write(fifo, [b"x"])
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    with pytest.raises(OutputError, match="is a directory"):
        atomic_write(tmp_path, [b"x"])
    with pytest.raises(OutputError, match="character device"):
        atomic_write("/dev/null", [b"x"])
    with pytest.raises(OutputError, match="exists"):
        (tmp_path / "kept").write_bytes(b"1")
        atomic_write(tmp_path / "kept", [b"2"], overwrite=False)
    assert (tmp_path / "kept").read_bytes() == b"1"


def test_leftovers_of_killed_writers_are_swept_by_the_next_write(tmp_path):
    # a SIGKILLed writer on a filesystem without O_TMPFILE leaves a named temporary: fake one
    # whose process is gone, one of a live process, and an unrelated dotfile
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = tmp_path / f".out.wcodec.{dead.pid}.0123abcd{TMP_SUFFIX}"
    live = tmp_path / f".out.wcodec.{os.getppid()}.89abcdef{TMP_SUFFIX}"
    other = tmp_path / ".out.wcodec.notes"
    for path in (gone, live, other):
        path.write_bytes(b"partial")
    atomic_write(tmp_path / "out.wcodec", [b"complete"])
    assert not gone.exists() and live.exists() and other.exists()
    assert sweep_leftovers(tmp_path / "out.wcodec") == []


def _big_model(path):
    torch.manual_seed(0)
    torch.save({f"l{i}.weight": torch.randn(512, 512) * 0.05 for i in range(48)}, path)


def _wait_until_encoding(proc, timeout=60.0):
    """Until libx265 is loaded in the child or one of its pool workers (imports are over, the first
    layer is being coded)."""
    from bench.common import process_tree

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for pid in process_tree(proc.pid):
            try:
                with open(f"/proc/{pid}/maps") as maps:
                    if "x265" in maps.read():
                        time.sleep(0.2)
                        return
            except OSError:
                pass
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_signal_during_encode_leaves_nothing_behind(tmp_path, sig):
    model = tmp_path / "model.pt"
    _big_model(model)
    before = set(os.listdir(tmp_path))
    # --effort max: slow enough that the signal arrives while layers are being coded
    # the child starts with default signal dispositions: a SIGINT ignored by whatever started the
    # suite (a background job, CI) would be inherited, and Python then keeps ignoring Ctrl-C
    proc = subprocess.Popen([sys.executable, "-m", "weightcodec.cli", "encode", str(model), "-q", "--no-verify",
                             "--effort", "max"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_until_encoding(proc)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert set(os.listdir(tmp_path)) == before  # no .wcodec, no temporary
    if sig != signal.SIGKILL:
        assert proc.returncode == 130 and "nothing was written" in err and "Traceback" not in err
