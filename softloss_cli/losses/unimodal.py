"""Unimodal soft labels: the one-hot target replaced by a distribution that peaks at the label
and decreases away from it, one table of C soft labels per family (dlordinal's soft labelling).

``q = (1 - eta) * onehot(y) + eta * T[y]`` with the family's table ``T`` ``[C, C]`` (row y: the
soft label of class y), and the loss ``KL(q || softmax(z))`` (``objective='kl'``, 0 at
``p = q``, the convention of ``sord``) or the cross-entropy ``-sum_k q_k log p_k``
(``objective='ce'``, dlordinal's ``CrossEntropyLoss`` base loss); they differ by the constant
entropy ``H(q)``, with identical gradients.

Families (``j`` the true class, ``k`` a class, ``0..C-1``), as dlordinal 2.7 builds them:

* ``binomial`` (Liu et al., "Unimodal regularized neuron stick-breaking for ordinal
  classification", Neurocomputing 2020): ``T[j, k] = Binomial(k; C-1, p_j)``,
  ``p_j = 0.1 + 0.8 j / (C-1)`` (dlordinal's ``linspace(0.1, 0.9, C)``). No free parameter.
* ``poisson`` (Liu et al. 2020): ``T[j] = softmax_k(Poisson(k; lambda = j + 1) / tau)``,
  ``tau = 1`` in dlordinal. The softmax is over the *probabilities* (not their logs), so the
  soft labels are flat (for C = 30 almost uniform): kept as dlordinal has it.
* ``beta`` (Vargas et al., "Unimodal regularisation based on beta distribution for deep
  ordinal regression", Pattern Recognition 2022): ``T[j, k] = I(x_{k+1}^a; p_j, q_j) -
  I(x_k^a; p_j, q_j)`` (``I`` the regularised incomplete beta, ``x_k = k / C``), one
  ``[p, q, a]`` per class: ``beta_params``, or dlordinal's ``standard`` set (3 to 14 classes).
* ``triangular`` (Vargas et al., "Soft labelling based on triangular distributions for
  ordinal classification", Information Fusion 2023): a triangular distribution per class on
  ``[0, 1]`` whose neighbours get ``alpha2`` each (default 0.05, dlordinal's ``TriangularLoss``).
* ``exponential`` (Vargas et al. 2023): ``T[j] = softmax_k(-|k - j|^power / tau)`` (class
  steps; SORD in class units, ``alpha = 1/tau``).
* ``geometric`` (Haas & Hüllermeier, "Rectifying bias in ordinal observational data using
  unimodal label smoothing", 2023): ``T[j, j] = 1 - alpha_j`` and ``alpha_j`` spread over the
  other classes in proportion to ``alpha_j^{|k - j|}``; ``alpha`` one value or one per class.

Our convention for the interval families (beta, triangular): the bins of ``[0, 1]`` have exact
edges ``k / C``. dlordinal uses ``linspace(1e-9, 1 - 1e-9, C + 1)``, which drops up to ~1e-9
of mass at both ends (a relative change of up to ~1 % on the smallest entries of the beta
table); with its edges set to ``k / C`` the tables agree to float64 rounding (tested).

Tables are built once per class count in float64 (closed forms, vectorised) and cached in
float32 per device; each step is one ``log_softmax`` and a dot product, with the gradient in
closed form (``softmax(z) * sum(q) - q``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from softloss_cli.losses.base import LOSSES, row_loss
from softloss_cli.losses.ordinal import OrdinalLoss, kl_rows, without_subnormals

__all__ = ["UNIMODAL_FAMILIES", "BETA_STANDARD", "UnimodalLoss", "unimodal_table"]

UNIMODAL_FAMILIES = ("binomial", "poisson", "beta", "triangular", "exponential", "geometric")
OBJECTIVES = ("kl", "ce")

#: dlordinal's ``standard`` beta parameters ``[p, q, a]`` per class, for 3 to 14 classes
#: (Vargas et al. 2022, Table 1).
BETA_STANDARD: dict[int, list[list[float]]] = {
    3: [[1, 4, 1], [4, 4, 1], [4, 1, 1]],
    4: [[1, 6, 1], [6, 10, 1], [10, 6, 1], [6, 1, 1]],
    5: [[1, 8, 1], [6, 14, 1], [12, 12, 1], [14, 6, 1], [8, 1, 1]],
    6: [[1, 10, 1], [7, 20, 1], [15, 20, 1], [20, 15, 1], [20, 7, 1], [10, 1, 1]],
    7: [[1, 12, 1], [7, 26, 1], [16, 28, 1], [24, 24, 1], [28, 16, 1], [26, 7, 1], [12, 1, 1]],
    8: [[1, 14, 1], [7, 31, 1], [17, 37, 1], [27, 35, 1], [35, 27, 1], [37, 17, 1], [31, 7, 1], [14, 1, 1]],
    9: [[1, 16, 1], [8, 40, 1], [18, 47, 1], [30, 47, 1], [40, 40, 1], [47, 30, 1], [47, 18, 1], [40, 8, 1],
        [16, 1, 1]],
    10: [[1, 18, 1], [8, 45, 1], [19, 57, 1], [32, 59, 1], [45, 55, 1], [55, 45, 1], [59, 32, 1], [57, 19, 1],
         [45, 8, 1], [18, 1, 1]],
    11: [[1, 21, 1], [8, 51, 1], [20, 68, 1], [34, 73, 1], [48, 69, 1], [60, 60, 1], [69, 48, 1], [73, 34, 1],
         [68, 20, 1], [51, 8, 1], [21, 1, 1]],
    12: [[1, 23, 1], [8, 56, 1], [20, 76, 1], [35, 85, 1], [51, 85, 1], [65, 77, 1], [77, 65, 1], [85, 51, 1],
         [85, 35, 1], [76, 20, 1], [56, 8, 1], [23, 1, 1]],
    13: [[1, 25, 1], [8, 61, 1], [20, 84, 1], [36, 98, 1], [53, 100, 1], [70, 95, 1], [84, 84, 1], [95, 70, 1],
         [100, 53, 1], [98, 36, 1], [84, 20, 1], [61, 8, 1], [25, 1, 1]],
    14: [[1, 27, 1], [2, 17, 1], [5, 23, 1], [9, 27, 1], [13, 28, 1], [18, 28, 1], [23, 27, 1], [27, 23, 1],
         [28, 18, 1], [28, 13, 1], [27, 9, 1], [23, 5, 1], [17, 2, 1], [27, 1, 1]],
}

_F64 = torch.float64


def _log_binomial_pmf(k: torch.Tensor, n: int, p: torch.Tensor) -> torch.Tensor:
    """``log Binomial(k; n, p)`` ``[J, K]`` for classes ``k [K]`` and probabilities ``p [J]`` (float64)."""
    log_choose = math.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
    return log_choose[None, :] + k[None, :] * torch.log(p)[:, None] + (n - k)[None, :] * torch.log1p(-p)[:, None]


def _binomial(c: int) -> torch.Tensor:
    k = torch.arange(c, dtype=_F64)
    return _log_binomial_pmf(k, c - 1, torch.linspace(0.1, 0.9, c, dtype=_F64)).exp()


def _poisson(c: int, tau: float) -> torch.Tensor:
    k = torch.arange(c, dtype=_F64)
    lam = torch.arange(1, c + 1, dtype=_F64)[:, None]
    pmf = (k[None, :] * torch.log(lam) - lam - torch.lgamma(k + 1)[None, :]).exp()
    return torch.softmax(pmf / tau, dim=1)


def _exponential(c: int, power: float, tau: float) -> torch.Tensor:
    k = torch.arange(c, dtype=_F64)
    return torch.softmax(-(k[None, :] - k[:, None]).abs().pow(power) / tau, dim=1)


def _geometric(c: int, alpha) -> torch.Tensor:
    a = torch.as_tensor(alpha, dtype=_F64).expand(c).clone()[:, None]
    k = torch.arange(c, dtype=_F64)
    d = (k[None, :] - k[:, None]).abs()
    off = d > 0
    weights = torch.where(off, a.pow(d), torch.zeros_like(d))  # alpha^|k-j| (the (1 - alpha) factor cancels)
    total = weights.sum(dim=1, keepdim=True)
    spread = a * weights / torch.where(total > 0, total, torch.ones_like(total))
    table = torch.where(off, spread, 1.0 - a)
    return torch.where(a == 0, (~off).to(_F64), table)  # alpha = 0: one-hot


def _regularised_incomplete_beta(x: torch.Tensor, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``I_x(p, q)`` ``[J, K]`` for ``x [J, K]`` in [0, 1] and integer ``p, q [J, 1]``: the binomial
    tail ``sum_{m=p}^{n} C(n, m) x^m (1-x)^(n-m)``, ``n = p + q - 1`` (exact for integers)."""
    n = (p + q - 1).amax().long().item()
    m = torch.arange(n + 1, dtype=_F64)  # [M]
    nn_ = (p + q - 1)[..., None]  # [J, 1, 1]
    xs = x[..., None]
    log_terms = (torch.lgamma(nn_ + 1) - torch.lgamma(m + 1) - torch.lgamma((nn_ - m).clamp_min(0) + 1)
                 + torch.special.xlogy(m, xs) + torch.special.xlogy(nn_ - m, 1 - xs))
    keep = (m >= p[..., None]) & (m <= nn_)
    return torch.where(keep, log_terms.exp(), torch.zeros_like(log_terms)).sum(dim=-1)


