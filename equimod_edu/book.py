"""The course as a static HTML book: every notebook executed, its outputs shown, nothing to run.

    python -m equimod_edu.book                   # fast mode (EQUIMOD_FAST=1), all notebooks -> book/
    python -m equimod_edu.book --full            # full mode: the budgets a learner runs
    python -m equimod_edu.book --only 01,03 --out /tmp/book
    make book            make book FULL=1        # the same through make

Each notebook of notebooks/ is read (never written back: the repository keeps them without outputs),
executed with nbclient on a kernel that runs *this* Python (a kernel spec written to a scratch
JUPYTER_PATH, so another environment's "python3" kernel is never picked up) in a scratch working
folder (its training runs go there), converted to HTML with nbconvert's HTMLExporter (figures are
embedded as PNG; the widgets' state is embedded too, and renders where the page can load the
widget manager), and written to book/NN_name.html. book/index.html lists them: title, learning
goals, the mode, the date, the package version, each notebook's seconds.

A failing cell stops the build with one line naming the notebook and the cell, exit status 1. Every
notebook is read first: one that is not JSON (a merge conflict) or not a notebook stops the build
before any kernel starts, with one line naming the file, exit status 2.

**The quoting rule.** A number the prose quotes comes from the run at hand, or says where it comes from.
`unprinted_numbers` reads an executed notebook and lists every decimal number (two or more digits after
the point) of a markdown cell that no code cell printed or set. A cell that says "full mode" (and not
"both modes") is checked only in a full-mode run; a cell that names a file it reads from (`data/...`)
or the paper is not checked here (tests/test_notebooks.py compares those with the files). The build
prints what it finds; the fast-mode test of every notebook requires that it finds nothing.
tests/test_notebooks.py executes the notebooks through execute_notebook and renders them with to_html.
nbclient, nbformat and nbconvert come with JupyterLab; ipykernel with the test extras.
"""

from __future__ import annotations

import argparse
import copy
import html
import os
import re
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from . import __version__
from .files import atomic_write, os_error_reason

__all__ = ["write_kernel_of_this_python", "read_notebook", "execute_notebook", "unprinted_numbers", "to_html",
           "BookError", "CellError", "select", "build", "main"]

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
PATTERN = "[0-9][0-9]_*.ipynb"
TIMEOUT_S = {"fast": 300, "full": 900}  # per cell: a guard against a hung kernel, not a speed target

#: A quoted number: two or more decimals, not part of a longer number or a name ("0.175", "-0.17", "8.33").
QUOTED_NUMBER = re.compile(r"(?<![\w.])\d+\.\d{2,}(?!\.?\d)")
#: Identifiers that look like numbers: arXiv ids ("arXiv:2211.01244", ".../abs/2211.01244").
IDENTIFIER = re.compile(r"(?:arxiv[: ]\s*|abs/)\d+\.\d+", re.IGNORECASE)
#: Labels that send a markdown cell's numbers to a file or the paper instead of the run at hand.
CITED_ELSEWHERE = ("`data/", "the paper", "Table 1")


class BookError(RuntimeError):
    """The build stopped: str(error) is one line saying which notebook and why; .details the full text.

    .exit_code: 1 (a cell failed, the kernel hung or died, a page could not be written), 2 (a notebook
    file that cannot be read: not JSON, not a notebook).
    """

    def __init__(self, line: str, details: str = "", exit_code: int = 1):
        super().__init__(line)
        self.details = details or line
        self.exit_code = exit_code


class CellError(BookError):
    """A cell raised: the line names the notebook, the cell and the exception.

    ``.details`` is nbclient's CellExecutionError text (the traceback).
    """


def write_kernel_of_this_python(root, display_name: str = "Python 3 (equimod_edu)") -> str:
    """A "python3" kernel spec under ``root/jupyter`` whose argv starts ``sys.executable``.

    Put ``root/jupyter`` first on JUPYTER_PATH and Jupyter picks it over any user-level or system
    "python3" kernel.
    """
    from ipykernel.kernelspec import write_kernel_spec

    write_kernel_spec(Path(root) / "jupyter" / "kernels" / "python3", overrides={"display_name": display_name})
    return "python3"


def _first_line(source: str) -> str:
    line = next((s.strip() for s in source.splitlines() if s.strip()), "")
    return line if len(line) <= 60 else line[:57] + "..."


