"""Average-K metrics: sets of about K labels from one global threshold chosen on validation.

Average-K classification (Denis & Hebiri 2017, "Confidence sets with expected sizes for
multiclass classification", JMLR; Garcin et al., arXiv 2303.18118) returns for sample i
the set ``S_i = {c : s_ic >= lambda}`` with one
global threshold ``lambda`` chosen so that sets hold K labels on average: an ambiguous
input gets a big set, a clear one a single label.

Choosing lambda (``avgk_threshold``): flatten the N x C validation scores and take the
midpoint between the (N*K)-th and (N*K+1)-th largest, so the validation sets hold exactly
N*K labels in total (K on average) when those two differ. Under a tie the midpoint is the
tied value and every tied entry is in (sets a little bigger than K). The threshold is
then applied to the test scores unchanged, so test set sizes average K only
approximately (``avgk_set_size_k{K}`` reports the realised mean).

Pure functions over whole-split tensors, argument checks first (skipped with
``validate_args=False``). ``scores`` are any real scores: only their order over the
whole matrix counts (logits of a sigmoid head, log-probabilities of a softmax).
``targets`` are int64 class indices ``[N]``.
"""

from __future__ import annotations

import math

import torch

from softloss_cli.metrics import EvalOutputs, metric_group

__all__ = [
    "AVGK_KS",
    "BUCKETS",
    "average_k_metrics",
    "avgk_accuracy",
    "avgk_bucket_accuracy",
    "avgk_class_accuracy",
    "avgk_covered",
    "avgk_macro_accuracy",
    "avgk_set_sizes",
    "avgk_threshold",
    "class_buckets",
    "oracle_avgk_accuracy",
    "oracle_inclusion",
    "set_scores",
]

AVGK_KS = (1, 2, 3, 5)
BUCKETS = ("head", "medium", "tail")
_CHUNK_ELEMENTS = 1 << 22  # set sizes are counted over row chunks of at most this many scores
_SAMPLE_ELEMENTS = 1 << 20  # size of the strided sample that brackets the top N*K scores


# --------------------------------------------------------------------------- validation


def _check_scores(x, name: str = "scores") -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, C], got shape {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name} must be float32 or float64 (cast lower precisions first), got {x.dtype}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    lo, hi = torch.aminmax(x.detach())  # one pass, no N x C temporary; NaN propagates to both
    if not (math.isfinite(lo.item()) and math.isfinite(hi.item())):
        raise ValueError(f"{name} must be finite (no NaN or inf)")


def _check_k(k, c: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"k must be an int, got {type(k).__name__}")
    if not 1 <= k < c:
        raise ValueError(f"k must be in [1, C) = [1, {c}) (K = C would put every class in every set), got {k}")


def _check_targets(targets, n: int, c: int) -> None:
    if not isinstance(targets, torch.Tensor):
        raise ValueError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    if targets.ndim != 1 or targets.shape[0] != n:
        raise ValueError(f"targets must be [N] = [{n}] class indices, got shape {tuple(targets.shape)}")
    if targets.dtype == torch.bool or targets.is_floating_point() or targets.is_complex():
        raise ValueError(f"targets must be integer class indices (int64), got dtype {targets.dtype}")
    lo, hi = targets.min().item(), targets.max().item()
    if lo < 0 or hi >= c:
        raise ValueError(f"targets must be class indices in [0, {c - 1}], got values from {lo} to {hi}")


def _check_threshold(threshold) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or math.isnan(threshold):
        raise ValueError(f"threshold must be a real number, got {threshold!r}")


# --------------------------------------------------------------------------- threshold and sets


