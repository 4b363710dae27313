r"""Optimisers that update a module's parameters in place from its gradients."""

from __future__ import annotations

import numpy as np

from tinycond._checks import check_positive_float


class Optimizer:
    """Base class that stores the module and the learning rate."""

    def __init__(self, module, lr):
        self.module = module
        self.lr = check_positive_float(lr, "lr")

    def pairs(self):
        """Yield ``(name, parameter, gradient)`` triples."""
        for (name, param), (_, grad) in zip(self.module.parameters(), self.module.gradients()):
            yield name, param, grad

    def zero_grad(self):
        """Clear the module's gradients."""
        self.module.zero_grad()


class SGD(Optimizer):
    r"""Stochastic gradient descent with (heavy-ball) momentum.

    Notes
    -----
    .. math:: v \leftarrow \mu v + g, \qquad \theta \leftarrow \theta - \eta v
    """

    def __init__(self, module, lr=0.1, momentum=0.0):
        super().__init__(module, lr)
        momentum = float(momentum)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.velocity = {}

    def step(self):
        """Apply one update to every parameter."""
        for name, param, grad in self.pairs():
            if self.momentum:
                v = self.velocity.setdefault(name, np.zeros_like(param))
                v *= self.momentum
                v += grad
                param -= self.lr * v
            else:
                param -= self.lr * grad


class Adam(Optimizer):
    r"""Adam with bias correction.

    Notes
    -----
    .. math::
        m \leftarrow \beta_1 m + (1-\beta_1) g, \quad
        v \leftarrow \beta_2 v + (1-\beta_2) g^2, \quad
        \theta \leftarrow \theta - \eta \frac{m / (1-\beta_1^t)}{\sqrt{v / (1-\beta_2^t)} + \epsilon}

    References
    ----------
    Kingma and Ba (2015). Adam: A Method for Stochastic Optimization.
    """

    def __init__(self, module, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(module, lr)
        beta1, beta2 = (float(b) for b in betas)
        for name, beta in (("betas[0]", beta1), ("betas[1]", beta2)):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {beta}")
        self.beta1, self.beta2 = beta1, beta2
        self.eps = check_positive_float(eps, "eps")
        self.weight_decay = check_positive_float(weight_decay, "weight_decay", allow_zero=True)
        self.t = 0
        self.m = {}
        self.v = {}

    def step(self):
        """Apply one update to every parameter (decoupled weight decay if set)."""
        self.t += 1
        correction1 = 1.0 - self.beta1**self.t
        correction2 = 1.0 - self.beta2**self.t
        for name, param, grad in self.pairs():
            m = self.m.setdefault(name, np.zeros_like(param))
            v = self.v.setdefault(name, np.zeros_like(param))
            m *= self.beta1
            m += (1.0 - self.beta1) * grad
            v *= self.beta2
            v += (1.0 - self.beta2) * grad**2
            if self.weight_decay:
                param -= self.lr * self.weight_decay * param
            param -= self.lr * (m / correction1) / (np.sqrt(v / correction2) + self.eps)
