"""Host facts read from /proc/cpuinfo and the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from granite_rt import host


@pytest.mark.parametrize("flags, expected", [
    ("flags\t\t: fpu sse4_2 avx2 fma", ()),                                  # AMD Zen 3: AVX2 only
    ("flags\t\t: avx2 avx512f avx512_vnni avx512_bf16", ("avx512_vnni",)),  # Intel Xeon (Cascade Lake+)
    ("flags\t\t: avx2 avx_vnni", ("avx_vnni",)),                           # Alder Lake, Zen 5 desktop
    ("Features\t: fp asimd asimddp sve", ("asimddp",)),                     # Arm with dot product
])
def test_cpu_int8_dot_reads_the_cpuinfo_flags(tmp_path, monkeypatch, flags, expected):
    monkeypatch.setattr(host, "_NUMPY_INT8_DOT", {})  # only the file speaks here
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: test\n{flags}\n\nprocessor\t: 1\n{flags}\n")
    assert host.cpu_int8_dot(cpuinfo) == expected
    assert host.cpu_int8_dot(tmp_path / "missing") == ()


def test_cpu_model_and_flags_come_from_the_first_processor(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu avx2 avx512f\n\n"
                       "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n")
    assert host.cpu_model(cpuinfo) == "AMD EPYC 9R14"
    assert host.cpu_vendor(cpuinfo) == ""                      # no vendor_id line (as on Arm)
    intel = tmp_path / "intel"
    intel.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\n"
                     "flags\t\t: avx2 avx512f\n\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\n")
    assert host.cpu_vendor(intel) == "GenuineIntel" and host.cpu_flags(intel) == {"avx2", "avx512f"}
    assert host.cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512f"}
    assert host.cpu_flags(tmp_path / "missing") == frozenset()


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GRANITE_RT_CACHE", "off")
    assert host.cache_dir() is None
    monkeypatch.setenv("GRANITE_RT_CACHE", str(tmp_path))
    assert host.cache_dir() == tmp_path
    monkeypatch.delenv("GRANITE_RT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert host.cache_dir() == Path(tmp_path / "xdg" / "granite-rt")


def test_cpu_facts_read_the_cpu_model_and_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_vnni\n\n"
                       "processor\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_vnni\n")
    facts = host.cpu_facts(cpuinfo)
    assert facts["cpu"] == "AMD EPYC" and facts["flags"] == ["avx2", "avx512_vnni", "fpu"]
