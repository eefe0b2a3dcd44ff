"""Wall time of each course notebook, top to bottom, in fast or full mode (the numbers in their headers).

    python benchmarks/notebook_times.py --mode full            # every notebook, as a learner runs it
    python benchmarks/notebook_times.py --mode fast 04 05      # some notebooks, EQUIMOD_FAST=1

Each notebook runs with nbclient on a kernel of this Python, in a fresh temporary folder (its training
runs go there), so nothing is reused between notebooks or from an earlier run. Prints one line per
notebook (total seconds and its three slowest cells) and writes them to --out as JSON, with the
thread count and the machine, because these times depend on both.
"""

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import datetime
from pathlib import Path

import nbclient
import nbformat

from equimod_edu.book import write_kernel_of_this_python

REPO = Path(__file__).resolve().parent.parent


def kernel_spec_of_this_python(root: Path) -> str:
    """Write a "python3" kernel spec that starts sys.executable and put it first on JUPYTER_PATH."""
    kernel = write_kernel_of_this_python(root)
    os.environ["JUPYTER_PATH"] = str(root / "jupyter")
    return kernel


def time_notebook(path: Path, mode: str) -> dict:
    """Run one notebook; return {"notebook", "mode", "seconds", "slowest_cells": [(index, seconds, first line)]}."""
    os.environ.pop("EQUIMOD_FAST", None)
    if mode == "fast":
        os.environ["EQUIMOD_FAST"] = "1"
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        kernel = kernel_spec_of_this_python(tmp)
        client = nbclient.NotebookClient(nb, kernel_name=kernel, timeout=3600, record_timing=True,
                                         resources={"metadata": {"path": str(tmp)}})
        tic = time.perf_counter()
        client.execute()
        seconds = time.perf_counter() - tic
    cells = []
    for index, cell in enumerate(nb.cells):
        timing = cell.get("metadata", {}).get("execution", {})  # ISO timestamps, written by record_timing
        if cell.cell_type == "code" and "shell.execute_reply" in timing:
            start = timing.get("iopub.execute_input") or timing["shell.execute_reply.started"]
            took = (_time(timing["shell.execute_reply"]) - _time(start)).total_seconds()
            cells.append((index, round(took, 1), cell.source.splitlines()[0][:60] if cell.source else ""))
    cells.sort(key=lambda c: -c[1])
    return {"notebook": path.name, "mode": mode, "seconds": round(seconds, 1), "slowest_cells": cells[:3]}


def _time(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))   # Python 3.10 does not read a trailing Z


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="numbers such as 02 05 (default: all)")
    parser.add_argument("--mode", choices=("fast", "full"), default="full")
    parser.add_argument("--out", default=None, help="JSON file (default runs/notebook_times_<mode>.json)")
    args = parser.parse_args(argv)
    paths = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.notebooks:
        paths = [p for p in paths if p.name[:2] in args.notebooks]
        if not paths:
            parser.error(f"no notebook numbered {args.notebooks}")
    out = Path(args.out or REPO / "runs" / f"notebook_times_{args.mode}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    import torch
    report = {"mode": args.mode, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
              "machine": platform.processor() or platform.machine(), "notebooks": []}
    for path in paths:
        result = time_notebook(path, args.mode)
        report["notebooks"].append(result)
        slow = "; ".join(f"cell {i} {s:.0f} s ({src})" for i, s, src in result["slowest_cells"])
        print(f"{path.name}: {result['seconds']:.0f} s in {args.mode} mode  [{slow}]", flush=True)
        out.write_text(json.dumps(report, indent=2))  # after each notebook: nothing lost on interruption
    print(f"threads={report['threads']} written to {out}")


if __name__ == "__main__":
    main()
