"""Analytic training steps for the linear heads (the fast path of cpl, its variants and kd_lp).

Heads, on a batch of features ``x`` (n, D):

- cosine (CPL and the methods built on its head): ``x`` holds L2-normalised features,
  ``z = s * x . normalize(W)^T`` with ``s = exp(log_scale)``;
- linear (``kd_lp``): ``z = x . W^T + b``.

Losses (``w2sclip.losses``, batch means): ``kd`` ``T^2 KL(p_t || softmax(z / T))``, ``logconf``
``CE(z, (1 - a) p + a onehot(argmax z))`` and ``adaptconf``. Their gradient with respect to z
is closed-form (``T (softmax(z / T) - p_t) / n`` for kd), so a step is: one matrix
multiplication for the logits (n x C, into a reused buffer), a softmax in place, one for the
gradient of the weights (C x D), and C x D work for the normalisation and Adam. With a fixed
batch (full-batch training) the target part ``p_t^T x`` of the gradient is constant and
computed once, so nothing else of size n x C is touched. ``tests/test_linear_head.py`` checks
the gradients against autograd.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

LOSSES = ("kd", "logconf", "adaptconf")
_EPS = 1e-12  # as torch.nn.functional.normalize
SPREAD = 64.0
"""Logits more than this below their row's maximum are raised to it before a softmax: their
probability (< e^-64) is far below float32 resolution of the loss, and it keeps the softmax
out of subnormal numbers, on which CPU exp and matrix multiplication run many times slower."""


def softmax_(Z: torch.Tensor, out: torch.Tensor, spread: float | None = SPREAD) -> torch.Tensor:
    """Row softmax of Z into ``out``; Z is clipped in place at ``max - spread`` (``None``: the
    caller knows the rows spread less, nothing is clipped)."""
    if spread is not None:
        Z.clamp_min_(Z.amax(1, keepdim=True) - spread)
    return torch.softmax(Z, dim=1, out=out)


class LinearHeadGrad:
    """``step_fn`` for ``train_head``: writes ``.grad`` of the head's parameters for one batch.

    ``weight`` (C, D); ``bias`` (C,) for the linear head; ``log_scale`` (scalar) for the cosine
    head (its gradient is written only when it requires grad). Called as
    ``grad(x, teacher_logits, progress, full_batch)``; the teacher distribution is
    ``softmax(teacher_logits / T)`` as in ``kd_loss``. ``alpha_fn(progress)`` is logconf's
    weight of the student's own hard label; ``theta`` is AdaptConf's temperature.
    """

    def __init__(self, weight: torch.Tensor, *, bias: torch.Tensor | None = None,
                 log_scale: torch.Tensor | None = None, loss: str = "kd", T: float = 1.0,
                 alpha_fn: Callable[[float], float] | None = None, theta: float = 0.5) -> None:
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; valid: {', '.join(LOSSES)}")
        if loss == "logconf" and (alpha_fn is None or T != 1.0):
            raise ValueError("the logconf loss needs alpha_fn and works at T = 1")
        self.weight, self.bias, self.log_scale = weight, bias, log_scale
        self.loss, self.T, self.alpha_fn, self.theta = loss, float(T), alpha_fn, float(theta)
        self._buffers: dict[str, torch.Tensor] = {}
        self._cached: tuple | None = None  # (x, teacher, p_t, p_t^T x, colsum p_t)

    def _buffer(self, name: str, n: int, c: int) -> torch.Tensor:
        buf = self._buffers.get(name)
        if buf is None or buf.shape[0] < n or buf.shape[1] != c:
            buf = self._buffers[name] = torch.empty(n, c)
        return buf[:n]

    def _targets(self, x: torch.Tensor, teacher: torch.Tensor, full_batch: bool) -> tuple:
        """``p_t`` and, for a fixed batch, the constant ``p_t^T x`` and ``sum_i p_t`` (cached)."""
        c = self._cached
        if c is not None and c[0] is x and c[1] is teacher:
            return c[2:]
        p_t = softmax_(teacher / self.T, torch.empty_like(teacher))
        if not full_batch:
            return p_t, None, None
        const = (p_t, p_t.t() @ x, p_t.sum(0) if self.bias is not None else None)
        self._cached = (x, teacher, *const)
        return const

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, teacher: torch.Tensor, progress: float, full_batch: bool) -> None:
        n, c = x.shape[0], self.weight.shape[0]
        W, T = self.weight, self.T
        if self.bias is None:  # cosine head: z / T = x . U^T with U = (s / T) normalize(W)
            norm = W.norm(dim=1, keepdim=True)
            Wn = W / norm.clamp_min(_EPS)
            s = self.log_scale.exp()
            Z = torch.mm(x, (Wn * (s / T)).t(), out=self._buffer("z", n, c))
            self._spread = SPREAD if 2 * float(s) / T > SPREAD else None  # |z / T| <= s / T
        else:
            Z = torch.addmm(self.bias, x, W.t(), out=self._buffer("z", n, c))
            if T != 1.0:
                Z.div_(T)
            self._spread = SPREAD
        p_t, const, const_sum = self._targets(x, teacher, full_batch)
        gx, gsum = getattr(self, f"_{self.loss}")(Z, x, p_t, const, const_sum, teacher, progress)
        gx.div_(n)  # (dL/dz)^T x, the batch mean
        if self.bias is not None:
            W.grad, self.bias.grad = gx, gsum.div_(n)
            return
        gWn = gx.mul_(s)  # dL/dnormalize(W)
        if self.log_scale.requires_grad:
            self.log_scale.grad = (gWn * Wn).sum()  # dL/dlog s = sum(dL/dz * z)
        radial = (gWn * Wn).sum(1, keepdim=True) * (norm > _EPS)
        W.grad = (gWn - Wn * radial).div_(norm.clamp_min(_EPS))

    def _softmax(self, Z: torch.Tensor, name: str = "p") -> torch.Tensor:
        return softmax_(Z, self._buffer(name, *Z.shape), self._spread)

    def _colsum(self, P: torch.Tensor) -> torch.Tensor | None:
        return P.sum(0) if self.bias is not None else None

    def _kd(self, Z, x, p_t, const, const_sum, teacher, progress):
        """T (softmax(z / T) - p_t), times x."""
        P = self._softmax(Z)
        if const is None:
            P.sub_(p_t)
            gx, gsum = P.t() @ x, self._colsum(P)
        else:
            gx = (P.t() @ x).sub_(const)
            gsum = self._colsum(P).sub_(const_sum) if self.bias is not None else None
        if self.T != 1.0:
            gx.mul_(self.T)
            gsum = gsum.mul_(self.T) if gsum is not None else None
        return gx, gsum

    def _logconf(self, Z, x, p_t, const, const_sum, teacher, progress):
        """softmax(z) - (1 - a) p - a onehot(argmax z), times x."""
        a = float(self.alpha_fn(progress))
        top = Z.argmax(1)
        P = self._softmax(Z)
        if const is None:
            P.sub_(p_t, alpha=1 - a)
            gx, gsum = P.t() @ x, self._colsum(P)
        else:
            gx = (P.t() @ x).sub_(const, alpha=1 - a)
            gsum = self._colsum(P).sub_(const_sum, alpha=1 - a) if self.bias is not None else None
        if a != 0.0:
            gx.sub_(torch.zeros_like(gx).index_add_(0, top, x), alpha=a)
            if gsum is not None:
                gsum.sub_(torch.bincount(top, minlength=Z.shape[1]).to(gsum), alpha=a)
        return gx, gsum

    def _adaptconf(self, Z, x, p_t, const, const_sum, teacher, progress):
        """(1 - a_i) T (softmax(z / T) - p_t) + a_i (softmax(z) - onehot(argmax z)), times x;
        a_i = sigmoid((z_i[argmax teacher] - max z_i) / theta) (``losses.adaptconf_loss``)."""
        T = self.T
        zmax, top = Z.max(1)
        zt = Z.gather(1, teacher.argmax(1, keepdim=True)).squeeze(1)
        a = torch.sigmoid((zt - zmax) * (T / self.theta))
        P = self._softmax(Z)
        if T == 1.0:
            G = P.addcmul_(p_t, (a - 1).unsqueeze(1))
        else:
            P1 = softmax_(Z * T, self._buffer("p1", *Z.shape))
            G = P.sub_(p_t).mul_(((1 - a) * T).unsqueeze(1)).addcmul_(P1, a.unsqueeze(1))
        G.index_put_((torch.arange(len(G)), top), -a, accumulate=True)
        return G.t() @ x, self._colsum(G)
