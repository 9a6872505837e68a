import numpy as np
import pytest

from revisit.shared.assign import OnlineClusterer, Prototype, decide


@pytest.mark.parametrize(
    ("candidates", "threshold", "forbidden", "expected"),
    [
        ([], 0.4, (), None),
        ([(1, 0.3)], 0.4, (), None),
        ([(1, 0.5)], 0.4, (), 1),
        ([(1, 0.5), (2, 0.7)], 0.4, (), 2),
        ([(1, 0.5), (2, 0.7)], 0.4, (2,), 1),
        ([(1, 0.5), (2, 0.7)], 0.4, (1, 2), None),
        ([(1, 0.4)], 0.4, (), 1),
    ],
)
def test_decide_table(candidates, threshold, forbidden, expected):
    assert decide(candidates, threshold, forbidden)[0] == expected


def _unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_prototype_is_weighted_mean_direction():
    p = Prototype.of(_unit([1, 0]), quality=1.0)
    p.add(_unit([0, 1]), quality=0.0)
    assert p.vector[0] > p.vector[1] > 0
    assert np.linalg.norm(p.vector) == pytest.approx(1)
    p.remove(_unit([0, 1]), quality=0.0)
    np.testing.assert_allclose(p.vector, [1, 0], atol=1e-6)


def test_clusterer_groups_noisy_people_and_honours_cannot_link():
    rng = np.random.default_rng(0)
    centres = [_unit(rng.normal(size=64)) for _ in range(5)]
    clusterer = OnlineClusterer(threshold=0.5)
    labels = {}
    for i in range(50):
        person = i % 5
        vec = _unit(centres[person] + rng.normal(scale=0.05, size=64))
        labels.setdefault(person, set()).add(clusterer.add(vec))
    assert len(clusterer) == 5 and all(len(v) == 1 for v in labels.values())
    # Same person, but declared different (seen in the same frame): a new cluster.
    forbidden = next(iter(labels[0]))
    assert clusterer.add(centres[0], cannot_link=[forbidden]) == 5
