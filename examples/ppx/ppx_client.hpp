// ppx_client.hpp: a small header-only PPX client, enough to hand a C++ simulator's random draws to sluice.
//
// PPX (the probabilistic programming execution protocol of Baydin et al., arXiv:1907.03382) runs a simulator as a
// server: it binds a ZeroMQ REP socket, and a controller (sluice.simulators.ppx.from_ppx) connects to it and sends
// requests; every message is a FlatBuffers `ppx.Message` (schema: src/sluice/simulators/ppx/ppx.fbs). A session is
//
//     controller: Handshake        -> simulator: HandshakeResult{system_name, model_name}
//     controller: Run              -> simulator: Sample{address, name, distribution}      (a random draw)
//     controller: SampleResult{v}  -> simulator: the next Sample / Observe / Tag, ... or RunResult{result}
//     ... one Run per simulation ...
//     controller: Reset            -> simulator: Reset (an acknowledgement), and Client::serve returns
//
// The controller, not the simulator, chooses every value: sample_* returns what came back in SampleResult. That is
// what lets sluice draw the runs reproducibly from its seeds, record every draw as a latent z, and replay a run
// with the recorded values forced to re-score it at another θ.
//
// Use:
//
//     #include "ppx_client.hpp"
//     void forward(ppx::Client& client) {                 // one simulation
//         double theta = client.sample_uniform(-1.0, 1.0, "theta");
//         double x = client.sample_normal(theta, 1.0, "x");
//         client.run_result({x});
//     }
//     int main(int argc, char** argv) {                   // sluice appends the address to bind as the last argument
//         ppx::Client client(argv[argc - 1], "my model");
//         client.serve(forward);
//     }
//
// Build: flatc --cpp -o build src/sluice/simulators/ppx/ppx.fbs; g++ -O2 -std=c++17 -Ibuild my_model.cpp -lzmq
// (examples/ppx/Makefile does both).

#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "ppx_generated.h"

namespace ppx {

class Client {
 public:
    // Bind a REP socket at `address` ("ipc:///tmp/sim.ipc", "tcp://*:5555", ...); `model_name` is what the
    // handshake reports.
    Client(const std::string& address, std::string model_name)
        : model_name_(std::move(model_name)), socket_(context_, zmq::socket_type::rep), parent_(getppid()) {
        socket_.set(zmq::sockopt::linger, 200);  // at exit, let the last reply leave, but not wait for long
        socket_.bind(address);
    }

    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    // Answer the handshake and every Run (calling `forward(*this)` once per run) until the controller sends Reset;
    // then return. `forward` ends its run with run_result(...); a forward that does not gets an empty result.
    void serve(const std::function<void(Client&)>& forward) {
        for (;;) {
            const Message* request = receive();
            switch (request->body_type()) {
                case MessageBody_Handshake: {
                    auto system = builder_.CreateString("sluice examples/ppx/ppx_client.hpp");
                    auto model = builder_.CreateString(model_name_);
                    send(MessageBody_HandshakeResult, CreateHandshakeResult(builder_, system, model).Union());
                    break;
                }
                case MessageBody_Run:
                    in_run_ = true;
                    forward(*this);
                    if (in_run_) run_result({});
                    break;
                case MessageBody_Reset:  // the controller ends the session: acknowledge, and return
                    send(MessageBody_Reset, CreateReset(builder_).Union());
                    return;
                default:
                    throw std::runtime_error(std::string("ppx: expected Handshake, Run or Reset, got ") +
                                             EnumNameMessageBody(request->body_type()));
            }
        }
    }

    // A draw from N(mean, stddev²) at `address`; the controller chooses the value.
    double sample_normal(double mean, double stddev, const std::string& address, const std::string& name = "") {
        auto normal = CreateNormal(builder_, scalar(mean), scalar(stddev));
        return sample(Distribution_Normal, normal.Union(), address, name);
    }

    // A draw from Bernoulli(p) at `address`, p the probability of 1; returns 0 or 1.
    int sample_bernoulli(double p, const std::string& address, const std::string& name = "") {
        auto bernoulli = CreateBernoulli(builder_, scalar(p));
        double value = sample(Distribution_Bernoulli, bernoulli.Union(), address, name);
        if (value != 0.0 && value != 1.0)
            throw std::runtime_error("ppx: a Bernoulli draw at " + address + " came back as " + std::to_string(value));
        return static_cast<int>(value);
    }