def avgk_threshold(scores: torch.Tensor, k: int, *, validate_args: bool = True) -> float:
    """The global Average-K threshold: midpoint of the (N*k)-th and (N*k+1)-th largest score.

    ``lambda = (s_(Nk) + s_(Nk+1)) / 2`` over the flattened ``[N, C]`` scores sorted in
    decreasing order, computed in float64 (a Python float), so that ``s >= lambda`` keeps
    exactly the N*k largest entries when the two differ; when they tie, ``lambda`` is the
    tied value and every tied entry is kept.

    Cost: no sort and no copy of the matrix. The ``min(N*k, N*C - N*k) + 1`` extreme
    values are found by ``_extreme_values``: a strided sample brackets them, one pass
    keeps the scores beyond that bracket and a ``torch.topk`` runs on those only, so the
    extra memory is O(N*k) plus a boolean mask of at most ``_CHUNK_ELEMENTS`` (4 MB).
    N = 31,000 x C = 1,081 (Pl@ntNet-300K's validation set) takes well under a second on
    a CPU.

    Args:
        scores: ``[N, C]`` float32/float64 finite scores.
        k: K, an int in ``[1, C)``.
        validate_args: check shape, dtype, finiteness and k first.

    Returns lambda as a Python float.
    """
    if validate_args:
        _check_scores(scores)
        _check_k(k, scores.shape[1])
    return _avgk_thresholds(scores, [k])[k]


def _avgk_thresholds(scores: torch.Tensor, ks) -> dict[int, float]:
    """``avgk_threshold`` for several K at once, from one selection of the extreme scores.

    The K whose N*K+1 largest values are the shorter side share one selection of the
    ``N*max(K)+1`` largest (sorted, so every threshold is read off it); a K close to C
    (the smallest side shorter) gets its own selection of the smallest values.
    """
    flat = scores.detach().reshape(-1)
    n, c = scores.shape
    total = flat.numel()
    top_ks = [k for k in ks if n * k + 1 <= total - n * k + 1]
    result: dict[int, float] = {}
    if top_ks:
        top = _extreme_values(flat, n * max(top_ks) + 1, largest=True, row_len=c)
        for k in top_ks:
            m = n * k
            upper, lower = top[m - 1].item(), top[m].item()  # the m-th and (m+1)-th largest
            result[k] = (upper + lower) / 2.0
    for k in ks:
        if k in result:
            continue
        m = n * k  # K close to C: the smallest side is the shorter one
        bottom = _extreme_values(flat, total - m + 1, largest=False, row_len=c)
        upper, lower = bottom[-1].item(), bottom[-2].item()
        result[k] = (upper + lower) / 2.0
    return {k: result[k] for k in ks}


def _extreme_values(flat: torch.Tensor, m: int, *, largest: bool, row_len: int) -> torch.Tensor:
    """``torch.topk(flat, m, largest=largest, sorted=True).values``, without topk's copy of ``flat``.

    ``torch.topk`` on the CPU copies its whole input into a buffer of (value, index)
    pairs (16 bytes a score). Here a strided sample of about ``_SAMPLE_ELEMENTS`` scores
    (stride coprime with the row length, so that every column is sampled) gives a cutoff
    that a little more than m scores pass; one comparison pass, in chunks of
    ``_CHUNK_ELEMENTS``, keeps the scores at or beyond it, and topk runs on those. When fewer than m pass (an unlucky sample), or
    the input is small or m a large share of it, topk runs on the whole input: the
    values are the same either way.
    """
    total = flat.numel()
    if total <= 4 * _SAMPLE_ELEMENTS or 8 * m >= total:
        return torch.topk(flat, m, largest=largest, sorted=True).values
    stride = total // _SAMPLE_ELEMENTS
    while math.gcd(stride, row_len) != 1:
        stride += 1
    sample = flat[::stride]
    expected = m * sample.numel() / total  # sample entries expected beyond the m-th extreme value
    rank = min(sample.numel(), int(1.1 * expected + 4.0 * math.sqrt(expected)) + 64)
    cutoff = torch.topk(sample, rank, largest=largest, sorted=False).values
    cutoff = cutoff.min() if largest else cutoff.max()
    chunks = (flat[i : i + _CHUNK_ELEMENTS] for i in range(0, total, _CHUNK_ELEMENTS))  # a few, not samples
    kept = torch.cat([x[x >= cutoff] if largest else x[x <= cutoff] for x in chunks])
    if kept.numel() < m:
        kept = flat
    return torch.topk(kept, m, largest=largest, sorted=True).values


