# Build the engine and run its tests. Targets:
#   make            optimised ./run for this machine (-O3 -march=native, OpenMP when available)
#   make portable   ./run without -march=native: plain C kernels, builds on any C11 compiler
#   make debug      build/debug/: -O0 -g with AddressSanitizer + UndefinedBehaviorSanitizer
#   make test       everything, as CI runs it: installs what the tests need (tests/deps.sh),
#                   then the suite against build/ and build/debug/, each fuzz target's saved
#                   findings and corpus replayed plus FUZZ_SECONDS of fuzzing (default 6),
#                   valgrind, the installed library (see TESTING.md)
#   make test-fast  the suite against the optimised build only, for day-to-day work
#   make test-debug the suite against the sanitizer build only
#   make lib        build/libtllm.a: the engine as a library (the functions of model.h,
#                   tokenizer.h, unicode.h, sampler.h, chat.h), built like ./run
#   make install    libtllm.a, its headers in include/tllm/, tllm.pc and ./run as tllm-run,
#                   under $(DESTDIR)$(PREFIX) (default /usr/local); see examples/generate.c
#   make bench      speed of random-weight models (see BENCHMARKS.md)
#   make fuzz       a longer campaign: each libFuzzer target for FUZZ_SECONDS (default 60;
#                   clang; see TESTING.md)
#   make bundled-model  rewrite models/stories260K.tllm with export.py (after a format change)
#   make clean

CC      ?= cc
PYTHON  ?= /usr/bin/python3
ARCH    ?= -march=native
# OpenMP is optional: use it only if the compiler accepts -fopenmp.
OPENMP  := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo -fopenmp)
# -ffp-contract=off: the plain C references round as written, never fused into an FMA (GCC's
# default in ISO C mode already; clang's default is not)
WARN    = -std=c11 -ffp-contract=off -Wall -Wextra -Wshadow -Wno-unused-parameter -Wno-unknown-pragmas
CFLAGS  = $(WARN) -O3 $(ARCH) $(OPENMP) -D_POSIX_C_SOURCE=200809L -MMD -MP
# the sanitizer and fuzz builds keep $(ARCH), so the SIMD paths are the ones they check
DFLAGS  = $(WARN) -O0 -g $(ARCH) -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -D_POSIX_C_SOURCE=200809L -MMD -MP
# valgrind: no OpenMP (libgomp's pool shows as "possibly lost"), no -march=native (AVX-512)
VFLAGS  = $(WARN) -O1 -g -D_POSIX_C_SOURCE=200809L -MMD -MP
LDLIBS  = -lm

LIB     = model.c format.c attention.c matmul.c matmul_f32.c matmul_bf16.c matmul_q8_0.c \
          matmul_q4_0.c kernels.c team.c tokenizer.c tokenizer_bpe.c pretokenizer.c unicode.c sampler.c \
          chat.c attnviz.c
TOOLS   = run tokenize test_sampler test_kernels
# the library: every source but the command line's attention recorder
LIBOBJ  = $(filter-out build/attnviz.o,$(LIB:%.c=build/%.o))
HEADERS = model.h attention.h matmul.h error.h tokenizer.h unicode.h sampler.h chat.h
PREFIX  ?= /usr/local
VERSION := $(shell sed -n 's/^\#define VERSION "\(.*\)"$$/\1/p' args.h)
FUZZ_CC      ?= clang
# FUZZ_SECONDS: seconds per fuzz target; unset, 6 in make test and 60 in make fuzz
FUZZ_TARGETS  = checkpoint_llama2c checkpoint_tllm tokenizer encode args

all: run

run: build/run
	cp build/run run

build/%.o: %.c | build
	$(CC) $(CFLAGS) -c $< -o $@
build/%.o: tests/%.c | build
	$(CC) $(CFLAGS) -I. -c $< -o $@
build/debug/%.o: %.c | build/debug
	$(CC) $(DFLAGS) -c $< -o $@
