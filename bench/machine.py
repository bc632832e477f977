"""What the numbers were measured on, and the CPU's peak arithmetic rate for the efficiency row."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from datetime import datetime, timezone

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def machine_info() -> dict:
    """CPU model, core counts, frequency and the SIMD flags that decide fp32/bf16/INT8 speed."""
    from granite_rt import host  # here, not at import: coldstart.py imports this module in peers' venvs

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(re.findall(r"^([^:\n]+):\s*(.*)$", lscpu, flags=re.M))
    cpuinfo = host.CPUINFO.read_text() if host.CPUINFO.exists() else ""
    flags = host.cpu_flags()
    mhz = re.search(r"^cpu MHz\s*:\s*([\d.]+)", cpuinfo, flags=re.M)
    vendor = re.search(r"^vendor_id\s*:\s*(\S+)", cpuinfo, flags=re.M)
    cores = int(fields.get("Core(s) per socket", "0") or 0) * int(fields.get("Socket(s)", "1") or 1)
    return {
        "cpu": fields.get("Model name") or host.cpu_model(),
        "vendor": vendor.group(1) if vendor else None,
        "logical_cpus": os.cpu_count(),
        "physical_cores": cores or host.physical_cores(),
        "mhz": float(mhz.group(1)) if mhz else None,
        "flags": {f: f in flags for f in FLAGS},
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def peak_gops(info: dict) -> dict[str, float]:
    """Theoretical peak per precision: what one core executes per cycle, times cores and clock.

    AVX-512 with 512-bit units (Intel Xeon, AMD Zen 5): two FMA ports, fp32 2 × 16 lanes × 2 (FMA) = 64,
    bf16 (vdpbf16ps) 128, INT8 (VNNI vpdpbusd) 256 ops/cycle. AMD Zen 4 runs each 512-bit op on a pair of
    its 256-bit units, one per cycle: fp32 32, bf16 64, INT8 128 (told from Zen 5 by AVX-VNNI, which Zen 5
    added). AVX2 only: fp32 2 × 8 × 2 = 32; INT8 2 × 32 × 2 / 2 = 64 (vpmaddubsw then vpmaddwd: two
    instructions per 32 multiply-adds). An upper bound: turbo, port counts and the hypervisor may differ.
    """
    if not info["mhz"] or not (info["flags"].get("avx512f") or info["flags"].get("avx2")):
        return {}
    cycles = info["physical_cores"] * info["mhz"] * 1e6
    if not info["flags"].get("avx512f"):
        return {"fp32": cycles * 32 / 1e9, "int8": cycles * 64 / 1e9}
    halved = 2 if info.get("vendor") == "AuthenticAMD" and not info["flags"].get("avx_vnni") else 1  # Zen 4
    peaks = {"fp32": cycles * 64 / halved / 1e9}
    if info["flags"].get("avx512_bf16"):
        peaks["bf16"] = cycles * 128 / halved / 1e9
    if info["flags"].get("avx512_vnni"):
        peaks["int8"] = cycles * 256 / halved / 1e9
    return peaks


def encoder_gop_per_token(layers: int, hidden: int, intermediate: int, seq: int,
                          window: int, global_every: int) -> float:
    """Arithmetic of one ModernBERT token (2 ops per multiply-add): projections, gated MLP and
    attention over the full sequence in global layers, over the sliding window in local ones."""
    n_global = len(range(0, layers, global_every))
    dense = layers * (4 * hidden * hidden + 3 * hidden * intermediate)
    attention = 2 * hidden * (n_global * seq + (layers - n_global) * min(seq, window))
    return 2 * (dense + attention) / 1e9


def peak_rss_mib(pid: int | str = "self") -> float | None:
    """Peak RSS of this process (or of child ``pid``, while it runs): Linux VmHWM; None where /proc is absent.

    Not ``ru_maxrss``: the kernel folds the peak of the process that forked a child into the child's
    ru_maxrss at exec, so a child of a 300 MiB benchmark runner never reports less than 300 MiB.
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None
