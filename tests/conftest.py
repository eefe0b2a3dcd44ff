"""Shared test fixtures and the opt-in of slow and browser tests.

The fixtures: one torch thread, a kernel of this Python, a tiny dataset and training config, a scratch
working folder, 16x16 shapes, the explorers' images and model panels. Plain helpers are in helpers.py.

Tests marked `slow` or `browser` are skipped by default on a laptop, for a quick loop; they run with
`--run-slow`, with EQUIMOD_ALL_TESTS=1 or under CI=true. `make test` and `.ci/run` run them all; `make
test-fast` is the quick loop.
"""

import os

# Under pytest-xdist (`make test`: one worker per core), each worker and what it starts (notebook
# kernels, spawned trainings) computes with one thread: two workers of two OpenMP threads each on two
# cores made every small op wait for a descheduled thread (a fast-mode notebook ran 4x slower).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import tiny_model, write_kernel_of_this_python  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

OPT_IN_MARKERS = ("slow", "browser")


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true",
                     help="also run the tests marked slow or browser (make test and CI run them all)")


def runs_every_test(config) -> bool:
    """Whether this session runs the slow and browser tests too."""
    return (config.getoption("--run-slow") or os.environ.get("EQUIMOD_ALL_TESTS") == "1"
            or os.environ.get("CI", "").lower() in ("1", "true", "yes"))


def pytest_collection_modifyitems(config, items):
    if runs_every_test(config):
        return
    skip = pytest.mark.skip(reason="slow or browser test: run it with --run-slow or EQUIMOD_ALL_TESTS=1 "
                                   "(make test and CI run every test)")
    for item in items:
        if any(marker in item.keywords for marker in OPT_IN_MARKERS):
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one torch thread beats two that fight other processes for shared cores.

    Measured 5x on the 2-core machine. Opt in with pytestmark = pytest.mark.usefixtures("one_thread").
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def kernel_of_this_python(tmp_path, monkeypatch):
    """The kernel name of a kernel spec that starts this Python, first on JUPYTER_PATH."""
    name = write_kernel_of_this_python(tmp_path)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return name


@pytest.fixture
def scratch_working_folder(tmp_path, monkeypatch):
    """tmp_path as the working folder: what a check records in runs/ goes there, never in the repository."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _tiny_dataset(n=64, size=16, seed=0):
    """An ImageDataset of n random (3, size, size) images, 4 classes: a training run in a second."""
    from equimod_edu.dataset import ImageDataset

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return ImageDataset(images, {"label": torch.arange(n) % 4}, {"label": ["a", "b", "c", "d"]}, "label")


def _tiny_config(folder, **overrides):
    """A TrainConfig for tiny_dataset: ConvNet, narrow heads, 2 epochs of 4 steps, float32, run folder folder/run."""
    from equimod_edu.config import TrainConfig

    base = dict(dataset="synthetic", augment="synthetic", augment_overrides={"size": 16}, backbone="convnet",
                proj_hidden=32, z_dim=16, y_dim=16, param_embed_dim=8, byol_hidden=32,
                batch_size=16, epochs=2, warmup_epochs=1, lr=0.5, device="cpu", log_every=2,
                checkpoint_every=2, out_dir=str(folder / "run"), progress=False,
                precision="fp32")  # the same numbers on every CPU ("auto" is bf16 where the CPU has it)
    return TrainConfig(**{**base, **overrides})


@pytest.fixture
def tiny_dataset():
    """A builder: ``tiny_dataset(n=64, size=16, seed=0)``, n random (3, size, size) uint8 images, 4 classes."""
    return _tiny_dataset


@pytest.fixture
def tiny_config():
    """A builder: ``tiny_config(folder, **overrides)``, a TrainConfig for tiny_dataset in folder/run.

    ConvNet, narrow heads, 2 epochs of 4 steps, on the CPU.
    """
    return _tiny_config


@pytest.fixture(scope="module")
def shapes16():
    """96 synthetic images of 16x16 (seed 3), 8 shape classes: the supervised and comparison runs' data."""
    from equimod_edu.synthetic import make_synthetic

    return make_synthetic(96, size=16, seed=3)


@pytest.fixture(scope="module")
def images():
    """8 synthetic images (8, 3, 32, 32) uint8, the explorers' and figures' input."""
    from equimod_edu.synthetic import make_synthetic

    return make_synthetic(8, size=32).images


@pytest.fixture(scope="module")
def models(images):
    """{"SimCLR": Panel(baseline, post-hoc predictor), "EquiMod": Panel(model)}, as the notebooks pass them.

    Tiny untrained models (helpers.tiny_model), the post-hoc predictor fitted for one epoch on images.
    """
    from equimod_edu.augment import AugmentationConfig
    from equimod_edu.equivariance import Panel, fit_posthoc_predictor

    simclr = tiny_model(equimod=False, seed=1)
    posthoc = fit_posthoc_predictor(simclr, images, AugmentationConfig.synthetic(), epochs=1, pairs=1, embed_dim=8,
                                    batch_size=8)
    return {"SimCLR": Panel(simclr, posthoc), "EquiMod": Panel(tiny_model())}
