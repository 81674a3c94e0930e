#!/usr/bin/env python3
"""The PyTorch side of `muq bench`: the same CIFAR ResNet-18, training step,
eval batch and gradient sum, timed the same way, printed with the same keys.

    python bench/pytorch_reference.py [--width 64] [--batch 128] [--steps 5]
        [--warmup 1] [--grad-images 2500] [--threads N] [--ops] [--json]

Model: torchvision's BasicBlock ResNet-18 ([2, 2, 2, 2]) with the CIFAR stem
(3x3 stride-1 conv, no max-pool), global average pooling and a linear head --
the architecture of muq-resnet. Step: eager fp32, `F.cross_entropy` (mean),
`backward()`, `torch.optim.SGD(lr=0.01, momentum=0.9, weight_decay=5e-4)`.
Eval: `model.eval()` under `torch.no_grad()`. Gradient sum: training mode,
`cross_entropy(reduction="sum").backward()` per batch, gradients accumulating
in `.grad`. Peak memory: VmHWM of this process. Inputs are random (timing does
not depend on them).

Needs torch (CPU build is enough); exits with status 3 and a message if it is
not importable.
"""

import argparse
import json
import os
import statistics
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover
    print(f"pytorch_reference.py: torch is not importable ({e}); "
          "create a venv and `pip install torch numpy`", file=sys.stderr)
    sys.exit(3)

EPOCH_STEPS = 391


class BasicBlock(nn.Module):
    def __init__(self, inp, out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or inp != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNet18(nn.Module):
    def __init__(self, width=64, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers, inp = [], width
        for i, mult in enumerate([1, 2, 4, 8]):
            out = width * mult
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(inp, out, stride), BasicBlock(out, out, 1)))
            inp = out
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(8 * width, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def peak_rss_mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def median_ms(reps, f):
    f()
    times = []
    for _ in range(max(reps, 1)):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def op_timings(width, batch, reps):
    """The ops and shapes of muq_resnet::bench::op_timings."""
    out = []
    stages = [(3, width, 32)] + [(width << s, width << s, 32 >> s) for s in range(4)]
    for i, (c, o, hw) in enumerate(stages):
        x = torch.randn(batch, c, hw, hw)
        w = torch.randn(o, c, 3, 3) * 0.05
        dy = torch.randn(batch, o, hw, hw)
        shape = f"{batch}x{c}x{hw}x{hw} o{o}"
        out.append(dict(op="conv_fwd", shape=shape,
                        ms=median_ms(reps, lambda: F.conv2d(x, w, padding=1))))
        if i > 0:
            out.append(dict(op="conv_dx", shape=shape, ms=median_ms(
                reps, lambda: torch.nn.grad.conv2d_input(x.shape, w, dy, padding=1))))
        out.append(dict(op="conv_dw", shape=shape, ms=median_ms(
            reps, lambda: torch.nn.grad.conv2d_weight(x, w.shape, dy, padding=1))))
    for s in range(4):
        c, hw = width << s, 32 >> s
        x = torch.randn(batch, c, hw, hw, requires_grad=True)
        bn = nn.BatchNorm2d(c)
        shape = f"{batch}x{c}x{hw}x{hw}"
        out.append(dict(op="bn_relu_fwd", shape=shape,
                        ms=median_ms(reps, lambda: F.relu(bn(x)))))
        y = F.relu(bn(x))
        ones = torch.ones_like(y)
        out.append(dict(op="bn_relu_bwd", shape=shape, ms=median_ms(
            reps, lambda: y.backward(ones, retain_graph=True))))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--grad-images", type=int, default=2500)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ops", action="store_true")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    model = ResNet18(a.width)
    n_images = max(a.grad_images, a.batch)
    images = torch.randn(n_images, 3, 32, 32)
    labels = torch.randint(0, 10, (n_images,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    fwd, bwd, upd, total, cpu = [], [], [], [], []
    model.train()
    for step in range(a.warmup + a.steps):
        start = (step * a.batch) % (n_images - a.batch + 1)
        x, y = images[start:start + a.batch], labels[start:start + a.batch]
        opt.zero_grad(set_to_none=True)
        c0 = time.process_time()
        t0 = time.perf_counter()
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        t1 = time.perf_counter()
        loss.backward()
        # What muq's step also does: loss and hit count to the host.
        _ = (loss.item(), (logits.argmax(1) == y).sum().item())
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if step >= a.warmup:
            fwd.append((t1 - t0) * 1e3)
            bwd.append((t2 - t1) * 1e3)
            upd.append((t3 - t2) * 1e3)
            total.append((t3 - t0) * 1e3)
            cpu.append((time.process_time() - c0) * 1e3)
    opt.zero_grad(set_to_none=True)

    model.eval()
    x = images[:a.batch]
    evals = []
    with torch.no_grad():
        for step in range(a.warmup + a.steps):
            t0 = time.perf_counter()
            model(x)
            if step >= a.warmup:
                evals.append((time.perf_counter() - t0) * 1e3)

    grad_sum_ms = None
    if a.grad_images > 0:
        model.train()
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        loss_sum = 0.0
        for s in range(0, a.grad_images, a.batch):
            xb, yb = images[s:min(s + a.batch, a.grad_images)], labels[s:min(s + a.batch, a.grad_images)]
            loss = F.cross_entropy(model(xb), yb, reduction="sum")
            loss.backward()
            loss_sum += loss.item()
        grads = [p.grad.detach().clone() for p in model.parameters()]
        grad_sum_ms = (time.perf_counter() - t0) * 1e3
        del grads
        model.zero_grad(set_to_none=True)

    ops = op_timings(a.width, a.batch, a.steps) if a.ops else []
    step_ms = statistics.median(total)
    report = dict(
        framework=f"pytorch-{torch.__version__}",
        kernels="pytorch",
        device="cpu",
        threads=torch.get_num_threads(),
        width=a.width,
        batch=a.batch,
        steps=a.steps,
        train_step_ms=step_ms,
        train_step_cpu_ms=statistics.median(cpu),
        forward_ms=statistics.median(fwd),
        backward_ms=statistics.median(bwd),
        optimizer_ms=statistics.median(upd),
        eval_batch_ms=statistics.median(evals),
        grad_sum_ms=grad_sum_ms,
        grad_images=a.grad_images,
        peak_rss_mib=peak_rss_mib(),
        epoch_min=step_ms * EPOCH_STEPS / 60000.0,
    )
    if ops:
        report["ops"] = ops
    if a.json:
        print(json.dumps(report))
    else:
        for k, v in report.items():
            if k != "ops":
                print(f"{k:>16}: {v}")
        for o in ops:
            print(f"  {o['op']:<12} {o['shape']:<24} {o['ms']:>10.2f} ms")


if __name__ == "__main__":
    main()
