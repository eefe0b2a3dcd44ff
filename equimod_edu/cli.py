"""The `equimod-edu` command line: demo, gallery, train, evaluate, compare.

    equimod-edu demo                               # the main job (`make demo`)
    equimod-edu gallery                            # the augmentation engine, as a figure
    equimod-edu compare --variants simclr,equimod --seeds 0,1,2 --out runs/headline
    equimod-edu evaluate runs/equimod
    equimod-edu train --preset cpu-live --out runs/equimod
    equimod-edu train --preset cpu-live --no-equimod --out runs/simclr
    equimod-edu train --out runs/equimod --resume
    torchrun --nproc_per_node=2 -m equimod_edu.cli train --preset cpu-live --out runs/ddp

Every TrainConfig field is a flag (`--batch-size 128`, `--hue-encoding cyclic`,
`--augment-overrides hue=0.5,gray_p=0`, `--param-groups crop,hue`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time
import typing
from pathlib import Path

from . import __version__


# --------------------------------------------------------------------------------------------
# Config fields as flags
# --------------------------------------------------------------------------------------------
def _parse_overrides(text: str) -> dict:
    """'hue=0.5,crop_scale=[0.4,1]' -> {'hue': 0.5, 'crop_scale': [0.4, 1]}; values parsed as JSON if they can be."""
    out = {}
    for item in filter(None, re.split(r",(?![^\[]*\])", text)):  # commas inside [...] belong to a list
        if "=" not in item:
            raise argparse.ArgumentTypeError(f"expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


class _NoneGiven:
    """The value of an optional flag given as 'none': unlike a flag not given, it sets the field to None."""


NONE_GIVEN = _NoneGiven()


def _checked_overrides(overrides) -> dict:
    """The --overrides of compare and demo, checked: TrainConfig fields only (ValueError naming the others)."""
    from .config import TrainConfig, check_fields

    overrides = dict(overrides or {})
    try:
        check_fields(TrainConfig, overrides)
    except ValueError as error:
        raise ValueError(f"--overrides: {error}; see `equimod-edu train --help` for the fields") from None
    return overrides


def _optional(cast):
    return lambda text: NONE_GIVEN if text.lower() in ("none", "") else cast(text)


def add_config_flags(parser: argparse.ArgumentParser, config_class, helps: typing.Optional[dict] = None) -> None:
    """One --flag per dataclass field, typed from its annotation; default None = 'not given'; helps: field -> help."""
    helps = helps or {}
    hints = typing.get_type_hints(config_class)
    for f in dataclasses.fields(config_class):
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        args = typing.get_args(hint)
        base = next((a for a in args if a is not type(None)), hint) if args else hint
        if base is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=helps.get(f.name))
        elif base is dict:
            parser.add_argument(flag, dest=f.name, type=_parse_overrides, default=None, metavar="K=V,...",
                                help=helps.get(f.name))
        elif base is tuple:
            parser.add_argument(flag, dest=f.name, default=None, metavar="A,B,...",
                                type=_optional(lambda s: tuple(filter(None, s.split(",")))), help=helps.get(f.name))
        else:
            parser.add_argument(flag, dest=f.name, type=_optional(base) if args else base, default=None,
                                help=helps.get(f.name))


def _given(args, config_class) -> dict:
    """The fields given as flags (``--max-steps none`` included, as None); flags not given are left out."""
    values = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(config_class)}
    return {name: None if value is NONE_GIVEN else value for name, value in values.items() if value is not None}


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------
def cmd_train(args) -> int:
    from .checkpoint import CHECKPOINT_NAME, load_checkpoint
    from .config import TrainConfig
    from .run_folder import NonFiniteLossError
    from .train import Trainer

    overrides = _given(args, TrainConfig)
    if args.out:
        overrides["out_dir"] = args.out
    if args.resume:
        out_dir = Path(overrides.get("out_dir", TrainConfig().out_dir))
        saved = load_checkpoint(out_dir / CHECKPOINT_NAME)["config"] if (out_dir / CHECKPOINT_NAME).exists() else None
        if saved is None:
            print(f"error: --resume: no checkpoint at {out_dir / CHECKPOINT_NAME}", file=sys.stderr)
            return 2
        cfg = TrainConfig.from_dict({**saved, **overrides})
    else:
        cfg = TrainConfig.preset(args.preset, **overrides)
    cfg.validate()  # a bad value: one line from main(), before any work
    print(json.dumps(cfg.to_dict()))  # the resolved config, first (also saved as config.json)
    start = time.perf_counter()
    try:
        trainer = Trainer(cfg, resume=args.resume, overwrite=args.overwrite)
        for metrics in trainer.epochs():
            shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
            if trainer.is_main:
                print(json.dumps({"epoch_end": shown["epoch"] if "epoch" in shown else metrics["epoch"], **shown}),
                      flush=True)
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    if trainer.is_main:
        print(f"{trainer.stop_reason} after {time.perf_counter() - start:.1f} s; run folder: {cfg.out_dir}")
    return 0


def cmd_gallery(args) -> int:
    """The augmentation engine on the shipped dataset: a gallery figure and parameter vectors."""
    import torch

    from .augment import AugmentationConfig
    from .data import synthetic
    from .figures import use_headless_backend, views_gallery
    from .recipes import describe_params

    use_headless_backend()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = synthetic("train")
    print(f"synthetic dataset: {len(data)} train images {tuple(data.images.shape[1:])} uint8, labels "
          f"{sorted(data.labels)} (built or loaded in {time.perf_counter() - start:.1f} s)")
    config = AugmentationConfig.synthetic()
    images = data.images[:6]
    fig = views_gallery(images, config, seed=args.seed)
    fig.savefig(out / "gallery.png", dpi=130)
    generator = torch.Generator().manual_seed(args.seed)
    params = config.sample(len(images), tuple(images.shape[-2:]), generator)
    print(f"\nencoded parameter vectors t of view 1 (standardised), {config.encoded_dim} columns:")
    print("    " + " ".join(f"{name[:6]:>6}" for name in config.column_names()))
    for i, row in enumerate(config.encode(params)):
        print(f"{i:>3} " + " ".join(f"{v:6.2f}" for v in row.tolist()) + f"   {describe_params(params, i)}")
    print(f"gallery: {out / 'gallery.png'}")
    return 0


def _positive_int(text: str) -> int:
    """The type of --jobs: a whole number >= 1 (argparse names the flag in its error)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _seeds(text: str, flag: str = "--seeds", minimum: int = 0) -> list[int]:
    """'0,1,2' -> [0, 1, 2] (also used for --per-class, with minimum 1); ValueError naming the flag."""
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"{flag}: expected whole numbers separated by commas (e.g. 0,1,2), got {text!r}") from None
    if not values or min(values) < minimum:
        raise ValueError(f"{flag}: expected one or more whole numbers >= {minimum} separated by commas, "
                         f"got {text!r}")
    return values


