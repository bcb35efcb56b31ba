"""The baselines against their authors' loops on a built-in run (issue: baselines at their published strength).

Loads one prepared run of the ``builtin`` preset (its cached features, weak logits and the run's
hold_fit / hold_val / D_test split), then fits each baseline twice with its published defaults:
the project's method, and the independent re-implementation of its authors' training loop from
``tests/test_recipes.py`` (written from their code). Prints the D_test accuracy of both, their
agreement and the weak / zero-shot references. No timing; CoOp is left out (it trains through the
text tower: minutes per fit on a CPU, and it is checked at small size in the tests).

    python benchmarks/recipes.py [--size quick|default] [--domain real] [--strong full] [--seed 0]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

TESTS = Path(__file__).resolve().parents[1] / "tests"


def _recipes_module():
    sys.path.insert(0, str(TESTS))  # test_recipes imports conftest
    spec = importlib.util.spec_from_file_location("test_recipes", TESTS / "test_recipes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def task_of_run(size: str, domain: str, strong: str, seed: int) -> tuple[dict, float]:
    """The recipe tests' task dict from a real built-in run, and its logit scale."""
    from w2sclip.config import load_sweep, resolve_preset
    from w2sclip.run import prepare
    from w2sclip.run.fit import make_splits, softmax

    sweep = load_sweep(resolve_preset("builtin"), [f"builtin_size={size}", f"grid.seed=[{seed}]",
                                                   f"grid.domain=[{domain}]", f"grid.strong=[{strong}]"])
    cfg = sweep.runs()[0]
    x = prepare(cfg).inputs
    sp = make_splits(x, seed)
    f = x.features / np.linalg.norm(x.features, axis=1, keepdims=True)
    pw = softmax(x.weak_logits).astype(np.float32)
    task = {"Xf": f[sp["hold_fit"]], "Yf": pw[sp["hold_fit"]], "Xv": f[sp["hold_val"]], "Yv": pw[sp["hold_val"]],
            "Xt": f[sp["test"]], "yt": x.labels[sp["test"]], "yf": x.labels[sp["hold_fit"]],
            "yv": x.labels[sp["hold_val"]], "W": np.asarray(x.text("dataset"), np.float32), "C": pw.shape[1],
            "weak_test": pw[sp["test"]]}
    return task, float(x.logit_scale)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="quick", choices=["quick", "default"])
    ap.add_argument("--domain", default="real")
    ap.add_argument("--strong", default="full")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    R = _recipes_module()
    task, s = task_of_run(args.size, args.domain, args.strong, args.seed)
    R.S = s  # the references read the logit scale from the module
    torch.set_num_threads(1)
    yt = task["yt"]

    def acc(z):
        return float((np.asarray(z).argmax(1) == yt).mean())

    def head_loop(loss):
        head = R.CPLHead(task["W"], s)
        R.ref_openai_loop(task["Xf"], task["Yf"], head, loss)
        with torch.no_grad():
            return head(R._t(task["Xt"])).numpy()

    refs = {
        "kd_lp": lambda: R._ref_kd_lp(task)[0],
        "logconf": None,  # C classes: the project's prior matching generalises their binary quantile
        "product_loss": lambda: head_loop(R.openai_product_loss),
        "adaptconf": lambda: R.ref_adaptconf(task)[0],
        "tip_adapter": lambda: R.ref_tip_adapter_f(task, train_epoch=0)[0],
        "tip_adapter_f": lambda: R.ref_tip_adapter_f(task)[0],
        "clip_adapter": lambda: R.ref_clip_adapter(task),
    }
    zs = s * task["Xt"] @ (task["W"] / np.linalg.norm(task["W"], axis=1, keepdims=True)).T
    print(f"builtin {args.size}, {args.domain}, {args.strong}, seed {args.seed}: n_fit {len(task['Xf'])}, "
          f"n_val {len(task['Xv'])}, n_test {len(yt)}, C {task['C']}, logit scale {s:.1f}")
    print(f"weak {100 * acc(task['weak_test']):.1f} %, zero-shot {100 * acc(zs):.1f} % (D_test)")
    print(f"{'method':15s} {'project':>8s} {'authors':>8s} {'agree':>7s}")
    rows = []
    for name, ref in refs.items():
        if ref is None:
            continue
        proj = R._fit(name, task).decision_function(task["Xt"])
        other = ref()
        row = {"method": name, "project": acc(proj), "authors": acc(other),
               "agreement": float((proj.argmax(1) == other.argmax(1)).mean())}
        rows.append(row)
        print(f"{name:15s} {100 * row['project']:8.1f} {100 * row['authors']:8.1f} {100 * row['agreement']:6.1f}%",
              flush=True)
    return rows


if __name__ == "__main__":
    main()
