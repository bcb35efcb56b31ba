"""Analytic training steps for the linear heads (the fast path of cpl, its variants and kd_lp).

Heads, on a batch of features ``x`` (n, D):

- cosine (CPL and the methods built on its head): ``x`` holds L2-normalised features,
  ``z = s * x . normalize(W)^T`` with ``s = exp(log_scale)``;
- linear (``kd_lp``): ``z = x . W^T + b``.

Losses (``w2sclip.losses``, batch means): ``kd`` ``T^2 KL(p_t || softmax(z / T))``, ``logconf``
``CE(z, (1 - a) p + a onehot(h))`` (h = argmax z, or prior-matched hardened labels) and
``adaptconf``. Their gradient with respect to z
is closed-form (``T (softmax(z / T) - p_t) / n`` for kd), so a step is: one matrix
multiplication for the logits (into a reused buffer), a softmax into a second reused buffer,
one for the gradient of the weights (C x D), and C x D work for the normalisation and Adam;
single-threaded, the batch goes through in blocks of rows (``BLOCK_ROWS``). With a fixed batch
(full-batch training) the target part ``p_t^T x`` of the gradient is constant and computed once,
so nothing else of size n x C is touched. ``tests/test_linear_head.py`` checks the gradients
against autograd.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

LOSSES = ("kd", "logconf", "adaptconf", "product")
_EPS = 1e-12  # as torch.nn.functional.normalize
_TINY = torch.finfo(torch.float32).tiny
BLOCK_ROWS = 2048
"""Single-threaded, a step works through the batch in blocks of this many rows, so that a
block's logits and probabilities stay in cache between the softmax and the gradient matmul
(measured 5-7 % faster per step here). With several threads the batch goes whole: every block
would add synchronisation points for all threads, which cost far more than the cache gains when
the CPU is shared (measured 1.6x vs 2.4x the bound with two competing processes)."""


def max_safe_spread(num_classes: int) -> float:
    """Largest logit spread (row max - row min) whose softmax has no subnormal float32 entry:
    ``exp(-spread) / C >= tiny``, less a margin of 1."""
    return -math.log(_TINY) - math.log(num_classes) - 1.0


def softmax_(Z: torch.Tensor, out: torch.Tensor, may_underflow: bool = True) -> torch.Tensor:
    """Row softmax of Z into ``out``; with ``may_underflow``, entries below the smallest normal
    float32 (probabilities < 1.2e-38) are set to 0. Subnormal numbers make CPU matrix
    multiplication many times slower; CLIP's logit scale 100 lets cosine logits spread by 200."""
    torch.softmax(Z, dim=1, out=out)
    return torch.nn.functional.threshold_(out, _TINY, 0.0) if may_underflow else out


