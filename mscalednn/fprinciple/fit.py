"""The regression loop of the F-Principle experiments: fit a network to data by (full- or
mini-batch) gradient descent on the mean squared error, calling back at chosen steps.

    for each step:
        loss = mean (h(x_batch) - y_batch)^2;  optimizer step
        every ``every`` steps (and at the last): callback(step, model)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import MscaleError
from ..nn import ACTIVATIONS

Activation = Literal[tuple(ACTIVATIONS)]  # a registry name, checked when the settings are read


def initialize(model: nn.Module, scale: float) -> nn.Module:
    """Gaussian initial weights of every Linear / Conv layer: W, b ~ N(0, scale^2 / fan_in).
    ``scale`` = 1 is the usual (LeCun) size; larger scales give the "large initialisation" of
    the F-Principle papers, under which high frequencies appear early."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                std = scale / math.sqrt(m.weight[0].numel())
                m.weight.normal_(0.0, std)
                if m.bias is not None:
                    m.bias.normal_(0.0, std)
    return model


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float,
        callback: Callable[[int, nn.Module, float], None] | None = None, every: int = 1,
        batch: int | None = None, optimizer: str = "adam", loss: str = "mse", seed: int = 0,
        progress: bool = True, desc: str = "fit") -> list[tuple[int, float]]:
    """Train ``model`` on (x, y); returns [(step, training loss)] at the callback steps.

    Args:
        steps: optimizer steps.
        lr: learning rate.
        callback: ``callback(step, model, loss)`` every ``every`` steps and after the last.
        batch: mini-batch size (None: full batch).
        optimizer: ``adam`` or ``sgd`` (plain gradient descent with ``batch=None``).
        loss: ``mse`` (y real) or ``cross_entropy`` (y class indices).
    """
    opt = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[optimizer](model.parameters(), lr=lr)
    criterion = nn.MSELoss() if loss == "mse" else nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    log = []
    with tqdm(total=steps, desc=desc, disable=not progress, leave=False, dynamic_ncols=True) as bar:
        for step in range(1, steps + 1):
            if batch is None or batch >= len(x):
                xb, yb = x, y
            else:
                idx = torch.randint(len(x), (batch,), generator=generator)
                xb, yb = x[idx], y[idx]
            opt.zero_grad(set_to_none=True)
            value = criterion(model(xb), yb)
            value.backward()
            if not math.isfinite(value.item()):
                raise MscaleError(f"{desc}: training diverged (loss {value.item()}) at step {step}; "
                                  "try a smaller lr")
            opt.step()
            if step % every == 0 or step == steps:
                log.append((step, value.item()))
                bar.set_postfix(loss=f"{value.item():.2e}")
                if callback is not None:
                    callback(step, model, value.item())
            bar.update(1)
    return log
