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


@list_app.command("methods")
def list_methods() -> None:
    """Registered methods with a one-line description and citation."""
    from w2sclip.methods import METHODS

    for name, cls in METHODS.items():
        typer.echo(f"{name:14s} {cls.description}  [{cls.citation}]")


def run() -> None:
    """Console entry point: user errors print one clear line (no traceback) and exit 2."""
    try:
        app(standalone_mode=True)
    except (KeyError, ValueError, FileNotFoundError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        typer.echo(f"error: {msg}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    run()
