# Thin wrapper: every target first makes sure the Debian packages are there (scripts/deps.sh).
BUILD ?= build
PREFIX ?= /usr/local
JOBS ?= $(shell nproc)
CONFIG ?= config/pipelines/default.yaml
CMAKE_FLAGS ?=

.PHONY: all deps build run test check install fuzz bench format clean

all: build

deps:
	@scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# default.yaml profiles every process (root needed for BPF) and serves the flame graph page.
run: build
	@mkdir -p $(BUILD)/data
	@echo "sonde: flame graph on http://localhost:7070/ (data under $(BUILD)/data; Ctrl-C stops)"
	SONDE_DATA_DIR=$(BUILD)/data $(BUILD)/bin/sonde --config $(CONFIG)

test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) $(CTEST_FLAGS)

# The same tests under AddressSanitizer + UndefinedBehaviorSanitizer.
check:
	@$(MAKE) --no-print-directory test BUILD=build-check CMAKE_FLAGS="-DSONDE_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug"

install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

fuzz: deps
	@cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DSONDE_FUZZ=ON -DSONDE_TESTS=OFF >/dev/null
	@cmake --build build-fuzz -j $(JOBS)

bench: build
	tests/bench/run.sh $(BUILD)

format:
	@git ls-files '*.c' '*.h' | xargs clang-format -i

clean:
	rm -rf build build-check build-fuzz
