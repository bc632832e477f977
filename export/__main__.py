"""``python -m granite_export MODEL --out DIR`` (also ``granite-rt export``): export, verify, write the manifest.

Exit codes: 0 done; 2 usage error (bad arguments, MODEL not found, --out unusable); 1 the export
failed (unsupported checkpoint, converter error, parity miss). Errors are one line on stderr;
``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import traceback

from granite_rt.errors import GraniteRTError, ModelNotFoundError, OutputFolderError, UnsupportedModelError
from granite_rt.int8_gate import parse_bounds

from .pipeline import FORMATS, parse_formats
from .quantize import DEFAULT_CALIBRATION_SAMPLES

PROG = "granite-rt export"
USAGE_ERRORS = (ModelNotFoundError, OutputFolderError)
# The export extra's modules and the formats that need each (None: every format).
EXTRA_MODULES: dict[str, tuple[str, ...] | None] = {
    "torch": None, "transformers": None, "sentence_transformers": None, "onnx": None, "onnxscript": None,
    "openvino": ("openvino", "openvino-int8"), "nncf": ("openvino-int8",),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2
        raise _UsageError(message)


class _UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Export a checkpoint (Hub repo id or local folder) to ONNX and "
                     "OpenVINO (fp32, fp16, INT8), verify every artifact against the torch reference, and write "
                     "a model folder the granite_rt runtime loads.")
    parser.add_argument("model", metavar="MODEL", help="Hugging Face repo id or local checkpoint folder")
    parser.add_argument("--out", required=True, metavar="DIR", help="output model folder (replaced atomically)")
    parser.add_argument("--formats", default=",".join(FORMATS), metavar="LIST",
                        help=f"comma-separated subset of {','.join(FORMATS)} (default: all)")
    parser.add_argument("--calibration", metavar="FILE",
                        help="INT8 calibration texts, one per line (default: the set shipped with granite_export)")
    parser.add_argument("--calibration-samples", type=int, default=DEFAULT_CALIBRATION_SAMPLES, metavar="N",
                        help=f"calibration texts (or pairs) used for INT8 scales (default: {DEFAULT_CALIBRATION_SAMPLES})")
    parser.add_argument("--int8-gate", metavar="BOUNDS",
                        help="bounds an INT8 artifact must reach against fp32 to be recommended, e.g. "
                             "mean_cosine=0.99,p1_cosine=0.97,top10_overlap=0.9,kendall_tau=0.9 (the defaults)")
    parser.add_argument("--kind", choices=("embedder", "reranker"),
                        help="force the model kind (default: detected from config.json architectures)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors (no status or progress)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the export CLI; returns the process exit code."""
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        try:
            formats = parse_formats(args.formats)
        except ValueError as err:
            raise _UsageError(f"--formats: {err}") from None
        if args.calibration_samples < 1:
            raise _UsageError(f"--calibration-samples must be ≥ 1, got {args.calibration_samples}")
        if args.calibration is not None:
            from .quantize import read_calibration_file

            try:
                read_calibration_file(args.calibration)
            except ValueError as err:
                raise _UsageError(str(err)) from None
        try:
            gate = parse_bounds(args.int8_gate)
        except ValueError as err:
            raise _UsageError(str(err)) from None
        missing = missing_modules(formats)
        if missing:
            return _fail(f"the export needs the export extra (missing: {', '.join(missing)}): "
                         "pip install 'granite-rt[export]'", 1, False)
        from .pipeline import export_model, not_recommended

        log = (lambda _msg: None) if args.quiet else print
        manifest = export_model(args.model, args.out, formats=formats, kind=args.kind, calibration=args.calibration,
                                calibration_samples=args.calibration_samples, log=log,
                                progress=False if args.quiet else None, gate=gate)
        for line in not_recommended(manifest):
            print(f"{PROG}: WARNING: {line}: written but NOT recommended (dtype='auto' skips it; dtype='int8' "
                  "runs it with a warning)", file=sys.stderr)
        return 0
    except _UsageError as err:
        return _fail(f"usage error: {err} (see {PROG} --help)", 2, debug)
    except UnsupportedModelError as err:
        return _fail(f"{type(err).__name__}: {err}", 1, debug)
    except USAGE_ERRORS as err:
        return _fail(f"{type(err).__name__}: {err}", 2, debug)
    except GraniteRTError as err:
        return _fail(f"{type(err).__name__}: {err}", 1, debug)
    except KeyboardInterrupt:
        return _fail("interrupted; nothing was written to --out", 130, debug)
    except Exception as err:  # a converter's own failure: still one line, with its type
        return _fail(f"export failed: {type(err).__name__}: {err}", 1, debug)


def missing_modules(formats: tuple[str, ...]) -> list[str]:
    """The export extra's modules that ``formats`` need and that cannot be imported here (nothing is imported)."""
    missing = []
    for module, needed_by in EXTRA_MODULES.items():
        if needed_by is not None and not set(needed_by) & set(formats):
            continue
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a blocked or broken module counts as missing
            found = False
        if not found:
            missing.append(module)
    return missing


def _fail(message: str, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"{PROG}: " + " ".join(message.split()), file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
