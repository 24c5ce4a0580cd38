"""Who stands for whom when the evidence groups students: overlapping groups are one person."""

from __future__ import annotations

import numpy as np

from retraining.evaluate import person_map


def test_a_student_taken_for_one_of_a_pair_enrolled_twice_is_the_same_person_as_both() -> None:
    students = np.array(["A", "B", "C", "D"])
    # B and C look like one person enrolled twice; A was taken again and again for B
    person = person_map(students, (frozenset({"B", "C"}), frozenset({"A", "B"})))
    assert person["A"] == person["B"] == person["C"] == "A"
    assert person["D"] == "D"


def test_without_groups_every_student_is_their_own_person() -> None:
    students = np.array(["S2", "S1"])
    assert person_map(students, ()) == {"S1": "S1", "S2": "S2"}