class LinearHeadGrad:
    """``step_fn`` for ``train_head``: writes ``.grad`` of the head's parameters for one batch.

    ``weight`` (C, D); ``bias`` (C,) for the linear head; ``log_scale`` (scalar) for the cosine
    head (its gradient is written only when it requires grad). Called as
    ``grad(x, teacher_logits, progress, full_batch)``; the teacher distribution is
    ``softmax(teacher_logits / T)`` as in ``kd_loss``. ``alpha_fn(progress)`` is logconf's
    weight of the student's own hard label; ``matcher(logits, prior)`` its hardening
    (``losses.PriorMatcher``; None = argmax). ``theta`` is AdaptConf's temperature, in logit units,
    or, with ``theta_relative`` on the cosine head, in units of the logit scale (theta * s).
    """

    def __init__(self, weight: torch.Tensor, *, bias: torch.Tensor | None = None,
                 log_scale: torch.Tensor | None = None, loss: str = "kd", T: float = 1.0,
                 alpha_fn: Callable[[float], float] | None = None, theta: float = 0.5,
                 matcher: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 theta_relative: bool = False, exponents: tuple[float, float] = (1.0, 1.0)) -> None:
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; valid: {', '.join(LOSSES)}")
        if loss == "logconf" and (alpha_fn is None or T != 1.0):
            raise ValueError("the logconf loss needs alpha_fn and works at T = 1")
        if loss == "product" and T != 1.0:
            raise ValueError("the product loss works at T = 1")
        self.exponents = (float(exponents[0]), float(exponents[1]))  # product: (alpha weak, beta student)
        self.weight, self.bias, self.log_scale = weight, bias, log_scale
        self.loss, self.T, self.alpha_fn, self.theta = loss, float(T), alpha_fn, float(theta)
        self.theta_relative = theta_relative  # cosine head: AdaptConf's temperature is theta * s
        self.matcher = matcher  # logconf's hardening: (logits, prior) -> labels; None = argmax
        self._prior: tuple | None = None  # (teacher, mean teacher distribution) of the last batch
        self._buffers: dict[str, torch.Tensor] = {}
        self._cached: tuple | None = None  # (x, teacher, *_targets(x, teacher))

    def _buffer(self, name: str, n: int, c: int) -> torch.Tensor:
        buf = self._buffers.get(name)
        if buf is None or buf.shape[0] < n or buf.shape[1] != c:
            buf = self._buffers[name] = torch.empty(n, c)
        return buf[:n]

    def _targets(self, x: torch.Tensor, teacher: torch.Tensor, full_batch: bool) -> tuple:
        """``(p_t, p_t^T x, sum_i p_t)``: the teacher distribution and, for a fixed batch, the
        constant target part of the gradient (cached; ``p_t`` itself only where a loss needs it
        every step)."""
        c = self._cached
        if c is not None and c[0] is x and c[1] is teacher:
            return c[2:]
        p_t = softmax_(teacher / self.T if self.T != 1.0 else teacher, torch.empty_like(teacher))
        if not full_batch or self.loss in ("adaptconf", "product"):
            out = (p_t, None, None)
        else:
            out = (None, p_t.t() @ x, p_t.sum(0) if self.bias is not None else None)
        if full_batch:
            self._cached = (x, teacher, *out)
        return out

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, teacher: torch.Tensor, progress: float, full_batch: bool) -> None:
        n, c = x.shape[0], self.weight.shape[0]
        W, T = self.weight, self.T
        if self.bias is None:  # cosine head: z / T = x . M^T with M = (s / T) normalize(W)
            norm = W.norm(dim=1, keepdim=True)
            Wn = W / norm.clamp_min(_EPS)
            s = self.log_scale.exp()
            M, b = (Wn * (s / T)).t(), None
            self._underflow = 2 * float(s) / T > max_safe_spread(c)  # |z / T| <= s / T
            self._theta = self.theta * float(s) if self.theta_relative else self.theta
        else:
            M, b = (W / T).t() if T != 1.0 else W.t(), self.bias / T if T != 1.0 else self.bias
            self._underflow = True
            self._theta = self.theta
        p_t, const, const_sum = self._targets(x, teacher, full_batch)
        loss = getattr(self, f"_{self.loss}")
        gx = gsum = None
        rows = BLOCK_ROWS if torch.get_num_threads() == 1 else n
        if self.matcher is not None:
            rows = n  # the hardening looks at the whole batch's logits at once
            if self._prior is None or self._prior[0] is not teacher:
                self._prior = (teacher, softmax_(teacher, torch.empty_like(teacher)).mean(0))
        for i in range(0, n, rows):
            xs = x[i:i + rows]
            out = self._buffer("z", len(xs), c)
            Z = torch.mm(xs, M, out=out) if b is None else torch.addmm(b, xs, M, out=out)
            G, coef, scale = loss(Z, p_t[i:i + rows] if p_t is not None else None, teacher[i:i + rows], progress)
            gx = G.t() @ xs if gx is None else gx.addmm_(G.t(), xs)
            if self.bias is not None:
                gsum = G.sum(0) if gsum is None else gsum.add_(G.sum(0))
        # (dL/dz)^T x and sum_i dL/dz as batch means: G held all but coef * p_t where constant
        if const is not None:
            gx.sub_(const, alpha=coef)
            gsum = gsum.sub_(const_sum, alpha=coef) if gsum is not None else None
        gx.mul_(scale / n)
        if self.bias is not None:
            W.grad, self.bias.grad = gx, gsum.mul_(scale / n)
            return
        gWn = gx.mul_(s)  # dL/dnormalize(W)
        if self.log_scale.requires_grad:
            self.log_scale.grad = (gWn * Wn).sum()  # dL/dlog s = sum(dL/dz * z)
        radial = (gWn * Wn).sum(1, keepdim=True) * (norm > _EPS)
        W.grad = (gWn - Wn * radial).div_(norm.clamp_min(_EPS))

    def _softmax(self, Z: torch.Tensor) -> torch.Tensor:
        return softmax_(Z, self._buffer("p", *Z.shape), self._underflow)

    # Each loss returns (G, coef, scale): dL/dz = scale * (G - coef * p_t) / n, where G already
    # includes the p_t term when p_t is given (minibatches), else it is subtracted as a constant.

    def _kd(self, Z, p_t, teacher, progress):
        """dL/dz = T (softmax(z / T) - p_t) / n."""
        P = self._softmax(Z)
        return (P.sub_(p_t) if p_t is not None else P), 1.0, self.T

    def _logconf(self, Z, p_t, teacher, progress):
        """dL/dz = (softmax(z) - (1 - a) p - a onehot(h)) / n, h = the hardened labels (the
        argmax of z, or ``matcher(z, mean p)``: ``losses.prior_matched_labels``)."""
        a = float(self.alpha_fn(progress))
        top = Z.argmax(1) if self.matcher is None else self.matcher(Z, self._prior[1])
        P = self._softmax(Z)
        if a != 0.0:
            P.index_put_((torch.arange(len(P)), top), torch.tensor(-a), accumulate=True)
        return (P.sub_(p_t, alpha=1 - a) if p_t is not None else P), 1 - a, 1.0

    def _product(self, Z, p_t, teacher, progress):
        """dL/dz = (softmax(z) - q) / n with ``q ∝ softmax(z)^beta * p_t^alpha`` (no gradient
        through q): openai/weak-to-strong ``product_loss_fn``."""
        a, b = self.exponents
        P = self._softmax(Z)
        q = P.pow(b).mul_(p_t.pow(a) if a != 1.0 else p_t)
        q.div_(q.sum(1, keepdim=True).clamp_min_(_TINY))
        return P.sub_(q), 0.0, 1.0

    def _adaptconf(self, Z, p_t, teacher, progress):
        """dL/dz = ((1 - a_i) T (softmax(z / T) - p_t) + a_i (softmax(z) - onehot(argmax z))) / n,
        a_i = sigmoid((z_i[argmax teacher] - max z_i) / theta) (``losses.adaptconf_loss``)."""
        T = self.T
        zmax, top = Z.max(1)
        zt = Z.gather(1, teacher.argmax(1, keepdim=True)).squeeze(1)
        a = torch.sigmoid((zt - zmax) * (T / self._theta))
        P = self._softmax(Z)
        if T == 1.0:
            G = P.addcmul_(p_t, (a - 1).unsqueeze(1))
        else:
            P1 = softmax_(Z * T, self._buffer("p1", *Z.shape))
            G = P.sub_(p_t).mul_(((1 - a) * T).unsqueeze(1)).addcmul_(P1, a.unsqueeze(1))
        G.index_put_((torch.arange(len(G)), top), -a, accumulate=True)
        return G, 0.0, 1.0
