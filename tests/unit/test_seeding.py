"""Seeds: every worker its own streams, evaluation games never replay training games."""

from common.seeding import MAX_ENVS_PER_WORKER, TRAINING_SEEDS, evaluation_seed, worker_seed


def test_replicas_with_one_config_draw_their_own_seeds_and_a_restart_draws_the_same():
    seeds = {worker_seed(0, f"worker-{i}") for i in range(64)}
    assert len(seeds) == 64
    assert worker_seed(0, "worker-3") == worker_seed(0, "worker-3")
    assert worker_seed(0, "worker-3") != worker_seed(1, "worker-3")


def test_training_and_evaluation_seeds_never_meet():
    for base in (0, 1, 7, 2**40):
        for name in ("worker-0", "host-123", ""):
            seed = worker_seed(base, name)
            assert seed >= 0 and seed + MAX_ENVS_PER_WORKER <= TRAINING_SEEDS
        games = [evaluation_seed(base, game) for game in range(100)]
        assert all(TRAINING_SEEDS <= seed < 2**32 for seed in games)
        assert len(set(games)) == 100


def test_evaluation_seed_bases_give_disjoint_game_sets():
    first = {evaluation_seed(1, game) for game in range(30)}
    second = {evaluation_seed(2, game) for game in range(30)}
    assert not first & second
