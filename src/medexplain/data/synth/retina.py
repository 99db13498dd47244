"""Synthetic colour fundus photographs with diabetic-retinopathy-like lesions and exact lesion masks.

Each image shows a circular field of view on a black background; an orange-red retina with vignetting, an
illumination gradient and texture; a bright yellowish optic disc on the nasal side (left or right eye); a darker
macula with the fovea; dark-red vessels that leave the disc in curved, tapering, branching arcades. Lesions lie at
random places inside the field of view, never on the disc and never overlapping each other:

- microaneurysms: tiny dark-red dots (radius 1-2 px at 128 px),
- haemorrhages: larger dark-red irregular blots (radius 3-6 px at 128 px),
- hard exudates: small bright-yellow spots in one to three clusters,
- lens dust (the distractor concept): a soft grey-blue spot, present in half of the images whatever the grade.

Lesion sizes scale with the image size (with a floor of one pixel), so the task is learnable at 64-128 px.

Grade (the ``label`` by default): :func:`grade_from_counts` of the drawn lesion counts (MA, HE, EX): 0 no lesion; 1 only
microaneurysms; 4 if HE >= 8 and EX >= 6; 3 if HE >= 4; 2 otherwise. Each image first draws a target grade
with frequencies 30/20/20/15/15 % and then counts that give it (MA 1-6 for grade 1; MA 0-6, HE 0-3, EX 0-5 with
HE + EX > 0 for grade 2; MA 2-8, HE 4-7, EX 0-5 for grade 3; MA 3-8, HE 8-10, EX 6-10 for grade 4); the grade
is then recomputed from the lesions actually placed. Dust is drawn from its own random stream and never changes
the grade. ``label="referable"`` labels referable DR instead (grade >= 2, the binary task of Djoumessi et al.,
MIDL 2023), the grade staying in its own column. Every image has a lesion-free twin (same retina, vessels and
noise, no lesions and no dust) that differs from it only inside the masks.
Reference for the grading scheme: Wilkinson et al., "Proposed international clinical diabetic retinopathy and
diabetic macular edema disease severity scales", Ophthalmology 2003 (ICDR); the rule here is a count-based
stand-in for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from medexplain.data.synth._common import (
    check_request,
    progress,
    sample_streams,
    stratified_splits,
    to_uint8,
)
from medexplain.data.writers import png_bytes, write_file, write_manifest
from medexplain.errors import MedexplainError
from medexplain.files import atomic_directory

FUNDUS_LABELS = ("grade", "referable")
LESION_TYPES = ("microaneurysm", "haemorrhage", "exudate")
DISTRACTOR = "dust"
CONCEPTS = (*LESION_TYPES, DISTRACTOR)
GRADE_NAMES = ("none", "mild", "moderate", "severe", "proliferative")
REFERABLE_NAMES = ("non-referable", "referable")
REFERABLE_GRADE = 2
MIN_SIZE, MAX_SIZE = 48, 1024

# Target grade frequencies; the lesion counts are drawn per target grade so that the rule reproduces it.
_GRADE_PRIOR = (0.30, 0.20, 0.20, 0.15, 0.15)
_DUST_PROBABILITY = 0.5
_FOV_RADIUS = 0.47  # of the image size
_LESION_ZONE = 0.86  # lesion centres lie within this fraction of the field-of-view radius
_MA_TINT = np.array([0.50, 0.22, 0.25])
_HE_TINT = np.array([0.42, 0.18, 0.21])
_EXUDATE_COLOUR = np.array([1.00, 0.88, 0.42])
_DUST_COLOUR = np.array([0.30, 0.31, 0.35])
_VEIN_TINT = np.array([0.60, 0.36, 0.42])
_ARTERY_TINT = np.array([0.74, 0.52, 0.56])
_VESSEL_STEP = 0.01  # field-of-view radii per step of a vessel's random walk

_Path = tuple[np.ndarray, np.ndarray]  # (N, 2) points (u, v) and (N,) widths, both in field-of-view units


def grade_from_counts(microaneurysms: int, haemorrhages: int, exudates: int) -> int:
    """ICDR-like grade 0-4 from lesion counts.

    - 0 (none): no lesion;
    - 1 (mild): microaneurysms only;
    - 4 (proliferative stand-in): at least 8 haemorrhages and at least 6 exudates;
    - 3 (severe): at least 4 haemorrhages (and not grade 4);
    - 2 (moderate): any other combination with a haemorrhage or an exudate.
    """
    if microaneurysms + haemorrhages + exudates == 0:
        return 0
    if haemorrhages == 0 and exudates == 0:
        return 1
    if haemorrhages >= 8 and exudates >= 6:
        return 4
    if haemorrhages >= 4:
        return 3
    return 2


@dataclass(frozen=True)
class FundusSample:
    """One synthetic fundus photograph.

    ``image`` and ``lesion_free`` are uint8 (H, W, 3); ``masks`` maps each of :data:`CONCEPTS` and ``"lesion"``
    (union of the three lesion types) to a bool (H, W) footprint; ``counts`` gives the number of drawn instances
    per concept; ``eye`` is ``"right"`` (disc on the image's right) or ``"left"``.
    """

    image: np.ndarray
    lesion_free: np.ndarray
    masks: dict[str, np.ndarray]
    counts: dict[str, int]
    grade: int
    eye: str


@dataclass(frozen=True)
class FundusSet:
    """``n`` synthetic fundus photographs in memory.

    images, lesion_free: uint8 (n, H, W, 3); masks: name -> bool (n, H, W) for :data:`CONCEPTS` and ``"lesion"``;
    counts: concept -> int64 (n,); grades: int64 (n,); splits and eyes: one string per image.
    """

    images: np.ndarray
    lesion_free: np.ndarray
    masks: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]
    grades: np.ndarray
    splits: tuple[str, ...]
    eyes: tuple[str, ...]

    @property
    def presence(self) -> dict[str, np.ndarray]:
        """Concept -> bool (n,): whether the image shows that concept (its mask is not empty)."""
        return {name: self.masks[name].any(axis=(1, 2)) for name in CONCEPTS}


def fundus_sample(index: int, size: int = 128, seed: int = 0) -> FundusSample:
    """Image ``index`` of the set generated with ``seed`` (independent of how many images the set has)."""
    check_request("fundus", 1, size, seed, MIN_SIZE, MAX_SIZE)
    background_rng, lesion_rng, dust_rng = sample_streams("fundus", seed, index, 3)
    scene = _Scene(size, background_rng)
    retina = scene.render_retina(background_rng)
    image = retina.copy()
    occupied = np.zeros((size, size), dtype=bool)
    masks = {name: np.zeros((size, size), dtype=bool) for name in CONCEPTS}
    counts = dict.fromkeys(CONCEPTS, 0)

    if dust_rng.random() < _DUST_PROBABILITY:
        for _ in range(1 + int(dust_rng.random() < 0.3)):
            counts[DISTRACTOR] += scene.place(dust_rng, image, occupied, masks[DISTRACTOR], _dust)
    target = lesion_rng.choice(len(_GRADE_PRIOR), p=_GRADE_PRIOR)
    n_ma, n_he, n_ex = _counts_for_grade(lesion_rng, int(target))
    for _ in range(n_he):
        counts["haemorrhage"] += scene.place(lesion_rng, image, occupied, masks["haemorrhage"], _haemorrhage)
    clusters = [scene.free_position(lesion_rng, occupied, 0) for _ in range(1 + (n_ex > 4) + (n_ex > 9))]
    for k in range(n_ex):
        near = clusters[k % len(clusters)]
        counts["exudate"] += scene.place(lesion_rng, image, occupied, masks["exudate"], _exudate, near=near)
    for _ in range(n_ma):
        counts["microaneurysm"] += scene.place(lesion_rng, image, occupied, masks["microaneurysm"], _microaneurysm)

    masks["lesion"] = masks["microaneurysm"] | masks["haemorrhage"] | masks["exudate"]
    grade = grade_from_counts(counts["microaneurysm"], counts["haemorrhage"], counts["exudate"])
    return FundusSample(to_uint8(image), to_uint8(retina), masks, counts, grade, "right" if scene.side > 0 else "left")


def fundus(n: int, size: int = 128, seed: int = 0) -> FundusSet:
    """``n`` synthetic fundus photographs of ``size`` x ``size`` px in memory (see the module docstring)."""
    check_request("fundus", n, size, seed, MIN_SIZE, MAX_SIZE)
    samples = [fundus_sample(i, size, seed) for i in range(n)]
    grades = np.array([s.grade for s in samples], dtype=np.int64)
    return FundusSet(
        images=np.stack([s.image for s in samples]),
        lesion_free=np.stack([s.lesion_free for s in samples]),
        masks={name: np.stack([s.masks[name] for s in samples]) for name in samples[0].masks},
        counts={name: np.array([s.counts[name] for s in samples], dtype=np.int64) for name in CONCEPTS},
        grades=grades,
        splits=stratified_splits(grades, "fundus", seed),
        eyes=tuple(s.eye for s in samples),
    )


def write_fundus(
    out: str | os.PathLike[str],
    n: int,
    size: int = 128,
    seed: int = 0,
    overwrite: bool = False,
    show_progress: bool = True,
    label: str = "grade",
) -> Path:
    """Write ``n`` synthetic fundus photographs to the folder ``out`` (atomically) and return its path.

    Layout: ``images/fundus_<i>.png`` (RGB), ``masks/<name>/fundus_<i>.png`` (0/255) for ``lesion`` and each of
    :data:`CONCEPTS`, and ``manifest.csv`` with the columns ``image, split, label, class_name, grade,
    label_microaneurysm, label_haemorrhage, label_exudate, label_dust, mask_lesion, mask_microaneurysm,
    mask_haemorrhage, mask_exudate, mask_dust, count_microaneurysm, count_haemorrhage, count_exudate, eye``.
    ``label`` is the grade (``label="grade"``, 0-4) or referable DR (``label="referable"``: 1 when the grade is
    at least 2); ``label_<concept>`` is 1 when that concept is present (mask not empty). The splits are
    stratified by grade whatever the label, so both labellings of a seed share their images and splits.
    """
    check_request("fundus", n, size, seed, MIN_SIZE, MAX_SIZE)
    if label not in FUNDUS_LABELS:
        raise MedexplainError(f"fundus label {label!r} is not one of: {', '.join(FUNDUS_LABELS)}")
    rows: list[dict[str, object]] = []
    with atomic_directory(out, overwrite=overwrite) as folder:
        for i in progress(range(n), n, "synthetic fundus", show_progress):
            sample = fundus_sample(i, size, seed)
            name = f"fundus_{i:05d}.png"
            row: dict[str, object] = {
                "image": write_file(folder, f"images/{name}", png_bytes(sample.image)),
                "split": "",
                **_label_columns(sample.grade, label),
                "grade": sample.grade,
            }
            row.update({f"label_{c}": int(sample.masks[c].any()) for c in CONCEPTS})
            for mask_name in ("lesion", *CONCEPTS):
                row[f"mask_{mask_name}"] = write_file(
                    folder, f"masks/{mask_name}/{name}", png_bytes(sample.masks[mask_name])
                )
            row.update({f"count_{t}": sample.counts[t] for t in LESION_TYPES})
            row["eye"] = sample.eye
            rows.append(row)
        splits = stratified_splits([int(row["grade"]) for row in rows], "fundus", seed)
        for row, split in zip(rows, splits, strict=True):
            row["split"] = split
        write_manifest(folder, rows)
    return Path(out)


def _label_columns(grade: int, label: str) -> dict[str, object]:
    if label == "referable":
        referable = int(grade >= REFERABLE_GRADE)
        return {"label": referable, "class_name": REFERABLE_NAMES[referable]}
    return {"label": grade, "class_name": GRADE_NAMES[grade]}


def _counts_for_grade(rng: np.random.Generator, grade: int) -> tuple[int, int, int]:
    """(microaneurysms, haemorrhages, exudates) drawn so that :func:`grade_from_counts` gives ``grade``."""
    if grade == 0:
        return 0, 0, 0
    if grade == 1:
        return int(rng.integers(1, 7)), 0, 0
    if grade == 2:
        while True:
            ma, he, ex = int(rng.integers(0, 7)), int(rng.integers(0, 4)), int(rng.integers(0, 6))
            if he + ex > 0:
                return ma, he, ex
    if grade == 3:
        return int(rng.integers(2, 9)), int(rng.integers(4, 8)), int(rng.integers(0, 6))
    return int(rng.integers(3, 9)), int(rng.integers(8, 11)), int(rng.integers(6, 11))


class _Scene:
    """Geometry of one eye: pixel grid, field of view, optic disc, macula; draws the retina and places lesions."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size = size
        self.centre = (size - 1) / 2.0
        self.radius = _FOV_RADIUS * size
        self.scale = size / 128.0
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
        self.u = (xx - self.centre) / self.radius
        self.v = (yy - self.centre) / self.radius
        self.rho = np.hypot(self.u, self.v)
        self.side = 1.0 if rng.random() < 0.5 else -1.0  # +1: disc on the right of the image
        self.disc = np.array([self.side * rng.uniform(0.30, 0.40), rng.normal(0.0, 0.05)])
        self.disc_radius = rng.uniform(0.085, 0.105)
        self.macula = self.disc + np.array([-self.side * rng.uniform(0.46, 0.54), rng.uniform(0.0, 0.06)])
        self.illumination = np.ones((size, size))

    def to_pixels(self, uv: np.ndarray) -> np.ndarray:
        """(..., 2) field-of-view coordinates (u right, v down) -> (..., 2) pixel (row, col)."""
        return np.stack([uv[..., 1], uv[..., 0]], axis=-1) * self.radius + self.centre

    def render_retina(self, rng: np.random.Generator) -> np.ndarray:
        """Float (H, W, 3) image of the lesion-free eye; also sets ``self.illumination``."""
        size = self.size
        base = np.array([rng.uniform(0.72, 0.88), 0.0, 0.0])
        base[1] = base[0] * rng.uniform(0.36, 0.46)
        base[2] = base[1] * rng.uniform(0.30, 0.50)
        angle = rng.uniform(0.0, 2.0 * np.pi)
        gradient = rng.uniform(0.0, 0.15) * (self.u * np.cos(angle) + self.v * np.sin(angle))
        light = 1.0 - rng.uniform(0.25, 0.45) * self.rho**2 + gradient
        texture = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma=0.04 * size, mode="reflect")
        light = light * (1.0 + 0.05 * texture / (texture.std() + 1e-12))
        fov = np.clip((1.0 - self.rho) * self.radius + 0.5, 0.0, 1.0)
        self.illumination = light * fov

        d_macula = np.hypot(self.u - self.macula[0], self.v - self.macula[1])
        darkening = 1.0 - 0.28 * np.exp(-(d_macula**2) / (2 * 0.13**2)) - 0.12 * np.exp(-(d_macula**2) / (2 * 0.03**2))
        retina = base * (light * darkening)[..., None]

        d_disc = np.hypot(self.u - self.disc[0], self.v - self.disc[1])
        disc_alpha = np.clip((self.disc_radius - d_disc) * self.radius / 1.5 + 0.5, 0.0, 1.0)
        cup_alpha = 0.5 * np.exp(-(d_disc**2) / (2 * (0.45 * self.disc_radius) ** 2))
        disc_colour = np.array([1.0, 0.80, 0.46]) * (1.0 + cup_alpha)[..., None] * (1.08 * light)[..., None]
        retina = retina * (1 - disc_alpha[..., None]) + disc_colour * disc_alpha[..., None]

        veins, arteries = self._vessels(rng)
        retina = retina * (1.0 - veins[..., None] * (1.0 - _VEIN_TINT))
        retina = retina * (1.0 - arteries[..., None] * (1.0 - _ARTERY_TINT))
        grain = rng.normal(0.0, 0.015, size=(size, size, 1)) + rng.normal(0.0, 0.006, size=(size, size, 3))
        return np.clip(retina * (1.0 + grain), 0.0, 1.0) * fov[..., None]

    def _vessels(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Alpha maps (H, W) of veins and arteries: four arcades from the disc, nasal and macular branches."""
        temporal = -self.side
        veins: list[_Path] = []
        arteries: list[_Path] = []
        for q in (-1.0, 1.0):  # superior, inferior
            for paths, width, spread in ((veins, 0.032, 0.0), (arteries, 0.024, 0.16)):
                alpha = 1.05 + spread + rng.normal(0.0, 0.08)
                heading = np.arctan2(q * np.sin(alpha), temporal * np.cos(alpha))
                bend = np.sign(-q * temporal) * rng.uniform(1.1, 1.5)
                self._grow(rng, paths, heading, width, rng.uniform(0.9, 1.1), bend, depth=2)
                alpha = 0.75 + spread + rng.normal(0.0, 0.1)
                heading = np.arctan2(q * np.sin(alpha), -temporal * np.cos(alpha))
                self._grow(rng, paths, heading, 0.8 * width, rng.uniform(0.5, 0.7), rng.uniform(-1, 1), depth=1)
        for _ in range(2):
            heading = np.arctan2(rng.normal(0.0, 0.25), temporal)
            self._grow(rng, arteries, heading, 0.014, rng.uniform(0.2, 0.32), rng.uniform(-2, 2), depth=0)
        return self._rasterise(veins), self._rasterise(arteries)

    def _grow(
        self,
        rng: np.random.Generator,
        paths: list[_Path],
        heading: float,
        width: float,
        length: float,
        bend: float,
        depth: int,
        start: np.ndarray | None = None,
    ) -> None:
        """Append one tapering, wiggling vessel (a random walk of the heading) and its branches to ``paths``.

        The walk takes steps of a fixed length in field-of-view units, so the tree does not depend on the image
        size; it stops at the edge of the field of view.
        """
        n_steps = max(int(length / _VESSEL_STEP), 1)
        headings = heading + np.cumsum(bend * _VESSEL_STEP + rng.normal(0.0, 0.35 * np.sqrt(_VESSEL_STEP), n_steps))
        if start is None:
            start = self.disc + 0.3 * self.disc_radius * np.array([np.cos(heading), np.sin(heading)])
        steps = _VESSEL_STEP * np.stack([np.cos(headings), np.sin(headings)], axis=-1)
        points = start + np.cumsum(steps, axis=0)
        inside = np.hypot(points[:, 0], points[:, 1]) <= 0.97
        n_kept = n_steps if inside.all() else int(np.argmin(inside))
        progress_along = np.arange(n_steps) / n_steps
        widths = width * (1.0 - 0.55 * progress_along)
        paths.append((np.concatenate([start[None], points[:n_kept]]), np.concatenate([widths[:1], widths[:n_kept]])))
        if depth == 0:
            return
        for k in np.flatnonzero(rng.random(n_steps)[:n_kept] < _VESSEL_STEP / 0.3):
            child = headings[k] + rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0)
            remaining = length * (1.0 - progress_along[k])
            self._grow(
                rng, paths, child, widths[k] * rng.uniform(0.6, 0.75), remaining * rng.uniform(0.4, 0.8),
                rng.uniform(-1.5, 1.5), depth - 1, start=points[k],
            )

    def _rasterise(self, paths: list[_Path]) -> np.ndarray:
        """Alpha map (H, W): the maximum over anti-aliased discs along every path, at most 0.5 px apart."""
        factor = max(1, int(np.ceil(_VESSEL_STEP * self.radius / 0.5)))
        fractions = np.arange(factor)[:, None] / factor
        centres, widths = [], []
        for points, path_widths in paths:
            if len(points) < 2:
                continue
            centres.append((points[:-1, None] * (1 - fractions) + points[1:, None] * fractions).reshape(-1, 2))
            widths.append(path_widths[:-1, None] * (1 - fractions[:, 0]) + path_widths[1:, None] * fractions[:, 0])
        pixels = self.to_pixels(np.concatenate(centres))
        radii = np.maximum(0.35, 0.5 * np.concatenate(widths).reshape(-1) * self.radius)
        reach = int(np.ceil(radii.max())) + 1
        offsets = np.stack(np.mgrid[-reach : reach + 1, -reach : reach + 1], axis=-1).reshape(-1, 2)
        cells = np.round(pixels).astype(int)[:, None, :] + offsets[None]
        alpha = np.clip(radii[:, None] + 0.5 - np.hypot(*np.moveaxis(cells - pixels[:, None, :], -1, 0)), 0.0, 1.0)
        keep = (alpha > 0) & (cells >= 0).all(axis=-1) & (cells < self.size).all(axis=-1)
        canvas = np.zeros((self.size, self.size))
        np.maximum.at(canvas, (cells[keep][:, 0], cells[keep][:, 1]), alpha[keep])
        return canvas

    def free_position(self, rng: np.random.Generator, occupied: np.ndarray, clearance_px: float) -> np.ndarray:
        """A random point (u, v) in the lesion zone, off the disc; tries to avoid ``occupied`` pixels."""
        for _ in range(50):
            rho = _LESION_ZONE * np.sqrt(rng.random())
            theta = rng.uniform(0.0, 2.0 * np.pi)
            uv = np.array([rho * np.cos(theta), rho * np.sin(theta)])
            if np.hypot(*(uv - self.disc)) * self.radius < self.disc_radius * self.radius + clearance_px + 2:
                continue
            row, col = np.round(self.to_pixels(uv)).astype(int)
            if not occupied[row, col]:
                return uv
        return uv

    def place(
        self,
        rng: np.random.Generator,
        image: np.ndarray,
        occupied: np.ndarray,
        mask: np.ndarray,
        draw: _Draw,
        near: np.ndarray | None = None,
    ) -> int:
        """Place one lesion drawn by ``draw`` where it touches no other; return 1 if placed, 0 if no room."""
        for attempt in range(40):
            if near is None or attempt >= 20:  # a crowded cluster: anywhere else will do
                uv = self.free_position(rng, occupied, 0)
            else:
                uv = near + rng.normal(0.0, 0.09, size=2)
            if np.hypot(*uv) > _LESION_ZONE:
                continue
            alpha, reach = draw(rng, self.scale)
            if np.hypot(*(uv - self.disc)) * self.radius < self.disc_radius * self.radius + reach + 2:
                continue
            row, col = self.to_pixels(uv)
            top, left = int(np.round(row)) - alpha.shape[0] // 2, int(np.round(col)) - alpha.shape[1] // 2
            if top < 0 or left < 0 or max(top, left) + alpha.shape[0] > self.size:
                continue
            window = (slice(top, top + alpha.shape[0]), slice(left, left + alpha.shape[1]))
            footprint = alpha > 0
            if occupied[window][ndimage.binary_dilation(footprint, structure=np.ones((3, 3)))].any():
                continue
            draw.composite(image[window], alpha, self.illumination[window], rng)
            mask[window] |= footprint
            occupied[window] |= footprint
            return 1
        return 0


class _Draw:
    """A lesion kind: ``__call__`` gives an alpha patch (zero on a border of at least 3 px) and its reach in px;
    ``composite`` paints it onto an image window in place."""

    def __call__(self, rng: np.random.Generator, scale: float) -> tuple[np.ndarray, float]:
        raise NotImplementedError

    def composite(self, window: np.ndarray, alpha: np.ndarray, light: np.ndarray, rng: np.random.Generator) -> None:
        raise NotImplementedError


def _patch_distance(reach: float) -> np.ndarray:
    """Distances (px) from the centre of a square patch with a 3-px empty border around ``reach``."""
    half = int(np.ceil(reach)) + 3
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    return np.hypot(yy, xx)


class _DarkDot(_Draw):
    """Microaneurysm: a small anti-aliased dark-red disc, radius 1-1.8 px at 128 px (at least 1 px)."""

    def __call__(self, rng: np.random.Generator, scale: float) -> tuple[np.ndarray, float]:
        radius = max(1.0, scale * rng.uniform(1.0, 1.8))
        distance = _patch_distance(radius + 0.5)
        return np.clip(radius + 0.5 - distance, 0.0, 1.0), radius + 0.5

    def composite(self, window: np.ndarray, alpha: np.ndarray, light: np.ndarray, rng: np.random.Generator) -> None:
        window *= 1.0 - alpha[..., None] * (1.0 - _MA_TINT * rng.uniform(0.9, 1.1))


class _Blot(_Draw):
    """Haemorrhage: an irregular dark-red blot, radius 3-6 px at 128 px (at least 2 px), soft rim."""

    def __call__(self, rng: np.random.Generator, scale: float) -> tuple[np.ndarray, float]:
        radius = max(2.0, scale * rng.uniform(3.0, 6.0))
        distance = _patch_distance(1.45 * radius)
        wobble = ndimage.gaussian_filter(rng.normal(size=distance.shape), sigma=0.4 * radius, mode="wrap")
        wobble = np.clip(wobble / (wobble.std() + 1e-12), -1.2, 1.2)
        alpha = np.clip((1.0 - distance / radius + 0.25 * wobble) / 0.25, 0.0, 1.0)
        pieces, _ = ndimage.label(alpha > 0)
        alpha[pieces != pieces[distance.shape[0] // 2, distance.shape[1] // 2]] = 0.0  # one blot, no islands
        return alpha * rng.uniform(0.85, 1.0), 1.45 * radius

    def composite(self, window: np.ndarray, alpha: np.ndarray, light: np.ndarray, rng: np.random.Generator) -> None:
        window *= 1.0 - alpha[..., None] * (1.0 - _HE_TINT * rng.uniform(0.9, 1.1))


class _BrightSpot(_Draw):
    """Hard exudate: a small sharp bright-yellow spot, radius 0.8-1.8 px at 128 px (at least 1 px)."""

    def __call__(self, rng: np.random.Generator, scale: float) -> tuple[np.ndarray, float]:
        radius = max(1.0, scale * rng.uniform(0.8, 1.8))
        distance = _patch_distance(radius + 0.5)
        return np.clip(radius + 0.5 - distance, 0.0, 1.0), radius + 0.5

    def composite(self, window: np.ndarray, alpha: np.ndarray, light: np.ndarray, rng: np.random.Generator) -> None:
        colour = _EXUDATE_COLOUR * rng.uniform(0.95, 1.1) * light[..., None]
        window[:] = np.clip(window * (1.0 - alpha[..., None]) + colour * alpha[..., None], 0.0, 1.0)


class _DustSpot(_Draw):
    """Lens dust: a soft, round, semi-transparent grey-blue spot, radius 4-7 px at 128 px (at least 3 px)."""

    def __call__(self, rng: np.random.Generator, scale: float) -> tuple[np.ndarray, float]:
        radius = max(3.0, scale * rng.uniform(4.0, 7.0))
        distance = _patch_distance(radius)
        return rng.uniform(0.45, 0.65) * np.clip((radius - distance) / (0.6 * radius), 0.0, 1.0), radius

    def composite(self, window: np.ndarray, alpha: np.ndarray, light: np.ndarray, rng: np.random.Generator) -> None:
        colour = _DUST_COLOUR * light[..., None]
        window[:] = window * (1.0 - alpha[..., None]) + colour * alpha[..., None]


_microaneurysm, _haemorrhage, _exudate, _dust = _DarkDot(), _Blot(), _BrightSpot(), _DustSpot()
