from mirbatch.wording import counted, duration


def test_counted_says_one_in_the_singular_and_any_other_number_in_the_plural() -> None:
    assert counted(1, "clip") == "1 clip"
    assert counted(2, "clip") == "2 clips"
    assert counted(0, "error") == "0 errors"
    assert counted(1, "patch", "patches") == "1 patch"
    assert counted(3, "augmented copy", "augmented copies") == "3 augmented copies"


def test_duration_reads_as_people_say_it() -> None:
    assert [duration(x) for x in (0.2, 40, 89, 90, 700, 5399, 5400, 12240, 93600)] == [
        "1 s", "40 s", "89 s", "2 min", "12 min", "90 min", "1.5 h", "3.4 h", "26 h"
    ]  # fmt: skip
