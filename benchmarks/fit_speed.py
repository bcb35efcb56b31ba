"""Wall time of fitting the trainable methods on cached features, next to the arithmetic bound.

A full-batch CPL step needs two matrix multiplications: the logits (N x D @ D x C) and the
gradient of the prototypes (C x N @ N x D); nothing else is of that order. This script times,
in the same process and interleaved (median over repeats), those two plain ``torch.mm`` per
step for ``epochs`` steps (the bound) and fits of CPL with ``selection="fixed"`` and
``epochs`` full-batch steps (``epochs`` passes for minibatch methods), on synthetic features at DomainNet scale (C = 345). The other
trainable methods, the cost of validation (``cpl_val``: ``selection="val_loss"`` on a hold_val
of N / 4 more rows, checked every 5 steps) and CPL and CLIP-Adapter trained through autograd
instead of their analytic steps (``cpl_autograd``, ``clip_adapter_autograd``) are reported too. The CPL / bound ratio is printed last.

    python benchmarks/fit_speed.py            # N = 50k, 200k; D = 512, 768 (several minutes)
    python benchmarks/fit_speed.py --quick    # small shapes, seconds
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

OTHERS = ("kd_lp", "cpl_hard", "cpl_poe", "logconf", "adaptconf", "clip_adapter")
CLOSED_FORM = ("clip_adapter",)
"""Other methods with a closed-form step (``_grad``), also timed through autograd."""
# tip_adapter_f is O(N^2) in memory (an N x N affinity) and coop runs the text encoder: neither
# is a head on cached features of this size.


def synthetic(n: int, d: int, c: int, seed: int = 0) -> dict:
    """Features (n, d), weak probabilities (n, c), text prototypes (c, d): float32."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((c, d), dtype=np.float32)
    y = rng.integers(c, size=n)
    X = centers[y] + 2 * rng.standard_normal((n, d), dtype=np.float32)
    logits = 4 * np.eye(c, dtype=np.float32)[y] + rng.standard_normal((n, c), dtype=np.float32)
    logits -= logits.max(1, keepdims=True)
    P = np.exp(logits)
    P /= P.sum(1, keepdims=True)
    text = centers + rng.standard_normal((c, d), dtype=np.float32)
    return {"X": X, "P": P, "text": text / np.linalg.norm(text, axis=1, keepdims=True)}


def time_bound(X: torch.Tensor, c: int, steps: int) -> float:
    """Seconds for ``steps`` x (logits matmul + gradient matmul) with plain ``torch.mm`` on
    contiguous operands: (N x D) @ (D x C) and (C x N) @ (N x D)."""
    n, d = X.shape
    B, A = torch.randn(d, c), torch.randn(c, n).softmax(0)  # a softmax-like gradient, no subnormals
    Z, gW = torch.empty(n, c), torch.empty(c, d)
    t0 = time.perf_counter()
    for _ in range(steps):
        torch.mm(X, B, out=Z)
        torch.mm(A, X, out=gW)
    return time.perf_counter() - t0


def time_fit(name: str, data: dict, epochs: int, selection: str = "fixed", autograd: bool = False) -> float:
    """Seconds for one ``fit`` (``autograd``: backpropagate through the loss instead of the
    analytic step, i.e. a straightforward PyTorch step on pre-normalised features)."""
    from w2sclip.methods import get_method
    from w2sclip.methods.training import total_steps

    X, P = data["X"], data["P"]
    n_fit = len(X) if selection == "fixed" else len(X) * 4 // 5
    kw = {"X_val": X[n_fit:], "y_val": P[n_fit:]} if selection != "fixed" else {}
    m = get_method(name, epochs=epochs, selection=selection)
    if autograd:
        m._grad = lambda: None
    t0 = time.perf_counter()
    m.fit(X[:n_fit], P[:n_fit], text_weights=data["text"], logit_scale=100.0, **kw)
    seconds = time.perf_counter() - t0
    assert m.history_["steps_run"] == total_steps(n_fit, m.params.get("batch_size", 0), 0, epochs,
                                                  m.params.get("drop_last", False)), m.history_
    return seconds


