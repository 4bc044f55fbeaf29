"""What a sweep prints and writes about itself: the run list of a dry run, and the summary
(summary.json) at the end."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from imbal.study.sweep import Sweep


def format_override(key: str, value: Any) -> str:
    """`key=value` with the value written as one line of YAML, so load_config parses it back."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30, sort_keys=False).strip()
    if text.endswith("\n..."):  # plain scalars get a YAML document-end marker
        text = text[: -len("\n...")]
    return f"{key}={text}"


def list_runs(sweep: Sweep, jobs: list[dict[str, Any]], skipped: list[str], say) -> None:
    labels = {r.label for r in sweep.runs}
    say(f"sweep '{sweep.name}': {len(sweep.runs)} runs ({len(labels)} configurations) -> "
        f"{sweep.out}")
    say(f"base: {sweep.base}")
    if sweep.imports:
        say("imports: " + " ".join(sweep.imports))
    if sweep.common:
        say("common: " + " ".join(format_override(k, v) for k, v in sweep.common.items()))
    width = max(len(r.name) for r in sweep.runs)
    for r in sweep.runs:
        items = [format_override(k, v) for k, v in r.overrides.items()]
        items += [f"seeds.data={r.seeds['data']}", f"seeds.train={r.seeds['train']}"]
        mark = "  (complete, skipped)" if r.name in skipped else ""
        say(f"  {r.name:<{width}}  {' '.join(items)}{mark}")
    say(f"{len(jobs)} to run, {len(skipped)} complete")


def summarise(sweep: Sweep, outcomes: list[dict[str, Any]], skipped: list[str], wall: float,
              how: str, say, workers: int | None = None) -> dict[str, Any]:
    done = [o["name"] for o in outcomes if o["status"] == "done"]
    bad = [o for o in outcomes if o["status"] != "done"]
    say(f"sweep '{sweep.name}' finished in {wall:.1f} s ({how}): {len(done)} done, "
        f"{len(skipped)} skipped (complete), {len(bad)} failed")
    if done:
        say("  done: " + ", ".join(done))
    if skipped:
        say("  skipped: " + ", ".join(skipped))
    for o in bad:
        say(f"  FAILED {o['name']}: {o.get('error')}  ({sweep.out / o['name'] / 'error.txt'})")
    say(f"report: imbal report {sweep.out}")
    summary = {"name": sweep.name, "how": how, "wall_time_s": round(wall, 2), "done": done,
               "skipped": skipped, "failed": [{"name": o["name"], "error": o.get("error")}
                                              for o in bad],
               "workers": workers,
               "slots": {o["name"]: o["slot"] for o in outcomes if o.get("slot")}}
    (sweep.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def eta(elapsed: float, finished: int, total: int) -> str:
    """'  ETA 3m20s' for what is left, at the pace so far (runs end in waves of workers)."""
    if finished >= total or finished == 0:
        return ""
    left = round(elapsed / finished * (total - finished))
    if left >= 3600:
        return f"  ETA {left // 3600}h{left // 60 % 60:02d}m"
    return f"  ETA {left // 60}m{left % 60:02d}s"
