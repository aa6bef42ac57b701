"""Execute a notebook headless (nbclient) and save it with its outputs.

    python analysis/run_notebook.py analysis/figures.ipynb [--out executed.ipynb] [--timeout 1800]

The kernel runs in the notebook's folder with this process's environment (MLFLOW_TRACKING_URI,
IFRVIS_SWEEP, ... reach its parameters cell). The kernel is the `python3` kernelspec when one is
installed, else this interpreter started with `-m ipykernel_launcher`. What the notebook's last cell
prints (analysis/figures.ipynb: what was regenerated, what was not and why) is printed here too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from ifrvis.cli import ArgumentParser


def ensure_kernel(name: str = "python3") -> str:
    """The kernelspec to use: `name` if installed, else one written for this interpreter under the
    environment's `share/jupyter/kernels` (where jupyter looks for it)."""
    manager = KernelSpecManager()
    try:
        manager.get_kernel_spec(name)
        return name
    except NoSuchKernel:
        from ipykernel.kernelspec import install

        install(kernel_name=name, prefix=sys.prefix)
        return name


def run_notebook(path: str | Path, out: str | Path | None = None, timeout: int = 1800) -> Path:
    """Execute every cell of `path` in its folder; write the executed notebook to `out` (default: in
    place). Raises CellExecutionError naming the failing cell."""
    path = Path(path).resolve()
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name=ensure_kernel(),
        resources={"metadata": {"path": str(path.parent)}},
    )
    target = Path(out) if out else path
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        client.execute()
    finally:
        nbformat.write(notebook, target)
    return target


def last_cell_text(path: str | Path) -> str:
    """The text the last code cell of an executed notebook printed (stdout and stderr)."""
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    outputs = cells[-1].outputs if cells else []
    return "".join(output.get("text", "") for output in outputs if output.get("output_type") == "stream")


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook")
    parser.add_argument("--out", help="where to write the executed notebook (default: in place)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = parser.parse_args(argv)
    try:
        target = run_notebook(args.notebook, args.out, args.timeout)
    except CellExecutionError as error:
        print(f"error: {args.notebook}: a cell failed:\n{error}", file=sys.stderr)
        return 1
    print(last_cell_text(target), end="")
    print(f"executed {args.notebook} -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
