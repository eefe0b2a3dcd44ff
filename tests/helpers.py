"""Plain helpers that tests import (`from helpers import ...`), where a fixture does not fit.

Functions that spawned worker processes must import by name, values needed while a test module is collected, and
calls made at the moment of need (a port, just before binding it), and small builders that tests call with
arguments (a seeded generator, random images, a tiny model). The fixtures are in conftest.py.
"""

import functools
import importlib.util
import os
import socket
import sys
from pathlib import Path

import torch

TEACHERS = Path(__file__).resolve().parent.parent / "teachers"

# TrainConfig fields of a tiny run on 16x16 images (narrow heads, 2 epochs, no bar): TrainConfig(..., **TINY).
TINY = dict(augment_overrides={"size": 16}, proj_hidden=32, z_dim=16, y_dim=16, param_embed_dim=8, byol_hidden=32,
            batch_size=16, epochs=2, warmup_epochs=1, log_every=2, progress=False)


@functools.cache
def teachers_solutions():
    """teachers/solutions.py as a module (outside the package).

    The exercise tests run its answers, and parametrize lists need them while the test module is collected.
    """
    spec = importlib.util.spec_from_file_location("teachers_solutions", TEACHERS / "solutions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    """A "python3" kernel spec under root/jupyter whose argv starts sys.executable.

    Put root/jupyter first on JUPYTER_PATH and Jupyter picks it over any user-level or system "python3" kernel.
    The book builder's helper (equimod_edu.book), so the tests and `make book` run the same kernel.
    """
    from equimod_edu.book import write_kernel_of_this_python as write

    return write(root, display_name="Python 3 (equimod_edu tests)")


def gen(seed: int = 0) -> torch.Generator:
    """A CPU generator seeded with seed: every random draw of a test is named by its seed."""
    return torch.Generator().manual_seed(seed)


def random_images(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) uint8 images of uniform noise drawn from gen(seed)."""
    return torch.randint(0, 256, (n, 3, size, size), generator=gen(seed), dtype=torch.uint8)


def tiny_model(equimod: bool = True, seed: int = 0, aug=None, **overrides):
    """An untrained EquiModModel in eval mode (ConvNet, narrow heads: z and y of 16, t embedded in 8).

    Its weights are drawn from torch.manual_seed(seed); aug (default: the synthetic preset) sets param_dim.
    """
    from equimod_edu.augment import AugmentationConfig
    from equimod_edu.models import EquiModModel, ModelConfig

    aug = aug or AugmentationConfig.synthetic()
    torch.manual_seed(seed)
    cfg = ModelConfig(backbone="convnet", equimod=equimod, param_dim=aug.encoded_dim, z_dim=16, proj_hidden=32,
                      y_dim=16, param_embed_dim=8, **overrides)
    return EquiModModel(cfg).eval()


def params_of(model) -> torch.Tensor:
    """Every floating-point tensor of model's state_dict (weights and BatchNorm statistics), flattened into one."""
    return torch.cat([p.detach().flatten() for p in model.state_dict().values() if p.dtype.is_floating_point])
