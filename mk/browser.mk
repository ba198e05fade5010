# Headless Chromium for the browser test of the evaluator's page (tests/integration/
# test_evaluator_page.py, marked `browser`): `make test` installs Debian's chromium first, as
# test-compose installs its Docker engine (deploy/scripts/install-chromium.sh, idempotent).
# Under `make test` a browser that cannot be installed fails the run (A3C_REQUIRE_BROWSER=1);
# a bare `pytest` without chromium skips the test and says why.
# Its screenshot of the page is kept in build/test-artifacts/ (A3C_TEST_ARTIFACTS to move it).
#   make browser                         install it alone
#   make test ARGS='-m browser'          the browser test alone

.PHONY: browser

browser:
	deploy/scripts/install-chromium.sh

test test-fast: browser
test test-fast: export A3C_REQUIRE_BROWSER = 1
