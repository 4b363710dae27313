"""Module base class, basic layers and losses.

A learner familiar with PyTorch will recognise the shape of the API, with the
difference that backward is written by hand:

* ``forward(x)`` returns the output and keeps on the module what backward needs.
* ``backward(dy)`` returns ``dx`` and **adds** each parameter's gradient into
  ``grads[name]`` (same keys and shapes as ``params[name]``).
* ``parameters()`` yields ``(dotted_name, array)`` for the module and its
  children, and ``zero_grad()`` clears the gradients.
* A layer with an auxiliary loss sets ``aux_loss`` (already scaled by its
  coefficient) in forward and adds that loss's gradient in backward, so a
  training loop adds ``model.total_aux_loss()`` to its loss and nothing else.
* Discrete choices made in forward are returned by ``own_choices()``, so
  lessons can plot them and the gradient checker can confirm that a
  perturbation did not change them.
"""

from __future__ import annotations

import numpy as np

from tinycond import functional as F
from tinycond import layers as L
from tinycond._checks import as_generator, check_choice, check_float_array, check_positive_int


class Module:
    """Base class: parameters, gradients, children, auxiliary losses and choices."""

    def __init__(self):
        object.__setattr__(self, "_modules", {})
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.training = True
        self.aux_loss = 0.0

    def __setattr__(self, name, value):
        if isinstance(value, Module):
            self._modules[name] = value
        elif name in getattr(self, "_modules", {}):
            del self._modules[name]
        object.__setattr__(self, name, value)

    def add_parameter(self, name: str, value: np.ndarray) -> np.ndarray:
        """Register ``value`` as parameter ``name`` with a zero gradient, and return it."""
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)
        return value

    def children(self):
        """Yield ``(name, module)`` for each direct child, in registration order."""
        yield from self._modules.items()

    def named_modules(self, prefix: str = ""):
        """Yield ``(dotted_name, module)`` for this module and every descendant."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def parameters(self):
        """Yield ``(dotted_name, array)`` for every parameter, children included."""
        for prefix, module in self.named_modules():
            for name, value in module.params.items():
                yield (f"{prefix}.{name}" if prefix else name), value

    def gradients(self):
        """Yield ``(dotted_name, gradient)`` in the same order as :meth:`parameters`."""
        for prefix, module in self.named_modules():
            for name, value in module.grads.items():
                yield (f"{prefix}.{name}" if prefix else name), value

    def num_parameters(self) -> int:
        """Return the total number of scalar parameters."""
        return sum(p.size for _, p in self.parameters())

    def zero_grad(self) -> None:
        """Set every gradient to zero in place."""
        for _, grad in self.gradients():
            grad.fill(0.0)

    def train(self, mode: bool = True):
        """Set training mode on this module and its children; return self."""
        for _, module in self.named_modules():
            module.training = mode
        return self

    def eval(self):
        """Set evaluation mode (``train(False)``); return self."""
        return self.train(False)

    def total_aux_loss(self) -> float:
        """Return the sum of ``aux_loss`` over this module and its children."""
        return float(sum(module.aux_loss for _, module in self.named_modules()))

    def own_choices(self) -> dict:
        """Return this module's discrete choices from the last forward, by name."""
        return {}

    def choices(self) -> dict:
        """Return every discrete choice of the last forward, keyed by dotted name."""
        found = {}
        for prefix, module in self.named_modules():
            for name, value in module.own_choices().items():
                found[f"{prefix}.{name}" if prefix else name] = value
        return found

    def astype(self, dtype):
        """Convert every parameter and gradient to ``dtype`` in place; return self."""
        for _, module in self.named_modules():
            for name in module.params:
                module.params[name] = module.params[name].astype(dtype)
                module.grads[name] = module.grads[name].astype(dtype)
        return self

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, dy):
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)


class Linear(Module):
    """Affine map ``y = x W + b`` with ``W`` of shape (d_in, d_out).

    ``W`` starts as normal noise with standard deviation ``init_scale / sqrt(d_in)``
    and ``b`` at zero.
    """

    def __init__(self, d_in, d_out, *, rng, bias=True, init_scale=1.0, dtype=np.float64):
        super().__init__()
        self.d_in = check_positive_int(d_in, "d_in")
        self.d_out = check_positive_int(d_out, "d_out")
        rng = as_generator(rng)
        self.add_parameter("W", (rng.standard_normal((d_in, d_out)) * init_scale / np.sqrt(d_in)).astype(dtype))
        self.use_bias = bias
        if bias:
            self.add_parameter("b", np.zeros(d_out, dtype=dtype))
        self.cache = None

    def forward(self, x):
        check_float_array(x, "x", last_dim=self.d_in)
        b = self.params["b"] if self.use_bias else np.zeros(self.d_out, dtype=x.dtype)
        y, self.cache = L.linear_forward(x, self.params["W"], b)
        return y

    def backward(self, dy):
        dx, dW, db = L.linear_backward(dy, self.cache)
        self.grads["W"] += dW
        if self.use_bias:
            self.grads["b"] += db
        return dx


class Activation(Module):
    """Elementwise activation by name: ``"relu"``, ``"gelu"`` or ``"sigmoid"``.

    For ReLU the sign pattern of the input is a discrete choice, so the
    gradient checker skips entries that a perturbation moves across zero.
    """

    def __init__(self, name: str):
        super().__init__()
        self.name = check_choice(name, "activation", tuple(F.ACTIVATIONS))
        self._forward, self._backward = F.get_activation(name)
        self.cache = None

    def forward(self, x):
        y, self.cache = self._forward(x)
        return y

    def backward(self, dy):
        return self._backward(dy, self.cache)

    def own_choices(self):
        if self.name == "relu" and self.cache is not None:
            return {"positive": self.cache.positive}
        return {}


