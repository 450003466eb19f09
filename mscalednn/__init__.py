"""mscalednn: multi-scale deep neural networks for PDEs, and the Frequency Principle measured.

Public API::

    from mscalednn import MscaleDNN, MLP, PoissonProblem, TrainConfig, solve, load_problem, load_model
    from mscalednn import forward_laplacian, laplacian_operator   # u, grad u, Laplace u of a network
    from mscalednn import Ball, Box, Shell                          # domains: PoissonProblem.on(Box(...) - Ball(...), u)
    from mscalednn import Operator, Reference, finite_difference    # -div(a grad u) + c u + kappa^2 sinh(u); references
"""

__version__ = "0.1.0"

from .config import ModelConfig, RunConfig, TrainConfig, load_problem, load_run_config
from .derivatives import laplacian_operator, value_grad_laplacian
from .errors import ConfigError, ExpressionError, MscaleError
from .expr import parse_expression
from .forward_laplacian import forward_laplacian
from .geometry import Ball, Box, Geometry, Shell
from .nn import MLP, MscaleDNN, count_parameters
from .operator import Operator
from .outputs import load_model
from .problem import PoissonProblem
from .reference import GridReference, Reference, finite_difference
from .runtime import tune_allocator
from .train import Checkpointing, SolveResult, seed_everything, solve

__all__ = ["Ball", "Box", "Checkpointing", "ConfigError", "ExpressionError", "Geometry", "MLP", "ModelConfig",
           "MscaleDNN", "MscaleError", "Operator", "GridReference", "PoissonProblem", "Reference", "RunConfig", "Shell", "SolveResult", "TrainConfig", "__version__",
           "count_parameters", "finite_difference", "forward_laplacian", "laplacian_operator", "load_model", "load_problem",
           "load_run_config", "parse_expression", "seed_everything", "solve", "tune_allocator",
           "value_grad_laplacian"]
