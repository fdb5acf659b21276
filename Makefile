# confide: every target installs what it needs (.venv, pinned by constraints.txt).
.PHONY: demo test lint bench clean

# The seed tutorial end to end (both languages), then the volumes and CAS tour.
demo:
	@scripts/bootstrap.sh dev
	.venv/bin/confide demo --lang both
	@scripts/demo.sh

# The PostgreSQL tests run on $CONFIDE_TEST_PG, or else on a throwaway cluster made for
# the run (scripts/with-postgres.sh), so that `make test` always tests that backend too.
test: lint
	scripts/with-postgres.sh .venv/bin/python -m pytest -n 2 -q

lint:
	@scripts/bootstrap.sh dev
	.venv/bin/ruff check src tests bench scripts
	.venv/bin/ruff format --check src tests bench scripts
	.venv/bin/mypy --strict

bench:
	@scripts/bootstrap.sh dev,bench
	@bench/install-tools.sh
	.venv/bin/python bench/volume_bench.py
	.venv/bin/python bench/attestation_bench.py
	.venv/bin/python bench/sms_bench.py
	.venv/bin/python bench/cli_bench.py
	-.venv/bin/python bench/hub_bench.py
	-.venv/bin/python bench/storage_bench.py --rounds 3
	-.venv/bin/python bench/task_bench.py
	-.venv/bin/python bench/dapp_bench.py

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache
