"""The resumable order in which a run walks over its data items (step targets or tasks)."""

from __future__ import annotations

import numpy as np


class DataOrder:
    """A resumable walk over ``n`` items: epoch e visits a permutation seeded by (seed, e).

    The position is ``(epoch, cursor)``; restoring it replays exactly the same items, which
    is what makes ``--resume`` continue with the same data order."""

    def __init__(self, n: int, seed: int, shuffle: bool = True, epoch: int = 0, cursor: int = 0) -> None:
        if n < 1:
            raise ValueError("DataOrder needs at least one item")
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.epoch, self.cursor = epoch, cursor
        self._perm = self._permutation(epoch)

    def _permutation(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def take(self, k: int) -> list[int]:
        """The next ``k`` item indices, crossing into new epochs as needed."""
        out: list[int] = []
        while len(out) < k:
            if self.cursor >= self.n:
                self.epoch, self.cursor = self.epoch + 1, 0
                self._perm = self._permutation(self.epoch)
            grab = min(k - len(out), self.n - self.cursor)
            out.extend(int(i) for i in self._perm[self.cursor:self.cursor + grab])
            self.cursor += grab
        return out

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    @classmethod
    def from_state(cls, n: int, seed: int, shuffle: bool, state: dict[str, int]) -> DataOrder:
        return cls(n, seed, shuffle, epoch=int(state["epoch"]), cursor=int(state["cursor"]))
