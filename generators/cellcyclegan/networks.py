"""CellCycleGAN's texture networks: a conditional U-Net generator and a conditional PatchGAN.

As in the release (``CellCycleGAN2D.py``), the generator maps a 3-channel conditioning crop
(stage map, intensity map, uniform noise) to a 1-channel sigmoid texture, and the *same*
encoder-decoder, entered through a second input block, reconstructs the two label maps from a
texture (the label-reconstruction term that keeps the conditioning from being ignored). The
discriminator sees ``[texture, stage map, intensity map]`` and outputs a patch map of logits.
"""

from __future__ import annotations

import torch
from torch import nn

#: conditioning channels: stage map, intensity map, noise
COND_CHANNELS = 3
#: label channels reconstructed from a texture and fed to the discriminator: stage map, intensity map
LABEL_CHANNELS = 2


def _conv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    """Two 3x3 conv + InstanceNorm + ReLU, as the release's U-Net blocks."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1),
        nn.InstanceNorm2d(out_ch, affine=True),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1),
        nn.InstanceNorm2d(out_ch, affine=True),
        nn.ReLU(inplace=True),
    )


class UNetGenerator(nn.Module):
    """U-Net texture generator with a shared encoder-decoder and two input blocks / heads.

    ``widths``: feature counts per level (release: 32/64/128/256); the crop side must be divisible
    by ``2 ** (len(widths) - 1)``. ``forward(cond (B,3,S,S)) -> texture (B,1,S,S)`` in [0, 1];
    ``reconstruct(texture) -> labels (B,2,S,S)`` in [0, 1].
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        self.widths = tuple(widths)
        self.input_cond = _conv_block(COND_CHANNELS, widths[0])
        self.input_image = _conv_block(1, widths[0])
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[i], widths[i], 4, stride=2, padding=1), _conv_block(widths[i], widths[i + 1]))
            for i in range(len(widths) - 1)
        )
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 3, stride=2, padding=1, output_padding=1)
            for i in reversed(range(len(widths) - 1))
        )
        self.merge = nn.ModuleList(_conv_block(2 * widths[i], widths[i]) for i in reversed(range(len(widths) - 1)))
        self.head_image = nn.Conv2d(widths[0], 1, 1)
        self.head_labels = nn.Conv2d(widths[0], LABEL_CHANNELS, 1)

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        skips = [x]
        for down in self.down:
            x = down(x)
            skips.append(x)
        skips.pop()
        for up, merge in zip(self.up, self.merge, strict=True):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return x

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head_image(self._trunk(self.input_cond(cond))))

    def reconstruct(self, texture: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head_labels(self._trunk(self.input_image(texture))))


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN: 3x3 stride-2 convs ``w, 2w, 4w, 8w``, one stride-1 ``8w`` conv, a 1-channel map.

    LeakyReLU 0.2 and InstanceNorm from the second layer on, as in the release (``w = 64`` there).
    Returns logits (the sigmoid lives in the BCE-with-logits loss, which is numerically safer).
    """

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        chans = [1 + LABEL_CHANNELS, width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = []
        for i in range(4):
            layers.append(nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1))
            if i > 0:
                layers.append(nn.InstanceNorm2d(chans[i + 1], affine=True))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        layers += [
            nn.Conv2d(8 * width, 8 * width, 3, padding=1),
            nn.InstanceNorm2d(8 * width, affine=True),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(8 * width, 1, 3, padding=1),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, texture: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([texture, labels], dim=1))
