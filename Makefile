# tether — two commands do everything: `make demo` and `make test`.
SHELL := /bin/bash
MAKEFLAGS += --no-print-directory
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export KERAS_BACKEND ?= tensorflow
export TF_CPP_MIN_LOG_LEVEL ?= 3
export FLWR_TELEMETRY_ENABLED ?= 0
export FLWR_DISABLE_UPDATE_CHECK ?= 1

ENGINE_SOURCES := $(shell find device/runtime/src device/runtime/include device/runtime/tools device/runtime/CMakeLists.txt -type f 2>/dev/null)
# Debian packages the build and the ARM tests need: command -> package.
SYSTEM_TOOLS := cmake:cmake gcc:gcc aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu \
                arm-linux-gnueabihf-gcc:gcc-arm-linux-gnueabihf qemu-aarch64:qemu-user qemu-arm:qemu-user \
                clang:clang llvm-symbolizer:llvm /usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a:libclang-rt-14-dev \
                ld.lld:lld javac:default-jdk-headless aapt2:aapt 7z:p7zip-full zipalign:zipalign \
                apksigner:apksigner zip:zip unzip:unzip chromium:chromium \
                /usr/share/android-framework-res/framework-res.apk:android-framework-res

.PHONY: demo test setup sysdeps engine test-c test-c-asan test-c-tsan test-py-sanitizers test-arm test-fuzz test-types test-py clean

demo: setup
	$(VENV)/bin/tether demo

test: setup test-c test-c-asan test-c-tsan test-py-sanitizers test-arm test-fuzz test-types test-py

setup: sysdeps $(VENV)/.installed

sysdeps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || test -e $$cmd || missing="$$missing $$pkg"; \
	done; \
	missing=$$(echo $$missing | tr ' ' '\n' | sort -u | tr '\n' ' '); \
	if [ -n "$${missing// /}" ]; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "tether needs these system packages:$$missing"; \
	    echo "install them with: sudo apt-get install$$missing"; exit 1; \
	  fi; \
	fi

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Editable install; builds the C engine into device/ (setup.py runs CMake).
$(VENV)/.installed: $(VENV)/bin/python pyproject.toml setup.py $(ENGINE_SOURCES)
	$(PIP) install -q -e '.[dev]'
	touch $@

engine: setup

test-c: sysdeps
	cmake -S device/runtime -B device/runtime/build -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build device/runtime/build -j2
	ctest --test-dir device/runtime/build --output-on-failure

test-c-asan: sysdeps
	cmake -S device/runtime -B device/runtime/build-asan -DCMAKE_BUILD_TYPE=Debug -DTETHER_SANITIZE=ON >/dev/null
	cmake --build device/runtime/build-asan -j2
	ctest --test-dir device/runtime/build-asan --output-on-failure

# ThreadSanitizer over the C tests (the pool, concurrent invokes of one session).
test-c-tsan: sysdeps
	cmake -S device/runtime -B device/runtime/build-tsan -DCMAKE_BUILD_TYPE=Debug -DTETHER_TSAN=ON >/dev/null
	cmake --build device/runtime/build-tsan -j2
	ctest --test-dir device/runtime/build-tsan --output-on-failure

# The Python binding's thread and close-race stress against the ASan/UBSan and TSan builds
# (the sanitizer runtime preloaded into Python; no TensorFlow in that process).
test-py-sanitizers: setup test-c-asan test-c-tsan
	ASAN_OPTIONS=detect_leaks=0 TETHER_LIB=device/runtime/build-asan/libtether.so \
	  LD_PRELOAD=$$(gcc -print-file-name=libasan.so) $(PY) tests/device/sanitized_stress.py
	TSAN_OPTIONS=halt_on_error=1 TETHER_LIB=device/runtime/build-tsan/libtether.so \
	  LD_PRELOAD=$$(gcc -print-file-name=libtsan.so) $(PY) tests/device/sanitized_stress.py

test-arm: sysdeps
	bash device/runtime/scripts/test-arm.sh

# libFuzzer on the .tmodel loader under ASan/UBSan, bounded; findings go to tests/fuzz/regressions.
test-fuzz: sysdeps
	bash device/runtime/scripts/fuzz.sh 60

# The public Python API is type-checked.
test-types: setup
	$(PY) -m mypy --ignore-missing-imports tether cloud converter compression federated device/_engine.py device/_binding.py device/_trainer.py device/profile.py

test-py: setup
	$(PY) -m pytest -q

clean:
	rm -rf device/runtime/build device/runtime/build-* device/_libtether*.so device/tether-run device/tether-probe
