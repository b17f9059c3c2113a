# Roger: the two commands are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run test deps ui ui-test build lint unit e2e bench fixture fuzz fuzz-ci clean \
	bindings package deb-debug icons cluster

TAURI := ui/node_modules/.bin/tauri

## Build the app, start a local server with the echo bot, and launch the app signed in.
run: deps ui
	$(CARGO) build --workspace --bins
	./scripts/run-dev.sh

## Everything CI runs.
test: deps ui ui-test lint build deb-debug
	$(CARGO) test --workspace --no-fail-fast
	$(MAKE) fuzz-ci

## The web front end (ui/dist, embedded in the app at compile time). A file target, so
## an unchanged front end does not make the app crate recompile.
UI_SOURCES := $(shell find ui/src ui/index.html ui/vite.config.ts ui/tsconfig.json ui/package.json -type f 2>/dev/null)
ui: ui/dist/index.html

ui/dist/index.html: ui/node_modules/.installed $(UI_SOURCES)
	cd ui && npm run build

# `npm install`, not `npm ci`: with this machine's npm settings the lock file omits other
# platforms' optional packages (esbuild, rollup, the Tauri CLI), which `npm ci` refuses.
ui/node_modules/.installed: ui/package.json ui/package-lock.json
	cd ui && npm install --no-audit --no-fund
	touch $@

## Front-end unit tests (vitest).
ui-test: ui/node_modules/.installed
	cd ui && npm test

## Regenerate ui/src/bindings.ts from the Rust types (a test fails when it is stale).
bindings: ui
	UPDATE_BINDINGS=1 $(CARGO) test -p roger-desktop --test bindings
	UPDATE_BINDINGS=1 $(CARGO) test -p roger-client --lib presentation

## A release .deb of the app: target/release/bundle/deb/.
package: deps ui
	$(TAURI) build --bundles deb

## A .deb of the debug build (what CI installs and launches).
deb-debug: ui
	# The whole workspace, as `make build` does: one feature set, so nothing rebuilds.
	$(CARGO) build --workspace --bins
	$(TAURI) bundle --debug --bundles deb

## App icons: icons/source.svg -> icons/source.png -> the whole set.
icons: ui/node_modules/.installed
	rsvg-convert -w 1024 -h 1024 icons/source.svg -o icons/source.png
	$(TAURI) icon icons/source.png -o icons
	rm -rf icons/android icons/ios

## A short fuzz run (CI): must not find a crash. New inputs go to a temporary dir.
fuzz-ci:
	FUZZ_KEEP_CORPUS=0 ./scripts/fuzz.sh 30

## Fuzz longer by hand (10 minutes per target); new inputs are added to fuzz/corpus.
fuzz:
	./scripts/fuzz.sh 600

deps:
	./scripts/install-deps.sh

build: ui
	$(CARGO) build --workspace --bins

lint: ui
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## A local cluster to try failover by hand: Redis and three nodes, and the echo bot.
cluster: deps
	$(CARGO) build --bins -p roger-server -p roger-bot
	./scripts/cluster.sh

## Benchmarks: prints the figures recorded in BENCHMARKS.md.
bench: deps ui
	$(CARGO) build --release --workspace --bins
	# roger-bench quality scores speech with wideband PESQ (ITU-T P.862.2).
	python3 -c 'import pesq, numpy' 2>/dev/null || python3 -m pip install --quiet pesq numpy
	./target/release/roger-bench all

## Regenerate the speech fixtures.
fixture:
	espeak-ng -s 150 -w /tmp/roger-speech.wav "Roger, this is alice. Radio check, one two three four five. Over."
	sox -D /tmp/roger-speech.wav -r 48000 -c 1 -b 16 tests/fixtures/speech.wav trim 0 3
	# One sentence in three voices, 5.5 s each (the clean-audio test, roger-bench quality).
	for v in en-us en-gb+f3 en-us+m3; do \
	  espeak-ng -v $$v -s 170 -w /tmp/roger-voice.wav "Roger, this is the north gate. Hold your position until the second truck is through. Over." && \
	  sox -D /tmp/roger-voice.wav -r 48000 -c 1 -b 16 tests/fixtures/voices/$$(echo $$v | tr + -).wav trim 0 5.5; \
	done

clean:
	$(CARGO) clean
