"""A minimal desktop-style app: ``desktop_app BUNDLE TEXT`` prints TEXT's vector as a JSON list.

Freeze it with ``pyinstaller --onedir examples/desktop_app.py`` (granite-rt's PyInstaller hook is found
automatically); see docs/desktop.md. It caps the model at 2 threads and releases it when done, as a
GUI app would.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: desktop_app BUNDLE TEXT", file=sys.stderr)
        return 2
    from granite_rt import Embedder
    from granite_rt.errors import GraniteRTError

    bundle, text = argv
    try:
        with Embedder(bundle, threads=2) as embedder:
            vector = embedder.encode(text)
    except GraniteRTError as err:  # a missing or damaged bundle: one line, as a GUI would show it
        print(f"desktop_app: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps([float(v) for v in vector]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
