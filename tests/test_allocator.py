"""The BFC allocator replay: TensorFlow's rules for rounding, best fit, splitting and regions."""

from tlkit.inspection.allocator import FIRST_REGION, MIN_ALLOCATION, BFCReplay

MiB = 1 << 20


def test_regions_double_and_a_large_request_gets_a_region_that_fits() -> None:
    replay = BFCReplay()
    replay.allocate("a", 1 * MiB)
    assert replay.regions == [FIRST_REGION]
    replay.allocate("b", 1 * MiB + 1)  # 1 MiB is left: too small by one rounded step
    assert replay.regions == [2 * MiB, 4 * MiB]
    replay.allocate("c", 20 * MiB)  # next would be 8 MiB: doubled to 32, and stays there
    replay.allocate("d", 20 * MiB)
    assert replay.regions == [2 * MiB, 4 * MiB, 32 * MiB, 32 * MiB]


def test_resident_counts_what_was_written_not_the_regions() -> None:
    replay = BFCReplay()
    replay.allocate("a", 100)
    assert replay.resident == MIN_ALLOCATION  # rounded up, one chunk at the region's start
    replay.allocate("big", 3 * MiB)
    assert replay.regions == [2 * MiB, 4 * MiB]
    assert replay.resident == MIN_ALLOCATION + 3 * MiB
    replay.free("big")
    assert replay.resident == MIN_ALLOCATION + 3 * MiB  # freed memory stays with the process


def test_best_fit_takes_the_smallest_free_chunk_and_frees_coalesce() -> None:
    replay = BFCReplay()
    for key in "abcd":
        replay.allocate(key, 256 * 1024)
    replay.free("b")  # a 256 KiB hole between a and c
    written = replay.resident
    replay.allocate("e", 200 * 1024)  # fits the hole: nothing new is written
    assert replay.resident == written
    replay.free("e")
    replay.free("c")  # b's hole and c merge into one 512 KiB chunk
    replay.allocate("f", 512 * 1024)
    assert replay.resident == written and replay.regions == [FIRST_REGION]


def test_a_chunk_is_split_only_when_the_leftover_is_worth_keeping() -> None:
    replay = BFCReplay()
    replay.allocate("a", 2 * MiB - 512 * 1024)  # leftover 512 KiB < half: not split
    replay.allocate("b", 256)
    assert replay.regions == [2 * MiB, 4 * MiB]
