"""Counterfactual simulators: warp an image to inject or remove disease and show it as Jacobian maps.

After Liu, Adeli, Pohl, Zhao, IPMI 2021 (arXiv 2102.08239). 2D and 3D through one code path; displacement
fields are ``(B, D, *spatial)`` in voxel units (see :mod:`medexplain.simulate.transform`).
"""

from medexplain.simulate.condconv import CondConv
from medexplain.simulate.jacobian import folding_rate, jacobian_determinant, jacobian_matrix
from medexplain.simulate.losses import (
    cycle_loss,
    disease_logit,
    displacement_loss,
    frozen,
    hinge_loss,
    magnitude_loss,
    smoothness_loss,
)
from medexplain.simulate.network import Simulation, Simulator, SimulatorConfig, as_direction
from medexplain.simulate.training import TrainingConfig, simulator_loss, train_simulator
from medexplain.simulate.transform import compose, identity_grid, integrate_velocity, to_normalized, warp

__all__ = [
    "CondConv",
    "Simulation",
    "Simulator",
    "SimulatorConfig",
    "TrainingConfig",
    "as_direction",
    "compose",
    "cycle_loss",
    "disease_logit",
    "displacement_loss",
    "folding_rate",
    "frozen",
    "hinge_loss",
    "identity_grid",
    "integrate_velocity",
    "jacobian_determinant",
    "jacobian_matrix",
    "magnitude_loss",
    "simulator_loss",
    "smoothness_loss",
    "to_normalized",
    "train_simulator",
    "warp",
]
