"""Tables computed part by part: reused while a part's signature holds, resumed after an interruption."""

import pandas as pd
import pytest

from deepfake_kedro.resumable import Part, parts_folder, write_parts


class Counter:
    """Parts whose rows say which part made them; counts what was computed, and can fail at one part."""

    def __init__(self, fail_at: str | None = None):
        self.computed: list[str] = []
        self.fail_at = fail_at

    def part(self, name: str, signature: str = "s") -> Part:
        def compute() -> pd.DataFrame:
            if name == self.fail_at:
                raise KeyboardInterrupt  # a run stopped by hand (or killed) in the middle of this part
            self.computed.append(name)
            return pd.DataFrame({"part": [name, name], "value": [signature, signature]})

        return Part(name, signature, compute)

    def plan(self, names: list[str], signatures: dict[str, str] | None = None) -> list[Part]:
        return [self.part(name, (signatures or {}).get(name, "s")) for name in names]


NAMES = ["m/fold_0/chunk_00000", "m/fold_0/chunk_00001", "m/fold_1/chunk_00000", "n/fold_0/chunk_00000"]


def test_a_second_run_computes_nothing_and_writes_the_same_table(tmp_path):
    first, again = Counter(), Counter()
    assert write_parts(first.plan(NAMES), tmp_path / "scores.parquet") == 4
    table = pd.read_parquet(tmp_path / "scores.parquet")
    assert table["part"].tolist() == [name for name in NAMES for _ in range(2)]  # in the plan's order
    assert write_parts(again.plan(NAMES), tmp_path / "scores.parquet") == 0 and again.computed == []
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "scores.parquet"), table)


def test_an_interrupted_run_keeps_its_finished_parts_and_the_rerun_computes_only_the_rest(tmp_path):
    interrupted = Counter(fail_at=NAMES[2])
    with pytest.raises(KeyboardInterrupt):
        write_parts(interrupted.plan(NAMES), tmp_path / "scores.parquet")
    assert interrupted.computed == NAMES[:2]
    assert not (tmp_path / "scores.parquet").exists()  # no table until every part is done
    resumed = Counter()
    assert write_parts(resumed.plan(NAMES), tmp_path / "scores.parquet") == 2 and resumed.computed == NAMES[2:]
    whole = Counter()
    write_parts(whole.plan(NAMES), tmp_path / "uninterrupted.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "scores.parquet"),
                                  pd.read_parquet(tmp_path / "uninterrupted.parquet"))


def test_a_part_whose_signature_changed_is_computed_again_and_only_it(tmp_path):
    write_parts(Counter().plan(NAMES), tmp_path / "scores.parquet")
    changed = Counter()
    assert write_parts(changed.plan(NAMES, {NAMES[1]: "other"}), tmp_path / "scores.parquet") == 1
    assert changed.computed == [NAMES[1]]
    assert pd.read_parquet(tmp_path / "scores.parquet")["value"].tolist().count("other") == 2


def test_a_part_written_without_its_signature_is_not_trusted(tmp_path):
    write_parts(Counter().plan(NAMES), tmp_path / "scores.parquet")
    # What a run killed between writing a part's rows and its signature leaves.
    (parts_folder(tmp_path / "scores.parquet") / f"{NAMES[3]}.signature").unlink()
    rerun = Counter()
    assert write_parts(rerun.plan(NAMES), tmp_path / "scores.parquet") == 1 and rerun.computed == [NAMES[3]]


def test_a_plan_naming_a_part_twice_or_nothing_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"names these parts twice: \['m/fold_0/chunk_00000'\]"):
        write_parts(Counter().plan([NAMES[0], NAMES[0]]), tmp_path / "scores.parquet")
    with pytest.raises(ValueError, match="holds no part"):
        write_parts([], tmp_path / "scores.parquet")
