"""Cold start in a fresh process: import + load + first vector. ``python -m bench.coldstart NAME CKPT EXPORTED``.

Prints {"seconds": ...}: time from before the library import to the first vector. The parent
measures the process's wall time and its peak RSS (ru_maxrss from wait4).
"""

import time

_START = time.perf_counter()

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def main() -> None:
    from bench import adapters
    from bench.contenders import by_name

    embed = adapters.load(by_name(sys.argv[1]), "embedder", Path(sys.argv[2]), Path(sys.argv[3]))
    embed(["what is the chemical formula of water?"])
    print(json.dumps({"seconds": time.perf_counter() - _START}))


if __name__ == "__main__":
    main()
