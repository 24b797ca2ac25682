"""The training schedule: how many steps an epoch and each phase have, which phase a step is in, and the
generator's learning rate at a step. Computed once, on the driver (launcher), and handed to every worker.

Phases share one global step counter: steps [0, P) pre-train the generator on pixel MSE (SRResNet),
steps [P, P+G) train generator and discriminator (SRGAN).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

PHASES = ("pretrain", "gan")


@dataclass(frozen=True)
class Schedule:
    steps_per_epoch: int
    pretrain_steps: int
    gan_steps: int

    @classmethod
    def from_config(cls, cfg, num_train: int) -> "Schedule":
        """`cfg`: a TrainConfig. A phase runs `*_steps` steps, or `*_epochs` epochs when steps is unset."""
        per_epoch = cfg.steps_per_epoch or max(1, num_train // cfg.global_batch_size)
        pre = cfg.pretrain_steps if cfg.pretrain_steps is not None else cfg.pretrain_epochs * per_epoch
        gan = cfg.gan_steps if cfg.gan_steps is not None else cfg.gan_epochs * per_epoch
        return cls(per_epoch, int(pre), int(gan))

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def total(self) -> int:
        return self.pretrain_steps + self.gan_steps

    def phase_of(self, step: int) -> str:
        """The phase of the step with 0-based index `step` (the one about to run)."""
        return "pretrain" if step < self.pretrain_steps else "gan"

    def bounds(self, phase: str) -> tuple[int, int]:
        """[start, end) of a phase in global steps."""
        return (0, self.pretrain_steps) if phase == "pretrain" else (self.pretrain_steps, self.total)

    def learning_rate(self, cfg, step: int, phase: str | None = None) -> float:
        """The generator's learning rate at `step` (0-based, before the update) of `phase` (default: the
        step's own): the phase's rate, constant or cosine-decayed to 1% of it at the phase end."""
        phase = phase or self.phase_of(step)
        base = cfg.pretrain_learning_rate if phase == "pretrain" else cfg.g_learning_rate
        start, end = self.bounds(phase)
        if cfg.lr_decay != "cosine" or end <= start:
            return base
        t = min(max((step - start) / (end - start), 0.0), 1.0)
        return base * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * t)))
