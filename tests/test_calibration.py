"""Choosing and judging distance thresholds (bench/calibration.py): the LFW protocol's arithmetic and its reader."""

from __future__ import annotations

import numpy as np
import pytest

from bench.calibration import accuracy_at, choose_threshold, kfold_verification, pair_distances, read_lfw_pairs, roc_auc


def test_threshold_choice_on_separable_data() -> None:
    rng = np.random.default_rng(0)
    same_d, diff_d = rng.uniform(0.2, 0.5, 200), rng.uniform(0.7, 1.1, 200)
    d = np.concatenate([same_d, diff_d])
    same = np.arange(400) < 200
    choice = choose_threshold(d, same)
    assert choice.accuracy == 1.0 and same_d.max() < choice.threshold < diff_d.min()
    assert accuracy_at(d, same, choice.threshold) == 1.0
    assert roc_auc(d, same) == 1.0 and roc_auc(d, ~same) == 0.0
    report = kfold_verification(d, same, np.arange(400) % 5)
    assert report.mean == 1.0 and len(report.thresholds) == 5
    noisy = choose_threshold([0.1, 0.4, 0.5, 0.9], [True, False, True, False])
    assert noisy.accuracy == 0.75


def test_read_lfw_pairs() -> None:
    text = "1\t1\nAda_L\t1\t2\nAda_L\t1\tBob_K\t3\n"
    pairs = read_lfw_pairs(text)
    assert [p.same for p in pairs] == [True, False]
    assert pairs[1].files() == ("Ada_L/Ada_L_0001.jpg", "Bob_K/Bob_K_0003.jpg")
    with pytest.raises(ValueError):
        read_lfw_pairs("2\t1\nAda_L\t1\t2\n")


def test_a_limited_read_takes_alike_from_every_fold_and_kind() -> None:
    lines = ["2\t3"]
    for fold in range(2):
        lines += [f"S{fold}{k}\t1\t2" for k in range(3)] + [f"A{fold}{k}\t1\tB{fold}{k}\t1" for k in range(3)]
    pairs = read_lfw_pairs("\n".join(lines), limit=4)
    assert [(p.fold, p.same, p.name_a) for p in pairs] == [
        (0, True, "S00"),
        (0, False, "A00"),
        (1, True, "S10"),
        (1, False, "A10"),
    ]
    assert len(read_lfw_pairs("\n".join(lines))) == 12


def test_pair_distances_are_euclidean_between_the_two_images() -> None:
    vectors = {"Ada_L/Ada_L_0001.jpg": np.array([0.0, 0.0]), "Ada_L/Ada_L_0002.jpg": np.array([3.0, 4.0])}
    [pair] = read_lfw_pairs("1\t1\nAda_L\t1\t2\nAda_L\t1\tAda_L\t2\n")[:1]
    assert pair_distances([pair], vectors.__getitem__).tolist() == [5.0]