def cmd_compare(args) -> int:
    """Train and evaluate variants over seeds; print the mean +- std table."""
    from .compare import VARIANTS, compare, table_markdown
    from .figures import use_headless_backend

    use_headless_backend()
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        print(f"error: unknown variants {unknown}; choose from {sorted(VARIANTS)}", file=sys.stderr)
        return 2
    result = compare(variants, _seeds(args.seeds), args.out, preset=args.preset,
                     overrides=_checked_overrides(args.overrides),
                     fast_eval=not args.full_eval, progress=not args.no_progress, random_init=not args.no_random_init,
                     jobs=args.jobs)
    print("\n" + table_markdown(result["summary"]))
    print(f"\nwall time {result['wall_seconds']:.0f} s")
    print(f"{Path(args.out) / 'comparison.json'}")
    return 0


def cmd_demo(args) -> int:
    """The main job: SimCLR and SimCLR+EquiMod on the shipped dataset, evaluated with random init."""
    from .compare import DEMO_METRICS, METRICS, compare, table_markdown
    from .figures import use_headless_backend
    from .report import QUICK

    use_headless_backend()
    _checked_overrides(args.overrides)  # before any work
    start = time.perf_counter()
    out = Path(args.out or ("runs/demo-quick" if args.quick else "runs/demo"))  # quick models never pose as real
    cmd_gallery(argparse.Namespace(out=str(out), seed=args.seed))
    print("\ntraining SimCLR and SimCLR+EquiMod (preset cpu-live, same backbone, budget and seed), "
          "then evaluating both and a random-init backbone on held-out images...")
    overrides, sizes = dict(args.overrides or {}), None
    if args.quick:  # a one-minute smoke run of the whole job: tiny data, one epoch, small evaluation
        overrides = {"train_subset": 512, "epochs": 1, "batch_size": 64, **overrides}
        sizes = QUICK
    result = compare(["simclr", "equimod"], [args.seed], out, preset="cpu-live", overrides=overrides,
                     progress=not args.no_progress, eval_sizes=sizes, jobs=args.jobs)
    table = table_markdown(result["summary"], DEMO_METRICS)
    print("\n" + table)
    protocol = _probe_protocol(out, args.seed)
    print("\nchance: " + ", ".join(f"{k} {v:.3f}" for k, v in protocol["chance"].items()) +
          f". Probes: logistic regression on the frozen backbone features h, fitted on {protocol['n_train']} "
          f"training images, scored on {protocol['n_test']} held-out ones.")
    print("\n" + "\n".join(f"  {name}: {METRICS[name]}" for name in DEMO_METRICS))
    report = {name: runs[str(args.seed)] for name, runs in result["runs"].items()}
    report.update(wall_seconds=time.perf_counter() - start, seed=args.seed, preset="cpu-live",
                  chance=protocol["chance"], probe=protocol,
                  metrics=METRICS, table=table, quick=bool(args.quick))
    (out / "report.json").write_text(json.dumps(report, indent=2))
    times = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result["seconds"].items())
    print(f"\nwall time {report['wall_seconds']:.0f} s (train + evaluate: {times}); figure {out / 'comparison.png'}")
    print(f"{out / 'report.json'}")
    return 0


