"""What every benchmark writes: the command, date and machine, then JSON, Markdown and a plot."""
from __future__ import annotations

import datetime
import json
import platform
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def command_line() -> str:
    """How this run was started, as a reader would retype it (python -m bench.NAME ..., no local paths)."""
    module = getattr(sys.modules["__main__"].__spec__, "name", None)
    return " ".join(["python", *(["-m", module] if module else [sys.argv[0]]), *sys.argv[1:]])


def run_meta(device: str) -> dict:
    name = torch.cuda.get_device_name() if device.startswith("cuda") else (platform.processor() or "cpu")
    return {"command": command_line(),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "device": device, "device_name": name,
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"}


def write_results(stem: Path, meta: dict, rows: list[dict], markdown: list[str], figure=None) -> None:
    """stem.json (meta + rows), stem.md (the table, its command and machine) and stem.png."""
    import matplotlib.pyplot as plt

    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    header = [f"`{meta['command']}`", "", f"{meta['date']} on {meta['device_name']} ({meta['machine']}).", ""]
    if figure is not None:
        figure.savefig(stem.with_suffix(".png"), dpi=110, bbox_inches="tight")
        plt.close(figure)
        markdown = markdown + ["", f"![{stem.name}]({stem.name}.png)"]
    stem.with_suffix(".md").write_text("\n".join(markdown[:2] + header + markdown[2:]) + "\n")
