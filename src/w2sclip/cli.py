"""The ``w2sclip`` command line: parses flags and calls library functions, nothing else."""

from __future__ import annotations

import csv
import errno
import io
import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from w2sclip.fileio import NotWritableError, atomic_write, check_writable, default_cache_dir


ONE_LINE_ERRORS = "w2sclip.one_line_errors"
"""Key of the context object with which the console entry point asks for one-line errors."""


class _Commands(TyperGroup):
    """The command group. Run from the console (:func:`run`), any user mistake raised by a
    command (bad config, path, file, missing package, full or read-only disk; see
    :func:`user_error`) prints one ``error: ...`` line that names the file or key and the fix,
    and exits with status 2; anything else is a bug and keeps its traceback. ``--debug`` (or
    W2SCLIP_DEBUG=1) shows the traceback of every error; in-process callers (``CliRunner``)
    get the exception itself."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # the reader of our output went away (`| head`): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # (Python docs, "Note on SIGPIPE")
            raise typer.Exit(0) from None
        except Exception as e:  # noqa: BLE001 - user mistakes become one line; bugs are re-raised
            console = isinstance(ctx.obj, dict) and ctx.obj.get(ONE_LINE_ERRORS)
            msg = None if not console or ctx.meta.get("w2sclip.debug") or _debug() else user_error(e)
            if msg is None:
                raise
            typer.echo(f"error: {msg}", err=True)
            raise typer.Exit(2) from None


app = typer.Typer(cls=_Commands, no_args_is_help=True, add_completion=False,
                  help="Weak-to-strong generalization with CLIP: CPL and baselines.")


@app.callback()
def main(ctx: typer.Context,
         debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error "
                                                         "(also W2SCLIP_DEBUG=1).")) -> None:
    """Weak-to-strong generalization with CLIP: CPL and baselines."""
    ctx.meta["w2sclip.debug"] = debug


def _writable(folder: Path, flag: str) -> None:
    """Fail now, not after the work, when the output folder ``folder`` cannot be written."""
    check_writable(folder, flag, f"pass another {flag}")


def _writable_file(path: Path, flag: str, create_folder: bool = False) -> None:
    """An output file's folder must be writable (and exist, unless the command creates it), and
    the path must not be a folder."""
    if path.is_dir():
        raise NotWritableError(errno.EISDIR, f"{flag} {path} is a folder; pass a file name (e.g. "
                                             f"{flag} {path / 'NAME'})")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir() and not create_folder:
        raise NotWritableError(errno.ENOENT, f"{flag} {path}: the folder {parent} does not exist; create "
                                             f"it first (mkdir -p {parent}) or pass another {flag}")
    check_writable(parent, f"{flag} {path}: its folder", f"pass another {flag}")


data_app = typer.Typer(no_args_is_help=True, help="Datasets: generate, inspect.")
list_app = typer.Typer(no_args_is_help=True, help="List registered components.")
app.add_typer(data_app, name="data")
app.add_typer(list_app, name="list")


def _domains(value: Optional[str]) -> Optional[tuple[str, ...]]:
    return tuple(d.strip() for d in value.split(",") if d.strip()) if value else None


@app.command()
def pretrain(
    out: Path = typer.Option(..., help="Output .safetensors file."),
    arch: str = typer.Option("w2s-rn-tiny", help="Built-in open_clip architecture."),
    steps: int = typer.Option(2400, min=1, help="Optimizer steps."),
    batch_size: int = typer.Option(256, min=1),
    lr: float = typer.Option(1e-3, min=1e-12),
    weight_decay: float = typer.Option(0.1, min=0.0),
    warmup: int = typer.Option(100, min=0, help="Linear warm-up steps before the cosine decay."),
    corpus_size: int = typer.Option(80_000, min=1, help="Captioned images rendered for the corpus."),
    domains: Optional[str] = typer.Option(None, help="Comma-separated domains (default: all six)."),
    captions: str = typer.Option("clean", help="Caption profile of the corpus: clean, web, web-mid, web-noisy, web-noisier (docs/backbones.md)."),
    world: int = typer.Option(2, min=1, max=2, help="World version of the corpus images: 2 (the shipped checkpoints') or 1 (docs/backbones.md)."),
    seed: int = typer.Option(0, min=0, max=2**32 - 1, help="Corpus and init seed (the corpus never overlaps any dataset)."),
    init: Optional[str] = typer.Option(None, help="Start from this checkpoint (name or path)."),
) -> None:
    """Pretrain the built-in CLIP contrastively on a generated captioned corpus."""
    from w2sclip.models.strong.pretrain import PretrainConfig, pretrain as run

    _setup_logging(False)
    _writable_file(out, "--out", create_folder=True)
    kw = dict(arch=arch, steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
              warmup=warmup, corpus_size=corpus_size,
              captions=captions, world=world, seed=seed, init=init)
    if domains:
        kw["domains"] = _domains(domains)
    path = run(PretrainConfig(**kw), out)
    typer.echo(f"wrote {path}")


@app.command()
def demo(
    out: Path = typer.Option(Path("w2sclip-out"), help="Output folder: report and runs/ (one folder per run)."),
    quick: bool = typer.Option(False, "--quick", help="The preset's quick size and one seed (about 5 minutes on 2 CPU cores)."),
    set_: list[str] = typer.Option([], "--set", help="Override the builtin preset: key=value, repeatable."),
    cache_dir: Optional[Path] = typer.Option(None, help="Cache (default $W2SCLIP_CACHE or ~/.cache/w2sclip)."),
    workers: int = typer.Option(2, min=1, help="Local worker processes, each with cores / N torch threads (runs "
                                        "of a small benchmark use cores best one thread each)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """The whole weak-to-strong study on the built-in benchmark, offline: the `builtin` preset
    through `w2sclip sweep` and `w2sclip report` (same run folders, same caches)."""
    from w2sclip.demo import run_demo

    _setup_logging(True, offline=True)
    _writable(out, "--out")
    overrides = [*set_, *([f"cache_dir={cache_dir}"] if cache_dir else [])]
    res = run_demo(out, quick=quick, overrides=tuple(overrides), workers=workers, progress=not quiet)
    typer.echo(_terminal_tables(res["report"]))
    typer.echo("time per stage (s, summed over runs): " + ", ".join(f"{k} {v}" for k, v in res["timings"].items()))
    if res["reused"]:
        typer.echo(f"{res['reused']} run(s) copied from the cache's finished runs (same inputs, code and "
                   f"libraries); --set reuse_runs=false fits them again")
    typer.echo(f"wrote {res['report']}, report.html, results.csv, results.json, plots/ and runs/ in {out}")
    for f in res["failed"]:
        typer.echo(f"  failed {f['run']}: {f['error']}", err=True)
    if res["failed"]:
        raise typer.Exit(1)


def _terminal_tables(report_md: Path) -> str:
    """The report's markdown without its figures (what fits a terminal)."""
    lines = report_md.read_text().splitlines()
    keep, skip = [], False
    for line in lines:
        if line.startswith("### Figures") or line.startswith("## Strong models side by side"):
            skip = True
        elif line.startswith("## "):
            skip = False
        if not skip and not line.startswith("!["):
            keep.append(line)
    return "\n".join(keep)