def _beta(c: int, params) -> torch.Tensor:
    if params is None:
        if c not in BETA_STANDARD:
            raise ValueError(f"family=beta has a standard parameter set for 3 to 14 classes, not {c}; "
                             f"give loss.beta_params=[[p, q, a], ...] (one per class)")
        params = BETA_STANDARD[c]
    t = torch.as_tensor(params, dtype=_F64)
    if t.shape != (c, 3):
        raise ValueError(f"beta_params needs one [p, q, a] per class ({c}), got shape {tuple(t.shape)}")
    if not (t > 0).all():
        raise ValueError("beta_params must all be > 0")
    p, q, a = t[:, :1], t[:, 1:2], t[:, 2:3]
    edges = (torch.arange(c + 1, dtype=_F64) / c)[None, :].pow(a)  # [J, C+1]
    if bool((p == p.round()).all() and (q == q.round()).all()):
        cdf = _regularised_incomplete_beta(edges, p, q)
    else:  # real shape parameters: scipy (installed with scikit-learn), only while building the table
        from scipy.special import betainc

        cdf = torch.as_tensor(betainc(p.numpy(), q.numpy(), edges.numpy()), dtype=_F64)
    return cdf.diff(dim=1)


def _triangular(c: int, alpha2: float) -> torch.Tensor:
    """dlordinal's ``get_triangular_soft_labels`` (Vargas et al. 2023, eqs. for a_j, b_j, c_j),
    vectorised over the classes, with exact bin edges ``k / C``."""
    s = math.sqrt(2 * alpha2)
    alpha1 = ((1 - math.sqrt(1 - 4 * (1 - 2 * alpha2) * (2 * alpha2 - s))) / 2) ** 2
    c1 = ((c - 1) / c) ** 2 * (1 - 2 * alpha2) * (s * (-1 + s))
    alpha3 = ((1 - math.sqrt(1 - 4 * c1)) / 2) ** 2
    j = torch.arange(1, c + 1, dtype=_F64)
    den = 2.0 * c * (1 - 2 * alpha2)
    num_a = 2.0 * j - 2 - 4 * j * alpha2 + 2 * alpha2
    a = torch.where((num_a + s) / den < (j - 1) / c, (num_a + s) / den, (num_a - s) / den)
    num_b = 2.0 * j - 4 * j * alpha2 + 2 * alpha2
    b = torch.where((num_b + s) / den > j / c, (num_b + s) / den, (num_b - s) / den)
    mode = (a + b) / 2
    a_last = 1.0 + 1.0 / (c * (math.sqrt(alpha3) - 1.0))
    a_last = a_last if a_last > 0 else 1.0 + 1.0 / (-c * (math.sqrt(alpha3) - 1.0))
    a[0], b[0], mode[0] = 0.0, 1.0 / ((1.0 - math.sqrt(alpha1)) * c), 0.0
    a[-1], b[-1], mode[-1] = a_last, 1.0, 1.0
    x = (torch.arange(c + 1, dtype=_F64) / c)[None, :]
    a, b, mode = a[:, None], b[:, None], mode[:, None]
    rising = (x - a).square() / ((b - a) * (mode - a))
    falling = 1 - (b - x).square() / ((b - a) * (b - mode))
    # dlordinal's branches: 0 at x <= a, rising for a < x < mode, falling for mode < x < b, 1 from b.
    # At x == mode dlordinal returns 1 (its else branch); here the falling branch gives the true
    # CDF there, (mode - a) / (b - a). No edge k/C falls on an interior mode in practice.
    cdf = torch.where(x <= a, 0.0, torch.where(x < mode, rising, torch.where(x < b, falling, 1.0)))
    return cdf.diff(dim=1)


