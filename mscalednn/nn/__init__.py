"""Network modules: plain ``torch.nn.Module``s usable in any training loop."""

from .activations import ACTIVATIONS, S2ReLU, Phi, Sin, SReLU, get_activation
from .adaptive import AdaptiveMscaleDNN, PlaneWaves
from .layers import DenseStack, FourierFeatures
from .mlp import MLP
from .mscale import MscaleDNN, make_scales
from .piecewise import Piecewise

__all__ = ["ACTIVATIONS", "AdaptiveMscaleDNN", "DenseStack", "FourierFeatures", "MLP", "MscaleDNN", "Phi", "Piecewise", "PlaneWaves", "S2ReLU",
           "SReLU", "Sin", "get_activation", "make_scales", "count_parameters"]


def count_parameters(model) -> int:
    """Number of trainable parameters of a module."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
