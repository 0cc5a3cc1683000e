"""The command line: ``python -m bnlib {list, status, run, bench}``.

- ``python -m bnlib list``: the experiments, their chapter and what they compute.
- ``python -m bnlib status``: one row per experiment: its chapter, whether its quick result
  is cached, whether a full result is committed and computed (or reproduced) by the current
  code, and the estimated time of a full run on this device.
- ``python -m bnlib status --revalidate [EXPERIMENT ...]``: recompute the reproduction
  subset of each committed full result that is stale or names no clean commit, and mark it
  current where the current code reproduces it (:mod:`bnlib.validation`); exit code 1 if
  one was not reproduced.
- ``python -m bnlib run EXPERIMENT [--profile smoke|quick|full] [--device cuda] [--force]
  [--set KEY=VALUE ...]``: run an experiment (with a progress bar) and store its result
  where the book reads it (:mod:`bnlib.results`); prints the result's path, wall time and
  a summary. ``--set`` replaces one of the profile's arguments (the value is read as JSON
  where it parses, else as a string): ``--set dataset=cifar10 --set 'depths=[56, 110]'``.
  ``run --all --profile full`` runs every experiment whose full result is missing or
  stale, saying first how long it expects that to take.
- ``python -m bnlib bench [--quick] [--output BENCHMARKS.md]``: the engine's benchmark
  (:mod:`bnlib.bench`).

An error the user can cause (a bad argument, missing or corrupt data, a results folder
that cannot be written, a file that cannot be read) is one line ``error: ...`` on stderr
and exit code 2, never a traceback. The results folder is checked before computing.
"""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bnlib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments")
    status = sub.add_parser("status", help="what is cached or committed, and full-run estimates")
    status.add_argument(
        "--device", default=None, help="estimate for this device (with --revalidate: compute there)"
    )
    status.add_argument(
        "--revalidate",
        action="store_true",
        help="recompute the reproduction subset of every committed full result that is stale "
        "or names no clean commit, and mark those the current code reproduces as current",
    )
    status.add_argument(
        "experiments", nargs="*", metavar="EXPERIMENT", help="with --revalidate: only these"
    )
    run = sub.add_parser("run", help="run an experiment and store its result")
    run.add_argument("experiment", nargs="?", help="name, as 'list' shows it")
    run.add_argument(
        "--all",
        action="store_true",
        help="every experiment whose result in this profile is missing or stale",
    )
    run.add_argument(
        "--profile",
        default=None,
        help="smoke (seconds), quick (CPU, the book's scale) or full (papers' scale); "
        "default: $BNLIB_PROFILE or quick",
    )
    run.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best)")
    run.add_argument("--force", action="store_true", help="recompute even if cached")
    run.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run on Ray, each experiment split into independent shards (seeds, learning "
        "rates...): on a local Ray started for the run, or on the cluster at ADDRESS "
        "(HOST:PORT of its head); needs `pip install 'bnlib[ray]'`",
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="replace one of the profile's arguments; VALUE is JSON where it parses, else a "
        "string (e.g. --set dataset=cifar10 --set 'seeds=[0, 1]'); repeatable",
    )
    bench = sub.add_parser("bench", help="benchmark the engine against the naive way")
    bench.add_argument(
        "--quick", action="store_true", help="fewer steps and models (a smoke run, minutes less)"
    )
    bench.add_argument("--device", default=None, help="cuda or cpu (default: the best)")
    bench.add_argument(
        "--output", default=None, help="write the Markdown report here (e.g. BENCHMARKS.md)"
    )
    bench.add_argument(
        "--no-chapter-costs",
        action="store_true",
        help="skip timing every experiment's quick profile (minutes)",
    )
    return parser


def _message(error: BaseException) -> str:
    """The one-line message for an error the user can fix."""
    from bnlib.data import CorruptDatasetError, DatasetNotFoundError
    from bnlib.results import ResultsNotWritableError

    if isinstance(error, (ResultsNotWritableError, DatasetNotFoundError, CorruptDatasetError)):
        return str(error)  # bnlib's own messages name the problem and the fix
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        hint = ""
        if isinstance(error, PermissionError):
            hint = (
                ". Fix: make it readable/writable, or point BNLIB_RESULTS / BNLIB_DATA "
                "(or --output) elsewhere"
            )
        return f"{error.strerror}{where}{hint}"
    return str(error) or type(error).__name__


def _overrides(name: str, settings: list[str]) -> dict:
    """``--set KEY=VALUE`` arguments as keyword arguments of experiment ``name``, checked
    (:func:`bnlib.experiments.check_arguments`) before any work."""
    import json

    from bnlib import experiments

    overrides = {}
    for setting in settings:
        key, equals, text = setting.partition("=")
        key = key.strip()
        if not equals or not key:
            raise ValueError(f"--set takes KEY=VALUE, got {setting!r} (e.g. --set dataset=cifar10)")
        try:
            overrides[key] = json.loads(text)
        except json.JSONDecodeError as error:
            if text.strip()[:1] in ("[", "{", '"') or text.strip() in ("", "NaN", "Infinity"):
                raise ValueError(
                    f"--set {setting}: {text!r} is not valid JSON ({error.msg} at character "
                    f"{error.pos}); write lists as --set '{key}=[1, 2]'"
                ) from None
            overrides[key] = text  # a bare word: a string (e.g. dataset=cifar10)
    return experiments.check_arguments(name, overrides)


