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


def test_installed_version_answers_as_importlib_metadata_for_every_installed_distribution():
    from importlib.metadata import distributions, version

    names = {d.metadata["Name"] for d in distributions()}
    assert {"onnxruntime", "numpy", "tokenizers"} <= names
    for name in names:
        for spelling in (name, name.upper(), name.replace("-", "_"), name.replace("_", "-").replace(".", "-")):
            assert host.installed_version(spelling) == version(spelling), spelling
    assert host.installed_version("no-such-distribution") is None


def _dist_info(folder: Path, name: str, version: str, kind: str = "dist-info") -> None:
    info = folder / (f"{name}-{version}.dist-info" if kind == "dist-info" else f"{name}.egg-info")
    info.mkdir(parents=True)
    (info / ("METADATA" if kind == "dist-info" else "PKG-INFO")).write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_installed_version_takes_the_first_on_sys_path_and_sees_installs(tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    _dist_info(first, "Foo_Bar", "1.0")
    _dist_info(second, "foo.bar", "2.0")
    monkeypatch.setattr("sys.path", [str(first), str(tmp_path / "absent"), str(second)])
    assert host.installed_version("foo-bar") == "1.0"
    assert host.installed_version("later") is None
    _dist_info(second, "later", "0.3")  # installed while the process runs
    assert host.installed_version("later") == "0.3"


def test_installed_version_asks_importlib_metadata_what_a_listing_cannot_tell(tmp_path, monkeypatch):
    import zipfile

    _dist_info(tmp_path / "site", "eggy", "3.1", kind="egg-info")   # the version is inside, not in the name
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("zipped-4.2.dist-info/METADATA", "Metadata-Version: 2.1\nName: zipped\nVersion: 4.2\n")
    monkeypatch.setattr("sys.path", [str(tmp_path / "site")])
    assert host.installed_version("eggy") == "3.1"
    monkeypatch.setattr("sys.path", [str(tmp_path / "site"), str(archive)])
    assert host.installed_version("zipped") == "4.2"
