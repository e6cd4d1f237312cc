// The generalised Galton board of sluice.simulators.GaltonBoard, as a PPX simulator in C++.
//
// θ is drawn at address "theta" from Uniform(−1, −0.4) (sluice answers that draw with the θ it simulates at). A ball
// starts at nail 15 of 31 and falls through 20 levels; at level ℓ and nail p it goes left with probability
//
//     P_left(ℓ, p; θ) = ½(1 − sin(πℓ/19)) + sin(πℓ/19) · σ(10 θ (2p/30 − 1)),
//
// a Bernoulli draw at address "right" (1 = right, probability 1 − P_left); it moves p → p or p+1 on even levels,
// p−1 or p on odd ones. The run's result, x, is the final nail.
//
// Run: galton ADDRESS (sluice's from_ppx appends the address to bind).

#include <cmath>
#include <cstdio>
#include <exception>

#include "ppx_client.hpp"

namespace {

constexpr int kLevels = 20;
constexpr int kNails = 31;
constexpr int kStart = 15;

double sigmoid(double value) { return 1.0 / (1.0 + std::exp(-value)); }

void fall(ppx::Client& client) {
    const double theta = client.sample_uniform(-1.0, -0.4, "theta");
    int nail = kStart;
    for (int level = 0; level < kLevels; ++level) {
        const double wiggle = std::sin(M_PI * level / (kLevels - 1));  // how much θ matters at this level
        const double p_left =
            0.5 * (1.0 - wiggle) + wiggle * sigmoid(10.0 * theta * (2.0 * nail / (kNails - 1) - 1.0));
        const int right = client.sample_bernoulli(1.0 - p_left, "right");
        nail += right - level % 2;  // even level: p or p+1; odd level: p−1 or p
    }
    client.run_result({static_cast<double>(nail)});
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s ADDRESS (a ZeroMQ address to bind, e.g. ipc:///tmp/galton)\n", argv[0]);
        return 2;
    }
    try {
        ppx::Client client(argv[argc - 1], "Galton board");
        client.serve(fall);
    } catch (const std::exception& error) {
        std::fprintf(stderr, "galton: %s\n", error.what());
        return 1;
    }
    return 0;
}