def _describe_failure(nb, name: str, error) -> str:
    """One line: which cell of which notebook raised what."""
    code = 0
    for index, cell in enumerate(nb.cells, start=1):
        if cell.cell_type != "code":
            continue
        code += 1
        failed = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if failed:
            what = f"{failed[0].get('ename', 'Error')}: {failed[0].get('evalue', '')}".strip().rstrip(":")
            break
    else:
        index, code, cell = None, None, None
        what = f"{getattr(error, 'ename', type(error).__name__)}: {getattr(error, 'evalue', '')}".strip()
    what = " ".join(what.split())  # one line, whatever the exception's message holds
    where = f"cell {index} (code cell {code}: `{_first_line(cell.source)}`)" if cell is not None else "a cell"
    return f"{name}: {where} raised {what}"


def read_notebook(path):
    """The notebook at `path` (a NotebookNode, format 4), checked against the notebook schema.

    A file that is not JSON (a merge conflict left in it, say) or not a notebook raises BookError
    (exit code 2), one line naming the file and how to restore it.
    """
    import nbformat

    path = Path(path)
    restore = f"restore it with `git checkout -- {path}`"
    try:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        return notebook
    except OSError as error:
        raise BookError(f"cannot read {path}: {os_error_reason(error, path)}", exit_code=2) from error
    except Exception as error:  # NotJSONError, ValidationError, or whatever a wrong structure makes nbformat raise
        text = path.read_text(errors="replace")
        if any(line.startswith(("<<<<<<< ", ">>>>>>> ")) for line in text.splitlines()):
            why = f"a merge conflict is left in it (<<<<<<< lines): resolve it, or {restore}"
        else:
            detail = " ".join(str(error).split())[:120]
            why = f"not a notebook ({type(error).__name__}: {detail}): {restore}"
        raise BookError(f"{path}: {why}", str(error), exit_code=2) from error


def execute_notebook(notebook, workdir, *, kernel_name: str = "python3", timeout: int = TIMEOUT_S["fast"],
                     env: dict | None = None, attempts: int = 2, name: str | None = None, log=print):
    """Execute a notebook top to bottom and return the executed copy (a NotebookNode with its outputs).

    notebook: a path (read, never written) or a NotebookNode (copied, left as it is). Attempt k runs in
    the fresh folder workdir/work<k> (the kernel's working directory: training runs go there), on the
    kernel spec `kernel_name` as Jupyter finds it (see write_kernel_of_this_python), with `env` added to
    this process's environment. A cell that raises is never retried: CellError, whose str is one line.
    A cell that gets no reply within `timeout` s (seen once in CI: the kernel idle, nbclient still
    waiting), or a kernel that dies (seen on an overloaded machine), gets another try with a fresh
    kernel, up to `attempts` in all; then CellTimeoutError or DeadKernelError.
    """
    import nbclient

    if isinstance(notebook, (str, os.PathLike)):
        name = name or Path(notebook).name
        notebook = read_notebook(notebook)
    name = name or "notebook"
    kernel_env = {**os.environ, **env} if env else None
    for attempt in range(1, attempts + 1):
        nb = copy.deepcopy(notebook)
        folder = Path(workdir) / f"work{attempt}"
        folder.mkdir(parents=True, exist_ok=False)
        client = nbclient.NotebookClient(nb, kernel_name=kernel_name, timeout=timeout,
                                         resources={"metadata": {"path": str(folder)}})
        try:
            client.execute(**({"env": kernel_env} if kernel_env else {}))
            return nb
        except nbclient.exceptions.CellExecutionError as error:
            raise CellError(_describe_failure(nb, name, error), str(error)) from error
        except (nbclient.exceptions.CellTimeoutError, nbclient.exceptions.DeadKernelError) as error:
            if attempt == attempts:
                raise
            what = "the kernel died" if isinstance(error, nbclient.exceptions.DeadKernelError) \
                else f"no reply within {timeout} s"
            log(f"{name}: {what}; retrying with a fresh kernel (attempt {attempt + 1} of {attempts})")
    raise ValueError(f"attempts must be at least 1, not {attempts}")


def _printed(cell) -> str:
    """What a code cell set and showed: its source and the text of its outputs (streams, text/plain)."""
    shown = [o.get("text", "") if o.get("output_type") == "stream" else o.get("data", {}).get("text/plain", "")
             for o in cell.get("outputs", [])]
    return "\n".join([cell.source, *(s if isinstance(s, str) else "".join(s) for s in shown)])


