from __future__ import annotations

import pytest

import metalab
from metalab.experiment import canonical_json, run_id
from metalab.seeding import derive_seed


def test_grid_is_every_combination_last_axis_fastest():
    points = metalab.grid(a=[1, 2], b=["x", "y", "z"])
    assert len(points) == 6
    assert list(points)[:3] == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 1, "b": "z"}]
    assert points[4] == {"a": 2, "b": "y"} and points[-1] == {"a": 2, "b": "z"}
    assert list(points) == [points[i] for i in range(len(points))]


def test_grid_rejects_scalars_and_empty_axes():
    with pytest.raises(TypeError, match="axis 'a'"):
        metalab.grid(a=3)
    with pytest.raises(ValueError, match="no values"):
        metalab.grid(a=[])


def test_random_is_a_pure_function_of_its_seed():
    make = lambda seed: list(metalab.random(lr=metalab.loguniform(1e-4, 1e-1), layers=metalab.choice([1, 2, 3]),  # noqa: E731
                                            width=metalab.randint(8, 64), noise=metalab.normal(0, 1),
                                            drop=metalab.uniform(0, 0.5), act=["relu", "tanh"], count=20, seed=seed))
    first, again, other = make(7), make(7), make(8)
    assert first == again and first != other and len(first) == 20
    for point in first:
        assert 1e-4 <= point["lr"] <= 1e-1 and point["layers"] in (1, 2, 3) and 8 <= point["width"] <= 64
        assert point["act"] in ("relu", "tanh")


def test_manual_is_exactly_the_list():
    points = metalab.manual([{"lr": 0.1}, {"lr": 0.01, "warmup": 5}])
    assert list(points) == [{"lr": 0.1}, {"lr": 0.01, "warmup": 5}]


def test_seed_streams_depend_only_on_base_replicate_and_name():
    seeds = metalab.Seeds(123, 1)
    assert seeds.rng().random() == metalab.Seeds(123, 1).rng().random()
    assert seeds.rng("init").random() != seeds.rng("data").random()
    assert metalab.Seeds(123, 0).seed() != metalab.Seeds(123, 1).seed() != metalab.Seeds(124, 1).seed()
    assert derive_seed(123, 0) == derive_seed(123, 0, "default")


def test_seed_derivation_is_stable_across_releases():
    assert derive_seed(0, 0, "default") == int.from_bytes(
        __import__("hashlib").sha256(b"metalab-seed:0:0:default").digest()[:8], "big")


def test_numpy_generator_is_reproducible():
    import numpy as np
    a = metalab.Seeds(5, 2).numpy().random(3)
    b = metalab.Seeds(5, 2).numpy().random(3)
    assert np.array_equal(a, b)


def test_run_ids_are_deterministic_and_numpy_scalars_hash_like_python_numbers():
    import numpy as np
    key = "exp\x000.1"
    assert run_id(key, {"a": 1, "b": 0.5}, 1, 0) == run_id(key, {"b": 0.5, "a": 1}, 1, 0)
    assert run_id(key, {"a": np.int64(1), "b": np.float32(0.5)}, 1, 0) == run_id(key, {"a": 1, "b": 0.5}, 1, 0)
    assert run_id(key, {"a": 1}, 1, 0) != run_id(key, {"a": 1}, 1, 1) != run_id(key, {"a": 1}, 2, 1)
    assert canonical_json({"x": np.array([1, 2])}) == '{"x":[1,2]}'


def test_unrecordable_parameters_are_refused_clearly():
    with pytest.raises(TypeError, match="cannot be recorded"):
        canonical_json({"f": object()})


def op(params, seeds, capture):
    capture.metric("x", params["a"])


def test_experiment_ids_and_run_ids_do_not_depend_on_source_unless_asked(tmp_path):
    exp = metalab.Experiment(name="my exp", version=1, operation=metalab.operation(op),
                             params=metalab.grid(a=[1, 2]), seeds=metalab.seeds(base=3, replicates=2))
    assert exp.experiment_id == "my_exp-1" and len(exp) == 4
    specs = list(exp.runs())
    assert [s.replicate for s in specs] == [0, 1, 0, 1] and len({s.run_id for s in specs}) == 4
    hashed = metalab.Experiment(name="my exp", version=1, operation=metalab.operation(op),
                                params=metalab.grid(a=[1, 2]), seeds=metalab.seeds(base=3, replicates=2), hash_source=True)
    assert [s.run_id for s in hashed.runs()] != [s.run_id for s in specs]