class ReLU(Activation):
    """Rectified linear unit, ``max(x, 0)``."""

    def __init__(self):
        super().__init__("relu")


class GELU(Activation):
    """GELU, tanh approximation."""

    def __init__(self):
        super().__init__("gelu")


class Sigmoid(Activation):
    """Logistic sigmoid."""

    def __init__(self):
        super().__init__("sigmoid")


class Softmax(Module):
    """Softmax over the last axis."""

    def forward(self, z):
        p, self.cache = F.softmax_forward(z)
        return p

    def backward(self, dp):
        return F.softmax_backward(dp, self.cache)


class LogSoftmax(Module):
    """Log-softmax over the last axis."""

    def forward(self, z):
        out, self.cache = F.log_softmax_forward(z)
        return out

    def backward(self, dy):
        return F.log_softmax_backward(dy, self.cache)


class MLP(Module):
    """Two-layer perceptron ``Linear -> activation -> Linear``: one expert.

    Parameters
    ----------
    d_in, d_hidden, d_out : int
    activation : {"relu", "gelu", "sigmoid"}
    rng : Generator or int
    """

    def __init__(self, d_in, d_hidden, d_out, *, activation="relu", rng, dtype=np.float64):
        super().__init__()
        for name, value in (("d_in", d_in), ("d_hidden", d_hidden), ("d_out", d_out)):
            check_positive_int(value, name)
        check_choice(activation, "activation", tuple(F.ACTIVATIONS))
        rng = as_generator(rng)
        gain = np.sqrt(2.0) if activation == "relu" else 1.0
        self.fc1 = Linear(d_in, d_hidden, rng=rng, init_scale=gain, dtype=dtype)
        self.act = Activation(activation)
        self.fc2 = Linear(d_hidden, d_out, rng=rng, dtype=dtype)

    def forward(self, x):
        return self.fc2.forward(self.act.forward(self.fc1.forward(x)))

    def backward(self, dy):
        return self.fc1.backward(self.act.backward(self.fc2.backward(dy)))


class Embedding(Module):
    """Lookup table of ``n_embeddings`` rows of width ``d_model``; input is an int array."""

    def __init__(self, n_embeddings, d_model, *, rng, init_scale=1.0, dtype=np.float64):
        super().__init__()
        self.n_embeddings = check_positive_int(n_embeddings, "n_embeddings")
        self.d_model = check_positive_int(d_model, "d_model")
        rng = as_generator(rng)
        self.add_parameter("W", (rng.standard_normal((n_embeddings, d_model)) * init_scale).astype(dtype))
        self.cache = None

    def forward(self, ids):
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"ids must be an integer array, got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_embeddings):
            raise ValueError(f"ids must be in [0, {self.n_embeddings}), got values from {ids.min()} to {ids.max()}")
        y, self.cache = L.embedding_forward(ids, self.params["W"])
        return y

    def backward(self, dy):
        self.grads["W"] += L.embedding_backward(dy, self.cache)
        return None


class LayerNorm(Module):
    """Layer normalisation over the last axis with learned scale ``gamma`` and shift ``beta``."""

    def __init__(self, d_model, *, eps=1e-5, dtype=np.float64):
        super().__init__()
        self.d_model = check_positive_int(d_model, "d_model")
        self.eps = eps
        self.add_parameter("gamma", np.ones(d_model, dtype=dtype))
        self.add_parameter("beta", np.zeros(d_model, dtype=dtype))
        self.cache = None

    def forward(self, x):
        check_float_array(x, "x", last_dim=self.d_model)
        y, self.cache = L.layer_norm_forward(x, self.params["gamma"], self.params["beta"], eps=self.eps)
        return y

    def backward(self, dy):
        dx, dgamma, dbeta = L.layer_norm_backward(dy, self.cache)
        self.grads["gamma"] += dgamma
        self.grads["beta"] += dbeta
        return dx


class Sequential(Module):
    """Chain of modules; backward runs them in reverse order."""

    def __init__(self, *modules):
        super().__init__()
        for i, module in enumerate(modules):
            if not isinstance(module, Module):
                raise TypeError(f"Sequential takes Module instances, got {type(module).__name__} at position {i}")
            setattr(self, str(i), module)
        self.layers = list(modules)

    def forward(self, x):
        for module in self.layers:
            x = module.forward(x)
        return x

    def backward(self, dy):
        for module in reversed(self.layers):
            dy = module.backward(dy)
        return dy


class CrossEntropyLoss:
    """Mean cross-entropy of integer targets under softmax(logits).

    ``forward(logits, targets)`` returns the loss and ``backward(dloss=1.0)``
    returns ``dlogits``. It has no parameters, so it is not a Module.
    """

    def forward(self, logits, targets):
        loss, self.cache = F.cross_entropy_forward(logits, np.asarray(targets))
        return loss

    def backward(self, dloss=1.0):
        return F.cross_entropy_backward(dloss, self.cache)

    __call__ = forward


class MSELoss:
    """Mean squared error; ``backward(dloss=1.0)`` returns ``dy``."""

    def forward(self, y, target):
        loss, self.cache = F.mse_forward(y, target)
        return loss

    def backward(self, dloss=1.0):
        return F.mse_backward(dloss, self.cache)[0]

    __call__ = forward