def unprinted_numbers(nb, mode: str) -> list[tuple[int, str]]:
    """The quoting rule: [(cell index, number)] for each number of the prose that the run did not print.

    nb: an executed notebook; mode: "fast" or "full", the mode it ran in. A number counts as printed when
    a code cell's source or text output holds it as a prefix of a number ("0.17" matches a printed
    "0.175"), signs aside. Cells labelled "full mode" (without "both modes") are skipped in fast mode;
    cells that cite a file or the paper (CITED_ELSEWHERE) are skipped in both; arXiv ids are no numbers.
    """
    printed = "\n".join(_printed(cell) for cell in nb.cells if cell.cell_type == "code")
    missing = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown" or any(label in cell.source for label in CITED_ELSEWHERE):
            continue
        text = cell.source.lower()
        if mode == "fast" and "full mode" in text and "both modes" not in text:
            continue
        for number in dict.fromkeys(QUOTED_NUMBER.findall(IDENTIFIER.sub("", cell.source))):
            if not re.search(rf"(?<![\d.]){re.escape(number)}", printed):
                missing.append((index, number))
    return missing


def to_html(nb, resources_path=None) -> str:
    """The executed notebook as one standalone HTML page in JupyterLab's look.

    Figures are embedded PNG; images linked from markdown are embedded too, found relative to
    ``resources_path``.
    """
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", embed_images=True)
    resources = {"metadata": {"path": str(resources_path)}} if resources_path else {}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    # links between notebooks point at their pages in the book
    return re.sub(r'href="(\./)?(\d\d_[^"/]*)\.ipynb(#[^"]*)?"', r'href="\2.html\3"', body)


# ---------------------------------------------------------------- the table of contents
def _title(nb, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            match = re.search(r"^#\s+(.+)$", cell.source, re.M)
            if match:
                return match.group(1).strip()
    return fallback


def _goals(nb) -> str:
    """The markdown bullets under **Learning goals** in the first markdown cell ('' if none)."""
    first = next((cell.source for cell in nb.cells if cell.cell_type == "markdown"), "")
    match = re.search(r"\*\*Learning goals\*\*[^\n]*\n((?:[ \t]*[-*].*\n?|[ \t]+\S.*\n?)+)", first)
    return match.group(1) if match else ""


def _index_html(entries: list[dict], mode: str, built: str) -> str:
    from nbconvert.filters import markdown2html

    items = []
    for e in entries:
        goals = markdown2html(e["goals"]) if e["goals"] else ""
        items.append(
            f'<li><h2><a href="{html.escape(e["href"])}">{html.escape(e["title"])}</a></h2>\n'
            f'<p class="meta">{html.escape(e["file"])}, executed in {e["seconds"]:.0f} s</p>\n'
            + (f'<p class="goals">Learning goals</p>\n{goals}\n' if goals else "") + "</li>")
    note = ("<strong>fast mode</strong> (<code>EQUIMOD_FAST=1</code>): every experiment is shrunk to seconds, so "
            "the numbers and curves are those of toy runs (<code>make book FULL=1</code> builds the full-mode course)"
            if mode == "fast" else "<strong>full mode</strong>: the budgets a learner runs (<code>make book</code> "
            "builds the quick fast-mode version)")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>EquiMod course (equimod_edu {html.escape(__version__)})</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.45; }}
