"""The named parts of the barrier step: the ways the authors' public EBOMLC code departs from SPEC.md's
equations, and ``restore_w``, the former reading of step 4 (MLC-D's preset, BOME).

A barrier step (``ebomlc.methods.barrier``) reads the set of parts in force (``TrainConfig.parts``)
and changes only what each part names; with none it follows SPEC.md's equations for EBOMLC. The
variant names a base set (``paper``: SPEC.md for the run's method; ``restore_w``: the former reading of
step 4, the main SGD step from the restored ``w``; ``reference``: the authors' code as it runs on the
dataset), and ``departures`` adds (``name``) or removes (``-name``) parts on top of it.
"""
from __future__ import annotations

from typing import Iterable

from .errors import ConfigError

#: name -> what turning it on does (SPEC.md step 4 and "Reference variant").
PARTS: dict[str, str] = {
    "logit_mix_upper": "upper loss CE(rho * main logits + (1 - rho) * meta probabilities) instead of the "
                       "mixture of the two distributions",
    "inner_momentum": "the inner step uses the SGD momentum buffer and weight decay",
    "step_lambda": "lambda = xi * max(delta ||grad q||^2 - <grad_w q, Delta_F>, 0) / ||grad q||^2, against "
                   "the SGD step Delta_F = -eta (mu buf + grad_w F + wd w) instead of grad_w F",
    "step_f_term": "the main direction's F term is Delta_F (an SGD step: negated, eta-scaled) instead of "
                   "grad_w F",
    "restore_w": "the main SGD step starts from the restored pre-inner-loop w instead of the inner-step "
                 "weights w_K, so the main model never trains on the corrected labels directly (SPEC.md's "
                 "MLC-D preset, as BOME; EBOMLC's reading before the SPEC's revision)",
    "q_as_step": "after lambda, grad_w q becomes -eta (mu buf + grad_w q + wd w_K) (the authors' code does "
                 "this on every dataset but CIFAR-10)",
    "reference_meta": "meta model with Dropout(0.3) after the first tanh, BatchNorm1d after the second, "
                      "PyTorch's default embedding init",
    "lookahead_bn": "forwards at look-ahead weights update the BatchNorm running statistics",
}

#: The parts that are departures of the authors' EBOMLC code (``variant="reference"`` turns them on).
AUTHORS_PARTS: tuple[str, ...] = tuple(p for p in PARTS if p != "restore_w")

#: SPEC.md's presets table, column "main step starts from": the parts of a method's own equations.
#: MLC-D restores ``w`` after its inner loop (BOME); EBOMLC keeps its one inner step (no part).
SPEC_PARTS: dict[str, frozenset[str]] = {"mlcbome": frozenset({"restore_w"})}

#: Named sets besides ``paper`` and ``reference``. ``restore_w``: EBOMLC's equations with the main step
#: from the restored ``w`` (the reading before the SPEC's revision); ``inner_step``: the clean loss
#: reaches the main model only as the SGD step Delta_F (with ``w_K`` kept, the revised default).
NAMED_VARIANTS: dict[str, frozenset[str]] = {
    "restore_w": frozenset({"restore_w"}),
    "inner_step": frozenset({"step_f_term"}),
}
VARIANTS = ("paper", "restore_w", "inner_step", "reference")

#: Parts of earlier versions, with what replaces them (a saved config naming one is refused clearly).
RETIRED_PARTS: dict[str, str] = {
    "lookahead_step": "stepping from the look-ahead weights w_K is now the default of variant paper (SPEC.md "
                      "step 4, revised); drop it, and use --variant restore_w (or the part restore_w) for the "
                      "former restored-w reading",
}


def variant_parts(variant: str, dataset: str, method: str = "ebomlc") -> frozenset[str]:
    """The base set of a variant. ``paper``: SPEC.md's equations for ``method`` (:data:`SPEC_PARTS`);
    ``reference``: every part of the authors' code, ``q_as_step`` only off CIFAR-10
    (``dataset != "cifar10"``), exactly as that code runs."""
    if variant == "paper":
        return SPEC_PARTS.get(method, frozenset())
    if variant == "reference":
        return frozenset(p for p in AUTHORS_PARTS if p != "q_as_step" or dataset != "cifar10")
    if variant in NAMED_VARIANTS:
        return NAMED_VARIANTS[variant]
    raise ConfigError(f"unknown variant {variant!r}; choose one of: {', '.join(VARIANTS)}")


def parse_departures(value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """``"a,-b"`` or ``["a", "-b"]`` -> ``("a", "-b")``; None stays None. Unknown names raise."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    out = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"--departures: parts are names, got {item!r}")
        item = item.strip()
        if not item:
            continue
        name = item[1:] if item[0] in "+-" else item
        if name in RETIRED_PARTS:
            raise ConfigError(f"--departures: part {name!r} is retired: {RETIRED_PARTS[name]}")
        if name not in PARTS:
            raise ConfigError(f"--departures: unknown part {name!r}; choose from: {', '.join(PARTS)} "
                              f"(prefix '-' to remove one from the variant)")
        out.append(item.lstrip("+"))
    return tuple(out)


def resolve_parts(variant: str, departures: Iterable[str] | None, dataset: str,
                  method: str = "ebomlc") -> frozenset[str]:
    """The parts in force: the variant's base set, plus every ``name`` and minus every ``-name``."""
    parts = set(variant_parts(variant, dataset, method))
    for item in departures or ():
        if item.startswith("-"):
            parts.discard(item[1:])
        else:
            parts.add(item.lstrip("+"))
    return frozenset(parts)


def normal_departures(variant: str, parts: frozenset[str], dataset: str,
                      method: str = "ebomlc") -> tuple[str, ...]:
    """The shortest ``departures`` that give ``parts`` on top of ``variant``: additions, then ``-removals``."""
    base = variant_parts(variant, dataset, method)
    return tuple(sorted(parts - base, key=list(PARTS).index)) + tuple(
        f"-{p}" for p in sorted(base - parts, key=list(PARTS).index))
