"""The only place that touches tiny-cuda-nn: builds its modules for `implementation="tcnn"`."""

from __future__ import annotations

import torch

from config.errors import ConfigError

TCNN_MISSING = ("model.implementation=tcnn needs tinycudann, which is not installed; "
                "use model.implementation=torch")


def import_tcnn():
    try:
        import tinycudann  # type: ignore
    except ImportError:  # ModuleNotFoundError, or a broken CUDA build
        raise ConfigError(TCNN_MISSING) from None
    return tinycudann


class TcnnModule(torch.nn.Module):
    """Wraps a tinycudann module: flattens the batch, returns float32 (tcnn computes in half)."""

    def __init__(self, module, out_dim: int, input_map=None):
        super().__init__()
        self.module = module
        self.out_dim = out_dim
        self.input_map = input_map

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        if self.input_map is not None:
            x = self.input_map(x)
        return self.module(x).float().reshape(*shape, self.out_dim)


def tcnn_hash_encoding(num_levels, features_per_level, log2_hashmap_size, base_res, growth_factor):
    tcnn = import_tcnn()
    config = {"otype": "HashGrid", "n_levels": num_levels, "n_features_per_level": features_per_level,
              "log2_hashmap_size": log2_hashmap_size, "base_resolution": base_res,
              "per_level_scale": growth_factor, "interpolation": "Linear"}
    return TcnnModule(tcnn.Encoding(n_input_dims=3, encoding_config=config), num_levels * features_per_level)


def tcnn_sh_encoding(degree: int):
    tcnn = import_tcnn()
    # tcnn expects directions mapped to [0, 1]
    return TcnnModule(tcnn.Encoding(n_input_dims=3, encoding_config={"otype": "SphericalHarmonics",
                                                                    "degree": degree}),
                      degree**2, input_map=lambda d: (d + 1.0) / 2.0)


def tcnn_mlp(in_dim, num_layers, layer_width, out_dim, out_activation):
    tcnn = import_tcnn()
    out_act = {None: "None", "sigmoid": "Sigmoid", "relu": "ReLU"}[out_activation]
    config = {"otype": "FullyFusedMLP" if layer_width in (16, 32, 64, 128) else "CutlassMLP",
              "activation": "ReLU", "output_activation": out_act, "n_neurons": layer_width,
              "n_hidden_layers": num_layers - 1}
    return TcnnModule(tcnn.Network(n_input_dims=in_dim, n_output_dims=out_dim, network_config=config),
                      out_dim)