ol {{ list-style: none; padding-left: 0; }} ol > li {{ margin-bottom: 1.4rem; }}
h2 {{ font-size: 1.2rem; margin: 0 0 .2rem; }} .meta {{ color: #666; margin: 0; font-size: .9rem; }}
.goals {{ margin: .4rem 0 0; font-weight: 600; }} code {{ background: #f3f3f3; padding: 0 .2rem; }}
</style></head><body>
<h1>EquiMod: the course</h1>
<p>The notebooks of <code>notebooks/</code>, executed top to bottom with their outputs: read them here without
running anything, then open them in JupyterLab (<code>make lab</code>) to run and change them.</p>
<p id="build">Built on {html.escape(built)} with equimod_edu {html.escape(__version__)}, in {note}.</p>
<ol>
{chr(10).join(items)}
</ol>
</body></html>
"""


def _write(path: Path, text: str) -> None:
    try:
        atomic_write(path, lambda f: f.write(text.encode("utf-8")))
        os.chmod(path, 0o644)  # a page to read, and to serve
    except OSError as error:
        raise BookError(f"cannot write {path}: {os_error_reason(error, path)}") from error


def _execute(path: Path, source, scratch: Path, kernel: str, timeout: int, mode: str, log):
    """execute_notebook for the build: its own scratch folder, the mode's EQUIMOD_FAST, one-line errors."""
    import nbclient

    try:
        return execute_notebook(source, scratch / path.stem, kernel_name=kernel, timeout=timeout,
                                env={"EQUIMOD_FAST": "1" if mode == "fast" else "0"}, name=path.name, log=log)
    except nbclient.exceptions.CellTimeoutError as error:
        raise BookError(f"{path.name}: a cell gave no reply within {timeout} s, twice (--timeout allows more)",
                        str(error)) from error
    except nbclient.exceptions.DeadKernelError as error:
        raise BookError(f"{path.name}: the kernel died, twice ({' '.join(str(error).split())})", str(error)) from error


# ---------------------------------------------------------------- the build
def select(folder: Path, only: str | None) -> list[Path]:
    """The numbered notebooks of ``folder``, or those whose numbers ``only`` lists ("01,03").

    A number that matches none raises ValueError saying what is there.
    """
    paths = sorted(Path(folder).glob(PATTERN))
    if not paths:
        raise ValueError(f"no notebooks named {PATTERN} in {folder}")
    if not only:
        return paths
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    wanted = [w.zfill(2) if w.isdigit() else w for w in wanted]
    missing = [w for w in wanted if not any(p.name[:2] == w for p in paths)]
    if missing or not wanted:
        there = ", ".join(p.name[:2] for p in paths)
        raise ValueError(f"--only {only}: no notebook numbered {', '.join(missing) or '(none given)'} "
                         f"in {folder} (there are {there})")
    return [p for p in paths if p.name[:2] in wanted]


def build(paths: list[Path], out: Path, *, full: bool = False, timeout: int | None = None, log=print) -> Path:
    """Execute and render each notebook, write out/NN_name.html and out/index.html; return the index path.

    Every notebook is read first: one that cannot be read stops the build before any kernel starts.
    timeout: seconds a cell may take (None: TIMEOUT_S of the mode; 0 or less raises ValueError).
    """
    import nbformat

    mode = "full" if full else "fast"
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
    timeout = timeout or TIMEOUT_S[mode]
    out = Path(out)
    sources = [read_notebook(path) for path in paths]
    entries = []
    tic_all = time.perf_counter()
    jupyter_path = os.environ.get("JUPYTER_PATH")
    with tempfile.TemporaryDirectory(prefix="equimod-book-") as scratch:
        scratch = Path(scratch)
        kernel = write_kernel_of_this_python(scratch)
        os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(scratch / "jupyter"), jupyter_path]))
        try:
            for k, (path, source) in enumerate(zip(paths, sources), start=1):
                tic = time.perf_counter()
                executed = _execute(path, source, scratch, kernel, timeout, mode, log)
                for index, number in unprinted_numbers(executed, mode):
                    log(f"{path.name}: cell {index} quotes {number}, which this {mode}-mode run did not print")
                page = f"{path.stem}.html"
                _write(out / f"{path.stem}.ipynb", nbformat.writes(executed))   # the outputs, to read or open
                _write(out / page, to_html(executed, resources_path=path.parent))
                seconds = time.perf_counter() - tic
                entries.append({"file": path.name, "href": page, "title": _title(source, path.stem),
                                "goals": _goals(source), "seconds": seconds})
                log(f"[{k}/{len(paths)}] {path.name}: {seconds:.0f} s in {mode} mode -> {out / page}")
        finally:
            if jupyter_path is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = jupyter_path
    built = datetime.now(timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M %Z")
    index = out / "index.html"
    _write(index, _index_html(entries, mode, built))
    log(f"book: {len(entries)} notebook(s) in {mode} mode, {time.perf_counter() - tic_all:.0f} s -> {index}")
    return index


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m equimod_edu.book", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="full mode (default: fast mode, EQUIMOD_FAST=1)")
    parser.add_argument("--only", default=None, help="notebook numbers to build, e.g. 01,03 (default: all)")
    parser.add_argument("--out", default=None, help="output folder (default: book/ next to the notebooks folder)")
    parser.add_argument("--notebooks", default=str(NOTEBOOKS), help="the notebooks folder (default: %(default)s)")
    parser.add_argument("--timeout", type=_positive_seconds, default=None,
                        help=f"seconds a cell may take (default {TIMEOUT_S['fast']} fast, {TIMEOUT_S['full']} full)")
    args = parser.parse_args(argv)
    folder = Path(args.notebooks)
    try:
        paths = select(folder, args.only)
    except ValueError as error:
        parser.error(str(error))
    out = Path(args.out) if args.out else folder.resolve().parent / "book"

    try:
        build(paths, out, full=args.full, timeout=args.timeout, log=lambda line: print(line, flush=True))
    except BookError as error:
        print(f"book: error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


def _positive_seconds(text: str) -> int:
    """--timeout: a whole number of seconds, at least 1 (0 or less would switch the hang guard off)."""
    try:
        seconds = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of seconds, got {text!r}") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"a cell needs at least 1 s (the guard against a hung kernel), got {text}")
    return seconds


if __name__ == "__main__":
    sys.exit(main())
