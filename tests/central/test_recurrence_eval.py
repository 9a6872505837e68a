"""`revisit eval recurrence`: the scenario's rules without models, then a small scenario's figures as a regression
test on the real models and photos (against eval_recurrence_baseline.json)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from revisit.central.recurrence_eval import (
    FRAMES,
    HEAD_OFFICE_ZONE,
    MAX_OBS_GAP_MIN,
    build_scenario,
    choose_identities,
    true_days,
)
from revisit.cli import main
from revisit.shared.dataset import Record

BASELINE = Path(__file__).with_name("eval_recurrence_baseline.json")
TOLERANCE = 0.02  # onnxruntime versions differ in the last bits; a few decisions may flip


def _records(counts: dict[str, int]) -> list[Record]:
    return [
        Record(Path(f"/x/{name}_{i}.jpg"), f"photos/{name}_{i}.jpg", (name,), "photo")
        for name, n in counts.items()
        for i in range(n)
    ]


def test_scenario_rules():
    counts = {f"r{i:02d}": 2 + i % 5 for i in range(30)} | {f"o{i:02d}": 1 for i in range(30)}
    groups = choose_identities(_records(counts), None)
    sc = build_scenario(groups, days=28, n_sites=3, seed=0)
    assert sc.regulars == 30 and sc.one_time == 30 and len(sc.sites) == 3
    assert len(set(sc.sites.values())) == 3 and sc.head_office_zone == HEAD_OFFICE_ZONE
    visits = Counter(v.identity for v in sc.visits)
    assert all(visits[name] == min(n, 28) for name, n in counts.items())  # one photo per visit
    for identity in visits:  # regulars come on distinct days (of their visits' own zones)
        days = [
            datetime.fromtimestamp(v.start_ts, ZoneInfo(sc.sites[v.site])).date()
            for v in sc.visits
            if v.identity == identity
        ]
        assert len(days) == len(set(days))
    photos_per_visit = defaultdict(set)
    by_visit = defaultdict(list)
    for o in sc.observations:
        photos_per_visit[o.photo.relpath].add(o.identity)
        by_visit[(o.identity, o.photo.relpath)].append(o)
        assert len(o.variants) == FRAMES
    assert all(len(ids) == 1 for ids in photos_per_visit.values())
    assert {len(obs) for obs in by_visit.values()} == {1, 2, 3}  # 1-3 observations (cameras, tracks) per visit
    for obs in by_visit.values():  # closer than the visit gap: the service sees one visit
        times = sorted(o.start_ts for o in obs)
        assert all(b - a <= MAX_OBS_GAP_MIN * 60 for a, b in zip(times, times[1:], strict=False))
        assert len({o.variants for o in obs}) == len(obs)  # each track its own degraded frames
    past_midnight = 0
    for v in sc.visits:  # local opening hours, some late evenings running past midnight
        local = datetime.fromtimestamp(v.start_ts, ZoneInfo(sc.sites[v.site]))
        assert 9 <= local.hour <= 23
        last = max(
            o.start_ts for o in sc.observations if o.identity == v.identity and abs(o.start_ts - v.start_ts) < 7200
        )
        past_midnight += datetime.fromtimestamp(last, ZoneInfo(sc.sites[v.site])).date() > local.date()
    assert past_midnight > 0
    times = [o.start_ts for o in sc.observations]
    assert times == sorted(times)  # fed in time order
    again = build_scenario(groups, days=28, n_sites=3, seed=0)
    assert [(o.identity, o.start_ts) for o in again.observations] == [(o.identity, o.start_ts) for o in sc.observations]
    other = build_scenario(groups, days=28, n_sites=3, seed=1)
    assert [o.start_ts for o in other.observations] != times
    # all sites: at most one day per head-office day; per site: one entry per visit
    all_days = true_days(sc, None)
    assert all(len(d) == len(set(d)) for d in all_days.values())
    assert sum(len(d) for name in sc.sites for d in true_days(sc, name).values()) == len(sc.visits)


@pytest.mark.models
@pytest.mark.facedata
@pytest.mark.slow
def test_eval_recurrence_does_not_regress(capsys, models_dir, facedata, tmp_path):
    baseline = json.loads(BASELINE.read_text())
    argv = baseline["command"].split("revisit ", 1)[1].split()
    argv[argv.index("--data") + 1] = str(facedata)
    argv += ["--models", str(models_dir), "--cache", str(tmp_path / "cache")]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in (
        "degrade",
        "identities",
        "regulars",
        "visits",
        "observations_planned",
        "threshold",
        "found_min_quality",
        "low_quality_threshold",
        "mean_shots",
        "loyal_lists",
    ):
        assert result[key] == baseline[key], key
    assert abs(result["observations"] - baseline["observations"]) <= 2
    assert result["loyal_precision"] >= baseline["loyal_precision"] - TOLERANCE
    assert result["loyal_recall"] >= baseline["loyal_recall"] - TOLERANCE
    assert result["visit_count_mae"] <= baseline["visit_count_mae"] + 0.05
    assert result["visitors_per_identity"] <= baseline["visitors_per_identity"] + 0.05
    assert result["false_merge_rate"] <= baseline["false_merge_rate"] + 0.01
    assert result["bcubed_f1"] >= baseline["bcubed_f1"] - TOLERANCE
    assert result["rejected"] == {}
