"""Adam for embedding rows that see a gradient only on the steps their token
is read ("lazy" Adam). Plain Adam keeps moving a row on every later step
from the momentum of one noisy gradient: once the bias correction has worn
off, a single sighting moves a row by about 3 lr on the next step (the
first moment holds 0.1 g, the second only 0.001 g^2) and some thirty times
lr per coordinate in all as the momentum decays; at the rates refinement
uses that is as large as a language model's whole embedding scale (0.14 per
coordinate for SmolLM2). Here a row, its moments and its bias correction
advance only on the steps it has a gradient, so every sighting moves it by
about lr.

Everything is masked arithmetic on the device: no host synchronisation,
no indexing whose size depends on the data.
"""

from typing import List

import torch


class RowAdam:
    """Lazy Adam over 2-D (rows, width) or 1-D (rows,) tensors whose rows
    learn independently. ``param_groups[0]["lr"]`` sets the rate, as
    torch.optim's optimizers do, so a schedule can change it."""

    def __init__(self, parameters: List[torch.Tensor], lr: float, betas=(0.9, 0.999),
                 eps: float = 1e-8):
        self.parameters = list(parameters)
        self.param_groups = [{"lr": lr}]
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.state = [(torch.zeros_like(p), torch.zeros_like(p),
                       torch.zeros(p.shape[0], device=p.device)) for p in self.parameters]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for parameter in self.parameters:
            parameter.grad = None

    @torch.no_grad()
    def step(self) -> None:
        lr = self.param_groups[0]["lr"]
        for parameter, (first, second, count) in zip(self.parameters, self.state):
            grad = parameter.grad
            if grad is None:
                continue
            active = grad.ne(0).reshape(grad.shape[0], -1).any(1)
            count.add_(active.to(count.dtype))
            shape = (-1,) + (1,) * (grad.dim() - 1)
            mask = active.view(shape)
            first.copy_(torch.where(mask, self.beta1 * first + (1 - self.beta1) * grad, first))
            second.copy_(torch.where(mask, self.beta2 * second + (1 - self.beta2) * grad * grad,
                                     second))
            steps = count.clamp(min=1).view(shape)
            corrected_first = first / (1 - self.beta1 ** steps)
            corrected_second = second / (1 - self.beta2 ** steps)
            update = lr * corrected_first / (corrected_second.sqrt() + self.eps)
            parameter.sub_(torch.where(mask, update, torch.zeros_like(update)))
