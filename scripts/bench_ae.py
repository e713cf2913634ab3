#!/usr/bin/env python3
"""Training throughput of the thought autoencoder in PyTorch, for comparison with the Rust
implementation (thoughtcomm/src/autoencoder.rs, train.rs) on the same workload.

Same network (ELU MLPs, the decoder mirroring the encoder's hidden widths, PyTorch's default
Linear init), same objective (mean squared error + lambda * the estimator's penalty on the
closed-form decoder Jacobian dH/dZ, averaged over the batch), same optimizer (Adam, PyTorch
defaults), same mini-batches (drawn with replacement), same thread count. The data are random
normalized states: throughput does not depend on their values.

Prints one JSON object: {"samples_per_second": ..., "seconds": ..., "steps": ..., settings}.
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F


class Mlp(torch.nn.Module):
    def __init__(self, widths, out):
        super().__init__()
        self.hidden = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.out = torch.nn.Linear(widths[-1], out)

    def forward(self, x):
        for layer in self.hidden:
            x = F.elu(layer(x))
        return self.out(x)

    def forward_with_jacobian(self, z):
        """Output and dOut/dz ([batch, out, k]) by the chain rule, accumulated from the input."""
        x, jac = z, None
        for layer in self.hidden:
            lin = layer.weight.unsqueeze(0) if jac is None else layer.weight @ jac
            y = F.elu(layer(x))
            jac = (y + 1.0).clamp_max(1.0).unsqueeze(-1) * lin  # elu'(x) = min(elu(x) + 1, 1)
            x = y
        lin = self.out.weight.unsqueeze(0) if jac is None else self.out.weight @ jac
        return self.out(x), lin.expand(z.shape[0], -1, z.shape[1])


def penalty(estimator, jac, z, blocks):
    if estimator == "paper":
        return jac.abs().sum((1, 2)).mean()
    scale = z.std(0)
    if estimator == "column-norm":
        return (jac.abs() * scale).sum((1, 2)).mean()
    if estimator == "log":
        eps = 0.1
        return (torch.log1p(jac.abs() * scale / eps) * eps).sum((1, 2)).mean()
    if estimator == "group":
        scaled = jac * scale
        groups = [(part.square().sum(1) + 1e-8).sqrt() for part in torch.split(scaled, blocks, dim=1)]
        return torch.stack(groups).sum((0, 2)).mean()
    raise SystemExit(f"unknown estimator {estimator}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blocks", default="15,14,14", help="agent state sizes (the benchmark's default: 3 agents, 24 latents)")
    p.add_argument("--latent-dim", type=int, default=24)
    p.add_argument("--hidden", default="128,128")
    p.add_argument("--estimator", default="column-norm")
    p.add_argument("--lambda", dest="lam", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--samples", type=int, default=5000)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    blocks = [int(b) for b in a.blocks.split(",")]
    hidden = [int(h) for h in a.hidden.split(",")]
    n_h = sum(blocks)
    encoder = Mlp([n_h] + hidden, a.latent_dim)
    decoder = Mlp([a.latent_dim] + hidden[::-1], n_h)
    params = list(encoder.parameters()) + list(decoder.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    data = torch.randn(a.samples, n_h)

    def step():
        x = data[torch.randint(0, a.samples, (a.batch_size,))]
        z = encoder(x)
        if a.lam > 0:
            x_hat, jac = decoder.forward_with_jacobian(z)
            pen = penalty(a.estimator, jac, z, blocks)
        else:
            x_hat, pen = decoder(z), torch.zeros(())
        loss = (x_hat - x).square().mean() + a.lam * pen
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    start = time.perf_counter()
    for _ in range(a.steps):
        step()
    seconds = time.perf_counter() - start
    print(json.dumps({
        "samples_per_second": a.steps * a.batch_size / seconds, "seconds": seconds, "steps": a.steps,
        "blocks": blocks, "latent_dim": a.latent_dim, "hidden": hidden, "estimator": a.estimator,
        "lambda": a.lam, "batch_size": a.batch_size, "threads": a.threads, "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
