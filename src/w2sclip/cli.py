"""The ``w2sclip`` command line: parses flags and calls library functions, nothing else."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Weak-to-strong generalization with CLIP: CPL and baselines.")


@app.callback()
def main() -> None:
    """Weak-to-strong generalization with CLIP: CPL and baselines."""


data_app = typer.Typer(no_args_is_help=True, help="Datasets: generate, inspect.")
list_app = typer.Typer(no_args_is_help=True, help="List registered components.")
app.add_typer(data_app, name="data")
app.add_typer(list_app, name="list")


def _domains(value: Optional[str]) -> Optional[tuple[str, ...]]:
    return tuple(d.strip() for d in value.split(",") if d.strip()) if value else None


@app.command()
def pretrain(
    out: Path = typer.Option(..., help="Output .safetensors file."),
    arch: str = typer.Option("w2s-vit-tiny", help="Built-in open_clip architecture."),
    steps: int = typer.Option(2400, help="Optimizer steps."),
    batch_size: int = typer.Option(256),
    lr: float = typer.Option(1e-3),
    corpus_size: int = typer.Option(80_000, help="Captioned images rendered for the corpus."),
    domains: Optional[str] = typer.Option(None, help="Comma-separated domains (default: all six)."),
    seed: int = typer.Option(0, help="Corpus and init seed (the corpus never overlaps any dataset)."),
    init: Optional[str] = typer.Option(None, help="Start from this checkpoint (name or path)."),
) -> None:
    """Pretrain the built-in CLIP contrastively on a generated captioned corpus."""
    from w2sclip.models.strong.pretrain import PretrainConfig, pretrain as run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    kw = dict(arch=arch, steps=steps, batch_size=batch_size, lr=lr, corpus_size=corpus_size,
              seed=seed, init=init)
    if domains:
        kw["domains"] = _domains(domains)
    path = run(PretrainConfig(**kw), out)
    typer.echo(f"wrote {path}")


@app.command()
def demo(
    out: Path = typer.Option(Path("w2sclip-out"), help="Output folder for results and report."),
    quick: bool = typer.Option(False, "--quick", help="Small data, 1 seed: about a minute."),
    seeds: Optional[int] = typer.Option(None, help="Number of seeds (default 3, or 1 with --quick)."),
    strong: str = typer.Option("full,limited", help="Comma-separated strong models."),
    domains: Optional[str] = typer.Option(None, help="Comma-separated domains (default: all six)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Data and array cache (default $W2SCLIP_CACHE "
                                                        "or ~/.cache/w2sclip)."),
    methods: Optional[str] = typer.Option(None, help="Comma-separated methods (default: every "
                                                     "method of the demo; see `w2sclip list methods`)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Run the whole weak-to-strong study on the built-in benchmark, offline."""
    from w2sclip.data.builtin_render import DOMAINS
    from w2sclip.demo import DEMO_METHODS, run_demo
    from w2sclip.methods import METHODS

    chosen = _domains(methods) or DEMO_METHODS
    unknown = [m for m in chosen if m not in METHODS]
    if unknown:
        raise typer.BadParameter(f"unknown method(s) {unknown}; valid: {', '.join(METHODS)}")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING)
    res = run_demo(out, quick=quick, seeds=seeds, strong=_domains(strong) or ("full", "limited"),
                   domains=_domains(domains) or DOMAINS, methods=chosen, cache_dir=cache_dir,
                   progress=not quiet)
    typer.echo(res["report"])
    typer.echo("time per stage (s): " + ", ".join(f"{k} {v}" for k, v in res["timings"].items()))
    typer.echo(f"wrote {res['out']}/results.csv, results.json, report.md")


