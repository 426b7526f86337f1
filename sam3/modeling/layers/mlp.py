"""Multi-layer perceptron with ReLU between layers (the DETR "MLP")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """``num_layers`` linear layers, ReLU between them, optional residual and output norm.

    Parameter names (``layers.i``, ``out_norm``) match the checkpoint.
    Input (..., input_dim) -> output (..., output_dim).
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        residual: bool = False,
        out_norm: bool = False,
        sigmoid_output: bool = False,
    ):
        super().__init__()
        if residual and input_dim != output_dim:
            raise ValueError("a residual MLP needs input_dim == output_dim")
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))
        self.residual = residual
        self.out_norm = nn.LayerNorm(output_dim) if out_norm else None
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            y = layer(y)
            if i < last:
                y = F.relu(y)
        if self.residual:
            y = y + x
        if self.out_norm is not None:
            y = self.out_norm(y)
        if self.sigmoid_output:
            y = torch.sigmoid(y)
        return y