def _threshold_for(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """The smallest value of ``scores.dtype`` that is ``>= threshold``.

    For a float32 score v, ``v >= that value`` is exactly ``v >= threshold`` in real
    arithmetic, without casting the matrix to float64 (a float64 midpoint rounded to
    float32 could fall on one of the two scores it separates).
    """
    t = torch.tensor(threshold, dtype=torch.float64).to(scores.dtype)
    if t.item() < threshold:
        t = torch.nextafter(t, torch.tensor(math.inf, dtype=scores.dtype))
    return t.to(scores.device)


def avgk_set_sizes(scores: torch.Tensor, threshold: float, *, validate_args: bool = True) -> torch.Tensor:
    """``|S_i| = #{c : s_ic >= threshold}`` for every sample: int64 ``[N]``.

    Counted by ``_set_sizes`` in row chunks, with one reused buffer of at most
    ``_CHUNK_ELEMENTS`` floats (16 MB).
    """
    if validate_args:
        _check_scores(scores)
        _check_threshold(threshold)
    return _set_sizes(scores, [threshold])[:, 0]


def _set_sizes(scores: torch.Tensor, thresholds) -> torch.Tensor:
    """Set sizes at several thresholds: int64 ``[N, len(thresholds)]``, column j at ``thresholds[j]``.

    One pass over row chunks: each chunk is compared with every threshold into one reused
    0/1 float buffer and the row counts come from a matrix-vector product with ones (exact:
    float32 counts are exact below 2**24 columns, float64 is used beyond). No N x C
    temporary, no int64 copy of a boolean mask (what ``mask.sum(dim=1)`` makes).
    """
    s = scores.detach()
    n, c = s.shape
    dtype = torch.float32 if c < 2**24 else torch.float64
    ts = [_threshold_for(s, t) for t in thresholds]
    rows = max(1, _CHUNK_ELEMENTS // c)
    buf = torch.empty(min(rows, n), c, dtype=dtype, device=s.device)
    ones = torch.ones(c, dtype=dtype, device=s.device)
    counts = torch.empty(len(ts), n, dtype=dtype, device=s.device)
    for i in range(0, n, rows):  # row chunks, not samples
        chunk = s[i : i + rows]
        mask = buf[: len(chunk)]
        for j, t in enumerate(ts):  # a handful of thresholds
            torch.ge(chunk, t, out=mask)
            torch.mv(mask, ones, out=counts[j, i : i + len(chunk)])
    return counts.to(torch.int64).T


def avgk_covered(scores: torch.Tensor, targets: torch.Tensor, threshold: float, *,
                 validate_args: bool = True) -> torch.Tensor:
    """bool ``[N]``: the true label is in the set, ``s_iy_i >= threshold``."""
    if validate_args:
        _check_scores(scores)
        _check_targets(targets, *scores.shape)
        _check_threshold(threshold)
    true_score = scores.detach().gather(1, targets.to(scores.device, torch.int64)[:, None]).squeeze(1)
    return true_score >= _threshold_for(scores, threshold)


def avgk_accuracy(scores: torch.Tensor, targets: torch.Tensor, threshold: float, *,
                  validate_args: bool = True) -> float:
    """Average-K accuracy: ``(1/N) sum_i 1[s_iy_i >= threshold]``, a float in [0, 1]."""
    return avgk_covered(scores, targets, threshold, validate_args=validate_args).to(torch.float64).mean().item()


def avgk_class_accuracy(scores: torch.Tensor, targets: torch.Tensor, threshold: float, *,
                        validate_args: bool = True) -> torch.Tensor:
    """Per-class Average-K accuracy, float64 ``[C]``: the share of class-c samples whose set
    holds c (``bincount`` of hits over ``bincount`` of labels); NaN for a class with no sample."""
    covered = avgk_covered(scores, targets, threshold, validate_args=validate_args)
    return _per_class(covered, targets, scores.shape[1])


def _per_class(covered: torch.Tensor, targets: torch.Tensor, c: int) -> torch.Tensor:
    y = targets.to(torch.int64).cpu()
    count = torch.bincount(y, minlength=c).to(torch.float64)
    hits = torch.bincount(y, weights=covered.cpu().to(torch.float64), minlength=c)
    return torch.where(count > 0, hits / count.clamp_min(1.0), torch.full_like(count, math.nan))


def avgk_macro_accuracy(scores: torch.Tensor, targets: torch.Tensor, threshold: float, *,
                        validate_args: bool = True) -> float:
    """Macro Average-K accuracy: the mean of ``avgk_class_accuracy`` over the classes that
    have at least one sample in ``targets`` (absent classes are left out, not scored 0)."""
    per_class = avgk_class_accuracy(scores, targets, threshold, validate_args=validate_args)
    return per_class[~torch.isnan(per_class)].mean().item()


# --------------------------------------------------------------------------- class-frequency buckets


def class_buckets(counts) -> torch.Tensor:
    """Bucket of every class by its (training) frequency: int64 ``[C]``, 0 head, 1 medium, 2 tail.

    Classes are sorted by count, most frequent first (ties: lower class index first), and
    cut into three groups of (nearly) equal numbers of classes (``torch.tensor_split``;
    with C not divisible by 3 the first groups get one more). Terciles rather than fixed
    counts (e.g. Liu et al.'s many-shot > 100 > medium > 20 > few-shot, arXiv 1904.05160),
    so that every bucket is populated at any dataset size.
    """
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if counts.ndim != 1 or counts.numel() == 0 or (counts < 0).any():
        raise ValueError(f"counts must be a non-empty 1-D list of class counts >= 0, got shape {tuple(counts.shape)}")
    order = torch.sort(counts, descending=True, stable=True).indices
    bucket = torch.empty(counts.numel(), dtype=torch.int64)
    for b, members in enumerate(torch.tensor_split(order, len(BUCKETS))):  # 3 groups, not samples
        bucket[members] = b
    return bucket


def avgk_bucket_accuracy(covered: torch.Tensor, targets: torch.Tensor, bucket: torch.Tensor) -> torch.Tensor:
    """Average-K accuracy over the samples whose true class is in each bucket: float64
    ``[3]`` (head, medium, tail), NaN for a bucket without samples. ``covered`` is
    ``avgk_covered``'s output, ``bucket`` is ``class_buckets``'."""
    sample_bucket = bucket[targets.to(torch.int64).cpu()]
    n = torch.bincount(sample_bucket, minlength=len(BUCKETS)).to(torch.float64)
    hits = torch.bincount(sample_bucket, weights=covered.cpu().to(torch.float64), minlength=len(BUCKETS))
    return torch.where(n > 0, hits / n.clamp_min(1.0), torch.full_like(n, math.nan))


# --------------------------------------------------------------------------- Bayes oracle


def oracle_inclusion(posterior: torch.Tensor, k: int, *, validate_args: bool = True) -> torch.Tensor:
    """How much of each (sample, class) entry the Bayes-optimal Average-K sets include.

    With the true posterior ``p(y|x_i)`` known, the sets of total size N*k that maximise the
    expected number of covered labels hold the N*k largest posterior entries. Posteriors
    tie a lot (every sample of one synthetic type shares its posterior), so at the
    boundary value ``lambda`` (the (N*k)-th largest) a *fraction* r of the tied entries is
    included (a randomised rule meeting the budget exactly):
    ``f_ic = 1[p_ic > lambda] + r * 1[p_ic = lambda]``, ``r = (N*k - #above) / #tied``.

    Returns float64 ``[N, C]`` with entries in [0, 1] summing to N*k.
    """
    if validate_args:
        _check_scores(posterior, "posterior")
        _check_k(k, posterior.shape[1])
    p = posterior.detach()
    m = p.shape[0] * k
    lam = torch.topk(p.reshape(-1), m, sorted=True).values[-1]
    above, tied = p > lam, p == lam
    r = (m - above.sum().item()) / tied.sum().item()
    return above.to(torch.float64) + r * tied.to(torch.float64)


def oracle_avgk_accuracy(posterior: torch.Tensor, k: int, *, validate_args: bool = True) -> float:
    """Expected Average-K accuracy of the Bayes oracle on these samples:
    ``(1/N) * (sum of the N*k largest posterior entries)`` (ties do not change the sum)."""
    if validate_args:
        _check_scores(posterior, "posterior")
        _check_k(k, posterior.shape[1])
    flat = posterior.detach().reshape(-1)
    return torch.topk(flat, posterior.shape[0] * k).values.to(torch.float64).sum().item() / posterior.shape[0]


# --------------------------------------------------------------------------- metric group


def set_scores(outputs: EvalOutputs) -> tuple[torch.Tensor, bool]:
    """``(scores whose sets are thresholded, from_aux)`` for a run's outputs.

    The multi-label head (``aux_logits``) when ``outputs.info['set_source'] ==
    'aux_logits'`` (``two_head``), else the main head. The order is that of the
    probabilities, but the scores are taken before the last rounding step: logits for
    sigmoid outputs (``sigmoid`` rounds to exactly 1.0 above ~17 in float32, which would
    tie every confident entry), ``log_softmax`` of the logits for a softmax (never 0).
    ``avgk_threshold_k{K}`` converts the chosen threshold back to a probability.
    """
    if _sets_from_aux(outputs):
        return outputs.aux["aux_logits"].to(torch.float32), True
    if outputs.info.get("activation", "softmax") == "sigmoid":
        return outputs.logits.to(torch.float32), False
    return torch.log_softmax(outputs.logits.to(torch.float32), dim=1), False


def _sets_from_aux(outputs: EvalOutputs) -> bool:
    """Whether ``set_scores`` reads the multi-label head (checking that the outputs have it)."""
    if outputs.info.get("set_source", "logits") == "aux_logits":
        if "aux_logits" not in outputs.aux:
            raise ValueError("set_source is 'aux_logits' but the outputs have no aux_logits (model.heads=two)")
        return True
    return False


def _to_probability(threshold: float, sigmoid: bool) -> float:
    t = torch.tensor(threshold, dtype=torch.float64)
    return (torch.sigmoid(t) if sigmoid else torch.exp(t)).item()


def _bucket_counts(task, outputs: EvalOutputs, reference: EvalOutputs | None) -> torch.Tensor:
    """Class counts for the head/medium/tail buckets: ``task.extras['train_class_counts']``
    (``build_data`` sets them for every multiclass dataset), else, for a task built by hand,
    the validation labels (``reference``, or this split when it is the validation split itself)."""
    counts = task.extras.get("train_class_counts") if getattr(task, "extras", None) else None
    if counts is not None and len(counts) == task.num_classes:
        return torch.as_tensor(counts)
    labels = (reference if reference is not None else outputs).targets
    return torch.bincount(labels.to(torch.int64).cpu(), minlength=task.num_classes)


@metric_group("multiclass")
def average_k_metrics(outputs: EvalOutputs, task, reference: EvalOutputs | None = None) -> dict[str, float]:
    """Average-K metrics of a multiclass split, for K in (1, 2, 3, 5) with ``K < C``.

    Sets come from ``set_scores`` (the multi-label head for ``two_head``, else the main
    head); ``avgk_source_aux`` is 1 when the multi-label head was used, 0 otherwise, and
    ``avgk_set_source`` says which scores made the sets: 0 the softmax of the main head, 1 the
    sigmoids of the main head (multi-label baselines), 2 the multi-label head. The
    threshold is chosen on ``reference`` (the validation outputs, when the test split is
    scored), or on this split when ``reference`` is None (the validation split itself).
    Per K:

    - ``avgk_acc_k{K}``: share of samples whose true label is in their set;
    - ``avgk_macro_acc_k{K}``: mean over classes present in this split of the per-class value;
    - ``avgk_{head,medium,tail}_acc_k{K}``: the accuracy over samples of the head/medium/tail
      classes (terciles of the training class counts, see ``class_buckets``/``_bucket_counts``);
    - ``avgk_set_size_k{K}``: realised mean set size; ``avgk_empty_rate_k{K}``: share of
      empty sets (a global threshold can leave a confident-nowhere sample with none);
    - ``avgk_threshold_k{K}``: the threshold as a probability (sigmoid or softmax);
    - when the data knows the posterior (``outputs.posterior``), the Bayes oracle on this
      split: ``avgk_oracle_acc_k{K}`` (expected accuracy of the best sets of total size
      N*K, see ``oracle_inclusion``), ``avgk_oracle_macro_acc_k{K}``,
      ``avgk_oracle_{head,medium,tail}_acc_k{K}`` (expected hits over expected labels of
      the bucket) and ``avgk_oracle_gap_k{K}`` = oracle - ``avgk_acc_k{K}``.

    ``topk_acc_k{K}`` comes from the classification group (``accuracy`` is top-1).
    Memory: one N x C float32 score matrix at a time (the reference's, dropped once its
    thresholds are chosen, then this split's), plus the small temporaries of
    ``_extreme_values`` and ``_set_sizes``; without a posterior, nothing else of size N x C.
    Side effect, for the figures of ``plots/average_k.py``: the thresholds used (in
    ``set_scores`` units) are stored in ``outputs.info['avgk_thresholds']`` ({K: float}).
    """
    c = task.num_classes
    ks = [k for k in AVGK_KS if k < c]
    if not ks:
        return {}
    # The thresholds come from the reference scores first, which are then dropped, so that
    # the reference and test score matrices are never held at once.
    thresholds: dict[int, float] = {}
    if reference is not None:
        from_aux = _sets_from_aux(outputs)
        ref_scores, ref_aux = set_scores(reference)
        _check_scores(ref_scores, "reference scores")
        if ref_aux != from_aux or ref_scores.shape[1] != c:
            raise ValueError("reference outputs must come from the same run (same set source and classes)")
        thresholds = _avgk_thresholds(ref_scores, ks)
        del ref_scores
    scores, from_aux = set_scores(outputs)
    _check_scores(scores)
    if scores.shape[1] != c:
        raise ValueError(f"scores have {scores.shape[1]} columns but the task has {c} classes")
    targets = outputs.targets
    _check_targets(targets, *scores.shape)
    if reference is None:
        thresholds = _avgk_thresholds(scores, ks)
    sigmoid_scale = from_aux or outputs.info.get("activation") == "sigmoid"
    bucket = class_buckets(_bucket_counts(task, outputs, reference))
    posterior = outputs.posterior
    if posterior is not None:
        posterior = posterior.to(torch.float32)
        _check_scores(posterior, "posterior")
        mass = posterior.to(torch.float64).sum(dim=0)  # expected labels per class
        present = torch.bincount(targets.to(torch.int64).cpu(), minlength=c) > 0

    set_source = 2.0 if from_aux else (1.0 if outputs.info.get("activation") == "sigmoid" else 0.0)
    result: dict[str, float] = {"avgk_source_aux": float(from_aux), "avgk_set_source": set_source}
    # One pass over the scores for every K's set sizes; the true-label scores gathered once.
    all_sizes = _set_sizes(scores, [thresholds[k] for k in ks])
    true_score = scores.detach().gather(1, targets.to(scores.device, torch.int64)[:, None]).squeeze(1)
    for j, k in enumerate(ks):
        lam = thresholds[k]
        covered = true_score >= _threshold_for(scores, lam)  # as avgk_covered
        sizes = all_sizes[:, j]
        per_class = _per_class(covered, targets, c)
        result[f"avgk_acc_k{k}"] = covered.to(torch.float64).mean().item()
        result[f"avgk_macro_acc_k{k}"] = per_class[~torch.isnan(per_class)].mean().item()
        for name, value in zip(BUCKETS, avgk_bucket_accuracy(covered, targets, bucket).tolist()):
            if not math.isnan(value):
                result[f"avgk_{name}_acc_k{k}"] = value
        result[f"avgk_set_size_k{k}"] = sizes.to(torch.float64).mean().item()
        result[f"avgk_empty_rate_k{k}"] = (sizes == 0).to(torch.float64).mean().item()
        result[f"avgk_threshold_k{k}"] = _to_probability(lam, sigmoid_scale)
        if posterior is not None:
            hits = (posterior.to(torch.float64) * oracle_inclusion(posterior, k, validate_args=False)).sum(dim=0)
            oracle = hits.sum().item() / len(posterior)
            result[f"avgk_oracle_acc_k{k}"] = oracle
            keep = present & (mass > 0)
            result[f"avgk_oracle_macro_acc_k{k}"] = (hits[keep] / mass[keep]).mean().item()
            for b, name in enumerate(BUCKETS):
                in_b = bucket == b
                if mass[in_b].sum() > 0:
                    result[f"avgk_oracle_{name}_acc_k{k}"] = (hits[in_b].sum() / mass[in_b].sum()).item()
            result[f"avgk_oracle_gap_k{k}"] = oracle - result[f"avgk_acc_k{k}"]
    outputs.info["avgk_thresholds"] = thresholds
    return result
