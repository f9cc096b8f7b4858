"""Models built from exact ops, with float-weight import (torch state dict or safetensors).

``registry.load(name)`` returns an exact model; each model module also holds the float
architecture it imports from, used for training and as the accuracy reference.
"""
