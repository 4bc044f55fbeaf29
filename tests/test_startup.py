"""What `imbal train` imports, and the process-wide modes a run works in."""

import subprocess
import sys
from pathlib import Path

QUICKSTART = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")
# Each costs start-up time a CPU run from files on disk does not need. (torch.optim brings in
# torch.compile's front end, ~1-2 s: a library part, kept over the seconds; see README.)
SLOW_IMPORTS = ("torchvision", "imbal.study.sweep", "imbal.study.report", "imbal.bench")


def test_a_cpu_run_is_deterministic_and_leaves_the_other_commands_out(tmp_path):
    """During the run: deterministic algorithms on (warn_only), without the NaN fill of new
    allocations that deterministic mode adds (a speed cost). After it: the process's own
    modes again (off, off, torch's default fill). torchvision and the other commands' modules
    are never imported."""
    code = ("import sys, torch\nfrom imbal.cli import main\n"
            "from imbal.training.trainer import Trainer\n"
            "seen, real = [], Trainer.train_epoch\n"
            "def spy(self, *a, **k):\n"
            "    seen.append((torch.are_deterministic_algorithms_enabled(), "
            "torch.is_deterministic_algorithms_warn_only_enabled(), "
            "torch.utils.deterministic.fill_uninitialized_memory))\n"
            "    return real(self, *a, **k)\n"
            "Trainer.train_epoch = spy\n"
            f"rc = main(['train', {QUICKSTART!r}, '--out', {str(tmp_path / 'r')!r}, "
            "'--quiet', '--set', 'train.epochs=1', '--set', 'train.grad_clip=1.0'])\n"
            f"print(rc, sorted(m for m in {SLOW_IMPORTS!r} if m in sys.modules), seen, "
            "torch.are_deterministic_algorithms_enabled(), "
            "torch.is_deterministic_algorithms_warn_only_enabled(), "
            "torch.utils.deterministic.fill_uninitialized_memory)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "0 [] [(True, True, False)] False False True"