    // A draw from Uniform(low, high) at `address`.
    double sample_uniform(double low, double high, const std::string& address, const std::string& name = "") {
        auto uniform = CreateUniform(builder_, scalar(low), scalar(high));
        return sample(Distribution_Uniform, uniform.Union(), address, name);
    }

    // An observation from N(mean, stddev²) at `address`. Without `value` the controller draws it and the model
    // never sees it (what sluice does: the observations are x); with `value`, the run's own observation.
    void observe_normal(double mean, double stddev, const std::string& address,
                        std::optional<double> value = std::nullopt, const std::string& name = "") {
        auto normal = CreateNormal(builder_, scalar(mean), scalar(stddev));
        auto observed = value ? scalar(*value) : flatbuffers::Offset<Tensor>();
        auto observe = CreateObserve(builder_, builder_.CreateString(address), builder_.CreateString(name),
                                     Distribution_Normal, normal.Union(), observed);
        send(MessageBody_Observe, observe.Union());
        expect(MessageBody_ObserveResult);
    }

    // End the run with its result, a 1-D tensor (x, where the controller reads x from the result).
    void run_result(const std::vector<double>& values) {
        if (!in_run_) throw std::runtime_error("ppx: run_result outside a run, or twice in one run");
        send(MessageBody_RunResult, CreateRunResult(builder_, tensor(values)).Union());
        in_run_ = false;
    }

 private:
    flatbuffers::Offset<Tensor> scalar(double value) { return tensor({value}, {}); }

    flatbuffers::Offset<Tensor> tensor(const std::vector<double>& values) {
        return tensor(values, {static_cast<int32_t>(values.size())});
    }

    flatbuffers::Offset<Tensor> tensor(const std::vector<double>& values, const std::vector<int32_t>& shape) {
        return CreateTensorDirect(builder_, &values, &shape);
    }

    double sample(Distribution type, flatbuffers::Offset<void> distribution, const std::string& address,
                  const std::string& name) {
        if (!in_run_) throw std::runtime_error("ppx: a draw at " + address + " outside a run");
        auto request = CreateSample(builder_, builder_.CreateString(address), builder_.CreateString(name), type,
                                    distribution);
        send(MessageBody_Sample, request.Union());
        const SampleResult* answer = expect(MessageBody_SampleResult)->body_as_SampleResult();
        if (answer->result() == nullptr || answer->result()->data() == nullptr ||
            answer->result()->data()->size() != 1)
            throw std::runtime_error("ppx: the SampleResult for " + address + " does not hold one number");
        return answer->result()->data()->Get(0);
    }

    void send(MessageBody type, flatbuffers::Offset<void> body) {
        FinishMessageBuffer(builder_, CreateMessage(builder_, type, body));
        socket_.send(zmq::buffer(builder_.GetBufferPointer(), builder_.GetSize()), zmq::send_flags::none);
        builder_.Clear();
    }

    // The next request, verified; while none comes, exit quietly once the process that started us has gone
    // (its controller cannot come back, and an orphaned simulator would wait forever).
    const Message* receive() {
        for (;;) {
            zmq::pollitem_t item{static_cast<void*>(socket_), 0, ZMQ_POLLIN, 0};
            zmq::poll(&item, 1, std::chrono::milliseconds(1000));
            if (item.revents & ZMQ_POLLIN) break;
            if (getppid() != parent_) std::exit(0);
        }
        if (!socket_.recv(message_, zmq::recv_flags::none)) throw std::runtime_error("ppx: receive failed");
        flatbuffers::Verifier verifier(static_cast<const uint8_t*>(message_.data()), message_.size());
        if (!VerifyMessageBuffer(verifier))
            throw std::runtime_error("ppx: received a message that is not a ppx.Message");
        return GetMessage(message_.data());
    }

    const Message* expect(MessageBody type) {
        const Message* answer = receive();
        if (answer->body_type() != type)
            throw std::runtime_error(std::string("ppx: expected ") + EnumNameMessageBody(type) + ", got " +
                                     EnumNameMessageBody(answer->body_type()));
        return answer;
    }

    std::string model_name_;
    zmq::context_t context_;
    zmq::socket_t socket_;
    pid_t parent_;
    zmq::message_t message_;
    flatbuffers::FlatBufferBuilder builder_;
    bool in_run_ = false;
};

}  // namespace ppx
