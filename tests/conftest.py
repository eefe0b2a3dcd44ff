"""Shared test fixtures and helpers: one torch thread, a free TCP port, a kernel of this Python."""

import os
import socket
import sys

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one torch thread beats two that fight other processes for shared cores
    (measured 5x on the 2-core machine). Opt in with pytestmark = pytest.mark.usefixtures("one_thread")."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for gloo rendezvous, JupyterLab)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def leave_process_group() -> None:
    """End a spawned gloo worker once its results are written: a barrier, then exit at once.

    Both ranks pass the barrier only when every collective (the backward's all_gather included) is
    done. Exiting through os._exit then skips the interpreter's finalization, where gloo's worker
    threads still holding tensors were seen to abort the process ("terminate called without an
    active exception", SIGABRT) on a loaded machine, even after destroy_process_group.
    """
    torch.distributed.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def write_kernel_of_this_python(root) -> str:
    """A "python3" kernel spec under root/jupyter whose argv starts sys.executable; put root/jupyter
    first on JUPYTER_PATH and Jupyter picks it over any user-level or system "python3" kernel.
    The book builder's helper (equimod_edu.book), so the tests and `make book` run the same kernel."""
    from equimod_edu.book import write_kernel_of_this_python as write

    return write(root, display_name="Python 3 (equimod_edu tests)")


@pytest.fixture
def kernel_of_this_python(tmp_path, monkeypatch):
    """The kernel name of a kernel spec that starts this Python, first on JUPYTER_PATH."""
    name = write_kernel_of_this_python(tmp_path)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return name


def tiny_dataset(n=64, size=16, seed=0):
    """An ImageDataset of n random (3, size, size) images, 4 classes: a training run in a second."""
    from equimod_edu.dataset import ImageDataset

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return ImageDataset(images, {"label": torch.arange(n) % 4}, {"label": ["a", "b", "c", "d"]}, "label")


def tiny_config(tmp_path, **overrides):
    """A TrainConfig for tiny_dataset: ConvNet, narrow heads, 2 epochs of 4 steps, run folder tmp_path/run."""
    from equimod_edu.config import TrainConfig

    base = dict(dataset="synthetic", augment="synthetic", augment_overrides={"size": 16}, backbone="convnet",
                proj_hidden=32, z_dim=16, y_dim=16, param_embed_dim=8, byol_hidden=32,
                batch_size=16, epochs=2, warmup_epochs=1, lr=0.5, device="cpu", log_every=2,
                checkpoint_every=2, out_dir=str(tmp_path / "run"), progress=False)
    return TrainConfig(**{**base, **overrides})
