// The hierarchical Gaussian of sluice.simulators.HierarchicalGaussian, as a PPX simulator in C++.
//
// θ = (μ, log τ) is drawn at addresses "mu" from Uniform(−2, 2) and "log_tau" from Uniform(−2, 1) (sluice answers
// those draws with the θ it simulates at). For the K = 8 groups, with known noise scales s_k = 0.3 … 1.0 evenly
// spaced (in float precision, as the built-in's),
//
//     z_k ~ N(μ, τ²)       a Sample at address "group_mean"   (the latent group means),
//     x_k ~ N(z_k, s_k²)   an Observe at address "x"          (what is observed).
//
// Every draw goes through the controller: sluice records the z_k as latents, and draws the observations itself
// (an Observe without a value), which are x when they are declared observed: from_ppx(..., observed=["x"]).
// The model never sees x, so the run has no result of its own.
//
// Run: hierarchical ADDRESS (sluice's from_ppx appends the address to bind).

#include <cmath>
#include <cstdio>
#include <exception>
#include <vector>

#include "ppx_client.hpp"

namespace {

constexpr int kGroups = 8;

// s_k, rounded to float as the built-in keeps them (torch.linspace(0.3, 1.0, 8) in float32)
double noise_scale(int group) { return static_cast<float>(0.3 + (1.0 - 0.3) * group / (kGroups - 1)); }

void generate(ppx::Client& client) {
    const double mu = client.sample_uniform(-2.0, 2.0, "mu");
    const double tau = std::exp(client.sample_uniform(-2.0, 1.0, "log_tau"));
    std::vector<double> group_means(kGroups);
    for (int k = 0; k < kGroups; ++k) group_means[k] = client.sample_normal(mu, tau, "group_mean");
    for (int k = 0; k < kGroups; ++k) client.observe_normal(group_means[k], noise_scale(k), "x");
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s ADDRESS (a ZeroMQ address to bind, e.g. ipc:///tmp/hierarchical)\n", argv[0]);
        return 2;
    }
    try {
        ppx::Client client(argv[argc - 1], "hierarchical Gaussian");
        client.serve(generate);
    } catch (const std::exception& error) {
        std::fprintf(stderr, "hierarchical: %s\n", error.what());
        return 1;
    }
    return 0;
}