def _probe_protocol(out: Path, seed: int) -> dict:
    """Sizes and chance levels of the label probes, read from the SimCLR run's report."""
    report = json.loads((out / f"simclr-s{seed}" / "eval" / "report.json").read_text())
    chance = {f"{name}_acc": probe["chance"] for name, probe in report["labels"].items()
              if probe["metric"] == "accuracy"}
    return {"n_train": report["meta"]["n_train"], "n_test": report["meta"]["n_test"], "chance": chance}


def cmd_evaluate(args) -> int:
    """Evaluate a run: probes, kNN, equivariance metrics; report.json, report.md and figures."""
    from . import report as reports  # looked up at call time (tests replace evaluate_run)
    from .figures import use_headless_backend

    use_headless_backend()
    run_dir = Path(args.run_dir)
    out = Path(args.out) if args.out else (run_dir if run_dir.is_dir() else run_dir.parent) / "eval"
    reports.check_writable(out, hint="pass --out FOLDER to write the report elsewhere")  # before 40 s of work
    try:
        report = reports.evaluate_run(run_dir, fast=args.fast, sgd_epochs=args.sgd_epochs, seed=args.seed)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"evaluation of {run_dir} interrupted; nothing written") from None
    except reports.NonFiniteModelError:
        raise
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        reports.write_report(report, out)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"interrupted while writing the report into {out}: each file there is whole, "
                                f"old or new; run the evaluation again") from None
    print(reports.report_markdown(report))
    print(f"{out / 'report.json'}")
    return 0


