"""Benchmark: start-up time of the `valdrix` client commands next to the interpreter's own start-up.

Each command runs `--runs` times as a fresh process (after one warm-up run that fills the bytecode cache); the
median wall time and the median CPU time (user + system, which machine load barely changes) are printed next to
`python -c pass` run the same way in the same environment. Target: `valdrix --help` and
`valdrix preflight --help` within 0.3 s.

By default it measures a fresh venv with only the client wheel (`pip install valdrix`, as a pipeline installs
it): it builds the wheel, creates the venv under a temporary directory and installs into it. `--python PATH`
measures an existing environment instead (e.g. the development venv: `--python .venv/bin/python`).

Run:  .venv/bin/python bench/startup.py [--runs 15] [--python PATH]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 0.3


def client_venv(directory: Path) -> Path:
    """Build the wheel and install it alone into a new venv; return the venv's python."""
    dist = directory / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)], check=True,
                   capture_output=True)
    venv = directory / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(next(dist.glob("*.whl")))], check=True)
    return python


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median_seconds(argv: list[str], runs: int) -> tuple[float, float]:
    """Return the median (wall, CPU) seconds of `runs` fresh processes."""
    subprocess.run(argv, check=True, capture_output=True)  # warm-up: compiles bytecode on first use
    wall, cpu = [], []
    for _ in range(runs):
        started, cpu_started = time.perf_counter(), _cpu()
        subprocess.run(argv, check=True, capture_output=True)
        wall.append(time.perf_counter() - started)
        cpu.append(_cpu() - cpu_started)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--python", type=Path, help="measure this environment instead of a fresh client venv")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="valdrix-startup-") as tmp:
        python = args.python or client_venv(Path(tmp))
        valdrix = str(Path(python).parent / "valdrix")
        cases = [("python -c pass (baseline)", [str(python), "-c", "pass"]),
                 ("python -c 'import typer'", [str(python), "-c", "import typer"]),
                 ("valdrix --help", [valdrix, "--help"]),
                 ("valdrix preflight --help", [valdrix, "preflight", "--help"])]
        print(f"environment: {python} ({'given' if args.python else 'fresh venv, client wheel only'}); "
              f"median of {args.runs} runs")
        results = {name: median_seconds(argv, args.runs) for name, argv in cases}
    base_wall, base_cpu = results["python -c pass (baseline)"]
    print(f"  {'command':28} {'wall':>9} {'over base':>10} {'CPU':>9} {'over base':>10}")
    for name, (wall, cpu) in results.items():
        verdict = "" if not name.startswith("valdrix") else (
            "  ok" if wall <= TARGET_SECONDS else f"  wall over the {TARGET_SECONDS} s target"
            + (" (CPU within it: machine load)" if cpu <= TARGET_SECONDS else ""))
        print(f"  {name:28} {wall * 1000:6.1f} ms {(wall - base_wall) * 1000:+7.1f} ms {cpu * 1000:6.1f} ms "
              f"{(cpu - base_cpu) * 1000:+7.1f} ms{verdict}")


if __name__ == "__main__":
    main()
