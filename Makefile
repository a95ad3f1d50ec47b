# Makefile - set-up, build and test entry points of pyparallel.
#
#   make test        set up everything, then run every test suite (what CI runs)
#   make test-314    the pytest suite on CPython 3.14t and 3.14 (not in `make test`)
#   make serve       set up .venv-ft, then run the HTTP server on port $(PORT)
#   make fuzz        libFuzzer on every fuzz/fuzz_*.c, $(FUZZ_SECONDS) s each
#   make bench       every benchmark against its peers (bench-quick: ~2 min)
#   make examples-c  the C examples against the engine alone
#   make dist        the sdist and a wheel per interpreter into dist/
#   make format      clang-format the C sources, ruff the Python ones
#                    (format-check: only report, and run ruff's lint checks)
#   make typecheck   mypy over the Python package, stubtest in both venvs
#   make clean       build artefacts (distclean: the venvs too)
#
# Set-up happens through file targets, so a second run does none of it:
# Debian packages (tools/setup-apt.sh, only what is missing), the interpreters
# (PYTHON_FT / PYTHON_GIL if given, else python3.13t/3.14t and python3.13/3.14
# on PATH, else built into ~/.cache/pyparallel by tools/build-python.sh), the
# venvs .venv-ft and .venv-gil with tools/requirements-dev.txt and the web
# frameworks and drivers of the tests (tests/requirements-apps.txt, and
# tests/requirements-gil.txt for .venv-gil only), and an
# editable install of pyparallel that is redone when a C source, header,
# setup.py or pyproject.toml changes.
#
# Sources are found by glob, so files added later are built without edits
# here. The C tests and fuzz targets are linked with every engine and HTTP
# parser source, built with clang under ASan+UBSan, TSan, or libFuzzer.

SHELL := /bin/bash
.DEFAULT_GOAL := test
.DELETE_ON_ERROR:
.SUFFIXES:
# Objects are made by chained pattern rules; keep them for incremental builds.
.SECONDARY:

PYTHON_FT ?=
PYTHON_GIL ?=
PYTHON_FT314 ?=
PYTHON_GIL314 ?=
SKIP_APT ?=
PORT ?= 8080
FUZZ_SECONDS ?= 600
FUZZ_QUICK_SECONDS ?= 20
PYTEST_TIMEOUT ?= 120
PYTEST_ARGS ?=
BENCH_ARGS ?=
SAN_CC ?= clang

BUILD := build
VENV_FT := .venv-ft
VENV_GIL := .venv-gil
NPROC := $(shell nproc 2>/dev/null || echo 2)

# ---- sources ------------------------------------------------------------

