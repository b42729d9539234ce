"""gpubp: backpropagation for sigmoid multilayer perceptrons."""
__version__ = "0.1.0"
