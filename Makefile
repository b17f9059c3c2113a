# Roger: the two commands are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run test deps build lint unit e2e bench fixture fuzz fuzz-ci clean

## Build and run a local server with the echo bot (installs system packages if missing).
run: deps
	$(CARGO) build -p roger-server -p roger-bot
	./scripts/run-dev.sh

## Everything CI runs.
test: deps lint build
	$(CARGO) test --workspace --no-fail-fast
	$(MAKE) fuzz-ci

## A short fuzz run (CI): must not find a crash. New inputs go to a temporary dir.
fuzz-ci:
	FUZZ_KEEP_CORPUS=0 ./scripts/fuzz.sh 30

## Fuzz longer by hand (10 minutes per target); new inputs are added to fuzz/corpus.
fuzz:
	./scripts/fuzz.sh 600

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
