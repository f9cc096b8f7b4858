"""Digits MLP: 64 pixels (0..16) -> 128 -> 64 -> 10 classes, ReLU; trained on sklearn digits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from veracity.errors import InputError
from veracity.exact.execute import Exec
from veracity.exact.spec import ACT_FRAC, QLinear, quantize_linear
from veracity.models.weights import StateDict, load_safetensors, need

PIXEL_FRAC = 4  # pixels 0..16 are the fixed-point values of pixel / 16


@dataclass(frozen=True)
class MLPConfig:
    sizes: tuple[int, ...] = (64, 128, 64, 10)


def float_mlp(cfg: MLPConfig = MLPConfig()) -> nn.Sequential:
    """The float architecture (input: pixels / 16); state dict keys '0.weight', '2.weight', ..."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(cfg.sizes, cfg.sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(cfg.sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ExactMLP:
    """The digits classifier on exact ops. Output per item: int32 logits in ACT fixed point."""

    name = "digits-mlp"

    def __init__(self, layers: list[QLinear]) -> None:
        self.layers = layers

    @classmethod
    def from_state_dict(cls, state: StateDict, cfg: MLPConfig = MLPConfig()) -> "ExactMLP":
        layers = []
        for i, (a, b) in enumerate(zip(cfg.sizes, cfg.sizes[1:])):
            w = need(state, f"{2 * i}.weight", (b, a))
            bias = need(state, f"{2 * i}.bias", (b,))
            layers.append(quantize_linear(w, bias, PIXEL_FRAC if i == 0 else ACT_FRAC, ACT_FRAC))
        return cls(layers)

    def parse(self, rec: dict[str, Any]) -> np.ndarray:
        px = rec.get("pixels")
        if not isinstance(px, list) or len(px) != 64:
            raise InputError('digits-mlp needs "pixels": a list of 64 integers 0..16 (an 8x8 image)')
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 16 for v in px):
            raise InputError('digits-mlp "pixels" must be integers from 0 to 16')
        return np.array(px, dtype=np.int64)

    def run(self, ex: Exec, items: list[np.ndarray]) -> list[np.ndarray]:
        with ex.step("input"):
            h = ex.input("pixels", np.stack(items))
        for i, lin in enumerate(self.layers):
            with ex.step(f"layer.{i}"):
                h = ex.linear("fc", h, lin)
                if i < len(self.layers) - 1:
                    h = ex.relu("relu", h)
        logits = ex.output(h)
        return list(logits)

    def present(self, out: np.ndarray) -> dict[str, Any]:
        return {"class": int(np.argmax(out)), "logits": [float(v) / (1 << ACT_FRAC) for v in out]}

    def unpresent(self, shown: Any) -> np.ndarray:
        """The integers ``present`` showed (exact: the logits are k / 2**12 in floating point)."""
        return np.round(np.asarray(shown["logits"], dtype=np.float64) * (1 << ACT_FRAC)).astype(np.int64)

    def predict(self, ex: Exec, pixels: np.ndarray, batch: int = 512) -> np.ndarray:
        """Classes for an [N, 64] pixel array (used by tests and the bench)."""
        outs = []
        for lo in range(0, len(pixels), batch):
            outs += self.run(ex, list(pixels[lo:lo + batch]))
        return np.argmax(np.stack(outs), axis=1)


def digits_split() -> dict[str, np.ndarray]:
    """sklearn's bundled digits, split 75/25 (fixed seed, stratified): pixels 0..16 and labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x.astype(np.int64), y, test_size=0.25, random_state=0, stratify=y)
    return {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}


def train_float(seed: int = 0, epochs: int = 300) -> tuple[nn.Sequential, dict[str, np.ndarray]]:
    """Train the float MLP on sklearn's bundled digits; returns the model and the data split."""
    data = digits_split()
    xtr, ytr = data["x_train"], data["y_train"]
    torch.manual_seed(seed)
    model = float_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    xt = torch.tensor(xtr / 16.0, dtype=torch.float32)
    yt = torch.tensor(ytr)
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for lo in range(0, len(xt), 128):
            idx = perm[lo:lo + 128]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval(), data


def float_accuracy(model: nn.Module, pixels: np.ndarray, labels: np.ndarray) -> float:
    with torch.no_grad():
        pred = model(torch.tensor(pixels / 16.0, dtype=torch.float32)).argmax(1).numpy()
    return float((pred == labels).mean())


WEIGHTS = Path(__file__).parent / "weights" / "digits_mlp.safetensors"


def load(path: str | Path = WEIGHTS) -> ExactMLP:
    return ExactMLP.from_state_dict(load_safetensors(path))


if __name__ == "__main__":
    from veracity.exact.execute import Exec, make_backend
    from veracity.models.weights import save_safetensors

    model, data = train_float()
    save_safetensors(model.state_dict(), WEIGHTS)
    exact = load()
    acc_f = float_accuracy(model, data["x_test"], data["y_test"])
    acc_e = float((exact.predict(Exec(make_backend("torch")), data["x_test"]) == data["y_test"]).mean())
    print(f"wrote {WEIGHTS}; test accuracy float {acc_f:.4f} exact {acc_e:.4f}")
