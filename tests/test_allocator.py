"""allocator.py: glibc's malloc thresholds raised through mallopt; nothing done where there is no mallopt."""

import json
import platform

import pytest

from equimod_edu import train as train_module
from equimod_edu.allocator import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, keep_freed_memory
from equimod_edu.train import Trainer


class FakeLibc:
    """Records mallopt calls; answers 1 (accepted) unless told to refuse one parameter."""

    def __init__(self, refuse=None):
        self.calls, self.refuse = [], refuse

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return 0 if param == self.refuse else 1


def test_both_thresholds_are_raised_through_mallopt():
    libc = FakeLibc()
    assert keep_freed_memory(64 << 20, libc=libc) is True
    assert sorted(libc.calls) == sorted([(M_MMAP_THRESHOLD, 64 << 20), (M_TRIM_THRESHOLD, 64 << 20)])


def test_a_refused_value_or_a_c_library_without_mallopt_reports_false():
    assert keep_freed_memory(libc=FakeLibc(refuse=M_TRIM_THRESHOLD)) is False
    assert keep_freed_memory(libc=object()) is False   # no mallopt (macOS, Windows): nothing called


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_this_process_accepts_it_on_glibc():
    assert keep_freed_memory() is True


def test_the_trainer_keeps_freed_memory_on_the_cpu_and_says_so(tmp_path, monkeypatch, tiny_config, tiny_dataset):
    calls = []
    monkeypatch.setattr(train_module, "keep_freed_memory", lambda: calls.append(1) or True)
    trainer = Trainer(tiny_config(tmp_path, max_steps=1), dataset=tiny_dataset())
    trainer.run()
    assert calls == [1] and trainer.freed_memory_kept is True
    assert json.loads((tmp_path / "run" / "environment.json").read_text())["freed_memory_kept"] is True