build/debug/%.o: tests/%.c | build/debug
	$(CC) $(DFLAGS) -I. -c $< -o $@

build/run build/test_kernels build/tokenize build/test_sampler: build/%: build/%.o $(LIB:%.c=build/%.o)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)
build/debug/run build/debug/test_kernels build/debug/tokenize build/debug/test_sampler: build/debug/%: build/debug/%.o $(LIB:%.c=build/debug/%.o)
	$(CC) $(DFLAGS) $^ -o $@ $(LDLIBS)
# run is run.c (what it does) and args.c (its command line)
build/run: build/args.o
build/debug/run: build/debug/args.o
build/valgrind/%.o: %.c | build/valgrind
	$(CC) $(VFLAGS) -c $< -o $@
build/valgrind/run: build/valgrind/run.o build/valgrind/args.o $(LIB:%.c=build/valgrind/%.o)
	$(CC) $(VFLAGS) $^ -o $@ $(LDLIBS)

lib: build/libtllm.a

# One object whose only global symbols are the functions the public headers declare: the
# library's own helpers (add, softmax, matmul, rope, ...) become local, so a program of the
# user's may have functions of those names. (attention.h and matmul.h are installed for the
# types model.h uses; their functions stay inside the library.)
API_HEADERS = model.h tokenizer.h sampler.h chat.h unicode.h
OBJCOPY    ?= objcopy
build/libtllm.a: $(LIBOBJ) $(API_HEADERS)
	sed -n '/^typedef /!s/^[a-zA-Z][a-zA-Z0-9_ ]*[ *][ *]*\([a-z_][a-z0-9_]*\)(.*/\1/p' $(API_HEADERS) \
	    > build/tllm.api
	$(CC) -r -nostdlib $(LIBOBJ) -o build/tllm_all.o
	$(OBJCOPY) --keep-global-symbols=build/tllm.api build/tllm_all.o build/tllm.o
	rm -f $@
	$(AR) rcs $@ build/tllm.o

# tllm.pc: -fopenmp when the library was built with it, since its objects call libgomp
install: build/run build/libtllm.a
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include/tllm
	install -m 755 build/run $(DESTDIR)$(PREFIX)/bin/tllm-run
	install -m 644 build/libtllm.a $(DESTDIR)$(PREFIX)/lib/libtllm.a
	install -m 644 $(HEADERS) $(DESTDIR)$(PREFIX)/include/tllm/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' -e 's|@OPENMP@|$(OPENMP)|' \
	    tllm.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/tllm.pc

# The attention viewer stays an editable HTML file; attnviz.c includes it as a C string.
build/attnviz_html.h: attnviz.html | build
	{ echo 'static const char attnviz_html[] = {'; od -An -v -tx1 $< | sed 's/\([0-9a-f][0-9a-f]\)/0x\1,/g'; echo '0x00};'; } > $@
build/attnviz.o build/debug/attnviz.o build/valgrind/attnviz.o: build/attnviz_html.h

# Compiled in one go, not from build/*.o: those are for this machine (-march=native).
portable: build/attnviz_html.h
	$(CC) $(WARN) -O3 $(OPENMP) -D_POSIX_C_SOURCE=200809L $(LIB) run.c args.c -o run $(LDLIBS)

debug: $(TOOLS:%=build/debug/%)

# First what the tests need: tests/deps.sh installs it (root on Debian) or names the command
# to run and stops; then test-all, the builds (on every core: from a clean checkout they took
# 97 s on one core, 58 s on two) and the suite.
JOBS ?= $(shell nproc 2>/dev/null || echo 1)
test:
	@PYTHON='$(PYTHON)' FUZZ_CC='$(FUZZ_CC)' sh tests/deps.sh
	@$(MAKE) --no-print-directory -j$(JOBS) test-all

test-all: run $(TOOLS:%=build/%) build/machine_limits debug build/valgrind/run \
          $(FUZZ_TARGETS:%=build/fuzz/%) build/libtllm.a
	$(PYTHON) fuzz/make_seeds.py build/fuzz/seeds
	FUZZ_SECONDS=$(or $(FUZZ_SECONDS),6) $(PYTHON) tests/run_tests.py --all

