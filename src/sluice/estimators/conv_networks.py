"""Convolutional networks for image-shaped x: a small residual encoder and the potential g(x, θ) built on it."""

from __future__ import annotations

import torch
import torch.nn as nn

from .networks import TABLE_ROWS, FeaturePotential, Standardize, activation_class

NETWORKS = ("auto", "mlp", "conv")
NORMS = ("batch", "none")
DEFAULT_CHANNELS = (16, 32, 64)
ENCODE_CHUNK = 512  # images per encoder pass outside training (bounds memory for large evaluations)
__all__ = ["NETWORKS", "NORMS", "DEFAULT_CHANNELS", "TABLE_ROWS", "choose_network", "check_norm", "ResidualBlock",
           "ImageEncoder", "ConvPotential"]


def choose_network(network: str, x: torch.Tensor) -> str:
    """"mlp" or "conv" for x of shape [n, ...]: "auto" takes the conv net for images ([n, H, W] or [n, C, H, W])."""
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; choose one of {list(NETWORKS)}")
    if network == "auto":
        return "conv" if x.ndim in (3, 4) else "mlp"
    if network == "conv" and x.ndim not in (3, 4):
        raise ValueError(f"network='conv' needs images x of shape [n, H, W] or [n, C, H, W], got {list(x.shape)}")
    return network


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {list(NORMS)}")
    return norm


def _normalised(convolution: nn.Conv2d, norm: str) -> nn.Module:
    """The convolution, followed by batch normalisation of its channels where ``norm`` is "batch"."""
    return nn.Sequential(convolution, nn.BatchNorm2d(convolution.out_channels)) if norm == "batch" else convolution


class ResidualBlock(nn.Module):
    """act(shortcut(v) + conv(act(conv(v)))): two 3×3 convolutions, the first with ``stride``; the shortcut is a
    1×1 convolution where the shape changes. With ``norm="batch"`` each convolution is batch-normalised (as in a
    ResNet): on images whose signal is a faint local distortion it trains several times faster."""

    def __init__(self, n_in: int, n_out: int, stride: int, activation: str, norm: str = "none"):
        super().__init__()
        self.first = _normalised(nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1), norm)
        self.second = _normalised(nn.Conv2d(n_out, n_out, 3, padding=1), norm)
        self.shortcut = nn.Identity() if (n_in, stride) == (n_out, 1) else \
            _normalised(nn.Conv2d(n_in, n_out, 1, stride=stride), norm)
        self.activation = activation_class(activation)()

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.activation(self.shortcut(v) + self.second(self.activation(self.first(v))))


class ImageEncoder(nn.Module):
    """[n, C, H, W] → [n, 2 c_last]: a 3×3 stem with stride 2 to ``channels[0]``, one residual block per further
    entry of ``channels`` (each halving the resolution), then the mean and the maximum of each channel over the
    image (global pooling: the features do not depend on where in the image a pattern lies).

    For 64×64 images and channels (16, 32, 64): 32×32 → 16×16 → 8×8, about 9·10⁶ multiply-adds per image.
    """

    def __init__(self, n_channels_in: int, channels: tuple[int, ...], activation: str, norm: str = "none"):
        super().__init__()
        self.stem = nn.Sequential(_normalised(nn.Conv2d(n_channels_in, channels[0], 3, stride=2, padding=1),
                                              check_norm(norm)), activation_class(activation)())
        pairs = zip(channels[:-1], channels[1:], strict=True)
        self.blocks = nn.Sequential(*[ResidualBlock(a, b, 2, activation, norm) for a, b in pairs])
        self.n_features = 2 * channels[-1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.blocks(self.stem(images))
        return torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1)


class ConvPotential(FeaturePotential):
    """g(x, θ) = MLP([encoder((x − m)/s), standardised θ]) for images x [n, H, W] or [n, C, H, W]; ratio models
    use log r̂(x|θ0,θ1) = g(x,θ0) − g(x,θ1), exactly as with ``networks.Potential``.

    θ joins after the convolutions, so the encoder runs once per image whatever the number of θ: ``pair``
    gives g at two θ from one encoding (training) and ``table`` g on a grid of θ (scans); both come from
    ``networks.FeaturePotential``. Pixels are standardised by one mean m and spread s over all pixels (the
    statistics of the training images). In eval mode the encoder runs without an autograd graph, in chunks of
    ``ENCODE_CHUNK`` images: θ-gradients (scores) are unaffected, and evaluating many images stays in bounded
    memory.

    Example::

        potential = ConvPotential((64, 64), 100.0, 30.0, Standardize.fit(theta), hidden=(64, 64),
                                  activation="silu")
        g = potential(images, theta)    # [n]
    """

    def __init__(self, image_shape, pixel_mean: float, pixel_std: float, theta_scale: Standardize, hidden,
                 activation: str, channels: tuple[int, ...] = DEFAULT_CHANNELS, norm: str = "none"):
        encoder = ImageEncoder(1 if len(image_shape) == 2 else int(image_shape[0]), tuple(channels), activation,
                               norm)
        super().__init__(encoder.n_features, theta_scale, hidden, activation)
        self.image_shape = tuple(int(k) for k in image_shape)
        self.n_channels = 1 if len(self.image_shape) == 2 else self.image_shape[0]
        self.register_buffer("pixel_mean", torch.tensor(float(pixel_mean)))
        self.register_buffer("pixel_std", torch.tensor(max(float(pixel_std), 1e-6)))
        self.encoder = encoder

    @staticmethod
    def statistics(x: torch.Tensor) -> dict:
        """What ``from_info`` needs from the training images: their shape and the pixels' mean and spread."""
        return {"image_shape": list(x.shape[1:]), "pixel_mean": float(x.mean()), "pixel_std": float(x.std())}

    @classmethod
    def from_info(cls, info: dict, hidden, activation: str) -> ConvPotential:
        theta_scale = Standardize(info["theta"]["mean"], info["theta"]["std"])
        return cls(info["image_shape"], info["pixel_mean"], info["pixel_std"], theta_scale, hidden, activation,
                   tuple(info.get("channels", DEFAULT_CHANNELS)), info.get("norm", "none"))  # models saved before norm

    def _encode_part(self, x: torch.Tensor) -> torch.Tensor:
        images = x.reshape(x.shape[0], self.n_channels, *self.image_shape[-2:])
        return self.encoder((images - self.pixel_mean) / self.pixel_std)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image features [n, F]."""
        if x.shape[1:] != self.image_shape:
            raise ValueError(f"the network was trained on images of shape {list(self.image_shape)}, got x of shape "
                             f"{list(x.shape)}")
        if self.training:
            return self._encode_part(x)
        with torch.no_grad():
            parts = [self._encode_part(x[i:i + ENCODE_CHUNK]) for i in range(0, x.shape[0], ENCODE_CHUNK)]
        return torch.cat(parts) if parts else torch.empty(0, self.encoder.n_features)