ENGINE_SRC := $(sort $(wildcard src/common/*.c src/engine/*.c src/http/*.c \
                                src/websocket/*.c))
BINDING_SRC := $(sort $(wildcard src/binding/*.c src/binding/*/*.c))
C_HEADERS := $(sort $(wildcard include/*.h src/*/*.h src/binding/*/*.h))
C_TESTS := $(sort $(wildcard tests/c/test_*.c))
C_TEST_HELPERS := $(filter-out $(C_TESTS),$(sort $(wildcard tests/c/*.c)))
FUZZ_SRC := $(sort $(wildcard fuzz/fuzz_*.c))
EXAMPLES_C := $(sort $(wildcard examples/c/*.c))
FORMAT_FILES := $(sort $(wildcard include/*.h src/*/*.[ch] src/binding/*/*.[ch] \
                                  tests/c/*.[ch] \
                                  fuzz/*.[ch] examples/c/*.[ch]))

C_STD := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror
C_INCLUDES := -Iinclude -Isrc/common -Isrc/engine -Isrc/http -Isrc/websocket
C_LIBS := -luring -lpthread -lz -lcrypto

ASAN_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
              -fno-sanitize-recover=undefined
TSAN_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=thread
# Engine objects get coverage instrumentation; only the link adds main().
FUZZ_FLAGS := -O1 -g -fno-omit-frame-pointer \
              -fsanitize=fuzzer-no-link,address,undefined \
              -fno-sanitize-recover=undefined
RELEASE_FLAGS := -O2 -g

# Sanitizer options for the C tests and fuzzers, unless the caller set them.
ASAN_OPTIONS ?= detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1
UBSAN_OPTIONS ?= print_stacktrace=1:halt_on_error=1
TSAN_OPTIONS ?= halt_on_error=1:second_deadlock_stack=1
export ASAN_OPTIONS UBSAN_OPTIONS TSAN_OPTIONS

# ---- C builds: one object tree per flavour ------------------------------
#
# $(call c_flavour,NAME,CC,FLAGS) defines build/NAME/obj/%.o from %.c with
# header dependencies (-MMD), so a changed header rebuilds what includes it.

define c_flavour
$(BUILD)/$(1)/obj/%.o: %.c
	@mkdir -p $$(@D)
	$(2) $(C_STD) $(C_INCLUDES) $(3) -MMD -MP -c $$< -o $$@
$(1)_ENGINE_OBJ := $(ENGINE_SRC:%.c=$(BUILD)/$(1)/obj/%.o)
endef

$(eval $(call c_flavour,asan,$(SAN_CC),$(ASAN_FLAGS)))
$(eval $(call c_flavour,tsan,$(SAN_CC),$(TSAN_FLAGS)))
$(eval $(call c_flavour,fuzz,$(SAN_CC),$(FUZZ_FLAGS)))
$(eval $(call c_flavour,release,$(CC),$(RELEASE_FLAGS)))

ASAN_TESTS := $(C_TESTS:tests/c/%.c=$(BUILD)/asan/tests/%)
TSAN_TESTS := $(C_TESTS:tests/c/%.c=$(BUILD)/tsan/tests/%)
FUZZERS := $(FUZZ_SRC:fuzz/%.c=$(BUILD)/fuzz/bin/%)
EXAMPLES := $(EXAMPLES_C:examples/c/%.c=$(BUILD)/examples/%)

$(BUILD)/asan/tests/%: $(BUILD)/asan/obj/tests/c/%.o $(asan_ENGINE_OBJ) \
                       $(C_TEST_HELPERS:%.c=$(BUILD)/asan/obj/%.o)
	@mkdir -p $(@D)
	$(SAN_CC) $(ASAN_FLAGS) $^ $(C_LIBS) -o $@

$(BUILD)/tsan/tests/%: $(BUILD)/tsan/obj/tests/c/%.o $(tsan_ENGINE_OBJ) \
                       $(C_TEST_HELPERS:%.c=$(BUILD)/tsan/obj/%.o)
	@mkdir -p $(@D)
	$(SAN_CC) $(TSAN_FLAGS) $^ $(C_LIBS) -o $@

$(BUILD)/fuzz/bin/%: $(BUILD)/fuzz/obj/fuzz/%.o $(fuzz_ENGINE_OBJ)
	@mkdir -p $(@D)
	$(SAN_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer $^ $(C_LIBS) -o $@

$(BUILD)/examples/%: $(BUILD)/release/obj/examples/c/%.o $(release_ENGINE_OBJ)
	@mkdir -p $(@D)
	$(CC) $(RELEASE_FLAGS) $^ $(C_LIBS) -o $@

ALL_OBJ := $(foreach f,asan tsan fuzz release,$($(f)_ENGINE_OBJ)) \
           $(foreach f,asan tsan,$(C_TESTS:%.c=$(BUILD)/$(f)/obj/%.o) \
                                 $(C_TEST_HELPERS:%.c=$(BUILD)/$(f)/obj/%.o)) \
           $(FUZZ_SRC:%.c=$(BUILD)/fuzz/obj/%.o) \
           $(EXAMPLES_C:%.c=$(BUILD)/release/obj/%.o)
-include $(ALL_OBJ:.o=.d)

# ---- set-up: packages, interpreters, venvs, editable install ------------

APT_STAMP := $(BUILD)/stamps/apt

$(APT_STAMP): tools/setup-apt.sh
	@mkdir -p $(@D)
	@if [ -z "$(SKIP_APT)" ]; then tools/setup-apt.sh; fi
	@touch $@

# $(call venv_rules,DIR,FLAVOUR,PYTHON[,VERSION[,EXTRA]]) - the venv, its PyPI
# packages, and pyparallel installed editable (rebuilt when the extension's
# inputs change). VERSION pins the interpreter's (find-python.sh); EXTRA is a
# requirements file of packages that ship wheels for that build only.
define venv_rules
$(1)/pyvenv.cfg: | $(APT_STAMP)
	@python=$$$$(tools/find-python.sh $(2) "$(3)" $(4)) && \
	  echo "venv $(1): $$$$python" && \
	  "$$$$python" -m venv --clear $(1)

$(1)/.deps-stamp: $(1)/pyvenv.cfg tools/requirements-dev.txt tests/requirements-apps.txt $(5)
	$(1)/bin/python -m pip install -q -r tools/requirements-dev.txt -r tests/requirements-apps.txt \
	  $(if $(5),-r $(5))
	@touch $$@

$(1)/.pyparallel-stamp: $(1)/.deps-stamp pyproject.toml setup.py \
                        $(ENGINE_SRC) $(BINDING_SRC) $(C_HEADERS)
	$(1)/bin/python -m pip install -q --no-build-isolation -e .
	@touch $$@
endef

$(eval $(call venv_rules,$(VENV_FT),ft,$(PYTHON_FT)))
$(eval $(call venv_rules,$(VENV_GIL),gil,$(PYTHON_GIL),,tests/requirements-gil.txt))

.PHONY: setup setup-ft setup-gil
setup-ft: $(VENV_FT)/.pyparallel-stamp
setup-gil: $(VENV_GIL)/.pyparallel-stamp
setup: setup-ft setup-gil

# ---- tests --------------------------------------------------------------
#
# `make test` sets up, then tools/test.sh runs each step below as a make
# target of its own (so one failure does not hide the rest), and prints a
# summary; it fails when any step failed. Every step can also be run alone.

TEST_STEPS := format-check typecheck test-c-asan test-c-tsan test-fuzz-quick \
              test-py-ft-uring test-py-ft-epoll \
              test-py-gil-uring test-py-gil-epoll test-py-gil-interp \
              test-py-gil-asan dist-check
# The C examples are documentation: build them (with gcc) so they cannot rot.
ifneq ($(EXAMPLES_C),)
TEST_STEPS += examples-c
endif

.PHONY: test $(TEST_STEPS) check-c-tests check-fuzzers
# The editable installs are made by the pytest steps themselves, so a binding
# that does not compile fails those steps without hiding the C results.
test: $(VENV_FT)/.deps-stamp $(VENV_GIL)/.deps-stamp
	@case "$$MAKEFLAGS" in *jobserver*) jobs= ;; *) jobs=-j$(NPROC) ;; esac; \
	  tools/test.sh "$(MAKE)" $$jobs -- $(TEST_STEPS)

check-c-tests:
	@if [ -z "$(C_TESTS)" ]; then \
	  echo "no C tests: tests/c/test_*.c matched nothing" >&2; exit 1; fi
	@if [ ! -f tests/c/run-tests.sh ]; then \
	  echo "tests/c/run-tests.sh is missing" >&2; exit 1; fi

check-fuzzers:
	@if [ -z "$(FUZZ_SRC)" ]; then \
	  echo "no fuzz targets: fuzz/fuzz_*.c matched nothing" >&2; exit 1; fi

# Every test runs with two workers.
test-c-asan test-c-tsan test-fuzz-quick fuzz: export PYPARALLEL_WORKERS := 2

test-c-asan: check-c-tests $(ASAN_TESTS)
	bash tests/c/run-tests.sh $(ASAN_TESTS)

test-c-tsan: check-c-tests $(TSAN_TESTS)
	bash tests/c/run-tests.sh $(TSAN_TESTS)

test-fuzz-quick: check-fuzzers $(FUZZERS)
	tools/fuzz.sh $(FUZZ_QUICK_SECONDS) $(FUZZERS)

# $(call pytest_rule,NAME,VENV,IO,MODE) - MODE "default": PYPARALLEL_MODE unset.
define pytest_rule
test-py-$(1): $(2)/.pyparallel-stamp
	@tools/run-pytest.sh $(2) $(3) $(4) --timeout=$(PYTEST_TIMEOUT) \
	  $(PYTEST_ARGS)
endef

$(eval $(call pytest_rule,ft-uring,$(VENV_FT),uring,default))
$(eval $(call pytest_rule,ft-epoll,$(VENV_FT),epoll,default))
$(eval $(call pytest_rule,gil-uring,$(VENV_GIL),uring,gil))
$(eval $(call pytest_rule,gil-epoll,$(VENV_GIL),epoll,gil))
$(eval $(call pytest_rule,gil-interp,$(VENV_GIL),uring,interpreters))

# The suite in mode interpreters once more, with the extension built under
# ASan+UBSan (gcc, as the interpreter was) beside a copy of the package: the
# binding's memory errors (SharedBuffer and Channel lifetimes across
# interpreters, transports, work) show up there. CPython is not
# instrumented, so the sanitizers' runtime is preloaded, and PYTHONMALLOC
# makes objects plain malloc blocks that ASan watches. Leak checking is off:
# the interpreter keeps memory at exit by design (the tests count mappings).
ASAN_EXT := $(BUILD)/asan-ext
PY_ASAN_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
                 -fno-sanitize-recover=undefined

$(ASAN_EXT)/.stamp: $(VENV_GIL)/.deps-stamp setup.py $(ENGINE_SRC) \
                    $(BINDING_SRC) $(C_HEADERS) \
                    $(shell find python/pyparallel -name '*.py' 2>/dev/null)
	rm -rf $(ASAN_EXT)
	mkdir -p $(ASAN_EXT)/lib
	cp -r python/pyparallel $(ASAN_EXT)/lib/
	find $(ASAN_EXT)/lib \( -name '*.so' -o -name __pycache__ \) -prune \
	  -exec rm -rf {} +
	CC=gcc CFLAGS="$(PY_ASAN_FLAGS)" LDFLAGS="-fsanitize=address,undefined" \
	  $(VENV_GIL)/bin/python setup.py -q build_ext \
	  --build-lib $(ASAN_EXT)/lib --build-temp $(ASAN_EXT)/tmp
	@touch $@

test-py-gil-asan: export ASAN_OPTIONS := detect_leaks=0:strict_string_checks=1
test-py-gil-asan: export PYTHONMALLOC := malloc
test-py-gil-asan: export PYTHONPATH := $(abspath $(ASAN_EXT)/lib)
test-py-gil-asan: export PYPARALLEL_SANITIZED := 1
test-py-gil-asan: $(ASAN_EXT)/.stamp
	@LD_PRELOAD="$$(gcc -print-file-name=libasan.so)" $(VENV_GIL)/bin/python -c \
	  'import os, pyparallel._core as c; assert c.__file__.startswith(os.environ["PYTHONPATH"]), c.__file__'
	@LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	  tools/run-pytest.sh $(VENV_GIL) uring interpreters \
	  --timeout=$$(($(PYTEST_TIMEOUT) * 3)) $(PYTEST_ARGS)

# ---- CPython 3.14 ---------------------------------------------------------
#
# `make test-314`: the pytest suite on 3.14t (.venv-ft314) and 3.14
# (.venv-gil314, modes interpreters and gil), io_uring only, summarised like
# `make test`. Outside `make test` for CI's time. The interpreters come from
# PYTHON_FT314 / PYTHON_GIL314, python3.14t / python3.14 on PATH, or
# tools/build-python.sh (whose fallback to Debian's binary packages needs
# patchelf). Each venv's extension is its own _core.cpython-314*.so beside
# the 3.13 ones in python/pyparallel.
VENV_FT314 := .venv-ft314
VENV_GIL314 := .venv-gil314
PY314_APT_STAMP := $(BUILD)/stamps/py314-apt
TEST_314_STEPS := test-py-ft314 test-py-gil314-interp test-py-gil314

$(PY314_APT_STAMP): tools/setup-apt.sh
	@mkdir -p $(@D)
	@if [ -z "$(SKIP_APT)" ]; then tools/setup-apt.sh patchelf; fi
	@touch $@

$(VENV_FT314)/pyvenv.cfg $(VENV_GIL314)/pyvenv.cfg: | $(PY314_APT_STAMP)
$(eval $(call venv_rules,$(VENV_FT314),ft,$(PYTHON_FT314),3.14))
$(eval $(call venv_rules,$(VENV_GIL314),gil,$(PYTHON_GIL314),3.14))
$(eval $(call pytest_rule,ft314,$(VENV_FT314),uring,threads))
$(eval $(call pytest_rule,gil314-interp,$(VENV_GIL314),uring,interpreters))
$(eval $(call pytest_rule,gil314,$(VENV_GIL314),uring,gil))

.PHONY: test-314 setup-314 $(TEST_314_STEPS)
setup-314: $(VENV_FT314)/.pyparallel-stamp $(VENV_GIL314)/.pyparallel-stamp
test-314:
	@case "$$MAKEFLAGS" in *jobserver*) jobs= ;; *) jobs=-j$(NPROC) ;; esac; \
	  tools/test.sh "$(MAKE)" $$jobs -- $(TEST_314_STEPS)

# ---- packages -------------------------------------------------------------
#
# `make dist`: the sdist and one wheel per interpreter in dist/: 3.13 (built
# by .venv-gil) and 3.13t (.venv-ft) always, 3.14 and 3.14t where
# .venv-gil314 / .venv-ft314 exist (make setup-314). tools/dist.sh builds the
# wheels from the sdist, vendors liburing into them with auditwheel (which
# picks the manylinux tag) and runs twine check. `make dist-check` (part of
# `make test`) installs each wheel into a fresh venv of its interpreter and
# runs the examples from there (tools/dist-check.sh). .venv-dist holds the
# tools (tools/requirements-dist.txt); each wheel's venv gets `build` alone.
VENV_DIST := .venv-dist
DIST_VENVS := $(VENV_GIL) $(VENV_FT) \
              $(patsubst %/pyvenv.cfg,%,$(wildcard $(VENV_GIL314)/pyvenv.cfg \
                                                   $(VENV_FT314)/pyvenv.cfg))
DIST_STAMP := dist/.stamp
# Everything that goes into a package; found, so that new files count.
DIST_INPUTS := pyproject.toml setup.py MANIFEST.in LICENSE README.md \
               CHANGELOG.md tools/dist.sh \
               $(shell find include src python -type f \( -name '*.[ch]' \
                         -o -name '*.py' -o -name '*.pyi' -o -name py.typed \) \
                         2>/dev/null)

$(VENV_DIST)/pyvenv.cfg: | $(APT_STAMP)
	@python=$$(tools/find-python.sh gil "$(PYTHON_GIL)") && \
	  echo "venv $(VENV_DIST): $$python" && \
	  "$$python" -m venv --clear $(VENV_DIST)

$(VENV_DIST)/.deps-stamp: $(VENV_DIST)/pyvenv.cfg tools/requirements-dist.txt
	$(VENV_DIST)/bin/python -m pip install -q -r tools/requirements-dist.txt
	@touch $@

$(DIST_VENVS:%=%/.build-stamp): %/.build-stamp: %/pyvenv.cfg \
                                               tools/requirements-dist.txt
	$*/bin/python -m pip install -q --only-binary=:all: \
	  -c tools/requirements-dist.txt build
	@touch $@

$(DIST_STAMP): $(VENV_DIST)/.deps-stamp $(DIST_VENVS:%=%/.build-stamp) \
               $(DIST_INPUTS)
	tools/dist.sh $(VENV_DIST) $(DIST_VENVS)
	@touch $@

.PHONY: dist dist-check
dist: $(DIST_STAMP)

dist-check: $(DIST_STAMP)
	tools/dist-check.sh $(DIST_VENVS)

# ---- other entry points -------------------------------------------------

.PHONY: serve fuzz bench bench-quick examples-c format format-check \
        typecheck clean distclean

serve: $(VENV_FT)/.pyparallel-stamp
	$(VENV_FT)/bin/python -m pyparallel.http.server --port $(PORT)

fuzz: check-fuzzers $(FUZZERS)
	tools/fuzz.sh $(FUZZ_SECONDS) $(FUZZERS)

# The benchmark's peers, set up by the bench targets only: nginx and wrk from
# Debian; uvloop, gunicorn, granian and matplotlib in .venv-bench, a GIL-build
# venv like .venv-gil but without pyparallel. bench/run.py runs there and
# starts every contender on its own interpreter.
VENV_BENCH := .venv-bench
BENCH_APT_STAMP := $(BUILD)/stamps/bench-apt

$(BENCH_APT_STAMP): tools/setup-apt.sh
	@mkdir -p $(@D)
	@if [ -z "$(SKIP_APT)" ]; then tools/setup-apt.sh nginx wrk; fi
	@touch $@

$(VENV_BENCH)/pyvenv.cfg: | $(APT_STAMP)
	@python=$$(tools/find-python.sh gil "$(PYTHON_GIL)") && \
	  echo "venv $(VENV_BENCH): $$python" && \
	  "$$python" -m venv --clear $(VENV_BENCH)

$(VENV_BENCH)/.deps-stamp: $(VENV_BENCH)/pyvenv.cfg bench/requirements.txt
	$(VENV_BENCH)/bin/python -m pip install -q -r bench/requirements.txt
	@touch $@

BENCH_SETUP := $(VENV_FT)/.pyparallel-stamp $(VENV_GIL)/.pyparallel-stamp \
               $(VENV_BENCH)/.deps-stamp $(BENCH_APT_STAMP)

bench: $(BENCH_SETUP)
	$(VENV_BENCH)/bin/python bench/run.py $(BENCH_ARGS)

bench-quick: $(BENCH_SETUP)
	$(VENV_BENCH)/bin/python bench/run.py --quick $(BENCH_ARGS)

examples-c: $(EXAMPLES)
	@if [ -z "$(EXAMPLES_C)" ]; then \
	  echo "no C examples: examples/c/*.c matched nothing" >&2; exit 1; fi

# The Python sources for ruff ([tool.ruff] in pyproject.toml), which runs
# from .venv-gil: tools/requirements-dev.txt pins its version.
PY_SOURCES := python tests bench examples setup.py $(wildcard tools/*.py)
RUFF := $(VENV_GIL)/bin/ruff

format: $(VENV_GIL)/.deps-stamp
	clang-format -i $(FORMAT_FILES)
	$(RUFF) check --select I --fix $(PY_SOURCES)
	$(RUFF) format $(PY_SOURCES)

format-check: $(VENV_GIL)/.deps-stamp
	clang-format --dry-run -Werror $(FORMAT_FILES)
	$(RUFF) check $(PY_SOURCES)
	$(RUFF) format --check $(PY_SOURCES)

# mypy (strict; [tool.mypy] in pyproject.toml) over python/pyparallel, and
# stubtest comparing __init__.pyi and _core.pyi with the extension as each
# venv built it: the free-threaded build's may differ. What cannot match is
# in the allowlist, with the reason.
STUBTEST := -m mypy.stubtest --mypy-config-file pyproject.toml \
            --allowlist tools/stubtest-allowlist.txt pyparallel

typecheck: $(VENV_GIL)/.pyparallel-stamp $(VENV_FT)/.pyparallel-stamp
	$(VENV_GIL)/bin/python -m mypy
	$(VENV_GIL)/bin/python $(STUBTEST)
	$(VENV_FT)/bin/python $(STUBTEST)

clean:
	rm -rf $(BUILD) *.egg-info python/*.egg-info .hypothesis
	find python -name '*.so' -delete 2>/dev/null || true
	find . -name __pycache__ -type d -not -path './.venv-*' -prune \
	  -exec rm -rf {} + 2>/dev/null || true
	rm -f $(VENV_FT)/.pyparallel-stamp $(VENV_GIL)/.pyparallel-stamp
	rm -f $(VENV_FT314)/.pyparallel-stamp $(VENV_GIL314)/.pyparallel-stamp

distclean: clean
	rm -rf $(VENV_FT) $(VENV_GIL) $(VENV_DIST) dist
	rm -rf $(VENV_FT314) $(VENV_GIL314) $(VENV_BENCH)
