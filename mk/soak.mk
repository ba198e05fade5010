# Soak (issue: reliability): the local cluster for 10 minutes under a flood of malformed
# messages, RSS of every process sampled; writes bench/soak.json. A benchmark, not a test.
#   make soak                     10 minutes on Breakout
#   make soak SOAK_ARGS='--seconds 120 --env CartPole-v1'

SOAK_ARGS ?=

.PHONY: soak

soak: setup
	$(BIN)/python -m bench.soak $(SOAK_ARGS)
