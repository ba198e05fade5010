"""The LSTM ActorCritic of the classic PyTorch A3C, batched. Pure: no I/O, no globals.

Atari frames (1x42x42) go through four 3x3 stride-2 ELU convolutions (32 filters) to 288
features; vector observations through a two-layer ELU MLP. An LSTMCell carries what one
frame cannot show (where the ball is going), and two linear heads give action logits and the
state value.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LSTMState = tuple[torch.Tensor, torch.Tensor]

CONV_FILTERS = 32
ATARI_LSTM_SIZE = 256
VECTOR_HIDDEN = 128
VECTOR_LSTM_SIZE = 128


def normalized_columns_(weight: torch.Tensor, std: float) -> None:
    """Gaussian rows rescaled to norm `std` (the classic init for the heads): the actor starts
    near-uniform (std 0.01) and the critic at a sensible scale (std 1.0)."""
    with torch.no_grad():
        weight.normal_(0.0, 1.0)
        weight *= std / weight.pow(2).sum(1, keepdim=True).sqrt()


class ActorCritic(nn.Module):
    """obs [B, *obs_shape], (h, c) [B, H] -> logits [B, A], value [B], new (h, c)."""

    def __init__(self, obs_shape: tuple[int, ...], n_actions: int) -> None:
        super().__init__()
        self.obs_shape = tuple(obs_shape)
        self.n_actions = n_actions
        if len(obs_shape) == 3:
            channels, height, width = obs_shape
            layers: list[nn.Module] = []
            for i in range(4):
                layers += [
                    nn.Conv2d(channels if i == 0 else CONV_FILTERS, CONV_FILTERS, 3, 2, 1),
                    nn.ELU(),
                ]
                height, width = (height + 1) // 2, (width + 1) // 2
            self.encoder = nn.Sequential(*layers, nn.Flatten())
            features, self.lstm_size = CONV_FILTERS * height * width, ATARI_LSTM_SIZE
        elif len(obs_shape) == 1:
            self.encoder = nn.Sequential(
                nn.Linear(obs_shape[0], VECTOR_HIDDEN),
                nn.ELU(),
                nn.Linear(VECTOR_HIDDEN, VECTOR_HIDDEN),
                nn.ELU(),
            )
            features, self.lstm_size = VECTOR_HIDDEN, VECTOR_LSTM_SIZE
        else:
            raise ValueError(f"unsupported observation shape {obs_shape}")
        self.lstm = nn.LSTMCell(features, self.lstm_size)
        self.critic = nn.Linear(self.lstm_size, 1)
        self.actor = nn.Linear(self.lstm_size, n_actions)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.encoder.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                # Uniform fan-in/fan-out scaling, as the classic weights_init.
                fan_in = module.weight[0].numel()
                fan_out = module.weight.shape[0] * module.weight[0, 0].numel()
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                nn.init.uniform_(module.weight, -bound, bound)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        normalized_columns_(self.actor.weight, 0.01)
        normalized_columns_(self.critic.weight, 1.0)
        nn.init.zeros_(self.actor.bias)
        nn.init.zeros_(self.critic.bias)
        with torch.no_grad():
            for name, bias in self.lstm.named_parameters():
                if name.startswith("bias"):
                    bias.zero_()

    def initial_state(self, batch: int) -> LSTMState:
        zeros = torch.zeros(batch, self.lstm_size)
        return zeros, zeros.clone()

    def forward(
        self, obs: torch.Tensor, state: LSTMState
    ) -> tuple[torch.Tensor, torch.Tensor, LSTMState]:
        h, c = self.lstm(self.encoder(obs), state)
        return self.actor(h), self.critic(h).squeeze(-1), (h, c)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
