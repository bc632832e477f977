"""Cold start in a fresh process: import + load + first vector. ``python -m bench.coldstart NAME CKPT EXPORTED``.

Prints {"seconds": ..., "peak_rss_mib": ...}: time from before the library import to the first vector,
and the process's own peak RSS (VmHWM; the parent's wait4 ru_maxrss would include the parent's own
peak). The parent measures the process's wall time.
"""

import time

_START = time.perf_counter()

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def main() -> None:
    from bench import adapters
    from bench.contenders import by_name
    from bench.machine import peak_rss_mib

    embed = adapters.load(by_name(sys.argv[1]), "embedder", Path(sys.argv[2]), Path(sys.argv[3]))
    embed(["what is the chemical formula of water?"])
    print(json.dumps({"seconds": time.perf_counter() - _START, "peak_rss_mib": peak_rss_mib()}))


if __name__ == "__main__":
    main()
