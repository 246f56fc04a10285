"""Run the benchmarks and write bench/RESULTS.md.

    python bench/run.py [--quick] [--only 1,4] [--out bench/RESULTS.md] [--json FILE]
                        [--compare-tree DIR]

--quick          a smoke mode of a few seconds: every figure runs, tiny sizes, few rounds
--only N[,M]     run only these figures (numbers as in the summary)
--compare-tree   DIR holds a patched copy of the cliproxy_host package: the call-path
                 figures are run again against it (PYTHONPATH=DIR, in a subprocess) and
                 RESULTS.md gets a before/after table

Exits 1 if a figure failed to run; a missed target is reported, not an error.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# Import `bench.*` from the repository, but leave PYTHONPATH in front of it so that
# --compare-tree can substitute another cliproxy_host.
if sys.path and Path(sys.path[0] or ".").resolve() == HERE:
    sys.path.pop(0)
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

import orjson  # noqa: E402

from bench import report  # noqa: E402
from bench.figures import CALL_PATH, FIGURES, Check, Context, FigureResult  # noqa: E402
from bench.harness import Settings  # noqa: E402


def _parse_only(value: str) -> set[int]:
    return {int(part) for part in value.split(",") if part.strip()}


def _print_result(fig: FigureResult) -> None:
    print(f"\n== Figure {fig.number}: {fig.title} ({fig.seconds:.1f} s)", flush=True)
    for check in fig.checks:
        print(f"  {check.key:3} {check.label}", flush=True)
        print(f"      {check.measured}   target {check.target}   -> {check.verdict}", flush=True)
        if check.absolute:
            print(f"      {check.absolute}", flush=True)
    for line in fig.details:
        if line.startswith("|"):
            print(f"    {line}", flush=True)


def _compare(tree: Path, args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    if not (tree / "cliproxy_host" / "__init__.py").is_file():
        raise SystemExit(f"--compare-tree {tree}: no cliproxy_host package in it")
    out_json = workdir / "after.json"
    only = sorted(CALL_PATH if args.only is None else set(CALL_PATH) & args.only)
    cmd = [
        sys.executable,
        str(HERE / "run.py"),
        "--only",
        ",".join(map(str, only)),
        "--out",
        str(workdir / "after.md"),
        "--json",
        str(out_json),
    ]
    if args.quick:
        cmd.append("--quick")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tree), env.get("PYTHONPATH")) if p)
    print(f"\n== re-running figures {only} against {tree}", flush=True)
    subprocess.run(cmd, env=env, check=True, cwd=workdir)
    data: dict[str, object] = orjson.loads(out_json.read_bytes())
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description="cliproxy-host benchmarks")
    parser.add_argument("--quick", action="store_true", help="smoke mode: a few seconds")
    parser.add_argument("--only", type=_parse_only, default=None, help="figures, e.g. 1,4")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--json", type=Path, default=None, help="also write the checks as JSON")
    parser.add_argument("--compare-tree", type=Path, default=None)
    parser.add_argument(
        "--compare-note", default=None, help="what the compare tree changes (for RESULTS.md)"
    )
    args = parser.parse_args()

    settings = Settings.smoke() if args.quick else Settings.full()
    machine = report.machine_info()
    out: Path = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python bench/run.py", *sys.argv[1:]])
    print(
        f"cliproxy-host benchmarks ({'quick' if args.quick else 'full'}), {machine['cpu']}, "
        f"{machine['cores']} cores, Python {machine['python']}",
        flush=True,
    )
    print(f"cliproxy_host from {machine['cliproxy_host']}", flush=True)

    started = time.perf_counter()
    results: list[FigureResult] = []
    errors: dict[int, str] = {}
    with tempfile.TemporaryDirectory(prefix="cliproxy-bench-") as tmp:
        ctx = Context(settings=settings, workdir=Path(tmp), out_dir=out.parent)
        for figure in FIGURES:
            if args.only is not None and figure.number not in args.only:
                continue
            print(f"\n-- running figure {figure.number}: {figure.title}", flush=True)
            t0 = time.perf_counter()
            try:
                fig = figure.run(ctx)
            except Exception as exc:
                traceback.print_exc()
                errors[figure.number] = f"{type(exc).__name__}: {exc}"
                fig = FigureResult(figure.number, figure.title)
                fig.checks.append(
                    Check(f"{figure.number}", figure.title, "error", met=False, absolute=str(exc))
                )
            fig.seconds = time.perf_counter() - t0
            results.append(fig)
            _print_result(fig)

        comparison = None
        if args.compare_tree is not None:
            after = _compare(args.compare_tree.resolve(), args, Path(tmp))
            comparison = report.comparison_section(
                results, after, args.compare_tree.resolve(), args.compare_note
            )

    seconds = time.perf_counter() - started
    machine["load average at end"] = report.load_average()
    text = report.render(
        results,
        machine,
        command=command,
        quick=args.quick,
        seconds=seconds,
        errors=errors,
        comparison=comparison,
    )
    history = Path(__file__).with_name("HISTORY.md")
    if history.is_file():
        text += "\n" + history.read_text(encoding="utf-8")
    out.write_text(text, encoding="utf-8")
    if args.json is not None:
        args.json.write_bytes(
            orjson.dumps(report.to_json(results, machine), option=orjson.OPT_INDENT_2)
        )
    print(f"\nwrote {out} ({seconds:.0f} s)", flush=True)
    if errors:
        print(f"figures that failed: {sorted(errors)}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
