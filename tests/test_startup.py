"""What `imbal train` imports: a short run's start-up is mostly imports (see `imbal bench`)."""

import subprocess
import sys
from pathlib import Path

QUICKSTART = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")
# Each costs start-up time a CPU run from files on disk does not need.
SLOW_IMPORTS = ("torch._dynamo", "torch._inductor", "torchvision", "imbal.study.sweep", "imbal.study.report",
                "imbal.bench")


def test_a_cpu_run_is_deterministic_and_never_imports_torch_dynamo(tmp_path):
    """torch.compile's front end costs ~1.5 s of start-up; only train.compile may bring it in.
    Deterministic algorithms are still switched on (warn_only), without the inductor's config.
    torchvision (which imports torch._dynamo itself) and the other commands' modules stay out.
    The NaN fill of new allocations that deterministic mode adds is off (a speed cost)."""
    code = ("import sys, torch\nfrom imbal.cli import main\n"
            f"rc = main(['train', {QUICKSTART!r}, '--out', {str(tmp_path / 'r')!r}, "
            "'--quiet', '--set', 'train.epochs=1', '--set', 'train.grad_clip=1.0'])\n"
            f"print(rc, sorted(m for m in {SLOW_IMPORTS!r} if m in sys.modules), "
            "torch.are_deterministic_algorithms_enabled(), "
            "torch.is_deterministic_algorithms_warn_only_enabled(), "
            "torch.utils.deterministic.fill_uninitialized_memory)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "0 [] True True False"
