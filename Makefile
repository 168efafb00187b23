# Two commands from a fresh clone:  make demo  |  make test
# Everything else here is what those two need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean setup sanitize

setup: $(STAMP)

# python-lzo has no wheels: it compiles against liblzo2's headers.  tools/ensure-lzo
# installs them with apt when we are root, and otherwise stops with the exact command.
$(STAMP): pyproject.toml setup.py $(wildcard zramctl/*/*.c) bin/zramctl tools/ensure-lzo
	@sh tools/ensure-lzo
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q -e '.[test]' >.setup.log 2>&1 || { rm -rf $(VENV); echo "make: installing zramctl failed: $$({ grep -h -m1 'zramctl: building' .setup.log || grep -h -m1 -E 'fatal error|error:' .setup.log; } | sed 's/^ *//') (all of pip's output: .setup.log; the venv was removed)" >&2; exit 1; }
	@rm -f .setup.log
	@# An editable install compiles no bytecode (a wheel does): without it every command compiles
	@# its modules afresh where PYTHONDONTWRITEBYTECODE is set, doubling a status listing's time.
	@$(BIN)/python -m compileall -q zramctl >/dev/null
	@touch $(STAMP)

demo: $(STAMP)
	@PATH="$(CURDIR)/$(BIN):$$PATH" sh tools/demo

test: $(STAMP)
	@sh tools/ensure-test-tools
	@$(BIN)/ruff check zramctl tests benchmarks
	@$(BIN)/python -m pytest -p no:cacheprovider; rc=$$?; [ $$rc -eq 5 ] && { echo "pytest ran no tests" >&2; exit 1; }; exit $$rc

bench: $(STAMP)
	@$(BIN)/python benchmarks/engine.py
	@$(BIN)/python benchmarks/compressors.py
	@$(BIN)/python benchmarks/throughput.py

# The compiled compressors under AddressSanitizer and UBSan (tests/test_compressors.py runs it).
sanitize:
	@sh tools/sanitize $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))

clean:
	rm -rf $(VENV) build *.egg-info