@app.command("selection-study")
def selection_study_cmd(
    config: str = typer.Argument("builtin", help="YAML file or preset name (`w2sclip list presets`)."),
    set_: list[str] = typer.Option([], "--set", help="Override: key=value or grid.key=[...], repeatable."),
    out: Path = typer.Option(Path("w2sclip-selection"), help="Output folder."),
    methods: str = typer.Option("cpl,kd_lp,logconf", help="Comma-separated methods."),
    offline: bool = typer.Option(False, "--offline", help="Never touch the network (HF_HUB_OFFLINE=1)."),
) -> None:
    """Compare model-selection rules (weak-label loss, agreement, entropy, the pipeline's own rule)
    with an oracle picked on half of D_test, on the runs of any preset (docs/protocol.md)."""
    from w2sclip.config import load_sweep
    from w2sclip.run import prepare
    from w2sclip.selection import selection_study, selection_table

    _setup_logging(True, offline=offline)
    sweep = load_sweep(config, set_)
    _writable(out, "--out")
    records = selection_study(((c, prepare(c)) for c in sweep.runs()), _domains(methods))
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "selection.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(records[0]))
        w.writeheader()
        w.writerows(records)
    table = selection_table(records)
    (out / "selection.md").write_text(
        f"# Model selection under weak supervision ({sweep.name})\n\n"
        "Mean accuracy (%) on half B of D_test of each rule's pick, over domains and seeds "
        "(± std over seeds); the oracle picks on half A. Bold: the best rule without test labels.\n\n"
        + table + "\n")
    typer.echo(table)