test-fast: run $(TOOLS:%=build/%) build/machine_limits
	$(PYTHON) tests/run_tests.py

test-debug: debug
	ENGINE_BIN=build/debug ASAN_OPTIONS=detect_leaks=1 $(PYTHON) tests/run_tests.py --c-code-only

# Fuzzing: clang's libFuzzer with ASan + UBSan; the corpora grow under build/fuzz/.
# -fno-sanitize-recover: undefined behaviour aborts the run, so libFuzzer records it as a crash
FUZZ_FLAGS    = -std=c11 -ffp-contract=off -g -O1 $(ARCH) -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
                -D_POSIX_C_SOURCE=200809L -I.
FUZZ_LIB      = $(LIB) fuzz/options.c

build/fuzz/checkpoint_llama2c: fuzz/fuzz_checkpoint.c $(FUZZ_LIB) model.h kernels.h | build/fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) $(filter %.c,$^) -o $@ $(LDLIBS)
build/fuzz/checkpoint_tllm: fuzz/fuzz_checkpoint.c $(FUZZ_LIB) model.h kernels.h | build/fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) -DFUZZ_TLLM $(filter %.c,$^) -o $@ $(LDLIBS)
build/fuzz/args: fuzz/fuzz_args.c args.c $(FUZZ_LIB) args.h model.h kernels.h | build/fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) $(filter %.c,$^) -o $@ $(LDLIBS)
build/fuzz/%: fuzz/fuzz_%.c $(FUZZ_LIB) model.h kernels.h | build/fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) $(filter %.c,$^) -o $@ $(LDLIBS)
$(FUZZ_TARGETS:%=build/fuzz/%): | build/attnviz_html.h

# Each target in turn; stops at the first one that finds something (the input is saved as
# build/fuzz/artifacts/TARGET-crash-*).
fuzz: $(FUZZ_TARGETS:%=build/fuzz/%)
	$(PYTHON) fuzz/make_seeds.py build/fuzz/seeds
	mkdir -p build/fuzz/artifacts
	for t in $(FUZZ_TARGETS); do mkdir -p build/fuzz/corpus/$$t; \
	  build/fuzz/$$t -max_total_time=$(or $(FUZZ_SECONDS),60) -print_final_stats=1 -close_fd_mask=1 \
	    -artifact_prefix=build/fuzz/artifacts/$$t- build/fuzz/corpus/$$t build/fuzz/seeds/$$t \
	    > build/fuzz/$$t.log 2>&1; status=$$?; echo "$$t:"; \
	  grep -E "^(stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY)|runtime error" build/fuzz/$$t.log; \
	  [ $$status -eq 0 ] || exit 1; done

# the machine's limits before and after: the bandwidth of a shared machine drifts
bench: run build/machine_limits build/tokenize
	build/machine_limits
	$(PYTHON) tests/bench.py
	build/machine_limits

build/machine_limits: tests/machine_limits.c | build
	$(CC) -std=c11 -O2 $(ARCH) $(OPENMP) -D_POSIX_C_SOURCE=200809L $< -o $@

# The bundled model is export.py's output for stories260K: a change to the file format must
# regenerate it (tests/test_bundled.py fails until then). STORIES: the folder holding
# stories260K.bin and tok512.bin (models/download.sh stories260K puts them in models/).
STORIES ?= ../shared/models
BUNDLED ?= models/stories260K.tllm
bundled-model:
	$(PYTHON) export.py $(BUNDLED) --llama2c $(STORIES)/stories260K.bin --tokenizer $(STORIES)/tok512.bin

build build/debug build/fuzz build/valgrind:
	mkdir -p $@

clean:
	rm -rf build run

.PHONY: all run lib install portable debug test test-all test-fast test-debug bench fuzz bundled-model clean
-include build/*.d build/debug/*.d build/valgrind/*.d
