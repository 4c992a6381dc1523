# syncd — the two commands that matter are `make run` and `make test`.
# Every install step lives here, so a fresh machine needs nothing but Python 3.11+, pip and npm.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

NODE_STAMP := node_modules/.installed

.PHONY: run test lint format clean install install-systemd install-systemd-user bytecode

# The venv is rebuilt only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The editable install writes no bytecode for syncd, and where PYTHONDONTWRITEBYTECODE is set
# (this machine's environment sets it) Python never does: every `syncd` process compiled the
# package again, ~80 ms of its start-up. The suite starts hundreds of them and the bench times
# them; a user's `pip install` compiles it once. Files already compiled are only checked.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q syncd

# The embedded default: ./sync/local <-> the local-folder remote ./sync/remote, SQLite state
# in ./sync/state.db. Ctrl-C stops the daemon cleanly.
run: $(STAMP) bytecode
	mkdir -p sync/local sync/remote
	cd "$(CURDIR)" && PWD="$(CURDIR)" $(BIN)/syncd run -c config/syncd.yaml

lint: $(STAMP)
	$(BIN)/ruff check syncd tests bench
	$(BIN)/ruff format --check syncd tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format syncd tests bench
	$(BIN)/ruff check --fix syncd tests bench

# Azurite (the Azure Blob emulator) comes from npm into the project's own node_modules.
$(NODE_STAMP): package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

# Emulators (moto, fake-gcs-server, Azurite) are started by the test fixtures on free loopback
# ports and stopped by pid, by each of the two workers for itself. The suite mostly waits
# (daemons settling, polls, subprocesses starting): two workers halve its time on two cores.
test: $(STAMP) $(NODE_STAMP) lint bytecode
	$(BIN)/pytest -q -n 2

# As root: the system unit, the inotify sysctl drop-in, and syncd itself in a venv of its own
# (/opt/syncd; a distribution's Python refuses a system-wide pip install, PEP 668), linked
# into /usr/local/bin, where the unit's PATH finds it.
SYSTEM_VENV := /opt/syncd
install-systemd:
	test -x $(SYSTEM_VENV)/bin/python || $(PYTHON) -m venv $(SYSTEM_VENV)
	$(SYSTEM_VENV)/bin/pip install --quiet --upgrade .
	ln -sf $(SYSTEM_VENV)/bin/syncd /usr/local/bin/syncd
	install -D -m 0644 systemd/syncd.service /etc/systemd/system/syncd.service
	install -D -m 0644 systemd/99-syncd-inotify.conf /etc/sysctl.d/99-syncd-inotify.conf
	id -u syncd >/dev/null 2>&1 || useradd --system --home-dir /var/lib/syncd --shell /usr/sbin/nologin syncd
	install -d -m 0755 /etc/syncd
	test -f /etc/syncd/syncd.yaml || install -o root -g syncd -m 0640 config/syncd.system.yaml /etc/syncd/syncd.yaml
# The installed config's pair: its two folders, the service user's (left as they are if there).
	for dir in /var/lib/syncd /var/lib/syncd/local /var/lib/syncd/remote; do \
		test -d $$dir || install -d -o syncd -g syncd -m 0750 $$dir; done
	sysctl --system >/dev/null
	systemctl daemon-reload
	@echo "edit /etc/syncd/syncd.yaml, give its pair roots in ReadWritePaths= of a drop-in (systemctl edit syncd), then: systemctl enable --now syncd"

# As yourself: the user unit, with syncd in a venv of your own, linked into ~/.local/bin.
USER_VENV := $(HOME)/.local/share/syncd/venv
install-systemd-user:
	test -x "$(USER_VENV)/bin/python" || $(PYTHON) -m venv "$(USER_VENV)"
	"$(USER_VENV)/bin/pip" install --quiet --upgrade .
	install -d "$(HOME)/.local/bin"
	ln -sf "$(USER_VENV)/bin/syncd" "$(HOME)/.local/bin/syncd"
	install -D -m 0644 systemd/syncd-user.service $(HOME)/.config/systemd/user/syncd.service
	systemctl --user daemon-reload
	@echo "write ~/.config/syncd/syncd.yaml, then: systemctl --user enable --now syncd"

# Build and tool caches only: ./sync holds the files `make run` syncs (and their trash and
# state), which are the user's.
clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache

# `make bench`: syncd side by side with rclone, the AWS CLI, s3cmd, a raw boto3 loop and rsync on
# the same emulators, with ratios (bench/README.md says how to read it). BENCH_SCALE=0.05 for a
# quick run. Peers go into bench/.tools/venv, never into .venv (the AWS CLI pins its own
# botocore); rsync comes from Debian. A peer that cannot be installed shows as unavailable.
BENCH_TOOLS := bench/.tools
BENCH_STAMP := $(BENCH_TOOLS)/.installed

.PHONY: bench bench-tools bench-profile bench-clean

$(BENCH_STAMP): bench/tools-requirements.txt bench/install-tools.sh
	sh bench/install-tools.sh $(BENCH_TOOLS) $(PYTHON) $(BENCH_STAMP)

bench-tools: $(BENCH_STAMP)

bench: $(STAMP) $(NODE_STAMP) $(BENCH_STAMP) bytecode
	$(BIN)/python -m bench

# py-spy on one `syncd once` of scenario 1's tree; PROFILE_ARGS="--distinct-sizes", "--remote file", ...
bench-profile: $(STAMP) $(BENCH_STAMP)
	$(BIN)/python -m bench.profiling $(PROFILE_ARGS)

bench-clean:
	rm -rf $(BENCH_TOOLS)
