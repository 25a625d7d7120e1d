"""A two-layer perceptron's inference in numpy: the learned reflection gates' shared part.

`training/classifiers/reflection.py` trains them and saves .npz files with `w1` (hidden, in),
`b1` (hidden,), `w2` (out, hidden), `b2` (out,) and `outputs` (out,): the name of each output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from memory.errors import SummarizerWeightsError

RETRAIN = "python -m training.classifiers.reflection"  # rebuilds every reflection gate's weights


class SmallMLP:
    """sigmoid(w2 · relu(w1 · x + b1) + b2), one independent probability per output.

    Args:
        path: the .npz file.
        in_features: the input width the caller builds; a file of another width is refused.
        retrain_hint: the command that rebuilds the file, for error messages.

    Raises:
        SummarizerWeightsError: the file is missing or does not fit.
    """

    def __init__(self, path: Path, *, in_features: int, retrain_hint: str):
        if not path.is_file():
            raise SummarizerWeightsError(
                f"reflection weights not found at {path}; train them with `{retrain_hint}`."
            )
        data = np.load(path, allow_pickle=False)
        self.w1 = data["w1"].astype(np.float32)
        self.b1 = data["b1"].astype(np.float32)
        self.w2 = data["w2"].astype(np.float32)
        self.b2 = data["b2"].astype(np.float32)
        self.outputs = [str(name) for name in data["outputs"]]
        if self.w1.shape[1] != in_features:
            raise SummarizerWeightsError(
                f"{path.name} expects {self.w1.shape[1]} input features but gets {in_features}; "
                f"retrain it with `{retrain_hint}`."
            )

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """(n, in_features) -> (n, n_outputs) probabilities."""
        hidden = np.maximum(x @ self.w1.T + self.b1, 0.0)
        return 1.0 / (1.0 + np.exp(-(hidden @ self.w2.T + self.b2)))


def save_mlp(path: Path, layers: dict[str, np.ndarray], outputs: list[str]) -> None:
    """Writes the .npz `SmallMLP` reads (float16 weights: the files ship in the package)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path, **{k: v.astype(np.float16) for k, v in layers.items()}, outputs=np.array(outputs)
    )
