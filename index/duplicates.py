"""Near-duplicate groups of a store: every set of items that are copies of one another (re-encoded,
resized, retouched), found by Hamming-ball look-ups, never by comparing all pairs.

Groups are anchored, not chained. Items are visited from the earliest (file modification time,
then id) to the latest; an item not yet in a group becomes an anchor, and its group is every item
not yet in a group within the threshold of the anchor: Hamming distance <= `radius` between the
codes (a ReadView.range_hamming look-up around the anchor's code), confirmed, unless
latent_max is None, by a squared L2 distance <= latent_max between the VAE means. So every member
is within the threshold of its group's anchor, the anchor is the group's oldest file (most often
the original), and a group never grows by chaining (A near B near C with A far from C), which at a
loose threshold would sweep a whole class of similar items into one group.

Exact copies (the same content hash, ItemInfo.content_hash) are always in one group, whatever
the threshold: each set of them enters the walk as one unit, represented by its earliest item.

The default threshold is calibrated on the near-duplicate bench (index/bench_duplicates.py) for
32-bit codes and 32-d latents: the (radius, latent_max) whose pairs hold precision >= 99.9% with
the best recall of an altered copy's original among 60,000 Fashion-MNIST images (see
DEFAULT_RADIUS). On 32-bit codes a Hamming threshold alone cannot reach that precision: the
codes of a collection share many values (20,676 distinct codes for 60,000 items), so the latent
confirmation is what makes a group a group of copies rather than of look-alikes.

That default is what find_duplicate_groups uses when given no threshold. `hashae duplicates`, the
Python API and the page use a store's own limit instead, measured on altered copies of its files
(index/calibration.store_threshold), and fall back to this one where it cannot be measured.

    groups = find_duplicate_groups(view)                 # view: a ReadView (store.snapshot())
    groups = find_duplicate_groups(view, threshold=Threshold(radius=3, latent_max=None))
    duplicates_document(view)                            # JSON-ready: the CLI's --json, the page
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hashae.errors import HashaeError
from hashae.events import Reporter, task
from hashae.index.backends.base import ItemInfo, ReadView

# Calibrated with `python -m hashae.index.bench_duplicates --store S` (S: a store of Fashion-MNIST's
# 60,000 train images, 32 bits, 32-d latent, the product's default models of 2026-12-01 evening, the
# VAE with its contrast term and scale_images; the table is in benchmarks/results/duplicates.md):
# the hybrid threshold (a Hamming ball, then the latent distance) holding precision >= 99.9%, at the
# smallest radius within 0.02 of the best recall (BALL_RECALL_SLACK). Radius 4 with latent <= 0.1478
# finds 0.409 of the copies (radius 1: 0.346 with latent <= 0.1326; radius 8: 0.423). Listing a
# whole 60,000-item store takes 3.7-3.9 s at radius 4 (the goal is 10 s). Retraining the
# models moves the calibration (the same recipe trained twice on the same images gave latent
# limits 0.1675 and 0.1333 at radius 1): measure again, or `hashae duplicates --calibrate`.
DEFAULT_RADIUS = 4
DEFAULT_LATENT_MAX = 0.1478
CALIBRATED_BITS = 32
LOOKUP_CHUNK = 4096  # anchor codes per range_hamming call


class DuplicatesError(HashaeError):
    """Bad duplicate-search arguments (a negative or too large radius, a negative latent limit)."""


@dataclass(frozen=True)
class DuplicateMember:
    """One item of a group. hamming / latent: its distances to the group's anchor (0 for the anchor
    and its exact copies); exact: the same file content as the anchor."""

    id: int
    path: str
    hamming: int
    latent: float
    exact: bool


@dataclass(frozen=True)
class DuplicateGroup:
    """Items that are copies of the anchor (members[0], the group's earliest item)."""

    members: tuple[DuplicateMember, ...]

    @property
    def anchor(self) -> DuplicateMember:
        return self.members[0]

    def __len__(self) -> int:
        return len(self.members)

    def as_dict(self) -> dict[str, Any]:
        return {"anchor": self.anchor.id, "size": len(self.members), "members": [asdict(m) for m in self.members]}


@dataclass(frozen=True)
class Threshold:
    """When two items are copies: Hamming distance <= radius, and (unless latent_max is None)
    squared L2 distance between their VAE means <= latent_max."""

    radius: int
    latent_max: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_threshold(bits: int) -> Threshold:
    """The calibrated threshold, its radius scaled to the code length (only 32 bits is measured)."""
    return Threshold(max(0, round(DEFAULT_RADIUS * bits / CALIBRATED_BITS)), DEFAULT_LATENT_MAX)


def asked_threshold(bits: int, *, radius: int | None = None, latent_max: float | None = None, codes_only: bool = False) -> Threshold:
    """The threshold a user asked for, checked (DuplicatesError) for codes of `bits` bits: radius None
    is the calibrated radius; latent_max None the calibrated limit, or no latent check with codes_only."""
    calibrated = default_threshold(bits)
    radius = calibrated.radius if radius is None else radius
    latent_max = None if codes_only else (calibrated.latent_max if latent_max is None else latent_max)
    return check_threshold(Threshold(radius, latent_max), bits=bits)


def find_duplicate_groups(
    view: ReadView,
    *,
    threshold: Threshold | None = None,
    report: Reporter | None = None,
) -> list[DuplicateGroup]:
    """Every group of near-duplicate items of a generation (groups of one are left out), in anchor
    order (earliest first); within a group, the anchor first, then by (hamming, latent, id).

    threshold: when two items are copies (default: default_threshold for the view's code length).
    report: progress as events (the task "finding duplicates", counted in items visited).
    """
    threshold = check_threshold(threshold or default_threshold(view.settings.bits), bits=view.settings.bits)
    ids = view.item_ids()
    if not len(ids):
        return []
    infos = view.items(ids.tolist())
    units = _Units.of(ids, infos)
    with task(report, "finding duplicates", total=len(units.order)) as progress:
        return _Walk(view, ids, infos, units, threshold).groups(progress)


def duplicates_document(view: ReadView, *, threshold: Threshold | None = None, report: Reporter | None = None) -> dict[str, Any]:
    """The groups as one JSON-ready document (what `hashae duplicates --json` prints): the
    threshold used, the generation's item count, and the groups (ids, paths, distances)."""
    threshold = threshold or default_threshold(view.settings.bits)
    groups = find_duplicate_groups(view, threshold=threshold, report=report)
    return {
        "threshold": threshold.as_dict(), "generation": view.gen, "items": view.n_items,
        "grouped_items": sum(len(g) for g in groups), "groups": [g.as_dict() for g in groups],
    }


def check_threshold(threshold: Threshold, *, bits: int) -> Threshold:
    """The threshold, refused with a DuplicatesError when it cannot apply to codes of `bits` bits."""
    radius, latent_max = threshold.radius, threshold.latent_max
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or not 0 <= radius <= bits:
        raise DuplicatesError(f"the Hamming threshold must be between 0 and {bits} bits, got {radius!r}")
    if latent_max is not None and (isinstance(latent_max, bool) or not isinstance(latent_max, (int, float, np.floating)) or not latent_max >= 0):
        raise DuplicatesError(f"the latent distance limit must be a non-negative number, got {latent_max!r}")
    return Threshold(int(radius), None if latent_max is None else float(latent_max))


@dataclass(frozen=True)
class _Units:
    """Items with the same content hash, as one unit. rep: per item (by position in ids) the
    position of its unit's representative (its earliest item); order: the representatives'
    positions, earliest first; copies: representative position -> positions of its unit."""

    rep: np.ndarray
    order: np.ndarray
    copies: dict[int, list[int]]

    @classmethod
    def of(cls, ids: np.ndarray, infos: dict[int, ItemInfo]) -> _Units:
        mtimes = np.array([infos[i].mtime_ns for i in ids.tolist()], dtype=np.int64)
        earliest = np.lexsort((ids, mtimes))  # positions, earliest first
        rep = np.empty(len(ids), np.int64)
        first_of: dict[str, int] = {}
        copies: dict[int, list[int]] = {}
        for position in earliest.tolist():
            digest = infos[int(ids[position])].content_hash
            rep[position] = first_of.setdefault(digest, position) if digest else position  # "": unknown
            if rep[position] != position:
                copies.setdefault(int(rep[position]), [int(rep[position])]).append(position)
        return cls(rep, earliest[rep[earliest] == earliest], copies)


class _Walk:
    """The anchored walk over the units, earliest first (see the module docstring)."""

    def __init__(self, view: ReadView, ids, infos, units: _Units, threshold: Threshold) -> None:
        self.view, self.ids, self.infos, self.units, self.threshold = view, ids, infos, units, threshold
        self.codes = view.codes_of(ids)
        self.latents = view.latents_of(ids)  # distances are reported even when not a condition
        self.grouped = np.zeros(len(ids), bool)
        self.balls: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}  # code bytes -> its ball

    def groups(self, progress) -> list[DuplicateGroup]:
        """Every group of more than one item; progress (an events Task) advanced per chunk of units."""
        groups = []
        order = self.units.order
        for start in range(0, len(order), LOOKUP_CHUNK):
            anchors = [int(a) for a in order[start : start + LOOKUP_CHUNK] if not self.grouped[a]]
            self._look_up(anchors)
            for anchor in anchors:
                if self.grouped[anchor]:  # taken by an earlier anchor of this chunk
                    continue
                group = self._group_of(anchor, *self.balls[self.codes[anchor].tobytes()])
                if len(group.members) > 1:
                    groups.append(group)
            progress.advance(min(LOOKUP_CHUNK, len(order) - start))
        return groups

    def _look_up(self, anchors: list[int]) -> None:
        """The Hamming balls around the anchors' codes not looked up yet, one look-up per distinct
        code (many items share a code), kept as (positions in ids, Hamming distances)."""
        missing = list(dict.fromkeys(key for key in (self.codes[a].tobytes() for a in anchors) if key not in self.balls))
        if not missing:
            return
        codes = np.frombuffer(b"".join(missing), np.uint8).reshape(len(missing), -1)
        for key, ball in zip(missing, self.view.range_hamming(codes, radius=self.threshold.radius)):
            self.balls[key] = (np.searchsorted(self.ids, ball.ids), ball.distances.astype(np.int64))

    def _group_of(self, anchor: int, positions: np.ndarray, hamming: np.ndarray) -> DuplicateGroup:
        """The anchor's unit and every free unit within the threshold (of the anchor's ball:
        positions and Hamming distances), marked as grouped."""
        free = (self.units.rep[positions] == positions) & ~self.grouped[positions] & (positions != anchor)
        positions, hamming = positions[free], hamming[free]
        latent = ((self.latents[positions] - self.latents[anchor]) ** 2).sum(axis=1, dtype=np.float32)
        if self.threshold.latent_max is not None:
            near = latent <= self.threshold.latent_max
            positions, hamming, latent = positions[near], hamming[near], latent[near]
        members = [self._member(p, 0, 0.0, exact=True) for p in self.units.copies.get(anchor, [anchor])]
        for p, h, d in zip(positions.tolist(), hamming.tolist(), latent.tolist()):
            members += [self._member(q, h, d, exact=False) for q in self.units.copies.get(p, [p])]
        for member_position in [anchor, *positions.tolist()]:
            self.grouped[self.units.copies.get(member_position, [member_position])] = True
        head, rest = members[0], sorted(members[1:], key=lambda m: (m.hamming, m.latent, m.id))
        return DuplicateGroup((head, *rest))

    def _member(self, position: int, hamming: int, latent: float, *, exact: bool) -> DuplicateMember:
        item = int(self.ids[position])
        return DuplicateMember(item, self.infos[item].path, int(hamming), float(latent), exact)
