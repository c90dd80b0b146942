"""The busy board: each process of a serve group sees how many inference calls the others run."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.busy_board import BOARD_FILE, INDEX_ENV, BusyBoard, board_from_environment, create_board


def test_each_process_sees_the_others_slots_not_its_own(tmp_path: Path) -> None:
    path = create_board(tmp_path, 3)
    boards = [BusyBoard.open(path, i) for i in range(3)]  # one view per process, as after fork/spawn
    assert [b.others() for b in boards] == [0, 0, 0]
    boards[0].publish(1)
    boards[2].publish(2)
    assert [b.others() for b in boards] == [2, 3, 1]
    boards[2].publish(0)
    assert [b.others() for b in boards] == [0, 1, 1]


def test_an_index_outside_the_board_is_refused(tmp_path: Path) -> None:
    path = create_board(tmp_path, 2)
    with pytest.raises(ValueError, match="process index 2"):
        BusyBoard.open(path, 2)


def test_a_process_outside_a_group_has_no_board(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INDEX_ENV, raising=False)
    assert board_from_environment(None) is None
    create_board(tmp_path, 2)
    assert board_from_environment(tmp_path) is None  # no index: not started by serve_processes
    monkeypatch.setenv(INDEX_ENV, "1")
    board = board_from_environment(tmp_path)
    assert board is not None and board.index == 1 and board.slots == 2
    (tmp_path / BOARD_FILE).unlink()
    assert board_from_environment(tmp_path) is None  # a group dir from before the board existed