@app.command("selection-study")
def selection_study_cmd(
    out: Path = typer.Option(Path("w2sclip-selection"), help="Output folder."),
    quick: bool = typer.Option(False, "--quick", help="Small data, 1 seed."),
    seeds: Optional[int] = typer.Option(None, help="Number of seeds (default 3, or 1 with --quick)."),
    methods: str = typer.Option("cpl,kd_lp,logconf", help="Comma-separated methods."),
    cache_dir: Optional[Path] = typer.Option(None, help="Data and array cache (as for demo)."),
) -> None:
    """Compare model-selection rules (weak-label loss, agreement, entropy, ...) with a test oracle."""
    import csv

    from w2sclip.data.builtin_render import DOMAINS
    from w2sclip.demo import default_cache_dir, iter_builtin_runs
    from w2sclip.pipeline import Timer
    from w2sclip.selection import selection_study, selection_table

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    n = seeds if seeds is not None else (1 if quick else 3)
    runs = iter_builtin_runs(quick, n, ("full", "limited"), DOMAINS, cache_dir or default_cache_dir(),
                             Timer(), progress=False)
    records = selection_study(runs, _domains(methods))
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "selection.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(records[0]))
        w.writeheader()
        w.writerows(records)
    table = selection_table(records)
    (out / "selection.md").write_text("# Model selection under weak supervision\n\n"
                                      "Mean D_test accuracy (%) of each rule's pick, over domains "
                                      "and seeds (± std over seeds).\n\n" + table + "\n")
    typer.echo(table)


def _setup_logging(quiet: bool, log_json: Optional[Path] = None, offline: bool = False) -> None:
    """Human-readable warnings on stderr; with ``--log-json FILE`` every INFO record as a JSON line;
    ``offline`` sets HF_HUB_OFFLINE=1 for every loader."""
    import json as _json

    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"

    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if log_json is not None:
        class _Json(logging.Formatter):
            def format(self, r: logging.LogRecord) -> str:
                return _json.dumps({"t": round(r.created, 3), "level": r.levelname, "logger": r.name,
                                    "msg": r.getMessage()})

        handler = logging.FileHandler(log_json)
        handler.setFormatter(_Json())
        handler.setLevel(logging.INFO)
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)


def _resolve_config(config: str) -> Path:
    """A YAML path, or a preset name from configs/ (``builtin`` -> configs/builtin.yaml)."""
    from w2sclip.config import preset_dir

    p = Path(config)
    if not p.exists() and (preset_dir() / f"{config}.yaml").exists():
        return preset_dir() / f"{config}.yaml"
    return p


@app.command("run")
def run_cmd(
    config: str = typer.Argument(..., help="YAML preset (path or name in configs/) or '-' for defaults."),
    set_: list[str] = typer.Option([], "--set", help="Override: key=value (YAML value), repeatable."),
    runs_dir: Path = typer.Option(Path("runs"), help="Folder holding one sub-folder per run."),
    force: bool = typer.Option(False, help="Recompute even when the run is done."),
    offline: bool = typer.Option(False, "--offline", help="Never touch the network (HF_HUB_OFFLINE=1)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars, warnings only."),
    log_json: Optional[Path] = typer.Option(None, help="Also write log records as JSON lines here."),
) -> None:
    """Execute ONE run: the preset's base values plus --set (grid values are not crossed)."""
    from w2sclip.config import check_runs, load_sweep, make_run_config, parse_overrides
    from w2sclip.runs import load_records, run

    _setup_logging(quiet, log_json, offline)
    if config == "-":
        cfg = make_run_config(parse_overrides(set_))
        check_runs([cfg])
    else:
        sweep = load_sweep(_resolve_config(config), set_)
        first = {k: v[0] for k, v in sweep.grid.items()}
        cfg = make_run_config({**sweep.base, **first})
    if quiet:
        cfg = cfg.model_copy(update={"progress": False})
    folder = run(cfg, runs_dir, force=force)
    from w2sclip.report import markdown_report

    typer.echo(markdown_report(load_records(folder), f"{cfg.slug()}"))
    typer.echo(f"run folder: {folder}")


