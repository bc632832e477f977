"""``python -m bench.chart RESULTS.json OUT.png``: one bar panel per workload (runs in the bench venv)."""

import json
import sys


def main(src: str, dst: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = json.loads(open(src).read())
    panels = list(results["workloads"].items())
    if results.get("cold_start"):
        cold = {k: v for k, v in results["cold_start"].items() if k != "failed"}
        panels.append(("e_cold", {"title": "(e) cold start (s)", "unit": "s", "items": 1,
                                  "seconds": {k: v["seconds"] for k, v in cold.items()}}))
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.6 * len(panels)), squeeze=False)
    for ax, (_, wl) in zip(axes[:, 0], panels):
        names = list(wl["seconds"])
        med = [wl["seconds"][n]["median"] for n in names]
        if wl["unit"] == "docs/s":
            values, label = [wl["items"] / t for t in med], "docs/s (higher is better)"
        elif wl["unit"] == "ms":
            values, label = [t * 1e3 for t in med], "ms (lower is better)"
        else:
            values, label = med, "s (lower is better)"
        colors = ["tab:green" if n.startswith("granite-rt") else "tab:gray" for n in names]
        ax.barh(names, values, color=colors)
        ax.invert_yaxis()
        ax.set_title(wl["title"], fontsize=9)
        ax.set_xlabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
