"""Small simulators for the tests: a correct one, and one for each mistake a user can make."""

import numpy as np
import torch

import sluice


class Exponential(sluice.Simulator):
    """x ~ Exponential(rate = e^θ): log p(x|θ) = θ − e^θ x, so t(x|θ) = 1 − e^θ x exactly (z is empty)."""

    parameter_names = ("log_rate",)

    def default_prior(self):
        return sluice.priors.BoxUniform(low=[-0.5], high=[0.5])

    def sample(self, theta, generator=None):
        u = torch.rand(theta.shape[0], generator=generator)
        return (-torch.log1p(-u) / theta[:, 0].exp())[:, None], {"u": u}

    def joint_log_prob(self, x, z, theta):
        return theta[:, 0] - theta[:, 0].exp() * x[:, 0]


class NumpyExponential(Exponential):
    """The same model scored through numpy: autograd cannot see it, finite differences must."""

    def joint_log_prob(self, x, z, theta):
        rate = np.exp(theta[:, 0].numpy())
        return torch.from_numpy(np.log(rate) - rate * x[:, 0].numpy().astype(rate.dtype))


class GraphBreak(Exponential):
    """Detaches θ in the rate term: autograd drops −e^θ x from the score."""

    def joint_log_prob(self, x, z, theta):
        return theta[:, 0] - theta[:, 0].detach().exp() * x[:, 0]


class RedrawsInScoring(Exponential):
    """Draws fresh noise while scoring instead of reading it from z."""

    def joint_log_prob(self, x, z, theta):
        return theta[:, 0] - theta[:, 0].exp() * x[:, 0] + 0.1 * torch.randn(theta.shape[0])


class UnrecordedNoise(Exponential):
    """Adds Gaussian noise to x that joint_log_prob does not know about: the density is wrong."""

    def sample(self, theta, generator=None):
        x, z = super().sample(theta, generator)
        return x + 0.5 * torch.randn(x.shape, generator=generator), z


class LatentNotRecorded(sluice.Simulator):
    """Draws w ~ N(θ, 1) and x ~ N(w, 1) but scores x as N(θ, 1): the latent w is missing from z."""

    parameter_names = ("mu",)

    def sample(self, theta, generator=None):
        w = theta + torch.randn(theta.shape, generator=generator)
        return w + torch.randn(theta.shape, generator=generator), {}

    def joint_log_prob(self, x, z, theta):
        return -0.5 * ((x - theta) ** 2).sum(dim=1)


class IgnoresTheta(Exponential):
    def joint_log_prob(self, x, z, theta):
        return -x[:, 0] + 0.0 * theta[:, 0]


class SometimesNaN(Exponential):
    """Returns NaN for x in runs whose θ exceeds ``threshold``."""

    def __init__(self, threshold):
        self.threshold = threshold

    def sample(self, theta, generator=None):
        x, z = super().sample(theta, generator)
        return torch.where(theta[:, :1] > self.threshold, torch.nan, x), z


class BlackBox(sluice.Simulator):
    """A simulator without joint_log_prob."""

    parameter_names = ("mu",)

    def sample(self, theta, generator=None):
        return theta + torch.randn(theta.shape, generator=generator), torch.zeros(theta.shape[0])
