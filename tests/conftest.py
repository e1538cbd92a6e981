"""Fixtures every test module may ask for by name, and the skip of `gpu` tests where there is no GPU."""

import os

import matplotlib
import pytest
import torch

# Figures render off-screen in every test, whichever module draws first (the package sets it in
# lit_gpt/measurement/plots.py).
matplotlib.use("Agg")


@pytest.fixture
def one_thread():
    """Tiny matmuls run fastest on one thread, and the suite shares two cores with other processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def small_disk(tmp_path):
    """`small_disk(size)`: a folder on a tmpfs of `size` ("512k", "20m") that fills up for real, unmounted
    afterwards. Tests that need it skip, with the reason, where this machine cannot mount one (not root, no
    mount permission); the same faults are simulated elsewhere by patching a write to raise ENOSPC."""
    import subprocess

    mounted = []

    def make(size: str):
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or 'mount failed'})")
        mounted.append(folder)
        return folder

    yield make
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


# `gpu` tests run on CUDA; GPU_CHECK_DEVICE=cpu rehearses them on the CPU at smaller sizes, as the
# dry run of bench/gpu_check.py does, so they cannot rot between GPU runs.
REHEARSAL_DEVICE = "GPU_CHECK_DEVICE"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available() or os.environ.get(REHEARSAL_DEVICE) == "cpu":
        return
    skip = pytest.mark.skip(
        reason=f"needs a CUDA GPU (torch.cuda.is_available() is False); scripts/gpu_check.sh "
        f"runs it on one, {REHEARSAL_DEVICE}=cpu rehearses it on the CPU"
    )
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def gpu_device() -> torch.device:
    """Where `gpu` tests run: CUDA, or the CPU when rehearsed."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