@app.command("sweep")
def sweep_cmd(
    config: str = typer.Argument(..., help="YAML preset (path or name in configs/)."),
    set_: list[str] = typer.Option([], "--set", help="Override: key=value or grid.key=[...], repeatable."),
    runs_dir: Path = typer.Option(Path("runs"), help="Folder holding one sub-folder per run."),
    workers: int = typer.Option(1, help="Local worker processes."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Ray cluster address ('local' starts one)."),
    dry_run: bool = typer.Option(False, help="List the runs and what is done, run nothing."),
    offline: bool = typer.Option(False, "--offline", help="Never touch the network (HF_HUB_OFFLINE=1)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars, warnings only."),
    log_json: Optional[Path] = typer.Option(None, help="Also write log records as JSON lines here."),
) -> None:
    """Execute every run of a preset's grid; finished runs are skipped, failures don't stop it."""
    from w2sclip.config import load_sweep
    from w2sclip.runs import run_folder
    from w2sclip.sweep import plan, run_sweep

    _setup_logging(quiet, log_json, offline)
    sweep = load_sweep(_resolve_config(config), set_)
    if dry_run:
        cfgs, todo = plan(sweep, runs_dir)
        todo_names = {run_folder(c, runs_dir).name for c in todo}
        for c in cfgs:
            name = run_folder(c, runs_dir).name
            typer.echo(f"{'todo' if name in todo_names else 'done'}  {name}")
        typer.echo(f"{len(cfgs)} runs, {len(cfgs) - len(todo)} done, {len(todo)} to do")
        return
    res = run_sweep(sweep, runs_dir, workers=workers, ray_address=ray, progress=not quiet)
    typer.echo(f"sweep {sweep.name}: {res['total']} runs, {res['skipped']} already done, "
               f"{res['ran']} ran, {len(res['failed'])} failed")
    for f in res["failed"]:
        typer.echo(f"  failed {f['run']}: {f['error']}", err=True)
    if res["failed"]:
        raise typer.Exit(1)
    typer.echo(f"next: w2sclip report {runs_dir} --out {runs_dir}/report")


@app.command("export")
def export_cmd(
    run_dir: Path = typer.Argument(..., help="A finished run folder."),
    out: Path = typer.Option(..., help="Output folder for the text-free classifier."),
    method: str = typer.Option("cpl", help="Which fitted head to export."),
) -> None:
    """Export a fitted head (prototypes + logit scale + class names + strong model reference)."""
    from w2sclip.export import export_classifier

    path = export_classifier(run_dir, out, method)
    typer.echo(f"wrote {path}/classifier.safetensors and classifier.json")


@app.command("predict")
def predict_cmd(
    classifier: Path = typer.Argument(..., help="An export folder (w2sclip export)."),
    images: list[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively)."),
    top_k: int = typer.Option(1, "--top-k", help="Classes to list per image."),
    out: Optional[Path] = typer.Option(None, help="Write predictions as CSV here (default: print)."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
) -> None:
    """Classify images with an exported classifier; the text encoder is never loaded."""
    import csv
    import sys

    from w2sclip.export import TextFreeClassifier, image_files, predict_files

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    clf = TextFreeClassifier.load(classifier, device=device)
    rows, bad = predict_files(clf, image_files(images), top_k=top_k)
    f = open(out, "w", newline="") if out else sys.stdout
    try:
        w = csv.writer(f)
        w.writerow(["path", "label", "class", "prob", "top_k"])
        for r in rows:
            w.writerow([r["path"], r["label"], r["class"], f"{r['prob']:.4f}",
                        ";".join(f"{t['class']}:{t['prob']:.4f}" for t in r["top_k"])])
    finally:
        if out:
            f.close()
    for path, reason in bad:
        typer.echo(f"skipped unreadable image {path}: {reason}", err=True)
    if out:
        typer.echo(f"wrote {len(rows)} predictions to {out}" + (f" ({len(bad)} unreadable skipped)" if bad else ""))


@app.command("report")
def report_cmd(
    runs_dir: Path = typer.Argument(..., help="Folder of run folders (what `w2sclip sweep` wrote)."),
    out: Path = typer.Option(..., help="Output folder: report.md, report.html, results.csv, plots/."),
    confusion_domain: Optional[str] = typer.Option(None, help="Domain of the confusion matrix and the "
                                                              "projection (default: the first)."),
    confusion_method: Optional[str] = typer.Option(None, help="Method of the confusion matrix (default: cpl)."),
    projection: str = typer.Option("pca", help="2-D projection of the image features: pca or tsne."),
    title: Optional[str] = typer.Option(None, help="Report title."),
) -> None:
    """Tables (accuracy, PGR, agreement, calibration) and plots from finished run folders, offline."""
    from w2sclip.report import build_report

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    path = build_report(runs_dir, out, confusion_domain=confusion_domain, confusion_method=confusion_method,
                        projection=projection, title=title)
    n = len(list((path.parent / "plots").glob("*.png")))
    typer.echo(f"wrote {path}, {path.parent / 'report.html'}, results.csv and {n} plots in {path.parent / 'plots'}")


@app.command("extract")
def extract_cmd(
    dataset: str = typer.Option(..., help="Dataset name (builtin, domainnet, folder, ...)."),
    root: Path = typer.Option(..., help="Dataset folder."),
    domain: Optional[str] = typer.Option(None, help="Domain (default: all)."),
    split: Optional[str] = typer.Option(None, help="Split (default: all)."),
    strong: str = typer.Option("full", help="Strong CLIP: full, limited, ARCH:TAG, ARCH:/path, hf-hub:org/repo."),
    shard: Optional[str] = typer.Option(None, help="i/N: encode shards j with j % N == i (default: all, "
                                                   "or torchrun's RANK/WORLD_SIZE); the last part merges."),
    fp16: bool = typer.Option(False, "--fp16", help="Store features as float16 (half the disk)."),
    precision: str = typer.Option("fp32", help="Model precision: fp32, amp, amp_bf16 (autocast on CUDA), "
                                               "fp16, bf16 (low-precision weights)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 (default: CUDA when available)."),
    batch_size: int = typer.Option(256),
    workers: int = typer.Option(4, help="DataLoader workers decoding images."),
    shard_size: int = typer.Option(4096, help="Images per shard (the unit of resume and of sharding)."),
    bad_files: str = typer.Option("skip", help="skip (record unreadable images) or error."),
    cache_dir: Optional[Path] = typer.Option(None, help="Cache root (default $W2SCLIP_CACHE or "
                                                        "~/.cache/w2sclip); features go to <cache>/features."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Encode a dataset's images once into the sharded, resumable feature cache (docs/cache.md)."""
    from w2sclip.data import get_dataset
    from w2sclip.demo import default_cache_dir
    from w2sclip.features.extract import default_device, extract, parse_shard
    from w2sclip.models.strong.openclip import load_strong

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("w2sclip").setLevel(logging.WARNING if quiet else logging.INFO)
    part = parse_shard(shard) if shard else None
    ds = get_dataset(dataset, root=root, domain=domain, split=split)
    model = load_strong(strong, device=device or default_device(), precision=precision)
    fs = extract(model, ds, (cache_dir or default_cache_dir()) / "features", batch_size=batch_size,
                 num_workers=workers, shard_size=shard_size, shard=part, bad_files=bad_files,
                 dtype="float16" if fp16 else "float32", progress=not quiet)
    if fs is None:
        typer.echo(f"part {shard} done; other parts still missing (the last part to finish merges)")
    else:
        typer.echo(f"features {fs.features.shape[0]}x{fs.features.shape[1]} {fs.features.dtype} in "
                   f"{fs.path} ({len(fs.bad_files)} unreadable)")


@data_app.command("make-builtin")
def make_builtin_cmd(
    out: Path = typer.Option(..., help="Folder to write the benchmark into."),
    size: str = typer.Option("default", help="quick or default."),
    seed: int = typer.Option(0, help="Generator seed."),
) -> None:
    """Generate the built-in multi-domain benchmark (images + manifest + class names + templates)."""
    from w2sclip.data.builtin import make_builtin

    path = make_builtin(out, size=size, seed=seed)
    typer.echo(f"wrote {path}/manifest.csv")


@data_app.command("download")
def data_download_cmd(
    name: str = typer.Argument(..., help="Dataset (see `w2sclip list datasets`)."),
    root: Path = typer.Option(..., help="Folder to download and unpack into."),
    domains: Optional[str] = typer.Option(None, help="Comma-separated domains (default: all)."),
    mirror: Optional[str] = typer.Option(None, help="Base URL of a mirror of the official server."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check SHA-512 where known."),
    keep_archives: bool = typer.Option(True, "--keep-archives/--delete-archives",
                                       help="Keep the .zip files after unpacking."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Download, verify and unpack a dataset with public URLs (DomainNet); rerun to resume."""
    from w2sclip.data.download import DownloadError, download_dataset

    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s")
    try:
        files = download_dataset(name, root, _domains(domains), mirror=mirror, verify=verify,
                                 keep_archives=keep_archives, progress=not quiet)
    except DownloadError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"done: {len(files)} file(s) fetched into {root}; now run "
               f"`w2sclip data check {name} --root {root}`")


@data_app.command("check")
def data_check_cmd(
    name: str = typer.Argument(..., help="Dataset (see `w2sclip list datasets`)."),
    root: Path = typer.Option(..., help="Dataset folder."),
    domains: Optional[str] = typer.Option(None, help="Comma-separated domains (default: all present)."),
    images: bool = typer.Option(True, "--images/--no-images", help="Decode every image to find bad files."),
    workers: int = typer.Option(4, help="Threads decoding images."),
    per_class: bool = typer.Option(True, "--per-class/--summary", help="Print the per-class table."),
    splits: str = typer.Option("auto", help="auto, official or seeded (as for get_dataset)."),
) -> None:
    """Counts per domain, split and class, and every problem found; exit status 1 if any."""
    from w2sclip.data.check import check_dataset

    report = check_dataset(name, root, _domains(domains), images=images, num_workers=workers,
                           splits=splits)
    typer.echo(report.format(per_class=per_class))
    if not report.ok:
        raise typer.Exit(1)


@data_app.command("make-miniature")
def make_miniature_cmd(
    name: str = typer.Argument(..., help="domainnet, office_home, pacs, vlcs or folder."),
    out: Path = typer.Option(..., help="Folder to write the fixture into."),
    domains: Optional[str] = typer.Option(None, help="Comma-separated domains (default: all)."),
    images_per_class: int = typer.Option(2, help="Images per class and split."),
    corrupt: int = typer.Option(0, help="Number of bad files to plant."),
    seed: int = typer.Option(0),
) -> None:
    """TEST FIXTURE: write a tiny generated copy of a dataset's layout (NOT the real data)."""
    from w2sclip.data.miniature import make_miniature

    path = make_miniature(name, out, domains=_domains(domains), images_per_class=images_per_class,
                          seed=seed, corrupt=corrupt)
    typer.echo(f"wrote a {name} test fixture (generated images, not real data) to {path}")


@list_app.command("methods")
def list_methods() -> None:
    """Registered methods with a one-line description and citation."""
    from w2sclip.methods import METHODS

    for name, cls in METHODS.items():
        typer.echo(f"{name:14s} {cls.description}  [{cls.citation}]")


@list_app.command("datasets")
def list_datasets() -> None:
    """Registered datasets with a one-line description and their source."""
    from w2sclip.data import DATASETS

    for name, spec in DATASETS.items():
        typer.echo(f"{name:12s} {spec.description}  [{spec.source}]")


def run() -> None:
    """Console entry point: user errors (and a full disk) print one clear line, no traceback, exit 2."""
    from w2sclip.features.fileio import DiskFullError

    try:
        app(standalone_mode=True)
    except (KeyError, ValueError, FileNotFoundError, DiskFullError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        typer.echo(f"error: {msg}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    run()
