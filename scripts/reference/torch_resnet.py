"""Reference for muq's PyTorch checkpoint import and export.

Writes, into fixtures/:
  torch-resnet18-w4.safetensors  a width-4 CIFAR ResNet-18 (3x3 stem, stride 1,
                                 no max-pool) state_dict as `safetensors.torch.save_file`
                                 writes it, num_batches_tracked included, with
                                 non-trivial weights and BatchNorm statistics;
  torch-resnet18.json            four input images (already normalised), the
                                 model's eval-mode logits for them, and the
                                 names, shapes and dtypes of torchvision's
                                 resnet18(num_classes=10) state_dict with the
                                 CIFAR stem (what an exported muq model must hold).

With a muq export given (`python torch_resnet.py EXPORTED.safetensors`), it
instead loads that file into the same architecture with strict=True and prints
its eval-mode logits for the fixture's images.

Run with: python 3.11.7, torch 2.15.0+cu132 (run on CPU), torchvision 0.29.2,
safetensors 0.8.0, numpy 2.4.6.
"""

import json
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torchvision
from safetensors.torch import load_file, save_file
from torchvision.models.resnet import BasicBlock

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"


class CifarResNet18(nn.Module):
    """torchvision's ResNet-18 at any width, CIFAR stem, same parameter names."""

    def __init__(self, width: int, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        inp = width
        for i, mult in enumerate([1, 2, 4, 8]):
            out = width * mult
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or inp != out:
                down = nn.Sequential(
                    nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out)
                )
            setattr(
                self,
                f"layer{i + 1}",
                nn.Sequential(BasicBlock(inp, out, stride, down), BasicBlock(out, out)),
            )
            inp = out
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inp, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def torchvision_cifar_resnet18():
    m = torchvision.models.resnet18(num_classes=10)
    m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    return m


def main():
    torch.manual_seed(0)
    fixture = json.loads((FIXTURES / "torch-resnet18.json").read_text()) if len(sys.argv) > 1 else None
    if fixture is not None:
        model = CifarResNet18(fixture["width"])
        model.load_state_dict(load_file(sys.argv[1]), strict=True)
        model.eval()
        x = torch.tensor(fixture["images"], dtype=torch.float32).reshape(-1, 3, 32, 32)
        with torch.no_grad():
            print(json.dumps(model(x).tolist()))
        return

    width = 4
    model = CifarResNet18(width)
    # The same names and shapes as torchvision's model at full width.
    full = CifarResNet18(64).state_dict()
    tv = torchvision_cifar_resnet18().state_dict()
    assert list(full) == list(tv) and all(full[k].shape == tv[k].shape for k in tv)
    # Non-trivial BatchNorm affine parameters and running statistics.
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, 32, 32))
    model.eval()
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        logits = model(images)
    save_file(model.state_dict(), FIXTURES / "torch-resnet18-w4.safetensors")
    out = {
        "made_by": "scripts/reference/torch_resnet.py (python 3.11.7, torch "
        + torch.__version__
        + ", torchvision "
        + torchvision.__version__
        + ", safetensors 0.8.0)",
        "width": width,
        "images": [round(v, 7) for v in images.flatten().tolist()],
        "logits": logits.tolist(),
        "torchvision_state_dict": [
            {"name": k, "shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
            for k, v in tv.items()
        ],
    }
    # The images are stored rounded: recompute the logits from what is stored.
    x = torch.tensor(out["images"], dtype=torch.float32).reshape(4, 3, 32, 32)
    with torch.no_grad():
        out["logits"] = model(x).tolist()
    (FIXTURES / "torch-resnet18.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
