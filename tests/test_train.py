"""The trainer: optimiser and schedule, config checks, run files, checkpoints, resume, failures."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from helpers import free_port, leave_process_group, params_of
from torch.utils._python_dispatch import TorchDispatchMode

from equimod_edu import objectives as objectives_module
from equimod_edu import train as train_module
from equimod_edu.checkpoint import load_checkpoint, load_model
from equimod_edu.config import TrainConfig
from equimod_edu.run_folder import NonFiniteLossError
from equimod_edu.train import Trainer

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- a bad configuration stops the Trainer at once
@pytest.mark.parametrize("field,value", [
    ("lr", -1.0), ("batch_size", 0), ("epochs", 0), ("warmup_epochs", 5), ("optimizer", "adam"),
    ("precision", "fp8"), ("dataset", "mnist"), ("temperature_equi", 0.0), ("lam", -1.0),
    ("device", "tpu"), ("max_steps", 0), ("train_subset", -3), ("param_groups", ("crop", "colour")),
])
def test_invalid_config_is_rejected_before_any_work(tmp_path, monkeypatch, field, value, tiny_config):
    def no_data(*args, **kwargs):
        raise AssertionError("the dataset was loaded before the config was checked")

    monkeypatch.setattr(train_module, "load_dataset", no_data)
    cfg = tiny_config(tmp_path, **{field: value})
    with pytest.raises(ValueError, match=field):
        Trainer(cfg)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- a run
@pytest.mark.parametrize("base,equimod", [("simclr", True), ("simclr", False), ("byol", True)])
def test_a_short_run_writes_config_environment_metrics_and_a_checkpoint(tmp_path, base, equimod,
                                                                        tiny_config, tiny_dataset):
    cfg = tiny_config(tmp_path, base=base, equimod=equimod)
    seen = []
    trainer = Trainer(cfg, dataset=tiny_dataset())
    trainer.add_callback("on_log", lambda t, m: seen.append(m["step"]))
    epochs = trainer.run()
    run = Path(cfg.out_dir)
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert seen == [2, 4, 6, 8]
    assert json.loads((run / "config.json").read_text())["base"] == base
    env = json.loads((run / "environment.json").read_text())
    assert env["torch"] == torch.__version__ and env["total_steps"] == 8
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and {"loss", "inv", "equi", "lr", "images_per_s", "step"} <= set(lines[0])
    assert ("gain" in lines[0]) == equimod
    assert all(math.isfinite(line["loss"]) for line in lines)
    state = torch.load(run / "checkpoint.pt", weights_only=True)  # loads safely
    assert {"model", "optimizer", "schedule", "step", "rng", "config", "metrics", "version"} <= set(state)
    assert state["step"] == 8 and state["stop_reason"] == "finished"
    model, saved_cfg = load_model(run)
    assert saved_cfg == cfg and not model.training
    if base == "byol":  # the EMA moved the target away from its initial copy of the online network
        assert not torch.equal(model.target_projector.layers[0].weight, model.projector.layers[0].weight)


def test_the_loss_falls_on_a_learnable_problem(tmp_path, tiny_config):
    from equimod_edu.synthetic import make_synthetic
    cfg = tiny_config(tmp_path, epochs=10, warmup_epochs=1, log_every=4, optimizer="adamw", lr=3e-3)
    trainer = Trainer(cfg, dataset=make_synthetic(64, size=16, seed=0))  # crops of noise share nothing
    epochs = trainer.run()
    assert epochs[-1]["inv"] < epochs[0]["inv"]
    assert epochs[-1]["equi"] < epochs[0]["equi"]


def test_resume_reproduces_the_uninterrupted_run(tmp_path, tiny_config, tiny_dataset):
    data = tiny_dataset()
    straight = Trainer(tiny_config(tmp_path / "a"), dataset=data)
    straight.run()
    first = Trainer(tiny_config(tmp_path / "b", max_steps=3), dataset=data)
    first.run()
    assert load_checkpoint(tmp_path / "b" / "run")["step"] == 3
    resumed = Trainer(tiny_config(tmp_path / "b"), dataset=data, resume=True)
    assert resumed.step == 3
    resumed.run()
    assert resumed.step == straight.step == 8
    assert torch.equal(params_of(resumed.model), params_of(straight.model))
    with pytest.raises(ValueError, match="trained with seed"):
        Trainer(tiny_config(tmp_path / "b", seed=1), dataset=data, resume=True)


def test_metrics_hold_each_step_once_after_a_resume(tmp_path, tiny_config, tiny_dataset):
    """A run that logged past its last checkpoint (a kill) and resumes replays those steps.

    The log keeps only the checkpoint's steps and then holds every step exactly once, as an uninterrupted run.
    """
    data = tiny_dataset()
    first = Trainer(tiny_config(tmp_path, log_every=1, checkpoint_every=4, max_steps=4), dataset=data)
    first.run()
    log = Path(first.cfg.out_dir) / "metrics.jsonl"
    with open(log, "a") as f:  # what a kill after step 6 leaves: steps 5 and 6 logged, the checkpoint at 4
        f.write(json.dumps({"step": 5, "loss": 1.0}) + "\n" + json.dumps({"step": 6, "loss": 1.0}) + "\n{\"st")
    Trainer(tiny_config(tmp_path, log_every=1, checkpoint_every=4), dataset=data, resume=True).run()
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(1, 9))


def test_the_default_callbacks_are_the_log_and_the_bar_and_user_callbacks_see_every_event(tmp_path,
                                                                                          tiny_config, tiny_dataset):
    seen = []

    class EveryEvent:  # the one callback shape: attach(trainer) registers fn(trainer, metrics) per event
        def attach(self, trainer):
            for event in train_module.EVENTS:
                trainer.add_callback(event, lambda t, m, e=event: seen.append(e))

    trainer = Trainer(tiny_config(tmp_path, progress=True), dataset=tiny_dataset(), callbacks=[EveryEvent()])
    owners = {type(getattr(fn, "__self__", None)).__name__ for fns in trainer.callbacks.values() for fn in fns}
    assert {"MetricsLog", "ProgressBar"} <= owners
    trainer.run()
    assert seen[0] == "on_train_begin" and seen[-1] == "on_train_end"
    assert seen.count("on_log") == 4 and seen.count("on_epoch_end") == 2
    with pytest.raises(ValueError, match="unknown event"):
        trainer.add_callback("on_batch", lambda t, m: None)


def test_both_data_paths_give_views_and_the_same_seeds_give_the_same_views(tmp_path, tiny_config, tiny_dataset):
    trainer = Trainer(tiny_config(tmp_path), dataset=tiny_dataset())
    views = trainer.next_batch(3)
    assert views.x_1.shape == (16, 3, 16, 16) and len(views.params_1) == 16
    again = trainer.next_batch(3)
    assert torch.equal(views.x_2, again.x_2) and torch.equal(views.params_2.crop, again.params_2.crop)
    assert not torch.equal(trainer.next_batch(4).x_1, views.x_1)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, tiny_config, tiny_dataset):
    real = objectives_module.equimod_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        losses = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= 4:  # from the 4th step on, the loss is NaN
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(objectives_module, "equimod_loss", poisoned)
    cfg = tiny_config(tmp_path, log_every=1, checkpoint_every=2)
    trainer = Trainer(cfg, dataset=tiny_dataset())
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        trainer.run()
    state = load_checkpoint(cfg.out_dir)
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.dtype.is_floating_point)


# ---------------------------------------------------------------- interruption (real processes)
CLI_ARGS = ["--preset", "cpu-live", "--train-subset", "64", "--batch-size", "16", "--epochs", "50",
            "--augment-overrides", "size=16", "--proj-hidden", "32", "--no-progress"]


def _cli_env():
    """Environment for a CLI subprocess; the synthetic set is built (and cached) here first, once."""
    from equimod_edu import data
    data.synthetic("train")
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _launch(args, env):
    return subprocess.Popen([sys.executable, "-m", "equimod_edu.cli", "train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(path: Path, proc, timeout=120.0):
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"training exited early:\n{proc.stdout.read()}")
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_save_a_checkpoint_and_exit_cleanly(tmp_path, sig):
    env = _cli_env()
    out = tmp_path / "run"
    proc = _launch([*CLI_ARGS, "--dataset", "synthetic", "--out", str(out), "--log-every", "1"], env)
    _wait_for(out / "metrics.jsonl", proc)
    proc.send_signal(sig)
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, text
    assert f"interrupted by {sig.name}" in text and "Traceback" not in text
    state = load_checkpoint(out)
    assert 1 <= state["step"] < 200 and state["stop_reason"].startswith("interrupted")


def test_kill_9_leaves_a_loadable_checkpoint_and_resume_matches(tmp_path):
    env = _cli_env()
    out = tmp_path / "run"
    args = [*CLI_ARGS, "--dataset", "synthetic", "--out", str(out), "--checkpoint-every", "1", "--max-steps", "6"]
    proc = _launch(args, env)
    _wait_for(out / "checkpoint.pt", proc)
    time.sleep(0.3)
    proc.kill()  # SIGKILL: no handler runs; only the atomic rename protects the file
    proc.wait()
    killed_at = load_checkpoint(out)["step"]
    assert killed_at >= 1
    done = subprocess.run([sys.executable, "-m", "equimod_edu.cli", "train", "--out", str(out), "--resume"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert load_checkpoint(out)["step"] == 6

    straight_args = [a if a != str(out) else str(tmp_path / "straight") for a in args]
    subprocess.run([sys.executable, "-m", "equimod_edu.cli", "train", *straight_args], env=env,
                   check=True, capture_output=True, timeout=300)
    a = load_checkpoint(out)["model"]
    b = load_checkpoint(tmp_path / "straight")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a), f"resumed run (killed at step {killed_at}) differs"


# ---------------------------------------------------------------- several processes (gloo)
def _one_step(trainer: Trainer) -> tuple[float, torch.Tensor]:
    """One training step with BatchNorm on fixed statistics (see test docstring)."""
    trainer.model.eval()
    images = trainer.data.images[trainer.batch_indices(0)[0]]
    metrics = trainer.train_step(0, trainer.make_batch(images, 0))
    return float(metrics["loss"]), params_of(trainer.model)


def _ddp_worker(rank, world, port, cfg_dict, data, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    trainer = Trainer(TrainConfig.from_dict(cfg_dict), dataset=data)
    loss, params = _one_step(trainer)
    mean_loss = torch.tensor(loss)
    torch.distributed.all_reduce(mean_loss)
    results[rank] = (float(mean_loss) / world, params)
    leave_process_group()


@pytest.mark.parametrize("base", ["simclr", "byol"])
def test_two_processes_equal_one_process_on_the_same_global_batch(tmp_path, base, tiny_config, tiny_dataset):
    """2 gloo processes x 8 images == 1 process x 16 images: same loss, same updated parameters.

    BatchNorm couples the images of one process, and SyncBatchNorm needs CUDA, so here BatchNorm
    runs on fixed statistics (eval mode): what is checked is everything else DDP must get right,
    the sharded batch and augmentations, the negatives gathered across processes with gradients,
    and the averaged gradients.
    """
    data = tiny_dataset(32)
    cfg = tiny_config(tmp_path, base=base, optimizer="sgd", lr=0.1)
    single_loss, single_params = _one_step(Trainer(cfg, dataset=data))
    results = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(2, free_port(), cfg.to_dict(), data, results), nprocs=2, join=True)
    for rank in (0, 1):
        loss, params = results[rank]
        assert loss == pytest.approx(single_loss, rel=1e-5)
        assert torch.allclose(params, single_params, atol=1e-6)


def test_torchrun_launch_on_cpu(tmp_path):
    env = _cli_env()
    out = tmp_path / "ddp"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(free_port()),
         "-m", "equimod_edu.cli", "train", *CLI_ARGS, "--dataset", "synthetic", "--out", str(out), "--max-steps", "3"],
        env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    state = load_checkpoint(out)
    assert state["step"] == 3
    assert json.loads((out / "environment.json").read_text())["world_size"] == 2


def _workers_of(launcher_pid: int) -> dict[int, int]:
    """LOCAL_RANK -> pid of the worker processes under a torchrun launcher (Linux /proc)."""
    workers, parents = {}, [launcher_pid]
    while parents:  # walk the launcher's descendants
        parent = parents.pop()
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        for pid in map(int, children):
            parents.append(pid)
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            rank = [e.split(b"=", 1)[1] for e in environ if e.startswith(b"LOCAL_RANK=")]
            if rank:
                workers[int(rank[0])] = pid
    return workers


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes through /proc")
def test_sigterm_to_one_rank_stops_both_at_the_same_step_and_the_run_resumes_exactly(tmp_path):
    """Two gloo processes; SIGTERM reaches rank 1 only.

    The ranks agree at each log line, so both stop
    after the same step (else one would wait in DDP forever), rank 0 writes the checkpoint, and the
    resumed run ends with the parameters of an uninterrupted one.
    """
    env = {**_cli_env(), "OMP_NUM_THREADS": "1"}
    args = [*CLI_ARGS, "--dataset", "synthetic", "--log-every", "2", "--checkpoint-every", "1000", "--max-steps", "400"]

    def torchrun(out, *extra, **popen):
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
                   str(free_port()), "-m", "equimod_edu.cli", "train", *args, "--out", str(out), *extra]
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                **popen)

    out = tmp_path / "run"
    launcher = torchrun(out)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text().count("\n") >= 2:
        assert launcher.poll() is None and time.time() < deadline, launcher.stdout.read()
        time.sleep(0.1)
    workers = _workers_of(launcher.pid)
    assert set(workers) == {0, 1}, workers
    os.kill(workers[1], signal.SIGTERM)
    text, _ = launcher.communicate(timeout=120)  # a hang here: the ranks stopped at different steps
    assert launcher.returncode == 0, text[-3000:]
    state = load_checkpoint(out)
    stopped = state["step"]
    assert 2 <= stopped < 400 and stopped % 2 == 0 and "another process was signalled" in state["stop_reason"]
    resumed = torchrun(out, "--resume", "--max-steps", str(stopped + 6))
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()[-3000:]
    straight = torchrun(tmp_path / "straight", "--max-steps", str(stopped + 6))
    assert straight.wait(timeout=300) == 0, straight.stdout.read()[-3000:]
    a, b = load_checkpoint(out)["model"], load_checkpoint(tmp_path / "straight")["model"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


# ---------------------------------------------------------------- no host synchronisation in a step
class HostSyncs(TorchDispatchMode):
    """Records every op of a block that would block the host on CUDA.

    Reading a value (`.item()`,
    `float()`, `bool()`: aten._local_scalar_dense), data-dependent shapes (nonzero, masked_select,
    boolean-mask indexing), and tensors made from host data inside the block (aten.lift_fresh:
    torch.tensor(...) of Python values, a host-to-device copy on CUDA).
    """

    SYNCING = {"_local_scalar_dense", "nonzero", "masked_select", "lift_fresh", "lift_fresh_copy", "is_nonzero"}

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in self.SYNCING:
            self.ops.append(name)
        if name in ("index", "index_put", "index_put_") and any(
                torch.is_tensor(i) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else ()) or ()):
            self.ops.append(f"{name} with a boolean mask")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("base", ["simclr", "byol"])
def test_a_training_step_on_the_cuda_path_makes_no_host_synchronisation(tmp_path, monkeypatch, base,
                                                                        tiny_config, tiny_dataset):
    """A training step on the CUDA path, run on the CPU, calls nothing that would sync the host.

    The batch gather, augmentation (its CUDA path forced, augment_cuda.CudaAugment: every op on every
    image, selected with torch.where), forward, loss, backward, LARS and the BYOL EMA, under bf16 autocast
    and channels_last.
    Copies of existing host tensors cannot be seen on a CPU (they are no-ops there): the normalisation
    and encoding statistics and the epoch's order are made once per device for that reason, and
    benchmarks/gpu_check.sh counts every sync with torch.cuda.set_sync_debug_mode on a GPU.
    """
    from equimod_edu.augment_cuda import CudaAugment

    cfg = tiny_config(tmp_path, base=base, precision="bf16", optimizer="lars", channels_last=True,
                      augment_overrides={"size": 16, "blur_p": 0.5, "solarize_p": 0.3, "original_crop": 0.875})
    trainer = Trainer(cfg, dataset=tiny_dataset())
    trainer.augmenter = CudaAugment(trainer.aug, "cpu")  # what augmenter_for gives on a CUDA device
    trainer.model.train()
    trainer.train_step(0, trainer.next_batch(0))  # warm-up: per-device caches, the epoch's order
    with HostSyncs() as syncs:
        metrics = trainer.train_step(1, trainer.next_batch(1))
    assert syncs.ops == [], f"host synchronisations in one step: {syncs.ops}"
    assert math.isfinite(float(metrics["loss"]))


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_on_a_cpu_with_bf16_instructions_only_and_says_so(tmp_path, monkeypatch, native,
                                                                                  tiny_config, tiny_dataset):
    """``precision="auto"``: bf16 autocast where the CPU computes bf16 natively, float32 where it would emulate it.

    The choice and what the CPU offers are in environment.json; the weights stay float32 either way, and
    "fp32" / "bf16" are obeyed whatever the CPU.
    """
    monkeypatch.setattr(train_module, "cpu_has_native_bf16", lambda: native)
    assert train_module.native_bf16(torch.device("cpu")) is native
    assert train_module.native_bf16(torch.device("cuda")) is True
    trainer = Trainer(tiny_config(tmp_path, precision="auto", max_steps=1), dataset=tiny_dataset())
    assert trainer.bf16 is native
    trainer.run()
    env = json.loads((tmp_path / "run" / "environment.json").read_text())
    assert env["bf16"] is native and env["cpu_native_bf16"] is native
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    for precision, bf16 in (("fp32", False), ("bf16", True)):
        forced = Trainer(tiny_config(tmp_path / precision, precision=precision), dataset=tiny_dataset())
        assert forced.bf16 is bf16
