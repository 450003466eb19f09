"""The progress bar of a training run: the share of the budget used, whichever budget applies.

A run stops at ``train.steps`` steps or after ``train.time_limit`` seconds of training, whichever
comes first; the bar shows the larger of the two fractions used, so its percentage and its
remaining time are those of the budget that will end the run (not, say, 1,000,000,000 steps
of a step cap that a time budget will cut short).
"""

from __future__ import annotations

from tqdm.auto import tqdm


def budget_fraction(steps: int, time_limit: float | None, step: int, train_time: float) -> float:
    """The share of the budget used after ``step`` steps and ``train_time`` seconds of training:
    max(step / steps, train_time / time_limit), at most 1."""
    used = step / steps
    if time_limit:
        used = max(used, train_time / time_limit)
    return min(used, 1.0)


class BudgetBar:
    """A tqdm bar over 0-100% of the budget, with the step count and the latest losses/errors
    after it. ``enabled=False``: nothing is shown; nor where stderr is not a terminal (a log file
    would fill with the bar's carriage-return updates)."""

    def __init__(self, steps: int, time_limit: float | None, step: int = 0, train_time: float = 0.0,
                 enabled: bool = True):
        self.steps, self.time_limit = steps, time_limit
        budget = (f"{time_limit:g} s or {steps:,} steps" if time_limit else f"{steps:,} steps")
        start = 100.0 * budget_fraction(steps, time_limit, step, train_time)
        self.bar = tqdm(total=100.0, initial=start, disable=None if enabled else True, dynamic_ncols=True, leave=False,
                        desc=f"budget {budget}", unit="%",
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]")
        self.values: dict[str, str] = {}

    def update(self, step: int, train_time: float, **values: float) -> None:
        """Move to ``step`` after ``train_time`` s; ``values`` (losses, errors) join the postfix."""
        self.values.update({k: f"{v:.2e}" for k, v in values.items()})
        self.bar.set_postfix_str(", ".join([f"step {step:,}", *(f"{k}={v}" for k, v in self.values.items())]),
                                 refresh=False)
        target = 100.0 * budget_fraction(self.steps, self.time_limit, step, train_time)
        self.bar.update(target - self.bar.n)

    def close(self) -> None:
        self.bar.close()