def _setup_logging(quiet: bool, log_json: Optional[Path] = None, offline: bool = False) -> None:
    """Human-readable warnings on stderr; with ``--log-json FILE`` (checked first) every INFO record
    as a JSON line; ``offline`` sets HF_HUB_OFFLINE=1 for every loader."""
    if log_json is not None:
        _writable_file(log_json, "--log-json")
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"

    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if log_json is not None:
        class _Json(logging.Formatter):
            def format(self, r: logging.LogRecord) -> str:
                return json.dumps({"t": round(r.created, 3), "level": r.levelname, "logger": r.name,
                                    "msg": r.getMessage()})

        handler = logging.FileHandler(log_json)
        handler.setFormatter(_Json())
        handler.setLevel(logging.INFO)
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)


@app.command("run")
def run_cmd(
    config: str = typer.Argument(..., help="YAML file, preset name (`w2sclip list presets`) or '-' for defaults."),
    set_: list[str] = typer.Option([], "--set", help="Override: key=value (YAML value), repeatable."),
    runs_dir: Path = typer.Option(Path("runs"), help="Folder holding one sub-folder per run."),
    force: bool = typer.Option(False, help="Fit again even when the run is done or stored in the cache "
                                                   "(and replace the stored copy)."),
    offline: bool = typer.Option(False, "--offline", help="Never touch the network (HF_HUB_OFFLINE=1)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars, warnings only."),
    log_json: Optional[Path] = typer.Option(None, help="Also write log records as JSON lines here."),
    dry_run: bool = typer.Option(False, help="Check the config and print the run folder, run nothing."),
) -> None:
    """Execute ONE run: the preset's base values plus --set (grid values are not crossed)."""
    from w2sclip.config import apply_overrides, check_runs, load_sweep, make_run_config, parse_overrides
    from w2sclip.report import markdown_report
    from w2sclip.run import run, run_folder

    _setup_logging(quiet, log_json, offline)
    if config == "-":
        cfg = make_run_config(apply_overrides({}, parse_overrides(set_)))
        check_runs([cfg])
    else:
        sweep = load_sweep(config, set_)
        first = {k: v[0] for k, v in sweep.grid.items()}
        cfg = make_run_config({**sweep.base, **first})
    if quiet:
        cfg = cfg.model_copy(update={"progress": False})
    if dry_run:
        folder = run_folder(cfg, runs_dir)
        typer.echo(f"{'done' if folder.is_done and not force else 'todo'}  {folder.name}")
        return
    _writable(runs_dir, "--runs-dir")
    folder = run(cfg, runs_dir, force=force)
    typer.echo(markdown_report(folder.records(), f"{cfg.slug()}"))
    typer.echo(f"run folder: {folder.path}")


