# Benchmarks (docs/benchmarks.md): `make bench` measures, in one run on this machine, the
# system (learner + 2 workers + evaluator on Breakout), a Hogwild baseline before and after it,
# and the learner's ceiling under 1..64 synthetic senders; it writes bench/results.json and
# bench/results.md (about five minutes). Not part of `make test`: speed is proven here, never
# by a timed test.
#   make bench                          the full run (plus the classic num_envs 1 system)
#   make bench-quick                    short windows (about a minute)
#   make bench BENCH_ARGS='--only ceiling --senders 1,8,64'

BENCH_ARGS ?= --also-num-envs 1

.PHONY: bench bench-quick

bench: setup
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-quick: setup
	$(BIN)/python -m bench.run --quick $(BENCH_ARGS)

# Learning per frame (docs/learning.md): Breakout from scratch with the defaults, training seeds
# one after another, each mark's model scored over 30 full games afterwards; writes
# bench/learning.json and bench/learning.md. Defaults: seeds 1,2, marks 2.5M, 5M, 10M (about
# an hour per seed here). Training resumes from bench/learning/runs/ when called again.
#   make bench-learning LEARNING_ARGS='--seeds 1 --frames 5000000'
#   make bench-learning LEARNING_ARGS='--name lr1e-4 --set lr=1e-4'   a variant
#   make bench-learning LEARNING_ARGS='--quick'                       CartPole-v1 + Acrobot-v1
LEARNING_ARGS ?=

.PHONY: bench-learning

bench-learning: setup
	$(BIN)/python -m bench.learning $(LEARNING_ARGS)
