"""Synthetic brain-like images (2D) and volumes (3D) where the disease class is a local atrophy of known location.

The phantom is T1-like: scalp, skull, an ellipsoidal brain (grey-matter rim, white matter), two lateral
ventricles (dark), two thalami and two hippocampus-like structures (grey), with random sizes, position,
tissue intensities, a smooth bias field and noise. 2D images are the axial plane through the centre of the same
phantom (axes (y, x)); 3D volumes have axes (z, y, x). One code path serves both.

Class 1 (atrophy) shrinks the left hippocampus (smaller x) with the radial deformation (voxel units)

    psi(y) = y + v(y),   v(y) = -s g(y) (y - c),   g(y) = exp(-|y - c|^2 / (2 sigma^2)),

centred at c (the structure's centre plus a small jitter), width sigma (1.15 x the structure's mean radius),
strength s in [0.35, 0.6]. Tissue at y moves to psi(y): its local volume changes by

    det D psi(y) = (1 - s g)^(d-1) (1 - s g (1 - |y - c|^2 / sigma^2)),

which is < 1 (shrinkage) within radius sigma of c and -> 1 far from it; a thin shell around it expands (the
surrounding tissue follows). The diseased image is the healthy one pulled back through the inverse map,
``image(x) = template(x + w(x))`` with ``w = psi^-1 - id`` (what a grid_sample spatial transformer applies);
acquisition noise and bias are added after the warp, so class-0 images equal their templates exactly.

``mask_atrophy`` is the ball |x - c| <= sigma for EVERY sample: the atrophied region in class 1, and the region
where the atrophy would be in class 0 (so a simulator that injects atrophy into a healthy image can be scored
against it). ``atrophy_strength`` is s for class 1 and 0 for class 0.
Reference: Liu, Adeli, Pohl, Zhao, "Going beyond saliency maps: training deep models to interpret deep models",
IPMI 2021 (arXiv 2102.08239), who evaluate their simulators on such synthetic atrophy data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import expit

from medexplain.data.synth._common import (
    check_request,
    progress,
    sample_streams,
    stratified_splits,
    to_uint8,
)
from medexplain.data.writers import nifti_gz_bytes, npy_bytes, png_bytes, write_file, write_manifest
from medexplain.errors import MedexplainError
from medexplain.files import atomic_directory

CLASS_NAMES = ("healthy", "atrophy")
MIN_SIZE = 24
MAX_SIZE = {2: 1024, 3: 192}
_STRENGTH = (0.35, 0.60)
_SIGMA_PER_RADIUS = 1.15


@dataclass(frozen=True)
class BrainSample:
    """One phantom with ``d`` spatial dims.

    image, template: uint8 (*spatial) (template = the same phantom and noise without the atrophy);
    mask: bool (*spatial), the ball |x - c| <= sigma; displacement: float32 (d, *spatial) forward field v on the
    template grid (voxels, axis order of the array); inverse_displacement: float32 (d, *spatial) pull-back field w
    on the image grid; jacobian: float32 (*spatial) det(I + dv/dy), 1 for class 0; centre: (d,) voxels.
    """

    image: np.ndarray
    template: np.ndarray
    label: int
    mask: np.ndarray
    displacement: np.ndarray
    inverse_displacement: np.ndarray
    jacobian: np.ndarray
    strength: float
    sigma: float
    centre: np.ndarray


@dataclass(frozen=True)
class DeformationSet:
    """``n`` phantoms in memory: the fields of :class:`BrainSample` stacked along a first axis of length n
    (images, templates, labels, masks, displacements, inverse_displacements, jacobians, strengths, sigmas,
    centres), plus one split name per sample."""

    images: np.ndarray
    templates: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    displacements: np.ndarray
    inverse_displacements: np.ndarray
    jacobians: np.ndarray
    strengths: np.ndarray
    sigmas: np.ndarray
    centres: np.ndarray
    splits: tuple[str, ...]


def _check(n: int, spatial_dims: int, size: int, seed: int) -> None:
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise MedexplainError(f"spatial_dims={spatial_dims!r}: deformation data are 2D or 3D (dims must be 2 or 3)")
    check_request(f"{spatial_dims}D deformation", n, size, seed, MIN_SIZE, MAX_SIZE[spatial_dims])


def brain_sample(index: int, spatial_dims: int = 2, size: int = 64, seed: int = 0) -> BrainSample:
    """Sample ``index`` of the set generated with ``seed`` (independent of how many samples the set has)."""
    _check(1, spatial_dims, size, seed)
    anatomy_rng, noise_rng = sample_streams("deformation", seed, index, 2)
    label = int(anatomy_rng.random() < 0.5)
    phantom = _Phantom(anatomy_rng, size)
    half = size / 2.0
    grid = np.indices((size,) * spatial_dims, dtype=np.float64)
    points = (grid - (size - 1) / 2.0) / half  # normalised coordinates, about [-1, 1]

    target = phantom.target
    jitter = anatomy_rng.normal(0.0, 0.02, 3)
    centre = (target.centre + jitter)[-spatial_dims:] * half + (size - 1) / 2.0
    sigma = _SIGMA_PER_RADIUS * float(np.mean(target.radii[-2:])) * half
    strength = anatomy_rng.uniform(*_STRENGTH) if label else 0.0

    offset = grid - centre.reshape((-1,) + (1,) * spatial_dims)
    radius = np.sqrt((offset**2).sum(axis=0))
    weight = strength * np.exp(-(radius**2) / (2 * sigma**2))
    displacement = -weight * offset
    jacobian = (1.0 - weight) ** (spatial_dims - 1) * (1.0 - weight * (1.0 - radius**2 / sigma**2))
    inverse = _inverse_radial(offset, radius, strength, sigma)

    bias_direction = noise_rng.normal(size=3)[-spatial_dims:]
    bias = 1.0 + noise_rng.uniform(0.0, 0.08) * np.tensordot(
        bias_direction / np.linalg.norm(bias_direction), points, axes=1
    )
    noise = noise_rng.normal(0.0, noise_rng.uniform(0.015, 0.03), size=radius.shape)
    template = to_uint8(phantom.render(points) * bias + noise)
    image = template
    if label:
        image = to_uint8(phantom.render(points + inverse / half) * bias + noise)
    return BrainSample(
        image=image,
        template=template,
        label=label,
        mask=radius <= sigma,
        displacement=displacement.astype(np.float32),
        inverse_displacement=inverse.astype(np.float32),
        jacobian=jacobian.astype(np.float32),
        strength=float(strength),
        sigma=sigma,
        centre=centre,
    )


def deformation(n: int, spatial_dims: int = 2, size: int = 64, seed: int = 0) -> DeformationSet:
    """``n`` phantoms of ``size`` voxels per side in memory (see the module docstring); mind the memory in 3D."""
    _check(n, spatial_dims, size, seed)
    samples = [brain_sample(i, spatial_dims, size, seed) for i in range(n)]
    labels = np.array([s.label for s in samples], dtype=np.int64)
    return DeformationSet(
        images=np.stack([s.image for s in samples]),
        templates=np.stack([s.template for s in samples]),
        labels=labels,
        masks=np.stack([s.mask for s in samples]),
        displacements=np.stack([s.displacement for s in samples]),
        inverse_displacements=np.stack([s.inverse_displacement for s in samples]),
        jacobians=np.stack([s.jacobian for s in samples]),
        strengths=np.array([s.strength for s in samples]),
        sigmas=np.array([s.sigma for s in samples]),
        centres=np.stack([s.centre for s in samples]),
        splits=stratified_splits(labels, "deformation", seed),
    )


def write_deformation(
    out: str | os.PathLike[str],
    n: int,
    spatial_dims: int = 2,
    size: int = 64,
    seed: int = 0,
    overwrite: bool = False,
    show_progress: bool = True,
) -> Path:
    """Write ``n`` phantoms to the folder ``out`` (atomically) and return its path.

    Layout: ``images/brain_<i>.png`` (2D, grey) or ``.nii.gz`` (3D, uint8, identity affine),
    ``masks/atrophy/brain_<i>.png`` (0/255) or ``.nii.gz`` (0/1), ``jacobian/brain_<i>.npy`` (float32 det of the
    forward deformation, 1 for class 0), and ``manifest.csv`` with the columns ``image, split, label, class_name,
    mask_atrophy, atrophy_strength, atrophy_sigma, jacobian``.
    """
    _check(n, spatial_dims, size, seed)
    suffix, encode = (".png", png_bytes) if spatial_dims == 2 else (".nii.gz", nifti_gz_bytes)
    rows: list[dict[str, object]] = []
    with atomic_directory(out, overwrite=overwrite) as folder:
        for i in progress(range(n), n, f"synthetic {spatial_dims}D atrophy", show_progress):
            sample = brain_sample(i, spatial_dims, size, seed)
            name = f"brain_{i:05d}"
            rows.append({
                "image": write_file(folder, f"images/{name}{suffix}", encode(sample.image)),
                "split": "",
                "label": sample.label,
                "class_name": CLASS_NAMES[sample.label],
                "mask_atrophy": write_file(folder, f"masks/atrophy/{name}{suffix}", encode(sample.mask)),
                "atrophy_strength": f"{sample.strength:.4f}",
                "atrophy_sigma": f"{sample.sigma:.4f}",
                "jacobian": write_file(folder, f"jacobian/{name}.npy", npy_bytes(sample.jacobian)),
            })
        splits = stratified_splits([int(row["label"]) for row in rows], "deformation", seed)
        for row, split in zip(rows, splits, strict=True):
            row["split"] = split
        write_manifest(folder, rows)
    return Path(out)


def _inverse_radial(offset: np.ndarray, radius: np.ndarray, strength: float, sigma: float) -> np.ndarray:
    """Pull-back field w = psi^-1(x) - x of the radial map psi (see the module docstring), (d, *spatial).

    psi keeps directions from c, so psi^-1(x) = c + rho (x - c) / |x - c| where rho solves
    rho (1 - s exp(-rho^2 / (2 sigma^2))) = |x - c|; that function increases (det > 0 for s < 1), and
    rho lies in [|x - c|, |x - c| / (1 - s)], so bisection converges.
    """
    low, high = radius.copy(), radius / (1.0 - strength)
    for _ in range(48):
        middle = (low + high) / 2.0
        too_far = middle * (1.0 - strength * np.exp(-(middle**2) / (2 * sigma**2))) > radius
        high = np.where(too_far, middle, high)
        low = np.where(too_far, low, middle)
    ratio = np.divide((low + high) / 2.0, radius, out=np.ones_like(radius), where=radius > 0)
    return (ratio - 1.0) * offset


@dataclass(frozen=True)
class _Ellipsoid:
    centre: np.ndarray  # (3,) normalised (z, y, x)
    radii: np.ndarray  # (3,)
    intensity: float

    def membership(self, points: np.ndarray, voxels_per_unit: float) -> np.ndarray:
        """Soft inside-ness in [0, 1] of normalised points (d, *spatial), edges about one voxel wide.

        The signed distance to the surface is approximated along the ray from the centre: r (1 - level) / level.
        """
        d = points.shape[0]
        shape = (-1,) + (1,) * d
        offset = points - self.centre[-d:].reshape(shape)
        level = np.maximum(np.sqrt(((offset / self.radii[-d:].reshape(shape)) ** 2).sum(axis=0)), 1e-6)
        distance = np.sqrt((offset**2).sum(axis=0)) * voxels_per_unit * (1.0 - level) / level
        return expit(distance / 0.4)


class _Phantom:
    """Random anatomy of one subject: ellipsoids painted in order (scalp, skull, brain, white matter, deep grey,
    ventricles); ``target`` is the left hippocampus."""

    def __init__(self, rng: np.random.Generator, size: int) -> None:
        self.voxels_per_unit = size / 2.0
        shift = rng.uniform(-0.03, 0.03, 3)
        scale = rng.uniform(0.94, 1.04) * rng.uniform(0.97, 1.03, 3)
        grey, white, csf = rng.uniform(0.40, 0.48), rng.uniform(0.76, 0.86), rng.uniform(0.05, 0.12)
        brain_radii = np.array([0.58, 0.76, 0.64]) * scale

        def at(z: float, y: float, x: float) -> np.ndarray:
            return shift + np.array([z, y, x]) * scale

        def jitter(radii: tuple[float, float, float], spread: float) -> np.ndarray:
            return np.array(radii) * scale * rng.uniform(1 - spread, 1 + spread)

        self.parts = [
            _Ellipsoid(shift, 1.12 * brain_radii, rng.uniform(0.5, 0.65)),  # scalp
            _Ellipsoid(shift, 1.06 * brain_radii, csf),  # skull and outer CSF
            _Ellipsoid(shift, brain_radii, grey),
            _Ellipsoid(shift, 0.86 * brain_radii, white),
            _Ellipsoid(at(0, 0.14, -0.17), jitter((0.12, 0.11, 0.09), 0.06), grey + 0.06),
            _Ellipsoid(at(0, 0.14, 0.17), jitter((0.12, 0.11, 0.09), 0.06), grey + 0.06),
            _Ellipsoid(at(0, 0.36, -0.30), jitter((0.10, 0.15, 0.085), 0.05), grey),
            _Ellipsoid(at(0, 0.36, 0.30), jitter((0.10, 0.15, 0.085), 0.05), grey),
        ]
        ventricle = jitter((0.20, 0.33, 0.075), 0.12)
        self.parts += [
            _Ellipsoid(at(0, -0.12, -0.11), ventricle, csf),
            _Ellipsoid(at(0, -0.12, 0.11), ventricle * rng.uniform(0.95, 1.05), csf),
        ]
        self.target = self.parts[6]

    def render(self, points: np.ndarray) -> np.ndarray:
        """Noise-free intensities in [0, 1] at normalised points (d, *spatial)."""
        values = np.zeros(points.shape[1:])
        for part in self.parts:
            inside = part.membership(points, self.voxels_per_unit)
            values = values * (1.0 - inside) + part.intensity * inside
        return values