def cmd_label_efficiency(args) -> int:
    """Accuracy against labels per class: linear probes on frozen runs, and a network from scratch."""
    from .checkpoint import load_model
    from .data import load_dataset
    from .dataset import shuffled_subset
    from .figures import use_headless_backend
    from .supervised import label_efficiency, label_efficiency_figure

    use_headless_backend()
    for flag, value, least in (("--n-train", args.n_train, 1), ("--n-test", args.n_test, 1),
                               ("--scratch-steps", args.scratch_steps, 0)):
        if value < least:
            raise ValueError(f"{flag} must be at least {least}, got {value}")
    per_class = _seeds(args.per_class, "--per-class", minimum=1)  # before any work
    models, cfg = {}, None
    for item in [r for r in args.runs.split(",") if r]:
        name, _, run_dir = item.rpartition("=")
        try:
            model, cfg = load_model(run_dir)
        except (FileNotFoundError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        models[name or Path(run_dir).name] = (model, cfg)
    if cfg is None:
        print("error: --runs names no run", file=sys.stderr)
        return 2
    train = shuffled_subset(load_dataset(cfg.dataset, "train", cfg.data_root), args.n_train, args.seed)
    test = shuffled_subset(load_dataset(cfg.dataset, "test", cfg.data_root), args.n_test, args.seed + 1)
    scratch = type(cfg).from_dict({**cfg.to_dict(), "equimod": False, "seed": args.seed})  # the same backbone
    result = label_efficiency(models, train, test, per_class, scratch=scratch, scratch_steps=args.scratch_steps,
                              seed=args.seed)
    result.update(command=" ".join(["equimod-edu", *sys.argv[1:]]) if sys.argv[1:2] == ["label-efficiency"] else None,
                  n_train_pool=len(train), seed=args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    label_efficiency_figure(result).savefig(out.with_suffix(".png"), dpi=130)
    print(f"{out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .config import TrainConfig

    parser = argparse.ArgumentParser(prog="equimod-edu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"equimod_edu {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the main job: random init vs SimCLR vs SimCLR+EquiMod on the shipped dataset")
    demo.add_argument("--out", default=None, help="default runs/demo (with --quick: runs/demo-quick)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--overrides", type=_parse_overrides, default=None, metavar="K=V,...",
                      help="TrainConfig overrides for both models, e.g. epochs=1,train_subset=2000")
    demo.add_argument("--quick", action="store_true", help="a one-minute smoke run (tiny budget; numbers mean little)")
    demo.add_argument("--no-progress", action="store_true")
    demo.add_argument("--jobs", type=_positive_int, default=min(2, os.cpu_count() or 1),
                      help="train SimCLR and EquiMod at once, one process each (default: 2 where there are 2 cores)")
    demo.set_defaults(func=cmd_demo)

    gallery = sub.add_parser("gallery", help="the augmentation engine: two views of a few images and their parameters")
    gallery.add_argument("--out", default="runs/gallery")
    gallery.add_argument("--seed", type=int, default=0)
    gallery.set_defaults(func=cmd_gallery)

    ev = sub.add_parser("evaluate", help="evaluate a trained run (probes, kNN, equivariance metrics)")
    ev.add_argument("run_dir")
    ev.add_argument("--out", default=None, help="report folder (default RUN_DIR/eval)")
    ev.add_argument("--fast", action="store_true", help="smaller evaluation sizes (a quick CPU check)")
    ev.add_argument("--sgd-epochs", type=int, default=None, help="also the paper's SGD linear evaluation (90; GPU)")
    ev.add_argument("--seed", type=int, default=0)
    ev.set_defaults(func=cmd_evaluate)

    comp = sub.add_parser("compare", help="train and evaluate variants over several seeds (mean +- std)")
    comp.add_argument("--variants", default="simclr,equimod")
    comp.add_argument("--seeds", default="0,1,2")
    comp.add_argument("--out", default="runs/compare")
    comp.add_argument("--preset", default="cpu-live")
    comp.add_argument("--overrides", type=_parse_overrides, default=None, metavar="K=V,...")
    comp.add_argument("--full-eval", action="store_true", help="the FULL evaluation sizes (slower)")
    comp.add_argument("--no-random-init", action="store_true",
                      help="leave out the random-init baseline (e.g. a second process sharing OUT)")
    comp.add_argument("--no-progress", action="store_true")
    comp.add_argument("--jobs", type=_positive_int, default=1,
                      help="train that many runs at once, one process each (e.g. 2 on a 2-core machine)")
    comp.set_defaults(func=cmd_compare)

    le = sub.add_parser("label-efficiency", help="accuracy against labels per class: frozen runs vs from scratch")
    le.add_argument("--runs", required=True, metavar="NAME=RUN_DIR,...", help="trained runs to probe (frozen h)")
    le.add_argument("--per-class", default="1,10,100,1000", help="labels per class")
    le.add_argument("--n-train", type=int, default=8000, help="pool of labelled training images to draw from")
    le.add_argument("--n-test", type=int, default=4000, help="held-out test images")
    le.add_argument("--scratch-steps", type=int, default=300, help="minimum steps of the network from scratch")
    le.add_argument("--seed", type=int, default=0)
    le.add_argument("--out", default="runs/label_efficiency.json")
    le.set_defaults(func=cmd_label_efficiency)

    train = sub.add_parser("train", help="train SimCLR / BYOL with or without EquiMod")
    train.add_argument("--preset", default="cpu-live", help=f"one of {', '.join(sorted(TrainConfig.PRESETS))}")
    train.add_argument("--out", default=None, help="run folder (same as --out-dir)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    train.add_argument("--overwrite", action="store_true", help="delete the run already in --out and start over")
    from .train import OBJECTIVES
    add_config_flags(train, TrainConfig, helps={
        "objective": f"what is optimised: one of {', '.join(OBJECTIVES)} (default self-supervised: the base, "
                     f"with EquiMod unless --no-equimod)",
        "augself_groups": "the relative parameters AugSelf regresses (--objective augself): crop,colour",
        "cassle_embed": "width of CASSLE's e(t), joined to h before the projector (--objective cassle --no-equimod)",
        "care_group_size": "images per group sharing one augmentation per view (--objective care; divides "
                           "the batch)",
        "care_pair": "separate (the paper: an extra group-shared pair for the CARE loss, about 2x a SimCLR step) "
                     "or shared (one group-shared pair for both losses) (--objective care)",
        "essl_weight": "weight of E-SSL's rotation cross-entropy (--objective essl; paper 0.4)",
        "essl_size": "side in pixels of E-SSL's small view: view 1 averaged down to it (--objective essl)",
        "split_dim": "columns of z predicted by the hypernetwork, the last of z (--objective split; < z_dim)"})
    train.set_defaults(func=cmd_train)
    return parser


#: Exit codes: 0 done, 1 an unexpected error, 2 a bad value or file, 3 non-finite training, 4 training
#: stopped by an error of its data, disk or files (the checkpoint saved where it could), 130 interrupted.
EXIT_CODES = {"NonFiniteLossError": 3, "NonFiniteModelError": 3, "TrainingError": 4, "ReportError": 4}


def main(argv=None) -> int:
    """Run a command; an error is one line on stderr (``--debug`` shows the traceback too)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt as stop:
        print(f"\nstopped: {str(stop) or 'interrupted'}", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            raise
        name = type(error).__name__
        known = isinstance(error, (ValueError, FileNotFoundError, OSError, RuntimeError))
        message = " ".join(str(error).split()) or name  # one line, whatever the exception held
        print(f"error: {message if known else name + ': ' + message}"
              + ("" if known else " (run with --debug for the traceback)"), file=sys.stderr)
        return EXIT_CODES.get(name, 2 if known else 1)


if __name__ == "__main__":
    sys.exit(main())
