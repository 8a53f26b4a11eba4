"""snapshots.walked_items: COPY --from's walk as a generator a bounded queue ahead (the streamed
layer's input): the same items as copier.plan_items, in order; an early close stops the walk's
thread; the walk's error reaches the consumer."""
import os
import shutil
import threading
import time

import pytest

from builder.build import copier
from builder.errors import BuildError
from builder.workspace import snapshots


def _plan(root, pattern="/d"):
    return copier.plan_copy(copier.resolve_in_root(root, [pattern]), "/o", None)


def _tree(root):
    for i in range(300):
        d = root / "d" / f"s{i // 30}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_text(str(i))
    os.symlink("s0/f0", root / "d" / "link")


def _walk_threads():
    return [t for t in threading.enumerate() if t.name == "copy-from-walk"]


def test_same_items_in_order(tmp_path):
    _tree(tmp_path)
    plan = _plan(tmp_path)
    ref = []
    copier.plan_items(plan, ref.append)
    assert list(snapshots.walked_items(plan, ahead=8)) == ref and len(ref) == 311


def test_an_early_close_stops_the_walk(tmp_path):
    _tree(tmp_path)
    items = snapshots.walked_items(_plan(tmp_path), ahead=4)
    next(items)
    time.sleep(0.2)  # the walk fills the queue and waits
    items.close()
    assert not _walk_threads()


def test_the_walks_error_reaches_the_consumer(tmp_path):
    _tree(tmp_path)
    plan = _plan(tmp_path)
    shutil.rmtree(tmp_path / "d")  # resolved, then gone: the listing fails
    with pytest.raises(BuildError, match="cannot read directory"):
        list(snapshots.walked_items(plan))
    assert not _walk_threads()
