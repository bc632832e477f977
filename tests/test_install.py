"""Each install gets exactly one onnxruntime distribution: the extras, and the commands the docs give."""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path

import pytest

from granite_rt.backends.onnxruntime import ORT_DISTRIBUTIONS

tomllib = pytest.importorskip("tomllib")
ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]


def dist_name(requirement: str) -> str:
    """Normalised distribution name of a PEP 508 requirement ("onnxruntime-gpu>=1.18; ..." -> onnxruntime-gpu)."""
    name = re.match(r"\s*([A-Za-z0-9._-]+)", requirement).group(1)
    return re.sub(r"[-_.]+", "-", name).lower()


def ort_of(requirements: list[str]) -> set[str]:
    return {dist_name(r) for r in requirements} & set(ORT_DISTRIBUTIONS)


def granite_rt_requirements(extras: tuple[str, ...]) -> list[str]:
    """Base dependencies plus those of ``extras``, following self-references (granite-rt[a] inside b)."""
    reqs, todo, seen = list(PYPROJECT["project"]["dependencies"]), list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        if extra not in EXTRAS:
            raise AssertionError(f"granite-rt has no extra {extra!r}; it has {sorted(EXTRAS)}")
        for req in EXTRAS[extra]:
            if dist_name(req) == "granite-rt":
                todo += re.search(r"\[(.*?)\]", req).group(1).split(",")
            else:
                reqs.append(req)
    return reqs


def test_dist_name_parsing():
    assert dist_name("onnxruntime_GPU>=1.18; platform_system == 'Linux'") == "onnxruntime-gpu"
    assert ort_of(["numpy", "onnxruntime>=1", "onnxruntime-gpu"]) == {"onnxruntime", "onnxruntime-gpu"}


def test_plain_install_gets_the_cpu_onnxruntime():
    assert ort_of(granite_rt_requirements(())) == {"onnxruntime"}


@pytest.mark.parametrize("size", [1, 2, 3])
def test_no_combination_of_extras_pulls_two_onnxruntime_distributions(size):
    for combo in itertools.combinations(sorted(EXTRAS), size):
        found = ort_of(granite_rt_requirements(combo))
        assert len(found) == 1, f"granite-rt[{','.join(combo)}] installs {sorted(found)}"


def simulate(commands: list[str]) -> set[str]:
    """The onnxruntime distributions left after running ``pip install/uninstall`` commands in order."""
    installed: set[str] = set()
    for command in commands:
        words = shlex.split(command)
        if len(words) < 2 or words[0] != "pip" or words[1] not in ("install", "uninstall"):
            continue
        targets = [w for w in words[2:] if not w.startswith("-")]
        if words[1] == "uninstall":
            installed -= {dist_name(t) for t in targets}
            continue
        for target in targets:
            if target.startswith((".", "/")) or dist_name(target) == "granite-rt":
                extras = re.search(r"\[(.*?)\]", target)
                installed |= ort_of(granite_rt_requirements(tuple(extras.group(1).split(",")) if extras else ()))
            else:
                installed |= ort_of([target])
        assert len(installed) <= 1, f"after `{command}`: {sorted(installed)}"
    return installed


def shell_blocks(path: Path) -> list[list[str]]:
    """The commands of each ```bash block of a Markdown file (comments dropped, && split)."""
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", path.read_text(encoding="utf-8"), re.S)
    return [[part.strip() for line in block.splitlines() for part in line.split("#")[0].split("&&") if part.strip()]
            for block in blocks]


def test_simulation_catches_two_distributions():
    with pytest.raises(AssertionError, match="onnxruntime-gpu"):
        simulate(["pip install granite-rt", "pip install onnxruntime-gpu"])
    assert simulate(["pip install granite-rt", "pip uninstall -y onnxruntime", "pip install onnxruntime-gpu"]) == {
        "onnxruntime-gpu"}


@pytest.mark.parametrize("doc", ["docs/devices.md", "README.md"])
def test_every_documented_install_leaves_exactly_one_onnxruntime(doc):
    blocks = [b for b in shell_blocks(ROOT / doc) if any(c.startswith("pip install") for c in b)]
    if doc == "docs/devices.md":
        assert len(blocks) >= 3  # the CPU+GPU swap, DirectML swap and GPU-check set-up are all here
    for block in blocks:
        assert len(simulate(block)) == 1, block
