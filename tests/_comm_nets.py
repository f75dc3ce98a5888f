"""Tiny random-initialised networks standing in for the pretrained ones of LPIPS, IS and FID.

They are seeded, so values are deterministic; they measure nothing. The harness reaches them as
``"_comm_nets:NAME"`` (the tests folder is on ``sys.path`` under pytest).
"""

from __future__ import annotations

import torch


class TinyFeatures(torch.nn.Module):
    """Images in [0, 1] (or uint8) → ``(N, out)`` features: one strided conv, pooled, projected."""

    def __init__(self, out: int = 8) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 5, stride=4)
        self.proj = torch.nn.Linear(4, out)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255
        return self.proj(torch.relu(self.conv(x)).mean((2, 3)))


class TinyLogits(TinyFeatures):
    """Ten "classes" for the Inception Score."""

    def __init__(self) -> None:
        super().__init__(out=10)


def tiny_lpips() -> torch.nn.Module:
    """torchmetrics' own LPIPS module with a random (not downloaded) SqueezeNet backbone."""
    from torchmetrics.functional.image.lpips import _LPIPS

    torch.manual_seed(0)
    return _LPIPS(pretrained=True, net="squeeze", pnet_rand=True).eval()
