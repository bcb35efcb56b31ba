"""``extract`` across processes: SIGKILL and resume, ``--shard i/N`` parts, two writers on one
entry, and torchrun. Each child is a fresh Python running the tiny built-in CLIP on CPU."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from test_extract import BATCH, SHARD, Counter, N, make_toy, run


@pytest.fixture(scope="module")
def strong():
    from w2sclip.models.strong.openclip import load_strong

    return load_strong("full", device="cpu")


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread, as in the children, so results are bit-identical."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


CHILD = r"""
import os, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from w2sclip.data.manifest import load_manifest
from w2sclip.features.extract import extract
from w2sclip.models.strong.openclip import load_strong

root, cache, shard, sleep, log, batch, size = sys.argv[1:6] + [int(v) for v in sys.argv[6:8]]
strong = load_strong("full", device="cpu")
encode, sleep = strong.model.encode_image, float(sleep)

def slow(x, *a, **k):
    time.sleep(sleep)
    with open(log, "a") as f:
        f.write(f"{os.getpid()} {len(x)}\n")
    return encode(x, *a, **k)

strong.model.encode_image = slow
go = Path(log + ".go")
Path(f"{log}.ready{os.getpid()}").touch()
while sys.argv[8:] and not go.exists():  # optional start line shared by several children
    time.sleep(0.02)
fs = extract(strong, load_manifest(root, "d", "test", "toy"), cache, batch_size=batch, shard_size=size,
             shard=None if shard == "-" else shard, device="cpu", progress=False)
print("RESULT", None if fs is None else fs.features.shape)
"""


def child(tmp_path, root, cache, shard="-", sleep=0.0, start_line=False, log="log"):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = [str(script), root, str(cache), shard, str(sleep), str(tmp_path / log), str(BATCH),
            str(SHARD)] + (["go"] if start_line else [])
    return subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def finish(p, timeout=120):
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, out
    return out


def release_when_ready(tmp_path, procs, log="log", timeout=60):
    t0 = time.time()
    while len(list(tmp_path.glob(f"{log}.ready*"))) < len(procs):
        assert time.time() - t0 < timeout and all(p.poll() is None for p in procs), "children failed to start"
        time.sleep(0.05)
    (tmp_path / f"{log}.go").touch()


def encoded_rows_by_pid(path):
    rows = {}
    for line in path.read_text().split("\n"):
        if line:
            pid, n = line.split()
            rows[int(pid)] = rows.get(int(pid), 0) + int(n)
    return rows


def test_sigkill_midway_loses_no_finished_shard(tmp_path, strong):
    root = make_toy(tmp_path / "data")
    reference = run(strong, root, tmp_path / "ref").features
    cache = tmp_path / "cache"
    p = child(tmp_path, root, cache, sleep=0.15)
    t0 = time.time()
    while len(list(cache.glob("*/shard-*.json"))) < 2:
        assert p.poll() is None and time.time() - t0 < 90, p.stdout.read() if p.poll() is not None else "slow"
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    entry = next(cache.iterdir())
    done = sorted(f.name for f in entry.glob("shard-*.json"))
    assert 2 <= len(done) < N // SHARD and not (entry / "complete").exists()
    stat = {f: os.stat(entry / f).st_ino for f in done}
    with Counter(strong.model) as c:
        fs = run(strong, root, cache)
    assert c.rows == N - len(done) * SHARD  # finished shards were not recomputed
    assert {f: os.stat(entry / f).st_ino for f in done} == stat
    assert np.array_equal(fs.features, reference)


def test_two_parts_in_two_processes_equal_one_process(tmp_path, strong):
    root = make_toy(tmp_path / "data")
    reference = run(strong, root, tmp_path / "ref").features
    procs = [child(tmp_path, root, tmp_path / "cache", shard=f"{i}/2", sleep=0.05, start_line=True)
             for i in range(2)]
    release_when_ready(tmp_path, procs)
    outs = [finish(p) for p in procs]
    assert sum("RESULT (40, 128)" in o for o in outs) >= 1  # the last part merged
    rows = encoded_rows_by_pid(tmp_path / "log")
    assert sorted(rows.values()) == [16, 24]  # shards {0, 2, 4} and {1, 3}, each encoded once
    with Counter(strong.model) as c:
        fs = run(strong, root, tmp_path / "cache")
    assert c.rows == 0 and np.array_equal(fs.features, reference)


def test_two_writers_on_one_entry_split_the_work(tmp_path, strong):
    root = make_toy(tmp_path / "data")
    reference = run(strong, root, tmp_path / "ref").features
    procs = [child(tmp_path, root, tmp_path / "cache", sleep=0.1, start_line=True) for _ in range(2)]
    release_when_ready(tmp_path, procs)
    outs = [finish(p) for p in procs]
    assert all("RESULT (40, 128)" in o for o in outs), outs
    rows = encoded_rows_by_pid(tmp_path / "log")
    assert sum(rows.values()) == N and len(rows) == 2  # both worked, no shard twice
    fs = run(strong, root, tmp_path / "cache")
    assert np.array_equal(fs.features, reference)
    assert not list(fs.path.glob(".*tmp"))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_torchrun_two_ranks_equal_one_process(tmp_path, strong):
    root = make_toy(tmp_path / "data")
    reference = run(strong, root, tmp_path / "ref").features
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    cmd = [shutil.which("torchrun"), "--standalone", "--nproc-per-node", "2", str(script), root,
           str(tmp_path / "cache"), "-", "0", str(tmp_path / "log"), str(BATCH), str(SHARD)]
    out = subprocess.run(cmd, check=False, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("RESULT (40, 128)") == 2  # every rank waits for the merge
    assert sorted(encoded_rows_by_pid(tmp_path / "log").values()) == [16, 24]
    with Counter(strong.model) as c:
        fs = run(strong, root, tmp_path / "cache")
    assert c.rows == 0 and np.array_equal(fs.features, reference)
