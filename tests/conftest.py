"""Shared test fixtures and helpers: one torch thread, a free TCP port, a kernel of this Python."""

import socket

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


def write_kernel_of_this_python(root) -> str:
    """A "python3" kernel spec under root/jupyter whose argv starts sys.executable; put root/jupyter
    first on JUPYTER_PATH and Jupyter picks it over any user-level or system "python3" kernel."""
    from ipykernel.kernelspec import write_kernel_spec

    write_kernel_spec(root / "jupyter" / "kernels" / "python3",
                      overrides={"display_name": "Python 3 (equimod_edu tests)"})
    return "python3"


@pytest.fixture
def kernel_of_this_python(tmp_path, monkeypatch):
    """The kernel name of a kernel spec that starts this Python, first on JUPYTER_PATH."""
    name = write_kernel_of_this_python(tmp_path)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return name
