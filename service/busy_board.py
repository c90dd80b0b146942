"""How many inference calls each process of a ``serve`` group is running, in one shared file.

Why: a process whose pool is idle gives part of a big request to its spread threads, which run
on the cores the other processes' workers own (service/batcher.py). When those workers are busy
the spread call does not use an idle core, it halves theirs: at 100 rows x 8 connections about a
quarter of the requests were cut into two 50-row calls that each shared a core with the other
process's batch (16 ms of CPU per 100 rows against 13 ms in one call, timed in the workers). With
this board a process spreads only onto cores nobody in the group is computing on.

One signed 64-bit slot per process in a small file of the group directory, ``mmap``-ed by every
process: each writes only its own slot (aligned 8-byte stores, from its event loop thread) and
reads the others'. A stale read costs at most one spread more or less, never a wrong answer, so
no lock is taken.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

BOARD_FILE = "busy"
INDEX_ENV = "DLF_PROCESS_INDEX"  # set by the supervisor in each child: its slot on the board
_SLOT = struct.Struct("q")


def create_board(directory: Path, processes: int) -> Path:
    """The group's board with every slot at 0 (the supervisor, before it starts the children)."""
    path = directory / BOARD_FILE
    path.write_bytes(bytes(_SLOT.size * processes))
    return path


@dataclass
class BusyBoard:
    """This process's view of the group's board."""

    memory: mmap.mmap
    index: int

    @classmethod
    def open(cls, path: Path, index: int) -> BusyBoard:
        with path.open("r+b") as f:  # the mapping stays valid after the file is closed
            board = cls(mmap.mmap(f.fileno(), 0), index)
        if not 0 <= index < board.slots:
            board.memory.close()
            raise ValueError(f"process index {index} outside the board of {path}")
        return board

    @property
    def slots(self) -> int:
        return len(self.memory) // _SLOT.size

    def publish(self, running: int) -> None:
        """Inference calls this process is running now."""
        _SLOT.pack_into(self.memory, self.index * _SLOT.size, running)

    def others(self) -> int:
        """Inference calls the other processes of the group are running now."""
        return sum(_SLOT.unpack_from(self.memory, i * _SLOT.size)[0] for i in range(self.slots) if i != self.index)


def board_from_environment(group: Path | None) -> BusyBoard | None:
    """The board of the group this process belongs to, or None outside ``serve_processes``."""
    index = os.environ.get(INDEX_ENV)
    if group is None or index is None or not (group / BOARD_FILE).exists():
        return None
    return BusyBoard.open(group / BOARD_FILE, int(index))
