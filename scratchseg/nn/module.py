"""The base class of layers and networks: parameters, gradients, modes, devices, state.

A layer (a leaf) owns its arrays in three dicts named as in PyTorch: ``params``
(trained), ``grads`` (the same names, accumulated by backward) and ``buffers``
(kept but not trained: batch norm's running statistics). A network owns no
arrays; it registers its parts with ``add(name, module)`` in forward order, and
everything here walks that tree, so the names are dotted paths
(``encoder.0.conv1.weight``) and the order is the order of the forward pass.
"""

from scratchseg.backend import backend_name, check_backend, to_device, to_numpy


class Module:
    def __init__(self):
        self.params, self.grads, self.buffers = {}, {}, {}
        self.children = {}  # name -> Module, in forward order
        self.training = True

    def add(self, name, module):
        """Register ``module`` as the part called ``name``; returns it."""
        self.children[name] = module
        return module

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- the tree ------------------------------------------------------------------------

    def named_layers(self, prefix=""):
        """(dotted name, layer) for every leaf below, in forward order."""
        if not self.children:
            yield prefix, self
        for name, child in self.children.items():
            yield from child.named_layers(f"{prefix}.{name}" if prefix else name)

    def _named(self, store):
        return [(f"{prefix}.{name}" if prefix else name, array)
                for prefix, layer in self.named_layers()
                for name, array in getattr(layer, store).items()]

    def parameters(self):
        """(name, array) for every trained array, in forward order."""
        return self._named("params")

    def gradients(self):
        """(name, gradient), the same names and order as ``parameters()``."""
        return self._named("grads")

    def named_buffers(self):
        """(name, array) for every untrained array kept (running statistics)."""
        return self._named("buffers")

    @property
    def device(self):
        """"numpy" or "cupy": where the parameters live."""
        params = self.parameters()
        return backend_name(params[0][1]) if params else "numpy"

    def num_parameters(self):
        return sum(int(array.size) for _, array in self.parameters())

    # -- modes and devices -----------------------------------------------------------------

    def zero_grad(self):
        for _, layer in self.named_layers():
            for grad in layer.grads.values():
                grad[...] = 0

    def train(self, mode=True):
        """Training mode (batch statistics, dropout on); ``train(False)`` is ``eval()``."""
        for _, layer in self.named_layers():
            layer.training = mode
        self.training = mode
        return self

    def eval(self):
        return self.train(False)

    def _convert(self, fn):
        for _, layer in self.named_layers():
            for store in (layer.params, layer.grads, layer.buffers):
                for name in store:
                    store[name] = fn(store[name])
            layer.forget()
        return self

    def to(self, backend):
        """Move every parameter, gradient and buffer to "numpy" or "cupy"."""
        check_backend(backend)
        return self._convert(lambda a: to_device(a, backend))

    def astype(self, dtype):
        """Cast every parameter, gradient and buffer (float64 for gradient checks)."""
        return self._convert(lambda a: a.astype(dtype))

    def forget(self):
        """Drop whatever a forward kept for its backward."""

    # -- state -----------------------------------------------------------------------------

    def state_dict(self):
        """name -> host array for parameters and buffers (PyTorch's names and layouts)."""
        return {name: to_numpy(a).copy() for name, a in self.parameters() + self.named_buffers()}

    def load_state_dict(self, state):
        """Copy arrays into the model in place; keys and shapes must match exactly."""
        what = type(self).__name__
        own = dict(self.parameters() + self.named_buffers())
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"{what}.load_state_dict: missing {missing[:5]}, unexpected "
                             f"{unexpected[:5]} (is the checkpoint from another config?)")
        for name, target in own.items():
            if tuple(state[name].shape) != tuple(target.shape):
                raise ValueError(f"{what}.load_state_dict: {name} has shape "
                                 f"{tuple(state[name].shape)}, model expects "
                                 f"{tuple(target.shape)}")
        for name, target in own.items():
            target[...] = to_device(state[name], backend_name(target))
        return self