@app.command("sweep")
def sweep_cmd(
    config: str = typer.Argument(..., help="YAML file or preset name (`w2sclip list presets`)."),
    set_: list[str] = typer.Option([], "--set", help="Override: key=value or grid.key=[...], repeatable."),
    runs_dir: Path = typer.Option(Path("runs"), help="Folder holding one sub-folder per run."),
    workers: int = typer.Option(1, min=1, help="Local worker processes."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Ray cluster address ('local' starts one)."),
    dry_run: bool = typer.Option(False, help="List the runs and what is done, run nothing."),
    offline: bool = typer.Option(False, "--offline", help="Never touch the network (HF_HUB_OFFLINE=1)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars, warnings only."),
    log_json: Optional[Path] = typer.Option(None, help="Also write log records as JSON lines here."),
) -> None:
    """Execute every run of a preset's grid; finished runs are skipped, failures don't stop it."""
    from w2sclip.config import load_sweep
    from w2sclip.run import run_folder
    from w2sclip.sweep import plan, run_sweep

    _setup_logging(quiet, log_json, offline)
    sweep = load_sweep(config, set_)
    if dry_run:
        cfgs, todo = plan(sweep, runs_dir)
        todo_names = {run_folder(c, runs_dir).name for c in todo}
        for c in cfgs:
            name = run_folder(c, runs_dir).name
            typer.echo(f"{'todo' if name in todo_names else 'done'}  {name}")
        typer.echo(f"{len(cfgs)} runs, {len(cfgs) - len(todo)} done, {len(todo)} to do")
        return
    _writable(runs_dir, "--runs-dir")
    res = run_sweep(sweep, runs_dir, workers=workers, ray_address=ray, progress=not quiet)
    copied = f" ({res['reused']} copied from the cache's finished runs)" if res["reused"] else ""
    typer.echo(f"sweep {sweep.name}: {res['total']} runs, {res['skipped']} already done, "
               f"{res['ran']} ran{copied}, {len(res['failed'])} failed")
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

    _writable(out, "--out")
    path = export_classifier(run_dir, out, method)
    typer.echo(f"wrote {path}/classifier.safetensors and classifier.json")


@app.command("predict")
def predict_cmd(
    classifier: Path = typer.Argument(..., help="An export folder (w2sclip export)."),
    images: list[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively)."),
    top_k: int = typer.Option(1, "--top-k", min=1, help="Classes to list per image."),
    out: Optional[Path] = typer.Option(None, help="Write predictions as CSV here (default: print)."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
) -> None:
    """Classify images with an exported classifier; the text encoder is never loaded."""
    from w2sclip.export import TextFreeClassifier, image_files, predict_files

    _setup_logging(True, offline=True)
    if out is not None:
        _writable_file(out, "--out")
    files = image_files(images)
    clf = TextFreeClassifier.load(classifier, device=device)
    rows, bad = predict_files(clf, files, top_k=top_k)
    def write(f) -> None:
        w = csv.writer(f)
        w.writerow(["path", "label", "class", "prob", "top_k"])
        for r in rows:
            w.writerow([r["path"], r["label"], r["class"], f"{r['prob']:.4f}",
                        ";".join(f"{t['class']}:{t['prob']:.4f}" for t in r["top_k"])])

    def write_bytes(fb) -> None:
        text = io.TextIOWrapper(fb, encoding="utf-8", newline="")
        write(text)
        text.flush()
        text.detach()  # the binary file stays open for atomic_write's fsync

    if out:  # through a temporary file: a failure never leaves a partial CSV behind
        atomic_write(out, write_bytes, move="--out")
    else:
        write(sys.stdout)
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

    _setup_logging(True)
    _writable(out, "--out")
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
    batch_size: int = typer.Option(256, min=1),
    workers: int = typer.Option(4, min=0, help="DataLoader workers decoding images."),
    shard_size: int = typer.Option(4096, min=1, help="Images per shard (the unit of resume and of sharding)."),
    bad_files: str = typer.Option("skip", help="skip (record unreadable images) or error."),
    cache_dir: Optional[Path] = typer.Option(None, help="Cache root (default $W2SCLIP_CACHE or "
                                                        "~/.cache/w2sclip); features go to <cache>/features."),
    decode: str = typer.Option("auto", help="Decode path, part of the cache key: auto (nvjpeg on CUDA, "
                                            "turbo on CPU), pil, pil-draft, turbo, nvjpeg. Runs decode "
                                            "with auto on their device: pass turbo on a GPU to extract "
                                            "for CPU runs (docs/decoding.md)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Encode a dataset's images once into the sharded, resumable feature cache (docs/cache.md)."""
    from w2sclip.data import get_dataset
    from w2sclip.features.extract import default_device, extract, parse_shard
    from w2sclip.models.strong.openclip import load_strong

    _setup_logging(quiet)
    part = parse_shard(shard) if shard else None
    ds = get_dataset(dataset, root=root, domain=domain, split=split)
    model = load_strong(strong, device=device or default_device(), precision=precision)
    fs = extract(model, ds, default_cache_dir(cache_dir) / "features", batch_size=batch_size,
                 num_workers=workers, shard_size=shard_size, shard=part, bad_files=bad_files,
                 dtype="float16" if fp16 else "float32", progress=not quiet, decode=decode)
    if fs is None:
        typer.echo(f"part {shard} done; other parts still missing (the last part to finish merges)")
    else:
        typer.echo(f"features {fs.features.shape[0]}x{fs.features.shape[1]} {fs.features.dtype} in "
                   f"{fs.path} ({len(fs.bad_files)} unreadable)")


@data_app.command("make-builtin")
def make_builtin_cmd(
    out: Path = typer.Option(..., help="Folder to write the benchmark into."),
    size: str = typer.Option("default", help="quick or default."),
    seed: int = typer.Option(0, min=0, max=2**32 - 1, help="Generator seed."),
    world: int = typer.Option(2, min=1, max=2, help="World version: 2 (the shipped checkpoints' world) or 1 (docs/datasets.md)."),
) -> None:
    """Generate the built-in multi-domain benchmark (images + manifest + class names + templates)."""
    from w2sclip.data.builtin import make_builtin

    path = make_builtin(out, size=size, seed=seed, world=world)
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

    _setup_logging(quiet)
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
    workers: int = typer.Option(4, min=0, help="Threads decoding images (0: none)."),
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
    images_per_class: int = typer.Option(2, min=1, help="Images per class and split."),
    corrupt: int = typer.Option(0, min=0, help="Number of bad files to plant."),
    seed: int = typer.Option(0, min=0, max=2**32 - 1),
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


@list_app.command("presets")
def list_presets_cmd() -> None:
    """Packaged presets (names for `w2sclip run` / `w2sclip sweep`) with their description."""
    from w2sclip.config import list_presets

    presets = list_presets()
    width = max(map(len, presets), default=0)
    for name, description in presets.items():
        typer.echo(f"{name:{width}s}  {description}")


def _debug() -> bool:
    return os.environ.get("W2SCLIP_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


_OS_FIXES = {errno.ENOENT: "no such file or folder; check the path",
             errno.EACCES: "permission denied; make it readable/writable or choose another location",
             errno.EPERM: "operation not permitted; check its permissions or choose another location",
             errno.EROFS: "read-only file system; choose a writable location",
             errno.ENOTDIR: "a part of this path is a file, not a folder; check the path",
             errno.EISDIR: "this is a folder, a file is needed here; check the path",
             errno.EEXIST: "a file already exists where a folder is needed; check the path"}


_PIP_NAMES = {"PIL": "pillow", "sklearn": "scikit-learn", "yaml": "pyyaml", "cv2": "opencv-python"}
"""pip names of modules whose import name differs."""


def user_error(e: BaseException) -> Optional[str]:
    """The one-line message of a user mistake (bad config, path, file, missing package, full or
    read-only disk), or None for anything else: a bug, which keeps its traceback."""
    if isinstance(e, KeyError):
        msg = str(e.args[0]) if e.args else "KeyError"
    elif isinstance(e, ImportError):
        if (e.name or "").partition(".")[0] == "w2sclip":
            return None  # our own import broke: a bug
        package = _PIP_NAMES.get((e.name or "").partition(".")[0], (e.name or "PACKAGE").partition(".")[0])
        how = f"pip install {package}" if isinstance(e, ModuleNotFoundError) else f"pip install -U {package}"
        msg = str(e) if "pip install" in str(e) else f"{e}; install it: {how}"
    elif isinstance(e, OSError) and e.filename is not None and str(e).startswith("[Errno"):
        msg = f"{e.filename}: {_OS_FIXES.get(e.errno, e.strerror)}"  # a raw OS error: name the path
    elif isinstance(e, (ValueError, OSError)):  # our errors (FileNotFoundError, DiskFullError, ...) name the fix
        msg = str(e) or type(e).__name__
    elif isinstance(e, EOFError):
        msg = (f"a file ended early: it is empty or truncated ({e or 'EOFError'}); rerun with --debug to "
               f"see which file, then delete or rewrite it")
    else:
        return None
    return " ".join(msg.split())


def run() -> None:
    """Console entry point (user mistakes: one ``error:`` line and status 2, see :class:`_Commands`)."""
    app(obj={ONE_LINE_ERRORS: True})


if __name__ == "__main__":
    run()
