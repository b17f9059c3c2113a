# Roger: the two commands are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run test deps build lint unit e2e bench fixture clean

## Build and run a local server with the echo bot (installs system packages if missing).
run: deps
	$(CARGO) build -p roger-server -p roger-bot
	./scripts/run-dev.sh

## Everything CI runs.
test: deps lint build
	$(CARGO) test --workspace --no-fail-fast

deps:
	./scripts/install-deps.sh

build:
	$(CARGO) build --workspace --bins

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Benchmarks: prints the figures recorded in BENCHMARKS.md.
bench: deps
	$(CARGO) build --release --workspace --bins
	./target/release/roger-bench all

## Regenerate the speech fixture.
fixture:
	espeak-ng -s 150 -w /tmp/roger-speech.wav "Roger, this is alice. Radio check, one two three four five. Over."
	sox /tmp/roger-speech.wav -r 48000 -c 1 -b 16 tests/fixtures/speech.wav trim 0 3

clean:
	$(CARGO) clean
