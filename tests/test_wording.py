from mirbatch.wording import counted


def test_counted_says_one_in_the_singular_and_any_other_number_in_the_plural() -> None:
    assert counted(1, "clip") == "1 clip"
    assert counted(2, "clip") == "2 clips"
    assert counted(0, "error") == "0 errors"
    assert counted(1, "patch", "patches") == "1 patch"
    assert counted(3, "augmented copy", "augmented copies") == "3 augmented copies"
