"""What the numbers were measured on, and the CPU's peak arithmetic rate for the efficiency row."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")
PROBE = Path(__file__).with_name("peak_probe.c")
PROBE_SECONDS = 0.3   # each probe process's run: long enough for the clock to settle under an all-core load


def machine_info() -> dict:
    """CPU model, core counts, frequency and the SIMD flags that decide fp32/bf16/INT8 speed."""
    from granite_rt import host  # here, not at import: coldstart.py imports this module in peers' venvs

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(re.findall(r"^([^:\n]+):\s*(.*)$", lscpu, flags=re.M))
    cpuinfo = host.CPUINFO.read_text() if host.CPUINFO.exists() else ""
    flags = {f: f in host.cpu_flags() for f in FLAGS}
    mhz = re.search(r"^cpu MHz\s*:\s*([\d.]+)", cpuinfo, flags=re.M)
    vendor = re.search(r"^vendor_id\s*:\s*(\S+)", cpuinfo, flags=re.M)
    cores = int(fields.get("Core(s) per socket", "0") or 0) * int(fields.get("Socket(s)", "1") or 1) \
        or host.physical_cores()
    return {
        "cpu": fields.get("Model name") or host.cpu_model(),
        "vendor": vendor.group(1) if vendor else None,
        "logical_cpus": os.cpu_count(),
        "physical_cores": cores,
        "mhz": float(mhz.group(1)) if mhz else None,
        "flags": flags,
        **measured_peaks(flags, cores),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def probe_kinds(flags: dict[str, bool]) -> dict[str, str]:
    """The peak_probe kind measured for each precision: the widest instruction this CPU has for it."""
    kinds = {}
    if flags.get("avx512f") or flags.get("avx2"):
        kinds["fp32"] = "fp32-zmm" if flags.get("avx512f") else "fp32-ymm"
    if flags.get("avx512_bf16"):
        kinds["bf16"] = "bf16-zmm"
    if flags.get("avx512_vnni"):
        kinds["int8"] = "int8-zmm"
    elif flags.get("avx_vnni"):
        kinds["int8"] = "int8-vex"
    elif flags.get("avx2"):
        kinds["int8"] = "int8-avx2"
    return kinds


def measured_peaks(flags: dict[str, bool], cores: int) -> dict:
    """The arithmetic peak measured on this machine: ``bench/peak_probe.c``, one copy per physical core at once.

    Why measured: under a hypervisor /proc/cpuinfo's "cpu MHz" is the TSC's rate, not the clock. On the 2-core
    AMD EPYC Zen 4 VM of 2026-12-08 it read 2596 MHz while the cores ran at 3.52-3.57 GHz with both busy (3.63
    alone), so peaks from it understated the real ones by 1.37x. Keys: ``measured_mhz`` (the all-core clock) and
    ``measured_peaks_gops`` per precision; both absent (the nominal formula of ``peak_gops`` applies) where there is
    no C compiler, no x86 vector unit, or the probe fails.
    """
    kinds = probe_kinds(flags)
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if not kinds or not compiler or platform.machine() not in ("x86_64", "AMD64"):
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "peak_probe"
        built = subprocess.run([compiler, "-O2", "-o", str(probe), str(PROBE)], capture_output=True, text=True)
        if built.returncode != 0:
            return {}
        try:
            clock = _all_cores(probe, "clock", cores)
            peaks = {precision: _all_cores(probe, kind, cores) / 1e9 for precision, kind in kinds.items()}
        except (OSError, ValueError, subprocess.CalledProcessError):
            return {}
    return {"measured_mhz": clock / cores / 1e6, "measured_peaks_gops": peaks}


def _all_cores(probe: Path, kind: str, cores: int) -> float:
    """Ops per second of ``kind`` summed over ``cores`` copies run at once, each PROBE_SECONDS long."""
    def one(_: int) -> float:
        return float(subprocess.run([str(probe), kind, str(PROBE_SECONDS)], capture_output=True, text=True,
                                    check=True).stdout)

    with ThreadPoolExecutor(cores) as pool:
        return sum(pool.map(one, range(cores)))


def peak_gops(info: dict) -> dict[str, float]:
    """Peak per precision: as measured (``measured_peaks``) where it was, else the nominal one below.

    Nominal: what one core executes per cycle, times cores and clock.

    AVX-512 with 512-bit units (Intel Xeon, AMD Zen 5): two FMA ports, fp32 2 × 16 lanes × 2 (FMA) = 64,
    bf16 (vdpbf16ps) 128, INT8 (VNNI vpdpbusd) 256 ops/cycle. AMD Zen 4 runs each 512-bit op on a pair of
    its 256-bit units, one per cycle: fp32 32, bf16 64, INT8 128 (told from Zen 5 by AVX-VNNI, which Zen 5
    added). AVX2: fp32 2 × 8 × 2 = 32; INT8 with AVX-VNNI (VEX vpdpbusd on 256 bits) 2 × 32 × 2 = 128, without it
    64 (vpmaddubsw then vpmaddwd: two instructions per 32 multiply-adds). The clock is cpuinfo's, which under a
    hypervisor is the TSC's rate and which turbo exceeds: a lower bound there (``measured_peaks``' reason).
    """
    if info.get("measured_peaks_gops"):
        return dict(info["measured_peaks_gops"])
    if not info["mhz"] or not (info["flags"].get("avx512f") or info["flags"].get("avx2")):
        return {}
    cycles = info["physical_cores"] * info["mhz"] * 1e6
    if not info["flags"].get("avx512f"):
        return {"fp32": cycles * 32 / 1e9, "int8": cycles * (128 if info["flags"].get("avx_vnni") else 64) / 1e9}
    halved = 2 if info.get("vendor") == "AuthenticAMD" and not info["flags"].get("avx_vnni") else 1  # Zen 4
    peaks = {"fp32": cycles * 64 / halved / 1e9}
    if info["flags"].get("avx512_bf16"):
        peaks["bf16"] = cycles * 128 / halved / 1e9
    if info["flags"].get("avx512_vnni"):
        peaks["int8"] = cycles * 256 / halved / 1e9
    return peaks


def encoder_gop_per_doc(config: dict, seq: int, first_position: bool = False) -> float:
    """Arithmetic of one ``seq``-token ModernBERT document (2 ops per multiply-add): per layer the QKV, output
    and gated-MLP projections of the positions it computes, and attention over the whole sequence in global
    layers, over the sliding window in local ones.

    ``first_position``: the graph granite-rt exports for a CLS-pooled model (export/first_position.py) — the
    sliding layers after the last global one run on a prefix of the sequence, and the last layer computes
    everything after its QKV projection for position 0 alone (at 512 tokens 14 % fewer ops for the 97m shape).
    """
    from granite_export.first_position import GLOBAL, SLIDING, prefix_lengths

    layers, hidden, inner = config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"]
    window = config.get("local_attention", seq)
    every = config.get("global_attn_every_n_layers", 1)
    types = config.get("layer_types") or [GLOBAL if i % every == 0 else SLIDING for i in range(layers)]
    prefixes = prefix_lengths(types, config.get("sliding_window", window // 2)) if first_position else [None] * layers
    macs = 0
    for index, (kind, prefix) in enumerate(zip(types, prefixes)):
        rows = seq if prefix is None else min(seq, prefix)
        keys = rows if kind == GLOBAL else min(rows, window)
        queries = 1 if first_position and index == layers - 1 else rows
        macs += 3 * hidden * hidden * rows + queries * (hidden * hidden + 3 * hidden * inner + 2 * hidden * keys)
    return 2 * macs / 1e9


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