def _ray_errors() -> tuple[type[Exception], ...]:
    """A Ray run's errors a user can cause (Ray missing, no cluster, a failing shard)."""
    from bnlib.distributed import RayUnavailableError, ShardFailedError

    return (RayUnavailableError, ShardFailedError)


def _run(args: argparse.Namespace) -> int:
    from bnlib import experiments
    from bnlib.device import pick_device
    from bnlib.status import pending, run_all

    if args.ray not in (None, "local") and not args.experiment and not args.all:
        experiments.load_all()
        if args.ray in experiments.REGISTRY:  # `run --ray NAME`: argparse took NAME as address
            raise ValueError(
                f"--ray took {args.ray!r} as the cluster's address: write `run {args.ray} "
                "--ray` (a local Ray) or `run NAME --ray=HOST:PORT`"
            )
    if args.all == bool(args.experiment):
        raise ValueError("give one experiment's name, or --all (not both)")
    profile = experiments.profile_name(args.profile)
    if args.all and args.set:
        raise ValueError("--set applies to one experiment, not to --all")
    overrides = {} if args.all else _overrides(args.experiment, args.set)  # names checked first
    runner = None
    names = pending(profile, args.force) if args.all else None
    if args.ray is not None and not (args.all and not names):
        from bnlib.distributed import RayRunner  # started only when there is work for it

        runner = RayRunner(None if args.ray == "local" else args.ray)
        # each shard picks the cluster's device unless one is named
        device = args.device
    else:
        device = str(pick_device(args.device))
    try:
        if args.all:
            run_all(profile, device, force=args.force, runner=runner, names=names)
            return 0
        result = experiments.run(
            args.experiment,
            profile,
            device=device,
            force=args.force,
            compute=runner.compute if runner else None,
            **overrides,
        )
    except (TypeError, IndexError, KeyError, ZeroDivisionError) as error:
        if not overrides:
            raise  # a bug in bnlib: the traceback is what its fix needs
        given = " ".join(f"--set {k}={v}" for k, v in overrides.items())
        raise ValueError(
            f"{args.experiment} failed with {given} ({type(error).__name__}: {error}): a value "
            "outside what it supports; `python -m bnlib list` and its docstring say what each "
            "argument takes"
        ) from error
    finally:
        if runner is not None:
            runner.close()
    print(result.provenance_line)
    print(f"{len(result.frame)} rows -> {result.path}")
    return 0


def _status(args: argparse.Namespace) -> int:
    """``status`` (and ``status --revalidate``); exit code 1 if a result was not reproduced."""
    from bnlib import experiments
    from bnlib.status import format_status, status

    if args.experiments and not args.revalidate:
        raise ValueError("experiment names go with --revalidate (status lists them all)")
    if args.device is not None:
        from bnlib.device import pick_device

        pick_device(args.device)  # an unknown or absent device: a clear error, not estimates
    failed = []
    if args.revalidate:
        from bnlib.validation import revalidate

        for name in args.experiments:
            experiments.get(name)  # an unknown name: a clear error before any work
        device = args.device or "cpu"
        outcomes = revalidate(args.experiments or None, device=device)
        failed = [o.name for o in outcomes if not o.validated]
        sys.stdout.flush()
    print(format_status(status(args.device)))
    if failed:
        print(
            f"\nnot reproduced by the current code, so still stale: {', '.join(failed)}",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code.

    Returns:
        0 on success; 2 for an error the user can cause (bad input, missing or corrupt
        data, a results folder or file that cannot be written or read), reported as one
        line ``error: ...`` on stderr; 130 if interrupted (Ctrl-C).
    """
    from bnlib.data import CorruptDatasetError

    args = _parser().parse_args(argv)
    from bnlib import experiments

    try:
        if args.command == "list":
            experiments.load_all()
            for name in sorted(experiments.REGISTRY):
                exp = experiments.REGISTRY[name]
                print(f"{name:24s} [{exp.chapter}] {exp.description}")
            return 0
        if args.command == "status":
            return _status(args)
        if args.command == "run":
            return _run(args)
        from pathlib import Path

        from bnlib.bench import run_benchmarks

        if args.output and Path(args.output).is_dir():
            raise ValueError(
                f"--output {args.output} is a folder; give a file in it, e.g. "
                f"{Path(args.output) / 'BENCHMARKS.md'} (checked before the benchmark runs)"
            )
        if args.output and not Path(args.output).resolve().parent.is_dir():
            raise ValueError(
                f"--output {args.output}: folder {Path(args.output).resolve().parent} does not "
                "exist; create it first (checked before the benchmark runs)"
            )

        run_benchmarks(
            quick=args.quick,
            device=args.device,
            output=args.output,
            chapter_costs=not args.no_chapter_costs,
        )
        return 0
    except (ValueError, OSError, CorruptDatasetError, *_ray_errors()) as error:
        # OSError covers DatasetNotFoundError, ResultsNotWritableError and permissions
        print(f"error: {_message(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
