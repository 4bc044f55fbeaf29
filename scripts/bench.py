#!/usr/bin/env python
"""Training-throughput benchmark (issue 6); the same as `imbal bench`. See imbal/bench.py.

    python scripts/bench.py [--quick] [--repeats N] [--only mnist,cifar,sampler,startup]
                            [--data ROOT] [--out bench.json]
"""

import argparse
import sys

from imbal.bench import cli as bench
from imbal.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench.py", description=__doc__.splitlines()[0])
    bench.add_arguments(parser)
    try:
        return bench.run(parser.parse_args(argv))
    except UserError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