def measure(n: int, d: int, c: int, epochs: int, repeats: int, others: tuple[str, ...]) -> dict:
    data = synthetic(n, d, c)
    Xt = torch.nn.functional.normalize(torch.from_numpy(data["X"]), dim=1)
    bound, cpl = [], []
    time_fit("cpl", data, 1)  # warm-up (allocator, BLAS)
    for r in range(repeats):  # interleaved, alternating order: load changes hit both alike
        for which in (("bound", "cpl") if r % 2 == 0 else ("cpl", "bound")):
            if which == "bound":
                bound.append(time_bound(Xt, c, epochs))
            else:
                cpl.append(time_fit("cpl", data, epochs))
    row = {"N": n, "D": d, "C": c, "bound": statistics.median(bound), "cpl": statistics.median(cpl),
           "paired": statistics.median(b / a for a, b in zip(bound, cpl))}
    # validation on N / 4 extra rows (hold_val), checked every 5 steps, patience not reached
    row["cpl_val"] = time_fit("cpl", synthetic(n * 5 // 4, d, c), epochs, "val_loss")
    row["cpl_autograd"] = time_fit("cpl", data, epochs, autograd=True)
    for name in others:
        row[name] = time_fit(name, data, epochs)
        if name in CLOSED_FORM:
            row[f"{name}_autograd"] = time_fit(name, data, epochs, autograd=True)
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shapes (a smoke run, seconds)")
    ap.add_argument("--n", type=int, nargs="+", help="numbers of rows (default 50000 200000)")
    ap.add_argument("--d", type=int, nargs="+", help="feature dimensions (default 512 768)")
    ap.add_argument("--c", type=int, default=345, help="classes (default 345, DomainNet)")
    ap.add_argument("--epochs", type=int, default=20, help="full-batch steps per fit (default 20)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median; default 3)")
    ap.add_argument("--others", nargs="*", default=list(OTHERS), help="other methods to time")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ns = args.n or ([2000, 8000] if args.quick else [50_000, 200_000])
    ds = args.d or ([64, 128] if args.quick else [512, 768])
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average "
          f"{os.getloadavg()[0]:.2f}, C = {args.c}, {args.epochs} full-batch steps, "
          f"median of {args.repeats}")
    rows = [measure(n, d, args.c, args.epochs, args.repeats, tuple(args.others))
            for n in ns for d in ds]
    gflop = {(r["N"], r["D"]): 4 * r["N"] * r["D"] * r["C"] * args.epochs / 1e9 for r in rows}
    cols = ["bound", "cpl", "cpl_val", "cpl_autograd"]
    for name in args.others:
        cols += [name] + ([f"{name}_autograd"] if name in CLOSED_FORM else [])
    print("\nseconds per fit (bound = 2 torch.mm per step, same shapes, same run)")
    print(f"| N | D | GFLOP/s per mm | {' | '.join(cols)} | cpl/bound | paired | cpl_val/cpl |")
    print("|---" * (len(cols) + 6) + "|")
    for r in rows:
        rate = gflop[(r["N"], r["D"])] / r["bound"]
        print(f"| {r['N']} | {r['D']} | {rate:.0f} | " + " | ".join(f"{r[k]:.2f}" for k in cols)
              + f" | {r['cpl'] / r['bound']:.2f} | {r['paired']:.2f} | {r['cpl_val'] / r['cpl']:.2f} |")
    print("(cpl/bound: ratio of the medians; paired: median of the ratios of neighbouring repeats)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    for name in CLOSED_FORM:
        if name in args.others:
            print(f"{name}: autograd / closed form " + ", ".join(f"{r[name + '_autograd'] / r[name]:.2f}" for r in rows))
    ratios = [r["cpl"] / r["bound"] for r in rows]
    print(f"\ncpl / bound: worst {max(ratios):.2f}, mean {statistics.mean(ratios):.2f} (target <= 1.25)")
    return rows


if __name__ == "__main__":
    main()
