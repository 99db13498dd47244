"""Layer-wise relevance propagation: rules, composites, BatchNorm folding and the hook-scoped engine."""

from medexplain.explain.lrp import explainers
from medexplain.explain.lrp.composites import Composite
from medexplain.explain.lrp.engine import lrp_relevance
from medexplain.explain.lrp.rules import AlphaBeta, Epsilon, Flat, Gamma, Rule, ZBox, ZPlus

__all__ = ["AlphaBeta", "Composite", "Epsilon", "Flat", "Gamma", "Rule", "ZBox", "ZPlus", "explainers", "lrp_relevance"]