def unimodal_table(family: str, num_classes: int, *, tau: float = 1.0, power: float = 1.0, alpha2: float = 0.05,
                   alpha: float | Sequence[float] = 0.1, beta_params=None) -> torch.Tensor:
    """The soft labels of ``family`` for ``C = num_classes``: float64 ``[C, C]``, row j = the soft
    label of class j (rows sum to 1 up to the interval families' exact edges). See the module
    docstring for each family's formula and parameters."""
    c = int(num_classes)
    if c < 2:
        raise ValueError(f"unimodal soft labels need at least 2 classes, got {c}")
    if family == "binomial":
        return _binomial(c)
    if family == "poisson":
        return _poisson(c, tau)
    if family == "exponential":
        return _exponential(c, power, tau)
    if family == "geometric":
        if not isinstance(alpha, (int, float)) and len(alpha) != c:
            raise ValueError(f"alpha needs one value or one per class ({c}), got {len(alpha)}")
        return _geometric(c, alpha)
    if family == "beta":
        return _beta(c, beta_params)
    if family == "triangular":
        return _triangular(c, alpha2)
    raise ValueError(f"family must be one of {', '.join(UNIMODAL_FAMILIES)}, got {family!r}")


@LOSSES.register("unimodal", "unimodal soft labels: binomial, poisson, beta, triangular, exponential, geometric (ordinal)")
class UnimodalLoss(OrdinalLoss):
    """KL (or CE) to a unimodal soft label of the family ``family`` (dlordinal's soft labelling).

    ``L(z, y) = KL(q_y || softmax(z))``, ``q_y = (1 - eta) onehot(y) + eta T[y]``, ``T`` the
    family's ``[C, C]`` table (``unimodal_table``; formulas and sources in the module docstring).

    Args:
        family: ``binomial`` | ``poisson`` | ``beta`` | ``triangular`` | ``exponential`` | ``geometric``.
        eta: share of the soft label in the target, in [0, 1] (dlordinal's ``eta``, default 1).
        objective: ``'kl'`` (default; 0 at ``p = q``) or ``'ce'`` (``-sum q log p``, dlordinal's
            value with ``CrossEntropyLoss``); same gradient.
        tau: exponential: temperature of ``softmax(-|k-j|^power / tau)``; poisson: temperature
            of dlordinal's softmax over the pmf (1 = dlordinal).
        power: exponential: exponent of the class distance.
        alpha2: triangular: the mass each neighbour of the label gets.
        alpha: geometric: the smoothing mass taken from the label, one value or one per class.
        beta_params: beta: ``[[p, q, a], ...]`` one per class, or None (dlordinal's standard
            set, 3 to 14 classes; other class counts are refused when the data is bound).
        logit_scale, penalty, penalty_weight, penalty_on, reduction: see ``SoftmaxLoss``.

    Parameters of other families are ignored. Distances are class steps (the families are
    defined on class indices); ``label_values`` do not enter. Shapes: logits ``[B, C]``,
    target int64 ``[B]``; scalar output (batch mean by default).
    """

    def __init__(self, family: str = "binomial", eta: float = 1.0, objective: str = "kl", tau: float = 1.0,
                 power: float = 1.0, alpha2: float = 0.05, alpha: float | Sequence[float] = 0.1,
                 beta_params=None, **kwargs):
        kwargs.pop("label_values", None)
        super().__init__(**kwargs)
        if family not in UNIMODAL_FAMILIES:
            raise ValueError(f"family must be one of {', '.join(UNIMODAL_FAMILIES)}, got {family!r}")
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        if not tau > 0 or not power > 0:
            raise ValueError(f"tau and power must be > 0, got {tau} and {power}")
        if not 0.0 < alpha2 < 0.5:
            raise ValueError(f"alpha2 must be in (0, 0.5), got {alpha2}")
        alphas = [alpha] if isinstance(alpha, (int, float)) else list(alpha)
        if not all(0.0 <= float(a) < 1.0 for a in alphas):
            raise ValueError(f"alpha must be in [0, 1), got {alpha}")
        self.family, self.eta, self.objective = family, float(eta), objective
        self.params = {"tau": float(tau), "power": float(power), "alpha2": float(alpha2),
                       "alpha": float(alpha) if isinstance(alpha, (int, float)) else [float(a) for a in alpha],
                       "beta_params": None if beta_params is None else [[float(v) for v in r] for r in beta_params]}
        self._tables: dict[tuple[torch.device, int], tuple[torch.Tensor, ...]] = {}

    def bind_task(self, task) -> None:
        """Build the table for the data's class count now, so a family that cannot serve it
        (beta without parameters for C > 14) is refused before training."""
        super().bind_task(task)
        self.soft_targets(task.num_classes)

    def soft_targets(self, num_classes: int) -> torch.Tensor:
        """The targets ``q`` for every class, float64 ``[C, C]`` (row y: the target of label y)."""
        table = unimodal_table(self.family, num_classes, **self.params)
        return (1.0 - self.eta) * torch.eye(num_classes, dtype=_F64) + self.eta * table

    def _cached(self, c: int, device) -> tuple[torch.Tensor, ...]:
        key = (torch.device(device), c)
        tables = self._tables.get(key)
        if tables is None:
            q = self.soft_targets(c)
            q = without_subnormals(q)  # binomial's far tail at C = 100
            q_log_q = torch.special.xlogy(q, q).sum(dim=1) if self.objective == "kl" else torch.zeros(c, dtype=_F64)
            tables = tuple(t.to(device=device, dtype=torch.float32) for t in (q, q_log_q, q.sum(dim=1)))
            self._tables[key] = tables
        return tables

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor, **aux) -> torch.Tensor:
        # The tables' KL is SORD's (ordinal.kl_rows): the same fused paths.
        return row_loss(kl_rows, logits, target, *self._cached(logits.shape[1], logits.device))[0]
