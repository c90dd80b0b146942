"""Buffered random ids: right shape, never repeated, not shared with a forked child."""

from __future__ import annotations

import os
import re

from service.ids import RandomHex, random_hex


def test_ids_have_the_asked_length_and_do_not_repeat_across_refills() -> None:
    source = RandomHex(block=64)  # a refill every 4 ids of 16 bytes
    ids = [source.hex(16) for _ in range(5000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert re.fullmatch(r"[0-9a-f]{16}", random_hex(8))
    assert len(source.hex(100)) == 200  # bigger than one block


def test_a_forked_child_does_not_reuse_the_parents_buffer() -> None:
    random_hex(16)  # the module source now holds buffered bytes
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: send its next id and leave without running pytest's teardown
        os.write(write, random_hex(16).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert re.fullmatch(r"[0-9a-f]{32}", child)
    assert child != random_hex(16)  # the parent's next id is what the child would have got without the reset
