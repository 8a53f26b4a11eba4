"""The store lock under threads and processes, and leases against another process's gc."""
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from builder.errors import StoreError
from builder.image import oci
from builder.image.store import Store

REPO = Path(__file__).resolve().parents[2]


def test_exclusive_is_exclusive_across_threads_and_reentrant(tmp_path):
    """Issue 7: two threads inside the exclusive section at once, depth -1. Now: never."""
    s = Store(tmp_path)
    inside, most, errors = [0], [0], []
    guard = threading.Lock()

    def work():
        try:
            for _ in range(200):
                with s.lock():
                    with s.lock():  # re-entrant in the same thread
                        with s.lock(exclusive=False):  # an exclusive holder may take it shared
                            with guard:
                                inside[0] += 1
                                most[0] = max(most[0], inside[0])
                            time.sleep(0)
                            with guard:
                                inside[0] -= 1
        except BaseException as exc:  # reported below
            errors.append(exc)
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and most[0] == 1 and inside[0] == 0
    assert not s._lock.held(exclusive=False)


def test_shared_holders_overlap_and_cannot_upgrade(tmp_path):
    s = Store(tmp_path)
    both = threading.Barrier(2, timeout=10)

    def reader():
        with s.lock(exclusive=False):
            both.wait()  # both threads hold the shared lock at once
    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with s.lock(exclusive=False):
        with pytest.raises(StoreError, match="shared"):
            with s.lock():
                pass


_COUNTER = """
import sys, threading
from pathlib import Path
from builder.image.store import Store
s = Store(sys.argv[1])
path = Path(sys.argv[1]) / "counter"
def work():
    for _ in range(50):
        with s.lock():
            n = int(path.read_text()) if path.exists() else 0
            path.write_text(str(n + 1))
ts = [threading.Thread(target=work) for _ in range(4)]
[t.start() for t in ts]
[t.join() for t in ts]
"""


def test_exclusive_across_processes_with_threads(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", _COUNTER, str(tmp_path)], env=env) for _ in range(3)]
    assert [p.wait(120) for p in procs] == [0, 0, 0]
    assert (tmp_path / "counter").read_text() == str(3 * 4 * 50)


_WRITER = """
import sys, time
from builder.image.store import Store
s = Store(sys.argv[1])
print(s.put_bytes(b"written by a running build, no image yet"), flush=True)
sys.stdin.readline()
"""


def test_gc_spares_blobs_of_a_live_process_and_takes_them_after_it_died(tmp_path):
    s = Store(tmp_path)
    mine = s.put_bytes(b"this process's own stray blob")
    p = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], env=dict(os.environ, PYTHONPATH=str(REPO)),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    theirs = p.stdout.readline().strip()
    assert theirs == oci.sha256_digest(b"written by a running build, no image yet")
    assert s.gc() == [mine]  # the live lease protects theirs; our own lease protects nothing from us
    assert s.blob_path(theirs).exists()
    p.kill()
    p.wait()
    assert s.gc() == [theirs]


def test_has_blob_leases_what_it_found(tmp_path):
    """A build that found a cached layer's blob keeps it even if the image holding it goes."""
    code = ("import sys; from builder.image.store import Store; s = Store(sys.argv[1]); "
            "print(s.has_blob(sys.argv[2]), flush=True); sys.stdin.readline()")
    s = Store(tmp_path)
    d = s.put_bytes(b"cached layer")
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), d], env=dict(os.environ, PYTHONPATH=str(REPO)),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "True"
    assert s.gc() == [] and s.blob_path(d).exists()
    p.stdin.close()
    p.wait()
    assert s.gc() == [d]


def test_tmp_dir_is_per_process_and_goes_at_exit(tmp_path):
    code = ("import sys; from builder.image.store import Store; s = Store(sys.argv[1]); "
            "(s.tmp_dir / 'x').write_text('x'); print(s.tmp_dir.name)")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    name = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()
    s = Store(tmp_path)
    assert name and s.tmp_dir.name != name
    assert not (tmp_path / "tmp" / name).exists() and not (tmp_path / "leases" / f"{name}.lease").exists()
